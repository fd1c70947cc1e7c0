//! Nearest-neighbour upsampling by an integer factor (ONNX Resize).

use crate::graph::{Graph, Op, OpIo, Shape, TensorId};
use crate::onnx::{Emitter, attr_string};

/// Repeats every pixel `factor × factor` times: `Resize(mode=nearest)` with exact
/// (asymmetric, floor) coordinates, which ONNX Runtime and tract implement identically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upsample {
    /// Integer scale of both spatial axes.
    pub factor: usize,
}

impl Op for Upsample {
    fn name(&self) -> &'static str {
        "Resize"
    }

    fn infer(&self, inputs: &[&[usize]]) -> Shape {
        let x = inputs[0];
        assert_eq!(x.len(), 4, "upsampling needs a 4-D input, got {x:?}");
        vec![x[0], x[1], x[2] * self.factor, x[3] * self.factor]
    }

    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        let f = self.factor as f32;
        let scales = e.tmp("scales");
        e.initializer(&scales, &[4], &[1.0, 1.0, f, f]);
        let attrs = vec![
            attr_string("mode", "nearest"),
            attr_string("coordinate_transformation_mode", "asymmetric"),
            attr_string("nearest_mode", "floor"),
        ];
        e.node("Resize", &[&io.inputs[0], "", &scales], io.output, attrs);
    }

    fn vjp(
        &self,
        g: &mut Graph,
        _: &[TensorId],
        _: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        // Each input pixel fed factor² outputs: sum them (mean pool × factor²).
        let f = self.factor;
        let pooled = g.apply(super::AveragePool { kernel: f, stride: f }, &[grad]);
        vec![Some(g.scale(pooled, (f * f) as f32))]
    }
}
