//! A linear combination of up to three tensors plus a constant: the sampler's arithmetic on
//! the GPU (not an ONNX operator).

use crate::backend::webgpu::WebGpuError;
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// Records `y = bias + Σ w·x[offset..]` over `y`'s elements (`terms`: weight, tensor, offset);
/// the error ([`WebGpuError::Sampler`]) says why the kernel cannot.
pub(crate) fn lincomb(
    gpu: &Gpu,
    terms: &[(f32, &Tensor, usize)],
    bias: f32,
    y: &Tensor,
) -> Result<Dispatch, WebGpuError> {
    let fail = |problem: String| WebGpuError::Sampler { problem };
    if terms.len() > 3 {
        return Err(fail(format!("a linear combination of {} terms", terms.len())));
    }
    let count = y.len();
    let mut p = [0u32; 9];
    p[0] = u32::try_from(count).map_err(|_| fail("tensor too large for 32-bit indices".into()))?;
    p[1] = terms.len() as u32;
    p[8] = bias.to_bits();
    let mut buffers = [gpu.zero(); 3];
    for (k, (w, x, offset)) in terms.iter().enumerate() {
        if offset + count > x.len() {
            return Err(fail(format!("a term reads {count} values from {offset} of {}", x.len())));
        }
        buffers[k] = &x.buffer;
        p[2 + k] = u32::try_from(*offset)
            .map_err(|_| fail("offset too large for 32-bit indices".into()))?;
        p[5 + k] = w.to_bits();
    }
    let [a, b, c] = buffers;
    Ok(gpu.dispatch(kernel_1d!("lincomb"), &[a, b, c, &y.buffer], &p, Gpu::groups_1d(count)))
}
