//! `unpersonal-train bundle`: a site's labelled images to a verified bundle in one command.
//!
//! The stages, each resumable, run in order under `--out DIR`:
//! 1. **prepare**: the data is read (any size, brought to the bundle's by the documented rule),
//!    checked before any training starts, split by person into training, calibration and
//!    held-out sets, and written to `DIR/data/` as PNG images with a findings CSV;
//! 2. **plan**: with `--time-budget`, every model's step is timed on the device, and each stage
//!    gets its share of the time left when it starts; without, step counts scale with the data.
//!    Either way the step count is an upper bound: each stage is evaluated on the calibration
//!    people eight times, keeps its best weights (held-out loss; ROC AUC for the re-id model)
//!    and ends after three evaluations without improvement (`--keep-best`);
//! 3. **classifier**, **reid** (trained, then its gate calibrated on the calibration people),
//!    **denoiser** (with its guide and the features cache): each exactly the single command
//!    `unpersonal-train <stage>` with the flags printed in `DIR/runs/pipeline.json`, its run
//!    directory `DIR/runs/<stage>/`, and its result in the bundle `DIR/bundle/`;
//! 4. **reference**: a small sample of training images in `DIR/reference/` to try `generate`
//!    on (real images: personal data, never part of the bundle);
//! 5. **verify**: the runtime reads the bundle as partners and the page will (schema, hashes,
//!    shapes) and releases images for the reference sample through its own gate.
//!
//! A killed command, run again with the same flags, skips the stages done and continues the
//! one it was in from its last checkpoint. What stays on site (`DIR/data`, `DIR/runs`,
//! `DIR/reference`) and what may leave (`DIR/bundle`, subject to `docs/membership.md`) are
//! separate folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, FromArgMatches};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use unpersonal_runtime::backend::ort::{Device as OrtDevice, Ort};
use unpersonal_runtime::bundle::BundleDir;
use unpersonal_runtime::gate::Gate;
use unpersonal_runtime::generate::{Generator, Settings};
use unpersonal_runtime::release;
use unpersonal_trainer::budget::{self, Stage};
use unpersonal_trainer::checkpoint::write_atomically;
use unpersonal_trainer::data::{
    Dataset, Filelist, FilelistOptions, Split as IdxSplit, supported_size,
};
use unpersonal_trainer::engine::Device;
use unpersonal_trainer::models::{ClassifierConfig, DenoiserConfig, ReidConfig};
use unpersonal_trainer::site::{self, SplitShares};

use super::{DpArgs, EngineArgs};

#[derive(Args)]
pub struct PipelineArgs {
    /// The site's labelled images: a findings CSV (`path`, optional `patient_id`, one 0/1
    /// column per finding or one class-name column; see docs/data.md), a filelist, or a
    /// directory of IDX files.
    #[arg(long)]
    data: PathBuf,
    /// Images of people not in --data, kept for the audit (default: a seeded tenth of the
    /// people of --data is put aside).
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// The site folder: `bundle/` (the models), `data/`, `runs/` and `reference/` (which stay
    /// on site). Run the same command again to continue a stopped run.
    #[arg(long)]
    out: PathBuf,
    /// Wall-clock time for the whole command, e.g. 45m, 2h, 1h30m: every stage's steps are
    /// planned from the measured speed to fit (default: step counts scaled to the data).
    #[arg(long, value_parser = budget::parse_duration)]
    time_budget: Option<Duration>,
    /// Side of the (square) images the models work on; other sizes are brought to it by the
    /// rule of docs/data.md (default: from the data: the largest of 28, 32, 48, 64 that fits).
    #[arg(long)]
    size: Option<usize>,
    /// The CSV columns that are findings (default: every column but path, patient_id and
    /// sop_instance_uid).
    #[arg(long, value_delimiter = ',')]
    findings: Option<Vec<String>>,
    /// Seed of the split, the initialisations and every draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training images copied to `reference/` to try the bundle on.
    #[arg(long, default_value_t = 64)]
    reference_sample: usize,
    /// DP-SGD for the classifier, the re-id model and the denoiser, each spending at most
    /// --dp-epsilon (see docs/membership.md).
    #[command(flatten)]
    dp: DpArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// Only the stage lines and the summary (no progress bars).
    #[arg(long, short)]
    quiet: bool,
}

/// Everything that determines the result; a re-run must match it to continue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Flags {
    data: PathBuf,
    test_data: Option<PathBuf>,
    time_budget_s: Option<u64>,
    size: Option<usize>,
    findings: Option<Vec<String>>,
    seed: u64,
    reference_sample: usize,
    device: Device,
    /// DP-SGD's settings, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dp: Option<DpFlags>,
}

/// `--dp-epsilon`, `--dp-delta` and `--dp-clip` as every stage is given them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct DpFlags {
    epsilon: f64,
    delta: Option<f64>,
    clip: f32,
}

/// One training stage's record in `runs/pipeline.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StageRecord {
    /// The single command this stage is (its flags).
    command: Vec<String>,
    /// Planned steps.
    steps: u64,
    /// Whether it finished and exported.
    finished: bool,
    /// Seconds it took (all invocations).
    seconds: f64,
}

/// `runs/pipeline.json`: the flags, the split's sizes, the plan and each stage's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pipeline {
    flags: Flags,
    /// Images per set (train, calibration, held-out).
    sets: BTreeMap<String, usize>,
    /// Side of the images.
    size: usize,
    /// The stages as planned (speed measured on this device), when there is a budget.
    plan: Vec<Stage>,
    /// Each training stage's record.
    stages: BTreeMap<String, StageRecord>,
    /// Seconds spent by earlier invocations.
    spent_s: f64,
}

/// The training stages in order: the re-identification model (the gate) before the denoiser,
/// so that the stage with the largest share absorbs what earlier misestimates leave.
const STAGES: [&str; 3] = ["classifier", "reid", "denoiser"];

/// Time kept back from the training stages for everything else (features, calibration,
/// exports, verification): this share of the budget plus [`RESERVE_FIXED`].
const RESERVE_SHARE: f64 = 0.08;
const RESERVE_FIXED: Duration = Duration::from_secs(20);

/// Folders of the site directory.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn bundle(&self) -> PathBuf {
        self.root.join("bundle")
    }
    fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }
    fn data(&self, set: &str) -> PathBuf {
        self.root.join("data").join(set).join("findings.csv")
    }
    fn state(&self) -> PathBuf {
        self.runs().join("pipeline.json")
    }
    fn reference(&self) -> PathBuf {
        self.root.join("reference")
    }
}

pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let layout = Layout { root: args.out.clone() };
    let flags = Flags {
        data: args.data.clone(),
        test_data: args.test_data.clone(),
        time_budget_s: args.time_budget.map(|d| d.as_secs()),
        size: args.size,
        findings: args.findings.clone(),
        seed: args.seed,
        reference_sample: args.reference_sample,
        device: args.engine.device,
        dp: args.dp.dp_epsilon.map(|epsilon| DpFlags {
            epsilon,
            delta: args.dp.dp_delta,
            clip: args.dp.dp_clip,
        }),
    };
    let mut pipeline = match read_state(&layout)? {
        Some(p) => {
            ensure!(
                p.flags == flags,
                "{} was started with other flags ({}); run it with those, or choose another --out",
                layout.root.display(),
                serde_json::to_string(&p.flags)?
            );
            say(&format!("continuing {} ({:.0} s spent before)", layout.root.display(), p.spent_s));
            p
        }
        None => prepare(&args, &layout, flags)?,
    };
    let env = args.engine.environment()?;
    let train = Dataset::load(&layout.data("train"), IdxSplit::Train)?;
    let spent_before = pipeline.spent_s;
    let elapsed = |started: &Instant| spent_before + started.elapsed().as_secs_f64();

    if args.time_budget.is_some() && pipeline.plan.is_empty() {
        say("timing a few training steps of each model …");
        pipeline.plan = measure(env, &args, &train)?;
        write_state(&layout, &pipeline)?;
    }

    for (k, &name) in STAGES.iter().enumerate() {
        if pipeline.stages.get(name).is_some_and(|s| s.finished) {
            continue;
        }
        let checkpoint = layout.runs().join(name).join("checkpoint.safetensors");
        let resuming = checkpoint.exists();
        let steps = match pipeline.stages.get(name) {
            Some(record) if resuming => record.steps,
            _ => planned_steps(&pipeline, &args, k, train.len(), elapsed(&started)),
        };
        let mut command = stage_command(name, &layout, &pipeline, &args, steps, resuming);
        if let Some(seconds) = time_limit(&pipeline, &args, k, steps, elapsed(&started)) {
            // A stage slower than timed (another process on the machine, a slow disk) is cut
            // at its share of the time, and exported as it is; the next stages are planned
            // with what is then left.
            command.extend(["--time-limit".into(), format!("{}s", seconds.ceil() as u64)]);
        }
        let left = args
            .time_budget
            .map(|b| {
                format!(
                    ", {:.1} min of the budget left",
                    (b.as_secs_f64() - elapsed(&started)) / 60.0
                )
            })
            .unwrap_or_default();
        say(&format!(
            "stage {}/{}: {name}, {steps} steps{}{left}",
            k + 1,
            STAGES.len(),
            if resuming { " (continuing its checkpoint)" } else { "" },
        ));
        let record = pipeline.stages.entry(name.into()).or_default();
        record.command = command.clone();
        record.steps = steps;
        write_state(&layout, &pipeline)?;
        let stage_started = Instant::now();
        run_stage(name, &command).with_context(|| {
            format!(
                "stage {name} stopped; run the same command again to continue it from {}",
                checkpoint.display()
            )
        })?;
        let seconds = stage_started.elapsed().as_secs_f64();
        let record = pipeline.stages.get_mut(name).expect("recorded above");
        record.seconds += seconds;
        record.finished = true;
        correct_plan(&mut pipeline.plan, name, steps, seconds, resuming);
        pipeline.spent_s = elapsed(&started);
        write_state(&layout, &pipeline)?;
    }

    if !layout.reference().exists() {
        say("writing the reference sample …");
        let picked = stratified(&train, args.reference_sample);
        let names = vec![None; train.len()];
        site::write_set(&train, &picked, &names, &layout.reference())?;
    }
    say("verifying the bundle with the runtime …");
    let verified = verify(&layout, &args)?;
    pipeline.spent_s = elapsed(&started);
    write_state(&layout, &pipeline)?;
    let summary = summarise(&layout, &pipeline, verified)?;
    std::fs::write(layout.root.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    print_summary(&summary, &layout);
    Ok(())
}

/// Reads, checks, splits and writes the data; returns the new pipeline state.
fn prepare(args: &PipelineArgs, layout: &Layout, flags: Flags) -> anyhow::Result<Pipeline> {
    if layout.root.exists()
        && std::fs::read_dir(&layout.root)
            .with_context(|| format!("cannot read {}", layout.root.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty and holds no stopped `unpersonal-train bundle` run (runs/pipeline.json): choose a new --out",
            layout.root.display()
        );
    }
    let size = choose_size(&args.data, args)?;
    say(&format!("reading {} (images brought to {size}×{size}) …", args.data.display()));
    let data = load_input(&args.data, args, size)?;
    let held_out = args.test_data.as_ref().map(|p| load_input(p, args, size)).transpose()?;
    if let Some(test) = &held_out {
        ensure!(
            (test.channels, test.height, test.width, test.num_labels)
                == (data.channels, data.height, data.width, data.num_labels),
            "{} does not have {}'s image size or labels",
            test.name,
            data.name
        );
        let ours: std::collections::HashSet<_> = data.identities.iter().flatten().collect();
        let shared = test.identities.iter().flatten().filter(|id| ours.contains(id)).count();
        ensure!(
            shared == 0,
            "{} images of --test-data show people who are also in --data: held-out data must be of other people",
            shared
        );
    }
    let shares = SplitShares {
        held_out: if held_out.is_some() { 0.0 } else { SplitShares::default().held_out },
        ..SplitShares::default()
    };
    let split = site::split_by_person(&data.identities, shares, args.seed);
    let names = site::pseudonyms(&data);
    let train = data.select(&split.train, format!("{}/train", data.name));
    let calibration = data.select(&split.calibration, format!("{}/calibration", data.name));
    site::check(&train, &calibration)?;
    let people = site::people(&data.identities).len();
    say(&format!(
        "{} images of {people} people: {} to train on, {} to calibrate on, {} held out{}",
        data.len(),
        train.len(),
        calibration.len(),
        held_out.as_ref().map_or(split.held_out.len(), Dataset::len),
        if held_out.is_some() { " (--test-data)" } else { "" }
    ));
    std::fs::create_dir_all(layout.runs())
        .with_context(|| format!("cannot create {}", layout.runs().display()))?;
    let data_dir = layout.root.join("data");
    site::write_set(&data, &split.train, &names, &data_dir.join("train"))?;
    site::write_set(&data, &split.calibration, &names, &data_dir.join("calibration"))?;
    let mut sets = BTreeMap::from([
        ("train".to_owned(), split.train.len()),
        ("calibration".to_owned(), split.calibration.len()),
    ]);
    match &held_out {
        Some(test) => {
            let all: Vec<usize> = (0..test.len()).collect();
            site::write_set(test, &all, &site::pseudonyms(test), &data_dir.join("held-out"))?;
            sets.insert("held-out".into(), test.len());
        }
        None => {
            site::write_set(&data, &split.held_out, &names, &data_dir.join("held-out"))?;
            sets.insert("held-out".into(), split.held_out.len());
        }
    }
    // Which input rows went where: on site only, never in the bundle.
    std::fs::write(layout.runs().join("split.json"), serde_json::to_string(&split)?)?;
    let pipeline = Pipeline {
        flags,
        sets,
        size: data.height,
        plan: Vec::new(),
        stages: BTreeMap::new(),
        spent_s: 0.0,
    };
    write_state(layout, &pipeline)?;
    Ok(pipeline)
}

/// Reads `path` as the command's flags ask: the findings chosen, every image brought to
/// `size`×`size`.
fn load_input(path: &Path, args: &PipelineArgs, size: usize) -> anyhow::Result<Dataset> {
    let options = FilelistOptions {
        resize: Some(size),
        findings: args.findings.clone(),
        ..FilelistOptions::default()
    };
    Ok(Dataset::load_with(path, IdxSplit::Train, &options)?)
}

/// The side the models work on: `--size`, else the largest supported side the first image
/// of `path` fits (docs/data.md).
fn choose_size(path: &Path, args: &PipelineArgs) -> anyhow::Result<usize> {
    if let Some(size) = args.size {
        ensure!(
            (8..=512).contains(&size) && size % 4 == 0,
            "--size {size}: the networks take square sides from 8 to 512 that are multiples of 4"
        );
        return Ok(size);
    }
    let (width, height) = if path.is_dir() {
        let data = Dataset::load(path, IdxSplit::Train)?;
        (data.width, data.height)
    } else {
        let options =
            FilelistOptions { findings: args.findings.clone(), ..FilelistOptions::default() };
        let (w, h) = Filelist::open(path, &options)?.first_size()?;
        (w as usize, h as usize)
    };
    Ok(supported_size(width, height))
}

/// The model shapes every stage trains, for images of side `size` (the denoiser gets one more
/// level above 32 pixels, so its coarsest map stays 6–8 pixels wide).
fn denoiser_shape(size: usize) -> (&'static str, &'static str) {
    if size <= 32 { ("32,64,64", "2") } else { ("32,64,96,128", "3") }
}

/// Times a few steps of each model at its stage's batch size.
fn measure(
    env: &ort::environment::Environment,
    args: &PipelineArgs,
    train: &Dataset,
) -> anyhow::Result<Vec<Stage>> {
    let (c, s, k) = (train.channels, train.height, train.num_labels);
    let session = args.engine.session();
    let classifier = ClassifierConfig {
        channels: c,
        height: s,
        width: s,
        classes: k,
        multi_label: train.multi_label,
        ..ClassifierConfig::fashion_mnist()
    };
    let (widths, attention) = denoiser_shape(s);
    let denoiser = DenoiserConfig {
        channels: c,
        height: s,
        width: s,
        widths: widths.split(',').map(|w| w.parse().expect("constant")).collect(),
        attention: attention.split(',').map(|w| w.parse().expect("constant")).collect(),
        ..DenoiserConfig::fashion_mnist(classifier.feature_dim())
    };
    let reid = ReidConfig { channels: c, height: s, width: s, ..ReidConfig::fashion_mnist() };
    let n = train.len() as u64;
    let timed = |model: &dyn unpersonal_trainer::models::Model, batch: usize| {
        if args.dp.dp_epsilon.is_some() {
            budget::dp_seconds_per_step(env, model, batch, 2, &session)
        } else {
            budget::seconds_per_step(env, model, batch, 4, &session)
        }
    };
    // Shares of the training time, and step ranges: a classifier or re-id model gains little
    // beyond 60 epochs or 6,000 steps; the denoiser takes whatever is left.
    Ok(vec![
        Stage {
            name: "classifier".into(),
            seconds_per_step: timed(&classifier, CLASSIFIER_BATCH)?,
            share: 0.15,
            min_steps: 50,
            max_steps: (60 * n / CLASSIFIER_BATCH as u64).max(50),
        },
        Stage {
            name: "reid".into(),
            // A re-id step embeds both halves of every pair.
            seconds_per_step: timed(&reid, REID_BATCH)?,
            share: 0.15,
            min_steps: 50,
            max_steps: 6000,
        },
        Stage {
            name: "denoiser".into(),
            seconds_per_step: timed(&denoiser, DENOISER_BATCH)?,
            share: 0.70,
            min_steps: 50,
            max_steps: 100_000,
        },
    ])
}

const CLASSIFIER_BATCH: usize = 128;
const DENOISER_BATCH: usize = 64;
const REID_BATCH: usize = 64;

/// Steps of stage `k`: its share of the budget's time left, or without a budget a length
/// scaled to `n` training images.
fn planned_steps(pipeline: &Pipeline, args: &PipelineArgs, k: usize, n: usize, spent: f64) -> u64 {
    let n = n as u64;
    let Some(budget) = args.time_budget else {
        let epochs = |e: u64, batch: usize| e * n / batch as u64;
        return match STAGES[k] {
            "classifier" => epochs(30, CLASSIFIER_BATCH).clamp(500, 20_000),
            "denoiser" => epochs(150, DENOISER_BATCH).clamp(2000, 40_000),
            _ => epochs(20, REID_BATCH).clamp(1000, 4000),
        };
    };
    let reserve = budget.as_secs_f64() * RESERVE_SHARE + RESERVE_FIXED.as_secs_f64();
    let left = (budget.as_secs_f64() - reserve - spent).max(0.0);
    let remaining: Vec<Stage> = pipeline.plan[k..].to_vec();
    budget::plan(&remaining, Duration::from_secs_f64(left))[0]
}

/// The longest stage `k` may train with a budget: the time its `steps` were planned to take
/// (with 5 % to spare), but no more than the budget leaves after the reserve.
fn time_limit(
    pipeline: &Pipeline,
    args: &PipelineArgs,
    k: usize,
    steps: u64,
    spent: f64,
) -> Option<f64> {
    let budget = args.time_budget?.as_secs_f64();
    let planned = steps as f64 * pipeline.plan.get(k)?.seconds_per_step * 1.05;
    let reserve = budget * RESERVE_SHARE + RESERVE_FIXED.as_secs_f64();
    Some(planned.min(budget - reserve - spent).max(10.0))
}

/// After stage `name` ran `steps` in `seconds`, scales the later stages' measured step times by
/// how far its own measurement was off (evaluations, data loading and features are in the
/// real time, not in the timing).
fn correct_plan(plan: &mut [Stage], name: &str, steps: u64, seconds: f64, resumed: bool) {
    let Some(k) = plan.iter().position(|s| s.name == name) else { return };
    if resumed || steps == 0 {
        return;
    }
    let ratio = (seconds / steps as f64 / plan[k].seconds_per_step).clamp(0.5, 3.0);
    for later in &mut plan[k + 1..] {
        later.seconds_per_step *= ratio;
    }
}

/// The flags of stage `name`, as its single command takes them.
fn stage_command(
    name: &str,
    layout: &Layout,
    pipeline: &Pipeline,
    args: &PipelineArgs,
    steps: u64,
    resume: bool,
) -> Vec<String> {
    let path = |p: PathBuf| p.display().to_string();
    let mut flags: Vec<String> = vec![
        "--data".into(),
        path(layout.data("train")),
        "--test-data".into(),
        path(layout.data("calibration")),
        "--out".into(),
        path(layout.bundle()),
        "--run".into(),
        path(layout.runs().join(name)),
        "--steps".into(),
        steps.to_string(),
        "--seed".into(),
        args.seed.to_string(),
        "--device".into(),
        match args.engine.device {
            Device::Cpu => "cpu".into(),
            Device::Cuda => "cuda".into(),
        },
        "--threads".into(),
        args.engine.threads.to_string(),
        // Eight evaluations per stage select its weights and end it once it stops improving.
        "--eval-every".into(),
        (steps / 8).max(1).to_string(),
        "--keep-best".into(),
        "--checkpoint-every".into(),
        (steps / 20).clamp(25, 500).to_string(),
        "--size".into(),
        pipeline.size.to_string(),
    ];
    if let Some(lib) = &args.engine.ort_lib {
        flags.extend(["--ort-lib".into(), path(lib.clone())]);
    }
    if resume {
        flags.push("--resume".into());
    }
    if args.quiet {
        flags.push("--quiet".into());
    }
    if let Some(DpFlags { epsilon, delta, clip }) = pipeline.flags.dp {
        flags.extend(["--dp-epsilon".into(), epsilon.to_string()]);
        flags.extend(["--dp-clip".into(), clip.to_string()]);
        if let Some(delta) = delta {
            flags.extend(["--dp-delta".into(), delta.to_string()]);
        }
    }
    match name {
        "classifier" => {
            flags.extend(["--batch".into(), CLASSIFIER_BATCH.to_string()]);
            flags.extend(["--warmup".into(), (steps / 10).min(300).to_string()]);
        }
        "denoiser" => {
            let (widths, attention) = denoiser_shape(pipeline.size);
            flags.extend(["--batch".into(), DENOISER_BATCH.to_string()]);
            flags.extend(["--warmup".into(), (steps / 10).min(500).to_string()]);
            flags.extend([
                "--widths".into(),
                widths.into(),
                "--attention".into(),
                attention.into(),
            ]);
        }
        _ => {
            flags.extend(["--batch".into(), REID_BATCH.to_string()]);
            flags.extend(["--warmup".into(), (steps / 10).min(200).to_string()]);
            let calibration = pipeline.sets.get("calibration").copied().unwrap_or(0);
            flags.extend(["--calibration-images".into(), calibration.to_string()]);
        }
    }
    flags
}

/// Runs stage `name` as its single command with `flags`.
fn run_stage(name: &'static str, flags: &[String]) -> anyhow::Result<()> {
    match name {
        "classifier" => super::classifier::run(parse(name, flags)?),
        "denoiser" => super::denoiser::run(parse(name, flags)?),
        _ => super::reid::run(parse(name, flags)?),
    }
}

/// A command's arguments from its flags, defaults as its own command line gives them.
fn parse<T: Args + FromArgMatches>(name: &'static str, flags: &[String]) -> anyhow::Result<T> {
    let command = T::augment_args(clap::Command::new(name).no_binary_name(true));
    let matches = command.try_get_matches_from(flags)?;
    Ok(T::from_arg_matches(&matches)?)
}

/// Up to `n` rows of `data`, taking each label's images in turn (rows with no label last).
fn stratified(data: &Dataset, n: usize) -> Vec<usize> {
    let mut by_label: Vec<Vec<usize>> = vec![Vec::new(); data.num_labels + 1];
    for i in 0..data.len() {
        let label = data.label(i).iter().position(|&y| y > 0.5).unwrap_or(data.num_labels);
        by_label[label].push(i);
    }
    let mut picked = Vec::new();
    for k in 0.. {
        let before = picked.len();
        for rows in &by_label {
            if let Some(&row) = rows.get(k)
                && picked.len() < n
            {
                picked.push(row);
            }
        }
        if picked.len() == before || picked.len() >= n {
            break;
        }
    }
    picked.sort_unstable();
    picked
}

/// What the runtime's own release of the reference sample gave.
#[derive(Debug, Serialize)]
struct Verified {
    references: usize,
    released: usize,
    rejected: usize,
    references_without_release: usize,
}

/// Reads the bundle as the runtime does and releases one image per reference-sample image
/// through the runtime's gate, on ONNX Runtime.
fn verify(layout: &Layout, args: &PipelineArgs) -> anyhow::Result<Verified> {
    let loaded = BundleDir::load(&layout.bundle())
        .with_context(|| format!("the runtime refuses the bundle {}", layout.bundle().display()))?;
    let device = match args.engine.device {
        Device::Cpu => OrtDevice::Cpu,
        Device::Cuda => OrtDevice::Cuda,
    };
    let backend = Ort::new(args.engine.ort_lib.as_deref(), device, args.engine.threads)?;
    let settings = Settings::from_bundle(&loaded.bundle.sampler, args.seed);
    let mut generator = Generator::load(&loaded, &backend, settings)?;
    let mut gate = Gate::load(&loaded, &backend)?;
    let reference = Dataset::load(&layout.reference().join("findings.csv"), IdxSplit::Train)?;
    let rows: Vec<usize> = (0..reference.len().min(8)).collect();
    let pixels = reference.batch(&rows);
    let index = gate.index(pixels.view())?;
    let conditions = generator.conditions(pixels.view())?;
    let released =
        release::release(&mut generator, &mut gate, &index, &rows, conditions.view(), 1)?;
    Ok(Verified {
        references: rows.len(),
        released: released.iter().map(|(o, _)| o.released.len()).sum(),
        rejected: released.iter().flat_map(|(o, _)| &o.rejected).sum(),
        references_without_release: released.iter().filter(|(o, _)| o.released.is_empty()).count(),
    })
}

/// The summary: each model's held-out metrics, the gate's calibration, the warnings.
fn summarise(layout: &Layout, pipeline: &Pipeline, verified: Verified) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(layout.bundle().join("bundle.json"))?;
    let bundle: Value = serde_json::from_str(&text)?;
    let metrics = |role: &str| bundle["models"][role]["provenance"]["metrics"].clone();
    let calibration = bundle["reid"]["calibration"].clone();
    let mut warnings: Vec<String> = calibration["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let dp = |role: &str| bundle["models"][role]["provenance"]["dp"].clone();
    if pipeline.flags.dp.is_some() {
        let spent = |role| dp(role)["epsilon"].as_f64().unwrap_or(f64::NAN);
        warnings.push(format!(
            "DP-trained: classifier ε {:.2}, denoiser ε {:.2}, re-id ε {:.2}, together up to {:.2}; the weights may leave the site only once `unpersonal audit-models --record` finds them at chance (docs/membership.md)",
            spent("classifier"),
            spent("denoiser"),
            spent("reid_embed"),
            spent("classifier") + spent("denoiser") + spent("reid_embed")
        ));
    }
    if verified.references_without_release > 0 {
        warnings.push(format!(
            "{} of {} reference-sample images released nothing in the verification: the gate rejects most candidates; train longer (a larger --time-budget) or with more data",
            verified.references_without_release, verified.references
        ));
    }
    Ok(json!({
        "bundle": layout.bundle(),
        "sets": pipeline.sets,
        "image_size": pipeline.size,
        "stages": pipeline.stages.iter().map(|(k, s)| {
            // The step of the exported weights (a selection's best, or where a time limit
            // cut), next to the plan.
            let role = if k == "reid" { "reid_embed" } else { k.as_str() };
            let steps = bundle["models"][role]["provenance"]["steps"].clone();
            (k.clone(), json!({ "steps": steps, "planned_steps": s.steps, "minutes": s.seconds / 60.0 }))
        }).collect::<BTreeMap<_, _>>(),
        "minutes": pipeline.spent_s / 60.0,
        "classifier": metrics("classifier"),
        "denoiser": metrics("denoiser"),
        "dp": { "classifier": dp("classifier"), "denoiser": dp("denoiser"), "reid": dp("reid_embed") },
        "reid": calibration,
        "verification": verified,
        "warnings": warnings,
    }))
}

fn print_summary(summary: &Value, layout: &Layout) {
    let num = |v: &Value| v.as_f64().map_or("–".to_owned(), |x| format!("{x:.3}"));
    println!(
        "\nbundle: {}  ({:.1} min)",
        layout.bundle().display(),
        summary["minutes"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  {:<12} {:>8} {:>8} {:>8}  held-out result",
        "stage", "weights", "planned", "minutes"
    );
    for (name, what, value) in [
        ("classifier", "accuracy", &summary["classifier"]["test_accuracy"]),
        ("denoiser", "validation loss", &summary["denoiser"]["val_loss"]),
        ("reid", "ROC AUC", &summary["reid"]["roc_auc"]),
    ] {
        let stage = &summary["stages"][name];
        println!(
            "  {name:<12} {:>8} {:>8} {:>8.1}  {what} {}",
            stage["steps"],
            stage["planned_steps"],
            stage["minutes"].as_f64().unwrap_or(0.0),
            num(value)
        );
    }
    let v = &summary["verification"];
    println!(
        "  verification: {} of {} reference images released an image ({} candidates rejected)",
        v["references"].as_u64().unwrap_or(0)
            - v["references_without_release"].as_u64().unwrap_or(0),
        v["references"],
        v["rejected"]
    );
    for w in summary["warnings"].as_array().into_iter().flatten() {
        println!("  warning: {}", w.as_str().unwrap_or_default());
    }
    let data = layout.root.join("data");
    println!("\nnext:");
    println!(
        "  unpersonal generate --bundle {} --reference {} --out {}",
        layout.bundle().display(),
        data.join("train/findings.csv").display(),
        layout.root.join("release").display()
    );
    println!(
        "  unpersonal audit --bundle {} --release {} --train {} --holdout {held_out} --test {held_out} --out {}",
        layout.bundle().display(),
        layout.root.join("release").display(),
        data.join("train/findings.csv").display(),
        layout.root.join("audit").display(),
        held_out = data.join("held-out/findings.csv").display(),
    );
}

fn read_state(layout: &Layout) -> anyhow::Result<Option<Pipeline>> {
    match std::fs::read_to_string(layout.state()) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not a pipeline state", layout.state().display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", layout.state().display())),
    }
}

fn write_state(layout: &Layout, pipeline: &Pipeline) -> anyhow::Result<()> {
    let path = layout.state();
    write_atomically(&path, serde_json::to_string_pretty(pipeline)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// One stage line on stderr.
fn say(line: &str) {
    eprintln!("[bundle] {line}");
}
