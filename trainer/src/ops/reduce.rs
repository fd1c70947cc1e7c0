//! ReduceSum and ReduceMean over a set of axes.

use crate::graph::{Graph, Op, OpIo, Shape, TensorId, numel};
use crate::onnx::{Emitter, attr_int, attr_ints};

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// Sum of the elements.
    Sum,
    /// Mean of the elements.
    Mean,
}

/// A reduction over `axes`, keeping them as extent-1 axes when `keepdims`.
#[derive(Clone, Debug)]
pub struct Reduce {
    /// Sum or mean.
    pub kind: ReduceKind,
    /// Reduced axes (non-negative, any order).
    pub axes: Vec<usize>,
    /// Keep reduced axes with extent 1.
    pub keepdims: bool,
}

impl Reduce {
    fn kept_shape(&self, input: &[usize]) -> Shape {
        input.iter().enumerate().map(|(i, &d)| if self.axes.contains(&i) { 1 } else { d }).collect()
    }
}

impl Op for Reduce {
    fn name(&self) -> &'static str {
        match self.kind {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
        }
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let x = inputs[0];
        assert!(
            self.axes.iter().all(|&a| a < x.len()),
            "{} axes {:?} out of range for {x:?}",
            self.name(),
            self.axes
        );
        if self.keepdims {
            self.kept_shape(x)
        } else {
            x.iter().enumerate().filter(|(i, _)| !self.axes.contains(i)).map(|(_, &d)| d).collect()
        }
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let axes: Vec<i64> = self.axes.iter().map(|&a| a as i64).collect();
        let keep = attr_int("keepdims", self.keepdims as i64);
        match self.kind {
            // Opset 13+: ReduceSum takes its axes as an input; ReduceMean (until 18) as an attribute.
            ReduceKind::Sum => {
                let axes = e.const_i64(&axes);
                e.node("ReduceSum", &[&io.inputs[0], &axes], io.output, vec![keep]);
            }
            ReduceKind::Mean => e.node(
                "ReduceMean",
                &[&io.inputs[0]],
                io.output,
                vec![attr_ints("axes", &axes), keep],
            ),
        }
    }

    fn vjp(
        &self,
        g: &mut Graph,
        inputs: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        let x_shape = g.shape(inputs[0]).to_vec();
        let kept = g.reshape(grad, &self.kept_shape(&x_shape));
        let grad = match self.kind {
            ReduceKind::Sum => kept,
            ReduceKind::Mean => {
                let count = numel(&x_shape) / numel(&self.kept_shape(&x_shape));
                g.scale(kept, 1.0 / count as f32)
            }
        };
        vec![Some(g.expand(grad, &x_shape))]
    }
}
