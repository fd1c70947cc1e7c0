//! `unpersonal-train distil`: distils a bundle's guided denoiser (the teacher, at the bundle's
//! sampler settings) into a student that samples in a few unguided steps, and adds it to the
//! bundle (role `student`, `sampler.distilled`).
//!
//! The method is trajectory distillation in one stage (progressive distillation, Salimans & Ho
//! 2022, with all halvings at once as in TRACT, Berthelot et al. 2023): the teacher's
//! probability-flow trajectories are recorded at the student's noise levels
//! σ_0 > … > σ_{K−1} > σ_K = 0 (the Karras levels of K steps, inserted into the teacher's
//! own). The student's step k is the first-order step `x' = r·x + (1 − r)·D(x; σ_k)` with
//! `r = σ_{k+1}/σ_k`; it lands on the teacher's `x_{k+1}` exactly when
//! `D = (x_{k+1} − r·x_k)/(1 − r)` (at the last step, `D = x_K`), which is the target the
//! student regresses with the denoiser's own EDM loss, starting from the teacher's weights.
//! The student runs unguided, one evaluation per step: it learns the guided teacher. Since
//! every student step follows the teacher's trajectory from its own start, the student keeps
//! the teacher's noise-to-image map, and with it the candidates' diversity.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, ArrayView2, ArrayView4, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use unpersonal_runtime::backend::ort::{Device as OrtDevice, Ort};
use unpersonal_runtime::backend::{Backend, Model as RuntimeModel};
use unpersonal_runtime::bundle::{BundleDir, DistilledSpec, ModelSpec, Role, SamplerSpec};
use unpersonal_runtime::generate::Settings;
use unpersonal_runtime::sampler::{self, Denoiser, Guidance, Solver, karras_sigmas, noise_batch};
use unpersonal_trainer::data::{Augment, Batch, Normalization, mix};
use unpersonal_trainer::diffusion::{Extractor, Features};
use unpersonal_trainer::engine::{Device, HostTensor, State};
use unpersonal_trainer::export::{self, Weights};
use unpersonal_trainer::graph::numel;
use unpersonal_trainer::models::{DenoiserConfig, forward_mflops};
use unpersonal_trainer::step::{self, AdamW};
use unpersonal_trainer::train::{self, Feed, RunOptions, Schedule, TrainConfig};
use unpersonal_trainer::{bundle, checkpoint, onnx};

use super::{DataArgs, EngineArgs, RunControl, TRAINER};

#[derive(Args)]
pub struct DistilArgs {
    /// The training images whose features condition the teacher's trajectories (those the
    /// teacher was trained on).
    #[command(flatten)]
    data: DataArgs,
    /// Bundle with the teacher (`denoiser`, `features` and the sampler settings); the student
    /// is written into it.
    #[arg(long, default_value = "models/fashion-mnist")]
    bundle: PathBuf,
    /// Run directory for the trajectories, the features cache, the checkpoint and the log.
    #[arg(long, default_value = "runs/student")]
    run: PathBuf,
    /// Do not train: export the EMA weights of the checkpoint in --run as they are.
    #[arg(long)]
    export_only: bool,
    /// Student steps K (K evaluations per image).
    #[arg(long, default_value_t = 4)]
    student_steps: usize,
    /// Teacher trajectories to learn from, each conditioned on another training image (spread
    /// evenly over the training set).
    #[arg(long, default_value_t = 8192)]
    trajectories: usize,
    /// Held-out trajectories on which the student's distance to the teacher is measured.
    #[arg(long, default_value_t = 128)]
    validation: usize,
    /// Planned training length in optimisation steps.
    #[arg(long, default_value_t = 4000)]
    steps: u64,
    /// Batch size (rows: one trajectory step each).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate (linear warm-up, cosine decay to a tenth).
    #[arg(long, default_value_t = 1e-4)]
    lr: f32,
    /// Warm-up steps.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// EMA decay of the exported weights (per step).
    #[arg(long, default_value_t = 0.999)]
    ema: f32,
    /// Seed of the trajectories' noise, the batch order and the steps drawn.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Measure the distance to the teacher every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    eval_every: u64,
    #[command(flatten)]
    control: RunControl,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Stream of the per-row step draws (the batcher's are 0–2, the EDM feed's 3 and 5).
const DISTIL_STREAM: u64 = 6;

/// The teacher's states at the student's noise levels, `[rows, K + 1, C, H, W]`: row i starts
/// at `σ_0·noise(seed, i)` and is conditioned on `conditions` row i.
struct Trajectories {
    states: Vec<f32>,
    levels: usize,
    size: usize,
}

impl Trajectories {
    fn state(&self, row: usize, level: usize) -> &[f32] {
        let at = (row * self.levels + level) * self.size;
        &self.states[at..at + self.size]
    }
}

/// The student's training rows: trajectory row i of the batch's dataset row i, at a student
/// step k drawn per (step, row); the denoiser's training graph takes `image + σ·noise` as its
/// input and `image` as its target, so `image` = the step's target D and
/// `noise = (x_k − D)/σ_k` give it the teacher's state `x_k`.
struct DistilFeed<'a> {
    trajectories: &'a Trajectories,
    /// The student's noise levels, `K + 1` of them, the last 0.
    sigmas: Vec<f64>,
    features: &'a Features,
    seed: u64,
}

impl Feed for DistilFeed<'_> {
    fn feed(&self, batch: &Batch, step: u64) -> Vec<Vec<f32>> {
        let size = self.trajectories.size;
        let steps = self.sigmas.len() - 1;
        let mut image = Vec::with_capacity(batch.n * size);
        let mut noise = Vec::with_capacity(batch.n * size);
        let mut sigma = Vec::with_capacity(batch.n);
        let mut condition = Vec::with_capacity(batch.n * self.features.dim);
        for &row in &batch.indices {
            let mut rng =
                ChaCha8Rng::seed_from_u64(mix(self.seed, DISTIL_STREAM, step, row as u64));
            let k = rng.random_range(0..steps);
            let (s, s_next) = (self.sigmas[k], self.sigmas[k + 1]);
            let (x, x_next) =
                (self.trajectories.state(row, k), self.trajectories.state(row, k + 1));
            let r = s_next / s;
            let target = x.iter().zip(x_next).map(|(&x, &next)| {
                if s_next == 0.0 { next } else { ((next as f64 - r * x as f64) / (1.0 - r)) as f32 }
            });
            let start = image.len();
            image.extend(target);
            noise.extend(
                x.iter().zip(&image[start..]).map(|(&x, &d)| ((x as f64 - d as f64) / s) as f32),
            );
            sigma.push(s as f32);
            condition.extend_from_slice(self.features.row(row, false));
        }
        vec![image, noise, sigma, condition, vec![1.0; batch.n]]
    }
}

pub fn run(args: DistilArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.trajectories > 0, "--trajectories must be at least 1");
    anyhow::ensure!(args.validation > 0, "--validation must be at least 1");
    let env = args.engine.environment()?;
    checkpoint::ensure_writable(&args.bundle)?;
    checkpoint::ensure_writable(&args.run)?;
    std::fs::create_dir_all(&args.run)
        .with_context(|| format!("cannot create run directory {}", args.run.display()))?;
    let loaded = BundleDir::load(&args.bundle)?;
    let bundle = &loaded.bundle;
    let teacher_spec = bundle.model(Role::Denoiser)?.clone();
    let teacher_onnx = loaded.onnx(Role::Denoiser)?.to_vec();
    anyhow::ensure!(
        teacher_spec.provenance.get("dp").is_none_or(|dp| dp.is_null()),
        "{}: the denoiser was trained with DP-SGD; its student would learn from the training images' features outside that guarantee's accounting, so distilling it is refused",
        args.bundle.display()
    );
    let model: DenoiserConfig = serde_json::from_value(
        teacher_spec.provenance["architecture"]["config"].clone(),
    )
    .with_context(|| {
        format!(
            "{}: the denoiser's provenance has no architecture.config this trainer can rebuild (was it trained by unpersonal-train?)",
            args.bundle.display()
        )
    })?;

    // The teacher as the bundle samples with it, and the student's levels inserted.
    let teacher = Settings::from_bundle(
        &SamplerSpec { distilled: None, ..bundle.sampler.clone() },
        args.seed,
    );
    anyhow::ensure!(
        teacher.solver != Solver::Distilled,
        "{}: sampler.solver is `distilled`; the teacher needs the denoiser's own solver",
        args.bundle.display()
    );
    let student_sigmas =
        karras_sigmas(args.student_steps, teacher.sigma_min, teacher.sigma_max, teacher.rho)?;
    let teacher_sigmas = merge_levels(
        &karras_sigmas(teacher.steps, teacher.sigma_min, teacher.sigma_max, teacher.rho)?,
        &student_sigmas,
    );
    let at: Vec<usize> = student_sigmas
        .iter()
        .map(|s| teacher_sigmas.iter().position(|t| same_level(*t, *s)).expect("merged levels"))
        .collect();

    // Conditions: the features of training images spread evenly over the set.
    let (data, _) = args.data.load()?;
    let rows = (args.trajectories + args.validation).min(data.len());
    anyhow::ensure!(
        rows > args.validation,
        "{} has {} images: too few for {} held-out trajectories and some to train on",
        data.name,
        data.len(),
        args.validation
    );
    let image = &bundle.image;
    anyhow::ensure!(
        [data.channels, data.height, data.width] == [image.channels, image.height, image.width],
        "{} has {}×{}×{} images, the bundle's are {}×{}×{} (pass the --size the bundle was trained with)",
        data.name,
        data.channels,
        data.height,
        data.width,
        image.channels,
        image.height,
        image.width
    );
    let picked: Vec<usize> = (0..rows).map(|i| i * data.len() / rows).collect();
    let subset = data.select(&picked, format!("{} ({rows} spread evenly)", data.name));
    // The teacher's inputs as the bundle states them.
    let norm = Normalization { mean: image.normalization.mean, std: image.normalization.std };
    let session = args.engine.session();
    let features_onnx = loaded.onnx(Role::Features)?;
    let features = Extractor { env, model: features_onnx, session: &session }.cached(
        &args.run.join("features.safetensors"),
        &subset,
        norm,
        false,
    )?;
    let conditions =
        Array2::from_shape_vec((rows, features.dim), features.plain.clone()).context("features")?;

    let device = match args.engine.device {
        Device::Cpu => OrtDevice::Cpu,
        Device::Cuda => OrtDevice::Cuda,
    };
    let backend = Ort::new(args.engine.ort_lib.as_deref(), device, args.engine.threads)?;
    let shape = [subset.channels, subset.height, subset.width];
    let key = HashMap::from([
        ("teacher_sha256".to_string(), teacher_spec.sha256.clone()),
        ("features_sha256".to_string(), bundle::sha256_hex(features_onnx)),
        ("data".to_string(), subset.name.clone()),
        ("teacher".to_string(), format!("{teacher:?}")),
        ("student_sigmas".to_string(), format!("{student_sigmas:?}")),
    ]);
    let trajectories = recorded(
        &args.run.join("trajectories.safetensors"),
        key,
        || {
            let teacher_model =
                RuntimeModel::load(&backend as &dyn Backend, &teacher_spec, &teacher_onnx)?;
            let mut denoiser = Denoiser::new(teacher_model, None)?;
            let run = TeacherRun {
                sigmas: &teacher_sigmas,
                solver: teacher.solver,
                guidance: teacher.guidance_of_round(0),
                at: &at,
                seed: args.seed,
            };
            run.record(&mut denoiser, conditions.view(), shape)
        },
        shape,
        student_sigmas.len(),
        rows,
    )?;
    let train_rows = rows - args.validation;
    let train_set = subset
        .select(&(0..train_rows).collect::<Vec<_>>(), format!("{} (training rows)", subset.name));

    let validation = Validation {
        conditions: conditions.slice(ndarray::s![train_rows.., ..]).to_owned(),
        rows: (train_rows..rows).collect(),
        sigmas: student_sigmas.clone(),
        seed: args.seed,
        shape,
    };
    let distance = |onnx: &[u8]| -> anyhow::Result<f64> {
        let spec = ModelSpec { file: "student.onnx".into(), ..teacher_spec.clone() };
        let student = RuntimeModel::load(&backend as &dyn Backend, &spec, onnx)?;
        validation.distance(Denoiser::new(student, None)?, &trajectories)
    };
    let before = distance(&teacher_onnx)?;
    if !args.control.quiet {
        eprintln!(
            "teacher: {} in {} steps (w = {}, interval {:?}); student: {} steps at σ = {student_sigmas:?}; the teacher's weights sampled so lie {before:.4} (RMS, model space) from the teacher's images",
            teacher.solver,
            teacher.steps,
            teacher.guidance,
            teacher.guidance_interval,
            args.student_steps
        );
    }

    let cfg = TrainConfig {
        model: json!({ "kind": "student", "config": model, "teacher_sha256": teacher_spec.sha256,
                       "student_steps": args.student_steps, "trajectories": train_rows }),
        data: args.data.data.display().to_string(),
        samples: train_rows,
        batch: args.batch,
        schedule: Schedule {
            steps: args.steps,
            warmup: args.warmup.min(args.steps / 2),
            lr: args.lr,
            final_ratio: 0.1,
        },
        adamw: AdamW { weight_decay: 0.0, ..AdamW::default() },
        ema: args.ema,
        seed: args.seed,
        augment: Augment::none(),
        normalization: norm,
        dp: None,
    };
    let (state, steps) = if args.export_only {
        train::checkpointed(&args.run, &cfg)?
    } else {
        if !args.control.quiet {
            eprintln!(
                "distilling ({:.0} MFLOPs per evaluation) on {train_rows} trajectories, {} steps of {} on {:?}",
                forward_mflops(&model),
                args.steps,
                args.batch,
                args.engine.device
            );
        }
        let feed = DistilFeed {
            trajectories: &trajectories,
            sigmas: student_sigmas.clone(),
            features: &features,
            seed: args.seed,
        };
        let opts = RunOptions {
            selection: args.control.selection("distance_to_teacher", true),
            initial_weights: Some(onnx::read_initializers(&teacher_onnx)?),
            ..args.control.options(&args.run, args.eval_every, session.clone())
        };
        let (state, summary) =
            train::train(&model, &cfg, &train_set, &feed, &opts, env, |_, state| {
                let onnx = export::onnx_bytes(&model, state, Weights::Ema, vec![])?;
                Ok(json!({ "distance_to_teacher": distance(&onnx)? }))
            })?;
        if summary.paused() {
            println!(
                "{}",
                json!({ "stopped_at_step": summary.steps, "of": args.steps, "resume_with": "--resume", "export_with": "--export-only" })
            );
            return Ok(());
        }
        (state, summary.weights_step())
    };

    let student_onnx = export::onnx_bytes(
        &model,
        &state,
        Weights::Ema,
        vec![("unpersonal.role".into(), "student".into())],
    )?;
    let after = distance(&student_onnx)?;
    let parameters: usize =
        step::build(&model, 1, &cfg.adamw).params.iter().map(|p| numel(&p.shape)).sum();
    let provenance = json!({
        "architecture": { "kind": "denoiser", "config": model },
        "distilled_from": {
            "role": "denoiser", "sha256": teacher_spec.sha256, "solver": teacher.solver.to_string(),
            "steps": teacher.steps, "guidance": teacher.guidance, "guidance_interval": teacher.guidance_interval,
            "levels": teacher_sigmas,
        },
        "method": "trajectory distillation: first-order steps onto the teacher's states at the student's levels, EDM loss, from the teacher's weights",
        "student_levels": student_sigmas, "dataset": data.name, "trajectories": train_rows,
        "steps": steps, "batch": cfg.batch, "learning_rate": cfg.schedule, "weights": "ema",
        "ema_decay": cfg.ema, "parameters": parameters, "forward_mflops_per_image": forward_mflops(&model),
        "dp": null, "trainer": TRAINER,
        "metrics": { "distance_to_teacher": after, "teacher_weights_distance_to_teacher": before,
                     "validation_trajectories": args.validation },
    });
    let (c, h, w, d) = (model.channels, model.height, model.width, model.condition_dim);
    let entry = bundle::Entry {
        role: Role::Student,
        file: "student.onnx",
        onnx: &student_onnx,
        inputs: vec![
            bundle::tensor_spec("x", &[c, h, w]),
            bundle::tensor_spec("sigma", &[]),
            bundle::tensor_spec("condition", &[d]),
            bundle::tensor_spec("condition_mask", &[]),
        ],
        outputs: vec![bundle::tensor_spec("denoised", &[c, h, w])],
        provenance,
    };
    let sections = bundle::Sections {
        distilled: Some(DistilledSpec { steps: args.student_steps }),
        resize: bundle.image.resize.as_ref().map(|r| r.size),
        ..bundle::Sections::default()
    };
    bundle::write(&args.bundle, &data, norm, vec![entry], sections)?;
    println!(
        "{}",
        json!({ "out": args.bundle.join("student.onnx"), "steps": steps, "student_steps": args.student_steps,
                "distance_to_teacher": after, "teacher_weights_distance_to_teacher": before })
    );
    Ok(())
}

/// The held-out trajectories: their conditions, rows and the student's levels.
struct Validation {
    conditions: Array2<f32>,
    rows: Vec<usize>,
    sigmas: Vec<f64>,
    seed: u64,
    shape: [usize; 3],
}

impl Validation {
    /// The RMS distance (model space) between the student's images, sampled with the
    /// `distilled` solver from the held-out rows' noise, and the teacher's.
    fn distance(&self, mut student: Denoiser, teacher: &Trajectories) -> anyhow::Result<f64> {
        let ids: Vec<u64> = self.rows.iter().map(|&r| r as u64).collect();
        let noise = noise_batch(self.seed, &ids, self.shape);
        let images = sampler::sample(
            &mut student,
            &self.sigmas,
            Solver::Distilled,
            Guidance::everywhere(1.0),
            self.conditions.view(),
            noise.view(),
        )?;
        let last = self.sigmas.len() - 1;
        let mut sum = 0f64;
        for (image, &row) in images.outer_iter().zip(&self.rows) {
            let target = teacher.state(row, last);
            sum +=
                image.iter().zip(target).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>();
        }
        Ok((sum / (self.rows.len() * teacher.size) as f64).sqrt())
    }
}

/// How the teacher samples, and after which of its steps the states are kept.
struct TeacherRun<'a> {
    sigmas: &'a [f64],
    solver: Solver,
    guidance: Guidance,
    /// The steps after which the student's levels are reached (0: the start).
    at: &'a [usize],
    /// Seed of the noise; row i draws `noise(seed, i)`.
    seed: u64,
}

impl TeacherRun<'_> {
    /// The teacher's states at the student's levels for every row of `conditions`, in
    /// batches, as `[rows, levels, C·H·W]`.
    fn record(
        &self,
        denoiser: &mut Denoiser,
        conditions: ArrayView2<f32>,
        shape: [usize; 3],
    ) -> anyhow::Result<Vec<f32>> {
        let rows = conditions.len_of(Axis(0));
        let size: usize = shape.iter().product();
        let bar = ProgressBar::new(rows as u64).with_style(
            ProgressStyle::with_template("teacher trajectories {bar:30} {pos}/{len}  ETA {eta}")
                .expect("a valid template"),
        );
        let mut states = vec![0f32; rows * self.at.len() * size];
        const BATCH: usize = 64;
        for start in (0..rows).step_by(BATCH) {
            let end = (start + BATCH).min(rows);
            let ids: Vec<u64> = (start as u64..end as u64).collect();
            let noise = noise_batch(self.seed, &ids, shape);
            let recorded = sampler::trajectory(
                denoiser,
                self.sigmas,
                self.solver,
                self.guidance,
                conditions.slice(ndarray::s![start..end, ..]),
                noise.view(),
                self.at,
            )?;
            for (level, images) in recorded.iter().enumerate() {
                store(&mut states, images.view(), start, level, self.at.len(), size);
            }
            bar.inc((end - start) as u64);
        }
        bar.finish_and_clear();
        Ok(states)
    }
}

/// Writes `images` (rows `first…`) as level `level` of a `[rows, levels, size]` buffer.
fn store(
    states: &mut [f32],
    images: ArrayView4<f32>,
    first: usize,
    level: usize,
    levels: usize,
    size: usize,
) {
    for (i, image) in images.outer_iter().enumerate() {
        let at = ((first + i) * levels + level) * size;
        states[at..at + size].iter_mut().zip(image.iter()).for_each(|(s, v)| *s = *v);
    }
}

/// The trajectories in `path` when `key` matches its metadata, else `make()`'s, written
/// there atomically.
fn recorded(
    path: &std::path::Path,
    key: HashMap<String, String>,
    make: impl FnOnce() -> anyhow::Result<Vec<f32>>,
    shape: [usize; 3],
    levels: usize,
    rows: usize,
) -> anyhow::Result<Trajectories> {
    let size: usize = shape.iter().product();
    let want = vec![rows, levels, size];
    if let Ok((meta, mut tensors)) = checkpoint::load_tensors(path)
        && key.iter().all(|(k, v)| meta.get(k) == Some(v))
        && let Some(states) = tensors.remove("states")
        && states.shape == want
    {
        return Ok(Trajectories { states: states.data, levels, size });
    }
    let states = make()?;
    let mut tensors = State::new();
    tensors.insert("states".into(), HostTensor { shape: want, data: states.clone() });
    checkpoint::save_tensors(path, &tensors, key)?;
    Ok(Trajectories { states, levels, size })
}

/// Whether two noise levels are the same (to float rounding).
fn same_level(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The union of two descending noise-level lists (each ending at 0), descending, without
/// repeats.
fn merge_levels(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
    all.sort_by(|x, y| y.total_cmp(x));
    all.dedup_by(|x, y| same_level(*x, *y));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_step_levels_lie_on_the_ten_step_teachers() {
        let teacher = karras_sigmas(10, 0.002, 80.0, 7.0).unwrap();
        let student = karras_sigmas(4, 0.002, 80.0, 7.0).unwrap();
        assert_eq!(merge_levels(&teacher, &student).len(), teacher.len());
        let three = karras_sigmas(3, 0.002, 80.0, 7.0).unwrap();
        assert_eq!(
            merge_levels(&teacher, &three).len(),
            teacher.len() + 1,
            "σ_1 of 3 steps is new"
        );
    }

    #[test]
    fn the_feed_gives_the_training_graph_the_teachers_state_and_the_step_target() {
        let sigmas = vec![10.0, 1.0, 0.0];
        // One row, three levels of a 2-pixel image.
        let trajectories =
            Trajectories { states: vec![5.0, -5.0, 0.8, -0.2, 0.5, -0.1], levels: 3, size: 2 };
        let features = Features { dim: 1, plain: vec![0.25], mirrored: None };
        let feed = DistilFeed {
            trajectories: &trajectories,
            sigmas: sigmas.clone(),
            features: &features,
            seed: 0,
        };
        let batch = Batch { images: vec![0.0; 2], labels: vec![], indices: vec![0], n: 1 };
        let mut seen = [false; 2];
        for step in 1..40 {
            let [image, noise, sigma, condition, mask]: [Vec<f32>; 5] =
                feed.feed(&batch, step).try_into().unwrap();
            let k = sigmas.iter().position(|&s| s as f32 == sigma[0]).unwrap();
            seen[k] = true;
            let (x, next) = (trajectories.state(0, k), trajectories.state(0, k + 1));
            for p in 0..2 {
                // The graph's input is image + σ·noise: the teacher's state.
                assert!((image[p] + sigma[0] * noise[p] - x[p]).abs() < 1e-5);
                // One first-order step with D = image lands on the teacher's next state.
                let r = (sigmas[k + 1] / sigmas[k]) as f32;
                assert!((r * x[p] + (1.0 - r) * image[p] - next[p]).abs() < 1e-5);
            }
            assert_eq!((condition, mask), (vec![0.25], vec![1.0]));
        }
        assert_eq!(seen, [true, true], "both steps are drawn");
    }
}
