//! The training loop shared by every model: schedule, batches, steps on the engine, JSON log,
//! progress bar, periodic evaluation and checkpoints, and resumption.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{self, Best, Checkpoint, Progress};
use crate::data::{Augment, Batch, Batcher, BatcherState, Dataset, Normalization};
use crate::dp::{DpEngine, DpSgd, GradientGraph, Lots};
use crate::engine::{SessionConfig, State, StepOutput, TrainingEngine};
use crate::eval::Accuracy;
use crate::models::Model;
use crate::step::{self, AdamW, ParamSpec};

/// Learning rate: linear warm-up, then cosine decay to `final_ratio · lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Total optimisation steps.
    pub steps: u64,
    /// Warm-up steps.
    pub warmup: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// Final learning rate as a fraction of the peak.
    pub final_ratio: f32,
}

impl Schedule {
    /// Learning rate at 1-based `step`.
    pub fn lr(&self, step: u64) -> f32 {
        if step <= self.warmup {
            return self.lr * step as f32 / self.warmup.max(1) as f32;
        }
        let progress = (step - self.warmup) as f32 / (self.steps - self.warmup).max(1) as f32;
        let cosine = 0.5 * (1.0 + (std::f32::consts::PI * progress.min(1.0)).cos());
        self.lr * (self.final_ratio + (1.0 - self.final_ratio) * cosine)
    }
}

/// Turns a batch of training data into the values of the step graph's batch inputs, in the
/// order the model declares them. A pure function of the batch and the step number, so a
/// resumed run repeats an uninterrupted one.
pub trait Feed {
    /// The batch inputs for 1-based step `step`.
    fn feed(&self, batch: &Batch, step: u64) -> Vec<Vec<f32>>;
}

/// The feed of supervised models: the (augmented) images and their labels.
pub struct Supervised;

impl Feed for Supervised {
    fn feed(&self, batch: &Batch, _: u64) -> Vec<Vec<f32>> {
        vec![batch.images.clone(), batch.labels.clone()]
    }
}

/// Everything that determines a run's result; stored in checkpoints and compared on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model kind and its configuration.
    pub model: serde_json::Value,
    /// Training data, as given.
    pub data: String,
    /// Number of training samples used.
    pub samples: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Optimiser.
    pub adamw: AdamW,
    /// Target EMA decay (warmed up as `min(ema, (1+t)/(10+t))`).
    pub ema: f32,
    /// Seed of initialisation, batch order and augmentation.
    pub seed: u64,
    /// Augmentation.
    pub augment: Augment,
    /// Pixel normalisation.
    pub normalization: Normalization,
    /// DP-SGD, when the run is differentially private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpSgd>,
}

/// How to run (does not change the result, except the device within floating-point tolerance).
#[derive(Debug)]
pub struct RunOptions {
    /// Directory of the checkpoint and the JSON log.
    pub run_dir: PathBuf,
    /// Execution device and threads.
    pub session: SessionConfig,
    /// Continue from the run directory's checkpoint.
    pub resume: bool,
    /// When resuming, accept a checkpoint whose learning-rate schedule or batch size differs
    /// from the configuration's (nothing else; the new length must lie beyond the current step).
    pub reschedule: bool,
    /// Save a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Evaluate every this many steps (and at the end); 0: only at the end.
    pub eval_every: u64,
    /// No progress bar.
    pub quiet: bool,
    /// Stop (with a checkpoint) after this many steps of this invocation; resume later.
    pub stop_after: Option<u64>,
    /// End training (with a checkpoint) once this invocation has trained this long, even
    /// before the schedule's end: the run is then over and exported as it is (a time budget,
    /// not a pause).
    pub time_limit: Option<std::time::Duration>,
    /// Keep the weights of the best evaluation and end training once it stops improving.
    pub selection: Option<Selection>,
    /// Start a new run from these weights (by parameter name) instead of the model's
    /// initialisation, e.g. a student from its teacher.
    pub initial_weights: Option<std::collections::HashMap<String, crate::engine::HostTensor>>,
}

/// Which evaluation decides the weights a run ends with: the run keeps the state of its best
/// evaluation (in `best.safetensors` beside the checkpoint), ends once `patience`
/// evaluations in a row brought no improvement, and returns that best state, so a long
/// schedule on a small data set ends where the held-out metric stopped improving.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Key of the evaluation's JSON object that decides (a number).
    pub metric: &'static str,
    /// Whether lower values are better (a loss) or higher (an AUC).
    pub lower_is_better: bool,
    /// Evaluations in a row without improvement that end training.
    pub patience: u32,
}

impl Selection {
    /// Updates `best` with the evaluation `eval` of step `step`; true when it improved.
    fn observe(
        &self,
        best: &mut Option<Best>,
        step: u64,
        eval: &serde_json::Value,
    ) -> anyhow::Result<bool> {
        let value = eval[self.metric].as_f64().with_context(|| {
            format!("the evaluation has no number {} to select weights by: {eval}", self.metric)
        })?;
        let better = |old: f64| if self.lower_is_better { value < old } else { value > old };
        match best {
            Some(b) if !better(b.value) => {
                b.stale += 1;
                Ok(false)
            }
            _ => {
                *best = Some(Best { step, value, stale: 0 });
                Ok(true)
            }
        }
    }
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Steps completed in total (below the schedule's length when stopped early).
    pub steps: u64,
    /// Steps run by this invocation.
    pub steps_this_run: u64,
    /// Training throughput of this invocation, images per second.
    pub images_per_second: f64,
    /// Mean loss over the last logging window.
    pub last_loss: f32,
    /// The last evaluation.
    pub last_eval: serde_json::Value,
    /// Training ended at [`RunOptions::time_limit`], before the schedule's end.
    pub out_of_time: bool,
    /// Training ended because the held-out metric of [`RunOptions::selection`] stopped
    /// improving, before the schedule's end.
    pub converged: bool,
    /// The evaluation whose weights were returned, under [`RunOptions::selection`].
    pub best: Option<Best>,
    /// The schedule's length.
    pub planned_steps: u64,
}

impl Summary {
    /// True when this invocation stopped before the run was over (`--stop-after`): the
    /// checkpoint continues it, and there is nothing to export yet.
    pub fn paused(&self) -> bool {
        self.steps < self.planned_steps && !self.out_of_time && !self.converged
    }

    /// The step of the weights the run returned: its best evaluation under a selection, else
    /// its last step.
    pub fn weights_step(&self) -> u64 {
        self.best.as_ref().map_or(self.steps, |b| b.step)
    }
}

const LOG_EVERY: u64 = 50;

/// Trains `model` on `data`, fed to the step graph by `feed`, and returns the final state.
/// `evaluate` receives the step and the state (EMA weights included) and returns metrics for
/// the log.
pub fn train(
    model: &dyn Model,
    cfg: &TrainConfig,
    data: &Dataset,
    feed: &dyn Feed,
    opts: &RunOptions,
    env: &ort::environment::Environment,
    mut evaluate: impl FnMut(u64, &State) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<(State, Summary)> {
    let ckpt_path = opts.run_dir.join("checkpoint.safetensors");
    let best_path = opts.run_dir.join("best.safetensors");
    let (mut steps, progress) = match &cfg.dp {
        None => {
            let step_graph = step::build(model, cfg.batch, &cfg.adamw);
            let (state, progress) = start_state(&step_graph.params, cfg, opts, &ckpt_path)?;
            let mut batcher = Batcher::new(
                data,
                cfg.batch,
                cfg.seed,
                cfg.normalization,
                cfg.augment.clone(),
                true,
                true,
            )?;
            batcher.restore(progress.batcher);
            let engine = TrainingEngine::new(env, &step_graph, &state, &opts.session)?;
            (Steps::Batches { engine, batcher }, progress)
        }
        Some(dp) => {
            let gradient = GradientGraph::build(model, dp.clip);
            let (state, progress) = start_state(&gradient.params, cfg, opts, &ckpt_path)?;
            let lots = Lots::new(data, dp, cfg.seed, cfg.normalization, cfg.augment.clone())?;
            let engine = DpEngine::new(env, gradient, &cfg.adamw, dp, &state, &opts.session)?;
            (Steps::Lots { engine, lots, images_per_step: dp.expected_lot() }, progress)
        }
    };

    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.run_dir.join("log.jsonl"))
        .with_context(|| format!("cannot write the log in {}", opts.run_dir.display()))?;
    let bar = progress_bar(opts.quiet, cfg.schedule.steps, progress.step);
    // Piped to a log, the bar is hidden: a status line then every minute instead.
    let mut status_line = (!opts.quiet && !std::io::stderr().is_terminal()).then(Instant::now);

    let stop = stop_flag()?;
    let started = Instant::now();
    let first = progress.step + 1;
    let end =
        opts.stop_after.map_or(cfg.schedule.steps, |n| (progress.step + n).min(cfg.schedule.steps));
    let (mut window_loss, mut window_steps, mut window_acc) = (0f64, 0u64, Accuracy::default());
    let mut window_start = Instant::now();
    let (mut last_loss, mut last_eval) = (f32::NAN, serde_json::Value::Null);
    let mut end_at = end;
    let mut best = progress.best.clone();
    let mut converged = false;
    for t in first..=end {
        let lr = cfg.schedule.lr(t);
        let ema_decay = cfg.ema.min((1.0 + t as f32) / (10.0 + t as f32));
        let (batch, out) = steps.step(feed, t, lr, ema_decay)?;
        window_loss += out.loss as f64;
        window_steps += 1;
        if let Some(logits) = out.metrics.get("logits") {
            window_acc.add(&logits.data, &batch.labels, data.num_labels, data.multi_label);
        }
        bar.inc(1);

        // SIGINT or SIGTERM (a scheduler's time limit, Ctrl-C): checkpoint this step and stop.
        let stopping = stop.load(Ordering::Relaxed);
        let out_of_time = opts.time_limit.is_some_and(|limit| started.elapsed() >= limit);
        let last = t == end || stopping || out_of_time;
        if t % LOG_EVERY == 0 || last {
            last_loss = (window_loss / window_steps as f64) as f32;
            let rate = window_steps as f64 * steps.images_per_step(cfg.batch)
                / window_start.elapsed().as_secs_f64();
            bar.set_message(format!("loss {last_loss:.4}  {rate:.0} img/s"));
            if let Some(printed) = status_line.as_mut()
                && (printed.elapsed().as_secs() >= 60 || last)
            {
                let done = t.saturating_sub(progress.step) as f64;
                let left = started.elapsed().as_secs_f64() / done.max(1.0) * (end - t) as f64;
                eprintln!(
                    "step {t}/{}  loss {last_loss:.4}  {rate:.0} img/s  {:.1} min left",
                    cfg.schedule.steps,
                    left / 60.0
                );
                *printed = Instant::now();
            }
            let mut line = json!({
                "step": t, "epoch": steps.batcher_state().epoch, "loss": last_loss,
                "lr": lr, "images_per_second": rate, "elapsed_s": started.elapsed().as_secs_f64(),
            });
            if window_acc.total > 0 {
                line["train_accuracy"] = json!(window_acc.rate());
            }
            writeln!(log, "{line}")?;
            (window_loss, window_steps, window_acc) = (0.0, 0, Accuracy::default());
            window_start = Instant::now();
        }
        let mut checkpoint_due = t % opts.checkpoint_every.max(1) == 0 || last;
        // Under a selection the state a time limit ends on competes too.
        let eval_due = (opts.eval_every > 0 && t % opts.eval_every == 0)
            || t == cfg.schedule.steps
            || (out_of_time && !stopping && opts.selection.is_some());
        if checkpoint_due || eval_due {
            let state = steps.state()?;
            if eval_due {
                last_eval = evaluate(t, &state)?;
                bar.println(format!("step {t}: {last_eval}"));
                writeln!(log, "{}", json!({ "step": t, "eval": last_eval }))?;
                if let Some(selection) = &opts.selection {
                    if selection.observe(&mut best, t, &last_eval)? {
                        let progress = Progress {
                            step: t,
                            batcher: steps.batcher_state(),
                            best: best.clone(),
                        };
                        checkpoint::save(
                            &best_path,
                            &Checkpoint {
                                config: serde_json::to_value(cfg)?,
                                progress,
                                state: state.clone(),
                            },
                        )?;
                    }
                    converged = best.as_ref().is_some_and(|b| b.stale >= selection.patience);
                    checkpoint_due |= converged;
                }
            }
            if checkpoint_due {
                let progress =
                    Progress { step: t, batcher: steps.batcher_state(), best: best.clone() };
                checkpoint::save(
                    &ckpt_path,
                    &Checkpoint { config: serde_json::to_value(cfg)?, progress, state },
                )?;
            }
        }
        if converged && !stopping && t < end {
            end_at = t;
            break;
        }
        if out_of_time && !stopping && t < end {
            end_at = t;
            break;
        }
        if stopping {
            bar.finish_and_clear();
            bail!(
                "stopped by a signal after step {t} of {}: the checkpoint {} holds it; run the same command with --resume to continue (nothing was exported)",
                cfg.schedule.steps,
                ckpt_path.display()
            );
        }
    }
    bar.finish_and_clear();
    let out_of_time = end_at < end && !converged;
    let end = end_at;
    if out_of_time {
        eprintln!(
            "the time limit ended training at step {end} of {}; exporting it as it is",
            cfg.schedule.steps
        );
    }
    if converged && let (Some(b), Some(selection)) = (&best, &opts.selection) {
        eprintln!(
            "{} stopped improving: training ended at step {end} of {}, {} evaluations after its best, at step {}",
            selection.metric, cfg.schedule.steps, b.stale, b.step
        );
    }
    // Under a selection the run ends with its best evaluated state, once it is over.
    let finished = end == cfg.schedule.steps || out_of_time || converged;
    let state = match (&opts.selection, &best) {
        (Some(_), Some(b)) if finished && b.step != end => {
            let saved = checkpoint::load(&best_path)?;
            anyhow::ensure!(
                saved.progress.step == b.step,
                "{} holds step {}, the run's best is step {}",
                best_path.display(),
                saved.progress.step,
                b.step
            );
            saved.state
        }
        _ => steps.state()?,
    };
    let steps_this_run = end.saturating_sub(progress.step);
    let summary = Summary {
        steps: end,
        steps_this_run,
        images_per_second: steps_this_run as f64 * steps.images_per_step(cfg.batch)
            / started.elapsed().as_secs_f64(),
        last_loss,
        last_eval,
        out_of_time,
        converged,
        best: if opts.selection.is_some() { best } else { None },
        planned_steps: cfg.schedule.steps,
    };
    Ok((state, summary))
}

/// How a run draws its batches and steps: shuffled epochs on the training-step graph, or
/// DP-SGD's Poisson lots on the per-example engine.
#[allow(clippy::large_enum_variant)] // one per run, never moved in a loop
enum Steps<'a> {
    Batches { engine: TrainingEngine, batcher: Batcher<'a> },
    Lots { engine: DpEngine, lots: Lots<'a>, images_per_step: f64 },
}

impl Steps<'_> {
    /// Draws step `t`'s batch and trains on it.
    fn step(
        &mut self,
        feed: &dyn Feed,
        t: u64,
        lr: f32,
        ema_decay: f32,
    ) -> anyhow::Result<(Batch, StepOutput)> {
        match self {
            Steps::Batches { engine, batcher } => {
                let batch = batcher.next_batch();
                let inputs = feed.feed(&batch, t);
                let inputs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
                let out = engine.step(&inputs, t, lr, ema_decay)?;
                Ok((batch, out))
            }
            Steps::Lots { engine, lots, .. } => {
                let lot = lots.next(t);
                let out = engine.step(&feed.feed(&lot, t), lot.n, t, lr, ema_decay)?;
                Ok((lot, out))
            }
        }
    }

    /// Images per step: the batch, or DP-SGD's expected lot.
    fn images_per_step(&self, batch: usize) -> f64 {
        match self {
            Steps::Batches { .. } => batch as f64,
            Steps::Lots { images_per_step, .. } => *images_per_step,
        }
    }

    /// Where the batcher stands (lots have no position: every step draws anew).
    fn batcher_state(&self) -> BatcherState {
        match self {
            Steps::Batches { batcher, .. } => batcher.state(),
            Steps::Lots { .. } => BatcherState::default(),
        }
    }

    fn state(&self) -> anyhow::Result<State> {
        match self {
            Steps::Batches { engine, .. } => engine.state(),
            Steps::Lots { engine, .. } => engine.state(),
        }
    }
}

/// The state and step of the checkpoint in `run_dir`, for exporting it as it is
/// (`--export-only`); an error unless it was trained with `cfg`.
pub fn checkpointed(run_dir: &std::path::Path, cfg: &TrainConfig) -> anyhow::Result<(State, u64)> {
    let ckpt = checkpoint::load(&run_dir.join("checkpoint.safetensors"))?;
    anyhow::ensure!(
        serde_json::from_value::<TrainConfig>(ckpt.config.clone()).ok().as_ref() == Some(cfg),
        "the checkpoint in {} was trained with other settings than these flags: {}",
        run_dir.display(),
        ckpt.config
    );
    Ok((ckpt.state, ckpt.progress.step))
}

/// Set when SIGINT or SIGTERM arrives: the training loop then checkpoints the step it is on and
/// stops. A second signal while that checkpoint is written ends the process at once (exit
/// status 130); the previous checkpoint, replaced atomically, is then still whole.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(flag) = FLAG.get() {
        return Ok(Arc::clone(flag));
    }
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .context("cannot handle termination signals")?;
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot handle termination signals")?;
    }
    Ok(Arc::clone(FLAG.get_or_init(|| flag)))
}

/// The state to start from: a fresh initialisation, or the checkpoint when resuming.
fn start_state(
    params: &[ParamSpec],
    cfg: &TrainConfig,
    opts: &RunOptions,
    ckpt_path: &std::path::Path,
) -> anyhow::Result<(State, Progress)> {
    std::fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("cannot create run directory {}", opts.run_dir.display()))?;
    if !ckpt_path.exists() {
        if opts.resume {
            bail!("cannot resume: {} does not exist", ckpt_path.display());
        }
        let fresh =
            Progress { step: 0, batcher: BatcherState { epoch: 0, position: 0 }, best: None };
        let state = match &opts.initial_weights {
            Some(weights) => step::state_from_weights(params, weights)?,
            None => step::initial_state(params, cfg.seed),
        };
        return Ok((state, fresh));
    }
    if !opts.resume {
        bail!(
            "{} already holds a checkpoint: pass --resume to continue it, or choose another --run",
            opts.run_dir.display()
        );
    }
    let ckpt = checkpoint::load(ckpt_path)?;
    let mut saved: Option<TrainConfig> = serde_json::from_value(ckpt.config.clone()).ok();
    if opts.reschedule
        && let Some(saved) = saved.as_mut()
        && (&saved.schedule, saved.batch) != (&cfg.schedule, cfg.batch)
    {
        if cfg.schedule.steps <= ckpt.progress.step {
            bail!(
                "cannot reschedule {} to {} steps: it is already at step {}",
                ckpt_path.display(),
                cfg.schedule.steps,
                ckpt.progress.step
            );
        }
        eprintln!(
            "rescheduling {} at step {}: {:?} → {:?}, batch {} → {}",
            ckpt_path.display(),
            ckpt.progress.step,
            saved.schedule,
            cfg.schedule,
            saved.batch,
            cfg.batch
        );
        saved.schedule = cfg.schedule.clone();
        saved.batch = cfg.batch;
    }
    if saved.as_ref() != Some(cfg) {
        bail!(
            "cannot resume {}: it was started with a different configuration\n  checkpoint: {}\n  now:        {}",
            ckpt_path.display(),
            ckpt.config,
            serde_json::to_value(cfg)?
        );
    }
    Ok((ckpt.state, ckpt.progress))
}

fn progress_bar(quiet: bool, total: u64, done: u64) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(done);
    let style =
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}")
            .expect("valid progress template");
    bar.set_style(style);
    bar
}
