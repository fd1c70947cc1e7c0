//! Pad: zeros before and after one axis.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::Emitter;

/// Adds `before` zeros in front of `axis` and `after` zeros behind it.
#[derive(Clone, Copy, Debug)]
pub struct Pad {
    /// The padded axis.
    pub axis: usize,
    /// Zeros in front.
    pub before: usize,
    /// Zeros behind.
    pub after: usize,
}

impl Op for Pad {
    fn name(&self) -> &'static str {
        "Pad"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let mut out = inputs[0].to_vec();
        assert!(self.axis < out.len(), "pad axis {} out of range for {out:?}", self.axis);
        out[self.axis] += self.before + self.after;
        out
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let rank = io.input_shapes[0].len();
        let mut pads = vec![0i64; 2 * rank];
        pads[self.axis] = self.before as i64;
        pads[rank + self.axis] = self.after as i64;
        let pads = e.const_i64(&pads);
        e.node("Pad", &[&io.inputs[0], &pads], io.output, vec![]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let extent = g.shape(inputs[0])[self.axis];
        vec![Some(g.slice(grad, self.axis, self.before, self.before + extent))]
    }
}
