//! MatMul of rank ≥ 2 operands with broadcast batch axes, tiled through workgroup memory.

use super::{Op, broadcast, broadcast_strides};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// Batch axes the kernel indexes.
const MAX_BATCH_RANK: usize = 4;

/// `y = a · b`.
#[derive(Debug)]
pub(crate) struct MatMul;

fn split(shape: &[usize]) -> Result<(&[usize], usize, usize), String> {
    match shape {
        [batch @ .., m, k] => Ok((batch, *m, *k)),
        _ => Err(format!("operand of rank {} (the WebGPU MatMul needs rank ≥ 2)", shape.len())),
    }
}

impl Op for MatMul {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (ab, m, k) = split(inputs[0])?;
        let (bb, k2, n) = split(inputs[1])?;
        if k != k2 {
            return Err(format!("inner extents differ: {:?} · {:?}", inputs[0], inputs[1]));
        }
        let mut shape = broadcast(ab, bb).map_err(|e| format!("batch axes: {e}"))?;
        if shape.len() > MAX_BATCH_RANK {
            return Err(format!("more than {MAX_BATCH_RANK} batch axes"));
        }
        shape.extend([m, n]);
        Ok(shape)
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let (a, b) = (inputs[0], inputs[1]);
        let (ab, m, k) = split(&a.shape)?;
        let (bb, _, n) = split(&b.shape)?;
        let batch = &y.shape[..y.shape.len() - 2];
        let pad = |v: Vec<usize>| -> [u32; MAX_BATCH_RANK] {
            let mut out = [0u32; MAX_BATCH_RANK];
            for (o, x) in out.iter_mut().zip(v) {
                *o = x as u32;
            }
            out
        };
        let mut p = vec![m as u32, n as u32, k as u32, batch.len() as u32];
        p.extend(pad(batch.to_vec()));
        // Batch strides in whole matrices, 0 on broadcast axes.
        let matrices = |own: &[usize], size: usize| {
            broadcast_strides(own, batch.len()).into_iter().map(|s| s * size).collect::<Vec<_>>()
        };
        p.extend(pad(matrices(ab, m * k)));
        p.extend(pad(matrices(bb, k * n)));
        let count: usize = batch.iter().product();
        let groups = [n.div_ceil(16) as u32, m.div_ceil(16) as u32, count as u32];
        if groups.iter().any(|&g| g > 65_535) {
            return Err(format!(
                "product {:?} · {:?} needs more than 65,535 workgroups along an axis",
                a.shape, b.shape
            ));
        }
        Ok(vec![gpu.dispatch(
            ("matmul", include_str!("../shaders/matmul.wgsl")),
            &[&a.buffer, &b.buffer, &y.buffer],
            &p,
            groups,
        )])
    }
}
