//! `unpersonal-train reid`: trains the Siamese re-identification model, calibrates its
//! threshold on held-out pairs and exports its two halves into a bundle.

use std::collections::HashSet;
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use unpersonal_runtime::bundle::{ReidSpec, Role};
use unpersonal_runtime::gate::SELF_MARGIN;
use unpersonal_runtime::identity::same_person;
use unpersonal_trainer::bundle;
use unpersonal_trainer::checkpoint;
use unpersonal_trainer::data::strong::Strong;
use unpersonal_trainer::data::{Augment, Dataset, Normalization};
use unpersonal_trainer::engine::{self, HostTensor, SessionConfig, State};
use unpersonal_trainer::export::{self, Weights};
use unpersonal_trainer::metrics::{roc_auc, threshold_detecting, tpr_at_fpr};
use unpersonal_trainer::models::{Model, ReidConfig, ReidHead};
use unpersonal_trainer::pairs::{
    LOT_NEGATIVES_SENSITIVITY, PairFeed, Positives, one_person, pixel_neighbours,
};
use unpersonal_trainer::step::AdamW;
use unpersonal_trainer::train::{self, Feed, RunOptions, Schedule, TrainConfig};

use super::{DataArgs, DpArgs, EngineArgs, RunControl, TRAINER};

#[derive(Args)]
pub struct ReidArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Bundle directory the two ONNX files and bundle.json are written to.
    #[arg(long)]
    out: PathBuf,
    /// Run directory for the checkpoint and the JSON log.
    #[arg(long, default_value = "runs/reid")]
    run: PathBuf,
    /// Do not train: calibrate and export the weights of the checkpoint in --run as they are
    /// (e.g. of a run stopped early).
    #[arg(long)]
    export_only: bool,
    /// Training length in optimisation steps.
    #[arg(long, default_value_t = 4000)]
    steps: u64,
    /// Pairs per batch (half positive, half negative).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate (linear warm-up, cosine decay).
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Warm-up steps.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// EMA decay of the exported weights.
    #[arg(long, default_value_t = 0.999)]
    ema: f32,
    /// Seed of initialisation, pairs and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Channel widths of stem, stage 1 and stage 2.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 64, 128])]
    widths: Vec<usize>,
    /// Draw a third of the negatives from each image's K nearest images in pixel space (0: a
    /// half from the same class, a half from anywhere), so the model learns to tell apart the
    /// look-alikes it meets among a large reference set's nearest neighbours.
    #[arg(long, value_name = "K", default_value_t = 0)]
    neighbour_negatives: usize,
    /// Channels of the flattened spatial descriptor before the embedding layer.
    #[arg(long, default_value_t = 16)]
    descriptor: usize,
    /// Embedding size.
    #[arg(long, default_value_t = 128)]
    embedding: usize,
    /// The operating point: the shipped threshold lets at most this fraction of held-out pairs
    /// of different images through as "same person" (a false alarm rejects a harmless
    /// candidate) — unless --near-copy-detection needs a lower threshold.
    #[arg(long, default_value_t = 0.01)]
    false_match_rate: f64,
    /// The shipped threshold detects at least this share of planted near-copies of held-out
    /// images; where the --false-match-rate threshold misses more, the lower threshold is
    /// shipped (privacy first: more false alarms, no missed copies).
    #[arg(long, default_value_t = 0.99)]
    near_copy_detection: f64,
    /// The gate also compares a candidate with this many nearest references.
    #[arg(long, default_value_t = 8)]
    neighbours: usize,
    /// The neighbour threshold flags at most this share of held-out images (people the model
    /// never saw) against their nearest training images: against those, a candidate is
    /// rejected only if it resembles one more than nearly every new person does.
    #[arg(long, default_value_t = 0.01)]
    neighbour_false_match_rate: f64,
    /// Held-out images for calibration (one positive and one negative pair each; where they
    /// name patients, also a pair of two images of one patient and one of two patients for each
    /// image whose patient has another).
    #[arg(long, default_value_t = 2000)]
    calibration_images: usize,
    /// Calibrate every N steps (0: only at the end).
    #[arg(long, default_value_t = 1000)]
    eval_every: u64,
    #[command(flatten)]
    dp: DpArgs,
    #[command(flatten)]
    control: RunControl,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Pixel distance (normalised units) below which two training images count as copies of each
/// other, not as look-alikes: a one-pixel shift of a garment is far above it.
const DUPLICATE: f64 = 0.5;

/// Share of the training positives of an image whose patient has other images that show two
/// different images of the patient (the rest are two augmentations of the image, as
/// [`PairFeed`] draws them).
const SAME_PATIENT_POSITIVES: f64 = 0.5;

/// Below this held-out ROC AUC of same- vs different-patient pairs the model barely links a
/// person's different images.
const WEAK_PATIENT_AUC: f64 = 0.9;

/// Fewer held-out same-patient pairs than this make the patient-level rates rough.
const FEW_PATIENT_PAIRS: usize = 100;

/// Mild edits a leak could hide behind: shift ≤ 2 px, noise σ ≤ 0.1 of the pixel range (0.2 in
/// the symmetric normalisation's units), contrast ±20 %, small crops (a zoom of up to 5 %). The
/// gate must catch such near-copies of an original.
fn near_copy() -> Strong {
    Strong {
        shift: 2.0,
        rotate: 0.0,
        scale: 0.05,
        warp: 0.0,
        brightness: 0.0,
        contrast: 0.2,
        blur: 0.0,
        noise: 0.2,
        occlude: 0.0,
    }
}

/// The images of `data` whose patient has another image in it (the anchors of same-patient
/// pairs), and how many patients they show.
fn patient_anchors(data: &Dataset) -> (Vec<usize>, usize) {
    let anchors: Vec<usize> = same_person(&data.identities)
        .iter()
        .enumerate()
        .filter(|(_, same)| !same.is_empty())
        .map(|(i, _)| i)
        .collect();
    let patients = anchors.iter().filter_map(|&i| data.identity(i)).collect::<HashSet<_>>().len();
    (anchors, patients)
}

pub fn run(args: ReidArgs) -> anyhow::Result<()> {
    let env = args.engine.environment()?;
    checkpoint::ensure_writable(&args.out)?;
    checkpoint::ensure_writable(&args.run)?;
    let (data, mut held_out) = args.data.load()?;
    held_out.truncate(args.calibration_images);
    for set in [&data, &held_out] {
        anyhow::ensure!(
            !one_person(set),
            "every image of {} shows one patient: re-identification needs images of several people",
            set.name
        );
    }
    let widths: [usize; 3] = args
        .widths
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("--widths takes three numbers, e.g. 32,64,128"))?;
    let model = ReidConfig {
        channels: data.channels,
        height: data.height,
        width: data.width,
        widths,
        descriptor: args.descriptor,
        embedding: args.embedding,
        groups: 8,
    };
    model.validate()?;
    let norm = Normalization::SYMMETRIC;
    let strong = Strong::default();
    let mut architecture = json!({ "kind": model.kind(), "config": model, "augment": strong, "neighbour_negatives": args.neighbour_negatives });
    let (training_anchors, training_patients) = patient_anchors(&data);
    if !training_anchors.is_empty() {
        // Only where the feed draws such pairs: runs on data without patients keep their
        // configuration (and can resume their checkpoints).
        architecture["same_patient_positives"] = json!(SAME_PATIENT_POSITIVES);
    }
    let cfg = TrainConfig {
        model: architecture,
        data: args.data.data.display().to_string(),
        samples: data.len(),
        batch: args.batch,
        schedule: Schedule {
            steps: args.steps,
            warmup: args.warmup.min(args.steps / 2),
            lr: args.lr,
            final_ratio: 0.01,
        },
        adamw: AdamW::default(),
        ema: args.ema,
        seed: args.seed,
        augment: Augment::none(),
        normalization: norm,
        // Pairs joined inside the lot: one patient changes up to three clipped terms.
        dp: args
            .dp
            .plan(&data, args.batch, args.steps)?
            .map(|dp| dp.with_sensitivity(LOT_NEGATIVES_SENSITIVITY)),
    };
    anyhow::ensure!(
        cfg.dp.is_none() || args.neighbour_negatives == 0,
        "--neighbour-negatives draws partners from outside the lot, which DP-SGD cannot bound: leave it out with --dp-epsilon"
    );
    let session = args.engine.session();
    let opts = RunOptions {
        selection: args.control.selection("roc_auc", false),
        ..args.control.options(&args.run, args.eval_every, session.clone())
    };
    // The gate compares candidates with unmodified reference images, so the held-out pairs
    // do too: an original and a strong augmentation of it, or of another person's image.
    let calibration = Calibration::new(
        PairFeed::new(&held_out, strong.clone(), norm, u64::MAX)
            .plain_anchor()
            .positives(Positives::SameImage),
        &held_out,
        &(0..held_out.len()).collect::<Vec<_>>(),
        args.batch,
    );
    // Where held-out patients have several images: two of one patient, or images of two
    // patients, both as they are.
    let (anchors, held_out_patients) = patient_anchors(&held_out);
    let patients = (!anchors.is_empty()).then(|| {
        Calibration::new(
            PairFeed::new(&held_out, Strong::NONE, norm, u64::MAX)
                .plain_anchor()
                .positives(Positives::SamePatient),
            &held_out,
            &anchors,
            args.batch,
        )
    });
    let shape = [data.channels, data.height, data.width];
    let (state, steps, steps_run) = if args.export_only {
        let (state, step) = train::checkpointed(&args.run, &cfg)?;
        (state, step, step)
    } else {
        if !args.control.quiet {
            eprintln!(
                "training the re-identification model on {} ({} images, {} steps of {} pairs)",
                data.name,
                data.len(),
                args.steps,
                args.batch
            );
            if !training_anchors.is_empty() {
                eprintln!(
                    "{} training images show {training_patients} patients with several images each: half their positive pairs are two different images of one patient",
                    training_anchors.len()
                );
            }
        }
        let mut feed = PairFeed::new(&data, strong.clone(), norm, args.seed);
        if cfg.dp.is_some() {
            feed = feed.lot_negatives();
        }
        if args.neighbour_negatives > 0 {
            if !args.control.quiet {
                eprintln!(
                    "finding the {} nearest images of each training image (pixel space) …",
                    args.neighbour_negatives
                );
            }
            feed = feed.neighbour_negatives(pixel_neighbours(
                &data,
                norm,
                args.neighbour_negatives,
                DUPLICATE,
            ));
        }
        let (state, summary) = train::train(&model, &cfg, &data, &feed, &opts, env, |_, state| {
            let mut scorer = Scorer::new(env, &model, state, &session, shape)?;
            let mut summary = calibration.measure(&mut scorer, args.false_match_rate)?.summary;
            if let Some(patients) = &patients {
                let (same, different) = patients.scores(&mut scorer)?;
                summary["patients_roc_auc"] = json!(roc_auc(&same, &different));
            }
            Ok(summary)
        })?;
        if summary.paused() {
            println!(
                "{}",
                json!({ "stopped_at_step": summary.steps, "of": args.steps, "resume_with": "--resume" })
            );
            return Ok(());
        }
        (state, summary.weights_step(), summary.steps)
    };

    let mut scorer = Scorer::new(env, &model, &state, &session, shape)?;
    let measured = calibration.measure(&mut scorer, args.false_match_rate)?;
    let near = Calibration::new(
        PairFeed::new(&held_out, near_copy(), norm, u64::MAX)
            .plain_anchor()
            .positives(Positives::SameImage),
        &held_out,
        &(0..held_out.len()).collect::<Vec<_>>(),
        args.batch,
    )
    .measure(&mut scorer, args.false_match_rate)?;
    // The operating point guards against images copied from a reference: a false-match rate
    // between different people and the detection of planted near-copies. Same-patient pairs
    // are measured (under `patients`) but set no threshold: two studies of one patient differ
    // far more than a near-copy does, so a detection target on them would lower the threshold
    // into the bulk of different-patient pairs wherever the model cannot yet separate them —
    // the gate would reject most candidates and withhold most references, with no guarantee
    // bought — and the held-out patients with several images are often too few to set a
    // threshold on. A low same-patient AUC is reported as a weak gate instead.
    let threshold =
        measured.threshold.min(threshold_detecting(&near.positives, args.near_copy_detection));
    let share = |scores: &[f32]| {
        scores.iter().filter(|&&s| s >= threshold).count() as f64 / scores.len().max(1) as f64
    };
    let mut calibration_json = measured.summary.clone();
    calibration_json["threshold_logit"] = json!(threshold);
    calibration_json["false_match_rate"] = json!(share(&measured.negatives));
    calibration_json["true_match_rate"] = json!(share(&measured.positives));
    calibration_json["near_copy_detection"] = json!(share(&near.positives));
    calibration_json["operating_point"] = json!(format!(
        "the lower of the thresholds at a false-match rate of {} and at a near-copy detection of {}",
        args.false_match_rate, args.near_copy_detection
    ));
    calibration_json["near_copies"] = json!(
        "original vs copy shifted ≤ 2 px, noise σ ≤ 0.1 of the pixel range, contrast ±20 %, zoom ≤ 5 %"
    );
    calibration_json["dataset"] = json!(held_out.name);

    let embed = export::onnx_bytes(
        &model,
        &state,
        Weights::Ema,
        vec![("unpersonal.role".into(), "reid_embed".into())],
    )?;
    let head = export::onnx_bytes(
        &ReidHead(&model),
        &state,
        Weights::Ema,
        vec![("unpersonal.role".into(), "reid_head".into())],
    )?;
    let provenance = json!({
        "architecture": cfg.model, "dataset": data.name, "training_images": data.len(), "steps": steps,
        "batch_pairs": args.batch, "weights": "ema", "ema_decay": args.ema, "trainer": TRAINER, "metrics": calibration_json,
        "dp": cfg.dp.as_ref().map(|dp| dp.guarantee(steps_run)).transpose()?,
    });
    let (c, h, w, e) = (model.channels, model.height, model.width, model.embedding);
    let entries = vec![
        bundle::Entry {
            role: Role::ReidEmbed,
            file: "reid_embed.onnx",
            onnx: &embed,
            inputs: vec![bundle::tensor_spec("image", &[c, h, w])],
            outputs: vec![bundle::tensor_spec("embedding", &[e])],
            provenance: provenance.clone(),
        },
        bundle::Entry {
            role: Role::ReidHead,
            file: "reid_head.onnx",
            onnx: &head,
            inputs: vec![bundle::tensor_spec("a", &[e]), bundle::tensor_spec("b", &[e])],
            outputs: vec![bundle::tensor_spec("logit", &[1])],
            provenance: json!({ "same_model_as": "reid_embed", "dp": provenance["dp"] }),
        },
    ];
    // Against its nearest references, a never-seen person scores far higher than against a
    // random image: the neighbour threshold flags only --neighbour-false-match-rate of them.
    let held_out_best = neighbour_scores(&mut scorer, &data, &held_out, norm, args.neighbours)?;
    let (_, neighbour_threshold) = tpr_at_fpr(&[], &held_out_best, args.neighbour_false_match_rate);
    // The gate caps every threshold at a reference's score against itself (an exact copy is
    // always flagged); the shipped thresholds and the numbers below are the capped ones.
    let cap = self_score_cap(&mut scorer, &held_out, norm)?;
    let neighbour_threshold = neighbour_threshold.max(threshold).min(cap);
    let flagged_at = |t: f32| {
        held_out_best.iter().filter(|&&s| s >= t).count() as f64 / held_out_best.len().max(1) as f64
    };
    calibration_json["neighbours"] = json!({
        "compared": args.neighbours, "reference_images": data.len(),
        "held_out_flagged_at_threshold": flagged_at(threshold),
        "neighbour_threshold_logit": neighbour_threshold,
        "self_cap_logit": cap,
        "held_out_flagged_at_neighbour_threshold": flagged_at(neighbour_threshold),
        "near_copy_detection_at_neighbour_threshold": near.positives.iter().filter(|&&s| s >= neighbour_threshold).count() as f64 / near.positives.len().max(1) as f64,
    });
    if let Some(patients) = &patients {
        let (same, different) = patients.scores(&mut scorer)?;
        let summary =
            patient_summary(&same, &different, held_out_patients, threshold, neighbour_threshold);
        if !args.control.quiet {
            eprintln!("held-out patients: {summary}");
        }
        calibration_json["patients"] = summary;
    }
    let warnings = weak_gate_warnings(&calibration_json, held_out.len(), args.calibration_images);
    for warning in &warnings {
        eprintln!("WARNING: {warning}");
    }
    if !warnings.is_empty() {
        eprintln!(
            "WARNING: a weak re-identification model makes the gate reject many candidates and withhold some reference images (some labels more than others); train longer (--steps), on more images, or with --neighbour-negatives 8, and check the release's withheld_by_label"
        );
        calibration_json["warnings"] = json!(warnings);
    }
    let sigmoid = |z: f32| 1.0 / (1.0 + (-f64::from(z)).exp());
    let probability = sigmoid(threshold);
    let sections = bundle::Sections {
        reid: Some(ReidSpec {
            threshold: probability as f32,
            neighbour_threshold: Some(sigmoid(neighbour_threshold) as f32),
            neighbours: args.neighbours,
            calibration: calibration_json.clone(),
        }),
        resize: args.data.size,
        ..bundle::Sections::default()
    };
    bundle::write(&args.out, &data, norm, entries, sections)?;
    println!(
        "{}",
        json!({ "out": args.out, "threshold": probability, "calibration": calibration_json, "steps": steps })
    );
    Ok(())
}

/// Held-out pairs drawn by a [`PairFeed`]: for every anchor image, a positive (it and an
/// augmentation of it, or another image of its patient, as the feed's [`Positives`] say) and a
/// negative (it and an image of someone else, half of the same class).
struct Calibration {
    pairs: [Vec<f32>; 3],
}

/// Scores of the held-out pairs and the operating point.
struct Measured {
    positives: Vec<f32>,
    negatives: Vec<f32>,
    threshold: f32,
    summary: Value,
}

impl Calibration {
    /// The pairs `feed` draws for the images `anchors` of `held_out`, `batch` pairs at a time.
    fn new(feed: PairFeed, held_out: &Dataset, anchors: &[usize], batch: usize) -> Self {
        let (mut a, mut b, mut same) = (Vec::new(), Vec::new(), Vec::new());
        debug_assert!(anchors.iter().all(|&i| i < held_out.len()));
        // Each image twice in a row: even rows are positive pairs, odd rows negative.
        for (k, chunk) in anchors.chunks((batch / 2).max(1)).enumerate() {
            let indices: Vec<usize> = chunk.iter().flat_map(|&i| [i, i]).collect();
            let batch = unpersonal_trainer::data::Batch {
                images: vec![],
                labels: vec![],
                n: indices.len(),
                indices,
            };
            let [pa, pb, ps]: [Vec<f32>; 3] =
                feed.feed(&batch, k as u64).try_into().expect("three batch inputs");
            a.extend(pa);
            b.extend(pb);
            same.extend(ps);
        }
        Calibration { pairs: [a, b, same] }
    }

    /// The logits of the positive and of the negative pairs.
    fn scores(&self, scorer: &mut Scorer) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        let (ea, eb) = (scorer.embed(&self.pairs[0])?, scorer.embed(&self.pairs[1])?);
        let logits = scorer.logits(ea, eb)?;
        let (mut positives, mut negatives) = (Vec::new(), Vec::new());
        for (&s, &same) in logits.iter().zip(&self.pairs[2]) {
            if same == 1.0 { positives.push(s) } else { negatives.push(s) }
        }
        Ok((positives, negatives))
    }

    /// Scores every pair and finds the threshold at the false-match rate `fmr`.
    fn measure(&self, scorer: &mut Scorer, fmr: f64) -> anyhow::Result<Measured> {
        let (positives, negatives) = self.scores(scorer)?;
        let auc = roc_auc(&positives, &negatives);
        let (tpr_1, _) = tpr_at_fpr(&positives, &negatives, 0.01);
        let (tpr_01, _) = tpr_at_fpr(&positives, &negatives, 0.001);
        let (tpr, threshold) = tpr_at_fpr(&positives, &negatives, fmr);
        let summary = json!({
            "roc_auc": auc, "tpr_at_fpr_1pct": tpr_1, "tpr_at_fpr_0.1pct": tpr_01,
            "false_match_rate": fmr, "true_match_rate": tpr, "threshold_logit": threshold,
            "positive_pairs": positives.len(), "negative_pairs": negatives.len(),
        });
        Ok(Measured { positives, negatives, threshold, summary })
    }
}

/// The patient-level calibration: logits of held-out pairs of two different images of one
/// patient (`same`) against pairs of images of two patients (`different`), showing
/// `patients` patients with several images, and the shares of each that the shipped
/// `threshold` and `neighbour_threshold` (logits) match. Counts and rates only: nothing in it
/// names a patient.
fn patient_summary(
    same: &[f32],
    different: &[f32],
    patients: usize,
    threshold: f32,
    neighbour_threshold: f32,
) -> Value {
    let share = |scores: &[f32], t: f32| {
        scores.iter().filter(|&&s| s >= t).count() as f64 / scores.len().max(1) as f64
    };
    let (tpr_1, _) = tpr_at_fpr(same, different, 0.01);
    let (tpr_01, _) = tpr_at_fpr(same, different, 0.001);
    json!({
        "patients_with_several_images": patients,
        "pairs": same.len() + different.len(),
        "same_patient_pairs": same.len(),
        "different_patient_pairs": different.len(),
        "roc_auc": roc_auc(same, different),
        "tpr_at_fpr_1pct": tpr_1,
        "tpr_at_fpr_0.1pct": tpr_01,
        "same_patient_match_rate_at_threshold": share(same, threshold),
        "different_patient_match_rate_at_threshold": share(different, threshold),
        "same_patient_match_rate_at_neighbour_threshold": share(same, neighbour_threshold),
        "compared": "two different held-out images of one patient vs images of two patients (half of one class), both unmodified",
    })
}

/// What the held-out calibration says is weak about the model, one sentence each: a low ROC AUC,
/// a near-copy threshold that also matches many different people, a neighbour threshold that
/// flags many people never seen, where held-out patients have several images a low ROC AUC of
/// same- vs different-patient pairs or too few such pairs, fewer held-out images than asked
/// for.
fn weak_gate_warnings(calibration: &Value, held_out: usize, asked: usize) -> Vec<String> {
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut warnings = Vec::new();
    let auc = number(&calibration["roc_auc"]);
    if auc.is_nan() || auc < 0.95 {
        warnings
            .push(format!("held-out ROC AUC of same vs different image is {auc:.3} (below 0.95)"));
    }
    let fmr = number(&calibration["false_match_rate"]);
    if fmr.is_nan() || fmr > 0.05 {
        warnings.push(format!(
            "the source threshold matches {:.1} % of pairs of different images (it is lowered until it detects near-copies)",
            fmr * 100.0
        ));
    }
    let flagged = number(&calibration["neighbours"]["held_out_flagged_at_neighbour_threshold"]);
    if flagged.is_nan() || flagged > 0.2 {
        warnings.push(format!(
            "the neighbour threshold flags {:.1} % of held-out images against their nearest training images",
            flagged * 100.0
        ));
    }
    if let Some(patients) = calibration.get("patients") {
        let auc = number(&patients["roc_auc"]);
        if auc.is_nan() || auc < WEAK_PATIENT_AUC {
            warnings.push(format!(
                "held-out ROC AUC of two images of one patient vs images of two patients is {auc:.3} (below {WEAK_PATIENT_AUC}): the gate may not link a synthetic image to a patient's other images; train on more patients with several images each (half their positive pairs are then two images of one patient), longer (--steps), with --neighbour-negatives 8"
            ));
        }
        let pairs = patients["same_patient_pairs"].as_u64().unwrap_or(0);
        if pairs < FEW_PATIENT_PAIRS as u64 {
            warnings.push(format!(
                "only {pairs} held-out pairs of two images of one patient: the patient-level rates are rough; hold out more patients with several images (--test-data, --calibration-images)"
            ));
        }
    }
    if held_out < asked {
        warnings.push(format!(
            "calibrated on {held_out} held-out images, fewer than --calibration-images ({asked}): the test data holds no more"
        ));
    }
    warnings
}

/// The exported EMA halves on ONNX Runtime.
struct Scorer {
    embed: ort::session::Session,
    head: ort::session::Session,
    shape: [usize; 3],
    embedding: usize,
}

impl Scorer {
    fn new(
        env: &ort::environment::Environment,
        model: &ReidConfig,
        state: &State,
        session: &SessionConfig,
        shape: [usize; 3],
    ) -> anyhow::Result<Scorer> {
        let embed = engine::session(
            env,
            &export::onnx_bytes(model, state, Weights::Ema, vec![])?,
            session,
        )?;
        let head = engine::session(
            env,
            &export::onnx_bytes(&ReidHead(model), state, Weights::Ema, vec![])?,
            session,
        )?;
        Ok(Scorer { embed, head, shape, embedding: model.embedding })
    }

    /// Embeddings `[n, E]` of normalised images (`n` of `shape` each, concatenated).
    fn embed(&mut self, images: &[f32]) -> anyhow::Result<HostTensor> {
        let size: usize = self.shape.iter().product();
        let mut data = Vec::with_capacity(images.len() / size * self.embedding);
        for chunk in images.chunks(500 * size) {
            let mut shape = vec![chunk.len() / size];
            shape.extend(self.shape);
            let x = HostTensor { shape, data: chunk.to_vec() };
            let e = engine::run(&mut self.embed, &[("image", &x)])?
                .remove("embedding")
                .ok_or_else(|| anyhow::anyhow!("no `embedding` output"))?;
            data.extend(e.data);
        }
        Ok(HostTensor { shape: vec![data.len() / self.embedding, self.embedding], data })
    }

    /// Same-person logits of row pairs of two embedding matrices.
    fn logits(&mut self, a: HostTensor, b: HostTensor) -> anyhow::Result<Vec<f32>> {
        Ok(engine::run(&mut self.head, &[("a", &a), ("b", &b)])?
            .remove("logit")
            .ok_or_else(|| anyhow::anyhow!("no `logit` output"))?
            .data)
    }
}

/// The lowest threshold logit the gate's self-cap allows: the smallest same-person logit of a
/// held-out image against itself, less the runtime's margin ([`SELF_MARGIN`] in probability).
fn self_score_cap(
    scorer: &mut Scorer,
    held_out: &Dataset,
    norm: Normalization,
) -> anyhow::Result<f32> {
    let table = norm.table();
    let e = scorer
        .embed(&held_out.images.iter().map(|&b| table[usize::from(b)]).collect::<Vec<_>>())?;
    let lowest = scorer.logits(e.clone(), e)?.into_iter().fold(f32::INFINITY, f32::min);
    let p = 1.0 / (1.0 + (-lowest).exp()) - SELF_MARGIN;
    Ok((p / (1.0 - p)).ln())
}

/// The gate's situation for people it never saw: every held-out image against its `k`
/// nearest training images by embedding; per held-out image, the highest same-person logit.
fn neighbour_scores(
    scorer: &mut Scorer,
    train: &Dataset,
    held_out: &Dataset,
    norm: Normalization,
    k: usize,
) -> anyhow::Result<Vec<f32>> {
    let table = norm.table();
    let pixels =
        |d: &Dataset| -> Vec<f32> { d.images.iter().map(|&b| table[usize::from(b)]).collect() };
    let (train_e, held_e) = (scorer.embed(&pixels(train))?, scorer.embed(&pixels(held_out))?);
    let e = scorer.embedding;
    fn rows(t: &HostTensor, e: usize) -> ndarray::ArrayView2<'_, f32> {
        ndarray::ArrayView2::from_shape((t.data.len() / e, e), &t.data).expect("rows of E values")
    }
    let nearest = unpersonal_runtime::neighbours::nearest(rows(&held_e, e), rows(&train_e, e), k);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (q, list) in nearest.iter().enumerate() {
        for n in list {
            a.extend_from_slice(&held_e.data[q * e..(q + 1) * e]);
            b.extend_from_slice(&train_e.data[n.index * e..(n.index + 1) * e]);
        }
    }
    let pairs = a.len() / e;
    let logits = scorer.logits(
        HostTensor { shape: vec![pairs, e], data: a },
        HostTensor { shape: vec![pairs, e], data: b },
    )?;
    let mut best = Vec::with_capacity(nearest.len());
    let mut at = 0;
    for list in &nearest {
        best.push(logits[at..at + list.len()].iter().copied().fold(f32::NEG_INFINITY, f32::max));
        at += list.len();
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weak_calibration_is_named_point_by_point() {
        let strong = json!({ "roc_auc": 0.99, "false_match_rate": 0.01,
                             "neighbours": { "held_out_flagged_at_neighbour_threshold": 0.01 } });
        assert!(weak_gate_warnings(&strong, 2000, 2000).is_empty());
        // The numbers a new user met on 2,428 chest X-rays.
        let weak = json!({ "roc_auc": 0.899, "false_match_rate": 0.49,
                           "neighbours": { "held_out_flagged_at_neighbour_threshold": 0.61 } });
        let warnings = weak_gate_warnings(&weak, 270, 2000);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("0.899") && warnings[1].contains("49.0 %"));
        assert!(warnings[2].contains("61.0 %") && warnings[3].contains("270"));
        assert_eq!(weak_gate_warnings(&json!({}), 10, 10).len(), 3, "missing numbers are weak");
    }

    #[test]
    fn the_patient_calibration_counts_and_rates_and_names_nobody() {
        let same = [3.0, 2.0, 0.5, -2.01];
        let different: Vec<f32> = (0..200).map(|i| -5.0 + i as f32 * 0.02).collect();
        let summary = patient_summary(&same, &different, 2, 1.0, -0.5);
        assert_eq!(summary["patients_with_several_images"], 2);
        assert_eq!(summary["pairs"], 204);
        assert_eq!(
            (summary["same_patient_pairs"].as_u64(), summary["different_patient_pairs"].as_u64()),
            (Some(4), Some(200))
        );
        // Three positives score above all 200 negatives, the fourth above 150 of them.
        assert!((summary["roc_auc"].as_f64().unwrap() - (3.0 + 150.0 / 200.0) / 4.0).abs() < 1e-9);
        assert_eq!(summary["tpr_at_fpr_1pct"], 0.75);
        assert_eq!(summary["same_patient_match_rate_at_threshold"], 0.5);
        assert_eq!(summary["different_patient_match_rate_at_threshold"], 0.0);
        assert_eq!(summary["same_patient_match_rate_at_neighbour_threshold"], 0.75);
        // Only numbers, and one fixed sentence.
        for (key, value) in summary.as_object().unwrap() {
            assert!(value.is_number() || key == "compared", "{key}: {value}");
        }

        let strong = json!({ "roc_auc": 0.99, "false_match_rate": 0.01,
                             "neighbours": { "held_out_flagged_at_neighbour_threshold": 0.01 },
                             "patients": { "roc_auc": 0.95, "same_patient_pairs": 400 } });
        assert!(weak_gate_warnings(&strong, 2000, 2000).is_empty());
        let mut weak = strong.clone();
        weak["patients"] = json!({ "roc_auc": 0.71, "same_patient_pairs": 12 });
        let warnings = weak_gate_warnings(&weak, 2000, 2000);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("0.710") && warnings[0].contains("several images each"));
        assert!(warnings[1].contains("only 12 "));
    }

    #[test]
    fn patient_anchors_are_the_images_of_patients_with_several() {
        use unpersonal_runtime::identity::Identity;
        let (p, q, r) = (
            Identity::of_patient_id("p"),
            Identity::of_patient_id("q"),
            Identity::of_patient_id("r"),
        );
        let identities = vec![p, None, q, p, r, q, None, p];
        let n = identities.len();
        let data = Dataset {
            name: "toy".into(),
            channels: 1,
            height: 1,
            width: 1,
            num_labels: 1,
            multi_label: false,
            images: vec![0; n],
            labels: vec![1.0; n],
            allows_hflip: false,
            identities,
            label_names: Vec::new(),
        };
        assert_eq!(patient_anchors(&data), (vec![0, 2, 3, 5, 7], 2));
    }
}
