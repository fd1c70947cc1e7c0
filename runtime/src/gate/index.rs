//! The reference set as the gate searches it: every reference's embedding (exhaustively, by
//! exact Euclidean distance) and class probabilities, built a chunk at a time.

use ndarray::{Array2, ArrayView2, ArrayView4, Axis};

use super::{EMBED_BATCH, Gate, GateError};

/// The embeddings of every reference image, searched exhaustively (exact nearest neighbours by
/// Euclidean distance, as matrix products: [`crate::neighbours`]).
#[derive(Clone, Debug)]
pub struct ReferenceSet {
    pub(super) embeddings: Array2<f32>,
    /// For each reference, the other references of its person (sorted).
    pub(super) same_person: Vec<Vec<usize>>,
}

impl ReferenceSet {
    /// Indexes `embeddings` (`[n, E]`, one row per reference image).
    pub fn new(embeddings: Array2<f32>) -> ReferenceSet {
        let same_person = vec![Vec::new(); embeddings.nrows()];
        ReferenceSet { embeddings, same_person }
    }

    /// These references, knowing who each shows (`identities`, one per reference): a candidate
    /// is also compared with every other reference of its source's person, at the threshold
    /// for its source.
    pub fn with_identities(
        mut self,
        identities: &[Option<crate::identity::Identity>],
    ) -> ReferenceSet {
        assert_eq!(identities.len(), self.len(), "one identity (or none) per reference");
        self.same_person = crate::identity::same_person(identities);
        self
    }

    /// Number of references.
    pub fn len(&self) -> usize {
        self.embeddings.nrows()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The embedding of reference `i`.
    pub fn embedding(&self, i: usize) -> ndarray::ArrayView1<'_, f32> {
        self.embeddings.row(i)
    }

    /// For every query row, the indices of its `k` nearest references, nearest first.
    pub fn nearest(&self, queries: ArrayView2<f32>, k: usize) -> Vec<Vec<usize>> {
        crate::neighbours::nearest(queries, self.embeddings.view(), k)
            .into_iter()
            .map(|list| list.into_iter().map(|n| n.index).collect())
            .collect()
    }
}

/// The reference set as the gate sees it: every reference's re-identification embedding
/// (searched exhaustively) and class probabilities.
#[derive(Clone, Debug)]
pub struct References {
    pub(super) set: ReferenceSet,
    pub(super) probabilities: Array2<f32>,
}

impl References {
    /// Number of reference images.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// These references, knowing who each shows (one identity, or none, per reference): a
    /// candidate must not re-identify any image of its source's person.
    pub fn with_identities(
        mut self,
        identities: &[Option<crate::identity::Identity>],
    ) -> References {
        self.set = self.set.with_identities(identities);
        self
    }

    /// The re-identification embedding of reference `i`.
    pub fn embedding(&self, i: usize) -> ndarray::ArrayView1<'_, f32> {
        self.set.embedding(i)
    }

    /// Every reference's class probabilities (`[n, labels]`).
    pub fn probabilities(&self) -> ArrayView2<'_, f32> {
        self.probabilities.view()
    }
}

/// [`References`] built a chunk of reference images at a time, for sets larger than memory:
/// only each reference's embedding and class probabilities are kept. The references are
/// classified here, once, rather than per batch of sources, and always in blocks of
/// [`EMBED_BATCH`] whatever the chunks handed in: the size of a model call changes the
/// last float bits, so this keeps the index, and the selection (mean BCE to the source's
/// probabilities), independent of `--batch` and of how the set is read.
#[derive(Debug, Default)]
pub struct Indexing {
    /// Embeddings so far, row-major.
    embeddings: Vec<f32>,
    /// Class probabilities so far, row-major.
    probabilities: Vec<f32>,
    /// Width of an embedding and of a probability row (0 before the first block).
    widths: (usize, usize),
    /// Pixels of fewer than [`EMBED_BATCH`] images waiting for the rest of their block.
    pending: Vec<u8>,
    /// Shape `[C, H, W]` of every image.
    shape: [usize; 3],
}

impl Indexing {
    /// Adds the next reference images (`[n, C, H, W]`, in reference-set order).
    pub fn add(&mut self, gate: &mut Gate, pixels: ArrayView4<u8>) -> Result<(), GateError> {
        let (_, c, h, w) = pixels.dim();
        self.shape = [c, h, w];
        let mut rest = pixels;
        while !rest.is_empty() {
            let waiting = self.pending.len() / (c * h * w).max(1);
            let take = (EMBED_BATCH - waiting).min(rest.len_of(Axis(0)));
            let (head, tail) = rest.split_at(Axis(0), take);
            rest = tail;
            if waiting == 0 && take == EMBED_BATCH {
                self.embed(gate, head)?;
            } else {
                self.pending.extend(head.iter());
                if waiting + take == EMBED_BATCH {
                    self.flush(gate)?;
                }
            }
        }
        Ok(())
    }

    /// The index of every reference added.
    pub fn finish(mut self, gate: &mut Gate) -> Result<References, GateError> {
        self.flush(gate)?;
        let (e, l) = self.widths;
        let rows = self.embeddings.len().checked_div(e).unwrap_or(0);
        let shaped = |data: Vec<f32>, width: usize| {
            Array2::from_shape_vec((rows, width), data).expect("whole rows")
        };
        Ok(References {
            set: ReferenceSet::new(shaped(self.embeddings, e)),
            probabilities: shaped(self.probabilities, l),
        })
    }

    /// Embeds and classifies the pending images.
    fn flush(&mut self, gate: &mut Gate) -> Result<(), GateError> {
        let [c, h, w] = self.shape;
        let pending = std::mem::take(&mut self.pending);
        let n = pending.len() / (c * h * w).max(1);
        if n > 0 {
            self.embed(
                gate,
                ArrayView4::from_shape((n, c, h, w), &pending).expect("whole images"),
            )?;
        }
        Ok(())
    }

    /// Embeds and classifies one block of at most [`EMBED_BATCH`] images.
    fn embed(&mut self, gate: &mut Gate, block: ArrayView4<u8>) -> Result<(), GateError> {
        let embeddings = gate.reid.embed_pixels(block, &gate.normalization)?;
        let probabilities = gate.classify(block)?;
        self.widths = (embeddings.ncols(), probabilities.ncols());
        self.embeddings.extend(embeddings.iter());
        self.probabilities.extend(probabilities.iter());
        Ok(())
    }
}
