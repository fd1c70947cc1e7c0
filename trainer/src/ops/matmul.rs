//! MatMul over the last two axes, batched over identical leading axes or with a shared
//! 2-D right operand (a linear layer).

use crate::graph::{Graph, Op, OpIo, Shape, TensorId, numel};
use crate::onnx::Emitter;

/// `a[..., m, k] @ b[..., k, n]` where `b` has `a`'s leading axes or is 2-D.
#[derive(Clone, Copy, Debug)]
pub struct MatMul;

/// Swaps the last two axes.
fn swap_last(g: &mut Graph, x: TensorId) -> TensorId {
    let rank = g.shape(x).len();
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.swap(rank - 2, rank - 1);
    g.transpose(x, &perm)
}

impl Op for MatMul {
    fn name(&self) -> &'static str {
        "MatMul"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let (a, b) = (inputs[0], inputs[1]);
        let ok = a.len() >= 2
            && (b.len() == 2 || b.len() == a.len() && a[..a.len() - 2] == b[..b.len() - 2])
            && a[a.len() - 1] == b[b.len() - 2];
        assert!(ok, "cannot multiply {a:?} by {b:?}");
        let mut out = a.to_vec();
        *out.last_mut().unwrap() = b[b.len() - 1];
        out
    }

    fn flops(&self, inputs: &[&[usize]], output: &[usize]) -> u64 {
        let a = inputs[0];
        2 * (numel(output) * a[a.len() - 1]) as u64
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        e.node("MatMul", &[&io.inputs[0], &io.inputs[1]], io.output, vec![]);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let (a, b) = (inputs[0], inputs[1]);
        let bt = swap_last(g, b);
        let ga = g.matmul(grad, bt);
        let a_shape = g.shape(a).to_vec();
        let gb = if g.shape(b).len() == 2 && a_shape.len() > 2 {
            // Shared weight: fold the leading axes into the rows, then aᵀ·g.
            let k = a_shape[a_shape.len() - 1];
            let rows = a_shape[..a_shape.len() - 1].iter().product();
            let n = g.shape(grad)[a_shape.len() - 1];
            let a2 = g.reshape(a, &[rows, k]);
            let g2 = g.reshape(grad, &[rows, n]);
            let a2t = g.transpose(a2, &[1, 0]);
            g.matmul(a2t, g2)
        } else {
            let at = swap_last(g, a);
            g.matmul(at, grad)
        };
        vec![Some(ga), Some(gb)]
    }
}
