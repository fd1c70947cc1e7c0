//! The classifier: a small residual CNN whose exported graph gives logits and the
//! L2-normalised penultimate features (used for pseudo-conditioning and for evaluation).

use serde::{Deserialize, Serialize};

use super::Model;
use crate::graph::{Graph, Init, TensorId};
use crate::nn::{
    binary_cross_entropy, cross_entropy, global_avg_pool, l2_normalize, linear, residual_trunk,
};

/// Shape and width of the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Image channels.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Number of classes.
    pub classes: usize,
    /// Channel widths: stem, stage 1 (½ resolution), stage 2 (¼ resolution).
    pub widths: [usize; 3],
    /// Group-normalisation groups (must divide every width).
    pub groups: usize,
    /// Findings, not classes: a sigmoid per label trained by binary cross-entropy (multi-hot
    /// labels) instead of one softmax over the labels.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multi_label: bool,
}

impl ClassifierConfig {
    /// The default for 28×28 grayscale images with 10 classes.
    pub fn fashion_mnist() -> Self {
        ClassifierConfig {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
            widths: [32, 48, 96],
            groups: 8,
            multi_label: false,
        }
    }

    /// Checks user-given sizes before a graph is built.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.channels > 0 && (self.classes > 1 || self.multi_label && self.classes == 1),
            "classifier needs ≥1 channel and ≥2 classes (or ≥1 finding)"
        );
        anyhow::ensure!(
            self.height >= 8 && self.width >= 8,
            "classifier needs images of at least 8×8 pixels"
        );
        for w in self.widths {
            anyhow::ensure!(
                w > 0 && w % self.groups == 0,
                "width {w} is not a multiple of {} groups",
                self.groups
            );
        }
        Ok(())
    }

    /// Length of the feature vector.
    pub fn feature_dim(&self) -> usize {
        self.widths[2]
    }

    /// Logits and unnormalised pooled features for `x[B, C, H, W]`.
    fn forward(&self, g: &mut Graph, x: TensorId) -> (TensorId, TensorId) {
        let map = residual_trunk(g, x, self.widths, self.groups);
        let pooled = global_avg_pool(g, map);
        let logits = linear(
            g,
            "head",
            pooled,
            self.classes,
            Init::Kaiming { fan_in: self.widths[2], gain: 1.0 },
        );
        (logits, pooled)
    }
}

impl Model for ClassifierConfig {
    fn kind(&self) -> &'static str {
        "classifier"
    }

    fn training_graph(&self, g: &mut Graph, batch: usize) -> super::Training {
        let x = g.input("image", &[batch, self.channels, self.height, self.width]);
        let y = g.input("label", &[batch, self.classes]);
        let (logits, _) = self.forward(g, x);
        let loss = if self.multi_label {
            binary_cross_entropy(g, logits, y)
        } else {
            cross_entropy(g, logits, y)
        };
        super::Training { loss, metrics: vec![("logits".into(), logits)] }
    }

    fn inference_graph(&self, g: &mut Graph, batch: usize) {
        let x = g.input("image", &[batch, self.channels, self.height, self.width]);
        let (logits, pooled) = self.forward(g, x);
        let features = l2_normalize(g, pooled);
        g.output("logits", logits);
        g.output("features", features);
    }
}
