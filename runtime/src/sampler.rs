//! The samplers: EDM's Heun method (Karras et al. 2022, Algorithm 1 with S_churn = 0) and
//! DPM-Solver++(2M) (Lu et al. 2022), both with guidance; [`Solver`] picks one.
//!
//! - Schedule: [`karras_sigmas`], σ_0 = σ_max … σ_{N−1} = σ_min, then σ_N = 0.
//! - Guidance: `D = D_u + w·(D_c − D_u)`; conditional and unconditional rows go through one
//!   batched call (`condition_mask` 1 and 0) unless the bundle has a separate guide model.
//! - Seeds: the initial noise of a sample depends only on (seed, sample id) ([`noise`]), so a
//!   sample is the same whatever batch, shard or order it is drawn in. The noise can also be
//!   passed in directly ([`sample`] takes it), e.g. to compare with another implementation.
//!
//! Arithmetic is float32, with the σ values computed in float64 and rounded to float32.

use std::fmt;
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

/// The Karras et al. noise levels for `steps` Heun steps:
/// `σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ` for `i < N` (σ_0 = σ_max when
/// N = 1), followed by `σ_N = 0`; `steps + 1` values in all.
pub fn karras_sigmas(steps: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Result<Vec<f64>, SampleError> {
    if steps == 0 {
        return Err(SampleError::Schedule("at least one step is needed".into()));
    }
    if !(sigma_min > 0.0 && sigma_max > sigma_min && sigma_max.is_finite() && rho > 0.0 && rho.is_finite()) {
        return Err(SampleError::Schedule(format!(
            "need 0 < sigma_min < sigma_max and rho > 0 (finite), got sigma_min {sigma_min}, sigma_max {sigma_max}, rho {rho}"
        )));
    }
    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    let last = (steps - 1).max(1) as f64;
    let mut sigmas: Vec<f64> = (0..steps).map(|i| (hi + i as f64 / last * (lo - hi)).powf(rho)).collect();
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

/// A denoiser `D(x; σ, c)` and, optionally, a separate unconditional guide model.
///
/// Both have the denoiser interface: inputs `x` `[batch, C, H, W]`, `sigma` `[batch]`,
/// `condition` `[batch, D]`, `condition_mask` `[batch]`; output `denoised` `[batch, C, H, W]`.
/// Unconditional rows get a zero condition and mask 0.
#[derive(Debug)]
pub struct Denoiser {
    model: Model,
    guide: Option<Model>,
    image: [usize; 3],
    condition: usize,
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
        Ok(Denoiser { model, guide, image, condition })
    }

    /// The image shape `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image
    }

    /// The condition size D.
    pub fn condition_size(&self) -> usize {
        self.condition
    }

    /// The guided denoiser output `D_u + w·(D_c − D_u)` for every row of `x` at noise level
    /// `sigma`, row k conditioned on row k of `condition`.
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
            return Err(SampleError::Shape(format!("images have shape {:?}, the denoiser takes [n, {c}, {h}, {w}]", x.shape())));
        }
        if condition.dim() != (n, self.condition) {
            return Err(SampleError::Shape(format!(
                "conditions have shape {:?}, the denoiser takes [{n}, {}] for {n} images",
                condition.shape(),
                self.condition
            )));
        }
        let null = Array2::<f32>::zeros((n, self.condition));
        let (cond, uncond) = match &mut self.guide {
            None => {
                let both = run(
                    &mut self.model,
                    concatenate![Axis(0), x, x].view(),
                    sigma,
                    concatenate![Axis(0), condition, null].view(),
                    n,
                )?;
                (both.slice(s![..n, .., .., ..]).to_owned(), both.slice(s![n.., .., .., ..]).to_owned())
            }
            Some(guide) => {
                let cond = run(&mut self.model, x, sigma, condition, n)?;
                let uncond = run(guide, x, sigma, null.view(), 0)?;
                (cond, uncond)
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
            _ => Err(fail(format!("{kind} `{name}` does not have rank {rank} with a leading batch axis"))),
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
    let denoised = outputs
        .remove("denoised")
        .ok_or_else(|| SampleError::Interface { file: file.clone(), problem: "it returned no `denoised`".into() })?;
    denoised
        .into_dimensionality()
        .map_err(|e| SampleError::Interface { file: file.clone(), problem: format!("`denoised` is not 4-D: {e}") })
}

/// Runs `solver` from `noise` (standard normal, `[n, C, H, W]`; the start is
/// `x_0 = σ_0·noise`) through `sigmas` (from [`karras_sigmas`]), conditioning row k on row k
/// of `condition` with guidance weight `guidance`. Returns the images in model space
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
    guidance: f32,
    condition: ArrayView2<f32>,
    noise: ArrayView4<f32>,
) -> Result<Array4<f32>, SampleError> {
    sample_watched(denoiser, sigmas, solver, guidance, condition, noise, &mut |_, _| {})
}

/// [`sample`], calling `on_step(done, total)` after each of the `total = sigmas.len() − 1`
/// steps (progress for a user interface).
pub fn sample_watched(
    denoiser: &mut Denoiser,
    sigmas: &[f64],
    solver: Solver,
    guidance: f32,
    condition: ArrayView2<f32>,
    noise: ArrayView4<f32>,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Array4<f32>, SampleError> {
    if sigmas.len() < 2 || sigmas.last() != Some(&0.0) {
        return Err(SampleError::Schedule("a schedule needs at least two noise levels, the last 0".into()));
    }
    if noise.len_of(Axis(0)) != condition.len_of(Axis(0)) {
        return Err(SampleError::Shape(format!(
            "{} noise rows but {} conditions",
            noise.len_of(Axis(0)),
            condition.len_of(Axis(0))
        )));
    }
    let mut x = noise.mapv(|v| v * sigmas[0] as f32);
    let total = sigmas.len() - 1;
    // DPM-Solver++(2M)'s memory: the previous step's denoised image and its h.
    let mut previous: Option<(Array4<f32>, f64)> = None;
    for (step, pair) in sigmas.windows(2).enumerate() {
        x = match solver {
            Solver::Heun => heun_step(denoiser, &x, pair[0], pair[1], condition, guidance)?,
            Solver::DpmPp2M => {
                let (t, t_next) = (pair[0], pair[1]);
                let denoised = denoiser.denoise(x.view(), t as f32, condition, guidance)?;
                let h = (t / t_next).ln();
                let target = match &previous {
                    Some((old, h_last)) if t_next > 0.0 => {
                        let half_r = 0.5 * h / h_last;
                        let (a, b) = ((1.0 + half_r) as f32, half_r as f32);
                        Zip::from(&denoised).and(old).map_collect(|&d, &o| a * d - b * o)
                    }
                    _ => denoised.clone(),
                };
                let ratio = (t_next / t) as f32;
                previous = Some((denoised, h));
                Zip::from(&x).and(&target).map_collect(|&x, &d| ratio * x + (1.0 - ratio) * d)
            }
        };
        on_step(step + 1, total);
    }
    Ok(x)
}

/// One Heun step from σ = `t` to σ' = `t_next`.
fn heun_step(
    denoiser: &mut Denoiser,
    x: &Array4<f32>,
    t: f64,
    t_next: f64,
    condition: ArrayView2<f32>,
    guidance: f32,
) -> Result<Array4<f32>, SampleError> {
    let (t32, t_next32) = (t as f32, t_next as f32);
    let h = t_next32 - t32;
    let d = derivative(denoiser, x, t32, condition, guidance)?;
    let euler = Zip::from(x).and(&d).map_collect(|&x, &d| x + h * d);
    if t_next > 0.0 {
        let d_next = derivative(denoiser, &euler, t_next32, condition, guidance)?;
        Ok(Zip::from(x).and(&d).and(&d_next).map_collect(|&x, &d, &d2| x + h * (0.5 * d + 0.5 * d2)))
    } else {
        Ok(euler)
    }
}

/// `(x − D(x; σ))/σ`.
fn derivative(
    denoiser: &mut Denoiser,
    x: &Array4<f32>,
    sigma: f32,
    condition: ArrayView2<f32>,
    guidance: f32,
) -> Result<Array4<f32>, SampleError> {
    let denoised = denoiser.denoise(x.view(), sigma, condition, guidance)?;
    Ok(Zip::from(x).and(&denoised).map_collect(|&x, &d| (x - d) / sigma))
}
