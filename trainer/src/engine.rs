//! Runs graphs on ONNX Runtime: loading the library, sessions on CPU or CUDA, and the
//! training engine that keeps parameters and optimiser state resident between steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ort::environment::Environment;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session, builder::GraphOptimizationLevel};
use ort::value::{DynTensor, DynTensorValueType, Tensor};

use crate::graph::{Shape, numel};
use crate::step::{NEXT, StepGraph};

/// Where ONNX Runtime executes.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Device {
    /// CPU execution provider.
    #[default]
    Cpu,
    /// CUDA execution provider on GPU 0; an error when CUDA cannot be used.
    Cuda,
}

/// Loads ONNX Runtime once per process: `library`, else `ORT_DYLIB_PATH`, else the one
/// `pip install onnxruntime` put into a `.venv` of the current directory or a parent. The
/// runtime crate owns the loading, so trainer and runtime share one environment.
pub fn environment(library: Option<&Path>) -> anyhow::Result<&'static Environment> {
    Ok(unpersonal_runtime::backend::ort::environment(library)?)
}

/// How a session runs.
#[derive(Clone, Debug, Default)]
pub struct SessionConfig {
    /// Execution device.
    pub device: Device,
    /// Intra-op threads (0: ONNX Runtime's choice, one per core).
    pub threads: usize,
    /// Write ONNX Runtime's per-operator profile (JSON trace) with this path prefix.
    pub profile: Option<PathBuf>,
}

impl SessionConfig {
    /// CPU with `threads` intra-op threads.
    pub fn cpu(threads: usize) -> Self {
        SessionConfig { device: Device::Cpu, threads, profile: None }
    }
}

/// A session for `model` as `config` says.
pub fn session(env: &Environment, model: &[u8], config: &SessionConfig) -> anyhow::Result<Session> {
    let builder_error =
        |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow::anyhow!("{e}");
    let mut builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(builder_error)?
        .with_intra_threads(config.threads)
        .map_err(builder_error)?;
    if let Some(prefix) = &config.profile {
        builder = builder.with_profiling(prefix).map_err(builder_error)?;
    }
    if config.device == Device::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| {
                anyhow::anyhow!("CUDA was requested but its execution provider failed: {e}")
            })?;
    }
    builder.commit_from_memory(model).context("ONNX Runtime rejected the graph")
}

/// A host tensor: shape and row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Shape,
    /// Values.
    pub data: Vec<f32>,
}

/// Everything a training step carries from one step to the next, by name.
pub type State = BTreeMap<String, HostTensor>;

fn memory_info(device: Device) -> anyhow::Result<MemoryInfo<'static>> {
    let alloc = match device {
        Device::Cpu => AllocationDevice::CPU,
        Device::Cuda => AllocationDevice::CUDA,
    };
    Ok(MemoryInfo::new(alloc, 0, AllocatorType::Device, MemoryType::Default)?)
}

fn host_value(shape: &[usize], data: Vec<f32>) -> anyhow::Result<DynTensor> {
    Ok(Tensor::from_array((shape.to_vec(), data))?.upcast())
}

/// Copies a (possibly device-resident) tensor to the host.
pub fn to_host(value: &DynTensor) -> anyhow::Result<HostTensor> {
    let host;
    let value = if value.memory_info().allocation_device() == AllocationDevice::CPU {
        value
    } else {
        host = value.to(AllocationDevice::CPU, 0)?;
        &host
    };
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    Ok(HostTensor { shape: shape.iter().map(|&d| d as usize).collect(), data: data.to_vec() })
}

/// Runs `session` once on host inputs and returns every output on the host.
pub fn run(
    session: &mut Session,
    inputs: &[(&str, &HostTensor)],
) -> anyhow::Result<BTreeMap<String, HostTensor>> {
    let mut values = Vec::with_capacity(inputs.len());
    for (name, t) in inputs {
        values.push((name.to_string(), host_value(&t.shape, t.data.clone())?));
    }
    let outputs = session.run(values)?;
    outputs
        .iter()
        .map(|(name, value)| {
            Ok((
                name.to_string(),
                to_host(&value.view().downcast::<DynTensorValueType>()?.clone())?,
            ))
        })
        .collect()
}

/// Runs `session` once on values bound by name: every output `{name}.next` of `carried`
/// stays in `device`'s memory (returned under `name`, to be bound as the next run's input),
/// the outputs `host_outputs` are copied to the host.
pub(crate) fn run_bound<'v>(
    session: &mut Session,
    device: Device,
    inputs: impl IntoIterator<Item = (&'v str, &'v DynTensor)>,
    carried: impl IntoIterator<Item = &'v str>,
    host_outputs: &[String],
) -> anyhow::Result<(BTreeMap<String, DynTensor>, BTreeMap<String, HostTensor>)> {
    let mut binding: IoBinding = session.create_binding()?;
    for (name, value) in inputs {
        binding.bind_input(name, value)?;
    }
    let device_mem = memory_info(device)?;
    let host_mem = memory_info(Device::Cpu)?;
    let carried: Vec<&str> = carried.into_iter().collect();
    for name in &carried {
        binding.bind_output_to_device(format!("{name}{NEXT}"), &device_mem)?;
    }
    for name in host_outputs {
        binding.bind_output_to_device(name.as_str(), &host_mem)?;
    }
    let mut outputs = session.run_binding(&binding)?;
    let mut host = BTreeMap::new();
    for name in host_outputs {
        let value = outputs
            .remove(name.as_str())
            .with_context(|| format!("the graph produced no {name}"))?;
        host.insert(name.clone(), to_host(&value.downcast::<DynTensorValueType>()?)?);
    }
    let mut next = BTreeMap::new();
    for name in carried {
        let value = outputs
            .remove(format!("{name}{NEXT}"))
            .with_context(|| format!("the graph produced no {name}{NEXT}"))?;
        next.insert(name.to_string(), value.downcast::<DynTensorValueType>()?);
    }
    Ok((next, host))
}

/// A host tensor as a value in `device`'s memory.
pub(crate) fn upload(device: Device, shape: &[usize], data: Vec<f32>) -> anyhow::Result<DynTensor> {
    let value = host_value(shape, data)?;
    Ok(match device {
        Device::Cpu => value,
        Device::Cuda => value.to(AllocationDevice::CUDA, 0)?,
    })
}

/// What one step returns to the host.
#[derive(Debug)]
pub struct StepOutput {
    /// Mean loss of the batch.
    pub loss: f32,
    /// The model's metric outputs, by name.
    pub metrics: BTreeMap<String, HostTensor>,
}

/// Executes a training-step graph repeatedly; the state stays in the engine's memory (GPU
/// memory on CUDA) and only the batch goes in and the loss and metrics come out.
pub struct TrainingEngine {
    session: Session,
    device: Device,
    state: BTreeMap<String, DynTensor>,
    batch_inputs: Vec<(String, Shape)>,
    host_outputs: Vec<String>,
}

impl TrainingEngine {
    /// Compiles `step` and uploads `state` (which must name every state tensor of the graph).
    pub fn new(
        env: &Environment,
        step: &StepGraph,
        state: &State,
        config: &SessionConfig,
    ) -> anyhow::Result<Self> {
        let session = session(env, &crate::onnx::training_bytes(&step.graph)?, config)?;
        let device = config.device;
        let mut engine = TrainingEngine {
            session,
            device,
            state: BTreeMap::new(),
            batch_inputs: step.batch_inputs.clone(),
            host_outputs: std::iter::once("loss".to_string())
                .chain(step.metrics.iter().cloned())
                .collect(),
        };
        for (name, shape) in step.state_names() {
            let t = state.get(&name).with_context(|| format!("state has no tensor {name}"))?;
            anyhow::ensure!(
                t.shape == shape,
                "state tensor {name} has shape {:?}, the graph needs {shape:?}",
                t.shape
            );
            engine.state.insert(name, upload(device, &shape, t.data.clone())?);
        }
        Ok(engine)
    }

    /// Runs one step on `batch` (values for the graph's batch inputs, in order) with the given
    /// 1-based step number, learning rate and EMA decay.
    pub fn step(
        &mut self,
        batch: &[&[f32]],
        step: u64,
        lr: f32,
        ema_decay: f32,
    ) -> anyhow::Result<StepOutput> {
        anyhow::ensure!(
            batch.len() == self.batch_inputs.len(),
            "expected {} batch inputs",
            self.batch_inputs.len()
        );
        let mut held = Vec::new();
        for ((name, shape), data) in self.batch_inputs.iter().zip(batch) {
            anyhow::ensure!(
                data.len() == numel(shape),
                "batch input {name} needs {} values, got {}",
                numel(shape),
                data.len()
            );
            held.push((name.clone(), host_value(shape, data.to_vec())?));
        }
        for (name, v) in [("step", step as f32), ("lr", lr), ("ema_decay", ema_decay)] {
            held.push((name.to_string(), host_value(&[], vec![v])?));
        }
        let inputs = held
            .iter()
            .map(|(name, value)| (name.as_str(), value))
            .chain(self.state.iter().map(|(name, value)| (name.as_str(), value)));
        let (next, mut metrics) = run_bound(
            &mut self.session,
            self.device,
            inputs,
            self.state.keys().map(String::as_str),
            &self.host_outputs,
        )?;
        let loss = metrics.remove("loss").map(|t| t.data[0]).unwrap_or(f32::NAN);
        anyhow::ensure!(loss.is_finite(), "training diverged at step {step}: the loss is {loss}");
        self.state = next;
        Ok(StepOutput { loss, metrics })
    }

    /// Downloads the whole state (for checkpoints and export).
    pub fn state(&self) -> anyhow::Result<State> {
        self.state.iter().map(|(name, value)| Ok((name.clone(), to_host(value)?))).collect()
    }
}
