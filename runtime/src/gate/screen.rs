//! The gate for images drawn for no known reference (`unpersonal check`, the audit, `bench`):
//! every image is compared with the references nearest to it by embedding, at the neighbour
//! threshold (or, strict, at the source threshold), each threshold capped at the reference's
//! probability against itself.

use ndarray::{Array2, ArrayView2, ArrayView4, Axis};

use super::{GateError, ReferenceSet, Reid, Verdict, check};
use crate::backend::{Backend, Model};
use crate::bundle::{BundleDir, Normalization, Role};

/// The re-identification model of a bundle and the reference set it screens images against.
#[derive(Debug)]
pub struct Screen {
    reid: Reid,
    normalization: Normalization,
    neighbours: usize,
    /// Reference embeddings added so far, row-major, and their width.
    embeddings: Vec<f32>,
    width: usize,
    references: Option<ReferenceSet>,
}

impl Screen {
    /// Loads the bundle's re-identification model on `backend`, comparing each image with
    /// `neighbours` nearest references (default: the bundle's `reid.neighbours`) at the
    /// neighbour threshold, or at the source threshold when `strict`.
    pub fn load(
        loaded: &BundleDir,
        backend: &dyn Backend,
        strict: bool,
        neighbours: Option<usize>,
    ) -> Result<Screen, GateError> {
        let bundle = &loaded.bundle;
        let rule = bundle.reid.as_ref().ok_or_else(|| GateError::NoReid(bundle.name.clone()))?;
        let load = |role: Role| -> Result<Model, GateError> {
            Ok(Model::load(backend, bundle.model(role)?, loaded.onnx(role)?)?)
        };
        let threshold = if strict { rule.threshold } else { rule.neighbour_threshold() };
        Ok(Screen {
            reid: Reid::new(load(Role::ReidEmbed)?, load(Role::ReidHead)?, threshold, threshold)?,
            normalization: bundle.image.normalization.clone(),
            neighbours: neighbours.unwrap_or(rule.neighbours),
            embeddings: Vec::new(),
            width: 0,
            references: None,
        })
    }

    /// The same-person probability at or above which an image fails.
    pub fn threshold(&self) -> f32 {
        self.reid.neighbour_threshold()
    }

    /// Nearest references each image is compared with.
    pub fn neighbours(&self) -> usize {
        self.neighbours
    }

    /// Re-identification embeddings of 8-bit images (`[n, C, H, W]`).
    pub fn embed(&mut self, pixels: ArrayView4<u8>) -> Result<Array2<f32>, GateError> {
        self.reid.embed_pixels(pixels, &self.normalization)
    }

    /// Adds the next reference images (`[n, C, H, W]`, in reference-set order).
    pub fn add_references(&mut self, pixels: ArrayView4<u8>) -> Result<(), GateError> {
        let embeddings = self.embed(pixels)?;
        self.add_reference_embeddings(embeddings.view());
        Ok(())
    }

    /// Adds the next references by their embeddings (`[n, E]`).
    pub fn add_reference_embeddings(&mut self, embeddings: ArrayView2<f32>) {
        self.references = None;
        self.width = embeddings.ncols();
        self.embeddings.extend(embeddings.iter());
    }

    /// Verdicts on 8-bit images against the references added.
    pub fn check(&mut self, pixels: ArrayView4<u8>) -> Result<Vec<Verdict>, GateError> {
        let embeddings = self.embed(pixels)?;
        self.check_embeddings(embeddings.view())
    }

    /// Verdicts on images by their embeddings (`[m, E]`) against the references added.
    pub fn check_embeddings(
        &mut self,
        embeddings: ArrayView2<f32>,
    ) -> Result<Vec<Verdict>, GateError> {
        let references = match &self.references {
            Some(references) => references,
            None => {
                let rows = self.embeddings.len().checked_div(self.width).unwrap_or(0);
                let all = Array2::from_shape_vec((rows, self.width), self.embeddings.clone())
                    .expect("whole rows");
                self.references.insert(ReferenceSet::new(all))
            }
        };
        let sources = vec![None; embeddings.len_of(Axis(0))];
        check(&mut self.reid, references, embeddings, &sources, self.neighbours)
    }
}
