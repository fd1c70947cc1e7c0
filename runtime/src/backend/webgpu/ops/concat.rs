//! Concat: one strided copy per input into its range of the output.

use super::{Op, axis, copy, strides};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// Concat along `axis`.
#[derive(Debug)]
pub(crate) struct Concat {
    axis: i64,
}

impl Concat {
    /// With the `axis` attribute.
    pub fn new(axis: i64) -> Concat {
        Concat { axis }
    }
}

impl Op for Concat {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let first = inputs.first().ok_or("needs inputs")?;
        let a = axis(self.axis, first.len())?;
        let mut shape = first.to_vec();
        shape[a] = 0;
        for s in inputs {
            if s.len() != first.len()
                || s.iter().zip(first.iter()).enumerate().any(|(k, (x, y))| k != a && x != y)
            {
                return Err(format!("inputs {first:?} and {s:?} differ outside axis {a}"));
            }
            shape[a] += s[a];
        }
        Ok(shape)
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let a = axis(self.axis, y.shape.len())?;
        let ys = strides(&y.shape);
        let mut at = 0;
        let mut dispatches = Vec::new();
        for x in inputs {
            if x.len() > 0 {
                dispatches.push(copy(
                    gpu,
                    x,
                    y,
                    &x.shape,
                    [0, at * ys[a]],
                    &strides(&x.shape),
                    &ys,
                )?);
            }
            at += x.shape[a];
        }
        Ok(dispatches)
    }
}
