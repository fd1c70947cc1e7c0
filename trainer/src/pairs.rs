//! Training pairs for the re-identification model. Without identities in the data (Fashion-
//! MNIST), every image is its own "person": a positive pair is two independent strong
//! augmentations of one image; a negative pair is augmentations of two different images, half
//! of them of the same class (hard negatives) — or, with [`PairFeed::neighbour_negatives`], a
//! third each of any image, the same class, and the image's nearest neighbours in pixel
//! space (the look-alikes the gate meets among its nearest references). Each batch is exactly
//! half positive.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::batch::mix;
use crate::data::strong::Strong;
use crate::data::{Batch, Dataset, Normalization};
use crate::eval::argmax;
use crate::train::Feed;

/// Stream of the pair draws, distinct from the batcher's and the denoiser's.
const PAIR_STREAM: u64 = 4;

/// The re-id model's [`Feed`]: `a`, `b`, `same`.
pub struct PairFeed<'a> {
    data: &'a Dataset,
    by_class: Vec<Vec<usize>>,
    strong: Strong,
    table: [f32; 256],
    background: f32,
    seed: u64,
    plain_anchor: bool,
    neighbours: Option<Vec<Vec<u32>>>,
}

impl<'a> PairFeed<'a> {
    /// Pairs from `data`, normalised by `norm`, augmented by `strong`.
    pub fn new(data: &'a Dataset, strong: Strong, norm: Normalization, seed: u64) -> Self {
        let mut by_class = vec![Vec::new(); data.num_labels.max(1)];
        for i in 0..data.len() {
            by_class[argmax(data.label(i))].push(i);
        }
        PairFeed {
            data,
            by_class,
            strong,
            table: norm.table(),
            background: norm.apply(0),
            seed,
            plain_anchor: false,
            neighbours: None,
        }
    }

    /// Leaves the first image of every pair as it is: pairs of an original and an edited copy
    /// (how a planted near-copy is measured).
    pub fn plain_anchor(mut self) -> Self {
        self.plain_anchor = true;
        self
    }

    /// Draws a third of the negatives from `neighbours[i]`, the look-alikes of image i (see
    /// [`pixel_neighbours`]).
    pub fn neighbour_negatives(mut self, neighbours: Vec<Vec<u32>>) -> Self {
        self.neighbours = Some(neighbours);
        self
    }

    /// The partner of a negative pair for `index`.
    fn negative(&self, index: usize, rng: &mut ChaCha8Rng) -> usize {
        match &self.neighbours {
            None => self.other(index, rng.random::<bool>(), rng),
            Some(table) => match (rng.random_range(0..3), &table[index]) {
                (2, near) if !near.is_empty() => near[rng.random_range(0..near.len())] as usize,
                (kind, _) => self.other(index, kind == 1, rng),
            },
        }
    }

    /// A different image than `index`: of the same class when `hard` (and the class has
    /// another image), else any other image.
    fn other(&self, index: usize, hard: bool, rng: &mut ChaCha8Rng) -> usize {
        let class = &self.by_class[argmax(self.data.label(index))];
        let n = self.data.len();
        loop {
            let pick = if hard && class.len() > 1 {
                class[rng.random_range(0..class.len())]
            } else {
                rng.random_range(0..n)
            };
            if pick != index || n == 1 {
                return pick;
            }
        }
    }

    fn normalised(&self, index: usize) -> Vec<f32> {
        self.data.image(index).iter().map(|&b| self.table[usize::from(b)]).collect()
    }

    fn augmented(&self, index: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let d = self.data;
        let mut img = self.normalised(index);
        self.strong.apply(&mut img, (d.channels, d.height, d.width), self.background, rng);
        img
    }
}

impl Feed for PairFeed<'_> {
    fn feed(&self, batch: &Batch, step: u64) -> Vec<Vec<f32>> {
        let size = self.data.image_size();
        let (mut a, mut b, mut same) = (
            Vec::with_capacity(batch.n * size),
            Vec::with_capacity(batch.n * size),
            Vec::with_capacity(batch.n),
        );
        for (i, &index) in batch.indices.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, PAIR_STREAM, step, i as u64));
            let positive = i % 2 == 0;
            let partner = if positive { index } else { self.negative(index, &mut rng) };
            a.extend(if self.plain_anchor {
                self.normalised(index)
            } else {
                self.augmented(index, &mut rng)
            });
            b.extend(self.augmented(partner, &mut rng));
            same.push(if positive { 1.0 } else { 0.0 });
        }
        vec![a, b, same]
    }
}

/// For every image of `data`, its `k` nearest other images by Euclidean distance of the
/// normalised pixels, skipping images closer than `duplicate` (copies in the data set, which no
/// model can tell apart). Exact (blocked matrix products); minutes for 60,000 28×28 images.
pub fn pixel_neighbours(
    data: &Dataset,
    norm: Normalization,
    k: usize,
    duplicate: f64,
) -> Vec<Vec<u32>> {
    let table = norm.table();
    let pixels: Vec<f32> = data.images.iter().map(|&b| table[usize::from(b)]).collect();
    let rows = ndarray::ArrayView2::from_shape((data.len(), data.image_size()), &pixels)
        .expect("one row per image");
    // A few extra neighbours make room for the image itself and its duplicates.
    unpersonal_runtime::neighbours::nearest(rows, rows, k + 4)
        .into_iter()
        .enumerate()
        .map(|(i, list)| {
            list.into_iter()
                .filter(|n| n.index != i && n.distance >= duplicate)
                .take(k)
                .map(|n| n.index as u32)
                .collect()
        })
        .collect()
}
