//! The whole sampling loop on the GPU: the solver of [`crate::solver`] with its images in GPU
//! buffers. Each guided evaluation copies `x` into both halves of the plan's input (the
//! conditional and the unconditional rows), fills `sigma`, runs the graph's kernels and mixes
//! the halves with the guidance weight at that noise level; the solver's updates are [`lincomb`] kernels. Only
//! the final images are read back; the host waits once per step, for progress.

use ndarray::{Array1, Array2, Array4, ArrayView2, ArrayView4, Axis, concatenate};

use super::WebGpuError;
use super::gpu::{Gpu, Tensor};
use super::ops::lincomb;
use super::plan::Plan;
use crate::solver::{Field, Guidance};

/// The sampler's field on one plan of the denoiser (for twice the sampled rows).
pub(crate) struct GpuField<'a> {
    gpu: &'a Gpu,
    plan: &'a Plan,
    encoder: Option<wgpu::CommandEncoder>,
    /// `[n, C, H, W]` of the sampled images.
    shape: Vec<usize>,
    guidance: Guidance,
}

impl<'a> GpuField<'a> {
    /// Sets `plan`'s condition rows (row k and row n + k get row k of `condition`, mask 1
    /// and 0) for `n` sampled images.
    pub fn new(
        gpu: &'a Gpu,
        plan: &'a Plan,
        condition: ArrayView2<f32>,
        guidance: Guidance,
        image: [usize; 3],
    ) -> Result<GpuField<'a>, WebGpuError> {
        let n = condition.nrows();
        let null = Array2::<f32>::zeros(condition.raw_dim());
        let both = concatenate![Axis(0), condition, null];
        gpu.write(&plan.input("condition")?.buffer, &both.iter().copied().collect::<Vec<f32>>());
        let mask = Array1::from_shape_fn(2 * n, |i| if i < n { 1.0 } else { 0.0 });
        gpu.write(&plan.input("condition_mask")?.buffer, mask.as_slice().unwrap_or(&[]));
        let [c, h, w] = image;
        Ok(GpuField { gpu, plan, encoder: Some(gpu.encoder()), shape: vec![n, c, h, w], guidance })
    }

    /// `images` (`[n, C, H, W]`) in a GPU buffer.
    pub fn upload(&self, images: ArrayView4<f32>) -> Tensor {
        Tensor {
            buffer: self.gpu.upload(&images.iter().copied().collect::<Vec<f32>>()),
            shape: images.shape().to_vec(),
        }
    }

    /// Runs what is recorded and reads `images` back.
    pub async fn read(&mut self, images: &Tensor) -> Result<Array4<f32>, WebGpuError> {
        let encoder = self.encoder.take().ok_or_else(submitted)?;
        let mut values = self.gpu.read(encoder, &[images]).await?;
        let [n, c, h, w] = self.shape[..] else {
            return Err(WebGpuError::Sampler { problem: "the sampled images are not 4-D".into() });
        };
        Array4::from_shape_vec((n, c, h, w), values.pop().unwrap_or_default())
            .map_err(|error| WebGpuError::Output { output: "the sampled images".into(), error })
    }

    fn encoder(&mut self) -> Result<&mut wgpu::CommandEncoder, WebGpuError> {
        self.encoder.as_mut().ok_or_else(submitted)
    }

    fn output(&self) -> Tensor {
        Tensor { buffer: self.gpu.storage(self.shape.iter().product()), shape: self.shape.clone() }
    }

    fn guided(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor, WebGpuError> {
        let (input, sigmas, denoised) =
            (self.plan.input("x")?, self.plan.input("sigma")?, self.plan.output("denoised")?);
        let bytes = 4 * x.len() as u64;
        if input.len() != 2 * x.len() {
            return Err(WebGpuError::Sampler {
                problem: format!("the plan takes {:?}, the sampler has {:?}", input.shape, x.shape),
            });
        }
        let fill = lincomb(self.gpu, &[], sigma, sigmas)?;
        let out = self.output();
        let w = self.guidance.weight_at(sigma);
        let mix = lincomb(self.gpu, &[(w, denoised, 0), (1.0 - w, denoised, x.len())], 0.0, &out)?;
        let plan = self.plan;
        let encoder = self.encoder()?;
        encoder.copy_buffer_to_buffer(&x.buffer, 0, &input.buffer, 0, bytes);
        encoder.copy_buffer_to_buffer(&x.buffer, 0, &input.buffer, bytes, bytes);
        Gpu::record(encoder, &[fill]);
        Gpu::record(encoder, plan.dispatches());
        Gpu::record(encoder, &[mix]);
        Ok(out)
    }
}

impl Field for GpuField<'_> {
    type Images = Tensor;
    type Error = WebGpuError;

    async fn denoise(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor, WebGpuError> {
        self.guided(x, sigma)
    }

    fn combine(&mut self, terms: &[(f32, &Tensor)]) -> Result<Tensor, WebGpuError> {
        let out = self.output();
        let terms: Vec<(f32, &Tensor, usize)> = terms.iter().map(|&(w, x)| (w, x, 0)).collect();
        let dispatch = lincomb(self.gpu, &terms, 0.0, &out)?;
        Gpu::record(self.encoder()?, &[dispatch]);
        Ok(out)
    }

    async fn settle(&mut self) -> Result<(), WebGpuError> {
        let encoder = self.encoder.replace(self.gpu.encoder()).ok_or_else(submitted)?;
        self.gpu.settle(encoder).await
    }
}

/// The recorded work was submitted already (the field is used after its images were read).
fn submitted() -> WebGpuError {
    WebGpuError::Sampler { problem: "the GPU work was already submitted".into() }
}
