//! The subcommands of `unpersonal-train`, one per file, and what they share.

pub mod bench;
pub mod classifier;
pub mod demo_site;
pub mod denoiser;
pub mod distil;
pub mod eval;
pub mod evaluate;
pub mod pipeline;
pub mod reid;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use unpersonal_trainer::data::{Dataset, FilelistOptions, Normalization, Split, epoch_batches};
use unpersonal_trainer::engine::{self, Device, HostTensor, SessionConfig};
use unpersonal_trainer::train::{RunOptions, Selection};

/// Options shared by every command that runs ONNX Runtime.
#[derive(Args)]
pub struct EngineArgs {
    /// Execution device. `cuda` fails if the CUDA execution provider cannot run (never a
    /// silent CPU fallback).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Intra-op threads of ONNX Runtime (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Path of libonnxruntime.so (default: $ORT_DYLIB_PATH, else the one in a .venv of
    /// the working directory or the executable's, or one of their parents).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}

impl EngineArgs {
    /// The session configuration these flags ask for.
    pub fn session(&self) -> SessionConfig {
        SessionConfig { device: self.device, threads: self.threads, profile: None }
    }

    /// ONNX Runtime, loaded as these flags say.
    pub fn environment(&self) -> anyhow::Result<&'static ort::environment::Environment> {
        engine::environment(self.ort_lib.as_deref())
    }
}

/// Differentially private training (DP-SGD at the patient level; see `docs/membership.md`).
#[derive(Args)]
pub struct DpArgs {
    /// Train with DP-SGD to spend at most this ε (per patient): Poisson-sampled lots of
    /// expected size --batch, each patient's gradient clipped to --dp-clip, Gaussian noise
    /// planned by the RDP accountant over --steps. The bundle records the ε spent.
    #[arg(long)]
    pub dp_epsilon: Option<f64>,
    /// With --dp-epsilon: δ (default 1/(10 · patients)).
    #[arg(long, requires = "dp_epsilon")]
    pub dp_delta: Option<f64>,
    /// With --dp-epsilon: the L2 norm each patient's gradient is clipped to.
    #[arg(long, default_value_t = 1.0, requires = "dp_epsilon")]
    pub dp_clip: f32,
}

impl DpArgs {
    /// The DP-SGD plan for `steps` steps of expected lot `lot` on `data`, if asked for.
    pub fn plan(
        &self,
        data: &Dataset,
        lot: usize,
        steps: u64,
    ) -> anyhow::Result<Option<unpersonal_trainer::dp::DpSgd>> {
        let Some(epsilon) = self.dp_epsilon else { return Ok(None) };
        let units = unpersonal_trainer::dp::Units::of(data);
        let dp = unpersonal_trainer::dp::DpSgd::plan(
            epsilon,
            self.dp_delta,
            self.dp_clip,
            lot,
            &units,
            steps,
        )?;
        eprintln!(
            "DP-SGD: ε ≤ {epsilon} at δ = {:.1e} over {steps} steps for {} patients: lots of {:.1} expected (q = {:.4}), noise σ = {:.3} × clip {}",
            dp.delta,
            dp.patients,
            dp.expected_lot(),
            dp.sample_rate,
            dp.noise_multiplier,
            dp.clip
        );
        Ok(Some(dp))
    }
}

/// Flags that control a training run's invocation (not its result).
#[derive(Args)]
pub struct RunControl {
    /// Continue the checkpoint in --run.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: continue under a new learning-rate schedule (--steps, --lr, --warmup)
    /// and/or --batch; the schedule is evaluated from the current step on, and everything else
    /// must match the checkpoint.
    #[arg(long, requires = "resume")]
    pub reschedule: bool,
    /// Save a checkpoint every N steps.
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: u64,
    /// Train at most N steps in this invocation, checkpoint and exit (continue with --resume).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// End training once this invocation has trained this long (e.g. 20m, 2h), checkpoint and
    /// export the weights as they are, even before the schedule's end.
    #[arg(long, value_parser = unpersonal_trainer::budget::parse_duration)]
    pub time_limit: Option<std::time::Duration>,
    /// Keep the weights of the best held-out evaluation (--test-data: the loss for the
    /// classifier and the denoiser, the ROC AUC for the re-id model) and end training once
    /// --patience evaluations in a row bring no improvement; the schedule's --steps is then
    /// an upper bound.
    #[arg(long)]
    pub keep_best: bool,
    /// With --keep-best: evaluations in a row without improvement that end training.
    #[arg(long, default_value_t = 3, requires = "keep_best", value_parser = clap::value_parser!(u32).range(1..))]
    pub patience: u32,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl RunControl {
    /// The run options for run directory `run_dir`, evaluating every `eval_every` steps.
    pub fn options(&self, run_dir: &Path, eval_every: u64, session: SessionConfig) -> RunOptions {
        RunOptions {
            run_dir: run_dir.to_path_buf(),
            session,
            resume: self.resume,
            reschedule: self.reschedule,
            checkpoint_every: self.checkpoint_every,
            eval_every,
            quiet: self.quiet,
            stop_after: self.stop_after,
            time_limit: self.time_limit,
            selection: None,
            initial_weights: None,
        }
    }

    /// Under --keep-best, the selection by evaluation metric `metric`.
    pub fn selection(&self, metric: &'static str, lower_is_better: bool) -> Option<Selection> {
        self.keep_best.then_some(Selection { metric, lower_is_better, patience: self.patience })
    }
}

/// Where a training command's data comes from.
#[derive(Args)]
pub struct DataArgs {
    /// Training data: a directory with Fashion-MNIST/MNIST IDX files, a findings CSV or a
    /// filelist (docs/data.md).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    pub data: PathBuf,
    /// Held-out data for evaluation and calibration, never trained on (default: the IDX
    /// directory's t10k split; a filelist needs one).
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Bring every image to SIZE×SIZE pixels by the size rule of docs/data.md (shorter side
    /// scaled, centre cut out), recorded in the bundle so references are read alike (default:
    /// the images must all have one size, which is kept).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<usize>,
    /// The CSV columns that are findings (default: every column but path, patient_id and
    /// sop_instance_uid).
    #[arg(long, value_delimiter = ',')]
    pub findings: Option<Vec<String>>,
}

impl DataArgs {
    /// The training set (truncated to `--limit`) and the held-out set, checked to have the
    /// same image size and label count.
    pub fn load(&self) -> anyhow::Result<(Dataset, Dataset)> {
        let options = FilelistOptions {
            resize: self.size,
            findings: self.findings.clone(),
            ..FilelistOptions::default()
        };
        let mut train = Dataset::load_with(&self.data, Split::Train, &options)?;
        if let Some(n) = self.limit {
            train.truncate(n);
        }
        let test = match &self.test_data {
            Some(path) => Dataset::load_with(path, Split::Test, &options)?,
            None if self.data.is_dir() => Dataset::load_with(&self.data, Split::Test, &options)?,
            None => anyhow::bail!(
                "{} is a filelist: pass --test-data with a labelled test filelist",
                self.data.display()
            ),
        };
        anyhow::ensure!(
            (test.channels, test.height, test.width, test.num_labels)
                == (train.channels, train.height, train.width, train.num_labels),
            "test data {} does not match the training data's image size or label count",
            test.name
        );
        Ok((train, test))
    }
}

/// The `logits` output of an exported classifier for one batch.
pub fn logits(session: &mut ort::session::Session, x: &HostTensor) -> anyhow::Result<HostTensor> {
    let mut out = engine::run(session, &[("image", x)])?;
    out.remove("logits").context("the model has no `logits` output")
}

/// The first `n` images of `data` as one normalised batch.
pub fn first_images(data: &Dataset, norm: Normalization, n: usize) -> HostTensor {
    let b = epoch_batches(data, n.min(data.len()), norm).next().expect("non-empty data");
    HostTensor { shape: vec![b.n, data.channels, data.height, data.width], data: b.images }
}

/// The trainer's name and version, for provenance.
pub const TRAINER: &str = concat!("unpersonal-trainer ", env!("CARGO_PKG_VERSION"));
