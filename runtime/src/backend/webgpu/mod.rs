//! The WebGPU backend (cargo feature `webgpu`): ONNX graphs run by WGSL compute kernels through
//! wgpu — natively on Vulkan, Metal or DX12 (lavapipe on a machine without a GPU).
//!
//! Loading parses the graph, checks that every operator has a kernel (the error names the first
//! node that has none), fuses group normalisations and element-wise regions into single kernels
//! ([`fuse`]) and uploads the weights once; each batch size gets a [`plan::Plan`]
//! with its buffers and kernels recorded, so a call is one upload, one submission and one
//! read-back. A denoiser loaded with [`Backend::device_denoiser`] runs whole sampling loops on
//! the GPU ([`sampler`]). Arithmetic is float32.
//!
//! In a browser the GPU is reached only through futures: there the sampling loop and
//! [`WebGpuSession::run_async`] run, and single synchronous calls ([`Session::run`]) are
//! refused.
//!
//! Failures are [`WebGpuError`]s, one kind per cause (opening the GPU, the graph, an
//! unsupported node, a shape, the GPU at run time); [`Backend`] and [`Session`] box them as
//! [`EngineError`]s, which keep the type for `downcast_ref`.

mod error;
mod fuse;
mod gpu;
mod graph;
mod ops;
mod plan;
mod sampler;

use std::collections::HashMap;
use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;

use ndarray::{Array4, ArrayView2, ArrayView4, ArrayViewD, Axis};

pub use self::error::WebGpuError;
use self::gpu::{Gpu, Tensor};
use self::graph::Graph;
use self::plan::Plan;
use self::sampler::GpuField;
use super::{Backend, EngineError, Outputs, Session};
use crate::bundle::ModelSpec;
use crate::bundle::Solver;
use crate::solver::{DeviceDenoiser, Guidance, solve};

/// The WebGPU backend on one adapter.
#[derive(Debug, Clone)]
pub struct WebGpu {
    gpu: Arc<Gpu>,
}

impl WebGpu {
    /// Opens the first high-performance adapter (blocking; native targets).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<WebGpu, WebGpuError> {
        pollster::block_on(WebGpu::open())
    }

    /// Opens the first high-performance adapter.
    pub async fn open() -> Result<WebGpu, WebGpuError> {
        Ok(WebGpu { gpu: Arc::new(Gpu::open().await?) })
    }

    /// The adapter: name (browsers may withhold it), device type and graphics API.
    pub fn adapter(&self) -> String {
        let info = self.gpu.info();
        let name = if info.name.is_empty() { "unnamed adapter" } else { info.name.as_str() };
        format!("{name} ({:?}, {:?})", info.device_type, info.backend)
    }
}

impl Backend for WebGpu {
    fn name(&self) -> &'static str {
        "webgpu"
    }

    fn load(&self, onnx: &[u8], spec: &ModelSpec) -> Result<Box<dyn Session>, EngineError> {
        Ok(Box::new(self.session(onnx, spec)?))
    }

    fn device_denoiser(
        &self,
        onnx: &[u8],
        spec: &ModelSpec,
    ) -> Result<Option<Box<dyn DeviceDenoiser>>, EngineError> {
        Ok(Some(Box::new(self.session(onnx, spec)?)))
    }
}

impl WebGpu {
    /// Loads `onnx` (whose interface `spec` describes) for [`WebGpuSession::run_async`]; what
    /// [`Backend::load`] boxes.
    pub fn session(&self, onnx: &[u8], spec: &ModelSpec) -> Result<WebGpuSession, WebGpuError> {
        let mut graph = Graph::parse(onnx, spec)?;
        fuse::fuse(&mut graph);
        self.upload(graph)
    }

    /// `graph` on the GPU: its weights uploaded and batch size 1 laid out.
    fn upload(&self, graph: Graph) -> Result<WebGpuSession, WebGpuError> {
        let mut weights = HashMap::new();
        for node in &graph.nodes {
            for name in &node.inputs {
                if let Some(c) = graph.constants.get(name) {
                    let floats = c.floats.as_ref().ok_or_else(|| WebGpuError::IntegerConstant {
                        node: node.name.clone(),
                        constant: name.clone(),
                    })?;
                    weights.entry(name.clone()).or_insert_with(|| Tensor {
                        buffer: self.gpu.upload(floats),
                        shape: c.dims.clone(),
                    });
                }
            }
        }
        let mut session =
            WebGpuSession { gpu: self.gpu.clone(), graph, weights, plans: HashMap::new() };
        // Lay out batch size 1 now, so a graph the kernels cannot run fails at load time.
        session.plan(1)?;
        Ok(session)
    }
}

/// A graph loaded on the GPU: its weights and a plan per batch size run so far.
pub struct WebGpuSession {
    gpu: Arc<Gpu>,
    graph: Graph,
    weights: HashMap<String, Tensor>,
    plans: HashMap<usize, Plan>,
}

impl WebGpuSession {
    fn plan(&mut self, batch: usize) -> Result<&Plan, WebGpuError> {
        if !self.plans.contains_key(&batch) {
            let plan = Plan::new(&self.graph, &self.weights, &self.gpu, batch)?;
            self.plans.insert(batch, plan);
        }
        Ok(&self.plans[&batch])
    }

    /// Runs the graph once on `inputs` (every graph input, all with the same batch size),
    /// awaiting the GPU: the single call a browser can make.
    pub async fn run_async(
        &mut self,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
    ) -> Result<Outputs, WebGpuError> {
        let batch = super::batch(&self.graph.inputs, inputs);
        let gpu = self.gpu.clone();
        self.plan(batch)?.run(&gpu, inputs).await
    }
}

impl Session for WebGpuSession {
    fn run(&mut self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Outputs, EngineError> {
        #[cfg(target_arch = "wasm32")]
        {
            let _ = inputs;
            Err(WebGpuError::Synchronous.into())
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            Ok(pollster::block_on(self.run_async(inputs))?)
        }
    }
}

impl DeviceDenoiser for WebGpuSession {
    fn backend(&self) -> &'static str {
        "webgpu"
    }

    fn sample<'a>(
        &'a mut self,
        sigmas: &'a [f64],
        solver: Solver,
        guidance: Guidance,
        condition: ArrayView2<'a, f32>,
        noise: ArrayView4<'a, f32>,
        on_step: &'a mut dyn FnMut(usize, usize),
    ) -> Pin<Box<dyn Future<Output = Result<Array4<f32>, String>> + 'a>> {
        Box::pin(async move {
            let gpu = self.gpu.clone();
            let (_, c, h, w) = noise.dim();
            let sampled = async {
                let plan = self.plan(2 * noise.len_of(Axis(0)))?;
                let mut field = GpuField::new(&gpu, plan, condition, guidance, [c, h, w])?;
                let start = field.upload(noise);
                let images = solve(&mut field, start, sigmas, solver, &mut |done, total, _| {
                    on_step(done, total)
                })
                .await?;
                field.read(&images).await
            };
            // The device sampler's interface speaks in messages (the whole message: a
            // `WebGpuError` carries its causes in its text).
            sampled.await.map_err(|e: WebGpuError| e.to_string())
        })
    }
}
