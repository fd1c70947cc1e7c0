//! ReduceMean and ReduceSum over a set of axes.

use super::{Op, axis, padded, strides};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// A sum or mean over `axes` (all axes when none are given).
#[derive(Clone, Debug)]
pub(crate) struct Reduce {
    mean: bool,
    axes: Option<Vec<i64>>,
    keep_dims: bool,
}

impl Reduce {
    /// Mean (`mean`) or sum over `axes`.
    pub fn new(mean: bool, axes: Option<Vec<i64>>, keep_dims: bool) -> Reduce {
        Reduce { mean, axes, keep_dims }
    }

    fn flags(&self, rank: usize) -> Result<Vec<bool>, String> {
        let mut flags = vec![self.axes.as_ref().is_none_or(|a| a.is_empty()); rank];
        for &a in self.axes.iter().flatten() {
            flags[axis(a, rank)?] = true;
        }
        Ok(flags)
    }

    /// How many trailing axes of a rank-`rank` input this reduces, when it is a mean keeping
    /// dimensions over some last axes and no others (what a normalisation divides by).
    pub fn trailing_mean(&self, rank: usize) -> Option<usize> {
        let flags = self.flags(rank).ok()?;
        let trailing = flags.iter().rev().take_while(|&&f| f).count();
        (self.mean && self.keep_dims && trailing > 0 && !flags[..rank - trailing].contains(&true))
            .then_some(trailing)
    }
}

impl Op for Reduce {
    fn gpu_inputs(&self, _inputs: usize) -> usize {
        1
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let flags = self.flags(inputs[0].len())?;
        Ok(inputs[0]
            .iter()
            .zip(&flags)
            .filter_map(|(&d, &f)| {
                if !f {
                    Some(d)
                } else if self.keep_dims {
                    Some(1)
                } else {
                    None
                }
            })
            .collect())
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let x = inputs[0];
        let flags = self.flags(x.shape.len())?;
        let reduced: usize =
            x.shape.iter().zip(&flags).filter(|(_, f)| **f).map(|(d, _)| d).product();
        let mut p =
            vec![y.len() as u32, x.shape.len() as u32, reduced as u32, u32::from(self.mean)];
        p.extend(padded(&x.shape)?);
        p.extend(padded(&strides(&x.shape))?);
        p.extend(padded(&flags.iter().map(|&f| usize::from(f)).collect::<Vec<_>>())?);
        Ok(vec![gpu.dispatch(
            kernel_1d!("reduce"),
            &[&x.buffer, &y.buffer],
            &p,
            Gpu::groups_1d(y.len()),
        )])
    }
}
