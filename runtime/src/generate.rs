//! Generation, backend-agnostic and free of I/O: pseudo-conditions from reference images, the
//! guided Heun sampler from per-sample seeds, and 8-bit pixels. The CLI and the web page wrap
//! this with their own input and output.
//!
//! A synthetic image is identified by a [`SampleId`]: the reference image it is conditioned on
//! and its number among that reference's candidates. Its noise depends only on the seed and
//! that id, so it is the same whatever batch, shard or backend order produces it.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array2, Array4, ArrayView2, ArrayView3, ArrayView4};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, Model, chain};
use crate::bundle::{Bundle, BundleDir, Normalization, Role, SamplerSpec};
use crate::sampler::{self, Denoiser, Guidance, SampleError, Solver, karras_sigmas};

/// The settings that decide every generated pixel (besides the bundle, the reference images
/// and the backend).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Seed of the initial noise.
    pub seed: u64,
    /// The ODE solver.
    pub solver: Solver,
    /// Solver steps.
    pub steps: usize,
    /// Smallest nonzero noise level.
    pub sigma_min: f64,
    /// Largest noise level.
    pub sigma_max: f64,
    /// Schedule exponent.
    pub rho: f64,
    /// Guidance weight w of the first round.
    pub guidance: f32,
    /// The noise levels `[lo, hi]` guided (`lo < σ ≤ hi`); `None`: all.
    #[serde(default)]
    pub guidance_interval: Option<[f64; 2]>,
    /// How much w drops from one round to the next.
    pub guidance_decrement: f32,
    /// Candidates drawn per reference image and round.
    pub candidates: usize,
    /// Rounds at most per reference image.
    pub rounds: usize,
}

/// What a caller changes of a bundle's sampler defaults (the command line's flags, the page's
/// choices); `None` keeps the bundle's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// The ODE solver.
    pub solver: Option<Solver>,
    /// Solver steps.
    pub steps: Option<usize>,
    /// Guidance weight w of the first round.
    pub guidance: Option<f32>,
    /// The guided noise levels `[lo, hi]`.
    pub guidance_interval: Option<[f64; 2]>,
    /// Candidates per reference image and round.
    pub candidates: Option<usize>,
    /// Rounds at most per reference image.
    pub rounds: Option<usize>,
}

impl Settings {
    /// The bundle's sampler defaults with `seed`, changed by `overrides`, then
    /// [validated](Settings::validate) (`flag` names a setting in the error).
    pub fn resolve(
        sampler: &SamplerSpec,
        seed: u64,
        overrides: &Overrides,
        flag: impl Fn(&str) -> String,
    ) -> Result<Settings, String> {
        let mut s = Settings::teacher(sampler, seed);
        s.solver = overrides.solver.unwrap_or(s.solver);
        if s.solver == Solver::Distilled {
            let Some(distilled) = sampler.distilled else {
                return Err(format!(
                    "{} distilled: this bundle has no distilled student (models.student)",
                    flag("solver")
                ));
            };
            if let Some(setting) = [
                overrides.guidance.map(|_| "guidance"),
                overrides.guidance_interval.map(|_| "guidance-interval"),
            ]
            .into_iter()
            .flatten()
            .next()
            {
                return Err(format!(
                    "{} does not apply to the distilled solver: its student learnt the teacher's guidance",
                    flag(setting)
                ));
            }
            s = s.distilled(distilled.steps);
        }
        s.steps = overrides.steps.unwrap_or(s.steps);
        s.guidance = overrides.guidance.unwrap_or(s.guidance);
        s.guidance_interval = overrides.guidance_interval.or(s.guidance_interval);
        s.candidates = overrides.candidates.unwrap_or(s.candidates);
        s.rounds = overrides.rounds.unwrap_or(s.rounds);
        s.validate(flag)?;
        Ok(s)
    }

    /// The bundle's sampler defaults with `seed`: with the `distilled` solver, its student's
    /// steps, unguided.
    pub fn from_bundle(sampler: &SamplerSpec, seed: u64) -> Settings {
        let s = Settings::teacher(sampler, seed);
        match (s.solver, sampler.distilled) {
            (Solver::Distilled, Some(distilled)) => s.distilled(distilled.steps),
            _ => s,
        }
    }

    /// `sampler` as it is written: the teacher's steps and guidance whatever the solver.
    fn teacher(sampler: &SamplerSpec, seed: u64) -> Settings {
        Settings {
            seed,
            solver: sampler.solver,
            steps: sampler.steps,
            sigma_min: sampler.sigma_min,
            sigma_max: sampler.sigma_max,
            rho: sampler.rho,
            guidance: sampler.guidance,
            guidance_interval: sampler.guidance_interval,
            guidance_decrement: sampler.guidance_decrement,
            candidates: sampler.candidates_per_image,
            rounds: sampler.max_rounds,
        }
    }

    /// These settings for the distilled student: `steps` steps, no guidance in any round (the
    /// student learnt the teacher's).
    fn distilled(self, steps: usize) -> Settings {
        Settings {
            solver: Solver::Distilled,
            steps,
            guidance: 1.0,
            guidance_interval: None,
            guidance_decrement: 0.0,
            ..self
        }
    }

    /// Checks every setting against [`limits`](crate::bundle::limits) (the bundle's were
    /// checked when it was read; a caller's overrides are checked here). The error names the
    /// setting as `flag` maps it (e.g. `candidates` → `--candidates`) and the bound.
    pub fn validate(&self, flag: impl Fn(&str) -> String) -> Result<(), String> {
        use crate::bundle::limits::{self, count_problem, weight_problem};
        let problem = count_problem(self.steps, &limits::STEPS)
            .map(|p| ("steps", p))
            .or_else(|| count_problem(self.candidates, &limits::CANDIDATES).map(|p| ("candidates", p)))
            .or_else(|| count_problem(self.rounds, &limits::ROUNDS).map(|p| ("rounds", p)))
            .or_else(|| weight_problem(self.guidance, &limits::GUIDANCE).map(|p| ("guidance", p)))
            .or_else(|| {
                self.guidance_interval
                    .and_then(Guidance::interval_problem)
                    .map(|p| ("guidance-interval", p))
            })
            .or_else(|| {
                let last = self.guidance_in_round(self.rounds - 1);
                (last < 0.0).then(|| {
                    (
                        "rounds",
                        format!(
                            "is {}: the guidance {} lowered by {} per round would be {last} in the last round; use fewer rounds or a higher guidance",
                            self.rounds, self.guidance, self.guidance_decrement
                        ),
                    )
                })
            });
        match problem {
            Some((setting, problem)) => Err(format!("{} {problem}", flag(setting))),
            None => Ok(()),
        }
    }

    /// Noise streams per reference image: every candidate of every round has its own.
    pub fn streams(&self) -> usize {
        self.candidates * self.rounds
    }

    /// The guidance weight of round `round` (0-based): `guidance − round · decrement`.
    pub fn guidance_in_round(&self, round: usize) -> f32 {
        self.guidance - round as f32 * self.guidance_decrement
    }

    /// The guidance of round `round`: its weight, in the guided interval.
    pub fn guidance_of_round(&self, round: usize) -> Guidance {
        Guidance { weight: self.guidance_in_round(round), interval: self.guidance_interval }
    }

    /// The samples of reference `reference` in round `round`.
    pub fn round_samples(&self, reference: usize, round: usize) -> impl Iterator<Item = SampleId> {
        let first = round * self.candidates;
        (first..first + self.candidates).map(move |candidate| SampleId { reference, candidate })
    }
}

/// Shard `index` of `count` (written `index/count`, 0-based): it handles the reference images
/// whose position modulo `count` is `index`, so `count` shards together cover every reference
/// image exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard's number, below `count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// The whole reference set in one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether this shard handles reference image `reference`.
    pub fn owns(&self, reference: usize) -> bool {
        reference % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let usage = || format!("shard {s:?} is not i/n with 0 ≤ i < n (e.g. 0/4)");
        let (i, n) = s.split_once('/').ok_or_else(usage)?;
        let (index, count) =
            (i.trim().parse().map_err(|_| usage())?, n.trim().parse().map_err(|_| usage())?);
        if count == 0 || index >= count {
            return Err(usage());
        }
        Ok(Shard { index, count })
    }
}

/// One synthetic image: candidate `candidate` of reference image `reference` (candidates are
/// numbered across rounds: round t holds `t·candidates ..(t + 1)·candidates`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SampleId {
    /// Position of the conditioning image in the reference set.
    pub reference: usize,
    /// Number among that image's candidates, below [`Settings::streams`].
    pub candidate: usize,
}

impl SampleId {
    /// The noise stream of this sample: `reference · streams + candidate`.
    pub fn noise_id(&self, streams: usize) -> u64 {
        (self.reference * streams + self.candidate) as u64
    }
}

/// The reference images of `shard` in a set of `references`, in order.
pub fn shard_references(references: usize, shard: Shard) -> Vec<usize> {
    (0..references).filter(|&r| shard.owns(r)).collect()
}

/// The pixels of one `[C, H, W]` image with channels interleaved (HWC), as PNG stores them.
pub fn interleaved(image: ArrayView3<u8>) -> Vec<u8> {
    image.permuted_axes([1, 2, 0]).iter().copied().collect()
}

/// The denoiser (and guide), the features model and the settings, ready to generate.
#[derive(Debug)]
pub struct Generator {
    denoiser: Denoiser,
    features: Model,
    normalization: Normalization,
    sigmas: Vec<f64>,
    settings: Settings,
}

impl Generator {
    /// Checks that the models fit `bundle` and each other and computes the noise schedule.
    pub fn new(
        bundle: &Bundle,
        denoiser: Denoiser,
        features: Model,
        settings: Settings,
    ) -> Result<Generator, SampleError> {
        let image = [bundle.image.channels, bundle.image.height, bundle.image.width];
        if denoiser.image_shape() != image {
            return Err(SampleError::Shape(format!(
                "the denoiser makes images {:?}, the bundle's images are {image:?}",
                denoiser.image_shape()
            )));
        }
        let mut generator = Generator {
            denoiser,
            features,
            normalization: bundle.image.normalization.clone(),
            sigmas: Vec::new(),
            settings: settings.clone(),
        };
        generator.configure(settings)?;
        Ok(generator)
    }

    /// Replaces the settings (the models stay loaded).
    pub fn configure(&mut self, settings: Settings) -> Result<(), SampleError> {
        if settings.candidates == 0 || settings.rounds == 0 {
            return Err(SampleError::Shape(
                "at least one candidate and one round per reference image are needed".into(),
            ));
        }
        if settings.solver.roles() != self.settings.solver.roles() {
            return Err(SampleError::Settings(format!(
                "the {} solver runs another model than the {} solver loaded: load the generator again",
                settings.solver, self.settings.solver
            )));
        }
        self.sigmas =
            karras_sigmas(settings.steps, settings.sigma_min, settings.sigma_max, settings.rho)?;
        self.settings = settings;
        Ok(())
    }

    /// Loads the bundle's denoiser, its guide (only when `guide` names another file than the
    /// denoiser; otherwise mask 0 of the denoiser is the guide) and its features model on
    /// `backend`.
    pub fn load(
        loaded: &BundleDir,
        backend: &dyn Backend,
        settings: Settings,
    ) -> Result<Generator, SampleError> {
        Generator::load_on(loaded, backend, backend, settings)
    }

    /// [`Generator::load`] with the denoiser (and guide) on `sampler` and the features model
    /// on `backend`. When `sampler` runs whole sampling loops on its device and the denoiser is
    /// its own guide, the loop runs there.
    pub fn load_on(
        loaded: &BundleDir,
        backend: &dyn Backend,
        sampler: &dyn Backend,
        settings: Settings,
    ) -> Result<Generator, SampleError> {
        let bundle = &loaded.bundle;
        let load = |role: Role, on: &dyn Backend| -> Result<Model, SampleError> {
            Ok(Model::load(on, bundle.model(role)?, loaded.onnx(role)?)?)
        };
        let role = settings.solver.roles()[0];
        let spec = bundle.model(role)?;
        let guide = match bundle.models.get(&Role::Guide) {
            Some(g) if settings.solver.roles().contains(&Role::Guide) && g.file != spec.file => {
                Some(load(Role::Guide, sampler)?)
            }
            _ => None,
        };
        let device = match guide {
            Some(_) => None,
            None => sampler.device_denoiser(loaded.onnx(role)?, spec).map_err(|e| {
                BackendError::Load {
                    file: spec.file.clone(),
                    backend: sampler.name(),
                    reason: chain(e.as_ref()),
                }
            })?,
        };
        let denoiser = match device {
            Some(device) => Denoiser::on_device(spec, device)?,
            None => Denoiser::new(load(role, sampler)?, guide)?,
        };
        Generator::new(bundle, denoiser, load(Role::Features, backend)?, settings)
    }

    /// Whether the sampling loop runs on the backend's device (only the images come back).
    pub fn samples_on_device(&self) -> bool {
        self.denoiser.on_a_device()
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The pseudo-conditions of reference images (`[n, C, H, W]` pixels): the `features`
    /// output of the features model on the normalised images.
    pub fn conditions(&mut self, pixels: ArrayView4<u8>) -> Result<Array2<f32>, SampleError> {
        let x = pixels.mapv(|p| self.normalization.normalize(p));
        let mut out = self.features.run(&[("image", x.view().into_dyn())])?;
        let file = self.features.spec().file.clone();
        let features = out.remove("features").ok_or_else(|| SampleError::Interface {
            file: file.clone(),
            problem: "it has no output `features`".into(),
        })?;
        let features: Array2<f32> =
            features.into_dimensionality().map_err(|e| SampleError::Interface {
                file: file.clone(),
                problem: format!("`features` is not 2-D: {e}"),
            })?;
        if features.ncols() != self.denoiser.condition_size() {
            return Err(SampleError::Interface {
                file,
                problem: format!(
                    "`features` has {} values per image, the denoiser takes {}",
                    features.ncols(),
                    self.denoiser.condition_size()
                ),
            });
        }
        Ok(features)
    }

    /// The images of `samples` (row k conditioned on row k of `conditions`) as 8-bit pixels
    /// `[n, C, H, W]`. All samples must belong to one round, whose guidance weight they are
    /// drawn with.
    pub fn generate(
        &mut self,
        samples: &[SampleId],
        conditions: ArrayView2<f32>,
    ) -> Result<Array4<u8>, SampleError> {
        self.generate_watched(samples, conditions, &mut |_, _| {})
    }

    /// [`Generator::generate`], calling `on_step(done, total)` after each denoising step.
    pub fn generate_watched(
        &mut self,
        samples: &[SampleId],
        conditions: ArrayView2<f32>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Array4<u8>, SampleError> {
        pollster::block_on(self.generate_async(samples, conditions, on_step))
    }

    /// [`Generator::generate_watched`] as a future (a browser waits for its GPU only through
    /// futures).
    pub async fn generate_async(
        &mut self,
        samples: &[SampleId],
        conditions: ArrayView2<'_, f32>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Array4<u8>, SampleError> {
        let images = self.model_space(samples, conditions, on_step).await?;
        Ok(self.to_pixels(images.view()))
    }

    /// Like [`Generator::generate`], in model space (`[n, C, H, W]`, normalised).
    pub fn generate_model_space(
        &mut self,
        samples: &[SampleId],
        conditions: ArrayView2<f32>,
    ) -> Result<Array4<f32>, SampleError> {
        pollster::block_on(self.model_space(samples, conditions, &mut |_, _| {}))
    }

    async fn model_space(
        &mut self,
        samples: &[SampleId],
        conditions: ArrayView2<'_, f32>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Array4<f32>, SampleError> {
        let round = self.round_of(samples)?;
        let noise = self.noise(samples);
        self.draw_async(round, noise.view(), conditions, on_step).await
    }

    /// The round all of `samples` belong to; an error when they span rounds or lie beyond the
    /// last.
    pub fn round_of(&self, samples: &[SampleId]) -> Result<usize, SampleError> {
        let s = &self.settings;
        let round = samples.first().map_or(0, |id| id.candidate / s.candidates);
        match samples
            .iter()
            .find(|id| id.candidate / s.candidates != round || id.candidate >= s.streams())
        {
            Some(id) => Err(SampleError::Shape(format!(
                "sample {id:?} is not in round {round} of {} rounds of {} candidates: one call draws one round",
                s.rounds, s.candidates
            ))),
            None => Ok(round),
        }
    }

    /// The initial noise of `samples` (`[n, C, H, W]`, standard normal): stream
    /// [`SampleId::noise_id`] under the settings' seed.
    pub fn noise(&self, samples: &[SampleId]) -> Array4<f32> {
        let s = &self.settings;
        let ids: Vec<u64> = samples.iter().map(|id| id.noise_id(s.streams())).collect();
        sampler::noise_batch(s.seed, &ids, self.denoiser.image_shape())
    }

    /// Draws from explicit `noise` (`[n, C, H, W]`, standard normal) with round `round`'s
    /// guidance, row k conditioned on row k of `conditions`; the images in model space. With
    /// the noise of [`Generator::noise`] it is [`Generator::generate_model_space`]; other noise
    /// (a partner's, from a file) checks an implementation against this one.
    pub fn draw(
        &mut self,
        round: usize,
        noise: ArrayView4<f32>,
        conditions: ArrayView2<f32>,
    ) -> Result<Array4<f32>, SampleError> {
        pollster::block_on(self.draw_async(round, noise, conditions, &mut |_, _| {}))
    }

    async fn draw_async(
        &mut self,
        round: usize,
        noise: ArrayView4<'_, f32>,
        conditions: ArrayView2<'_, f32>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Array4<f32>, SampleError> {
        let s = &self.settings;
        if round >= s.rounds {
            return Err(SampleError::Shape(format!(
                "round {round} does not exist: the settings have {} rounds (0-based)",
                s.rounds
            )));
        }
        sampler::sample_async(
            &mut self.denoiser,
            &self.sigmas,
            s.solver,
            s.guidance_of_round(round),
            conditions,
            noise,
            on_step,
        )
        .await
    }

    /// Maps images in model space to 8-bit pixels with the bundle's normalisation.
    pub fn to_pixels(&self, images: ArrayView4<f32>) -> Array4<u8> {
        images.mapv(|v| self.normalization.to_pixel(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_the_references() {
        assert_eq!("1/3".parse::<Shard>().unwrap(), Shard { index: 1, count: 3 });
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let all = shard_references(7, Shard::ALL);
        let mut joined: Vec<usize> =
            (0..3).flat_map(|i| shard_references(7, Shard { index: i, count: 3 })).collect();
        joined.sort();
        assert_eq!(joined, all);
        assert_eq!(all.len(), 7);
        assert_eq!(SampleId { reference: 1, candidate: 1 }.noise_id(2), 3);
    }

    #[test]
    fn rounds_number_their_candidates_and_lower_the_guidance() {
        let s = Settings {
            seed: 0,
            solver: Solver::Heun,
            steps: 4,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            guidance: 1.4,
            guidance_interval: None,
            guidance_decrement: 0.1,
            candidates: 3,
            rounds: 2,
        };
        let second: Vec<usize> = s.round_samples(5, 1).map(|id| id.candidate).collect();
        assert_eq!(second, vec![3, 4, 5]);
        assert_eq!(s.streams(), 6);
        assert!((s.guidance_in_round(1) - 1.3).abs() < 1e-6);
    }
}
