//! Concat: join tensors along one axis.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::{Emitter, attr_int};

/// Concatenates its operands along `axis`.
#[derive(Clone, Copy, Debug)]
pub struct Concat {
    /// The joined axis.
    pub axis: usize,
}

impl Op for Concat {
    fn name(&self) -> &'static str {
        "Concat"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let mut out = inputs[0].to_vec();
        assert!(self.axis < out.len(), "concat axis {} out of range for {out:?}", self.axis);
        for s in &inputs[1..] {
            let same_elsewhere = s.len() == out.len()
                && s.iter().zip(&out).enumerate().all(|(i, (a, b))| i == self.axis || a == b);
            assert!(same_elsewhere, "cannot concatenate {:?} along axis {}", inputs, self.axis);
            out[self.axis] += s[self.axis];
        }
        out
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let inputs: Vec<&str> = io.inputs.iter().map(String::as_str).collect();
        e.node("Concat", &inputs, io.output, vec![attr_int("axis", self.axis as i64)]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let mut start = 0;
        inputs
            .iter()
            .map(|&x| {
                let extent = g.shape(x)[self.axis];
                let part = g.slice(grad, self.axis, start, start + extent);
                start += extent;
                Some(part)
            })
            .collect()
    }
}
