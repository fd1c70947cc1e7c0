//! `unpersonal-train`: trains Unpersonal's networks with ONNX Runtime and exports them to ONNX.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Train Unpersonal's networks on ONNX Runtime (CPU or CUDA) and export them to ONNX.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a whole bundle from a site's labelled images in one command: check and split the
    /// data by patient, train the classifier, denoiser and re-identification model (to a time
    /// budget if given), calibrate the gate and verify the result; re-run to continue.
    Bundle(cmd::pipeline::PipelineArgs),
    /// Train the classifier (logits + L2-normalised features) and export it into a bundle.
    Classifier(cmd::classifier::ClassifierArgs),
    /// Train the pseudo-conditional EDM denoiser (also the unconditional guide) and export it
    /// into a bundle.
    Denoiser(cmd::denoiser::DenoiserArgs),
    /// Train the Siamese re-identification model, calibrate its threshold on held-out pairs
    /// and export it (reid_embed, reid_head) into a bundle.
    Reid(cmd::reid::ReidArgs),
    /// Evaluate an exported classifier ONNX file on a labelled dataset.
    Eval(cmd::eval::EvalArgs),
    /// Distil the bundle's guided denoiser into a student that samples in a few unguided steps
    /// (the `distilled` solver) and add it to the bundle.
    Distil(cmd::distil::DistilArgs),
    /// Measure a bundle's denoiser: fidelity (Fréchet distance), class consistency and
    /// diversity, per guidance weight.
    EvaluateDenoiser(cmd::evaluate::EvaluateArgs),
    /// Measure training throughput (images/s) of a model on synthetic batches.
    Bench(cmd::bench::BenchArgs),
    /// Write a synthetic site (patients with several studies, a findings CSV) built from
    /// Fashion-MNIST, to try the own-data path.
    DemoSite(cmd::demo_site::DemoSiteArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bundle(args) => cmd::pipeline::run(args),
        Command::Classifier(args) => cmd::classifier::run(args),
        Command::Denoiser(args) => cmd::denoiser::run(args),
        Command::Reid(args) => cmd::reid::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Distil(args) => cmd::distil::run(args),
        Command::EvaluateDenoiser(args) => cmd::evaluate::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::DemoSite(args) => cmd::demo_site::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
