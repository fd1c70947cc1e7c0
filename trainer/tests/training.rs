//! The training engine end to end on a small classifier: ONNX validity, determinism,
//! checkpoint/resume and export parity between ONNX Runtime and tract.

use std::path::PathBuf;

use unpersonal_trainer::data::{Augment, Dataset, Normalization};
use unpersonal_trainer::engine::{self, HostTensor, SessionConfig, State};
use unpersonal_trainer::export::{self, Weights};
use unpersonal_trainer::models::ClassifierConfig;
use unpersonal_trainer::onnx::{ExportOptions, Params, to_bytes};
use unpersonal_trainer::step::{self, AdamW};
use unpersonal_trainer::train::{self, RunOptions, Schedule, TrainConfig};

fn small_model() -> ClassifierConfig {
    ClassifierConfig {
        channels: 1,
        height: 12,
        width: 12,
        classes: 3,
        widths: [8, 8, 16],
        groups: 4,
        multi_label: false,
    }
}

/// 60 images of three classes: a bright square in one of three places.
fn toy_data() -> Dataset {
    let (h, w, n) = (12, 12, 60);
    let mut images = vec![0u8; n * h * w];
    let mut labels = vec![0f32; n * 3];
    for i in 0..n {
        let class = i % 3;
        labels[i * 3 + class] = 1.0;
        for y in 2..6 {
            for x in 0..4 {
                images[i * h * w + (y + class * 2) * w + x + class * 3 + (i % 2)] =
                    200 + (i % 50) as u8;
            }
        }
    }
    Dataset {
        name: "toy".into(),
        channels: 1,
        height: h,
        width: w,
        num_labels: 3,
        multi_label: false,
        images,
        labels,
        allows_hflip: false,
        identities: vec![None; n],
        label_names: Vec::new(),
    }
}

fn config(steps: u64) -> TrainConfig {
    TrainConfig {
        model: serde_json::to_value(small_model()).unwrap(),
        data: "toy".into(),
        samples: 60,
        batch: 8,
        schedule: Schedule { steps, warmup: 2, lr: 3e-3, final_ratio: 0.1 },
        adamw: AdamW::default(),
        ema: 0.9,
        seed: 3,
        augment: Augment { shift: 1, hflip: false, brightness: 0.0, contrast: 0.0 },
        normalization: Normalization::SYMMETRIC,
        dp: None,
    }
}

fn options(dir: PathBuf, resume: bool) -> RunOptions {
    RunOptions {
        run_dir: dir,
        session: SessionConfig::cpu(1),
        resume,
        reschedule: false,
        checkpoint_every: 3,
        eval_every: 0,
        quiet: true,
        stop_after: None,
        time_limit: None,
        selection: None,
        initial_weights: None,
    }
}

fn run(cfg: &TrainConfig, opts: &RunOptions) -> State {
    let env = engine::environment(None).unwrap();
    let (state, _) =
        train::train(&small_model(), cfg, &toy_data(), &train::Supervised, opts, env, |_, _| {
            Ok(serde_json::Value::Null)
        })
        .unwrap();
    state
}

/// The workspace's `.venv` Python (made by scripts/setup.sh), which has the `onnx` package.
fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    python
}

#[test]
fn the_training_step_graph_passes_the_onnx_checker() {
    let sg = step::build(&small_model(), 4, &AdamW::default());
    let bytes = to_bytes(
        &sg.graph,
        &ExportOptions { params: Params::Inputs, symbolic_batch: false, metadata: vec![] },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("step.onnx");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new(python())
        .args(["-c", "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print('ok')"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnx checker rejected the step graph: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_same_seed_gives_identical_losses_and_weights() {
    let losses = |_: ()| {
        let sg = step::build(&small_model(), 8, &AdamW::default());
        let state = step::initial_state(&sg.params, 11);
        let env = engine::environment(None).unwrap();
        let mut eng =
            engine::TrainingEngine::new(env, &sg, &state, &SessionConfig::cpu(2)).unwrap();
        let data = toy_data();
        let mut batcher = unpersonal_trainer::data::Batcher::new(
            &data,
            8,
            5,
            Normalization::SYMMETRIC,
            Augment::none(),
            true,
            true,
        )
        .unwrap();
        let mut losses = Vec::new();
        for t in 1..=5 {
            let b = batcher.next_batch();
            losses.push(eng.step(&[&b.images, &b.labels], t, 1e-2, 0.9).unwrap().loss);
        }
        (losses, eng.state().unwrap())
    };
    let (a, state_a) = losses(());
    let (b, state_b) = losses(());
    assert_eq!(a, b);
    assert_eq!(state_a, state_b);
    assert!(a[4] < a[0], "loss did not decrease: {a:?}");
}

#[test]
fn a_resumed_run_reaches_the_same_state_as_an_uninterrupted_one() {
    let straight = tempfile::tempdir().unwrap();
    let full = run(&config(7), &options(straight.path().into(), false));

    // Stopped after 4 steps (the run checkpoints where it stops), then resumed to the end.
    let split = tempfile::tempdir().unwrap();
    let mut first = options(split.path().into(), false);
    first.stop_after = Some(4);
    let partial = run(&config(7), &first);
    assert_ne!(partial, full);
    let ckpt =
        unpersonal_trainer::checkpoint::load(&split.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(ckpt.progress.step, 4);
    let resumed = run(&config(7), &options(split.path().into(), true));
    assert_eq!(full, resumed, "resuming changed the result");
}

/// A held-out metric per evaluation (every 2 steps): best at step 4, then no better.
fn scripted_metric(step: u64) -> f64 {
    match step {
        2 => 1.0,
        4 => 0.5,
        6 => 0.7,
        8 => 0.5,
        _ => 0.9,
    }
}

/// Runs 20 steps selecting by the scripted metric; returns the state, its summary and the
/// state the evaluation saw at step 4.
fn run_selected(opts: &RunOptions) -> (State, train::Summary, Option<State>) {
    let env = engine::environment(None).unwrap();
    let mut at_best = None;
    let (state, summary) = train::train(
        &small_model(),
        &config(20),
        &toy_data(),
        &train::Supervised,
        opts,
        env,
        |t, state| {
            if t == 4 {
                at_best = Some(state.clone());
            }
            Ok(serde_json::json!({ "loss": scripted_metric(t) }))
        },
    )
    .unwrap();
    (state, summary, at_best)
}

#[test]
fn a_selection_ends_training_after_its_patience_and_returns_the_best_evaluated_state() {
    let dir = tempfile::tempdir().unwrap();
    let selected = |mut opts: RunOptions| {
        opts.eval_every = 2;
        opts.selection =
            Some(train::Selection { metric: "loss", lower_is_better: true, patience: 3 });
        opts
    };
    let (state, summary, at_best) = run_selected(&selected(options(dir.path().into(), false)));
    // Steps 6, 8 (equal is not better) and 10 bring no improvement: training ends at 10.
    assert!(summary.converged && !summary.out_of_time && !summary.paused());
    assert_eq!((summary.steps, summary.weights_step()), (10, 4));
    assert_eq!(Some(state), at_best, "the returned state is not the best evaluation's");
    assert!(dir.path().join("best.safetensors").exists());

    // Interrupted after step 6 and resumed, the run still knows its best.
    let split = tempfile::tempdir().unwrap();
    let mut first = selected(options(split.path().into(), false));
    first.stop_after = Some(6);
    let (_, paused, _) = run_selected(&first);
    assert!(paused.paused());
    let (resumed, summary, _) = run_selected(&selected(options(split.path().into(), true)));
    assert_eq!((summary.steps, summary.weights_step()), (10, 4));
    assert_eq!(Some(resumed), at_best);

    // Without a selection the same run goes to the end and returns its last state.
    let plain = tempfile::tempdir().unwrap();
    let mut opts = options(plain.path().into(), false);
    opts.eval_every = 2;
    let (_, summary, _) = run_selected(&opts);
    assert_eq!((summary.steps, summary.best.is_none(), summary.converged), (20, true, false));
}

#[test]
fn resuming_with_another_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path().into(), false);
    opts.stop_after = Some(2);
    run(&config(7), &opts);
    let env = engine::environment(None).unwrap();
    let mut other = config(7);
    other.seed = 4;
    let err = train::train(
        &small_model(),
        &other,
        &toy_data(),
        &train::Supervised,
        &options(dir.path().into(), true),
        env,
        |_, _| Ok(serde_json::Value::Null),
    )
    .expect_err("resume with a different seed must fail");
    assert!(format!("{err:#}").contains("different configuration"), "{err:#}");
    let err = train::train(
        &small_model(),
        &config(7),
        &toy_data(),
        &train::Supervised,
        &options(dir.path().into(), false),
        env,
        |_, _| Ok(serde_json::Value::Null),
    )
    .expect_err("starting over an existing checkpoint must fail");
    assert!(format!("{err:#}").contains("--resume"), "{err:#}");
}

#[test]
fn a_run_can_be_rescheduled_to_another_schedule_and_batch_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path().into(), false);
    opts.stop_after = Some(3);
    run(&config(7), &opts);
    let env = engine::environment(None).unwrap();
    let train = |cfg: &TrainConfig, reschedule: bool| {
        let mut opts = options(dir.path().into(), true);
        opts.reschedule = reschedule;
        train::train(&small_model(), cfg, &toy_data(), &train::Supervised, &opts, env, |_, _| {
            Ok(serde_json::Value::Null)
        })
    };
    let err = train(&config(5), false).expect_err("another length needs --reschedule");
    assert!(format!("{err:#}").contains("different configuration"), "{err:#}");
    let err = train(&config(2), true).expect_err("a length before the current step is refused");
    assert!(format!("{err:#}").contains("already at step 3"), "{err:#}");
    let mut other = config(5);
    other.seed = 9;
    assert!(train(&other, true).is_err(), "--reschedule changes only the schedule and the batch");
    let mut longer = config(5);
    longer.batch *= 2;
    longer.schedule.lr *= 2.0;
    let err = train(&longer, false).expect_err("another batch size needs --reschedule");
    assert!(format!("{err:#}").contains("different configuration"), "{err:#}");
    let (_, summary) = train(&longer, true).expect("rescheduled to 5 steps of a larger batch");
    assert_eq!(summary.steps, 5);
    let ckpt =
        unpersonal_trainer::checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(ckpt.config["schedule"]["steps"], 5, "the checkpoint records the new length");
    assert_eq!(ckpt.config["batch"], longer.batch, "the checkpoint records the new batch size");
    assert_eq!(
        ckpt.config["schedule"]["lr"], longer.schedule.lr,
        "the checkpoint records the new peak"
    );
}

#[test]
fn ort_and_tract_agree_on_the_exported_model() {
    let dir = tempfile::tempdir().unwrap();
    let state = run(&config(6), &options(dir.path().into(), false));
    let onnx = export::onnx_bytes(&small_model(), &state, Weights::Ema, vec![]).unwrap();
    let env = engine::environment(None).unwrap();
    let data = toy_data();
    let batch = unpersonal_trainer::data::epoch_batches(&data, 16, Normalization::SYMMETRIC)
        .next()
        .unwrap();
    let input = HostTensor { shape: vec![16, 1, 12, 12], data: batch.images };
    let diff = export::parity(env, &onnx, &[("image", &input)]).unwrap();
    assert!(diff <= 1e-4, "ORT and tract differ by {diff}");
    // The features output is L2-normalised.
    let features = &export::run_tract(&onnx, &[&input]).unwrap()[1];
    for row in features.data.chunks(16) {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "feature norm {norm}");
    }
}

/// The clipped gradient of image `row` of the toy data at the initial weights, as the DP
/// gradient graph adds it to a zero sum.
fn clipped_gradient(clip: f32, row: usize) -> Vec<f32> {
    use unpersonal_trainer::data::lot;
    use unpersonal_trainer::dp::GradientGraph;
    let graph = GradientGraph::build(&small_model(), clip);
    let state = step::initial_state(&graph.params, 5);
    let bytes = to_bytes(
        &graph.graph,
        &ExportOptions { params: Params::Inputs, symbolic_batch: false, metadata: vec![] },
    )
    .unwrap();
    let env = engine::environment(None).unwrap();
    let mut session = engine::session(env, &bytes, &SessionConfig::cpu(1)).unwrap();
    let data = toy_data();
    let batch = lot(&data, &[row], 0, Normalization::SYMMETRIC, &Augment::none(), 1);
    let image = HostTensor { shape: vec![1, 1, 12, 12], data: batch.images };
    let label = HostTensor { shape: vec![1, 3], data: batch.labels };
    let zeros: Vec<(String, HostTensor)> = graph
        .params
        .iter()
        .map(|p| {
            let n = p.shape.iter().product();
            (
                format!("{}.grad_sum", p.name),
                HostTensor { shape: p.shape.clone(), data: vec![0.0; n] },
            )
        })
        .collect();
    let mut inputs: Vec<(&str, &HostTensor)> = vec![
        (graph.batch_inputs[0].0.as_str(), &image),
        (graph.batch_inputs[1].0.as_str(), &label),
    ];
    inputs.extend(graph.params.iter().map(|p| (p.name.as_str(), &state[&p.name])));
    inputs.extend(zeros.iter().map(|(name, t)| (name.as_str(), t)));
    let out = engine::run(&mut session, &inputs).unwrap();
    graph
        .params
        .iter()
        .flat_map(|p| out[&format!("{}.grad_sum.next", p.name)].data.clone())
        .collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

#[test]
fn dp_sgd_clips_each_images_gradient_to_the_bound_and_keeps_its_direction() {
    for row in [0, 7] {
        let raw = clipped_gradient(1e6, row);
        let raw_norm = norm(&raw);
        assert!(raw_norm > 0.05, "the toy gradient is too small to test clipping: {raw_norm}");
        let clip = (raw_norm / 4.0) as f32;
        let clipped = clipped_gradient(clip, row);
        let clipped_norm = norm(&clipped);
        assert!(clipped_norm <= f64::from(clip), "{clipped_norm} > {clip}");
        assert!(clipped_norm > f64::from(clip) * 0.999, "{clipped_norm} well below {clip}");
        let cosine: f64 =
            raw.iter().zip(&clipped).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>()
                / (raw_norm * clipped_norm);
        assert!(cosine > 0.99999, "clipping turned the gradient: cosine {cosine}");
    }
}

#[test]
fn dp_sgd_trains_within_its_planned_epsilon_with_noise_no_seed_reproduces() {
    use unpersonal_trainer::dp::{DpSgd, Units};
    let data = toy_data();
    let units = Units::of(&data);
    assert_eq!(units.len(), 60, "images without a patient ID are their own units");
    let dp = DpSgd::plan(8.0, None, 1.0, 8, &units, 30).unwrap();
    assert_eq!(dp.delta, 1.0 / 600.0);
    let spent = dp.guarantee(30).unwrap();
    assert!(spent["epsilon"].as_f64().unwrap() <= 8.0, "{spent}");
    assert!(
        dp.guarantee(10).unwrap()["epsilon"].as_f64().unwrap() < spent["epsilon"].as_f64().unwrap()
    );
    assert!(DpSgd::plan(8.0, None, 1.0, 60, &units, 30).is_err(), "a lot of everyone is refused");

    let mut cfg = config(30);
    cfg.dp = Some(dp);
    let train = |dir: &std::path::Path| {
        let env = engine::environment(None).unwrap();
        train::train(
            &small_model(),
            &cfg,
            &data,
            &train::Supervised,
            &options(dir.into(), false),
            env,
            |_, _| Ok(serde_json::Value::Null),
        )
        .unwrap()
    };
    let a = tempfile::tempdir().unwrap();
    let (state_a, summary) = train(a.path());
    assert_eq!(summary.steps, 30);
    assert!(summary.last_loss.is_finite());
    let b = tempfile::tempdir().unwrap();
    let (state_b, _) = train(b.path());
    assert_ne!(state_a, state_b, "two DP runs with one --seed drew the same lots and noise");
    let init = step::initial_state(&step::build(&small_model(), 8, &AdamW::default()).params, 3);
    assert_eq!(state_a.keys().collect::<Vec<_>>(), init.keys().collect::<Vec<_>>());
}
