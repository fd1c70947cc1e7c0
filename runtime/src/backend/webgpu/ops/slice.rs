//! Slice with constant starts, ends, axes and steps (positive steps): a strided copy.

use super::{Op, axis, copy, strides};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};
use crate::backend::webgpu::graph::Constant;

/// Slice.
#[derive(Debug)]
pub(crate) struct Slice {
    starts: Vec<i64>,
    ends: Vec<i64>,
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
}

fn ints(c: &Constant, what: &str) -> Result<Vec<i64>, String> {
    c.ints.clone().ok_or_else(|| format!("{what} must be an int64 constant"))
}

impl Slice {
    /// From the constant inputs.
    pub fn new(
        starts: &Constant,
        ends: &Constant,
        axes: Option<&Constant>,
        steps: Option<&Constant>,
    ) -> Result<Slice, String> {
        let slice = Slice {
            starts: ints(starts, "starts")?,
            ends: ints(ends, "ends")?,
            axes: axes.map(|a| ints(a, "axes")).transpose()?,
            steps: steps.map(|s| ints(s, "steps")).transpose()?,
        };
        if slice.steps.iter().flatten().any(|&s| s <= 0) {
            return Err("only positive steps are supported".into());
        }
        Ok(slice)
    }

    /// Per axis of `shape`: (start, step, extent).
    fn ranges(&self, shape: &[usize]) -> Result<Vec<(usize, usize, usize)>, String> {
        let mut ranges: Vec<(usize, usize, usize)> = shape.iter().map(|&d| (0, 1, d)).collect();
        for (i, (&start, &end)) in self.starts.iter().zip(&self.ends).enumerate() {
            let a = match &self.axes {
                Some(axes) => axis(*axes.get(i).ok_or("fewer axes than starts")?, shape.len())?,
                None => i,
            };
            let step = self.steps.as_ref().and_then(|s| s.get(i)).copied().unwrap_or(1);
            let dim = shape[a] as i64;
            let clamp = |v: i64| if v < 0 { (v + dim).max(0) } else { v.min(dim) };
            let (s, e) = (clamp(start), clamp(end));
            let extent = if e > s { ((e - s) + step - 1) / step } else { 0 };
            ranges[a] = (s as usize, step as usize, extent as usize);
        }
        Ok(ranges)
    }
}

impl Op for Slice {
    fn gpu_inputs(&self, _inputs: usize) -> usize {
        1
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        Ok(self.ranges(inputs[0])?.iter().map(|r| r.2).collect())
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let x = inputs[0];
        let own = strides(&x.shape);
        let ranges = self.ranges(&x.shape)?;
        let offset = ranges.iter().zip(&own).map(|(r, s)| r.0 * s).sum();
        let xs: Vec<usize> = ranges.iter().zip(&own).map(|(r, s)| r.1 * s).collect();
        Ok(vec![copy(gpu, x, y, &y.shape, [offset, 0], &xs, &strides(&y.shape))?])
    }
}
