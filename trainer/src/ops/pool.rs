//! Average pooling without padding.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::{Emitter, attr_ints};

/// `AveragePool(x[B, C, H, W])` with a square kernel and stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AveragePool {
    /// Kernel extent along both spatial axes.
    pub kernel: usize,
    /// Stride along both spatial axes.
    pub stride: usize,
}

impl Op for AveragePool {
    fn name(&self) -> &'static str {
        "AveragePool"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let x = inputs[0];
        assert!(
            x.len() == 4 && x[2] >= self.kernel && x[3] >= self.kernel,
            "cannot pool {x:?} by {}",
            self.kernel
        );
        let out = |e: usize| (e - self.kernel) / self.stride + 1;
        vec![x[0], x[1], out(x[2]), out(x[3])]
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let attrs = vec![
            attr_ints("kernel_shape", &[self.kernel as i64; 2]),
            attr_ints("strides", &[self.stride as i64; 2]),
        ];
        e.node("AveragePool", &[&io.inputs[0]], io.output, attrs);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        // Spread each output gradient evenly over its window: a depthwise transposed
        // convolution with a constant kernel of 1/k².
        let xs = g.shape(inputs[0]).to_vec();
        let gs = g.shape(grad).to_vec();
        let (c, k) = (xs[1], self.kernel);
        let kernel = g.constant(&[c, 1, k, k], vec![1.0 / (k * k) as f32; c * k * k]);
        let out_pad = |axis: usize| xs[axis] - ((gs[axis] - 1) * self.stride + k);
        let convt = super::ConvTranspose {
            stride: self.stride,
            pad: 0,
            groups: c,
            output_padding: [out_pad(2), out_pad(3)],
        };
        vec![Some(g.apply(convt, &[grad, kernel]))]
    }
}
