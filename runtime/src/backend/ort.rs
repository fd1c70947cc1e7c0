//! The ONNX Runtime backend (cargo feature `ort`): CPU, or the CUDA execution provider when
//! asked. The ONNX Runtime library (≥ 1.31) is loaded at run time; see [`find_library`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::ArrayViewD;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynTensor, Tensor};

use super::{Backend, EngineError, Outputs, Session};
use crate::bundle::ModelSpec;

/// Where ONNX Runtime executes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// CPU execution provider.
    #[default]
    Cpu,
    /// CUDA execution provider on GPU 0; loading a model fails when CUDA cannot be used
    /// (never a silent fallback to the CPU).
    Cuda,
}

/// ONNX Runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OrtError {
    /// No library was found, or the one named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The library exists but cannot be loaded or initialised.
    #[error("cannot load ONNX Runtime from {}: {reason}", path.display())]
    Load {
        /// The library file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The ONNX Runtime library to load: `explicit`, else `ORT_DYLIB_PATH`, else the one
/// `pip install onnxruntime` put into a `.venv` of the current directory or one of its parents,
/// else of the running executable's directory or one of its parents (so that
/// `target/release/unpersonal` finds the checkout's `.venv` from any working directory):
/// `.venv/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.1*`.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, OrtError> {
    if let Some(path) = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
    {
        if !path.is_file() {
            return Err(OrtError::NotFound(format!(
                "ONNX Runtime library {} does not exist",
                path.display()
            )));
        }
        return Ok(path);
    }
    let in_venv = |dir: &Path| {
        let pythons = std::fs::read_dir(dir.join(".venv/lib")).ok()?;
        pythons.flatten().find_map(|python| {
            let capi = python.path().join("site-packages/onnxruntime/capi");
            std::fs::read_dir(capi).ok()?.flatten().map(|f| f.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so.1"))
            })
        })
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let exe = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    let found = cwd
        .ancestors()
        .find_map(in_venv)
        .or_else(|| exe.as_deref().and_then(|dir| dir.ancestors().find_map(in_venv)));
    found.ok_or_else(|| {
        OrtError::NotFound(
            "ONNX Runtime library not found: `pip install onnxruntime==1.31.1` and set ORT_DYLIB_PATH to its \
             onnxruntime/capi/libonnxruntime.so.1.31.1"
                .into(),
        )
    })
}

/// The ONNX Runtime backend.
#[derive(Debug)]
pub struct Ort {
    env: &'static Environment,
    device: Device,
    threads: usize,
}

impl Ort {
    /// Loads ONNX Runtime (once per process: the first library loaded stays) and makes a backend
    /// running on `device` with `threads` intra-op threads (0: one per core).
    pub fn new(library: Option<&Path>, device: Device, threads: usize) -> Result<Ort, OrtError> {
        Ok(Ort { env: environment(library)?, device, threads })
    }
}

/// Loads ONNX Runtime once per process ([`find_library`] picks the file); later calls return
/// the same environment, whatever library they name. The trainer shares it.
pub fn environment(library: Option<&Path>) -> Result<&'static Environment, OrtError> {
    // One thread builds it: ONNX Runtime makes only the first environment of a process the
    // active one, and tensor copies fail once that one is dropped for a racing twin.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = find_library(library)?;
    let load_error = |reason: String| OrtError::Load { path: path.clone(), reason };
    let builder = ort::init_from(&path).map_err(|e| load_error(e.to_string()))?;
    let env = builder.with_name("unpersonal").build().map_err(|e| load_error(e.to_string()))?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

impl Backend for Ort {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn load(&self, onnx: &[u8], _spec: &ModelSpec) -> Result<Box<dyn Session>, EngineError> {
        let builder_error = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
        let mut builder = ort::session::Session::builder(self.env)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(builder_error)?
            .with_intra_threads(self.threads)
            .map_err(builder_error)?;
        if self.device == Device::Cuda {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| {
                    format!("CUDA was requested but its execution provider failed: {e}")
                })?;
        }
        let session = builder.commit_from_memory(onnx)?;
        Ok(Box::new(OrtSession { session }))
    }
}

struct OrtSession {
    session: ort::session::Session,
}

impl Session for OrtSession {
    fn run(&mut self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Outputs, EngineError> {
        let mut values: Vec<(String, DynTensor)> = Vec::with_capacity(inputs.len());
        for (name, view) in inputs {
            let data: Vec<f32> = view.iter().copied().collect();
            values.push((
                name.to_string(),
                Tensor::from_array((view.shape().to_vec(), data))?.upcast(),
            ));
        }
        let results = self.session.run(values)?;
        let mut outputs = Outputs::new();
        for (name, value) in &results {
            outputs.insert(name.to_string(), value.try_extract_array::<f32>()?.to_owned());
        }
        Ok(outputs)
    }
}
