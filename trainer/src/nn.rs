//! Layers: parameterised building blocks made of graph operations.

use crate::graph::{Graph, Init, TensorId};
use crate::ops::{AveragePool, Conv, UnaryKind, Upsample};

/// A 2-D convolution layer `name` with a `k × k` kernel and an optional zero-initialised bias;
/// the weights are initialised by `init`, by default Kaiming for ReLU-like activations.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    out: usize,
    k: usize,
    conv: Conv,
    bias: bool,
    init: Option<Init>,
) -> TensorId {
    let cin = g.shape(x)[1] / conv.groups;
    g.scope(name, |g| {
        let fan_in = cin * k * k;
        let init = init.unwrap_or(Init::Kaiming { fan_in, gain: 2f32.sqrt() });
        let w = g.param("weight", &[out, cin, k, k], init);
        let mut operands = vec![x, w];
        if bias {
            operands.push(g.param("bias", &[out], Init::Zeros));
        }
        g.apply(conv, &operands)
    })
}

/// A fully connected layer `name`: `x[.., in] @ W[in, out] + b[out]`.
pub fn linear(g: &mut Graph, name: &str, x: TensorId, out: usize, init: Init) -> TensorId {
    let cin = *g.shape(x).last().expect("linear input has at least one axis");
    g.scope(name, |g| {
        let w = g.param("weight", &[cin, out], init);
        let b = g.param("bias", &[out], Init::Zeros);
        let y = g.matmul(x, w);
        g.add(y, b)
    })
}

/// Group normalisation of `x[B, C, H, W]` over `groups` channel groups, with a learned
/// per-channel gain (initialised to `gain`) and bias. Decomposed into Reshape, ReduceMean and
/// element-wise ops, which every backend runs.
pub fn group_norm(g: &mut Graph, name: &str, x: TensorId, groups: usize, gain: Init) -> TensorId {
    let [b, c, h, w]: [usize; 4] = g.shape(x).try_into().expect("group norm needs a 4-D input");
    assert!(c % groups == 0, "{c} channels do not split into {groups} groups");
    g.scope(name, |g| {
        let grouped = g.reshape(x, &[b, groups, c / groups * h * w]);
        let mean = g.reduce_mean(grouped, &[2], true);
        let centred = g.sub(grouped, mean);
        let sq = g.square(centred);
        let var = g.reduce_mean(sq, &[2], true);
        let var_eps = g.add_scalar(var, 1e-5);
        let std = g.unary(UnaryKind::Sqrt, var_eps);
        let normed = g.div(centred, std);
        let normed = g.reshape(normed, &[b, c, h, w]);
        let gamma = g.param("gain", &[1, c, 1, 1], gain);
        let beta = g.param("bias", &[1, c, 1, 1], Init::Zeros);
        let scaled = g.mul(normed, gamma);
        g.add(scaled, beta)
    })
}

/// 3×3 convolution (stride 1 or 2) → group norm → ReLU.
pub fn conv_norm_relu(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    out: usize,
    stride: usize,
    groups: usize,
) -> TensorId {
    g.scope(name, |g| {
        let h = conv2d(
            g,
            "conv",
            x,
            out,
            3,
            Conv { stride, pad: 1, dilation: 1, groups: 1 },
            false,
            None,
        );
        let h = group_norm(g, "norm", h, groups, Init::Ones);
        g.relu(h)
    })
}

/// `relu(x + norm(conv(relu(norm(conv(x))))))`, the last gain zero-initialised so the block
/// starts as the identity.
pub fn residual_block(g: &mut Graph, name: &str, x: TensorId, groups: usize) -> TensorId {
    let c = g.shape(x)[1];
    g.scope(name, |g| {
        let h = conv_norm_relu(g, "a", x, c, 1, groups);
        let h = conv2d(g, "b.conv", h, c, 3, Conv::same(1), false, None);
        let h = group_norm(g, "b.norm", h, groups, Init::Zeros);
        let sum = g.add(x, h);
        g.relu(sum)
    })
}

/// The residual trunk of the classifier and the re-identification embedding: a stem, then
/// two stride-2 stages each followed by a residual block: `[B, C, H, W]` →
/// `[B, widths[2], H/4, W/4]`. Parameters are named in the current scope.
pub fn residual_trunk(g: &mut Graph, x: TensorId, widths: [usize; 3], groups: usize) -> TensorId {
    let [w0, w1, w2] = widths;
    let mut h = conv_norm_relu(g, "stem", x, w0, 1, groups);
    h = conv_norm_relu(g, "down1", h, w1, 2, groups);
    h = residual_block(g, "block1", h, groups);
    h = conv_norm_relu(g, "down2", h, w2, 2, groups);
    residual_block(g, "block2", h, groups)
}

/// Single-head self-attention over the spatial positions of `x[B, C, H, W]` with a
/// pre-normalisation and a residual connection: `x + proj(softmax(q·kᵀ/√C)·v)`, the output
/// projection zero-initialised so the block starts as the identity.
pub fn self_attention(g: &mut Graph, name: &str, x: TensorId, groups: usize) -> TensorId {
    let [b, c, h, w]: [usize; 4] = g.shape(x).try_into().expect("attention needs a 4-D input");
    let n = h * w;
    g.scope(name, |g| {
        let normed = group_norm(g, "norm", x, groups, Init::Ones);
        let tokens = g.reshape(normed, &[b, c, n]);
        let tokens = g.transpose(tokens, &[0, 2, 1]);
        let qkv = linear(g, "qkv", tokens, 3 * c, Init::Kaiming { fan_in: c, gain: 1.0 });
        let q = g.slice(qkv, 2, 0, c);
        let k = g.slice(qkv, 2, c, 2 * c);
        let v = g.slice(qkv, 2, 2 * c, 3 * c);
        let kt = g.transpose(k, &[0, 2, 1]);
        let scores = g.matmul(q, kt);
        let scores = g.scale(scores, 1.0 / (c as f32).sqrt());
        let weights = g.softmax(scores, 2);
        let mixed = g.matmul(weights, v);
        let out = linear(g, "proj", mixed, c, Init::Zeros);
        let out = g.transpose(out, &[0, 2, 1]);
        let out = g.reshape(out, &[b, c, h, w]);
        g.add(x, out)
    })
}

/// L2-normalises the last axis: `x / √(Σx² + ε)`.
pub fn l2_normalize(g: &mut Graph, x: TensorId) -> TensorId {
    let last = g.shape(x).len() - 1;
    let sq = g.square(x);
    let sum = g.reduce_sum(sq, &[last], true);
    let sum_eps = g.add_scalar(sum, 1e-12);
    let norm = g.unary(UnaryKind::Sqrt, sum_eps);
    g.div(x, norm)
}

/// Mean over the spatial axes: `[B, C, H, W] → [B, C]`.
pub fn global_avg_pool(g: &mut Graph, x: TensorId) -> TensorId {
    g.reduce_mean(x, &[2, 3], false)
}

/// `k × k` average pooling with stride `k`.
pub fn avg_pool(g: &mut Graph, x: TensorId, k: usize) -> TensorId {
    g.apply(AveragePool { kernel: k, stride: k }, &[x])
}

/// Nearest-neighbour upsampling by `factor`.
pub fn upsample(g: &mut Graph, x: TensorId, factor: usize) -> TensorId {
    g.apply(Upsample { factor }, &[x])
}

/// Mean sigmoid binary cross-entropy of `logits[B, K]` against multi-hot `targets[B, K]`,
/// averaged over the batch and summed over the K findings: `softplus(z) − y·z` per finding,
/// which is `−y·ln σ(z) − (1−y)·ln(1−σ(z))` without its overflow.
pub fn binary_cross_entropy(g: &mut Graph, logits: TensorId, targets: TensorId) -> TensorId {
    let soft = g.unary(UnaryKind::Softplus, logits);
    let picked = g.mul(logits, targets);
    let per_finding = g.sub(soft, picked);
    let per_sample = g.reduce_sum(per_finding, &[1], false);
    g.mean_all(per_sample)
}

/// Mean softmax cross-entropy of `logits[B, K]` against one-hot (or soft) `targets[B, K]`.
pub fn cross_entropy(g: &mut Graph, logits: TensorId, targets: TensorId) -> TensorId {
    let logp = g.log_softmax(logits, 1);
    let picked = g.mul(logp, targets);
    let per_sample = g.reduce_sum(picked, &[1], false);
    let mean = g.mean_all(per_sample);
    g.neg(mean)
}
