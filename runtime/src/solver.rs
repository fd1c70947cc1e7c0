//! The parts of sampling that every device shares, free of any backend: the noise schedule
//! ([`karras_sigmas`]), the per-sample noise ([`noise`]), guidance ([`Guidance`]), and the
//! solvers' update rules written once ([`solve`]) over a [`Field`]: the host's arrays
//! (`sampler`) or a device's buffers (the WebGPU backend), which may also run the whole loop
//! itself ([`DeviceDenoiser`]). The solvers themselves are named by the schema's
//! [`Solver`](crate::bundle::Solver).

use std::future::Future;
use std::pin::Pin;

use ndarray::{Array3, Array4, ArrayView2, ArrayView4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

use crate::bundle::Solver;

/// A noise schedule that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid noise schedule: {0}")]
pub struct ScheduleError(pub String);

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
    pub fn interval_problem(interval: [f64; 2]) -> Option<String> {
        crate::bundle::limits::interval_problem(interval)
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
) -> Result<Vec<f64>, ScheduleError> {
    if steps == 0 {
        return Err(ScheduleError("at least one step is needed".into()));
    }
    if !(sigma_min > 0.0
        && sigma_max > sigma_min
        && sigma_max.is_finite()
        && rho > 0.0
        && rho.is_finite())
    {
        return Err(ScheduleError(format!(
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

/// A denoiser that runs the whole sampling loop — model calls, guidance and the solver's
/// updates — on its device, so that only the final images come back to the host. Its
/// model's own mask-0 rows are the unconditional guide.
pub trait DeviceDenoiser {
    /// The backend's name, for messages.
    fn backend(&self) -> &'static str;

    /// Samples like [`crate::sampler::sample_watched`] (which checked the arguments): row k of `noise`
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

/// What a solver needs from where it runs: guided denoising and linear combinations of
/// images (on the host: arrays; on a device: its buffers).
pub(crate) trait Field {
    /// A batch of images `[n, C, H, W]`.
    type Images;
    /// Why a step failed (a model call on the host; a GPU submission on a device).
    type Error;
    /// The guided denoiser output `D(x; σ)` of every row.
    async fn denoise(&mut self, x: &Self::Images, sigma: f32) -> Result<Self::Images, Self::Error>;
    /// `Σ weight·images` over `terms` (one to three).
    fn combine(&mut self, terms: &[(f32, &Self::Images)]) -> Result<Self::Images, Self::Error>;
    /// Waits until the work of the step so far is done.
    async fn settle(&mut self) -> Result<(), Self::Error>;
}

/// Runs `solver` on `field` from `noise` (see [`crate::sampler::sample`] for the updates),
/// calling `after_step(done, total, x)` with the state after each step.
pub(crate) async fn solve<F: Field>(
    field: &mut F,
    noise: F::Images,
    sigmas: &[f64],
    solver: Solver,
    after_step: &mut dyn FnMut(usize, usize, &F::Images),
) -> Result<F::Images, F::Error> {
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
            Solver::Distilled => {
                let denoised = field.denoise(&x, t as f32).await?;
                let ratio = (t_next / t) as f32;
                field.combine(&[(ratio, &x), (1.0 - ratio, &denoised)])?
            }
        };
        field.settle().await?;
        after_step(step + 1, total, &x);
    }
    Ok(x)
}

/// `(x − D(x; σ))/σ`.
async fn derivative<F: Field>(
    field: &mut F,
    x: &F::Images,
    sigma: f32,
) -> Result<F::Images, F::Error> {
    let denoised = field.denoise(x, sigma).await?;
    field.combine(&[(1.0 / sigma, x), (-1.0 / sigma, &denoised)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors of docs/bundle.md ("Initial noise"): the first 8 values of a sample's
    /// noise as float32 bit patterns, which `tests/conformance/noise.py` reproduces as well.
    #[test]
    fn the_noise_generator_matches_its_documented_test_vectors() {
        let vectors: [(u64, u64, [u32; 8]); 4] = [
            (
                0,
                0,
                [
                    0x3e50638e, 0xbfb0c35c, 0xbf620ea4, 0x3f33f4c4, 0x3dbb9377, 0xbf6835b7,
                    0xbfa7c30f, 0x3d5bcd17,
                ],
            ),
            (
                0,
                1,
                [
                    0xbf195f45, 0xbe999db9, 0xbe8aca9f, 0x3f9df3c1, 0xbf5ed48d, 0xbf73ba2b,
                    0xbec0e176, 0xbf5e6e9a,
                ],
            ),
            (
                1234,
                7,
                [
                    0x3fe974e5, 0xbe77312c, 0x3e32abb1, 0xbfc25de8, 0x3d1aa8db, 0x3e6c66ab,
                    0xbfb97d4d, 0xbe36fc39,
                ],
            ),
            (
                u64::MAX,
                123_456_789,
                [
                    0xbedef66c, 0x3f427dcd, 0x3f4230ab, 0xbfdc8afe, 0x3e93dbd9, 0xbf24591b,
                    0x3fcb660a, 0x3fac4187,
                ],
            ),
        ];
        for (seed, id, expected) in vectors {
            // Row-major fill: the first 8 values are the same whatever the shape.
            for shape in [[1, 1, 8], [3, 5, 7]] {
                let got: Vec<u32> =
                    noise(seed, id, shape).iter().take(8).map(|v| v.to_bits()).collect();
                assert_eq!(got, expected, "seed {seed}, id {id}, shape {shape:?}");
            }
        }
        let batch = noise_batch(0, &[1, 0], [1, 1, 8]);
        assert_eq!(batch[[1, 0, 0, 0]].to_bits(), 0x3e50638e, "rows follow the ids given");
    }
}
