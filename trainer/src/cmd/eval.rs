//! `unpersonal-train eval`: accuracy of an exported classifier on ONNX Runtime or tract.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use unpersonal_trainer::data::{Dataset, Normalization, Split};
use unpersonal_trainer::engine;
use unpersonal_trainer::eval::{self, Accuracy};
use unpersonal_trainer::export;

use super::{EngineArgs, logits};

#[derive(Args)]
pub struct EvalArgs {
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

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let model = std::fs::read(&args.model)
        .with_context(|| format!("cannot read {}", args.model.display()))?;
    let data = if args.data.is_dir() {
        Dataset::load(&args.data, Split::Test)?
    } else {
        Dataset::load(&args.data, Split::Train)?
    };
    let norm = Normalization::SYMMETRIC;
    let started = Instant::now();
    let acc: Accuracy = match args.with {
        EvalEngine::Ort => {
            let env = args.engine.environment()?;
            let mut session =
                engine::session(env, &model, &args.engine.session()).with_context(|| {
                    format!("{} is not a model ONNX Runtime can run", args.model.display())
                })?;
            eval::accuracy(&data, norm, args.batch, |x| logits(&mut session, x))?
        }
        EvalEngine::Tract => eval::accuracy(&data, norm, args.batch, |x| {
            let outputs = export::run_tract(&model, &[x])
                .with_context(|| format!("tract cannot run {}", args.model.display()))?;
            outputs.into_iter().next().context("the model has no outputs")
        })?,
    };
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({ "model": args.model, "data": data.name, "accuracy": acc.rate(), "correct": acc.correct, "total": acc.total, "seconds": secs })
        );
    } else {
        println!(
            "{}: accuracy {:.4} ({}/{}) on {} in {secs:.1} s",
            args.model.display(),
            acc.rate(),
            acc.correct,
            acc.total,
            data.name
        );
    }
    Ok(())
}
