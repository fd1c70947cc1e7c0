//! Training data: the data sets of [`unpersonal_runtime::data`] (IDX files and filelists, u8
//! pixels, NCHW), normalised into seeded, shuffled and augmented batches.
//!
//! [`Batcher`] turns a dataset into an endless, reproducible stream of normalised, augmented
//! batches; [`epoch_batches`] is one ordered pass for evaluation.

pub mod augment;
pub mod batch;
pub mod strong;

pub use augment::Augment;
pub use batch::{Batch, Batcher, BatcherState, epoch_batches, lot, mix};
pub use unpersonal_runtime::data::{
    DataError, Dataset, Filelist, FilelistOptions, IDX_CLASSES, Split, load_filelist,
    supported_size,
};

use serde::{Deserialize, Serialize};

/// Pixel normalisation: `x = (byte / 255 − mean) / std`, identical for every channel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Subtracted after scaling to [0, 1].
    pub mean: f32,
    /// Divisor after subtracting the mean.
    pub std: f32,
}

impl Normalization {
    /// Maps [0, 255] to [−1, 1].
    pub const SYMMETRIC: Normalization = Normalization { mean: 0.5, std: 0.5 };

    /// The normalised value of one pixel byte.
    pub fn apply(&self, byte: u8) -> f32 {
        (f32::from(byte) / 255.0 - self.mean) / self.std
    }

    /// The normalised value of every byte, for table look-ups.
    pub fn table(&self) -> [f32; 256] {
        std::array::from_fn(|b| self.apply(b as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_maps_bytes_linearly() {
        let n = Normalization::SYMMETRIC;
        assert_eq!((n.apply(0), n.apply(255)), (-1.0, 1.0));
        let t = n.table();
        assert_eq!(t[128], n.apply(128));
        let z = Normalization { mean: 0.0, std: 1.0 };
        assert_eq!(z.apply(51), 0.2);
    }
}
