//! Training data: Fashion-MNIST IDX files and folders of images with a filelist, held in
//! memory as u8 pixels; batching, shuffling and augmentation.

mod augment;
mod batch;
pub mod filelist;
pub mod idx;

pub use augment::Augment;
pub use batch::{Batch, Batcher, BatcherState, epoch_batches};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A data error, naming the file (and line) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is read but its content is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One line of a filelist is wrong.
    #[error("{path}: line {line}: {message}")]
    Line {
        /// The filelist.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl DataError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }

    fn invalid(path: &Path, message: impl Into<String>) -> Self {
        DataError::Invalid { path: path.to_path_buf(), message: message.into() }
    }
}

/// Pixel normalisation: `x = (byte / 255 − mean) / std`.
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
        (byte as f32 / 255.0 - self.mean) / self.std
    }
}

/// Which split of an IDX directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `train-*` files.
    Train,
    /// `t10k-*` files.
    Test,
}

/// An in-memory labelled image set, u8 pixels, NCHW.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Where it came from, e.g. `fashion-mnist/train` or the filelist path.
    pub name: String,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Labels per row.
    pub num_labels: usize,
    /// Several labels may be set at once (otherwise exactly one, one-hot).
    pub multi_label: bool,
    /// Pixels, `len · channels · height · width`.
    pub images: Vec<u8>,
    /// Labels, `len · num_labels`, one-hot or multi-hot.
    pub labels: Vec<f32>,
    /// Horizontal flips keep the meaning of these images.
    pub allows_hflip: bool,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len() / self.num_labels.max(1)
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels of row `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.channels * self.height * self.width;
        &self.images[i * size..(i + 1) * size]
    }

    /// Labels of row `i`.
    pub fn label(&self, i: usize) -> &[f32] {
        &self.labels[i * self.num_labels..(i + 1) * self.num_labels]
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.images.truncate(n * self.channels * self.height * self.width);
        self.labels.truncate(n * self.num_labels);
    }

    /// Loads a directory of IDX files (`train-…`/`t10k-…`, raw or `.gz`) or a filelist file
    /// (`split` is ignored for filelists).
    pub fn load(path: &Path, split: Split) -> Result<Dataset, DataError> {
        if path.is_dir() {
            Self::load_idx(path, split)
        } else if path.is_file() {
            filelist::load(path, &filelist::Options::default())
        } else {
            Err(DataError::invalid(
                path,
                "no such dataset (a directory of IDX files or a filelist); for Fashion-MNIST run `apt-get install dataset-fashion-mnist`",
            ))
        }
    }

    fn load_idx(dir: &Path, split: Split) -> Result<Dataset, DataError> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let find = |kind: &str| {
            let raw = dir.join(format!("{prefix}-{kind}-ubyte"));
            if raw.exists() { raw } else { dir.join(format!("{prefix}-{kind}-ubyte.gz")) }
        };
        let images_path = find("images-idx3");
        let labels_path = find("labels-idx1");
        let (n, h, w, images) = idx::read_images(&images_path)?;
        let raw_labels = idx::read_labels(&labels_path)?;
        if raw_labels.len() != n {
            return Err(DataError::invalid(&labels_path, format!("{} labels for {n} images in {}", raw_labels.len(), images_path.display())));
        }
        let mut labels = vec![0f32; n * 10];
        for (i, &l) in raw_labels.iter().enumerate() {
            labels[i * 10 + l as usize] = 1.0;
        }
        let split_name = if split == Split::Train { "train" } else { "test" };
        let name = format!("{}/{split_name}", dir.file_name().and_then(|s| s.to_str()).unwrap_or("idx"));
        Ok(Dataset { name, channels: 1, height: h, width: w, num_labels: 10, multi_label: false, images, labels, allows_hflip: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fashion_mnist_loads_with_balanced_classes() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
            let d = Dataset::load(dir, split).expect("dataset-fashion-mnist is installed by scripts/setup.sh");
            assert_eq!((d.len(), d.height, d.width), (n, 28, 28));
            for class in 0..10 {
                let count = (0..d.len()).filter(|&i| d.label(i)[class] == 1.0).count();
                assert_eq!(count, n / 10);
            }
        }
    }

    #[test]
    fn a_missing_dataset_is_named_with_a_hint() {
        let err = Dataset::load(Path::new("/nonexistent/fmnist"), Split::Train).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/fmnist") && err.contains("dataset-fashion-mnist"), "{err}");
    }
}
