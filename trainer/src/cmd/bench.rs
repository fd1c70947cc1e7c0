//! `unpersonal-train bench`: training throughput of a model on synthetic batches.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use unpersonal_trainer::engine::TrainingEngine;
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
    let step_graph = step::build(model.as_ref(), args.batch, &AdamW::default());
    let state = step::initial_state(&step_graph.params, 0);
    let mut config = args.engine.session();
    config.profile = args.profile.clone();
    let mut engine = TrainingEngine::new(env, &step_graph, &state, &config)?;
    // Positive values in (0, 1]: valid for every batch input (labels, noise levels, masks).
    let inputs: Vec<Vec<f32>> = step_graph
        .batch_inputs
        .iter()
        .map(|(_, shape)| {
            (0..numel(shape)).map(|i| ((i * 7919) % 255 + 1) as f32 / 256.0).collect()
        })
        .collect();
    let inputs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    for t in 1..=3 {
        engine.step(&inputs, t, 1e-3, 0.99)?;
    }
    let started = Instant::now();
    for t in 4..4 + args.steps {
        engine.step(&inputs, t, 1e-3, 0.99)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = (args.steps as usize * args.batch) as f64 / secs;
    let params: usize = step_graph.params.iter().map(|p| numel(&p.shape)).sum();
    let mflops = forward_mflops(model.as_ref());
    let kind = model.kind();
    let ms = secs * 1e3 / args.steps as f64;
    if args.json {
        println!(
            "{}",
            json!({ "model": kind, "batch": args.batch, "steps": args.steps, "images_per_second": rate, "ms_per_step": ms,
                    "parameters": params, "forward_mflops_per_image": mflops, "device": args.engine.device })
        );
    } else {
        println!(
            "{kind} ({params} parameters, {mflops:.1} MFLOPs per image forward), batch {}: {rate:.1} images/s, {ms:.1} ms/step",
            args.batch
        );
    }
    Ok(())
}
