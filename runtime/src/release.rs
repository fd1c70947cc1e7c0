//! Gated generation, backend-agnostic and free of I/O: for each reference image, rounds of
//! candidates from the [`Generator`], each candidate judged by the privacy [`gate`] on the
//! 8-bit pixels that would be released. A candidate leaves this module only after it passed.
//!
//! Round t draws `candidates` images with guidance `w − t·decrement` and fresh noise streams;
//! the survivors are ranked by the mean binary cross-entropy of their class probabilities to
//! the reference's, and the best (optionally the two best) are released with the reference's
//! labels. A reference whose every candidate of every round was rejected releases nothing.

use ndarray::{Array3, ArrayView2, ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use crate::gate::{self, GateError, Verdict};
pub use crate::gate::{Gate, Indexing, References};
use crate::generate::{Generator, SampleId};
use crate::sampler::SampleError;

/// Why a gated release could not run. Nothing is released when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Generation failed.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// The gate could not be loaded, or could not judge.
    #[error(transparent)]
    Gate(#[from] GateError),
}

/// Each reference's outcome with the pixels of its released images (`[C, H, W]` each).
pub type Released = Vec<(Outcome, Vec<Array3<u8>>)>;

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
) -> Result<Released, ReleaseError> {
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
) -> Result<Released, ReleaseError> {
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
) -> Result<Released, ReleaseError> {
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
            let own = index.probabilities().row(references[k]).to_vec();
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
) -> Result<Released, ReleaseError> {
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
