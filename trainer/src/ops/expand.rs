//! Expand: broadcast a tensor to a larger shape.

use super::broadcast;
use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::Emitter;

/// Broadcasts its operand to the target shape.
#[derive(Clone, Debug)]
pub struct Expand(pub Shape);

impl Op for Expand {
    fn name(&self) -> &'static str {
        "Expand"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let out = broadcast(inputs[0], &self.0);
        assert_eq!(out, self.0, "cannot expand {:?} to {:?}", inputs[0], self.0);
        out
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        // 1 wherever the operand already has the extent: Expand keeps it, which leaves a
        // symbolic batch axis symbolic.
        let x = io.input_shapes[0];
        let lead = self.0.len() - x.len();
        let target: Vec<i64> = (0..self.0.len())
            .map(|i| if i >= lead && x[i - lead] == self.0[i] { 1 } else { self.0[i] as i64 })
            .collect();
        let shape = e.const_i64(&target);
        e.node("Expand", &[&io.inputs[0], &shape], io.output, vec![]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let shape = g.shape(inputs[0]).to_vec();
        vec![Some(g.sum_to(grad, &shape))]
    }
}
