//! Softmax along one axis (ONNX opset ≥ 13 semantics).

use super::{Op, axis};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// Softmax along `axis`.
#[derive(Debug)]
pub(crate) struct Softmax {
    axis: i64,
}

impl Softmax {
    /// With the `axis` attribute.
    pub fn new(axis: i64) -> Softmax {
        Softmax { axis }
    }
}

impl Op for Softmax {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        axis(self.axis, inputs[0].len())?;
        Ok(inputs[0].to_vec())
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let a = axis(self.axis, y.shape.len())?;
        let len = y.shape[a];
        let inner: usize = y.shape[a + 1..].iter().product();
        let rows = y.len() / len.max(1);
        let p = [rows as u32, len as u32, inner as u32];
        Ok(vec![gpu.dispatch(
            kernel_1d!("softmax"),
            &[&inputs[0].buffer, &y.buffer],
            &p,
            Gpu::groups_1d(rows),
        )])
    }
}
