//! The networks the trainer knows, each defined once and built into two graphs.

mod classifier;
mod denoiser;
mod reid;

pub use classifier::ClassifierConfig;
pub use denoiser::DenoiserConfig;
pub use reid::{ReidConfig, ReidHead};

use crate::graph::{Graph, TensorId};

/// What a training graph computes besides the parameter update.
#[derive(Debug)]
pub struct Training {
    /// Scalar loss to minimise.
    pub loss: TensorId,
    /// Extra named outputs returned every step (e.g. logits for accuracy).
    pub metrics: Vec<(String, TensorId)>,
}

/// A network definition: the same parameters appear, under the same names, in both graphs.
pub trait Model {
    /// Short name of the model kind (`classifier`, …), used for file names and logs.
    fn kind(&self) -> &'static str;

    /// Adds the batch inputs, the forward pass and the loss for a batch of `batch` samples.
    fn training_graph(&self, g: &mut Graph, batch: usize) -> Training;

    /// Adds the inputs, the forward pass and the named outputs of the exported model.
    fn inference_graph(&self, g: &mut Graph, batch: usize);
}

/// Floating-point operations of one forward evaluation of the exported model on one image
/// (convolutions and matrix products), in millions.
pub fn forward_mflops(model: &dyn Model) -> f64 {
    let mut g = Graph::new();
    model.inference_graph(&mut g, 1);
    crate::graph::flops(&g) as f64 / 1e6
}
