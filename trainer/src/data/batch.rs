//! Batches: seeded shuffling and augmentation that depend only on (seed, epoch, position in
//! the epoch), so a resumed run sees exactly the batches the interrupted one would have seen.
//!
//! An epoch's order is a Fisher–Yates permutation drawn from a ChaCha8 stream seeded with
//! `mix(seed, epoch)`; sample `p` of the epoch is augmented with a ChaCha8 stream seeded with
//! `mix(seed, epoch, p)`. Nothing else feeds the randomness.

use std::fmt;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Augment, DataError, Dataset, Normalization};

/// One batch, normalised and augmented.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Images `[n, c, h, w]`, normalised.
    pub images: Vec<f32>,
    /// Labels `[n, k]` (one-hot or multi-hot).
    pub labels: Vec<f32>,
    /// Dataset rows of the batch, in order.
    pub indices: Vec<usize>,
    /// Number of samples (the last evaluation batch may be short).
    pub n: usize,
}

/// Where a batcher stands; saved in checkpoints so that a resumed run continues exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Next position in the epoch's permutation.
    pub position: usize,
}

/// An endless stream of batches over a dataset, reshuffled every epoch.
pub struct Batcher<'a> {
    data: &'a Dataset,
    batch: usize,
    seed: u64,
    norm: Normalization,
    table: [f32; 256],
    augment: Augment,
    shuffle: bool,
    drop_last: bool,
    state: BatcherState,
    /// The permutation of `state.epoch`.
    order: Vec<usize>,
}

impl fmt::Debug for Batcher<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("data", &self.data.name)
            .field("batch", &self.batch)
            .field("seed", &self.seed)
            .field("norm", &self.norm)
            .field("augment", &self.augment)
            .field("shuffle", &self.shuffle)
            .field("drop_last", &self.drop_last)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Randomness streams, kept apart so that shuffling and augmentation never share seeds.
const SHUFFLE_STREAM: u64 = 1;
const AUGMENT_STREAM: u64 = 2;
const LOT_STREAM: u64 = 4; // 3 is the denoiser feed's (`diffusion::EDM_STREAM`)

/// SplitMix64's finaliser: a bijective, well-mixing map of `u64`.
fn splitmix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for one (run seed, stream, epoch, index) combination; every input passes through
/// a non-linear mix before the next is folded in, so e.g. (seed 0, epoch 1) and
/// (seed 1, epoch 0) differ.
pub fn mix(seed: u64, stream: u64, epoch: u64, index: u64) -> u64 {
    [stream, epoch, index].into_iter().fold(splitmix(seed), |x, v| splitmix(x ^ splitmix(v)))
}

/// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-and-reject method: it uses
/// only the raw ChaCha8 stream, so permutations do not change with `rand`'s versions.
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(n);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// The rows of `len` in the order of `epoch`: `0..len`, shuffled if `shuffle`.
fn permutation(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, SHUFFLE_STREAM, epoch, 0));
        for i in (1..len).rev() {
            let j = below(&mut rng, i as u64 + 1) as usize;
            order.swap(i, j);
        }
    }
    order
}

impl<'a> Batcher<'a> {
    /// A batcher over `data` yielding `batch_size` rows at a time, starting at epoch 0.
    /// With `shuffle`, every epoch has its own permutation derived from `(seed, epoch)`;
    /// with `drop_last`, an epoch's final partial batch is skipped (otherwise it comes out
    /// short). Augmentation flips only if `data.allows_hflip`. A batch size of 0 or beyond the dataset is an error.
    pub fn new(
        data: &'a Dataset,
        batch_size: usize,
        seed: u64,
        norm: Normalization,
        augment: Augment,
        shuffle: bool,
        drop_last: bool,
    ) -> Result<Self, DataError> {
        if batch_size == 0 || batch_size > data.len() {
            return Err(DataError::invalid(
                std::path::Path::new(&data.name),
                format!(
                    "batch size {batch_size} must be in 1..={} (the number of images)",
                    data.len()
                ),
            ));
        }
        Ok(Batcher {
            data,
            batch: batch_size,
            seed,
            norm,
            table: norm.table(),
            augment,
            shuffle,
            drop_last,
            state: BatcherState::default(),
            order: permutation(data.len(), seed, 0, shuffle),
        })
    }

    /// Where the batcher stands.
    pub fn state(&self) -> BatcherState {
        self.state
    }

    /// Continues from a saved position (a position past the end of the epoch continues with
    /// the next epoch).
    pub fn restore(&mut self, state: BatcherState) {
        if state.epoch != self.state.epoch {
            self.order = permutation(self.data.len(), self.seed, state.epoch, self.shuffle);
        }
        self.state =
            BatcherState { epoch: state.epoch, position: state.position.min(self.data.len()) };
    }

    /// Batches per epoch: full ones, plus a partial one unless `drop_last`.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.data.len() / self.batch
        } else {
            self.data.len().div_ceil(self.batch)
        }
    }

    /// The next batch, moving into the next (reshuffled) epoch when one ends.
    pub fn next_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        self.next_batch_into(&mut batch);
        batch
    }

    /// Like [`Batcher::next_batch`], reusing `out`'s buffers.
    pub fn next_batch_into(&mut self, out: &mut Batch) {
        let remaining = self.data.len() - self.state.position;
        if remaining == 0 || (self.drop_last && remaining < self.batch) {
            self.state = BatcherState { epoch: self.state.epoch + 1, position: 0 };
            self.order = permutation(self.data.len(), self.seed, self.state.epoch, self.shuffle);
        }
        let start = self.state.position;
        let end = (start + self.batch).min(self.data.len());
        self.state.position = end;
        let (epoch, seed, data) = (self.state.epoch, self.seed, self.data);
        let dims = (data.channels, data.height, data.width);
        let background = self.norm.apply(0);
        let augment = &self.augment;
        let identity = augment.is_identity();
        assemble(data, &self.order[start..end], &self.table, out, |img, i| {
            if !identity {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(mix(seed, AUGMENT_STREAM, epoch, (start + i) as u64));
                augment.apply_with(img, dims, background, data.allows_hflip, &mut rng);
            }
        });
    }
}

/// The rows `rows` as one batch for 1-based step `step` (a DP-SGD lot, drawn elsewhere):
/// normalised, and each augmented with a ChaCha8 stream seeded with `mix(seed, step, row)`,
/// so that an image's augmentation does not depend on which other rows share the lot (the
/// seed is public).
pub fn lot(
    data: &Dataset,
    rows: &[usize],
    seed: u64,
    norm: Normalization,
    augment: &Augment,
    step: u64,
) -> Batch {
    let dims = (data.channels, data.height, data.width);
    let background = norm.apply(0);
    let identity = augment.is_identity();
    let mut batch = Batch::default();
    assemble(data, rows, &norm.table(), &mut batch, |img, i| {
        if !identity {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, LOT_STREAM, step, rows[i] as u64));
            augment.apply_with(img, dims, background, data.allows_hflip, &mut rng);
        }
    });
    batch
}

/// Normalises the rows `indices` into `out` (replacing its contents), calling `augment` on
/// each image with its place in the batch.
fn assemble(
    data: &Dataset,
    indices: &[usize],
    table: &[f32; 256],
    out: &mut Batch,
    mut augment: impl FnMut(&mut [f32], usize),
) {
    let size = data.image_size();
    out.images.clear();
    out.images.reserve(indices.len() * size);
    out.labels.clear();
    out.labels.reserve(indices.len() * data.num_labels);
    for (i, &row) in indices.iter().enumerate() {
        let start = out.images.len();
        out.images.extend(data.image(row).iter().map(|&b| table[usize::from(b)]));
        augment(&mut out.images[start..], i);
        out.labels.extend_from_slice(data.label(row));
    }
    out.indices.clear();
    out.indices.extend_from_slice(indices);
    out.n = indices.len();
}

/// One ordered pass over `data` without augmentation (evaluation): batches of `batch_size`
/// rows (at least 1), the last one possibly short.
pub fn epoch_batches(
    data: &Dataset,
    batch_size: usize,
    norm: Normalization,
) -> impl Iterator<Item = Batch> + '_ {
    let batch_size = batch_size.max(1);
    let table = norm.table();
    (0..data.len()).step_by(batch_size).map(move |start| {
        let indices: Vec<usize> = (start..(start + batch_size).min(data.len())).collect();
        let mut batch = Batch::default();
        assemble(data, &indices, &table, &mut batch, |_, _| {});
        batch
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rows of 1×3×3 images (row `i` filled with `i`) and one-hot labels `i % 3`.
    fn data(n: usize) -> Dataset {
        Dataset {
            name: "synthetic".into(),
            channels: 1,
            height: 3,
            width: 3,
            num_labels: 3,
            multi_label: false,
            images: (0..n).flat_map(|i| [(i % 256) as u8; 9]).collect(),
            labels: (0..n)
                .flat_map(|i| (0..3).map(move |k| if k == i % 3 { 1.0 } else { 0.0 }))
                .collect(),
            allows_hflip: true,
            identities: vec![None; n],
            label_names: Vec::new(),
        }
    }

    fn batcher(d: &Dataset, batch: usize, seed: u64, aug: Augment, drop_last: bool) -> Batcher<'_> {
        Batcher::new(d, batch, seed, Normalization::SYMMETRIC, aug, true, drop_last).unwrap()
    }

    fn epoch_order(b: &mut Batcher<'_>) -> Vec<usize> {
        (0..b.batches_per_epoch()).flat_map(|_| b.next_batch().indices).collect()
    }

    fn strong() -> Augment {
        Augment { shift: 1, hflip: true, brightness: 0.1, contrast: 0.1 }
    }

    #[test]
    fn same_seed_gives_identical_batches_and_another_seed_does_not() {
        let d = data(20);
        let mut a = batcher(&d, 6, 7, strong(), true);
        let mut b = batcher(&d, 6, 7, strong(), true);
        for _ in 0..10 {
            assert_eq!(a.next_batch(), b.next_batch());
        }
        let mut c = batcher(&d, 6, 8, strong(), true);
        let mut a = batcher(&d, 6, 7, strong(), true);
        assert_ne!(a.next_batch().indices, c.next_batch().indices);
    }

    #[test]
    fn every_row_appears_once_per_epoch_and_epochs_are_reshuffled() {
        let d = data(23);
        let mut b = batcher(&d, 5, 11, Augment::none(), false);
        assert_eq!(b.batches_per_epoch(), 5);
        let mut orders = Vec::new();
        for epoch in 0..4 {
            let order = epoch_order(&mut b);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..23).collect::<Vec<_>>(), "epoch {epoch}");
            orders.push(order);
        }
        assert!(orders.windows(2).all(|w| w[0] != w[1]), "epochs must be reshuffled");
        assert_ne!(orders[0], (0..23).collect::<Vec<_>>());
    }

    #[test]
    fn drop_last_yields_full_distinct_batches() {
        let d = data(23);
        let mut b = batcher(&d, 5, 11, Augment::none(), true);
        assert_eq!(b.batches_per_epoch(), 4);
        for epoch in 0..3u64 {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..4 {
                let batch = b.next_batch();
                assert_eq!((batch.n, batch.images.len(), batch.labels.len()), (5, 45, 15));
                assert!(batch.indices.iter().all(|&i| seen.insert(i)));
            }
            assert_eq!(b.state(), BatcherState { epoch, position: 20 });
        }
    }

    #[test]
    fn restore_reproduces_the_continuation_exactly() {
        let d = data(12);
        let mut a = batcher(&d, 5, 3, strong(), true);
        let mut expected = Vec::new();
        let mut states = Vec::new();
        for _ in 0..9 {
            states.push(a.state());
            expected.push(a.next_batch());
        }
        for (k, &state) in states.iter().enumerate() {
            let mut b = batcher(&d, 5, 3, strong(), true);
            b.next_batch();
            b.restore(state);
            let got: Vec<Batch> = (k..9).map(|_| b.next_batch()).collect();
            assert_eq!(got, expected[k..], "restored at {state:?}");
        }
    }

    #[test]
    fn augmentation_depends_on_epoch_and_position() {
        let d = data(4);
        let mut b =
            Batcher::new(&d, 4, 1, Normalization::SYMMETRIC, strong(), false, true).unwrap();
        let first = b.next_batch();
        let second = b.next_batch();
        assert_eq!(first.indices, second.indices);
        assert_ne!(first.images, second.images, "each epoch augments afresh");
        let plain = Batcher::new(&d, 4, 1, Normalization::SYMMETRIC, Augment::none(), false, true)
            .unwrap()
            .next_batch();
        assert_eq!(plain.images[9], Normalization::SYMMETRIC.apply(1));
    }

    #[test]
    fn batches_hold_normalised_images_and_matching_labels() {
        let d = data(9);
        let mut b = batcher(&d, 4, 5, Augment::none(), false);
        for _ in 0..7 {
            let batch = b.next_batch();
            assert_eq!((batch.images.len(), batch.labels.len()), (batch.n * 9, batch.n * 3));
            for (j, &row) in batch.indices.iter().enumerate() {
                assert_eq!(batch.images[j * 9], Normalization::SYMMETRIC.apply(row as u8));
                assert_eq!(&batch.labels[j * 3..j * 3 + 3], d.label(row));
            }
        }
    }

    #[test]
    fn unshuffled_batches_are_in_order_with_a_short_tail() {
        let d = data(7);
        let mut b = Batcher::new(&d, 3, 0, Normalization::SYMMETRIC, Augment::none(), false, false)
            .unwrap();
        let got: Vec<Vec<usize>> = (0..4).map(|_| b.next_batch().indices).collect();
        assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6], vec![0, 1, 2]]);
        let sizes: Vec<usize> =
            epoch_batches(&d, 3, Normalization::SYMMETRIC).map(|b| b.n).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
        let eval: Vec<Batch> = epoch_batches(&d, 3, Normalization::SYMMETRIC).collect();
        let mut b = Batcher::new(&d, 3, 0, Normalization::SYMMETRIC, Augment::none(), false, false)
            .unwrap();
        assert!(eval.iter().all(|e| *e == b.next_batch()));
        assert_eq!(epoch_batches(&d, 0, Normalization::SYMMETRIC).count(), 7);
    }

    #[test]
    fn bad_batch_sizes_and_states_do_not_panic_where_avoidable() {
        let d = data(3);
        let err = Batcher::new(&d, 4, 0, Normalization::SYMMETRIC, Augment::none(), true, true)
            .unwrap_err();
        assert!(
            err.to_string().contains("synthetic") && err.to_string().contains("batch size 4"),
            "{err}"
        );
        assert!(
            Batcher::new(&d, 0, 0, Normalization::SYMMETRIC, Augment::none(), true, true).is_err()
        );
        let mut b = batcher(&d, 2, 0, Augment::none(), true);
        b.restore(BatcherState { epoch: 5, position: 99 });
        assert_eq!(b.next_batch().n, 2);
        assert_eq!(b.state(), BatcherState { epoch: 6, position: 2 });
    }

    #[test]
    fn permutations_are_uniform_enough() {
        // Every row lands in the first slot of a 4-row permutation about equally often.
        let mut first = [0usize; 4];
        for epoch in 0..4000 {
            first[permutation(4, 42, epoch, true)[0]] += 1;
        }
        assert!(first.iter().all(|&c| (850..=1150).contains(&c)), "{first:?}");
    }
}
