//! Reshape to a new static shape with the same number of elements.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId, numel};
use crate::onnx::Emitter;

/// Reshapes its operand to the given shape.
#[derive(Clone, Debug)]
pub struct Reshape(pub Shape);

impl Op for Reshape {
    fn name(&self) -> &'static str {
        "Reshape"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        assert_eq!(
            numel(inputs[0]),
            numel(&self.0),
            "cannot reshape {:?} to {:?}",
            inputs[0],
            self.0
        );
        self.0.clone()
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        // A leading extent equal to the operand's is written as 0 ("copy"), so a symbolic
        // batch axis survives the reshape.
        let x = io.input_shapes[0];
        let target: Vec<i64> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, &d)| if i == 0 && !x.is_empty() && x[0] == d { 0 } else { d as i64 })
            .collect();
        let shape = e.const_i64(&target);
        e.node("Reshape", &[&io.inputs[0], &shape], io.output, vec![]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let shape = g.shape(inputs[0]).to_vec();
        vec![Some(g.reshape(grad, &shape))]
    }
}
