//! 2-D transposed convolution (the input gradient of [`super::Conv`], and learned upsampling).

use crate::graph::{Graph, Op, OpIo, Shape, TensorId, numel};
use crate::onnx::{Emitter, attr_int, attr_ints};

/// `ConvTranspose(x[B, C, H, W], w[C, O/groups, kh, kw])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose {
    /// Stride along both spatial axes.
    pub stride: usize,
    /// Padding removed from every side of the full output.
    pub pad: usize,
    /// Channel groups.
    pub groups: usize,
    /// Extra rows/columns appended at the end of each spatial axis (each `< stride`).
    pub output_padding: [usize; 2],
}

impl Op for ConvTranspose {
    fn name(&self) -> &'static str {
        "ConvTranspose"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let (x, w) = (inputs[0], inputs[1]);
        assert!(
            x.len() == 4 && w.len() == 4 && x[1] == w[0],
            "conv-transpose weight {w:?} does not fit input {x:?}"
        );
        assert!(
            self.output_padding.iter().all(|&p| p < self.stride.max(1)),
            "output padding must be below the stride"
        );
        let extent = |axis: usize| {
            (x[axis] - 1) * self.stride + w[axis] + self.output_padding[axis - 2] - 2 * self.pad
        };
        vec![x[0], w[1] * self.groups, extent(2), extent(3)]
    }

    fn flops(&self, inputs: &[&[usize]], _: &[usize]) -> u64 {
        let w = inputs[1];
        2 * (numel(inputs[0]) * w[1] * w[2] * w[3]) as u64
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let w = io.input_shapes[1];
        let attrs = vec![
            attr_ints("kernel_shape", &[w[2] as i64, w[3] as i64]),
            attr_ints("strides", &[self.stride as i64; 2]),
            attr_ints("pads", &[self.pad as i64; 4]),
            attr_ints("output_padding", &self.output_padding.map(|p| p as i64)),
            attr_int("group", self.groups as i64),
        ];
        e.node("ConvTranspose", &[&io.inputs[0], &io.inputs[1]], io.output, attrs);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        // Only differentiated with respect to its data input, where it is the forward
        // convolution with the same weights (used for learned upsampling with fixed kernels).
        let conv =
            super::Conv { stride: self.stride, pad: self.pad, dilation: 1, groups: self.groups };
        assert!(
            !matches!(g.tensor(inputs[1]).source, crate::graph::Source::Param(_)),
            "learned conv-transpose weights have no gradient rule"
        );
        vec![Some(g.apply(conv, &[grad, inputs[1]])), None]
    }
}
