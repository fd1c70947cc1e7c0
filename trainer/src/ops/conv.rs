//! 2-D convolution with stride, symmetric padding, dilation, groups and an optional bias.
//!
//! Gradients: the input gradient is a ConvTranspose of the output gradient with the same
//! weights; the weight gradient is itself a convolution of the input by the output gradient
//! (batch axis as the reduction channel, forward stride as dilation).

use crate::graph::{Graph, Op, OpIo, Shape, TensorId, numel};
use crate::onnx::{Emitter, attr_int, attr_ints};

/// `Conv(x[B, C, H, W], w[O, C/groups, kh, kw] [, bias[O]])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    /// Stride along both spatial axes.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
    /// Dilation along both spatial axes.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Conv {
    /// A stride-1, undilated, ungrouped convolution with the given padding.
    pub fn same(pad: usize) -> Conv {
        Conv { stride: 1, pad, dilation: 1, groups: 1 }
    }

    /// Output extent of one spatial axis.
    pub fn out_extent(&self, input: usize, kernel: usize) -> usize {
        let span = self.dilation * (kernel - 1) + 1;
        assert!(
            input + 2 * self.pad >= span,
            "conv kernel {kernel} (dilation {}) larger than padded input {input}",
            self.dilation
        );
        (input + 2 * self.pad - span) / self.stride + 1
    }
}

impl Op for Conv {
    fn name(&self) -> &'static str {
        "Conv"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let (x, w) = (inputs[0], inputs[1]);
        assert!(
            x.len() == 4 && w.len() == 4,
            "conv needs 4-D input and weight, got {x:?} and {w:?}"
        );
        assert!(
            x[1] % self.groups == 0 && w[0] % self.groups == 0 && w[1] * self.groups == x[1],
            "conv weight {w:?} does not fit input {x:?} with {} groups",
            self.groups
        );
        if let Some(b) = inputs.get(2) {
            assert_eq!(*b, &[w[0]][..], "conv bias must have shape [{}]", w[0]);
        }
        vec![x[0], w[0], self.out_extent(x[2], w[2]), self.out_extent(x[3], w[3])]
    }

    fn flops(&self, inputs: &[&[usize]], output: &[usize]) -> u64 {
        let w = inputs[1];
        2 * (numel(output) * w[1] * w[2] * w[3]) as u64
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let w = io.input_shapes[1];
        let inputs: Vec<&str> = io.inputs.iter().map(String::as_str).collect();
        let attrs = vec![
            attr_ints("kernel_shape", &[w[2] as i64, w[3] as i64]),
            attr_ints("strides", &[self.stride as i64; 2]),
            attr_ints("pads", &[self.pad as i64; 4]),
            attr_ints("dilations", &[self.dilation as i64; 2]),
            attr_int("group", self.groups as i64),
        ];
        e.node("Conv", &inputs, io.output, attrs);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        assert_eq!(
            self.dilation, 1,
            "gradient of a dilated convolution is not needed by any network"
        );
        let (x, w) = (inputs[0], inputs[1]);
        let xs = g.shape(x).to_vec();
        let ws = g.shape(w).to_vec();
        let gs = g.shape(grad).to_vec();

        // ∂L/∂x: transposed convolution, output padding restoring the input extent.
        let out_pad =
            |axis: usize| xs[axis] + 2 * self.pad - ((gs[axis] - 1) * self.stride + ws[axis]);
        let convt = super::ConvTranspose {
            stride: self.stride,
            pad: self.pad,
            groups: self.groups,
            output_padding: [out_pad(2), out_pad(3)],
        };
        let gx = g.apply(convt, &[grad, w]);

        let gw = self.weight_grad(g, x, grad, &ws);
        let mut grads = vec![Some(gx), Some(gw)];
        if inputs.len() == 3 {
            let gb = g.reduce_sum(grad, &[0, 2, 3], false);
            grads.push(Some(gb));
        }
        grads
    }
}

impl Conv {
    /// ∂L/∂w: one matrix product with the unfolded input where the convolution is ungrouped
    /// (every layer of the shipped networks), else a convolution of the input by the output
    /// gradient. The classifier's two stride-2 layers took 54 ms of a 409 ms step (ONNX
    /// Runtime's profiler, CPU, batch 128) in the convolution form (a 14×14 kernel dilated by
    /// 2, a 4×4 result cropped to 3×3); unfolded, the step took 370 ms.
    fn weight_grad(&self, g: &mut Graph, x: TensorId, grad: TensorId, ws: &[usize]) -> TensorId {
        if self.groups == 1 {
            self.weight_grad_unfolded(g, x, grad, ws)
        } else {
            self.weight_grad_by_conv(g, x, grad, ws)
        }
    }

    /// ∂L/∂w as `Σ_b grad[b] @ cols[b]ᵀ`, where `cols[b][C·kh·kw, Ho·Wo]` holds every output
    /// position's input patch, unfolded by a depthwise convolution with one-hot kernels (the
    /// layout of `w` itself) and the forward stride: batched matrix products instead of `C`
    /// thin ones.
    fn weight_grad_unfolded(
        &self,
        g: &mut Graph,
        x: TensorId,
        grad: TensorId,
        ws: &[usize],
    ) -> TensorId {
        let [b, c, _, _]: [usize; 4] = g.shape(x).try_into().expect("4-D input");
        let [_, o, ho, wo]: [usize; 4] = g.shape(grad).try_into().expect("4-D gradient");
        let (kh, kw) = (ws[2], ws[3]);
        let taps = kh * kw;
        let cols = if taps == 1 && self.stride == 1 && self.pad == 0 {
            x
        } else {
            let mut one_hot = vec![0f32; c * taps * taps];
            for ch in 0..c {
                for t in 0..taps {
                    one_hot[(ch * taps + t) * taps + t] = 1.0;
                }
            }
            let kernel = g.constant(&[c * taps, 1, kh, kw], one_hot);
            g.apply(
                Conv { stride: self.stride, pad: self.pad, dilation: 1, groups: c },
                &[x, kernel],
            )
        };
        let cols = g.reshape(cols, &[b, c * taps, ho * wo]);
        let cols_t = g.transpose(cols, &[0, 2, 1]);
        let grad = g.reshape(grad, &[b, o, ho * wo]);
        let per_image = g.matmul(grad, cols_t);
        let gw = g.reduce_sum(per_image, &[0], false);
        g.reshape(gw, &[o, c, kh, kw])
    }

    /// ∂L/∂w as a convolution of the input (channels ↔ batch) by the output gradient.
    fn weight_grad_by_conv(
        &self,
        g: &mut Graph,
        x: TensorId,
        grad: TensorId,
        ws: &[usize],
    ) -> TensorId {
        let [b, c, h, w_] = g.shape(x).try_into().expect("4-D input");
        let groups = self.groups;
        let (ci, co) = (c / groups, ws[0] / groups);
        let o = g.shape(grad)[1];
        // x[B, g·ci, H, W] → [ci, g·B, H, W]: the batch becomes the reduced channel axis, per group.
        let xt = if groups == 1 {
            g.transpose(x, &[1, 0, 2, 3])
        } else {
            let x5 = g.reshape(x, &[b, groups, ci, h, w_]);
            let x5t = g.transpose(x5, &[2, 1, 0, 3, 4]);
            g.reshape(x5t, &[ci, groups * b, h, w_])
        };
        // grad[B, g·co, Ho, Wo] → [g·co, B, Ho, Wo]: one "kernel" per output channel.
        let gt = g.transpose(grad, &[1, 0, 2, 3]);
        debug_assert_eq!(o, groups * co);
        let conv = Conv { stride: 1, pad: self.pad, dilation: self.stride, groups };
        let full = g.apply(conv, &[xt, gt]);
        // The correlation can overshoot the kernel when the stride did not divide evenly.
        let cropped = {
            let s = g.slice(full, 2, 0, ws[2]);
            g.slice(s, 3, 0, ws[3])
        };
        g.transpose(cropped, &[1, 0, 2, 3])
    }
}
