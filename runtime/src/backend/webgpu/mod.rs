//! The WebGPU backend (cargo feature `webgpu`): ONNX graphs run by WGSL compute kernels through
//! wgpu — natively on Vulkan, Metal or DX12 (lavapipe on a machine without a GPU).
//!
//! Loading parses the graph, checks that every operator has a kernel (the error names the first
//! node that has none) and uploads the weights once; each batch size gets a [`plan::Plan`]
//! with its buffers and kernels recorded, so a call is one upload, one submission and one
//! read-back. Arithmetic is float32.

mod gpu;
mod graph;
mod ops;
mod plan;

use std::collections::HashMap;
use std::sync::Arc;

use ndarray::ArrayViewD;

use self::gpu::{Gpu, Tensor};
use self::graph::Graph;
use self::plan::Plan;
use super::{Backend, EngineError, Outputs, Session};
use crate::bundle::ModelSpec;

/// The WebGPU backend on one adapter.
#[derive(Debug, Clone)]
pub struct WebGpu {
    gpu: Arc<Gpu>,
}

impl WebGpu {
    /// Opens the first high-performance adapter (blocking; native targets).
    pub fn new() -> Result<WebGpu, String> {
        Ok(WebGpu { gpu: Arc::new(pollster::block_on(Gpu::open())?) })
    }

    /// The adapter: name, device type and graphics API.
    pub fn adapter(&self) -> String {
        let info = self.gpu.info();
        format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend)
    }
}

impl Backend for WebGpu {
    fn name(&self) -> &'static str {
        "webgpu"
    }

    fn load(&self, onnx: &[u8], spec: &ModelSpec) -> Result<Box<dyn Session>, EngineError> {
        let graph = Graph::parse(onnx, spec)?;
        let mut weights = HashMap::new();
        for node in &graph.nodes {
            for name in &node.inputs {
                if let Some(c) = graph.constants.get(name) {
                    let floats = c.floats.as_ref().ok_or_else(|| format!("node `{}` reads the int64 constant `{name}` on the GPU", node.name))?;
                    weights.entry(name.clone()).or_insert_with(|| Tensor { buffer: self.gpu.upload(floats), shape: c.dims.clone() });
                }
            }
        }
        let mut session = WebGpuSession { gpu: self.gpu.clone(), graph, weights, plans: HashMap::new() };
        // Lay out batch size 1 now, so a graph the kernels cannot run fails at load time.
        session.plan(1)?;
        Ok(Box::new(session))
    }
}

struct WebGpuSession {
    gpu: Arc<Gpu>,
    graph: Graph,
    weights: HashMap<String, Tensor>,
    plans: HashMap<usize, Plan>,
}

impl WebGpuSession {
    fn plan(&mut self, batch: usize) -> Result<&Plan, String> {
        if !self.plans.contains_key(&batch) {
            let plan = Plan::new(&self.graph, &self.weights, &self.gpu, batch)?;
            self.plans.insert(batch, plan);
        }
        Ok(&self.plans[&batch])
    }
}

impl Session for WebGpuSession {
    fn run(&mut self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Outputs, EngineError> {
        let batch = self
            .graph
            .inputs
            .iter()
            .find_map(|t| {
                let axis = t.shape.iter().position(|d| *d == crate::bundle::Dim::Batch)?;
                inputs.iter().find(|(n, _)| *n == t.name).map(|(_, v)| v.shape().get(axis).copied().unwrap_or(1))
            })
            .unwrap_or(1);
        let gpu = self.gpu.clone();
        Ok(self.plan(batch)?.run(&gpu, inputs)?)
    }
}
