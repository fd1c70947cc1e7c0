//! The privacy gate, backend-agnostic and free of I/O: [`Gate`] (the bundle's re-identification
//! model, its thresholds and the classifier that ranks survivors), the reference index it
//! searches ([`References`], built by [`Indexing`]), the decision rule ([`check`]), and the
//! same rule for images drawn for no known reference ([`Screen`]).
//!
//! A candidate drawn for reference image r passes only if the re-identification model calls it
//! "not the same person" as r **and** as each of r's k nearest references by embedding (and,
//! for images checked without a source, as each of its own k nearest references), and as every
//! other reference known to show r's person (the same DICOM PatientID). Every
//! threshold is capped at the reference's probability against itself, so no calibration can
//! let an exact copy of a compared reference through. Among the
//! passing candidates the one whose classifier output is closest to r's (mean binary
//! cross-entropy) is kept. Anything that cannot be checked is an error: the gate fails closed.

mod check;
mod index;
mod reid;
mod screen;

use ndarray::{Array2, ArrayView4, Axis};

use crate::backend::{Backend, BackendError, Model};
use crate::bundle::{BundleDir, BundleError, Normalization, Role};

pub use check::{Rejection, Verdict, check, mean_bce, probabilities, rank};
pub use index::{Indexing, ReferenceSet, References};
pub(crate) use reid::output2;
pub use reid::{EMBED_BATCH, Reid, SELF_MARGIN};
pub use screen::Screen;

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A model call failed, or a model output held NaN/Inf.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A model's output is not what the gate needs.
    #[error("{file}: {problem}")]
    Interface {
        /// The ONNX file.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// The bundle lacks a model the gate needs.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle has no re-identification decision rule.
    #[error(
        "the bundle {0} has no re-identification model (models reid_embed, reid_head and a `reid` section): nothing can be released"
    )]
    NoReid(String),
    /// The threshold is unusable.
    #[error("the re-identification threshold must lie strictly between 0 and 1, got {0}")]
    Threshold(f32),
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

impl Gate {
    /// Loads the gate of the bundle (`reid_embed`, `reid_head`, `classifier` and the `reid`
    /// section) on `backend`; fails when any is missing.
    pub fn load(loaded: &BundleDir, backend: &dyn Backend) -> Result<Gate, GateError> {
        let bundle = &loaded.bundle;
        let rule = bundle.reid.as_ref().ok_or_else(|| GateError::NoReid(bundle.name.clone()))?;
        let load = |role: Role| -> Result<Model, GateError> {
            Model::load(backend, bundle.model(role)?, loaded.onnx(role)?).map_err(GateError::from)
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
    pub fn index(&mut self, pixels: ArrayView4<u8>) -> Result<References, GateError> {
        let mut indexing = Indexing::default();
        indexing.add(self, pixels)?;
        indexing.finish(self)
    }

    /// Class probabilities of 8-bit images.
    fn classify(&mut self, pixels: ArrayView4<u8>) -> Result<Array2<f32>, GateError> {
        let mut rows = Vec::new();
        for chunk in pixels.axis_chunks_iter(Axis(0), EMBED_BATCH) {
            let x = chunk.mapv(|p| self.normalization.normalize(p));
            let logits =
                output2(&mut self.classifier, &[("image", x.view().into_dyn())], "logits")?;
            rows.push(probabilities(logits.view(), self.multi_label));
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
    ) -> Result<(Vec<Verdict>, Array2<f32>), GateError> {
        let embeddings = self.reid.embed_pixels(pixels, &self.normalization)?;
        let sources: Vec<Option<usize>> = sources.iter().map(|&s| Some(s)).collect();
        let verdicts =
            check(&mut self.reid, &references.set, embeddings.view(), &sources, self.neighbours)?;
        Ok((verdicts, self.classify(pixels)?))
    }
}
