//! The contract every operation fulfils.

use super::{Graph, Shape, TensorId};
use crate::onnx::Emitter;

/// Names and shapes of one operation instance, as seen when emitting ONNX.
#[derive(Debug)]
pub struct OpIo<'a> {
    /// ONNX value names of the operands.
    pub inputs: &'a [String],
    /// Shapes of the operands.
    pub input_shapes: &'a [&'a [usize]],
    /// ONNX value name of the result.
    pub output: &'a str,
    /// Shape of the result.
    pub output_shape: &'a [usize],
}

/// An operation of the graph: shape inference, ONNX emission and the vector–Jacobian product.
///
/// Operations are immutable values; the graph shares them behind an `Arc`.
pub trait Op: std::fmt::Debug + Send + Sync {
    /// Short name, the ONNX operator it lowers to where there is one (`Conv`, `Add`, …).
    fn name(&self) -> &'static str;

    /// Output shape for the given operand shapes. Panics on operands the op cannot take.
    fn infer(&self, inputs: &[&[usize]]) -> Shape;

    /// Floating-point operations (multiply and add counted separately) of the op's matrix
    /// products and convolutions; element-wise and shape operations count as 0.
    fn flops(&self, inputs: &[&[usize]], output: &[usize]) -> u64 {
        let _ = (inputs, output);
        0
    }

    /// Appends the ONNX node(s) computing this op to `e`.
    fn emit(&self, e: &mut Emitter, io: &OpIo);

    /// Vector–Jacobian product: given `grad` = ∂L/∂output, adds to `g` the nodes computing
    /// ∂L/∂input for each operand and returns them (`None` for an operand with no gradient,
    /// such as an integer-like index or a constant exponent).
    ///
    /// The default is for operations that are not differentiated (gradient-only helpers);
    /// it panics so a missing rule can never silently produce a zero gradient.
    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        output: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let _ = (g, inputs, output, grad);
        panic!("operation {} has no gradient rule", self.name())
    }
}
