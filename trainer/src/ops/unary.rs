//! Element-wise functions of one tensor.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::Emitter;

/// Which element-wise function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    /// `-x`
    Neg,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `max(x, 0)`
    Relu,
    /// `tanh x`
    Tanh,
    /// `e^x`
    Exp,
    /// `ln x`
    Log,
    /// `√x`
    Sqrt,
    /// `sin x`
    Sin,
    /// `cos x`
    Cos,
    /// `|x|`
    Abs,
    /// `sign x` (gradient zero almost everywhere)
    Sign,
    /// `ln(1 + e^x)`, evaluated without overflow by ONNX Runtime
    Softplus,
}

/// An element-wise function.
#[derive(Clone, Copy, Debug)]
pub struct Unary(pub UnaryKind);

impl Op for Unary {
    fn name(&self) -> &'static str {
        match self.0 {
            UnaryKind::Neg => "Neg",
            UnaryKind::Sigmoid => "Sigmoid",
            UnaryKind::Relu => "Relu",
            UnaryKind::Tanh => "Tanh",
            UnaryKind::Exp => "Exp",
            UnaryKind::Log => "Log",
            UnaryKind::Sqrt => "Sqrt",
            UnaryKind::Sin => "Sin",
            UnaryKind::Cos => "Cos",
            UnaryKind::Abs => "Abs",
            UnaryKind::Sign => "Sign",
            UnaryKind::Softplus => "Softplus",
        }
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        inputs[0].to_vec()
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        e.node(self.name(), &[&io.inputs[0]], io.output, vec![]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        y: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let x = inputs[0];
        let dx = match self.0 {
            UnaryKind::Neg => g.neg(grad),
            UnaryKind::Sigmoid => {
                // y(1 - y)
                let one_minus = {
                    let ny = g.neg(y);
                    g.add_scalar(ny, 1.0)
                };
                let d = g.mul(y, one_minus);
                g.mul(grad, d)
            }
            UnaryKind::Relu => {
                // 1 where x > 0: sign(relu(x)) is exactly that indicator.
                let mask = g.unary(UnaryKind::Sign, y);
                g.mul(grad, mask)
            }
            UnaryKind::Tanh => {
                let y2 = g.square(y);
                let ny2 = g.neg(y2);
                let d = g.add_scalar(ny2, 1.0);
                g.mul(grad, d)
            }
            UnaryKind::Exp => g.mul(grad, y),
            UnaryKind::Log => g.div(grad, x),
            UnaryKind::Sqrt => {
                let two_y = g.scale(y, 2.0);
                g.div(grad, two_y)
            }
            UnaryKind::Sin => {
                let c = g.unary(UnaryKind::Cos, x);
                g.mul(grad, c)
            }
            UnaryKind::Cos => {
                let s = g.unary(UnaryKind::Sin, x);
                let ns = g.neg(s);
                g.mul(grad, ns)
            }
            UnaryKind::Abs => {
                let s = g.unary(UnaryKind::Sign, x);
                g.mul(grad, s)
            }
            UnaryKind::Sign => return vec![None],
            UnaryKind::Softplus => {
                let s = g.unary(UnaryKind::Sigmoid, x);
                g.mul(grad, s)
            }
        };
        vec![Some(dx)]
    }
}
