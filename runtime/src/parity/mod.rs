//! The WebGPU backend against tract, defined once (cargo feature `parity`): a single-operator
//! graph for every kernel and the subgraphs the backend fuses into one, on random inputs
//! ([`kernels`], within [`KERNEL_BOUND`]), and a bundle's models ([`models`], within [`MODEL_BOUND`]). The runtime's tests run them natively
//! (`runtime/tests/it/webgpu.rs`, lavapipe where there is no GPU); `web/` built with its
//! `parity` feature runs them in a browser on its WebGPU adapter, against tract compiled to
//! wasm in the same page (`tests/web/parity.test.mjs`).
//!
//! [`onnx`] builds the graphs; the runtime's tests build their tiny models with it too.

mod fused;
mod kernels;
pub mod onnx;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::bundle::{BundleDir, ModelSpec, Role};

pub use self::kernels::kernels;

/// Largest |WebGPU − tract| allowed for a single kernel.
pub const KERNEL_BOUND: f32 = 1e-4;

/// Largest |WebGPU − tract| allowed for a whole model.
pub const MODEL_BOUND: f32 = 1e-3;

/// A graph, its interface and the inputs to run it on.
#[derive(Debug)]
pub struct Case {
    /// What it checks: the operator and variant, or the model's file.
    pub name: String,
    /// The ONNX graph.
    pub onnx: Vec<u8>,
    /// Its inputs' names and shapes.
    pub spec: ModelSpec,
    /// A value for every input.
    pub inputs: Vec<(String, ArrayD<f32>)>,
    /// Largest difference allowed in any output.
    pub bound: f32,
}

impl Case {
    /// The inputs as a backend takes them.
    pub fn feed(&self) -> Vec<(&str, ArrayViewD<'_, f32>)> {
        self.inputs.iter().map(|(name, value)| (name.as_str(), value.view())).collect()
    }
}

/// The largest difference in one output of a [`Case`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    /// The case's name.
    pub case: String,
    /// The output's name.
    pub output: String,
    /// max |WebGPU − tract| over the output (infinite where one side is NaN or infinite and
    /// the other is not).
    pub max: f32,
    /// The case's bound.
    pub bound: f32,
}

impl Difference {
    /// Whether the difference is within the bound.
    pub fn holds(&self) -> bool {
        self.max <= self.bound
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: max |webgpu − tract| = {:e} (bound {:e})",
            self.case, self.output, self.max, self.bound
        )
    }
}

/// Every distinct model file of `bundle` (the denoiser, features, classifier, re-id halves) on
/// random inputs in [0, 1) at batch 3.
pub fn models(bundle: &BundleDir) -> Vec<Case> {
    let mut seen = Vec::new();
    let mut cases = Vec::new();
    for role in Role::ALL {
        let (Ok(spec), Ok(onnx)) = (bundle.bundle.model(role), bundle.onnx(role)) else { continue };
        if seen.contains(&spec.file) {
            continue;
        }
        seen.push(spec.file.clone());
        cases.push(Case {
            name: spec.file.clone(),
            onnx: onnx.to_vec(),
            spec: spec.clone(),
            inputs: model_inputs(spec, 3),
            bound: MODEL_BOUND,
        });
    }
    cases
}

/// Random values in [0, 1) for every input of `spec`, `batch` rows.
pub fn model_inputs(spec: &ModelSpec, batch: usize) -> Vec<(String, ArrayD<f32>)> {
    spec.inputs
        .iter()
        .zip(20..)
        .map(|(t, seed)| (t.name.clone(), random(&t.concrete(batch), seed).mapv(|v| v.abs() / 2.0)))
        .collect()
}

/// `shape` filled with values uniform in [−2, 2) from a generator seeded with `seed`.
fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-2.0f32..2.0))
}

/// Runs `case` on tract and on `gpu` (awaiting the GPU, as a browser must) and gives each
/// output's largest difference.
#[cfg(feature = "webgpu")]
pub async fn compare(
    gpu: &crate::backend::webgpu::WebGpu,
    case: &Case,
) -> Result<Vec<Difference>, String> {
    use crate::backend::{Backend, Tract, chain};

    let fail = |backend: &str, e: crate::backend::EngineError| {
        format!("{}: {backend}: {}", case.name, chain(e.as_ref()))
    };
    let feed = case.feed();
    let expected = Tract::default()
        .load(&case.onnx, &case.spec)
        .and_then(|mut s| s.run(&feed))
        .map_err(|e| fail("tract", e))?;
    let got = match gpu.session(&case.onnx, &case.spec) {
        Ok(mut session) => session.run_async(&feed).await.map_err(|e| fail("webgpu", e.into()))?,
        Err(e) => return Err(fail("webgpu", e.into())),
    };
    expected
        .iter()
        .map(|(output, want)| {
            let have = got
                .get(output)
                .ok_or_else(|| format!("{}: webgpu gave no output `{output}`", case.name))?;
            if have.shape() != want.shape() {
                return Err(format!(
                    "{}: output `{output}` has shape {:?} on webgpu, {:?} on tract",
                    case.name,
                    have.shape(),
                    want.shape()
                ));
            }
            let max = have.iter().zip(want).fold(0f32, |m, (a, b)| {
                if a.is_nan() != b.is_nan() { f32::INFINITY } else { m.max((a - b).abs()) }
            });
            Ok(Difference {
                case: case.name.clone(),
                output: output.clone(),
                max,
                bound: case.bound,
            })
        })
        .collect()
}
