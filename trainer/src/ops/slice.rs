//! Slice: a contiguous range of one axis.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::Emitter;

/// Keeps `start..end` of `axis`.
#[derive(Clone, Copy, Debug)]
pub struct Slice {
    /// The sliced axis.
    pub axis: usize,
    /// First kept index.
    pub start: usize,
    /// One past the last kept index.
    pub end: usize,
}

impl Op for Slice {
    fn name(&self) -> &'static str {
        "Slice"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let x = inputs[0];
        assert!(
            self.axis < x.len() && self.start < self.end && self.end <= x[self.axis],
            "slice {}..{} of axis {} out of range for {x:?}",
            self.start,
            self.end,
            self.axis
        );
        let mut out = x.to_vec();
        out[self.axis] = self.end - self.start;
        out
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let starts = e.const_i64(&[self.start as i64]);
        let ends = e.const_i64(&[self.end as i64]);
        let axes = e.const_i64(&[self.axis as i64]);
        e.node("Slice", &[&io.inputs[0], &starts, &ends, &axes], io.output, vec![]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let extent = g.shape(inputs[0])[self.axis];
        let pad = super::Pad { axis: self.axis, before: self.start, after: extent - self.end };
        vec![Some(g.apply(pad, &[grad]))]
    }
}
