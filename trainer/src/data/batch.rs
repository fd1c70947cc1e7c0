//! Batches: seeded shuffling and augmentation that depend only on (seed, epoch, position), so
//! a resumed run sees exactly the batches the interrupted one would have seen.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Augment, Dataset, Normalization};

/// One batch, normalised and augmented.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Images `[n, c, h, w]`.
    pub images: Vec<f32>,
    /// Labels `[n, k]` (one-hot or multi-hot).
    pub labels: Vec<f32>,
    /// Dataset rows of the batch, in order.
    pub indices: Vec<usize>,
    /// Number of samples.
    pub n: usize,
}

/// Where a batcher stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Next position in the epoch's permutation.
    pub position: usize,
}

/// An endless stream of training batches over a dataset.
#[derive(Debug)]
pub struct Batcher<'a> {
    data: &'a Dataset,
    batch: usize,
    seed: u64,
    norm: Normalization,
    augment: Augment,
    shuffle: bool,
    drop_last: bool,
    state: BatcherState,
    order: Vec<usize>,
}

/// A seed for one (run seed, stream, epoch, index) combination.
fn mix(seed: u64, stream: u64, epoch: u64, index: u64) -> u64 {
    let mut x = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for v in [epoch, index] {
        x = (x ^ v).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 31;
    }
    x
}

impl<'a> Batcher<'a> {
    /// A batcher over `data`. With `drop_last`, a final partial batch of an epoch is skipped.
    pub fn new(data: &'a Dataset, batch: usize, seed: u64, norm: Normalization, augment: Augment, shuffle: bool, drop_last: bool) -> Self {
        assert!(batch > 0 && batch <= data.len(), "batch size {batch} must be in 1..={}", data.len());
        let mut b = Batcher { data, batch, seed, norm, augment, shuffle, drop_last, state: BatcherState { epoch: 0, position: 0 }, order: Vec::new() };
        b.order = b.permutation(0);
        b
    }

    fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        if self.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(self.seed, 1, epoch, 0)));
        }
        order
    }

    /// Where the batcher stands.
    pub fn state(&self) -> BatcherState {
        self.state
    }

    /// Continues from a saved position.
    pub fn restore(&mut self, state: BatcherState) {
        self.order = self.permutation(state.epoch);
        self.state = state;
    }

    /// Full batches per epoch (plus a partial one without `drop_last`).
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last { self.data.len() / self.batch } else { self.data.len().div_ceil(self.batch) }
    }

    /// The next batch, moving into the next (reshuffled) epoch when one ends.
    pub fn next_batch(&mut self) -> Batch {
        let remaining = self.data.len() - self.state.position;
        if remaining == 0 || (self.drop_last && remaining < self.batch) {
            self.state = BatcherState { epoch: self.state.epoch + 1, position: 0 };
            self.order = self.permutation(self.state.epoch);
        }
        let start = self.state.position;
        let end = (start + self.batch).min(self.data.len());
        let indices = self.order[start..end].to_vec();
        self.state.position = end;
        let epoch = self.state.epoch;
        assemble(self.data, &indices, self.norm, |img, i| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, 2, epoch, (start + i) as u64));
            let dims = (self.data.channels, self.data.height, self.data.width);
            self.augment.apply(img, dims, self.norm.apply(0), self.data.allows_hflip, &mut rng);
        })
    }
}

/// Normalises the rows `indices` into a batch, calling `augment` on each image.
fn assemble(data: &Dataset, indices: &[usize], norm: Normalization, mut augment: impl FnMut(&mut [f32], usize)) -> Batch {
    let size = data.channels * data.height * data.width;
    let k = data.num_labels;
    let mut images = Vec::with_capacity(indices.len() * size);
    let mut labels = Vec::with_capacity(indices.len() * k);
    let table: Vec<f32> = (0..=255u8).map(|b| norm.apply(b)).collect();
    for (i, &row) in indices.iter().enumerate() {
        let start = images.len();
        images.extend(data.image(row).iter().map(|&b| table[b as usize]));
        augment(&mut images[start..], i);
        labels.extend_from_slice(data.label(row));
    }
    Batch { images, labels, indices: indices.to_vec(), n: indices.len() }
}

/// One ordered pass over `data` without augmentation (evaluation); the last batch may be short.
pub fn epoch_batches(data: &Dataset, batch: usize, norm: Normalization) -> impl Iterator<Item = Batch> + '_ {
    let batch = batch.max(1);
    (0..data.len()).step_by(batch).map(move |start| {
        let indices: Vec<usize> = (start..(start + batch).min(data.len())).collect();
        assemble(data, &indices, norm, |_, _| {})
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Dataset {
        Dataset {
            name: "t".into(),
            channels: 1,
            height: 2,
            width: 2,
            num_labels: 2,
            multi_label: false,
            images: (0..n * 4).map(|i| (i % 256) as u8).collect(),
            labels: (0..n).flat_map(|i| if i % 2 == 0 { [1.0, 0.0] } else { [0.0, 1.0] }).collect(),
            allows_hflip: true,
        }
    }

    #[test]
    fn epochs_cover_every_row_once_in_a_seeded_order() {
        let d = data(10);
        let mut a = Batcher::new(&d, 5, 7, Normalization::SYMMETRIC, Augment::none(), true, true);
        let mut b = Batcher::new(&d, 5, 7, Normalization::SYMMETRIC, Augment::none(), true, true);
        let e0: Vec<usize> = (0..2).flat_map(|_| a.next_batch().indices).collect();
        let mut sorted = e0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let e1: Vec<usize> = (0..2).flat_map(|_| a.next_batch().indices).collect();
        assert_ne!(e0, e1, "epochs must be reshuffled");
        let again: Vec<usize> = (0..2).flat_map(|_| b.next_batch().indices).collect();
        assert_eq!(e0, again);
    }

    #[test]
    fn restore_continues_exactly() {
        let d = data(12);
        let aug = Augment { shift: 1, hflip: true, brightness: 0.1, contrast: 0.1 };
        let mut a = Batcher::new(&d, 5, 3, Normalization::SYMMETRIC, aug.clone(), true, true);
        for _ in 0..3 {
            a.next_batch();
        }
        let saved = a.state();
        let expected: Vec<Vec<f32>> = (0..4).map(|_| a.next_batch().images).collect();
        let mut b = Batcher::new(&d, 5, 3, Normalization::SYMMETRIC, aug, true, true);
        b.restore(saved);
        let got: Vec<Vec<f32>> = (0..4).map(|_| b.next_batch().images).collect();
        assert_eq!(expected, got);
    }

    #[test]
    fn evaluation_pass_is_ordered_and_keeps_the_tail() {
        let d = data(7);
        let sizes: Vec<usize> = epoch_batches(&d, 3, Normalization::SYMMETRIC).map(|b| b.n).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
        let first = epoch_batches(&d, 3, Normalization::SYMMETRIC).next().unwrap();
        assert_eq!(first.indices, vec![0, 1, 2]);
        assert_eq!(first.images[1], Normalization::SYMMETRIC.apply(1));
    }
}
