//! `unpersonal-train classifier`: trains the classifier and exports it into a bundle.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use unpersonal_runtime::bundle::Role;
use unpersonal_trainer::data::{Augment, Normalization};
use unpersonal_trainer::engine;
use unpersonal_trainer::eval;
use unpersonal_trainer::export::{self, Weights};
use unpersonal_trainer::models::{ClassifierConfig, Model};
use unpersonal_trainer::step::AdamW;
use unpersonal_trainer::train::{self, RunOptions, Schedule, Supervised, TrainConfig};
use unpersonal_trainer::{bundle, checkpoint};

use super::{DataArgs, DpArgs, EngineArgs, RunControl, TRAINER, first_images, logits};

#[derive(Args)]
pub struct ClassifierArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Bundle directory the exported model and bundle.json are written to.
    #[arg(long)]
    out: PathBuf,
    /// Run directory for the checkpoint and the JSON log.
    #[arg(long, default_value = "runs/classifier")]
    run: PathBuf,
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
    /// Evaluate on the test set every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    eval_every: u64,
    #[command(flatten)]
    dp: DpArgs,
    #[command(flatten)]
    control: RunControl,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(args: ClassifierArgs) -> anyhow::Result<()> {
    let env = args.engine.environment()?;
    checkpoint::ensure_writable(&args.out)?;
    checkpoint::ensure_writable(&args.run)?;
    let (data, test) = args.data.load()?;
    let widths: [usize; 3] =
        args.widths.as_slice().try_into().context("--widths takes three numbers, e.g. 32,48,96")?;
    let model = ClassifierConfig {
        channels: data.channels,
        height: data.height,
        width: data.width,
        classes: data.num_labels,
        widths,
        groups: 8,
        multi_label: data.multi_label,
    };
    model.validate()?;
    let norm = Normalization::SYMMETRIC;
    let per_epoch = (data.len() / args.batch.max(1)) as u64;
    let steps = args.steps.unwrap_or(args.epochs * per_epoch);
    let cfg = TrainConfig {
        model: json!({ "kind": model.kind(), "config": model }),
        data: args.data.data.display().to_string(),
        samples: data.len(),
        batch: args.batch,
        schedule: Schedule {
            steps,
            warmup: args.warmup.min(steps / 2),
            lr: args.lr,
            final_ratio: 0.01,
        },
        adamw: AdamW { weight_decay: args.weight_decay, ..AdamW::default() },
        ema: args.ema,
        seed: args.seed,
        augment: Augment {
            shift: args.shift,
            hflip: !args.no_flip,
            brightness: 0.0,
            contrast: 0.0,
        },
        normalization: norm,
        dp: args.dp.plan(&data, args.batch, steps)?,
    };
    let session_config = args.engine.session();
    let opts = RunOptions {
        selection: args.control.selection("test_loss", true),
        ..args.control.options(&args.run, args.eval_every, session_config.clone())
    };
    if !args.control.quiet {
        eprintln!(
            "training the classifier on {} ({} images, {} steps of {}) on {:?}",
            data.name,
            data.len(),
            steps,
            args.batch,
            args.engine.device
        );
    }
    let (state, summary) = train::train(
        &model,
        &cfg,
        &data,
        &Supervised,
        &opts,
        env,
        |_, state| {
            let onnx = export::onnx_bytes(&model, state, Weights::Ema, vec![])?;
            let mut session = engine::session(env, &onnx, &session_config)?;
            let acc = eval::accuracy(&test, norm, 500, |x| logits(&mut session, x))?;
            Ok(
                json!({ "test_accuracy": acc.rate(), "test_loss": acc.loss(), "test_images": acc.images }),
            )
        },
    )?;
    if summary.paused() {
        println!(
            "{}",
            json!({ "stopped_at_step": summary.steps, "of": steps, "resume_with": "--resume" })
        );
        return Ok(());
    }

    // Export, then measure what ships: the exported file on ONNX Runtime, and tract against it.
    let mut provenance = json!({
        "architecture": cfg.model, "dataset": data.name, "training_images": data.len(),
        "steps": summary.weights_step(), "planned_steps": steps, "dp": cfg.dp.as_ref().map(|dp| dp.guarantee(summary.steps)).transpose()?, "batch": args.batch, "weights": "ema", "ema_decay": args.ema, "trainer": TRAINER,
    });
    let onnx = export::onnx_bytes(
        &model,
        &state,
        Weights::Ema,
        vec![("unpersonal.role".into(), "classifier".into())],
    )?;
    let mut session = engine::session(env, &onnx, &session_config)?;
    let acc = eval::accuracy(&test, norm, 500, |x| logits(&mut session, x))?;
    let probe = first_images(&test, norm, 64);
    let parity = export::parity(env, &onnx, &[("image", &probe)])?;
    anyhow::ensure!(
        parity <= 1e-4,
        "ONNX Runtime and tract disagree on the exported model by {parity:e} relative to the output scale (> 1e-4)"
    );
    provenance["metrics"] = json!({
        "test_accuracy": acc.rate(), "test_loss": acc.loss(), "test_images": acc.images, "test_dataset": test.name,
        "ort_tract_max_scaled_diff": parity,
    });
    let (c, h, w) = (data.channels, data.height, data.width);
    let entry = bundle::Entry {
        role: Role::Classifier,
        file: "classifier.onnx",
        onnx: &onnx,
        inputs: vec![bundle::tensor_spec("image", &[c, h, w])],
        outputs: vec![
            bundle::tensor_spec("logits", &[model.classes]),
            bundle::tensor_spec("features", &[model.feature_dim()]),
        ],
        provenance,
    };
    let sections = bundle::Sections { resize: args.data.size, ..bundle::Sections::default() };
    bundle::write(&args.out, &data, norm, vec![entry], sections)?;
    println!(
        "{}",
        json!({
            "out": args.out.join("classifier.onnx"), "test_accuracy": acc.rate(), "ort_tract_max_scaled_diff": parity,
            "steps": summary.weights_step(), "images_per_second": summary.images_per_second, "last_loss": summary.last_loss,
        })
    );
    Ok(())
}
