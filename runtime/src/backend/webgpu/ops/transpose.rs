//! Transpose: a strided copy with the input's strides permuted.

use super::{Op, copy, strides};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// Transpose by `perm` (default: reverse the axes).
#[derive(Debug)]
pub(crate) struct Transpose {
    perm: Option<Vec<i64>>,
}

impl Transpose {
    /// With the `perm` attribute, if any.
    pub fn new(perm: Option<Vec<i64>>) -> Transpose {
        Transpose { perm }
    }

    fn perm(&self, rank: usize) -> Result<Vec<usize>, String> {
        let perm: Vec<usize> = match &self.perm {
            Some(p) => p
                .iter()
                .map(|&a| usize::try_from(a).map_err(|_| format!("invalid perm {p:?}")))
                .collect::<Result<_, _>>()?,
            None => (0..rank).rev().collect(),
        };
        let mut seen = perm.clone();
        seen.sort_unstable();
        if seen != (0..rank).collect::<Vec<_>>() {
            return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
        }
        Ok(perm)
    }
}

impl Op for Transpose {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        Ok(self.perm(inputs[0].len())?.iter().map(|&a| inputs[0][a]).collect())
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let x = inputs[0];
        let own = strides(&x.shape);
        let xs: Vec<usize> = self.perm(x.shape.len())?.iter().map(|&a| own[a]).collect();
        Ok(vec![copy(gpu, x, y, &y.shape, [0, 0], &xs, &strides(&y.shape))?])
    }
}
