//! `unpersonal-train denoiser`: trains the pseudo-conditional EDM denoiser on the features of a
//! features model and exports it (denoiser, guide and features roles) into a bundle.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use unpersonal_runtime::bundle::{BundleDir, EdmSpec, Role, TensorSpec};
use unpersonal_trainer::data::{Augment, Dataset, Normalization};
use unpersonal_trainer::diffusion::{
    self, DenoiserFeed, EdmTraining, Extractor, Features, VALIDATION_SIGMAS,
};
use unpersonal_trainer::engine::{self, HostTensor, SessionConfig, State};
use unpersonal_trainer::export::{self, Weights};
use unpersonal_trainer::graph::numel;
use unpersonal_trainer::models::{DenoiserConfig, Model, forward_mflops};
use unpersonal_trainer::step::{self, AdamW};
use unpersonal_trainer::train::{self, RunOptions, Schedule, TrainConfig};
use unpersonal_trainer::{bundle, checkpoint};

use super::{DataArgs, DpArgs, EngineArgs, RunControl, TRAINER, first_images};

#[derive(Args)]
pub struct DenoiserArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The pseudo-condition extractor: `classifier` (the classifier of the --out bundle; its
    /// L2-normalised penultimate features) or the path of another exported encoder (ONNX with
    /// an `image` input and a `features` output), which is copied into the bundle.
    #[arg(long, default_value = "classifier")]
    features: String,
    /// Bundle directory the denoiser and bundle.json are written to.
    #[arg(long)]
    out: PathBuf,
    /// Run directory for the checkpoint, the feature cache and the JSON log.
    #[arg(long, default_value = "runs/denoiser")]
    run: PathBuf,
    /// Do not train: export the EMA weights of the checkpoint in --run as they are.
    #[arg(long)]
    export_only: bool,
    /// Planned training length in optimisation steps (the learning-rate schedule's length).
    #[arg(long, default_value_t = 40_000)]
    steps: u64,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate (linear warm-up, cosine decay to a tenth).
    #[arg(long, default_value_t = 5e-4)]
    lr: f32,
    /// Warm-up steps.
    #[arg(long, default_value_t = 500)]
    warmup: u64,
    /// EMA decay of the exported weights (per step).
    #[arg(long, default_value_t = 0.9995)]
    ema: f32,
    /// Seed of initialisation, batch order, noise and condition dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Channels per resolution level, full resolution first (each level halves the size).
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64, 64])]
    widths: Vec<usize>,
    /// Residual blocks per level (encoder; the decoder has one more).
    #[arg(long, default_value_t = 1)]
    blocks: usize,
    /// Levels with self-attention (0: full resolution); the bottleneck always has one.
    #[arg(long, value_delimiter = ',', default_values_t = [2])]
    attention: Vec<usize>,
    /// Width of the noise/condition embedding.
    #[arg(long, default_value_t = 128)]
    embedding: usize,
    /// Probability of dropping the condition (training the unconditional guide).
    #[arg(long, default_value_t = 0.1)]
    p_uncond: f32,
    /// Disable random horizontal flips (they are only used where the data allows them).
    #[arg(long)]
    no_flip: bool,
    /// Compute the validation loss every N steps (0: only at the end of the schedule).
    #[arg(long, default_value_t = 1000)]
    eval_every: u64,
    #[command(flatten)]
    dp: DpArgs,
    #[command(flatten)]
    control: RunControl,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Where the exported weights come from.
#[derive(Clone, Copy)]
struct Trained {
    /// The step of the weights (a selection's best evaluation, else the last step).
    weights_step: u64,
    /// Steps trained in all: what a DP guarantee is accounted over.
    steps_run: u64,
}

/// The pseudo-condition extractor and how the bundle lists it.
struct FeaturesModel {
    onnx: Vec<u8>,
    file: String,
    outputs: Vec<TensorSpec>,
    /// Its DP guarantee (`provenance.dp` of the classifier), or null.
    dp: serde_json::Value,
}

const VALIDATION_IMAGES: usize = 256;

pub fn run(args: DenoiserArgs) -> anyhow::Result<()> {
    let env = args.engine.environment()?;
    checkpoint::ensure_writable(&args.out)?;
    checkpoint::ensure_writable(&args.run)?;
    let (data, test) = args.data.load()?;
    let norm = Normalization::SYMMETRIC;
    let session = args.engine.session();
    let extractor = features_model(&args.features, &args.out)?;
    let mirrored = !args.no_flip && data.allows_hflip;
    if !args.control.quiet {
        eprintln!(
            "features of {} training images ({}) …",
            data.len(),
            if mirrored { "and their mirror images" } else { "unmirrored" }
        );
    }
    let cache = args.run.join("features.safetensors");
    let features = Extractor { env, model: &extractor.onnx, session: &session }
        .cached(&cache, &data, norm, mirrored)?;
    let mut validation_set = test.clone();
    validation_set.truncate(VALIDATION_IMAGES);
    let validation = Validation::new(env, &extractor.onnx, &validation_set, norm, &session)?;

    let model = DenoiserConfig {
        channels: data.channels,
        height: data.height,
        width: data.width,
        condition_dim: features.dim,
        widths: args.widths.clone(),
        blocks: args.blocks,
        attention: args.attention.clone(),
        embedding: args.embedding,
        groups: 8,
        sigma_data: 0.5,
    };
    model.validate()?;
    let edm = EdmTraining { p_uncond: args.p_uncond, hflip: mirrored, ..EdmTraining::default() };
    let cfg = TrainConfig {
        model: json!({ "kind": model.kind(), "config": model, "edm": edm, "features_sha256": bundle::sha256_hex(&extractor.onnx) }),
        data: args.data.data.display().to_string(),
        samples: data.len(),
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
        dp: args.dp.plan(&data, args.batch, args.steps)?,
    };

    let (state, trained) = if args.export_only {
        let (state, step) = train::checkpointed(&args.run, &cfg)?;
        (state, Trained { weights_step: step, steps_run: step })
    } else {
        if !args.control.quiet {
            eprintln!(
                "training the denoiser ({:.0} MFLOPs per evaluation) on {} ({} images, {} steps of {}) on {:?}",
                forward_mflops(&model),
                data.name,
                data.len(),
                args.steps,
                args.batch,
                args.engine.device
            );
        }
        let feed = DenoiserFeed {
            features: &features,
            edm,
            seed: args.seed,
            image: [data.channels, data.height, data.width],
            per_image: cfg.dp.is_some(),
        };
        let opts = RunOptions {
            selection: args.control.selection("val_loss", true),
            ..args.control.options(&args.run, args.eval_every, session.clone())
        };
        let (state, summary) = train::train(&model, &cfg, &data, &feed, &opts, env, |_, state| {
            let onnx = export::onnx_bytes(&model, state, Weights::Ema, vec![])?;
            validation.report(env, &onnx, &session, model.sigma_data)
        })?;
        if summary.paused() {
            println!(
                "{}",
                json!({ "stopped_at_step": summary.steps, "of": args.steps, "images_per_second": summary.images_per_second,
                        "resume_with": "--resume", "export_with": "--export-only" })
            );
            return Ok(());
        }
        (state, Trained { weights_step: summary.weights_step(), steps_run: summary.steps })
    };
    export_bundle(
        &args,
        env,
        &model,
        &cfg,
        &state,
        trained,
        &data,
        &extractor,
        &validation,
        &session,
    )
}

/// Reads the features model `choice` names: the bundle's classifier, or an ONNX file.
fn features_model(choice: &str, bundle_dir: &Path) -> anyhow::Result<FeaturesModel> {
    if choice == "classifier" {
        // Read and verified as the runtime reads it: the schema, and every file's hash.
        let loaded = BundleDir::load(bundle_dir).with_context(|| {
            format!(
                "--features classifier needs the classifier's bundle in {}",
                bundle_dir.display()
            )
        })?;
        let spec = loaded.bundle.model(Role::Classifier)?;
        return Ok(FeaturesModel {
            onnx: loaded.onnx(Role::Classifier)?.to_vec(),
            file: spec.file.clone(),
            outputs: spec.outputs.clone(),
            dp: spec.provenance.get("dp").cloned().unwrap_or(serde_json::Value::Null),
        });
    }
    let path = Path::new(choice);
    let onnx = std::fs::read(path)
        .with_context(|| format!("cannot read the features model {}", path.display()))?;
    Ok(FeaturesModel {
        onnx,
        file: "features.onnx".into(),
        outputs: vec![],
        dp: serde_json::Value::Null,
    })
}

/// The fixed held-out batch of the validation loss: normalised test images and their
/// conditions from the features model.
struct Validation {
    images: HostTensor,
    conditions: HostTensor,
}

impl Validation {
    fn new(
        env: &ort::environment::Environment,
        extractor: &[u8],
        set: &Dataset,
        norm: Normalization,
        session: &SessionConfig,
    ) -> anyhow::Result<Self> {
        let Features { dim, plain, .. } =
            Extractor { env, model: extractor, session }.compute(set, norm, false)?;
        let images = first_images(set, norm, set.len());
        Ok(Validation {
            conditions: HostTensor { shape: vec![set.len(), dim], data: plain },
            images,
        })
    }

    /// The EMA model's validation loss per noise level and on average.
    fn report(
        &self,
        env: &ort::environment::Environment,
        onnx: &[u8],
        session: &SessionConfig,
        sigma_data: f32,
    ) -> anyhow::Result<Value> {
        let mut session = engine::session(env, onnx, session)?;
        let losses =
            diffusion::validation_loss(&mut session, &self.images, &self.conditions, sigma_data)?;
        let by_sigma: serde_json::Map<String, Value> =
            VALIDATION_SIGMAS.iter().zip(&losses).map(|(s, l)| (s.to_string(), json!(l))).collect();
        let mean = losses.iter().sum::<f32>() / losses.len() as f32;
        Ok(
            json!({ "val_loss": mean, "val_loss_by_sigma": by_sigma, "val_images": self.images.shape[0] }),
        )
    }
}

/// Exports the EMA weights, checks ONNX Runtime against tract, and writes the denoiser, guide
/// (the same network with mask 0) and features entries into the bundle.
#[allow(clippy::too_many_arguments)]
fn export_bundle(
    args: &DenoiserArgs,
    env: &ort::environment::Environment,
    model: &DenoiserConfig,
    cfg: &TrainConfig,
    state: &State,
    trained: Trained,
    data: &Dataset,
    extractor: &FeaturesModel,
    validation: &Validation,
    session: &SessionConfig,
) -> anyhow::Result<()> {
    let onnx = export::onnx_bytes(
        model,
        state,
        Weights::Ema,
        vec![("unpersonal.role".into(), "denoiser".into())],
    )?;
    let parity = parity_probe(env, &onnx, validation)?;
    anyhow::ensure!(
        parity <= 1e-4,
        "ONNX Runtime and tract disagree on the exported denoiser by {parity:e} (> 1e-4)"
    );
    let metrics = validation.report(env, &onnx, session, model.sigma_data)?;
    let (c, h, w, d) = (model.channels, model.height, model.width, model.condition_dim);
    let parameters: usize =
        step::build(model, 1, &cfg.adamw).params.iter().map(|p| numel(&p.shape)).sum();
    let mut provenance = json!({
        "architecture": cfg.model, "dataset": data.name, "training_images": data.len(),
        "steps": trained.weights_step, "planned_steps": cfg.schedule.steps,
        "dp": cfg.dp.as_ref().map(|dp| dp.guarantee(trained.steps_run)).transpose()?, "batch": cfg.batch, "learning_rate": cfg.schedule,
        "weights": "ema", "ema_decay": cfg.ema,
        "ema_half_life_images": (0.5f64.ln() / (cfg.ema as f64).ln() * cfg.batch as f64).round(),
        "parameters": parameters, "forward_mflops_per_image": forward_mflops(model), "trainer": TRAINER,
    });
    provenance["metrics"] = metrics.clone();
    provenance["metrics"]["ort_tract_max_scaled_diff"] = json!(parity);
    let interface = |role| bundle::Entry {
        role,
        file: "denoiser.onnx",
        onnx: &onnx,
        inputs: vec![
            bundle::tensor_spec("x", &[c, h, w]),
            bundle::tensor_spec("sigma", &[]),
            bundle::tensor_spec("condition", &[d]),
            bundle::tensor_spec("condition_mask", &[]),
        ],
        outputs: vec![bundle::tensor_spec("denoised", &[c, h, w])],
        provenance: if role == Role::Denoiser {
            provenance.clone()
        } else {
            json!({ "same_network_as": "denoiser", "unconditional": "condition_mask 0 and a zero condition",
                    "condition_dropout": cfg.model["edm"]["p_uncond"], "dp": provenance["dp"] })
        },
    };
    let outputs = if extractor.outputs.is_empty() {
        vec![bundle::tensor_spec("features", &[d])]
    } else {
        extractor.outputs.clone()
    };
    let features = bundle::Entry {
        role: Role::Features,
        file: &extractor.file,
        onnx: &extractor.onnx,
        inputs: vec![bundle::tensor_spec("image", &[c, h, w])],
        outputs,
        provenance: json!({ "extractor": args.features, "output": "features", "normalised": "L2, unit rows", "dp": extractor.dp }),
    };
    let sections = bundle::Sections {
        edm: Some(EdmSpec { sigma_data: model.sigma_data }),
        sampler: Some(bundle::measured_sampler()),
        resize: args.data.size,
        ..bundle::Sections::default()
    };
    bundle::write(
        &args.out,
        data,
        cfg.normalization,
        vec![interface(Role::Denoiser), interface(Role::Guide), features],
        sections,
    )?;
    println!(
        "{}",
        json!({ "out": args.out.join("denoiser.onnx"), "steps": trained.weights_step, "parameters": parameters,
                "ort_tract_max_scaled_diff": parity, "validation": metrics })
    );
    Ok(())
}

/// ONNX Runtime vs tract on 8 validation images noised at several levels, half of the rows
/// unconditional.
fn parity_probe(
    env: &ort::environment::Environment,
    onnx: &[u8],
    validation: &Validation,
) -> anyhow::Result<f32> {
    let n = 8.min(validation.images.shape[0]);
    let size: usize = validation.images.shape[1..].iter().product();
    let dim = validation.conditions.shape[1];
    let sigmas: Vec<f32> = (0..n).map(|i| VALIDATION_SIGMAS[i % VALIDATION_SIGMAS.len()]).collect();
    let mut x = validation.images.data[..n * size].to_vec();
    for (i, v) in x.iter_mut().enumerate() {
        *v += sigmas[i / size] * (((i * 7919) % 1000) as f32 / 500.0 - 1.0);
    }
    let mut shape = validation.images.shape.clone();
    shape[0] = n;
    let x = HostTensor { shape, data: x };
    let sigma = HostTensor { shape: vec![n], data: sigmas };
    let mask_values: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
    let condition: Vec<f32> =
        (0..n * dim).map(|i| validation.conditions.data[i] * mask_values[i / dim]).collect();
    let condition = HostTensor { shape: vec![n, dim], data: condition };
    let mask = HostTensor { shape: vec![n], data: mask_values };
    export::parity(
        env,
        onnx,
        &[("x", &x), ("sigma", &sigma), ("condition", &condition), ("condition_mask", &mask)],
    )
}
