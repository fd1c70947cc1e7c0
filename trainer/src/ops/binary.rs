//! Broadcasting element-wise binary operations: Add, Sub, Mul, Div, Pow.

use super::broadcast;
use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::Emitter;

/// Which binary operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `a ^ b`
    Pow,
}

/// A broadcasting element-wise binary operation.
#[derive(Clone, Copy, Debug)]
pub struct Binary(pub BinaryKind);

impl Op for Binary {
    fn name(&self) -> &'static str {
        match self.0 {
            BinaryKind::Add => "Add",
            BinaryKind::Sub => "Sub",
            BinaryKind::Mul => "Mul",
            BinaryKind::Div => "Div",
            BinaryKind::Pow => "Pow",
        }
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        broadcast(inputs[0], inputs[1])
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        e.node(self.name(), &[&io.inputs[0], &io.inputs[1]], io.output, vec![]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        output: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let (a, b) = (inputs[0], inputs[1]);
        let (ga, gb) = match self.0 {
            BinaryKind::Add => (grad, grad),
            BinaryKind::Sub => (grad, g.neg(grad)),
            BinaryKind::Mul => (g.mul(grad, b), g.mul(grad, a)),
            BinaryKind::Div => {
                // d(a/b)/db = -(a/b)/b
                let ga = g.div(grad, b);
                let gy = g.mul(ga, output);
                (ga, g.neg(gy))
            }
            BinaryKind::Pow => {
                // d(a^b)/da = b·a^(b-1) = b·y/a;  d(a^b)/db = y·ln a
                let gy = g.mul(grad, output);
                let by = g.mul(gy, b);
                let ga = g.div(by, a);
                let ln_a = g.unary(super::UnaryKind::Log, a);
                (ga, g.mul(gy, ln_a))
            }
        };
        let (sa, sb) = (g.shape(a).to_vec(), g.shape(b).to_vec());
        vec![Some(g.sum_to(ga, &sa)), Some(g.sum_to(gb, &sb))]
    }
}
