//! The pseudo-conditional EDM denoiser: an ADM-style U-Net `F` inside the EDM preconditioning
//! (Karras et al. 2022), conditioned on a feature vector through a learned projection added to
//! the noise embedding, with a condition mask so that the same network is also the
//! unconditional guide (classifier-free guidance).
//!
//! `D(x; σ, c, m) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ), m·c, m)` with
//! `c_skip = σ_d²/(σ²+σ_d²)`, `c_out = σ·σ_d/√(σ²+σ_d²)`, `c_in = 1/√(σ²+σ_d²)`,
//! `c_noise = ln(σ)/4`. Training minimises `λ(σ)·‖D − y‖²` with `λ = 1/c_out²`, written as
//! `‖F − (y − c_skip·x)/c_out‖²` (the same quantity, better conditioned).

use serde::{Deserialize, Serialize};

use super::Model;
use crate::graph::{Graph, Init, TensorId};
use crate::nn::{conv2d, group_norm, linear, self_attention, upsample};
use crate::ops::{Conv, UnaryKind};

/// Shape, width and EDM constants of the denoiser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenoiserConfig {
    /// Image channels.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Length of the condition (feature) vector.
    pub condition_dim: usize,
    /// Channels per resolution level, full resolution first; each further level halves H and W.
    pub widths: Vec<usize>,
    /// Residual blocks per level in the encoder (the decoder has one more, ADM style).
    pub blocks: usize,
    /// Levels (0: full resolution) whose residual blocks are followed by self-attention; the
    /// bottleneck always has one.
    pub attention: Vec<usize>,
    /// Width of the noise/condition embedding.
    pub embedding: usize,
    /// Group-normalisation groups (must divide every width).
    pub groups: usize,
    /// σ_data of the EDM preconditioning.
    pub sigma_data: f32,
}

impl DenoiserConfig {
    /// The CPU-sized default for 28×28 grayscale images and 96-dimensional conditions.
    pub fn fashion_mnist(condition_dim: usize) -> Self {
        DenoiserConfig {
            channels: 1,
            height: 28,
            width: 28,
            condition_dim,
            widths: vec![32, 64, 64],
            blocks: 1,
            attention: vec![2],
            embedding: 128,
            groups: 8,
            sigma_data: 0.5,
        }
    }

    /// Checks user-given sizes before a graph is built.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.channels > 0 && self.condition_dim > 0,
            "the denoiser needs ≥1 channel and a condition"
        );
        anyhow::ensure!(
            !self.widths.is_empty() && self.blocks > 0,
            "the denoiser needs ≥1 level and ≥1 block per level"
        );
        let scale = 1 << (self.widths.len() - 1);
        anyhow::ensure!(
            self.height.is_multiple_of(scale) && self.width.is_multiple_of(scale),
            "{} levels need image sides divisible by {scale}, got {}×{}",
            self.widths.len(),
            self.height,
            self.width
        );
        for &w in &self.widths {
            anyhow::ensure!(
                w > 0 && w % self.groups == 0,
                "width {w} is not a multiple of {} groups",
                self.groups
            );
        }
        if let Some(&l) = self.attention.iter().find(|&&l| l >= self.widths.len()) {
            anyhow::bail!("attention level {l} does not exist ({} levels)", self.widths.len());
        }
        anyhow::ensure!(
            self.embedding >= 8 && self.embedding.is_multiple_of(2),
            "the embedding width must be even and ≥ 8"
        );
        anyhow::ensure!(self.sigma_data > 0.0, "sigma_data must be positive");
        Ok(())
    }

    /// The EDM preconditioning factors for `sigma[B]`: `(c_skip, c_out, c_in)` shaped
    /// `[B, 1, 1, 1]`, and `c_noise[B]`.
    fn precondition(
        &self,
        g: &mut Graph,
        sigma: TensorId,
    ) -> (TensorId, TensorId, TensorId, TensorId) {
        let b = g.shape(sigma)[0];
        let sd = self.sigma_data;
        let s = g.reshape(sigma, &[b, 1, 1, 1]);
        let s2 = g.square(s);
        let total = g.add_scalar(s2, sd * sd);
        let root = g.unary(UnaryKind::Sqrt, total);
        let one = g.scalar(1.0);
        let c_in = g.div(one, root);
        let sd2 = g.scalar(sd * sd);
        let c_skip = g.div(sd2, total);
        let s_sd = g.scale(s, sd);
        let c_out = g.div(s_sd, root);
        let ln = g.unary(UnaryKind::Log, sigma);
        let c_noise = g.scale(ln, 0.25);
        (c_skip, c_out, c_in, c_noise)
    }

    /// The embedding every residual block receives: positional features of `c_noise[B]`
    /// through a two-layer MLP, plus the projected condition on rows with mask 1 or a learned
    /// null embedding on rows with mask 0 (such rows do not depend on their condition).
    fn embed(
        &self,
        g: &mut Graph,
        c_noise: TensorId,
        condition: TensorId,
        mask: TensorId,
    ) -> TensorId {
        let b = g.shape(c_noise)[0];
        let e = self.embedding;
        let half = e / 4;
        // Frequencies 0.1 … 100, geometric.
        let freqs: Vec<f32> =
            (0..half).map(|k| 0.1 * 1000f32.powf(k as f32 / (half - 1).max(1) as f32)).collect();
        let freqs = g.constant(&[1, half], freqs);
        let t = g.reshape(c_noise, &[b, 1]);
        let angles = g.mul(t, freqs);
        let cos = g.unary(UnaryKind::Cos, angles);
        let sin = g.unary(UnaryKind::Sin, angles);
        let pos = g.concat(&[cos, sin], 1);
        let h = linear(g, "noise_embed.0", pos, e, Init::Kaiming { fan_in: 2 * half, gain: 1.0 });
        let h = g.silu(h);
        let noise_emb = linear(g, "noise_embed.1", h, e, Init::Kaiming { fan_in: e, gain: 1.0 });

        let m = g.reshape(mask, &[b, 1]);
        let masked = g.mul(condition, m);
        let cond = linear(
            g,
            "condition_embed",
            masked,
            e,
            Init::Kaiming { fan_in: self.condition_dim, gain: 1.0 },
        );
        let cond = g.mul(cond, m);
        let null = g.param("null_embed", &[e], Init::Normal { std: 0.1 });
        let neg = g.neg(m);
        let inv = g.add_scalar(neg, 1.0);
        let null = g.mul(null, inv);
        let sum = g.add(noise_emb, cond);
        let sum = g.add(sum, null);
        g.silu(sum)
    }

    /// The U-Net `F(x_in; emb)`.
    fn unet(&self, g: &mut Graph, x_in: TensorId, emb: TensorId) -> TensorId {
        let gr = self.groups;
        let levels = self.widths.len();
        let mut h = conv2d(g, "input", x_in, self.widths[0], 3, Conv::same(1), true, None);
        let mut skips = vec![h];
        for (l, &w) in self.widths.iter().enumerate() {
            for i in 0..self.blocks {
                h = res_block(g, &format!("down{l}.block{i}"), h, w, emb, gr);
                if self.attention.contains(&l) {
                    h = self_attention(g, &format!("down{l}.attn{i}"), h, gr);
                }
                skips.push(h);
            }
            if l + 1 < levels {
                let c = g.shape(h)[1];
                let stride2 = Conv { stride: 2, pad: 1, dilation: 1, groups: 1 };
                h = conv2d(g, &format!("down{l}.resample"), h, c, 3, stride2, true, None);
                skips.push(h);
            }
        }
        let deepest = self.widths[levels - 1];
        h = res_block(g, "mid.block0", h, deepest, emb, gr);
        h = self_attention(g, "mid.attn", h, gr);
        h = res_block(g, "mid.block1", h, deepest, emb, gr);
        for (l, &w) in self.widths.iter().enumerate().rev() {
            for i in 0..=self.blocks {
                let skip = skips.pop().expect("one skip per decoder block");
                let joined = g.concat(&[h, skip], 1);
                h = res_block(g, &format!("up{l}.block{i}"), joined, w, emb, gr);
                if self.attention.contains(&l) {
                    h = self_attention(g, &format!("up{l}.attn{i}"), h, gr);
                }
            }
            if l > 0 {
                h = upsample(g, h, 2);
            }
        }
        let h = group_norm(g, "out.norm", h, gr, Init::Ones);
        let h = g.silu(h);
        conv2d(g, "out.conv", h, self.channels, 3, Conv::same(1), true, Some(Init::Zeros))
    }

    /// `D(x; σ, c, m)` for the graph inputs.
    fn denoise(
        &self,
        g: &mut Graph,
        x: TensorId,
        sigma: TensorId,
        condition: TensorId,
        mask: TensorId,
    ) -> (TensorId, Precond) {
        let (c_skip, c_out, c_in, c_noise) = self.precondition(g, sigma);
        let emb = self.embed(g, c_noise, condition, mask);
        let x_in = g.mul(x, c_in);
        let f = self.unet(g, x_in, emb);
        (f, Precond { c_skip, c_out })
    }

    fn image_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.channels, self.height, self.width]
    }
}

/// The preconditioning factors the output and the loss need.
struct Precond {
    c_skip: TensorId,
    c_out: TensorId,
}

/// ADM residual block: `skip(x) + conv(silu(norm(conv(silu(norm(x)))) ⊙ (1 + scale) + shift))`
/// with `scale, shift` projected from the embedding and the last convolution zero-initialised,
/// so the block starts as its skip path.
fn res_block(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    out: usize,
    emb: TensorId,
    groups: usize,
) -> TensorId {
    let [b, cin, _, _]: [usize; 4] = g.shape(x).try_into().expect("a residual block needs NCHW");
    g.scope(name, |g| {
        let h = group_norm(g, "norm0", x, groups, Init::Ones);
        let h = g.silu(h);
        let h = conv2d(g, "conv0", h, out, 3, Conv::same(1), true, None);
        let e = g.shape(emb)[1];
        let ss = linear(g, "emb", emb, 2 * out, Init::Kaiming { fan_in: e, gain: 1.0 });
        let ss = g.reshape(ss, &[b, 2 * out, 1, 1]);
        let scale = g.slice(ss, 1, 0, out);
        let shift = g.slice(ss, 1, out, 2 * out);
        let h = group_norm(g, "norm1", h, groups, Init::Ones);
        let gain = g.add_scalar(scale, 1.0);
        let h = g.mul(h, gain);
        let h = g.add(h, shift);
        let h = g.silu(h);
        let h = conv2d(g, "conv1", h, out, 3, Conv::same(1), true, Some(Init::Zeros));
        let skip =
            if cin == out { x } else { conv2d(g, "skip", x, out, 1, Conv::same(0), true, None) };
        g.add(skip, h)
    })
}

impl Model for DenoiserConfig {
    fn kind(&self) -> &'static str {
        "denoiser"
    }

    /// Batch inputs: `image` (clean, normalised), `noise` (standard normal, same shape),
    /// `sigma[B]`, `condition[B, D]`, `condition_mask[B]`; the noisy input is `image + σ·noise`.
    fn training_graph(&self, g: &mut Graph, batch: usize) -> super::Training {
        let shape = self.image_shape(batch);
        let y = g.input("image", &shape);
        let n = g.input("noise", &shape);
        let sigma = g.input("sigma", &[batch]);
        let condition = g.input("condition", &[batch, self.condition_dim]);
        let mask = g.input("condition_mask", &[batch]);
        let s = g.reshape(sigma, &[batch, 1, 1, 1]);
        let scaled_noise = g.mul(n, s);
        let x = g.add(y, scaled_noise);
        let (f, pre) = self.denoise(g, x, sigma, condition, mask);
        let skip = g.mul(x, pre.c_skip);
        let residual = g.sub(y, skip);
        let target = g.div(residual, pre.c_out);
        let err = g.sub(f, target);
        let sq = g.square(err);
        let loss = g.mean_all(sq);
        super::Training { loss, metrics: vec![] }
    }

    fn inference_graph(&self, g: &mut Graph, batch: usize) {
        let x = g.input("x", &self.image_shape(batch));
        let sigma = g.input("sigma", &[batch]);
        let condition = g.input("condition", &[batch, self.condition_dim]);
        let mask = g.input("condition_mask", &[batch]);
        let (f, pre) = self.denoise(g, x, sigma, condition, mask);
        let skip = g.mul(x, pre.c_skip);
        let out = g.mul(f, pre.c_out);
        let denoised = g.add(skip, out);
        g.output("denoised", denoised);
    }
}
