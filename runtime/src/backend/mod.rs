//! Ways to run an ONNX graph on batches.
//!
//! A [`Backend`] turns ONNX bytes into a [`Session`]; [`Model`] wraps a session with the
//! bundle's description of it and checks every call: the inputs against the declared names
//! and shapes, the outputs likewise, and every output value for NaN/Inf. Code above this
//! module is backend-agnostic. Backends take bytes, never paths.

mod tract;

#[cfg(feature = "ort")]
pub mod ort;

#[cfg(feature = "webgpu")]
pub mod webgpu;

use std::collections::BTreeMap;
use std::error::Error;

use ndarray::{ArrayD, ArrayViewD, Dimension};

use crate::bundle::{Dim, ModelSpec, TensorSpec, shape_string};
use crate::solver::DeviceDenoiser;

pub use self::tract::{Tract, flops};

/// Named output tensors of one call.
pub type Outputs = BTreeMap<String, ArrayD<f32>>;

/// A backend's own error, carried with its chain of causes.
pub type EngineError = Box<dyn Error + Send + Sync>;

/// An engine that can load ONNX graphs.
pub trait Backend {
    /// Short name (`tract`, `ort`), for messages and reports.
    fn name(&self) -> &'static str;

    /// Loads `onnx`, whose interface `spec` describes (names, shapes, the symbolic batch axis).
    fn load(&self, onnx: &[u8], spec: &ModelSpec) -> Result<Box<dyn Session>, EngineError>;

    /// Loads the denoiser `onnx` (the sampler's interface, its own guide) so that whole
    /// sampling loops run on this backend's device; `None` when the backend runs single calls
    /// only (the solver then runs on the host).
    fn device_denoiser(
        &self,
        _onnx: &[u8],
        _spec: &ModelSpec,
    ) -> Result<Option<Box<dyn DeviceDenoiser>>, EngineError> {
        Ok(None)
    }
}

/// A graph loaded by a [`Backend`], ready to run on batches of any size.
pub trait Session {
    /// Runs the graph once. `inputs` holds every graph input by name, all with the same
    /// batch size; the result holds every graph output by name.
    fn run(&mut self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Outputs, EngineError>;
}

/// A failed model load or call, naming the model file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not load the graph.
    #[error("{file}: {backend} cannot load the model: {reason}")]
    Load {
        /// The ONNX file.
        file: String,
        /// The backend's name.
        backend: &'static str,
        /// The backend's message.
        reason: String,
    },
    /// The backend failed while running the graph.
    #[error("{file}: {backend} failed to run the model: {reason}")]
    Run {
        /// The ONNX file.
        file: String,
        /// The backend's name.
        backend: &'static str,
        /// The backend's message.
        reason: String,
    },
    /// The caller's inputs do not fit the model's declared inputs.
    #[error("{file}: {problem}")]
    Input {
        /// The ONNX file.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// An output is missing or has a shape other than the declared one.
    #[error("{file}: {problem}")]
    Output {
        /// The ONNX file.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// An output holds NaN or ±Inf: the model is broken for this input; nothing is produced.
    #[error(
        "{file}: output `{output}` holds {value} at index {index:?}; the model produced no usable result"
    )]
    NonFinite {
        /// The ONNX file.
        file: String,
        /// The output's name.
        output: String,
        /// Index of the first bad value.
        index: Vec<usize>,
        /// The bad value (NaN, inf or -inf).
        value: f32,
    },
}

/// A loaded model together with its bundle description; every call is checked.
pub struct Model {
    spec: ModelSpec,
    backend: &'static str,
    session: Box<dyn Session>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("file", &self.spec.file)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads `onnx` (which should have passed [`crate::bundle::Bundle::verify`]) on `backend`.
    pub fn load(
        backend: &dyn Backend,
        spec: &ModelSpec,
        onnx: &[u8],
    ) -> Result<Model, BackendError> {
        let session = backend.load(onnx, spec).map_err(|e| BackendError::Load {
            file: spec.file.clone(),
            backend: backend.name(),
            reason: chain(e.as_ref()),
        })?;
        Ok(Model { spec: spec.clone(), backend: backend.name(), session })
    }

    /// The model's description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The name of the backend running it.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Runs the model on one batch. Every declared input must be given once, all with the same
    /// batch size (at least 1) and the declared fixed extents; every declared output comes
    /// back with the same batch size, and an error names any output holding NaN or ±Inf.
    pub fn run(&mut self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Outputs, BackendError> {
        let batch = self.check_inputs(inputs)?;
        let mut outputs = self.session.run(inputs).map_err(|e| BackendError::Run {
            file: self.spec.file.clone(),
            backend: self.backend,
            reason: chain(e.as_ref()),
        })?;
        let output_error =
            |problem: String| BackendError::Output { file: self.spec.file.clone(), problem };
        let mut checked = Outputs::new();
        for t in &self.spec.outputs {
            let value = outputs.remove(&t.name).ok_or_else(|| {
                output_error(format!(
                    "the {} backend returned no output `{}`",
                    self.backend, t.name
                ))
            })?;
            if value.shape() != t.concrete(batch).as_slice() {
                return Err(output_error(format!(
                    "output `{}` has shape {:?}, declared {} with batch {batch}",
                    t.name,
                    value.shape(),
                    shape_string(&t.shape)
                )));
            }
            if let Some((index, &bad)) = value.indexed_iter().find(|(_, v)| !v.is_finite()) {
                return Err(BackendError::NonFinite {
                    file: self.spec.file.clone(),
                    output: t.name.clone(),
                    index: index.slice().to_vec(),
                    value: bad,
                });
            }
            checked.insert(t.name.clone(), value);
        }
        Ok(checked)
    }

    /// Checks `inputs` against the declared inputs and returns the batch size.
    fn check_inputs(&self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<usize, BackendError> {
        let fail = |problem: String| BackendError::Input { file: self.spec.file.clone(), problem };
        for (i, (name, _)) in inputs.iter().enumerate() {
            if self.spec.input(name).is_none() {
                let known: Vec<&str> = self.spec.inputs.iter().map(|t| t.name.as_str()).collect();
                return Err(fail(format!(
                    "the model has no input `{name}` (its inputs: {})",
                    known.join(", ")
                )));
            }
            if inputs[..i].iter().any(|(other, _)| other == name) {
                return Err(fail(format!("input `{name}` is given twice")));
            }
        }
        let mut batch = None;
        for t in &self.spec.inputs {
            let (_, value) = inputs
                .iter()
                .find(|(name, _)| *name == t.name)
                .ok_or_else(|| fail(format!("input `{}` is not given", t.name)))?;
            let b = batch_of(t, value.shape()).ok_or_else(|| {
                fail(format!(
                    "input `{}` has shape {:?}, declared {}",
                    t.name,
                    value.shape(),
                    shape_string(&t.shape)
                ))
            })?;
            match (batch, b) {
                (Some(first), Some(b)) if first != b => {
                    return Err(fail(format!(
                        "input `{}` has batch size {b}, other inputs {first}",
                        t.name
                    )));
                }
                (None, Some(b)) => batch = Some(b),
                _ => {}
            }
        }
        match batch {
            Some(0) => Err(fail("the batch is empty".into())),
            Some(b) => Ok(b),
            None => Ok(1),
        }
    }
}

/// The batch size of `inputs` (checked by [`Model`]) for the declared `specs`: the extent of
/// the first declared input's batch axis (1 when no input has one).
pub(crate) fn batch(specs: &[TensorSpec], inputs: &[(&str, ArrayViewD<'_, f32>)]) -> usize {
    specs
        .iter()
        .find_map(|t| {
            let (_, value) = inputs.iter().find(|(name, _)| *name == t.name)?;
            batch_of(t, value.shape()).flatten()
        })
        .unwrap_or(1)
}

/// The batch size `shape` gives `t` (`Some(None)`: `t` has no batch axis), or `None` when the
/// shape does not fit.
fn batch_of(t: &TensorSpec, shape: &[usize]) -> Option<Option<usize>> {
    if shape.len() != t.shape.len() {
        return None;
    }
    let mut batch = None;
    for (dim, &n) in t.shape.iter().zip(shape) {
        match *dim {
            Dim::Fixed(m) if m != n => return None,
            Dim::Fixed(_) => {}
            Dim::Batch if batch.is_some_and(|b| b != n) => return None,
            Dim::Batch => batch = Some(n),
        }
    }
    Some(batch)
}

/// An error and its causes, joined by `: `.
pub(crate) fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
