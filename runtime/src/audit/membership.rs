//! Membership inference against a bundle's models: what an attacker holding the weights learns
//! about whether a given record was in the training set. Members (training records) and
//! non-members (records of the same population no model saw) are scored by the same attacks,
//! and each attack is summarised by its ROC AUC, a bootstrap interval, and its true-positive
//! rate at low false-positive rates (the regime Carlini et al. 2022 argue matters).
//!
//! The attacks (a higher score means "more likely a member"):
//!
//! - **denoiser loss** (Matsumoto et al. 2023; the loss attack of Yeom et al. 2018 applied to a
//!   diffusion model): at each noise level σ, `−‖D(x + σn; σ, c) − x‖²` (mean over pixels), with
//!   `n` fixed per record and `c` the record's own features (the denoiser is pseudo-conditioned
//!   on exactly those). One attack per level and one for the sum over the levels.
//! - **denoiser calibrated**: the unconditional loss (mask 0, zero condition) minus the
//!   conditional one, per level and summed: a member's own features help its reconstruction
//!   more, and the unconditional loss calibrates away how hard the image is in itself (the
//!   reference-model idea of LiRA, Carlini et al. 2022, with the model's own unconditional
//!   branch as the reference).
//! - **denoiser SecMI** (Duan et al. 2023, "Are diffusion models vulnerable to membership
//!   inference attacks?"): the record is carried deterministically to noise level σ by the
//!   probability-flow ODE run backwards (DDIM inversion, Euler steps in σ, conditioned on its
//!   own features, no random noise), taken one step further and denoised one step back; the
//!   score is `−‖x̃_σ − x_σ‖²`. A member's trajectory is the one the model learnt to reverse,
//!   so its round trip returns closer to where it started.
//! - **classifier loss** (Yeom et al. 2018): `−cross-entropy` of the logits against the
//!   record's label (softmax, or the mean sigmoid BCE for multi-label bundles), and, when a
//!   reference split of non-evaluated holdout records is given, the same minus the mean of the
//!   record's class on the reference split (difficulty calibration per class).
//! - **re-id stability**: `−mean ‖e(x) − e(aug(x))‖` of the re-identification embedding over
//!   1-pixel shifts (zero-filled) and a horizontal flip: training images may sit in flatter,
//!   more stable regions of the embedding.
//!
//! Library code: models come loaded from a [`BundleDir`], records as arrays; no file I/O.

use ndarray::{Array1, Array2, Array4, ArrayView2, ArrayView4, Axis, Zip, concatenate, s};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::auroc::auroc;
use super::intervals::{Interval, percentile};
use crate::backend::{Backend, BackendError, Model};
use crate::bundle::{BundleDir, BundleError, Dim, ModelSpec, Normalization, Role};
use crate::sampler::noise_batch;

/// The denoiser attacks' default noise levels.
pub const DEFAULT_SIGMAS: [f32; 6] = [0.02, 0.1, 0.3, 1.0, 3.0, 10.0];

/// The SecMI attack's default noise levels: 0.3 is about DDPM step 100 of 1,000 (SecMI's best
/// on CIFAR-10), 1.0 a coarser one.
pub const DEFAULT_SECMI_SIGMAS: [f32; 2] = [0.3, 1.0];

/// SecMI's inversion: Euler steps from σ = 0 to the largest level, on a geometric grid of this
/// many levels from [`SECMI_SIGMA_START`] (the attack's levels added to it).
const SECMI_GRID: usize = 10;

/// The first nonzero level of SecMI's inversion grid.
const SECMI_SIGMA_START: f32 = 0.01;

/// The smallest noise level the denoiser is asked at (the inversion's first step starts at 0).
const SECMI_SIGMA_MIN: f32 = 0.002;

/// SecMI's round trip: from level σ one inversion step to `σ · SECMI_STEP` and one denoising
/// step back (SecMI's 10 of 1,000 DDPM steps near step 100).
const SECMI_STEP: f32 = 1.2;

/// Records per model call.
pub const DEFAULT_BATCH: usize = 64;

/// Most ROC points a report keeps per attack.
pub const ROC_POINTS: usize = 200;

/// Why an attack could not run.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A model call failed, or an output held NaN/Inf.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The bundle lacks a model or a model's bytes.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A model does not have the interface its role needs.
    #[error("{file}: {problem}")]
    Interface {
        /// The ONNX file.
        file: String,
        /// What is missing or different.
        problem: String,
    },
    /// The settings or the records are unusable (shapes, counts, noise levels).
    #[error("{0}")]
    Input(String),
}

/// How the attacks run.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The denoiser attacks' noise levels (each positive and finite).
    pub sigmas: Vec<f32>,
    /// The SecMI attack's noise levels (each positive and finite; empty: no SecMI attack).
    pub secmi_sigmas: Vec<f32>,
    /// Seed of the fixed per-record noise ([`crate::sampler::noise`] of record index k within
    /// its set), so members and non-members at the same index see the same noise.
    pub seed: u64,
    /// Records per model call (at least 1).
    pub batch: usize,
}

impl Config {
    /// Checks the settings: at least one noise level, every level (SecMI's too) positive and
    /// finite, a batch of at least 1.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let level = |s: &f32| s.is_finite() && *s > 0.0;
        if self.sigmas.is_empty() || !self.sigmas.iter().all(level) {
            return Err(MembershipError::Input(format!(
                "the noise levels must be positive and finite, at least one: {:?}",
                self.sigmas
            )));
        }
        if !self.secmi_sigmas.iter().all(level) {
            return Err(MembershipError::Input(format!(
                "SecMI's noise levels must be positive and finite: {:?}",
                self.secmi_sigmas
            )));
        }
        if self.batch == 0 {
            return Err(MembershipError::Input("the batch size must be at least 1".into()));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            sigmas: DEFAULT_SIGMAS.to_vec(),
            secmi_sigmas: DEFAULT_SECMI_SIGMAS.to_vec(),
            seed: 0,
            batch: DEFAULT_BATCH,
        }
    }
}

/// The scores of one set of records under every attack that could run.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    /// One entry per attack, in a fixed order.
    pub attacks: Vec<AttackScores>,
    /// Each record's class (the index of its label) for single-label bundles; `None` for
    /// multi-label ones.
    pub classes: Vec<Option<usize>>,
    /// The denoiser attacks' noise levels.
    pub sigmas: Vec<f32>,
    /// The SecMI attack's noise levels.
    pub secmi_sigmas: Vec<f32>,
    /// Attacks that could not run, and why.
    pub notes: Vec<String>,
}

/// One attack's scores of a set of records (higher: more likely a member).
#[derive(Clone, Debug, PartialEq)]
pub struct AttackScores {
    /// The attacked model's role (`denoiser`, `classifier`, `reid_embed`).
    pub model: String,
    /// The attack, e.g. `loss@0.1`, `calibrated_sum`, `loss`, `stability`.
    pub attack: String,
    /// One score per record.
    pub scores: Vec<f32>,
}

impl Scores {
    /// The scores of `model`'s attack `attack`.
    pub fn get(&self, model: &str, attack: &str) -> Option<&[f32]> {
        self.attacks
            .iter()
            .find(|a| a.model == model && a.attack == attack)
            .map(|a| a.scores.as_slice())
    }

    /// The classifier loss of these records calibrated per class on `reference` (the
    /// `calibrated_loss` attack, see [`evaluate`]); `None` without a classifier loss.
    pub fn calibrated_loss(&self, reference: &Scores) -> Option<Vec<f32>> {
        Some(calibrate_by_class(self.get("classifier", "loss")?, &self.classes, reference))
    }

    /// Number of records scored.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether no record was scored.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

/// The denoiser, its separate guide (when the bundle has one) and the features model that
/// makes its conditions.
#[derive(Debug)]
struct DenoiserModels {
    denoiser: Model,
    guide: Option<Model>,
    features: Model,
    condition: usize,
}

/// The bundle's attackable models, loaded, with the settings of the attacks.
#[derive(Debug)]
pub struct Attacks {
    denoiser: Option<DenoiserModels>,
    classifier: Option<Model>,
    reid: Option<Model>,
    normalization: Normalization,
    multi_label: bool,
    labels: usize,
    image: [usize; 3],
    config: Config,
    notes: Vec<String>,
}

impl Attacks {
    /// Loads every model of `loaded` an attack needs on `backend`: the denoiser (with its
    /// guide and features model), the classifier and the re-identification embedding. A role
    /// the bundle lacks leaves its attacks out (with a note in the scores).
    pub fn load(
        loaded: &BundleDir,
        backend: &dyn Backend,
        config: Config,
    ) -> Result<Attacks, MembershipError> {
        config.validate()?;
        let bundle = &loaded.bundle;
        let has = |role: Role| bundle.models.contains_key(&role);
        let load = |role: Role| -> Result<Model, MembershipError> {
            Ok(Model::load(backend, bundle.model(role)?, loaded.onnx(role)?)?)
        };
        let image = [bundle.image.channels, bundle.image.height, bundle.image.width];
        let mut notes = Vec::new();
        let denoiser = if has(Role::Denoiser) && has(Role::Features) {
            let spec = bundle.model(Role::Denoiser)?;
            let condition = condition_size(spec)?;
            let guide = match bundle.models.get(&Role::Guide) {
                Some(g) if g.file != spec.file => Some(load(Role::Guide)?),
                _ => None,
            };
            let features = load(Role::Features)?;
            Some(DenoiserModels { denoiser: load(Role::Denoiser)?, guide, features, condition })
        } else {
            notes.push("denoiser: the bundle has no denoiser with a features model".into());
            None
        };
        let classifier = if has(Role::Classifier) {
            Some(load(Role::Classifier)?)
        } else {
            notes.push("classifier: the bundle has no classifier".into());
            None
        };
        let reid = if has(Role::ReidEmbed) {
            Some(load(Role::ReidEmbed)?)
        } else {
            notes.push("reid_embed: the bundle has no re-identification model".into());
            None
        };
        Ok(Attacks {
            denoiser,
            classifier,
            reid,
            normalization: bundle.image.normalization.clone(),
            multi_label: bundle.labels.multi_label,
            labels: bundle.labels.count,
            image,
            config,
            notes,
        })
    }

    /// Scores every record of `pixels` (`[n, C, H, W]`, 8-bit) with `labels` (`[n, labels]`,
    /// one-hot or multi-hot) under every attack, calling `on_progress(done)` after each batch.
    /// Record k's noise is that of index k, whatever the batch.
    pub fn score(
        &mut self,
        pixels: ArrayView4<u8>,
        labels: ArrayView2<f32>,
        on_progress: &mut dyn FnMut(usize),
    ) -> Result<Scores, MembershipError> {
        let n = pixels.len_of(Axis(0));
        let [c, h, w] = self.image;
        if pixels.shape()[1..] != [c, h, w] {
            return Err(MembershipError::Input(format!(
                "images have shape {:?}, the bundle's are [n, {c}, {h}, {w}]",
                pixels.shape()
            )));
        }
        if labels.dim() != (n, self.labels) {
            return Err(MembershipError::Input(format!(
                "labels have shape {:?}, {n} images with the bundle's {} labels need [{n}, {}]",
                labels.shape(),
                self.labels,
                self.labels
            )));
        }
        let levels = self.config.sigmas.len();
        let mut errors = DenoiserErrors::default();
        let (mut classifier_loss, mut stability): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
        let mut done = 0;
        for start in (0..n).step_by(self.config.batch) {
            let end = (start + self.config.batch).min(n);
            let px = pixels.slice(s![start..end, .., .., ..]);
            let x = px.mapv(|p| self.normalization.normalize(p));
            if self.denoiser.is_some() {
                let ids: Vec<u64> = (start as u64..end as u64).collect();
                errors.extend(self.denoiser_errors(x.view(), &ids)?);
            }
            if let Some(model) = &mut self.classifier {
                let logits = output2(model, &[("image", x.view().into_dyn())], "logits")?;
                let y = labels.slice(s![start..end, ..]);
                classifier_loss.extend(cross_entropy(logits.view(), y, self.multi_label));
            }
            if let Some(model) = &mut self.reid {
                stability.extend(reid_stability(model, px, &self.normalization)?);
            }
            done = end;
            on_progress(done);
        }
        debug_assert_eq!(done, n);
        let mut attacks = Vec::new();
        let mut push = |model: &str, attack: String, scores: Vec<f32>| {
            attacks.push(AttackScores { model: model.into(), attack, scores });
        };
        if self.denoiser.is_some() {
            let DenoiserErrors { cond, uncond, secmi } = errors;
            let sum = |per_level: &dyn Fn(usize, usize) -> f64| -> Vec<f32> {
                (0..n).map(|i| (0..levels).map(|k| per_level(k, i)).sum::<f64>() as f32).collect()
            };
            for (k, sigma) in self.config.sigmas.iter().enumerate() {
                push("denoiser", format!("loss@{sigma}"), cond[k].iter().map(|&l| -l).collect());
            }
            push("denoiser", "loss_sum".into(), sum(&|k, i| -f64::from(cond[k][i])));
            for (k, sigma) in self.config.sigmas.iter().enumerate() {
                let calibrated = uncond[k].iter().zip(&cond[k]).map(|(u, c)| u - c).collect();
                push("denoiser", format!("calibrated@{sigma}"), calibrated);
            }
            push(
                "denoiser",
                "calibrated_sum".into(),
                sum(&|k, i| f64::from(uncond[k][i]) - f64::from(cond[k][i])),
            );
            for (sigma, errors) in self.config.secmi_sigmas.iter().zip(secmi) {
                push("denoiser", format!("secmi@{sigma}"), errors.iter().map(|&e| -e).collect());
            }
        }
        if self.classifier.is_some() {
            push("classifier", "loss".into(), classifier_loss.iter().map(|&l| -l).collect());
        }
        if self.reid.is_some() {
            push("reid_embed", "stability".into(), stability.iter().map(|&d| -d).collect());
        }
        let classes = (0..n)
            .map(|i| {
                (!self.multi_label).then(|| {
                    let row = labels.row(i);
                    (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best })
                })
            })
            .collect();
        Ok(Scores {
            attacks,
            classes,
            sigmas: self.config.sigmas.clone(),
            secmi_sigmas: self.config.secmi_sigmas.clone(),
            notes: self.notes.clone(),
        })
    }

    /// The denoiser's errors on `x` (normalised, `[b, C, H, W]`): the conditional and
    /// unconditional reconstruction errors at every level with the fixed noise of `ids`, and
    /// SecMI's round-trip errors.
    fn denoiser_errors(
        &mut self,
        x: ArrayView4<f32>,
        ids: &[u64],
    ) -> Result<DenoiserErrors, MembershipError> {
        let models = self.denoiser.as_mut().expect("called only with a denoiser");
        let b = x.len_of(Axis(0));
        let condition = output2(&mut models.features, &[("image", x.into_dyn())], "features")?;
        if condition.ncols() != models.condition {
            return Err(MembershipError::Interface {
                file: models.features.spec().file.clone(),
                problem: format!(
                    "`features` has {} values per image, the denoiser takes {}",
                    condition.ncols(),
                    models.condition
                ),
            });
        }
        let null = Array2::<f32>::zeros((b, models.condition));
        let noise = noise_batch(self.config.seed, ids, self.image);
        let mut errors = DenoiserErrors::default();
        for &sigma in &self.config.sigmas {
            let noisy = &x + &(&noise * sigma);
            let (d_cond, d_uncond) = match &mut models.guide {
                None => {
                    let both = denoise(
                        &mut models.denoiser,
                        concatenate![Axis(0), noisy, noisy].view(),
                        sigma,
                        concatenate![Axis(0), condition, null].view(),
                        b,
                    )?;
                    (
                        both.slice(s![..b, .., .., ..]).to_owned(),
                        both.slice(s![b.., .., .., ..]).to_owned(),
                    )
                }
                Some(guide) => (
                    denoise(&mut models.denoiser, noisy.view(), sigma, condition.view(), b)?,
                    denoise(guide, noisy.view(), sigma, null.view(), 0)?,
                ),
            };
            errors.cond.push(mean_squared_errors(d_cond.view(), x));
            errors.uncond.push(mean_squared_errors(d_uncond.view(), x));
        }
        errors.secmi =
            secmi_errors(&mut models.denoiser, x, condition.view(), &self.config.secmi_sigmas)?;
        Ok(errors)
    }
}

/// A batch's denoiser errors, `[level][row]`.
#[derive(Debug, Default)]
struct DenoiserErrors {
    cond: Vec<Vec<f32>>,
    uncond: Vec<Vec<f32>>,
    secmi: Vec<Vec<f32>>,
}

impl DenoiserErrors {
    /// Appends `batch`'s rows (the first batch sets the number of levels).
    fn extend(&mut self, batch: DenoiserErrors) {
        for (all, part) in [
            (&mut self.cond, batch.cond),
            (&mut self.uncond, batch.uncond),
            (&mut self.secmi, batch.secmi),
        ] {
            all.resize_with(part.len(), Vec::new);
            for (column, rows) in all.iter_mut().zip(part) {
                column.extend(rows);
            }
        }
    }
}

/// One Euler step of the probability-flow ODE `dx/dσ = (x − D(x; σ, c)) / σ` from `from` to
/// `to` (up: DDIM inversion; down: DDIM sampling), conditioned on `condition`.
fn ode_step(
    model: &mut Model,
    x: ArrayView4<f32>,
    from: f32,
    to: f32,
    condition: ArrayView2<f32>,
) -> Result<Array4<f32>, MembershipError> {
    let at = from.max(SECMI_SIGMA_MIN);
    let denoised = denoise(model, x, at, condition, x.len_of(Axis(0)))?;
    Ok(&x + &((&x - &denoised) * ((to - from) / at)))
}

/// SecMI's round-trip error of each row of `x` at each of `levels` (`[level][row]`): `x` is
/// inverted deterministically to the level on a geometric grid, one step further to
/// `σ · SECMI_STEP`, and one step back down.
fn secmi_errors(
    model: &mut Model,
    x: ArrayView4<f32>,
    condition: ArrayView2<f32>,
    levels: &[f32],
) -> Result<Vec<Vec<f32>>, MembershipError> {
    let Some(top) = levels.iter().copied().reduce(f32::max) else { return Ok(Vec::new()) };
    let ratio = (top / SECMI_SIGMA_START).max(1.0).powf(1.0 / (SECMI_GRID - 1) as f32);
    let mut grid: Vec<f32> = (0..SECMI_GRID)
        .map(|i| SECMI_SIGMA_START * ratio.powi(i as i32))
        .filter(|&s| s < top)
        .chain(levels.iter().copied())
        .collect();
    grid.sort_by(f32::total_cmp);
    grid.dedup();
    let mut at_level = std::collections::BTreeMap::new();
    let (mut state, mut sigma) = (x.to_owned(), 0.0f32);
    for &next in &grid {
        state = ode_step(model, state.view(), sigma, next, condition)?;
        sigma = next;
        if levels.contains(&sigma) {
            let further = ode_step(model, state.view(), sigma, sigma * SECMI_STEP, condition)?;
            let back = ode_step(model, further.view(), sigma * SECMI_STEP, sigma, condition)?;
            at_level.insert(sigma.to_bits(), mean_squared_errors(back.view(), state.view()));
        }
    }
    Ok(levels.iter().map(|s| at_level[&s.to_bits()].clone()).collect())
}

/// The condition size D of a denoiser's `condition` input (`[batch, D]`).
fn condition_size(spec: &ModelSpec) -> Result<usize, MembershipError> {
    match spec.input("condition").map(|t| t.shape.as_slice()) {
        Some([Dim::Batch, Dim::Fixed(d)]) => Ok(*d),
        _ => Err(MembershipError::Interface {
            file: spec.file.clone(),
            problem: "not a denoiser: it has no input `condition` of shape [batch, D]".into(),
        }),
    }
}

/// One denoiser call at noise level `sigma`: rows `[0, conditional)` get mask 1, the rest
/// mask 0.
fn denoise(
    model: &mut Model,
    x: ArrayView4<f32>,
    sigma: f32,
    condition: ArrayView2<f32>,
    conditional: usize,
) -> Result<Array4<f32>, MembershipError> {
    let rows = x.len_of(Axis(0));
    let sigmas = Array1::from_elem(rows, sigma);
    let mask = Array1::from_shape_fn(rows, |i| if i < conditional { 1.0 } else { 0.0 });
    let inputs = [
        ("x", x.into_dyn()),
        ("sigma", sigmas.view().into_dyn()),
        ("condition", condition.into_dyn()),
        ("condition_mask", mask.view().into_dyn()),
    ];
    let file = model.spec().file.clone();
    let denoised =
        model.run(&inputs)?.remove("denoised").ok_or_else(|| MembershipError::Interface {
            file: file.clone(),
            problem: "it has no output `denoised`".into(),
        })?;
    denoised.into_dimensionality().map_err(|e| MembershipError::Interface {
        file,
        problem: format!("`denoised` is not 4-D: {e}"),
    })
}

/// Output `name` of one call of `model`, as a matrix.
fn output2(
    model: &mut Model,
    inputs: &[(&str, ndarray::ArrayViewD<'_, f32>)],
    name: &str,
) -> Result<Array2<f32>, MembershipError> {
    let file = model.spec().file.clone();
    let value = model.run(inputs)?.remove(name).ok_or_else(|| MembershipError::Interface {
        file: file.clone(),
        problem: format!("it has no output `{name}`"),
    })?;
    value.into_dimensionality().map_err(|e| MembershipError::Interface {
        file,
        problem: format!("output `{name}` is not 2-D: {e}"),
    })
}

/// The mean squared error of each row of `a` against the same row of `b`.
fn mean_squared_errors(a: ArrayView4<f32>, b: ArrayView4<f32>) -> Vec<f32> {
    a.outer_iter()
        .zip(b.outer_iter())
        .map(|(p, q)| {
            let sum: f64 = Zip::from(&p).and(&q).fold(0.0, |acc, &u, &v| {
                let d = f64::from(u) - f64::from(v);
                acc + d * d
            });
            (sum / p.len().max(1) as f64) as f32
        })
        .collect()
}

/// Each row's loss: the softmax cross-entropy against the label with the largest value, or
/// the mean sigmoid binary cross-entropy over the labels (`multi_label`).
fn cross_entropy(logits: ArrayView2<f32>, labels: ArrayView2<f32>, multi_label: bool) -> Vec<f32> {
    logits
        .outer_iter()
        .zip(labels.outer_iter())
        .map(|(z, y)| {
            let z: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
            let loss = if multi_label {
                let sum: f64 = z
                    .iter()
                    .zip(y)
                    .map(|(&z, &y)| z.max(0.0) - z * f64::from(y) + (-z.abs()).exp().ln_1p())
                    .sum();
                sum / z.len().max(1) as f64
            } else {
                let class = (0..y.len()).fold(0, |best, j| if y[j] > y[best] { j } else { best });
                let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let log_sum = top + z.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
                log_sum - z[class]
            };
            loss as f32
        })
        .collect()
}

/// The augmentations of the re-id stability attack: shifts by one pixel right, left, down and
/// up (the uncovered edge filled with 0), and the horizontal flip.
fn augmentations(pixels: ArrayView4<u8>) -> Vec<Array4<u8>> {
    let shift = |dy: isize, dx: isize| {
        let (_, _, h, w) = pixels.dim();
        let mut out = Array4::<u8>::zeros(pixels.raw_dim());
        for ((i, c, y, x), v) in out.indexed_iter_mut() {
            let (sy, sx) = (y as isize - dy, x as isize - dx);
            if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                *v = pixels[[i, c, sy as usize, sx as usize]];
            }
        }
        out
    };
    let mut flipped = pixels.to_owned();
    flipped.invert_axis(Axis(3));
    vec![
        shift(0, 1),
        shift(0, -1),
        shift(1, 0),
        shift(-1, 0),
        flipped.as_standard_layout().to_owned(),
    ]
}

/// Each record's mean Euclidean distance between its re-id embedding and those of its
/// [`augmentations`].
fn reid_stability(
    model: &mut Model,
    pixels: ArrayView4<u8>,
    normalization: &Normalization,
) -> Result<Vec<f32>, MembershipError> {
    let mut embed = |p: ArrayView4<u8>| {
        let x = p.mapv(|v| normalization.normalize(v));
        output2(model, &[("image", x.view().into_dyn())], "embedding")
    };
    let original = embed(pixels)?;
    let augmented = augmentations(pixels);
    let mut total = vec![0.0f64; original.nrows()];
    for a in &augmented {
        let e = embed(a.view())?;
        for (t, (p, q)) in total.iter_mut().zip(original.outer_iter().zip(e.outer_iter())) {
            let d2: f64 =
                p.iter().zip(q).map(|(&u, &v)| (f64::from(u) - f64::from(v)).powi(2)).sum();
            *t += d2.sqrt();
        }
    }
    Ok(total.iter().map(|t| (t / augmented.len() as f64) as f32).collect())
}

/// The ROC curve of scores where higher means "member": `[fpr, tpr]` points from `[0, 0]` to
/// `[1, 1]`, one per distinct score (the rule "member iff score ≥ that score"), ties moving
/// both rates at once.
pub fn roc_curve(members: &[f32], non_members: &[f32]) -> Vec<[f64; 2]> {
    let mut all: Vec<(f32, bool)> =
        members.iter().map(|&s| (s, true)).chain(non_members.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (p, n) = (members.len().max(1) as f64, non_members.len().max(1) as f64);
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut points = vec![[0.0, 0.0]];
    let mut i = 0;
    while i < all.len() {
        let score = all[i].0;
        while i < all.len() && all[i].0.total_cmp(&score).is_eq() {
            if all[i].1 {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        points.push([fp as f64 / n, tp as f64 / p]);
    }
    if points.last() != Some(&[1.0, 1.0]) && !members.is_empty() && !non_members.is_empty() {
        points.push([1.0, 1.0]);
    }
    points
}

/// At most `max` (at least 3) of `points` (a ROC curve from [`roc_curve`], false-positive
/// rates ascending), spaced evenly in log false-positive rate, as the curves are plotted: the
/// first point, the last point at a false-positive rate of 0 (the true-positive rate reached
/// without a single false positive), and of the rest the last point of each of `max - 2`
/// bands of equal width in log10 rate between the smallest nonzero rate and 1. So the low
/// false-positive corner, where membership claims are made, keeps every point it has until
/// its bands are finer than the curve's steps; the last point is always kept.
pub fn downsample(points: &[[f64; 2]], max: usize) -> Vec<[f64; 2]> {
    let max = max.max(3);
    if points.len() <= max {
        return points.to_vec();
    }
    let Some(low) = points.iter().map(|p| p[0]).find(|&f| f > 0.0) else {
        return vec![points[0], points[points.len() - 1]];
    };
    let bands = (max - 2) as f64;
    let span = (-low.log10()).max(f64::MIN_POSITIVE);
    let band = |f: f64| -> Option<usize> {
        (f > 0.0).then(|| (((f.log10() - low.log10()) / span * bands) as usize).min(max - 3))
    };
    let mut kept = vec![points[0]];
    for (i, p) in points.iter().enumerate().skip(1) {
        let next = points.get(i + 1).map(|q| band(q[0]));
        if next != Some(band(p[0])) {
            kept.push(*p);
        }
    }
    kept
}

/// The true-positive rate at false-positive rate at most `fpr`, exact from the scores. With
/// `N` non-members, `k = ⌊fpr·N⌋` false positives are allowed; the threshold `t` is the
/// (k + 1)-th largest non-member score and a record is called a member iff its score is
/// **strictly above** `t`, so at most `k` non-members are (ties at `t` never count). The
/// result is the share of members above `t` (1 when `k ≥ N`; 0 with no members).
pub fn tpr_at_fpr(members: &[f32], non_members: &[f32], fpr: f64) -> f64 {
    if members.is_empty() {
        return 0.0;
    }
    let allowed = (fpr * non_members.len() as f64 + 1e-9).floor() as usize;
    if allowed >= non_members.len() {
        return 1.0;
    }
    let mut sorted = non_members.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let threshold = sorted[allowed];
    members.iter().filter(|&&s| s.total_cmp(&threshold).is_gt()).count() as f64
        / members.len() as f64
}

/// The ROC AUC of members against non-members (ties counting half), with the
/// percentile-bootstrap 95 % interval over `resamples` stratified resamples (members and
/// non-members each resampled with replacement, from a ChaCha8 generator seeded with `seed`).
/// `None` when either side is empty.
pub fn auc_interval(
    members: &[f32],
    non_members: &[f32],
    resamples: usize,
    seed: u64,
) -> Option<Interval> {
    auc_interval_at(members, non_members, resamples, seed, 0.95)
}

/// [`auc_interval`] at another `confidence` (strictly between 0 and 1), e.g. a
/// Bonferroni-corrected `1 − 0.05/m` when m attacks are judged together.
pub fn auc_interval_at(
    members: &[f32],
    non_members: &[f32],
    resamples: usize,
    seed: u64,
    confidence: f64,
) -> Option<Interval> {
    assert!(confidence > 0.0 && confidence < 1.0, "confidence {confidence} outside (0, 1)");
    let tail = (1.0 - confidence) / 2.0;
    let auc_of = |m: &mut dyn Iterator<Item = f32>, n: &mut dyn Iterator<Item = f32>| {
        let (mut scores, mut labels) = (Vec::new(), Vec::new());
        for s in m {
            scores.push(s);
            labels.push(true);
        }
        for s in n {
            scores.push(s);
            labels.push(false);
        }
        auroc(&scores, &labels)
    };
    let estimate = auc_of(&mut members.iter().copied(), &mut non_members.iter().copied())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (p, n) = (members.len(), non_members.len());
    let values: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            let m: Vec<f32> = (0..p).map(|_| members[rng.random_range(0..p)]).collect();
            let q: Vec<f32> = (0..n).map(|_| non_members[rng.random_range(0..n)]).collect();
            auc_of(&mut m.into_iter(), &mut q.into_iter())
        })
        .collect();
    Some(match values.is_empty() {
        true => Interval { estimate, lower: estimate, upper: estimate },
        false => Interval {
            estimate,
            lower: percentile(&values, tail),
            upper: percentile(&values, 1.0 - tail),
        },
    })
}

/// One attack's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttackResult {
    /// The attack, e.g. `loss@0.1`.
    pub attack: String,
    /// ROC AUC (0.5: the attacker learns nothing; below 0.5: the score points the other way).
    pub auc: f64,
    /// Its percentile-bootstrap 95 % interval.
    pub auc_ci: [f64; 2],
    /// True-positive rate at a false-positive rate of at most 0.1 % ([`tpr_at_fpr`]).
    pub tpr_at_fpr_0_1pct: f64,
    /// True-positive rate at a false-positive rate of at most 1 %.
    pub tpr_at_fpr_1pct: f64,
    /// ROC points `[fpr, tpr]`, at most [`ROC_POINTS`] of them (aggregates only).
    pub roc: Vec<[f64; 2]>,
}

/// The results of one model's attacks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelResult {
    /// The model's role.
    pub model: String,
    /// Its attacks, in order.
    pub attacks: Vec<AttackResult>,
}

/// Where the attacker does best on one measure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Worst {
    /// The model's role.
    pub model: String,
    /// The attack.
    pub attack: String,
    /// The measure's value.
    pub value: f64,
}

/// The membership-inference audit of a bundle's models.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MembershipReport {
    /// Members (training records) scored.
    pub members: usize,
    /// Non-members (holdout records) scored.
    pub non_members: usize,
    /// Further holdout records used only to calibrate the classifier loss (0: none).
    pub reference: usize,
    /// Seed of the noise and the bootstrap.
    pub seed: u64,
    /// Bootstrap resamples of each AUC interval.
    pub resamples: usize,
    /// The denoiser attacks' noise levels.
    pub sigmas: Vec<f32>,
    /// The SecMI attack's noise levels.
    pub secmi_sigmas: Vec<f32>,
    /// Per model, per attack.
    pub models: Vec<ModelResult>,
    /// The attack with the highest AUC.
    pub worst_auc: Option<Worst>,
    /// The attack with the highest TPR at 1 % FPR.
    pub worst_tpr_at_fpr_1pct: Option<Worst>,
    /// Attacks left out, and why.
    pub notes: Vec<String>,
}

/// The classifier loss calibrated by the mean loss of the record's class over `reference`:
/// `score − mean(reference scores of that class)` (the overall reference mean for a class the
/// reference lacks).
fn calibrate_by_class(scores: &[f32], classes: &[Option<usize>], reference: &Scores) -> Vec<f32> {
    let loss = reference.get("classifier", "loss").unwrap_or(&[]);
    let overall = loss.iter().map(|&s| f64::from(s)).sum::<f64>() / loss.len().max(1) as f64;
    let mean_of = |class: Option<usize>| {
        let of: Vec<f64> = loss
            .iter()
            .zip(&reference.classes)
            .filter(|(_, c)| **c == class)
            .map(|(&s, _)| f64::from(s))
            .collect();
        if of.is_empty() { overall } else { of.iter().sum::<f64>() / of.len() as f64 }
    };
    let mut means = std::collections::BTreeMap::new();
    scores
        .iter()
        .zip(classes)
        .map(|(&s, &c)| (f64::from(s) - *means.entry(c).or_insert_with(|| mean_of(c))) as f32)
        .collect()
}

/// Evaluates every attack of `members` against `non_members` (scored by the same
/// [`Attacks`]): AUC with its bootstrap interval (`resamples`, ChaCha8 seeded with `seed`),
/// TPR at 0.1 % and 1 % FPR, the ROC curve. With `reference` (further holdout records, scored
/// too, never evaluated), the classifier loss is also calibrated per class.
pub fn evaluate(
    members: &Scores,
    non_members: &Scores,
    reference: Option<&Scores>,
    resamples: usize,
    seed: u64,
) -> Result<MembershipReport, MembershipError> {
    if members.is_empty() || non_members.is_empty() {
        return Err(MembershipError::Input(format!(
            "{} members and {} non-members: both sides need records",
            members.len(),
            non_members.len()
        )));
    }
    let mut notes = members.notes.clone();
    let mut pairs: Vec<(String, String, Vec<f32>, Vec<f32>)> = Vec::new();
    for a in &members.attacks {
        let other = non_members.get(&a.model, &a.attack).ok_or_else(|| {
            MembershipError::Input(format!(
                "the non-members were not scored by {} {}",
                a.model, a.attack
            ))
        })?;
        pairs.push((a.model.clone(), a.attack.clone(), a.scores.clone(), other.to_vec()));
    }
    if let (Some(m), Some(n)) =
        (members.get("classifier", "loss"), non_members.get("classifier", "loss"))
    {
        match reference {
            Some(r) if r.get("classifier", "loss").is_some_and(|s| !s.is_empty()) => {
                if members.classes.iter().any(Option::is_none) {
                    notes.push(
                        "classifier calibrated_loss: per-class calibration needs single-label records; left out".into(),
                    );
                } else {
                    pairs.push((
                        "classifier".into(),
                        "calibrated_loss".into(),
                        calibrate_by_class(m, &members.classes, r),
                        calibrate_by_class(n, &non_members.classes, r),
                    ));
                }
            }
            _ => notes.push(
                "classifier calibrated_loss: no reference split of further holdout records; left out".into(),
            ),
        }
    }
    let mut models: Vec<ModelResult> = Vec::new();
    for (model, attack, m, n) in pairs {
        let ci = auc_interval(&m, &n, resamples, seed).expect("both sides have records");
        let result = AttackResult {
            attack,
            auc: ci.estimate,
            auc_ci: [ci.lower, ci.upper],
            tpr_at_fpr_0_1pct: tpr_at_fpr(&m, &n, 0.001),
            tpr_at_fpr_1pct: tpr_at_fpr(&m, &n, 0.01),
            roc: downsample(&roc_curve(&m, &n), ROC_POINTS),
        };
        match models.iter_mut().find(|r| r.model == model) {
            Some(r) => r.attacks.push(result),
            None => models.push(ModelResult { model, attacks: vec![result] }),
        }
    }
    let worst = |measure: &dyn Fn(&AttackResult) -> f64| {
        models
            .iter()
            .flat_map(|r| r.attacks.iter().map(move |a| (r, a)))
            .max_by(|x, y| measure(x.1).total_cmp(&measure(y.1)))
            .map(|(r, a)| Worst {
                model: r.model.clone(),
                attack: a.attack.clone(),
                value: measure(a),
            })
    };
    Ok(MembershipReport {
        members: members.len(),
        non_members: non_members.len(),
        reference: reference.map_or(0, Scores::len),
        seed,
        resamples,
        sigmas: members.sigmas.clone(),
        secmi_sigmas: members.secmi_sigmas.clone(),
        worst_auc: worst(&|a| a.auc),
        worst_tpr_at_fpr_1pct: worst(&|a| a.tpr_at_fpr_1pct),
        models,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpr_at_fpr_follows_the_documented_rule() {
        // 1000 non-members 0..999, members 990.5..=999.5 (10) and 500 (1): at 1 % FPR, 10
        // false positives are allowed, the threshold is the 11th largest non-member (989) and
        // members strictly above it are the 10 high ones: TPR 10/11.
        let non: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let mut members: Vec<f32> = (0..10).map(|i| 990.5 + i as f32).collect();
        members.push(500.0);
        assert_eq!(tpr_at_fpr(&members, &non, 0.01), 10.0 / 11.0);
        // At 0.1 %: one false positive allowed, threshold 998: only 998.5 and 999.5 are above.
        assert_eq!(tpr_at_fpr(&members, &non, 0.001), 2.0 / 11.0);
        // A member tied with the threshold is not above it.
        assert_eq!(tpr_at_fpr(&[989.0], &non, 0.01), 0.0);
        // With fewer than 1000 non-members 0.1 % allows none: above the maximum only.
        assert_eq!(tpr_at_fpr(&[5.0, 3.0], &[1.0, 4.0], 0.001), 0.5);
        // FPR 1 allows everything.
        assert_eq!(tpr_at_fpr(&[-10.0], &[1.0, 4.0], 1.0), 1.0);
    }

    #[test]
    fn separable_and_identical_scores() {
        let members: Vec<f32> = (0..200).map(|i| 1000.0 + i as f32).collect();
        let non: Vec<f32> = (0..200).map(|i| i as f32).collect();
        let ci = auc_interval(&members, &non, 200, 1).unwrap();
        assert_eq!((ci.estimate, ci.lower, ci.upper), (1.0, 1.0, 1.0));
        assert_eq!(tpr_at_fpr(&members, &non, 0.01), 1.0);
        assert_eq!(tpr_at_fpr(&members, &non, 0.001), 1.0);
        let roc = roc_curve(&members, &non);
        assert_eq!(roc.first(), Some(&[0.0, 0.0]));
        assert!(roc.contains(&[0.0, 1.0]) && roc.last() == Some(&[1.0, 1.0]));
        // The same scores on both sides: AUC 0.5, an interval around it.
        let ci = auc_interval(&non, &non, 500, 2).unwrap();
        assert_eq!(ci.estimate, 0.5);
        assert!(ci.lower < 0.5 && ci.upper > 0.5 && ci.upper - ci.lower < 0.2, "{ci:?}");
        // Identical sides: the TPR is the FPR allowed (2 of 200 above the 3rd largest).
        assert_eq!(tpr_at_fpr(&non, &non, 0.01), 0.01);
        assert_eq!(roc_curve(&non, &non).len(), 201);
    }

    #[test]
    fn known_gaussian_shift() {
        // Members N(1, 1), non-members N(0, 1): AUC = Φ(1/√2) = 0.7602.
        let m = crate::audit::gaussian(4000, 1, 1.0, 1.0, 3).into_raw_vec_and_offset().0;
        let n = crate::audit::gaussian(4000, 1, 0.0, 1.0, 4).into_raw_vec_and_offset().0;
        let ci = auc_interval(&m, &n, 300, 5).unwrap();
        assert!((ci.estimate - 0.7602).abs() < 0.015, "{ci:?}");
        assert!(ci.contains(0.7602) || (ci.estimate - 0.7602).abs() < 0.01, "{ci:?}");
        assert!(ci.upper - ci.lower < 0.04, "{ci:?}");
        // TPR at 1 % FPR: P(N(1,1) > z_0.99 = 2.326) = 0.0926.
        let tpr = tpr_at_fpr(&m, &n, 0.01);
        assert!((tpr - 0.0926).abs() < 0.03, "{tpr}");
    }

    #[test]
    fn downsampling_keeps_the_ends_and_the_low_false_positive_corner() {
        // An even curve with 1,000 steps of false-positive rate, and a first step at 0.
        let points: Vec<[f64; 2]> = [[0.0, 0.0], [0.0, 0.05]]
            .into_iter()
            .chain((1..=1000).map(|i| [i as f64 / 1000.0, 0.05 + 0.95 * i as f64 / 1000.0]))
            .collect();
        let kept = downsample(&points, 200);
        assert!(kept.len() <= 200 && kept.len() > 100, "{}", kept.len());
        assert_eq!((kept[0], kept[1], kept[kept.len() - 1]), ([0.0, 0.0], [0.0, 0.05], [1.0, 1.0]));
        assert!(kept.windows(2).skip(1).all(|w| w[0][0] < w[1][0]));
        // Every one of the ten points at or below 1 % false positives survives (evenly by
        // index, two of 200 would).
        assert_eq!(kept.iter().filter(|p| p[0] > 0.0 && p[0] <= 0.01 + 1e-12).count(), 10);
        assert!(kept.iter().all(|p| points.contains(p)));
        assert_eq!(downsample(&points[..5], 200).len(), 5);
        // No nonzero false-positive rate: the two ends.
        let flat: Vec<[f64; 2]> = (0..=10).map(|i| [0.0, i as f64 / 10.0]).collect();
        assert_eq!(downsample(&flat, 4), vec![[0.0, 0.0], [0.0, 1.0]]);
    }

    #[test]
    fn losses_and_augmentations() {
        // Softmax CE of logits (0, ln 3) against class 1: ln(1 + 3) − ln 3.
        let logits = ndarray::array![[0.0f32, 3f32.ln()]];
        let ce = cross_entropy(logits.view(), ndarray::array![[0.0f32, 1.0]].view(), false);
        assert!((ce[0] - (4f32.ln() - 3f32.ln())).abs() < 1e-6);
        // BCE of logit 0 is ln 2 whatever the label.
        let bce = cross_entropy(logits.view(), ndarray::array![[1.0f32, 0.0]].view(), true);
        let expected = (2f32.ln() + (1.0 + 3.0f32).ln()) / 2.0;
        assert!((bce[0] - expected).abs() < 1e-6, "{bce:?}");
        let px = Array4::from_shape_fn((1, 1, 2, 3), |(_, _, y, x)| (10 * y + x + 1) as u8);
        let a = augmentations(px.view());
        assert_eq!(a[0].as_slice().unwrap(), &[0, 1, 2, 0, 11, 12]);
        assert_eq!(a[1].as_slice().unwrap(), &[2, 3, 0, 12, 13, 0]);
        assert_eq!(a[2].as_slice().unwrap(), &[0, 0, 0, 1, 2, 3]);
        assert_eq!(a[4].as_slice().unwrap(), &[3, 2, 1, 13, 12, 11]);
    }
}
