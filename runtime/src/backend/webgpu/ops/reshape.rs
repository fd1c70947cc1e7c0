//! Reshape, Flatten and Identity: the input's buffer under another shape, no kernel.

use super::Op;
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};
use crate::backend::webgpu::graph::Constant;

/// Reshape to a constant target (0 copies the input's extent unless `allowzero`, −1 infers one
/// extent), Flatten at an axis, or Identity (neither).
#[derive(Clone, Debug)]
pub(crate) struct Reshape {
    target: Option<Vec<i64>>,
    allow_zero: bool,
    flatten: Option<i64>,
}

impl Reshape {
    /// Identity.
    pub fn identity() -> Reshape {
        Reshape { target: None, allow_zero: false, flatten: None }
    }

    /// Reshape to the int64 constant `shape`.
    pub fn new(shape: &Constant, allow_zero: bool) -> Result<Reshape, String> {
        let target = shape.ints.clone().ok_or("the target shape must be an int64 constant")?;
        Ok(Reshape { target: Some(target), allow_zero, flatten: None })
    }

    /// Flatten to 2-D at `axis`.
    pub fn flatten(axis: i64) -> Reshape {
        Reshape { target: None, allow_zero: false, flatten: Some(axis) }
    }
}

impl Op for Reshape {
    fn gpu_inputs(&self, _inputs: usize) -> usize {
        1
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let input = inputs[0];
        if let Some(a) = self.flatten {
            let a = if a < 0 { a + input.len() as i64 } else { a };
            let a = usize::try_from(a)
                .ok()
                .filter(|&a| a <= input.len())
                .ok_or_else(|| format!("axis {a} is outside rank {}", input.len()))?;
            return Ok(vec![input[..a].iter().product(), input[a..].iter().product()]);
        }
        let Some(target) = &self.target else { return Ok(input.to_vec()) };
        let total: usize = input.iter().product();
        let mut shape = Vec::with_capacity(target.len());
        let mut infer = None;
        for (k, &t) in target.iter().enumerate() {
            match t {
                0 if !self.allow_zero => {
                    shape.push(*input.get(k).ok_or("0 refers past the input's rank")?)
                }
                -1 if infer.is_none() => {
                    infer = Some(k);
                    shape.push(1);
                }
                t if t >= 0 => shape.push(t as usize),
                t => return Err(format!("invalid target extent {t}")),
            }
        }
        let known: usize = shape.iter().product();
        if let Some(k) = infer {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(format!("cannot reshape {input:?} to {target:?}"));
            }
            shape[k] = total / known;
        }
        if shape.iter().product::<usize>() != total {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        Ok(shape)
    }

    fn aliases(&self) -> bool {
        true
    }

    fn encode(
        &self,
        _gpu: &Gpu,
        _inputs: &[&Tensor],
        _output: &Tensor,
    ) -> Result<Vec<Dispatch>, String> {
        Ok(Vec::new())
    }
}
