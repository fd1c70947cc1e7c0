//! Softmax and LogSoftmax over one axis.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::{Emitter, attr_int};

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxKind {
    /// `e^x / Σ e^x`
    Softmax,
    /// `x - ln Σ e^x`
    LogSoftmax,
}

/// Softmax or log-softmax over `axis`.
#[derive(Clone, Copy, Debug)]
pub struct Softmax {
    /// Which normalisation.
    pub kind: SoftmaxKind,
    /// The normalised axis.
    pub axis: usize,
}

impl Op for Softmax {
    fn name(&self) -> &'static str {
        match self.kind {
            SoftmaxKind::Softmax => "Softmax",
            SoftmaxKind::LogSoftmax => "LogSoftmax",
        }
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        assert!(
            self.axis < inputs[0].len(),
            "{} axis {} out of range for {:?}",
            self.name(),
            self.axis,
            inputs[0]
        );
        inputs[0].to_vec()
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        e.node(self.name(), &[&io.inputs[0]], io.output, vec![attr_int("axis", self.axis as i64)]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        _: &[TensorId],
        y: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let dx = match self.kind {
            // y ⊙ (g − Σ g⊙y)
            SoftmaxKind::Softmax => {
                let gy = g.mul(grad, y);
                let s = g.reduce_sum(gy, &[self.axis], true);
                let centred = g.sub(grad, s);
                g.mul(y, centred)
            }
            // g − softmax(x) ⊙ Σ g, with softmax(x) = e^y
            SoftmaxKind::LogSoftmax => {
                let p = g.unary(super::UnaryKind::Exp, y);
                let s = g.reduce_sum(grad, &[self.axis], true);
                let ps = g.mul(p, s);
                g.sub(grad, ps)
            }
        };
        vec![Some(dx)]
    }
}
