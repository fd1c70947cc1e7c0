//! The re-identification model: a Siamese network whose shared CNN maps an image to a 128-d
//! sigmoid embedding, and whose head maps `|e₁ − e₂|` through a linear layer to the logit of
//! "same person". It is exported as two files, the embedding network ([`ReidConfig`]'s
//! inference graph) and the head ([`ReidHead`]), so a reference set is embedded once and
//! compared with many candidates cheaply.

use serde::{Deserialize, Serialize};

use super::Model;
use crate::graph::{Graph, Init, TensorId};
use crate::nn::{conv2d, linear, residual_trunk};
use crate::ops::{Conv, UnaryKind};

/// Shape and width of the re-identification model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReidConfig {
    /// Image channels.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Channel widths: stem, stage 1 (½ resolution), stage 2 (¼ resolution).
    pub widths: [usize; 3],
    /// Channels of the spatial descriptor: the ¼-resolution map is reduced to this many
    /// channels by a 1×1 convolution and flattened, so the embedding keeps *where* things are
    /// (what tells one image from another of the same class), not only what is there.
    pub descriptor: usize,
    /// Embedding size.
    pub embedding: usize,
    /// Group-normalisation groups.
    pub groups: usize,
}

impl ReidConfig {
    /// The default for 28×28 grayscale images: 128-d embeddings.
    pub fn fashion_mnist() -> Self {
        ReidConfig {
            channels: 1,
            height: 28,
            width: 28,
            widths: [32, 64, 128],
            descriptor: 16,
            embedding: 128,
            groups: 8,
        }
    }

    /// Checks user-given sizes before a graph is built.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.channels > 0 && self.embedding > 0 && self.descriptor > 0,
            "the re-id model needs ≥1 channel, a descriptor and an embedding"
        );
        anyhow::ensure!(
            self.height >= 8 && self.width >= 8,
            "the re-id model needs images of at least 8×8 pixels"
        );
        for w in self.widths {
            anyhow::ensure!(
                w > 0 && w.is_multiple_of(self.groups),
                "width {w} is not a multiple of {} groups",
                self.groups
            );
        }
        Ok(())
    }

    /// The embedding network: `[B, C, H, W]` → trunk → 1×1 convolution to the descriptor →
    /// flatten → linear → sigmoid `[B, E]`. Parameters under `embed.`.
    fn embed(&self, g: &mut Graph, x: TensorId) -> TensorId {
        g.scope("embed", |g| {
            let map = residual_trunk(g, x, self.widths, self.groups);
            let reduced =
                conv2d(g, "descriptor", map, self.descriptor, 1, Conv::same(0), true, None);
            let reduced = g.relu(reduced);
            let [b, d, h, w]: [usize; 4] =
                g.shape(reduced).try_into().expect("the trunk gives a 4-D map");
            let flat = g.reshape(reduced, &[b, d * h * w]);
            let e = linear(
                g,
                "out",
                flat,
                self.embedding,
                Init::Kaiming { fan_in: d * h * w, gain: 1.0 },
            );
            g.sigmoid(e)
        })
    }

    /// The head: `|a − b|` → linear → logit `[B, 1]`. Parameters under `head.`.
    fn head(&self, g: &mut Graph, a: TensorId, b: TensorId) -> TensorId {
        let diff = g.sub(a, b);
        let abs = g.unary(UnaryKind::Abs, diff);
        linear(g, "head", abs, 1, Init::Kaiming { fan_in: self.embedding, gain: 1.0 })
    }

    /// The logit of two image batches, embedded together by the shared network.
    fn pair_logit(&self, g: &mut Graph, a: TensorId, b: TensorId, batch: usize) -> TensorId {
        let both = g.concat(&[a, b], 0);
        let e = self.embed(g, both);
        let ea = g.slice(e, 0, 0, batch);
        let eb = g.slice(e, 0, batch, 2 * batch);
        self.head(g, ea, eb)
    }

    fn image(&self, batch: usize) -> [usize; 4] {
        [batch, self.channels, self.height, self.width]
    }
}

/// Mean binary cross-entropy of `logits` against 0/1 `targets`, in the stable form
/// `relu(z) − t·z + ln(1 + e^(−|z|))`.
fn bce_with_logits(g: &mut Graph, logits: TensorId, targets: TensorId) -> TensorId {
    let relu = g.relu(logits);
    let tz = g.mul(targets, logits);
    let abs = g.unary(UnaryKind::Abs, logits);
    let neg = g.neg(abs);
    let exp = g.unary(UnaryKind::Exp, neg);
    let one_plus = g.add_scalar(exp, 1.0);
    let log = g.unary(UnaryKind::Log, one_plus);
    let a = g.sub(relu, tz);
    let per_pair = g.add(a, log);
    g.mean_all(per_pair)
}

impl Model for ReidConfig {
    fn kind(&self) -> &'static str {
        "reid"
    }

    /// Batch inputs: image pairs `a`, `b` and `same` (1 for the same person, 0 otherwise).
    fn training_graph(&self, g: &mut Graph, batch: usize) -> super::Training {
        let a = g.input("a", &self.image(batch));
        let b = g.input("b", &self.image(batch));
        let same = g.input("same", &[batch, 1]);
        let logit = self.pair_logit(g, a, b, batch);
        let loss = bce_with_logits(g, logit, same);
        super::Training { loss, metrics: vec![("logit".into(), logit)] }
    }

    /// The exported embedding half: input `image`, output `embedding` `[batch, E]`.
    fn inference_graph(&self, g: &mut Graph, batch: usize) {
        let x = g.input("image", &self.image(batch));
        let e = self.embed(g, x);
        g.output("embedding", e);
    }
}

/// The exported head half: inputs `a`, `b` (embeddings), output `logit` `[batch, 1]`.
pub struct ReidHead<'a>(pub &'a ReidConfig);

impl Model for ReidHead<'_> {
    fn kind(&self) -> &'static str {
        "reid_head"
    }

    fn training_graph(&self, g: &mut Graph, batch: usize) -> super::Training {
        self.0.training_graph(g, batch)
    }

    fn inference_graph(&self, g: &mut Graph, batch: usize) {
        let a = g.input("a", &[batch, self.0.embedding]);
        let b = g.input("b", &[batch, self.0.embedding]);
        let logit = self.0.head(g, a, b);
        g.output("logit", logit);
    }
}
