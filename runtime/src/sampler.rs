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
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use ndarray::{Array1, Array2, Array3, Array4, ArrayView2, ArrayView4, Axis, Zip, concatenate, s};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::backend::{BackendError, Model};
use crate::bundle::{Dim, ModelSpec};

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
    #[error("invalid noise schedule: {0}")]
    Schedule(String),
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
}

/// How the sampler integrates the probability-flow ODE through the noise levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Solver {
    /// EDM's second-order Heun method: 2N − 1 guided evaluations for N steps.
    #[default]
    #[serde(rename = "heun")]
    Heun,
    /// DPM-Solver++(2M): second-order multistep in log σ, reusing the previous step's
    /// denoised image; N guided evaluations for N steps.
    #[serde(rename = "dpmpp-2m")]
    DpmPp2M,
}

impl Solver {
    /// Guided denoiser evaluations per image for `steps` steps.
    pub fn evaluations(self, steps: usize) -> usize {
        match self {
            Solver::Heun => (2 * steps).saturating_sub(1),
            Solver::DpmPp2M => steps,
        }
    }
}

impl fmt::Display for Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Solver::Heun => "heun",
            Solver::DpmPp2M => "dpmpp-2m",
        })
    }
}

impl FromStr for Solver {
    type Err = String;

    fn from_str(s: &str) -> Result<Solver, String> {
        match s {
            "heun" => Ok(Solver::Heun),
            "dpmpp-2m" => Ok(Solver::DpmPp2M),
            _ => Err(format!("unknown solver `{s}` (known: heun, dpmpp-2m)")),
        }
    }
}

/// Classifier-free guidance: `D = D_u + w·(D_c − D_u)` at the noise levels σ in
/// `interval` (`lo < σ ≤ hi`), the conditional model alone (`w = 1`) at the others. Guidance
/// at high σ takes diversity and at low σ does little; limiting it to the middle keeps most of
/// its class fidelity (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval
/// improves sample and distribution quality in diffusion models").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guidance {
    /// The weight w inside the interval.
    pub weight: f32,
    /// `[lo, hi]`; `None` guides at every noise level.
    pub interval: Option<[f64; 2]>,
}

impl Guidance {
    /// Guidance with weight `weight` at every noise level.
    pub fn everywhere(weight: f32) -> Guidance {
        Guidance { weight, interval: None }
    }

    /// Why `[lo, hi]` cannot be a guidance interval: both must be finite, `0 ≤ lo < hi`.
    pub fn interval_problem([lo, hi]: [f64; 2]) -> Option<String> {
        (!(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo < hi))
            .then(|| format!("must be [lo, hi] with 0 ≤ lo < hi, is [{lo}, {hi}]"))
    }

    /// Parses a guidance interval written `lo,hi` (a command-line argument).
    pub fn parse_interval(text: &str) -> Result<[f64; 2], String> {
        let usage = || format!("{text:?} is not a noise-level interval lo,hi (e.g. 0.3,5)");
        let (lo, hi) = text.split_once(',').ok_or_else(usage)?;
        let interval =
            [lo.trim().parse().map_err(|_| usage())?, hi.trim().parse().map_err(|_| usage())?];
        Guidance::interval_problem(interval)
            .map_or(Ok(interval), |problem| Err(format!("guidance interval {problem}")))
    }

    /// The weight at noise level `sigma`.
    pub fn weight_at(&self, sigma: f32) -> f32 {
        match self.interval {
            Some([lo, hi]) if !(f64::from(sigma) > lo && f64::from(sigma) <= hi) => 1.0,
            _ => self.weight,
        }
    }
}

/// The Karras et al. noise levels for `steps` Heun steps:
/// `σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ` for `i < N` (σ_0 = σ_max when
/// N = 1), followed by `σ_N = 0`; `steps + 1` values in all.
pub fn karras_sigmas(
    steps: usize,
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
) -> Result<Vec<f64>, SampleError> {
    if steps == 0 {
        return Err(SampleError::Schedule("at least one step is needed".into()));
    }
    if !(sigma_min > 0.0
        && sigma_max > sigma_min
        && sigma_max.is_finite()
        && rho > 0.0
        && rho.is_finite())
    {
        return Err(SampleError::Schedule(format!(
            "need 0 < sigma_min < sigma_max and rho > 0 (finite), got sigma_min {sigma_min}, sigma_max {sigma_max}, rho {rho}"
        )));
    }
    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    let last = (steps - 1).max(1) as f64;
    let mut sigmas: Vec<f64> =
        (0..steps).map(|i| (hi + i as f64 / last * (lo - hi)).powf(rho)).collect();
    sigmas.push(0.0);
    Ok(sigmas)
}

/// The standard-normal initial noise of sample `sample_id` under `seed`, shape `[C, H, W]`
/// (row-major). Drawn from ChaCha20 seeded with the 32 bytes
/// `seed (u64 LE) ‖ sample_id (u64 LE) ‖ 16 zero bytes`, through `rand_distr::StandardNormal`.
pub fn noise(seed: u64, sample_id: u64, shape: [usize; 3]) -> Array3<f32> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&sample_id.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(key);
    Array3::from_shape_simple_fn(shape, || rng.sample(StandardNormal))
}

/// [`noise`] for several samples, stacked into `[ids.len(), C, H, W]`.
pub fn noise_batch(seed: u64, sample_ids: &[u64], shape: [usize; 3]) -> Array4<f32> {
    let [c, h, w] = shape;
    let mut batch = Array4::zeros((sample_ids.len(), c, h, w));
    for (mut row, &id) in batch.outer_iter_mut().zip(sample_ids) {
        row.assign(&noise(seed, id, shape));
    }
    batch
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

/// A denoiser that runs the whole sampling loop — model calls, guidance and the solver's
/// updates — on its device, so that only the final images come back to the host. Its
/// model's own mask-0 rows are the unconditional guide.
pub trait DeviceDenoiser {
    /// The backend's name, for messages.
    fn backend(&self) -> &'static str;

    /// Samples like [`sample_watched`] (which checked the arguments): row k of `noise`
    /// conditioned on row k of `condition`; returns the images in model space.
    fn sample<'a>(
        &'a mut self,
        sigmas: &'a [f64],
        solver: Solver,
        guidance: Guidance,
        condition: ArrayView2<'a, f32>,
        noise: ArrayView4<'a, f32>,
        on_step: &'a mut dyn FnMut(usize, usize),
    ) -> Pin<Box<dyn Future<Output = Result<Array4<f32>, String>> + 'a>>;
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
        let [c, h, w] = self.image;
        if x.shape()[1..] != [c, h, w] {
            return Err(SampleError::Shape(format!(
                "images have shape {:?}, the denoiser takes [n, {c}, {h}, {w}]",
                x.shape()
            )));
        }
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
    if sigmas.len() < 2 || sigmas.last() != Some(&0.0) {
        return Err(SampleError::Schedule(
            "a schedule needs at least two noise levels, the last 0".into(),
        ));
    }
    let n = noise.len_of(Axis(0));
    if n != condition.len_of(Axis(0)) {
        return Err(SampleError::Shape(format!(
            "{n} noise rows but {} conditions",
            condition.len_of(Axis(0))
        )));
    }
    let [c, h, w] = denoiser.image;
    if noise.shape()[1..] != [c, h, w] {
        return Err(SampleError::Shape(format!(
            "noise has shape {:?}, the denoiser takes [n, {c}, {h}, {w}]",
            noise.shape()
        )));
    }
    denoiser.check_condition(condition, n)?;
    let Runner::Device { file, device } = &mut denoiser.runner else {
        let x = noise.to_owned();
        let mut field = HostField { denoiser, condition, guidance };
        return solve(&mut field, x, sigmas, solver, on_step).await;
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

/// What a solver needs from where it runs: guided denoising and linear combinations of
/// images (on the host: arrays; on a device: its buffers).
pub(crate) trait Field {
    /// A batch of images `[n, C, H, W]`.
    type Images;
    /// The guided denoiser output `D(x; σ)` of every row.
    async fn denoise(&mut self, x: &Self::Images, sigma: f32) -> Result<Self::Images, SampleError>;
    /// `Σ weight·images` over `terms` (one to three).
    fn combine(&mut self, terms: &[(f32, &Self::Images)]) -> Result<Self::Images, SampleError>;
    /// Waits until the work of the step so far is done.
    async fn settle(&mut self) -> Result<(), SampleError>;
}

/// Runs `solver` on `field` from `noise` (see [`sample`] for the updates).
pub(crate) async fn solve<F: Field>(
    field: &mut F,
    noise: F::Images,
    sigmas: &[f64],
    solver: Solver,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<F::Images, SampleError> {
    let mut x = field.combine(&[(sigmas[0] as f32, &noise)])?;
    drop(noise);
    let total = sigmas.len() - 1;
    // DPM-Solver++(2M)'s memory: the previous step's denoised image and its h.
    let mut previous: Option<(F::Images, f64)> = None;
    for (step, pair) in sigmas.windows(2).enumerate() {
        let (t, t_next) = (pair[0], pair[1]);
        x = match solver {
            Solver::Heun => {
                let (t32, t_next32) = (t as f32, t_next as f32);
                let h = t_next32 - t32;
                let d = derivative(field, &x, t32).await?;
                let euler = field.combine(&[(1.0, &x), (h, &d)])?;
                if t_next > 0.0 {
                    let d_next = derivative(field, &euler, t_next32).await?;
                    field.combine(&[(1.0, &x), (0.5 * h, &d), (0.5 * h, &d_next)])?
                } else {
                    euler
                }
            }
            Solver::DpmPp2M => {
                let denoised = field.denoise(&x, t as f32).await?;
                let h = (t / t_next).ln();
                let ratio = (t_next / t) as f32;
                let next = match &previous {
                    Some((old, h_last)) if t_next > 0.0 => {
                        let half_r = 0.5 * h / h_last;
                        let (a, b) = ((1.0 + half_r) as f32, half_r as f32);
                        field.combine(&[
                            (ratio, &x),
                            ((1.0 - ratio) * a, &denoised),
                            (-(1.0 - ratio) * b, old),
                        ])?
                    }
                    _ => field.combine(&[(ratio, &x), (1.0 - ratio, &denoised)])?,
                };
                previous = Some((denoised, h));
                next
            }
        };
        field.settle().await?;
        on_step(step + 1, total);
    }
    Ok(x)
}

/// `(x − D(x; σ))/σ`.
async fn derivative<F: Field>(
    field: &mut F,
    x: &F::Images,
    sigma: f32,
) -> Result<F::Images, SampleError> {
    let denoised = field.denoise(x, sigma).await?;
    field.combine(&[(1.0 / sigma, x), (-1.0 / sigma, &denoised)])
}

/// The host's field: model calls through [`Denoiser::denoise`], arithmetic on arrays.
struct HostField<'a, 'c> {
    denoiser: &'a mut Denoiser,
    condition: ArrayView2<'c, f32>,
    guidance: Guidance,
}

impl Field for HostField<'_, '_> {
    type Images = Array4<f32>;

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
