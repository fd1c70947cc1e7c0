//! Transpose: permute axes.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::{Emitter, attr_ints};

/// Output axis `i` is operand axis `perm[i]`.
#[derive(Clone, Debug)]
pub struct Transpose(pub Vec<usize>);

impl Op for Transpose {
    fn name(&self) -> &'static str {
        "Transpose"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let x = inputs[0];
        let mut seen = vec![false; x.len()];
        assert!(
            self.0.len() == x.len()
                && self.0.iter().all(|&p| p < x.len() && !std::mem::replace(&mut seen[p], true)),
            "{:?} is not a permutation of the axes of {x:?}",
            self.0
        );
        self.0.iter().map(|&p| x[p]).collect()
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let perm: Vec<i64> = self.0.iter().map(|&p| p as i64).collect();
        e.node("Transpose", &[&io.inputs[0]], io.output, vec![attr_ints("perm", &perm)]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        _: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let mut inverse = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inverse[p] = i;
        }
        vec![Some(g.transpose(grad, &inverse))]
    }
}
