//! The re-identification model: its embedding half, its pair head and the two thresholds.

use ndarray::{Array1, Array2, ArrayView2, ArrayView4, Axis};

use super::GateError;
use crate::backend::Model;
use crate::bundle::Normalization;

/// How far below a reference's probability against itself its thresholds are capped: room for
/// the last-bit differences between embeddings of one image computed in different batches.
pub const SELF_MARGIN: f32 = 1e-3;

/// Images per call of the embedding network.
pub const EMBED_BATCH: usize = 256;

/// The two halves of the re-identification model and its decision thresholds: one against
/// the reference image a candidate was drawn for, one against other references.
#[derive(Debug)]
pub struct Reid {
    embed: Model,
    head: Model,
    threshold: f32,
    neighbour_threshold: f32,
}

pub(crate) fn output2(
    model: &mut Model,
    inputs: &[(&str, ndarray::ArrayViewD<'_, f32>)],
    name: &str,
) -> Result<Array2<f32>, GateError> {
    let file = model.spec().file.clone();
    let value = model.run(inputs)?.remove(name).ok_or_else(|| GateError::Interface {
        file: file.clone(),
        problem: format!("it has no output `{name}`"),
    })?;
    value.into_dimensionality().map_err(|e| GateError::Interface {
        file,
        problem: format!("output `{name}` is not 2-D: {e}"),
    })
}

impl Reid {
    /// `embed` (`image` → `embedding`), `head` (`a`, `b` → `logit`), the probability at or
    /// above which an image shows the same person as its source reference, and the one for
    /// any other reference.
    pub fn new(
        embed: Model,
        head: Model,
        threshold: f32,
        neighbour_threshold: f32,
    ) -> Result<Reid, GateError> {
        for t in [threshold, neighbour_threshold] {
            if !(t > 0.0 && t < 1.0) {
                return Err(GateError::Threshold(t));
            }
        }
        Ok(Reid { embed, head, threshold, neighbour_threshold })
    }

    /// The decision threshold against an image's source reference (a probability).
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The decision threshold against other references (a probability).
    pub fn neighbour_threshold(&self) -> f32 {
        self.neighbour_threshold
    }

    /// Embeddings of normalised images `[n, C, H, W]`.
    pub fn embed(&mut self, images: ArrayView4<f32>) -> Result<Array2<f32>, GateError> {
        output2(&mut self.embed, &[("image", images.into_dyn())], "embedding")
    }

    /// Embeddings of 8-bit images `[n, C, H, W]`, normalised by `normalization`, embedded in
    /// batches of [`EMBED_BATCH`].
    pub fn embed_pixels(
        &mut self,
        pixels: ArrayView4<u8>,
        normalization: &Normalization,
    ) -> Result<Array2<f32>, GateError> {
        let mut parts = Vec::new();
        for chunk in pixels.axis_chunks_iter(Axis(0), EMBED_BATCH) {
            parts.push(self.embed(chunk.mapv(|p| normalization.normalize(p)).view())?);
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        match views.is_empty() {
            true => Ok(Array2::zeros((0, 0))),
            false => Ok(ndarray::concatenate(Axis(0), &views)
                .expect("embeddings of one model have one width")),
        }
    }

    /// The probability that row i of `a` and row i of `b` show the same person.
    pub fn same_person(
        &mut self,
        a: ArrayView2<f32>,
        b: ArrayView2<f32>,
    ) -> Result<Array1<f32>, GateError> {
        let logits = output2(&mut self.head, &[("a", a.into_dyn()), ("b", b.into_dyn())], "logit")?;
        Ok(logits.column(0).mapv(|z| 1.0 / (1.0 + (-z).exp())))
    }
}
