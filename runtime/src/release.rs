//! Gated generation, backend-agnostic and free of I/O: for each reference image, rounds of
//! candidates from the [`Generator`], each candidate judged by the privacy [`gate`] on the
//! 8-bit pixels that would be released. A candidate leaves this module only after it passed.
//!
//! Round t draws `candidates` images with guidance `w − t·decrement` and fresh noise streams;
//! the survivors are ranked by the mean binary cross-entropy of their class probabilities to
//! the reference's, and the best (optionally the two best) are released with the reference's
//! labels. A reference whose every candidate of every round was rejected releases nothing.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayView4, Axis};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Model};
use crate::bundle::{BundleDir, BundleError, Normalization, Role};
use crate::gate::{self, GateError, ReferenceSet, Reid, Verdict};
use crate::generate::{Generator, SampleId};
use crate::sampler::SampleError;

/// Why a gated release could not run. Nothing is released when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Generation failed.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// A gate model failed.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// The bundle lacks what the gate needs.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle has no re-identification decision rule.
    #[error(
        "the bundle {0} has no re-identification model (models reid_embed, reid_head and a `reid` section): nothing can be released"
    )]
    NoReid(String),
}

/// The models of the gate: the re-identification halves with their threshold and the
/// classifier that ranks the survivors.
#[derive(Debug)]
pub struct Gate {
    reid: Reid,
    classifier: Model,
    normalization: Normalization,
    multi_label: bool,
    neighbours: usize,
}

/// The reference set as the gate sees it: every reference's re-identification embedding
/// (searched exhaustively) and class probabilities.
#[derive(Clone, Debug)]
pub struct References {
    set: ReferenceSet,
    probabilities: Array2<f32>,
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

impl Gate {
    /// Loads the gate of the bundle (`reid_embed`, `reid_head`, `classifier` and the `reid`
    /// section) on `backend`; fails when any is missing.
    pub fn load(loaded: &BundleDir, backend: &dyn Backend) -> Result<Gate, ReleaseError> {
        let bundle = &loaded.bundle;
        let rule = bundle.reid.as_ref().ok_or_else(|| ReleaseError::NoReid(bundle.name.clone()))?;
        let load = |role: Role| -> Result<Model, ReleaseError> {
            Ok(Model::load(backend, bundle.model(role)?, loaded.onnx(role)?)
                .map_err(GateError::from)?)
        };
        let reid = Reid::new(
            load(Role::ReidEmbed)?,
            load(Role::ReidHead)?,
            rule.threshold,
            rule.neighbour_threshold(),
        )?;
        Ok(Gate {
            reid,
            classifier: load(Role::Classifier)?,
            normalization: bundle.image.normalization.clone(),
            multi_label: bundle.labels.multi_label,
            neighbours: rule.neighbours,
        })
    }

    /// The re-identification threshold against a candidate's source (a probability).
    pub fn threshold(&self) -> f32 {
        self.reid.threshold()
    }

    /// The re-identification threshold against other references (a probability).
    pub fn neighbour_threshold(&self) -> f32 {
        self.reid.neighbour_threshold()
    }

    /// Nearest references compared besides the source.
    pub fn neighbours(&self) -> usize {
        self.neighbours
    }

    /// Embeds and classifies every reference image (`[n, C, H, W]` pixels): an [`Indexing`]
    /// fed all of them at once.
    pub fn index(&mut self, pixels: ArrayView4<u8>) -> Result<References, ReleaseError> {
        let mut indexing = Indexing::default();
        indexing.add(self, pixels)?;
        indexing.finish(self)
    }

    /// Class probabilities of 8-bit images.
    fn classify(&mut self, pixels: ArrayView4<u8>) -> Result<Array2<f32>, ReleaseError> {
        let mut rows = Vec::new();
        for chunk in pixels.axis_chunks_iter(Axis(0), gate::EMBED_BATCH) {
            let x = chunk.mapv(|p| self.normalization.normalize(p));
            let logits =
                gate::output2(&mut self.classifier, &[("image", x.view().into_dyn())], "logits")?;
            rows.push(gate::probabilities(logits.view(), self.multi_label));
        }
        let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
        Ok(ndarray::concatenate(Axis(0), &views).unwrap_or_else(|_| Array2::zeros((0, 0))))
    }

    /// Verdicts on 8-bit candidates, each against its source reference and the nearest
    /// references, and their class probabilities.
    pub fn judge(
        &mut self,
        references: &References,
        pixels: ArrayView4<u8>,
        sources: &[usize],
    ) -> Result<(Vec<Verdict>, Array2<f32>), ReleaseError> {
        let embeddings = self.reid.embed_pixels(pixels, &self.normalization)?;
        let sources: Vec<Option<usize>> = sources.iter().map(|&s| Some(s)).collect();
        let verdicts = gate::check(
            &mut self.reid,
            &references.set,
            embeddings.view(),
            &sources,
            self.neighbours,
        )?;
        Ok((verdicts, self.classify(pixels)?))
    }
}

/// [`References`] built a chunk of reference images at a time, for sets larger than memory:
/// only each reference's embedding and class probabilities are kept. The references are
/// classified here, once, rather than per batch of sources, and always in blocks of
/// [`gate::EMBED_BATCH`] whatever the chunks handed in: the size of a model call changes the
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
    /// Pixels of fewer than [`gate::EMBED_BATCH`] images waiting for the rest of their block.
    pending: Vec<u8>,
    /// Shape `[C, H, W]` of every image.
    shape: [usize; 3],
}

impl Indexing {
    /// Adds the next reference images (`[n, C, H, W]`, in reference-set order).
    pub fn add(&mut self, gate: &mut Gate, pixels: ArrayView4<u8>) -> Result<(), ReleaseError> {
        let (_, c, h, w) = pixels.dim();
        self.shape = [c, h, w];
        let mut rest = pixels;
        while !rest.is_empty() {
            let waiting = self.pending.len() / (c * h * w).max(1);
            let take = (gate::EMBED_BATCH - waiting).min(rest.len_of(Axis(0)));
            let (head, tail) = rest.split_at(Axis(0), take);
            rest = tail;
            if waiting == 0 && take == gate::EMBED_BATCH {
                self.embed(gate, head)?;
            } else {
                self.pending.extend(head.iter());
                if waiting + take == gate::EMBED_BATCH {
                    self.flush(gate)?;
                }
            }
        }
        Ok(())
    }

    /// The index of every reference added.
    pub fn finish(mut self, gate: &mut Gate) -> Result<References, ReleaseError> {
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
    fn flush(&mut self, gate: &mut Gate) -> Result<(), ReleaseError> {
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

    /// Embeds and classifies one block of at most [`gate::EMBED_BATCH`] images.
    fn embed(&mut self, gate: &mut Gate, block: ArrayView4<u8>) -> Result<(), ReleaseError> {
        let embeddings = gate.reid.embed_pixels(block, &gate.normalization)?;
        let probabilities = gate.classify(block)?;
        self.widths = (embeddings.ncols(), probabilities.ncols());
        self.embeddings.extend(embeddings.iter());
        self.probabilities.extend(probabilities.iter());
        Ok(())
    }
}

/// The gate's scores of a released image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// The highest same-person probability against any reference it was compared with.
    pub max_same_person: f32,
    /// The reference that probability was against.
    pub closest_reference: Option<usize>,
    /// References compared.
    pub compared: usize,
    /// Mean binary cross-entropy of its class probabilities to its source's.
    pub bce: f32,
}

/// One image drawn for a reference and released.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Draw {
    /// Which sample it is.
    pub id: SampleId,
    /// The guidance weight it was drawn with.
    pub guidance: f32,
    /// The gate's scores (`None` when the gate was not applied).
    pub scores: Option<Scores>,
}

/// What happened to one reference image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The reference image's position in the reference set.
    pub reference: usize,
    /// Candidates rejected in each round that ran.
    pub rejected: Vec<usize>,
    /// The released images, best first (empty: the reference released nothing).
    pub released: Vec<Draw>,
}

/// What a caller may watch while [`release_watched`] runs, for a user interface on the machine
/// that holds the reference images: denoising progress and the rejected candidates. Rejected
/// candidates are shown, never released.
pub trait Watch {
    /// Round `round` finished denoising step `done` of `total`.
    fn step(&mut self, _round: usize, _done: usize, _total: usize) {}
    /// The gate rejected candidate `id`, drawn with `guidance`.
    fn rejected(
        &mut self,
        _id: SampleId,
        _guidance: f32,
        _verdict: &Verdict,
        _pixels: ArrayView3<u8>,
    ) {
    }
}

/// Watches nothing.
impl Watch for () {}

/// Draws and gates images for `references` (positions in the reference set, row k
/// conditioned on row k of `conditions`) and returns each one's outcome with the pixels of
/// its released images (`[C, H, W]` each). At most `keep` images are released per reference.
pub fn release(
    generator: &mut Generator,
    gate: &mut Gate,
    index: &References,
    references: &[usize],
    conditions: ArrayView2<f32>,
    keep: usize,
) -> Result<Vec<(Outcome, Vec<Array3<u8>>)>, ReleaseError> {
    release_watched(generator, gate, index, references, conditions, keep, &mut ())
}

/// [`release`], reporting progress and rejected candidates to `watch`.
pub fn release_watched(
    generator: &mut Generator,
    gate: &mut Gate,
    index: &References,
    references: &[usize],
    conditions: ArrayView2<f32>,
    keep: usize,
    watch: &mut dyn Watch,
) -> Result<Vec<(Outcome, Vec<Array3<u8>>)>, ReleaseError> {
    pollster::block_on(release_async(generator, gate, index, references, conditions, keep, watch))
}

/// [`release_watched`] as a future (a browser waits for its GPU only through futures).
pub async fn release_async(
    generator: &mut Generator,
    gate: &mut Gate,
    index: &References,
    references: &[usize],
    conditions: ArrayView2<'_, f32>,
    keep: usize,
    watch: &mut dyn Watch,
) -> Result<Vec<(Outcome, Vec<Array3<u8>>)>, ReleaseError> {
    let settings = generator.settings().clone();
    let n = settings.candidates;
    let mut results: Vec<(Outcome, Vec<Array3<u8>>)> = references
        .iter()
        .map(|&reference| {
            (Outcome { reference, rejected: Vec::new(), released: Vec::new() }, Vec::new())
        })
        .collect();
    let mut pending: Vec<usize> = (0..references.len()).collect();
    for round in 0..settings.rounds {
        if pending.is_empty() {
            break;
        }
        let ids: Vec<SampleId> =
            pending.iter().flat_map(|&k| settings.round_samples(references[k], round)).collect();
        let rows: Vec<usize> = pending.iter().flat_map(|&k| std::iter::repeat_n(k, n)).collect();
        let pixels = generator
            .generate_async(&ids, conditions.select(Axis(0), &rows).view(), &mut |done, total| {
                watch.step(round, done, total)
            })
            .await?;
        let sources: Vec<usize> = ids.iter().map(|id| id.reference).collect();
        let (verdicts, probabilities) = gate.judge(index, pixels.view(), &sources)?;
        let guidance = settings.guidance_in_round(round);
        let mut still = Vec::new();
        for (slot, &k) in pending.iter().enumerate() {
            let span = slot * n..(slot + 1) * n;
            let verdicts = &verdicts[span.clone()];
            let own = index.probabilities.row(references[k]).to_vec();
            let ranked =
                gate::rank(&own, probabilities.slice(ndarray::s![span.clone(), ..]), verdicts);
            let (outcome, images) = &mut results[k];
            outcome.rejected.push(verdicts.iter().filter(|v| !v.passed).count());
            for (i, v) in verdicts.iter().enumerate().filter(|(_, v)| !v.passed) {
                watch.rejected(
                    ids[span.start + i],
                    guidance,
                    v,
                    pixels.index_axis(Axis(0), span.start + i),
                );
            }
            if ranked.is_empty() {
                still.push(k);
            }
            for &(i, bce) in ranked.iter().take(keep) {
                let v = &verdicts[i];
                let scores = Scores {
                    max_same_person: v.max_probability,
                    closest_reference: v.closest_reference,
                    compared: v.compared,
                    bce,
                };
                outcome.released.push(Draw {
                    id: ids[span.start + i],
                    guidance,
                    scores: Some(scores),
                });
                images.push(pixels.index_axis(Axis(0), span.start + i).to_owned());
            }
        }
        pending = still;
    }
    Ok(results)
}

/// **Research only**: draws round 0's candidates for `references` and returns all of them
/// unjudged (`scores: None`), in the shape of [`release`]'s result.
pub fn draw_unfiltered(
    generator: &mut Generator,
    references: &[usize],
    conditions: ArrayView2<f32>,
) -> Result<Vec<(Outcome, Vec<Array3<u8>>)>, ReleaseError> {
    let settings = generator.settings().clone();
    let ids: Vec<SampleId> =
        references.iter().flat_map(|&r| settings.round_samples(r, 0)).collect();
    let rows: Vec<usize> =
        (0..references.len()).flat_map(|k| std::iter::repeat_n(k, settings.candidates)).collect();
    let pixels = generator.generate(&ids, conditions.select(Axis(0), &rows).view())?;
    let guidance = settings.guidance_in_round(0);
    let mut images = pixels.outer_iter().map(|p| p.to_owned());
    Ok(references
        .iter()
        .map(|&reference| {
            let released: Vec<Draw> = settings
                .round_samples(reference, 0)
                .map(|id| Draw { id, guidance, scores: None })
                .collect();
            let pixels = images.by_ref().take(released.len()).collect();
            (Outcome { reference, rejected: vec![0], released }, pixels)
        })
        .collect())
}
