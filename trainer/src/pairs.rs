//! Training pairs for the re-identification model. Without identities in the data (Fashion-
//! MNIST), every image is its own "person": a positive pair is two independent strong
//! augmentations of one image; a negative pair is augmentations of two different images, half
//! of them of the same class (hard negatives) — or, with [`PairFeed::neighbour_negatives`], a
//! third each of any image, the same class, and the image's nearest neighbours in pixel
//! space (the look-alikes the gate meets among its nearest references). Each batch is exactly
//! half positive.
//!
//! Where the data says who an image shows ([`Dataset::identities`]) and a patient has several
//! images, a positive pair of one of them is, half of the time, two *different* images of that
//! patient (the model must link a person's studies, not only copies of one image), and a
//! negative pair never shows one patient twice: its partner is an image of another patient (or
//! of nobody known). Without such patients the draws are exactly those of the plain case.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use unpersonal_runtime::identity::same_person;

use crate::data::batch::mix;
use crate::data::strong::Strong;
use crate::data::{Batch, Dataset, Normalization};
use crate::eval::argmax;
use crate::train::Feed;

/// Stream of the pair draws, distinct from the batcher's and the denoiser's.
const PAIR_STREAM: u64 = 4;
/// Stream of one anchor's draws under [`PairFeed::lot_negatives`].
const PAIR_IMAGE_STREAM: u64 = 6;

/// How many clipped per-anchor terms adding or removing one patient can change under
/// [`PairFeed::lot_negatives`]: their own pair, and the pair whose negative partner they are
/// (whose partner then becomes the next member: a change of up to two clipped norms).
pub const LOT_NEGATIVES_SENSITIVITY: u32 = 3;

/// Most extra candidates [`pixel_neighbours`] looks at to make room for an image's own
/// patient's other images (a patient with more images may get fewer than `k` look-alikes).
const PATIENT_ROOM: usize = 64;

/// What the positive pairs of a [`PairFeed`] show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positives {
    /// For an image whose patient has other images: with probability ½ one of those, else the
    /// image itself; for any other image, the image itself (training).
    Mixed,
    /// Always the image itself: near-copy detection.
    SameImage,
    /// For an image whose patient has other images, always one of those; for any other image,
    /// the image itself (patient-level calibration).
    SamePatient,
}

/// The re-id model's [`Feed`]: `a`, `b`, `same`.
pub struct PairFeed<'a> {
    data: &'a Dataset,
    by_class: Vec<Vec<usize>>,
    /// For every image, the other images of its patient (sorted; empty without an identity).
    same_patient: Vec<Vec<usize>>,
    positives: Positives,
    strong: Strong,
    table: [f32; 256],
    background: f32,
    seed: u64,
    plain_anchor: bool,
    neighbours: Option<Vec<Vec<u32>>>,
    lot_negatives: bool,
}

impl<'a> PairFeed<'a> {
    /// Pairs from `data`, normalised by `norm`, augmented by `strong`; positives
    /// [`Positives::Mixed`].
    pub fn new(data: &'a Dataset, strong: Strong, norm: Normalization, seed: u64) -> Self {
        let mut by_class = vec![Vec::new(); data.num_labels.max(1)];
        for i in 0..data.len() {
            by_class[argmax(data.label(i))].push(i);
        }
        PairFeed {
            data,
            by_class,
            same_patient: same_person(&data.identities),
            positives: Positives::Mixed,
            strong,
            table: norm.table(),
            background: norm.apply(0),
            seed,
            plain_anchor: false,
            neighbours: None,
            lot_negatives: false,
        }
    }

    /// Pairs for DP-SGD, whose batches are Poisson lots with one image per patient: each
    /// anchor's draws come from a stream of its own (seed, step, row), positive or negative by
    /// a coin of that stream, and a negative's partner is the next image of the lot (cyclically),
    /// never an image from outside it. A patient outside the lot then affects nothing, and one
    /// inside affects at most [`LOT_NEGATIVES_SENSITIVITY`] clipped terms. A lot of one image
    /// pairs it positively.
    pub fn lot_negatives(mut self) -> Self {
        self.lot_negatives = true;
        self
    }

    /// Leaves the first image of every pair as it is: pairs of an original and an edited copy
    /// (how a planted near-copy is measured).
    pub fn plain_anchor(mut self) -> Self {
        self.plain_anchor = true;
        self
    }

    /// Sets what the positive pairs show.
    pub fn positives(mut self, positives: Positives) -> Self {
        self.positives = positives;
        self
    }

    /// Draws a third of the negatives from `neighbours[i]`, the look-alikes of image i (see
    /// [`pixel_neighbours`]). Look-alikes of the image's own patient are dropped: they are no
    /// negatives.
    pub fn neighbour_negatives(mut self, mut neighbours: Vec<Vec<u32>>) -> Self {
        for (near, same) in neighbours.iter_mut().zip(&self.same_patient) {
            near.retain(|&j| same.binary_search(&(j as usize)).is_err());
        }
        self.neighbours = Some(neighbours);
        self
    }

    /// Whether the data holds a patient with several images (then positives can be two
    /// different images of one patient).
    pub fn has_patients(&self) -> bool {
        self.same_patient.iter().any(|same| !same.is_empty())
    }

    /// The partner of a positive pair for `index`: itself, or another image of its patient.
    fn positive(&self, index: usize, rng: &mut ChaCha8Rng) -> usize {
        let same = &self.same_patient[index];
        // No draw for an image without other images: data without patients keeps its draws.
        let other_image = !same.is_empty()
            && match self.positives {
                Positives::SameImage => false,
                Positives::SamePatient => true,
                Positives::Mixed => rng.random::<bool>(),
            };
        if other_image { same[rng.random_range(0..same.len())] } else { index }
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

    /// An image of someone else than `index` shows: of the same class when `hard` (and the
    /// class has one), else any. Only where every image shows one person (a set no negative
    /// can be drawn from, see [`one_person`]) is it any image.
    fn other(&self, index: usize, hard: bool, rng: &mut ChaCha8Rng) -> usize {
        let label = argmax(self.data.label(index));
        let class = &self.by_class[label];
        let same = &self.same_patient[index];
        let others_in_class =
            class.len() - 1 - same.iter().filter(|&&j| argmax(self.data.label(j)) == label).count();
        let others = self.data.len() - 1 - same.len();
        loop {
            let pick = if hard && others_in_class > 0 {
                class[rng.random_range(0..class.len())]
            } else {
                rng.random_range(0..self.data.len())
            };
            if (pick != index && same.binary_search(&pick).is_err()) || others == 0 {
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
            let (mut rng, positive) = if self.lot_negatives {
                let mut rng = ChaCha8Rng::seed_from_u64(mix(
                    self.seed,
                    PAIR_IMAGE_STREAM,
                    step,
                    index as u64,
                ));
                let coin = rng.random::<bool>();
                (rng, coin || batch.n < 2)
            } else {
                let rng = ChaCha8Rng::seed_from_u64(mix(self.seed, PAIR_STREAM, step, i as u64));
                (rng, i % 2 == 0)
            };
            let partner = if positive {
                self.positive(index, &mut rng)
            } else if self.lot_negatives {
                batch.indices[(i + 1) % batch.n]
            } else {
                self.negative(index, &mut rng)
            };
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

/// Whether all of `data`'s (at least two) images show one patient: no negative pair can be
/// drawn from it.
pub fn one_person(data: &Dataset) -> bool {
    data.len() >= 2
        && data.identities[0].is_some()
        && data.identities.iter().all(|&id| id == data.identities[0])
}

/// For every image of `data`, its `k` nearest other images by Euclidean distance of the
/// normalised pixels, skipping images closer than `duplicate` (copies in the data set, which no
/// model can tell apart) and other images of the image's own patient (no negatives). Exact
/// (blocked matrix products); minutes for 60,000 28×28 images.
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
    let same = same_person(&data.identities);
    // A few extra neighbours make room for the image itself, its duplicates and the other
    // images of its patient (often its nearest).
    let room = same.iter().map(Vec::len).max().unwrap_or(0).min(PATIENT_ROOM);
    unpersonal_runtime::neighbours::nearest(rows, rows, k + 4 + room)
        .into_iter()
        .enumerate()
        .map(|(i, list)| {
            list.into_iter()
                .filter(|n| {
                    n.index != i
                        && n.distance >= duplicate
                        && same[i].binary_search(&n.index).is_err()
                })
                .take(k)
                .map(|n| n.index as u32)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use unpersonal_runtime::identity::Identity;

    /// 20 distinct 8×8 images in 3 classes, identities as given.
    fn toy(identities: Vec<Option<Identity>>) -> Dataset {
        let n = identities.len();
        let mut labels = vec![0f32; n * 3];
        for i in 0..n {
            labels[i * 3 + i % 3] = 1.0;
        }
        Dataset {
            name: "toy".into(),
            channels: 1,
            height: 8,
            width: 8,
            num_labels: 3,
            multi_label: false,
            images: (0..n * 64).map(|p| ((p * 37 + p / 64 * 11) % 256) as u8).collect(),
            labels,
            allows_hflip: false,
            identities,
            label_names: Vec::new(),
        }
    }

    /// FNV-1a over the bits of every value of the first four batches of `feed`.
    fn checksum(feed: &PairFeed, n: usize) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for step in 0..4 {
            let batch =
                Batch { images: vec![], labels: vec![], indices: (0..n).rev().collect(), n };
            for input in feed.feed(&batch, step) {
                for v in input {
                    for byte in v.to_bits().to_le_bytes() {
                        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                    }
                }
            }
        }
        hash
    }

    /// The checksums were taken from the pair feed before patients were known to it: data
    /// without identities (and a patient-free identity column) must keep its draws, so runs
    /// and checkpoints stay reproducible.
    #[test]
    fn draws_without_patients_are_unchanged() {
        let norm = Normalization::SYMMETRIC;
        let p = Identity::of_patient_id("only-image");
        let mut lone = vec![None; 20];
        lone[3] = p;
        for d in [toy(vec![None; 20]), toy(lone)] {
            let plain = PairFeed::new(&d, Strong::default(), norm, 7);
            assert!(!plain.has_patients());
            let anchored = PairFeed::new(&d, Strong::default(), norm, 7).plain_anchor();
            let near = PairFeed::new(&d, Strong::default(), norm, 7)
                .neighbour_negatives(pixel_neighbours(&d, norm, 3, 1e-3));
            assert_eq!(checksum(&plain, 20), 0x48f2_04c7_9ac9_3dbc);
            assert_eq!(checksum(&anchored, 20), 0x309b_a634_8623_4cbb);
            assert_eq!(checksum(&near, 20), 0x10a8_c08a_9e31_50e2);
        }
    }

    #[test]
    fn lot_negatives_pair_inside_the_lot_and_a_removed_patient_changes_at_most_two_pairs() {
        let norm = Normalization::SYMMETRIC;
        let ids = (0..20).map(|i| Identity::of_patient_id(&format!("P{}", i / 2))).collect();
        let d = toy(ids);
        let feed = PairFeed::new(&d, Strong::default(), norm, 7).lot_negatives();
        let size = d.image_size();
        let lot = |rows: &[usize]| Batch {
            images: vec![],
            labels: vec![],
            indices: rows.to_vec(),
            n: rows.len(),
        };
        let pair = |out: &[Vec<f32>], k: usize| {
            (
                out[0][k * size..(k + 1) * size].to_vec(),
                out[1][k * size..(k + 1) * size].to_vec(),
                out[2][k],
            )
        };
        // One image per patient, as DP lots hold them.
        let full = [0usize, 2, 5, 7, 8, 13, 16, 19];
        let mut negatives = 0;
        for step in 1..=20 {
            let with = feed.feed(&lot(&full), step);
            for k in 0..full.len() {
                if with[2][k] == 0.0 {
                    negatives += 1;
                    // The partner is the next lot member (augmented), not the anchor's patient.
                    let next = feed.feed(&lot(&[full[k], full[(k + 1) % full.len()]]), step);
                    assert_eq!(pair(&with, k).1, pair(&next, 0).1, "step {step}, anchor {k}");
                }
            }
            // Removing the patient at place 3 (row 7) leaves every pair but its own and its
            // predecessor's as it was.
            let without: Vec<usize> = full.iter().copied().filter(|&r| r != 7).collect();
            let after = feed.feed(&lot(&without), step);
            for (k, &row) in full.iter().enumerate() {
                if row == 7 || k == 2 {
                    continue;
                }
                let j = without.iter().position(|&r| r == row).unwrap();
                assert_eq!(
                    pair(&with, k),
                    pair(&after, j),
                    "step {step}: row {row}'s pair changed"
                );
            }
        }
        assert!((40..=120).contains(&negatives), "{negatives} of 160 pairs negative");
        // A lot of one image pairs it positively.
        assert!((1..=20).all(|t| feed.feed(&lot(&[5]), t)[2][0] == 1.0));
    }

    #[test]
    fn a_set_of_one_patient_has_no_negatives() {
        let p = Identity::of_patient_id("p");
        let q = Identity::of_patient_id("q");
        assert!(one_person(&toy(vec![p; 3])));
        assert!(!one_person(&toy(vec![p, p, q])));
        assert!(!one_person(&toy(vec![p, p, None])));
        assert!(!one_person(&toy(vec![None; 3])));
        assert!(!one_person(&toy(vec![p])));
        assert!(
            PairFeed::new(&toy(vec![p, p, q]), Strong::default(), Normalization::SYMMETRIC, 0)
                .has_patients()
        );
    }
}
