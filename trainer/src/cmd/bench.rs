//! `unpersonal-train bench`: training throughput of a model on synthetic batches.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use unpersonal_trainer::budget;
use unpersonal_trainer::graph::numel;
use unpersonal_trainer::models::{
    ClassifierConfig, DenoiserConfig, Model, ReidConfig, forward_mflops,
};
use unpersonal_trainer::step::{self, AdamW};

use super::EngineArgs;

#[derive(Args)]
pub struct BenchArgs {
    /// Which network's training step to time (at its Fashion-MNIST default size).
    #[arg(long, value_enum, default_value_t = BenchModel::Classifier)]
    model: BenchModel,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: u64,
    /// Time DP-SGD steps instead (lots of --batch images, each image's gradient alone and
    /// clipped, then the noisy update).
    #[arg(long)]
    dp: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Write ONNX Runtime's per-operator profile (a JSON trace) with this path prefix.
    #[arg(long)]
    profile: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchModel {
    /// The classifier (widths 32, 48, 96).
    Classifier,
    /// The denoiser (widths 32, 64, 64, condition of 96).
    Denoiser,
    /// The re-identification model (widths 32, 64, 128; a batch of B pairs is 2B images).
    Reid,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let env = args.engine.environment()?;
    let model: Box<dyn Model> = match args.model {
        BenchModel::Classifier => Box::new(ClassifierConfig::fashion_mnist()),
        BenchModel::Denoiser => Box::new(DenoiserConfig::fashion_mnist(96)),
        BenchModel::Reid => Box::new(ReidConfig::fashion_mnist()),
    };
    let mut config = args.engine.session();
    config.profile = args.profile.clone();
    let seconds = if args.dp {
        budget::dp_seconds_per_step(env, model.as_ref(), args.batch, args.steps, &config)?
    } else {
        budget::seconds_per_step(env, model.as_ref(), args.batch, args.steps, &config)?
    };
    let rate = args.batch as f64 / seconds;
    let params: usize = step::build(model.as_ref(), 1, &AdamW::default())
        .params
        .iter()
        .map(|p| numel(&p.shape))
        .sum();
    let mflops = forward_mflops(model.as_ref());
    let kind = model.kind();
    let ms = seconds * 1e3;
    if args.json {
        println!(
            "{}",
            json!({ "model": kind, "batch": args.batch, "dp": args.dp, "steps": args.steps, "images_per_second": rate, "ms_per_step": ms,
                    "parameters": params, "forward_mflops_per_image": mflops, "device": args.engine.device })
        );
    } else {
        println!(
            "{kind} ({params} parameters, {mflops:.1} MFLOPs per image forward), {} {}: {rate:.1} images/s, {ms:.1} ms/step",
            if args.dp { "DP-SGD lot" } else { "batch" },
            args.batch
        );
    }
    Ok(())
}
