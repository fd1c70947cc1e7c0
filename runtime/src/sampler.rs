//! The samplers: EDM's Heun method (Karras et al. 2022, Algorithm 1 with S_churn = 0) and
//! DPM-Solver++(2M) (Lu et al. 2022), both with guidance; [`Solver`] picks one.
//!
//! - Schedule: [`karras_sigmas`], σ_0 = σ_max … σ_{N−1} = σ_min, then σ_N = 0.
//! - Guidance: `D = D_u + w·(D_c − D_u)`; conditional and unconditional rows go through one
//!   batched call (`condition_mask` 1 and 0) unless the bundle has a separate guide model.
//!   [`Guidance`] may limit it to an interval of noise levels, outside which `D = D_c`.
//! - Seeds: the initial noise of a sample depends only on (seed, sample id) ([`noise`]), so a
//!   sample is the same whatever batch, shard or order it is drawn in. The noise can also be
//!   passed in directly ([`sample`] takes it), e.g. to compare with another implementation.
//!
//! Arithmetic is float32, with the σ values computed in float64 and rounded to float32.

use std::fmt;

use ndarray::{Array1, Array2, Array4, ArrayView2, ArrayView4, Axis, Zip, concatenate, s};

use crate::backend::{BackendError, Model};
pub use crate::bundle::Solver;
use crate::bundle::{Dim, ModelSpec};
pub use crate::solver::{
    DeviceDenoiser, Guidance, ScheduleError, karras_sigmas, noise, noise_batch,
};
use crate::solver::{Field, solve};

/// Why sampling failed.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A model call failed, or a model output held NaN/Inf.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The bundle lacks a model the sampler needs.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// The σ schedule's parameters are unusable.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A denoiser model does not have the denoiser interface.
    #[error("{file}: not a denoiser: {problem}")]
    Interface {
        /// The ONNX file.
        file: String,
        /// What is missing or different.
        problem: String,
    },
    /// The caller's arrays do not fit the denoiser or each other.
    #[error("{0}")]
    Shape(String),
    /// Settings the loaded models cannot run.
    #[error("{0}")]
    Settings(String),
}

/// A denoiser `D(x; σ, c)`: a model (and, optionally, a separate unconditional guide model)
/// run call by call with the solver on the host, or a [`DeviceDenoiser`] that runs the whole
/// sampling loop on its device.
///
/// Models have the denoiser interface: inputs `x` `[batch, C, H, W]`, `sigma` `[batch]`,
/// `condition` `[batch, D]`, `condition_mask` `[batch]`; output `denoised` `[batch, C, H, W]`.
/// Unconditional rows get a zero condition and mask 0.
#[derive(Debug)]
pub struct Denoiser {
    runner: Runner,
    image: [usize; 3],
    condition: usize,
}

/// Where a [`Denoiser`]'s sampling loop runs.
#[expect(
    clippy::large_enum_variant,
    reason = "one Runner per denoiser, made once; its size costs nothing"
)]
enum Runner {
    /// Model calls from the host, the solver on the host.
    Host { model: Model, guide: Option<Model> },
    /// The whole loop on a device.
    Device { file: String, device: Box<dyn DeviceDenoiser> },
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Runner::Host { model, guide } => {
                f.debug_struct("Host").field("model", model).field("guide", guide).finish()
            }
            Runner::Device { file, .. } => {
                f.debug_struct("Device").field("file", file).finish_non_exhaustive()
            }
        }
    }
}

impl Denoiser {
    /// Wraps a loaded denoiser and, when the bundle's `guide` names a file other than its
    /// `denoiser`, that guide. Otherwise pass `None`: the denoiser with `condition_mask` 0 is
    /// the unconditional model, and both branches share one batched call.
    pub fn new(model: Model, guide: Option<Model>) -> Result<Denoiser, SampleError> {
        let (image, condition) = interface(model.spec())?;
        if let Some(g) = &guide {
            let (g_image, g_condition) = interface(g.spec())?;
            if (g_image, g_condition) != (image, condition) {
                return Err(SampleError::Interface {
                    file: g.spec().file.clone(),
                    problem: format!(
                        "the guide takes images {g_image:?} and conditions of size {g_condition}, the denoiser {image:?} and {condition}"
                    ),
                });
            }
        }
        Ok(Denoiser { runner: Runner::Host { model, guide }, image, condition })
    }

    /// Wraps a denoiser loaded on a device (`spec` describes its model, which is its own
    /// guide).
    pub fn on_device(
        spec: &ModelSpec,
        device: Box<dyn DeviceDenoiser>,
    ) -> Result<Denoiser, SampleError> {
        let (image, condition) = interface(spec)?;
        Ok(Denoiser {
            runner: Runner::Device { file: spec.file.clone(), device },
            image,
            condition,
        })
    }

    /// Whether the sampling loop runs on a device.
    pub fn on_a_device(&self) -> bool {
        matches!(self.runner, Runner::Device { .. })
    }

    /// The image shape `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image
    }

    /// The condition size D.
    pub fn condition_size(&self) -> usize {
        self.condition
    }

    /// Checks that `n` rows of `condition` fit the denoiser.
    /// Checks that `shape` is `[n, C, H, W]` with the denoiser's image shape (`what`: whose).
    fn check_images(&self, what: &str, shape: &[usize]) -> Result<(), SampleError> {
        let [c, h, w] = self.image;
        if shape.len() != 4 || shape[1..] != [c, h, w] {
            return Err(SampleError::Shape(format!(
                "{what}: shape {shape:?}, the denoiser takes [n, {c}, {h}, {w}]"
            )));
        }
        Ok(())
    }

    fn check_condition(&self, condition: ArrayView2<f32>, n: usize) -> Result<(), SampleError> {
        if condition.dim() != (n, self.condition) {
            return Err(SampleError::Shape(format!(
                "conditions have shape {:?}, the denoiser takes [{n}, {}] for {n} images",
                condition.shape(),
                self.condition
            )));
        }
        Ok(())
    }

    /// The guided denoiser output `D_u + w·(D_c − D_u)` for every row of `x` at noise level
    /// `sigma`, row k conditioned on row k of `condition` (host models only). With `w = 1`
    /// it is `D_c`, and the unconditional model is not run.
    pub fn denoise(
        &mut self,
        x: ArrayView4<f32>,
        sigma: f32,
        condition: ArrayView2<f32>,
        guidance: f32,
    ) -> Result<Array4<f32>, SampleError> {
        let n = x.len_of(Axis(0));
        self.check_images("images", x.shape())?;
        self.check_condition(condition, n)?;
        let (model, guide) = match &mut self.runner {
            Runner::Device { file, .. } => {
                return Err(SampleError::Interface {
                    file: file.clone(),
                    problem: "its loop runs on a device: it denoises only inside `sample`".into(),
                });
            }
            Runner::Host { model, .. } if guidance == 1.0 => {
                return run(model, x, sigma, condition, n);
            }
            Runner::Host { model, guide } => (model, guide),
        };
        let null = Array2::<f32>::zeros((n, self.condition));
        let (cond, uncond) = match guide {
            None => {
                let both = run(
                    model,
                    concatenate![Axis(0), x, x].view(),
                    sigma,
                    concatenate![Axis(0), condition, null].view(),
                    n,
                )?;
                (
                    both.slice(s![..n, .., .., ..]).to_owned(),
                    both.slice(s![n.., .., .., ..]).to_owned(),
                )
            }
            Some(guide) => {
                (run(model, x, sigma, condition, n)?, run(guide, x, sigma, null.view(), 0)?)
            }
        };
        Ok(Zip::from(&uncond).and(&cond).map_collect(|&u, &c| u + guidance * (c - u)))
    }
}

/// The image shape and condition size of a denoiser interface.
fn interface(spec: &ModelSpec) -> Result<([usize; 3], usize), SampleError> {
    let fail = |problem: String| SampleError::Interface { file: spec.file.clone(), problem };
    let dims = |kind: &str, name: &str, rank: usize| -> Result<Vec<usize>, SampleError> {
        let t = if kind == "input" { spec.input(name) } else { spec.output(name) };
        let t = t.ok_or_else(|| fail(format!("it has no {kind} `{name}`")))?;
        match t.shape.split_first() {
            Some((Dim::Batch, rest)) if rest.len() == rank - 1 => rest
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => Ok(*n),
                    Dim::Batch => Err(fail(format!("{kind} `{name}` has a second batch axis"))),
                })
                .collect(),
            _ => Err(fail(format!(
                "{kind} `{name}` does not have rank {rank} with a leading batch axis"
            ))),
        }
    };
    let x = dims("input", "x", 4)?;
    dims("input", "sigma", 1)?;
    dims("input", "condition_mask", 1)?;
    let condition = dims("input", "condition", 2)?[0];
    if dims("output", "denoised", 4)? != x {
        return Err(fail("output `denoised` differs in shape from input `x`".into()));
    }
    Ok(([x[0], x[1], x[2]], condition))
}

/// One model call: rows `[0, conditional)` get mask 1, the rest mask 0.
fn run(
    model: &mut Model,
    x: ArrayView4<f32>,
    sigma: f32,
    condition: ArrayView2<f32>,
    conditional: usize,
) -> Result<Array4<f32>, SampleError> {
    let rows = x.len_of(Axis(0));
    let sigmas = Array1::from_elem(rows, sigma);
    let mask = Array1::from_shape_fn(rows, |i| if i < conditional { 1.0 } else { 0.0 });
    let mut outputs = model.run(&[
        ("x", x.into_dyn()),
        ("sigma", sigmas.view().into_dyn()),
        ("condition", condition.into_dyn()),
        ("condition_mask", mask.view().into_dyn()),
    ])?;
    let file = &model.spec().file;
    let denoised = outputs.remove("denoised").ok_or_else(|| SampleError::Interface {
        file: file.clone(),
        problem: "it returned no `denoised`".into(),
    })?;
    denoised.into_dimensionality().map_err(|e| SampleError::Interface {
        file: file.clone(),
        problem: format!("`denoised` is not 4-D: {e}"),
    })
}

/// Runs `solver` from `noise` (standard normal, `[n, C, H, W]`; the start is
/// `x_0 = σ_0·noise`) through `sigmas` (from [`karras_sigmas`]), conditioning row k on row k
/// of `condition` with `guidance`. Returns the images in model space
/// (normalised; map to pixels with [`to_pixels`]).
///
/// Heun, step i (σ = σ_i, σ' = σ_{i+1}, h = σ' − σ): `d = (x − D(x; σ))/σ`, `x' = x + h·d`;
/// when σ' > 0, `d' = (x' − D(x'; σ'))/σ'` and `x' = x + h·(d/2 + d'/2)`.
///
/// DPM-Solver++(2M), step i (λ = −ln σ, h = λ_{i+1} − λ_i, D_i = D(x; σ_i)):
/// `x' = (σ'/σ)·x + (1 − σ'/σ)·D̂` with `D̂ = D_i` at the first and the last step, else
/// `D̂ = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1}`, r = h_{i−1}/h_i.
pub fn sample(
    denoiser: &mut Denoiser,
    sigmas: &[f64],
    solver: Solver,
    guidance: Guidance,
    condition: ArrayView2<f32>,
    noise: ArrayView4<f32>,
) -> Result<Array4<f32>, SampleError> {
    sample_watched(denoiser, sigmas, solver, guidance, condition, noise, &mut |_, _| {})
}

/// [`sample`], calling `on_step(done, total)` after each of the `total = sigmas.len() − 1`
/// steps (progress for a user interface). Blocks until a device's work is done.
pub fn sample_watched(
    denoiser: &mut Denoiser,
    sigmas: &[f64],
    solver: Solver,
    guidance: Guidance,
    condition: ArrayView2<f32>,
    noise: ArrayView4<f32>,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Array4<f32>, SampleError> {
    pollster::block_on(sample_async(denoiser, sigmas, solver, guidance, condition, noise, on_step))
}

/// [`sample_watched`] as a future, for callers that cannot block (a browser waits for its
/// GPU only through futures).
pub async fn sample_async(
    denoiser: &mut Denoiser,
    sigmas: &[f64],
    solver: Solver,
    guidance: Guidance,
    condition: ArrayView2<'_, f32>,
    noise: ArrayView4<'_, f32>,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Array4<f32>, SampleError> {
    check_inputs(denoiser, sigmas, condition, noise)?;
    let Runner::Device { file, device } = &mut denoiser.runner else {
        let x = noise.to_owned();
        let mut field = HostField { denoiser, condition, guidance };
        return solve(&mut field, x, sigmas, solver, &mut |done, total, _| on_step(done, total))
            .await;
    };
    let backend = device.backend();
    let images = device
        .sample(sigmas, solver, guidance, condition, noise, on_step)
        .await
        .map_err(|reason| BackendError::Run { file: file.clone(), backend, reason })?;
    if images.shape() != noise.shape() {
        return Err(BackendError::Output {
            file: file.clone(),
            problem: format!(
                "the device sampler returned {:?} for {:?}",
                images.shape(),
                noise.shape()
            ),
        }
        .into());
    }
    if let Some((index, &value)) = images.indexed_iter().find(|(_, v)| !v.is_finite()) {
        let index = vec![index.0, index.1, index.2, index.3];
        return Err(BackendError::NonFinite {
            file: file.clone(),
            output: "denoised".into(),
            index,
            value,
        }
        .into());
    }
    Ok(images)
}

/// The states of a host-run sampling loop (the arguments as for [`sample`]): the state after
/// each number of steps in `after` (0: the start `σ_0·noise`; `sigmas.len() − 1`: the final
/// images), in the order given. What a distilled sampler learns from.
pub fn trajectory(
    denoiser: &mut Denoiser,
    sigmas: &[f64],
    solver: Solver,
    guidance: Guidance,
    condition: ArrayView2<f32>,
    noise: ArrayView4<f32>,
    after: &[usize],
) -> Result<Vec<Array4<f32>>, SampleError> {
    check_inputs(denoiser, sigmas, condition, noise)?;
    let total = sigmas.len() - 1;
    if let Some(&step) = after.iter().find(|&&step| step > total) {
        return Err(SampleError::Shape(format!("no state after step {step} of {total}")));
    }
    if let Runner::Device { file, .. } = &denoiser.runner {
        return Err(SampleError::Interface {
            file: file.clone(),
            problem: "its loop runs on a device, which returns only the final images".into(),
        });
    }
    let mut states: Vec<Option<Array4<f32>>> = vec![None; after.len()];
    let start = noise.mapv(|v| sigmas[0] as f32 * v);
    for (slot, _) in states.iter_mut().zip(after).filter(|(_, step)| **step == 0) {
        *slot = Some(start.clone());
    }
    let mut field = HostField { denoiser, condition, guidance };
    let mut keep = |done: usize, _: usize, x: &Array4<f32>| {
        for (slot, _) in states.iter_mut().zip(after).filter(|(_, step)| **step == done) {
            *slot = Some(x.clone());
        }
    };
    pollster::block_on(solve(&mut field, noise.to_owned(), sigmas, solver, &mut keep))?;
    Ok(states.into_iter().map(|state| state.expect("every step up to the last is seen")).collect())
}

/// Checks a sampling call's arguments against each other and the denoiser.
fn check_inputs(
    denoiser: &Denoiser,
    sigmas: &[f64],
    condition: ArrayView2<f32>,
    noise: ArrayView4<f32>,
) -> Result<(), SampleError> {
    if sigmas.len() < 2 || sigmas.last() != Some(&0.0) {
        return Err(SampleError::Schedule(ScheduleError(
            "a schedule needs at least two noise levels, the last 0".into(),
        )));
    }
    let n = noise.len_of(Axis(0));
    if n != condition.len_of(Axis(0)) {
        return Err(SampleError::Shape(format!(
            "{n} noise rows but {} conditions",
            condition.len_of(Axis(0))
        )));
    }
    denoiser.check_images("noise", noise.shape())?;
    denoiser.check_condition(condition, n)?;
    Ok(())
}

/// The host's field: model calls through [`Denoiser::denoise`], arithmetic on arrays.
struct HostField<'a, 'c> {
    denoiser: &'a mut Denoiser,
    condition: ArrayView2<'c, f32>,
    guidance: Guidance,
}

impl Field for HostField<'_, '_> {
    type Images = Array4<f32>;
    type Error = SampleError;

    async fn denoise(&mut self, x: &Array4<f32>, sigma: f32) -> Result<Array4<f32>, SampleError> {
        self.denoiser.denoise(x.view(), sigma, self.condition, self.guidance.weight_at(sigma))
    }

    fn combine(&mut self, terms: &[(f32, &Array4<f32>)]) -> Result<Array4<f32>, SampleError> {
        let ((w0, first), rest) =
            terms.split_first().ok_or_else(|| SampleError::Shape("an empty combination".into()))?;
        let mut out = first.mapv(|v| w0 * v);
        for (w, t) in rest {
            out.scaled_add(*w, t);
        }
        Ok(out)
    }

    async fn settle(&mut self) -> Result<(), SampleError> {
        Ok(())
    }
}
