//! `unpersonal-train`: trains Unpersonal's networks with ONNX Runtime and exports them to ONNX.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use unpersonal_trainer::data::{Augment, Dataset, Normalization, Split};
use unpersonal_trainer::engine::{self, Device, HostTensor, SessionConfig};
use unpersonal_trainer::eval::{self, Accuracy};
use unpersonal_trainer::export::{self, Weights};
use unpersonal_trainer::models::{ClassifierConfig, Model};
use unpersonal_trainer::step::{self, AdamW};
use unpersonal_trainer::train::{self, RunOptions, Schedule, TrainConfig};
use unpersonal_trainer::{bundle, checkpoint, graph};

/// Train Unpersonal's networks on ONNX Runtime (CPU or CUDA) and export them to ONNX.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the classifier (logits + L2-normalised features) and export it into a bundle.
    Classifier(ClassifierArgs),
    /// Evaluate an exported classifier ONNX file on a labelled dataset.
    Eval(EvalArgs),
    /// Measure training throughput (images/s) of the classifier on synthetic batches.
    Bench(BenchArgs),
}

/// Options shared by every command that runs ONNX Runtime.
#[derive(Args)]
struct EngineArgs {
    /// Execution device. `cuda` fails if the CUDA execution provider cannot run (never a
    /// silent CPU fallback).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Intra-op threads of ONNX Runtime (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Path of libonnxruntime.so (default: $ORT_DYLIB_PATH, else the one in ./.venv).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

impl EngineArgs {
    fn session(&self) -> SessionConfig {
        SessionConfig { device: self.device, threads: self.threads, profile: None }
    }
}

#[derive(Args)]
struct ClassifierArgs {
    /// Training data: a directory with Fashion-MNIST/MNIST IDX files, or a filelist
    /// (`relative/path.png l0 l1 …`, paths relative to the filelist's directory).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data: PathBuf,
    /// Test data for evaluation (default: the IDX directory's t10k split; a filelist needs one).
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// Bundle directory the exported model and bundle.json are written to.
    #[arg(long)]
    out: PathBuf,
    /// Run directory for the checkpoint and the JSON log.
    #[arg(long, default_value = "runs/classifier")]
    run: PathBuf,
    /// Continue the checkpoint in --run.
    #[arg(long)]
    resume: bool,
    /// Training length in epochs (ignored when --steps is given).
    #[arg(long, default_value_t = 15)]
    epochs: u64,
    /// Training length in optimisation steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Peak learning rate (linear warm-up, cosine decay).
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Warm-up steps.
    #[arg(long, default_value_t = 300)]
    warmup: u64,
    /// AdamW decoupled weight decay (weights only).
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f32,
    /// EMA decay of the exported weights.
    #[arg(long, default_value_t = 0.999)]
    ema: f32,
    /// Seed of initialisation, batch order and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Channel widths of stem, stage 1 and stage 2.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 48, 96])]
    widths: Vec<usize>,
    /// Maximum random shift in pixels (augmentation; 0 disables).
    #[arg(long, default_value_t = 2)]
    shift: usize,
    /// Disable random horizontal flips (they are only used where the data allows them).
    #[arg(long)]
    no_flip: bool,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate on the test set every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    eval_every: u64,
    /// Save a checkpoint every N steps.
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// Train at most N steps in this invocation, checkpoint and exit (continue with --resume).
    #[arg(long)]
    stop_after: Option<u64>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// Exported classifier (ONNX with an `image` input and a `logits` output).
    #[arg(long)]
    model: PathBuf,
    /// Labelled data: IDX directory (its test split) or a filelist.
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data: PathBuf,
    /// Inference engine.
    #[arg(long, value_enum, default_value_t = EvalEngine::Ort)]
    with: EvalEngine,
    /// Batch size.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EvalEngine {
    /// ONNX Runtime.
    Ort,
    /// tract (pure Rust).
    Tract,
}

#[derive(Args)]
struct BenchArgs {
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Write ONNX Runtime's per-operator profile (a JSON trace) with this path prefix.
    #[arg(long)]
    profile: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classifier(args) => classifier(args),
        Command::Eval(args) => evaluate(args),
        Command::Bench(args) => bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the evaluation split matching `--data`.
fn load_test(data: &Path, test: Option<&Path>) -> anyhow::Result<Dataset> {
    match test {
        Some(path) => Ok(Dataset::load(path, Split::Test)?),
        None if data.is_dir() => Ok(Dataset::load(data, Split::Test)?),
        None => anyhow::bail!("{} is a filelist: pass --test-data with a labelled test filelist", data.display()),
    }
}

fn classifier(args: ClassifierArgs) -> anyhow::Result<()> {
    let env = engine::environment(args.engine.ort_lib.as_deref())?;
    checkpoint::ensure_writable(&args.out)?;
    checkpoint::ensure_writable(&args.run)?;
    let mut data = Dataset::load(&args.data, Split::Train)?;
    if let Some(n) = args.limit {
        data.truncate(n);
    }
    let test = load_test(&args.data, args.test_data.as_deref())?;
    anyhow::ensure!(
        (test.channels, test.height, test.width, test.num_labels) == (data.channels, data.height, data.width, data.num_labels),
        "test data {} does not match the training data's image size or label count",
        test.name
    );
    let widths: [usize; 3] = args.widths.as_slice().try_into().context("--widths takes three numbers, e.g. 32,48,96")?;
    let model = ClassifierConfig {
        channels: data.channels,
        height: data.height,
        width: data.width,
        classes: data.num_labels,
        widths,
        groups: 8,
    };
    model.validate()?;
    let norm = Normalization::SYMMETRIC;
    let per_epoch = (data.len() / args.batch.max(1)) as u64;
    let steps = args.steps.unwrap_or(args.epochs * per_epoch);
    let cfg = TrainConfig {
        model: json!({ "kind": model.kind(), "config": model }),
        data: args.data.display().to_string(),
        samples: data.len(),
        batch: args.batch,
        schedule: Schedule { steps, warmup: args.warmup.min(steps / 2), lr: args.lr, final_ratio: 0.01 },
        adamw: AdamW { weight_decay: args.weight_decay, ..AdamW::default() },
        ema: args.ema,
        seed: args.seed,
        augment: Augment { shift: args.shift, hflip: !args.no_flip, brightness: 0.0, contrast: 0.0 },
        normalization: norm,
    };
    let session_config = args.engine.session();
    let opts = RunOptions {
        run_dir: args.run.clone(),
        session: session_config.clone(),
        resume: args.resume,
        checkpoint_every: args.checkpoint_every,
        eval_every: args.eval_every,
        quiet: args.quiet,
        stop_after: args.stop_after,
    };
    if !args.quiet {
        eprintln!(
            "training the classifier on {} ({} images, {} steps of {}) on {:?}",
            data.name, data.len(), steps, args.batch, args.engine.device
        );
    }
    let (state, summary) = train::train(&model, &cfg, &data, &opts, env, |_, state| {
        let onnx = export::onnx_bytes(&model, state, Weights::Ema, vec![])?;
        let mut session = engine::session(env, &onnx, &session_config)?;
        let acc = eval::accuracy(&test, norm, 500, |x| logits(&mut session, x))?;
        Ok(json!({ "test_accuracy": acc.rate(), "test_images": acc.total }))
    })?;
    if summary.steps < steps {
        println!("{}", json!({ "stopped_at_step": summary.steps, "of": steps, "resume_with": "--resume" }));
        return Ok(());
    }

    // Export, then measure what ships: the exported file on ONNX Runtime, and tract against it.
    let mut provenance = json!({
        "architecture": cfg.model, "dataset": data.name, "training_images": data.len(),
        "steps": steps, "batch": args.batch, "weights": "ema", "ema_decay": args.ema,
        "trainer": concat!("unpersonal-trainer ", env!("CARGO_PKG_VERSION")),
    });
    let onnx = export::onnx_bytes(&model, &state, Weights::Ema, vec![("unpersonal.role".into(), "classifier".into())])?;
    let mut session = engine::session(env, &onnx, &session_config)?;
    let acc = eval::accuracy(&test, norm, 500, |x| logits(&mut session, x))?;
    let probe = eval_batch(&test, norm, 64);
    let parity = export::parity(env, &onnx, "image", &probe)?;
    anyhow::ensure!(parity <= 1e-4, "ONNX Runtime and tract disagree on the exported model by {parity:e} relative to the output scale (> 1e-4)");
    provenance["metrics"] = json!({
        "test_accuracy": acc.rate(), "test_images": acc.total, "test_dataset": test.name,
        "ort_tract_max_scaled_diff": parity,
    });
    let (c, h, w) = (data.channels, data.height, data.width);
    bundle::write(
        &args.out,
        &data,
        norm,
        bundle::Entry {
            role: "classifier",
            file: "classifier.onnx",
            onnx: &onnx,
            inputs: vec![bundle::tensor_spec("image", &[c, h, w])],
            outputs: vec![
                bundle::tensor_spec("logits", &[model.classes]),
                bundle::tensor_spec("features", &[model.feature_dim()]),
            ],
            provenance,
        },
    )?;
    println!(
        "{}",
        json!({
            "out": args.out.join("classifier.onnx"), "test_accuracy": acc.rate(), "ort_tract_max_scaled_diff": parity,
            "steps": summary.steps, "images_per_second": summary.images_per_second, "last_loss": summary.last_loss,
        })
    );
    Ok(())
}

/// The `logits` output of an exported classifier for one batch.
fn logits(session: &mut ort::session::Session, x: &HostTensor) -> anyhow::Result<HostTensor> {
    let mut out = engine::run(session, &[("image", x)])?;
    out.remove("logits").context("the model has no `logits` output")
}

/// The first `n` test images as one normalised batch.
fn eval_batch(data: &Dataset, norm: Normalization, n: usize) -> HostTensor {
    let b = unpersonal_trainer::data::epoch_batches(data, n.min(data.len()), norm).next().expect("non-empty data");
    HostTensor { shape: vec![b.n, data.channels, data.height, data.width], data: b.images }
}

fn evaluate(args: EvalArgs) -> anyhow::Result<()> {
    let model = std::fs::read(&args.model).with_context(|| format!("cannot read {}", args.model.display()))?;
    let data = if args.data.is_dir() { Dataset::load(&args.data, Split::Test)? } else { Dataset::load(&args.data, Split::Train)? };
    let norm = Normalization::SYMMETRIC;
    let started = Instant::now();
    let acc: Accuracy = match args.with {
        EvalEngine::Ort => {
            let env = engine::environment(args.engine.ort_lib.as_deref())?;
            let mut session = engine::session(env, &model, &args.engine.session())
                .with_context(|| format!("{} is not a model ONNX Runtime can run", args.model.display()))?;
            eval::accuracy(&data, norm, args.batch, |x| logits(&mut session, x))?
        }
        EvalEngine::Tract => eval::accuracy(&data, norm, args.batch, |x| {
            let outputs = export::run_tract(&model, x).with_context(|| format!("tract cannot run {}", args.model.display()))?;
            outputs.into_iter().next().context("the model has no outputs")
        })?,
    };
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", json!({ "model": args.model, "data": data.name, "accuracy": acc.rate(), "correct": acc.correct, "total": acc.total, "seconds": secs }));
    } else {
        println!("{}: accuracy {:.4} ({}/{}) on {} in {secs:.1} s", args.model.display(), acc.rate(), acc.correct, acc.total, data.name);
    }
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let env = engine::environment(args.engine.ort_lib.as_deref())?;
    let model = ClassifierConfig::fashion_mnist();
    let step_graph = step::build(&model, args.batch, &AdamW::default());
    let state = step::initial_state(&step_graph.params, 0);
    let mut config = args.engine.session();
    config.profile = args.profile.clone();
    let mut engine = engine::TrainingEngine::new(env, &step_graph, &state, &config)?;
    let [c, h, w] = [model.channels, model.height, model.width];
    let images: Vec<f32> = (0..args.batch * c * h * w).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
    let mut labels = vec![0f32; args.batch * model.classes];
    for i in 0..args.batch {
        labels[i * model.classes + i % model.classes] = 1.0;
    }
    for t in 1..=3 {
        engine.step(&[&images, &labels], t, 1e-3, 0.99)?;
    }
    let started = Instant::now();
    for t in 4..4 + args.steps {
        engine.step(&[&images, &labels], t, 1e-3, 0.99)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = (args.steps as usize * args.batch) as f64 / secs;
    let params: usize = step_graph.params.iter().map(|p| graph::numel(&p.shape)).sum();
    if args.json {
        println!("{}", json!({ "model": "classifier", "batch": args.batch, "steps": args.steps, "images_per_second": rate, "ms_per_step": secs * 1e3 / args.steps as f64, "parameters": params, "device": args.engine.device }));
    } else {
        println!("classifier ({params} parameters), batch {}: {rate:.1} images/s, {:.1} ms/step", args.batch, secs * 1e3 / args.steps as f64);
    }
    Ok(())
}
