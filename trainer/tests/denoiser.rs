//! The denoiser end to end on a small configuration: the exported ONNX file (on ONNX Runtime
//! and on tract) computes the same EDM loss as the training graph, the unconditional rows
//! ignore their condition, and the per-step draws are reproducible.

use unpersonal_trainer::data::Batch;
use unpersonal_trainer::diffusion::{DenoiserFeed, EdmTraining, Features};
use unpersonal_trainer::engine::{self, HostTensor, SessionConfig, TrainingEngine};
use unpersonal_trainer::export::{self, Weights};
use unpersonal_trainer::models::DenoiserConfig;
use unpersonal_trainer::step::{self, AdamW};
use unpersonal_trainer::train::Feed;

const B: usize = 6;
const DIM: usize = 5;

fn small_model() -> DenoiserConfig {
    DenoiserConfig {
        channels: 1,
        height: 8,
        width: 8,
        condition_dim: DIM,
        widths: vec![8, 16],
        blocks: 1,
        attention: vec![1],
        embedding: 16,
        groups: 4,
        sigma_data: 0.5,
    }
}

/// A batch of `B` smooth images (normalised values in [-1, 1]).
fn batch(offset: usize) -> Batch {
    let images = (0..B * 64).map(|i| (((i + offset) as f32) * 0.37).sin()).collect();
    Batch { images, labels: vec![0.0; B], indices: (0..B).collect(), n: B }
}

fn features() -> Features {
    let plain = (0..B * DIM).map(|i| ((i as f32) * 0.71).cos()).collect();
    let mirrored = (0..B * DIM).map(|i| ((i as f32) * 0.53).sin()).collect();
    Features { dim: DIM, plain, mirrored: Some(mirrored) }
}

fn feed(features: &Features) -> DenoiserFeed<'_> {
    DenoiserFeed {
        features,
        edm: EdmTraining { p_uncond: 0.3, ..EdmTraining::default() },
        seed: 11,
        image: [1, 8, 8],
        per_image: false,
    }
}

fn tensor(shape: &[usize], data: &[f32]) -> HostTensor {
    HostTensor { shape: shape.to_vec(), data: data.to_vec() }
}

/// `λ(σ)·mean((D − y)²)` averaged over the batch, from a denoiser's output.
fn edm_loss(denoised: &[f32], clean: &[f32], sigma: &[f32], sigma_data: f32) -> f32 {
    let per_image = denoised.len() / sigma.len();
    let mut total = 0f64;
    for (i, &s) in sigma.iter().enumerate() {
        let weight = (s * s + sigma_data * sigma_data) / (s * sigma_data).powi(2);
        let rows = i * per_image..(i + 1) * per_image;
        let mse: f32 = denoised[rows.clone()]
            .iter()
            .zip(&clean[rows])
            .map(|(d, y)| (d - y).powi(2))
            .sum::<f32>()
            / per_image as f32;
        total += (weight * mse) as f64;
    }
    (total / sigma.len() as f64) as f32
}

#[test]
fn exported_denoiser_matches_the_training_graph_on_ort_and_tract() {
    let env = engine::environment(None).expect("ONNX Runtime must be available");
    let model = small_model();
    model.validate().unwrap();
    let step_graph = step::build(&model, B, &AdamW::default());
    let state = step::initial_state(&step_graph.params, 5);
    let mut engine = TrainingEngine::new(env, &step_graph, &state, &SessionConfig::cpu(1)).unwrap();
    let features = features();
    let feed = feed(&features);
    // A few steps with a large learning rate move every zero-initialised layer away from zero.
    for t in 1..=4 {
        let inputs = feed.feed(&batch(t as usize), t);
        let inputs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        engine.step(&inputs, t, 1e-2, 0.5).unwrap();
    }
    let trained = engine.state().unwrap();
    let probe = feed.feed(&batch(99), 5);
    let inputs: Vec<&[f32]> = probe.iter().map(Vec::as_slice).collect();
    let graph_loss = engine.step(&inputs, 5, 0.0, 0.5).unwrap().loss;

    let onnx = export::onnx_bytes(&model, &trained, Weights::Raw, vec![]).unwrap();
    let [image, noise, sigma, condition, mask] = &probe[..] else { panic!("five batch inputs") };
    let noisy: Vec<f32> =
        image.iter().zip(noise).enumerate().map(|(i, (y, n))| y + sigma[i / 64] * n).collect();
    let x = tensor(&[B, 1, 8, 8], &noisy);
    let (sigma_t, cond_t, mask_t) =
        (tensor(&[B], sigma), tensor(&[B, DIM], condition), tensor(&[B], mask));
    let named =
        [("x", &x), ("sigma", &sigma_t), ("condition", &cond_t), ("condition_mask", &mask_t)];

    let mut session = engine::session(env, &onnx, &SessionConfig::cpu(1)).unwrap();
    let ort = engine::run(&mut session, &named).unwrap().remove("denoised").unwrap();
    let tract = export::run_tract(&onnx, &[&x, &sigma_t, &cond_t, &mask_t]).unwrap().remove(0);
    let ort_loss = edm_loss(&ort.data, image, sigma, model.sigma_data);
    let tract_loss = edm_loss(&tract.data, image, sigma, model.sigma_data);
    assert!(graph_loss.is_finite() && graph_loss > 0.0);
    for (engine_name, loss) in [("ONNX Runtime", ort_loss), ("tract", tract_loss)] {
        let rel = (loss - graph_loss).abs() / graph_loss.max(1.0);
        assert!(rel <= 1e-4, "{engine_name}: exported loss {loss} vs training graph {graph_loss}");
    }
    let diff = export::scaled_diff(&ort.data, &tract.data);
    assert!(diff <= 1e-4, "ONNX Runtime and tract differ by {diff}");
    assert!(
        mask.contains(&0.0) && mask.contains(&1.0),
        "the probe has conditional and unconditional rows: {mask:?}"
    );
}

#[test]
fn unconditional_rows_ignore_their_condition() {
    let env = engine::environment(None).expect("ONNX Runtime must be available");
    let model = small_model();
    let step_graph = step::build(&model, B, &AdamW::default());
    let mut state = step::initial_state(&step_graph.params, 1);
    // Non-zero everywhere, so the condition path is live.
    for (name, t) in state.iter_mut() {
        if !name.contains(".adam_") {
            t.data.iter_mut().enumerate().for_each(|(i, v)| *v += 0.05 * ((i as f32) * 0.9).sin());
        }
    }
    let onnx = export::onnx_bytes(&model, &state, Weights::Raw, vec![]).unwrap();
    let mut session = engine::session(env, &onnx, &SessionConfig::cpu(1)).unwrap();
    let x = tensor(&[2, 1, 8, 8], &batch(0).images[..128]);
    let sigma = tensor(&[2], &[0.5, 0.5]);
    let mut run = |cond: &[f32], mask: &[f32]| {
        let (c, m) = (tensor(&[2, DIM], cond), tensor(&[2], mask));
        engine::run(
            &mut session,
            &[("x", &x), ("sigma", &sigma), ("condition", &c), ("condition_mask", &m)],
        )
        .unwrap()
        .remove("denoised")
        .unwrap()
        .data
    };
    let a: Vec<f32> = (0..2 * DIM).map(|i| i as f32 * 0.1).collect();
    let b: Vec<f32> = (0..2 * DIM).map(|i| 1.0 - i as f32 * 0.2).collect();
    assert_eq!(
        run(&a, &[0.0, 0.0]),
        run(&b, &[0.0, 0.0]),
        "mask 0 rows must not depend on the condition"
    );
    assert_ne!(
        run(&a, &[1.0, 1.0]),
        run(&b, &[1.0, 1.0]),
        "mask 1 rows must depend on the condition"
    );
}

#[test]
fn per_step_draws_are_reproducible_and_follow_the_distribution() {
    let features = features();
    let feed = feed(&features);
    let b = batch(0);
    assert_eq!(feed.feed(&b, 7), feed.feed(&b, 7));
    assert_ne!(feed.feed(&b, 7)[2], feed.feed(&b, 8)[2], "noise levels change from step to step");
    // ln σ over many steps: mean −1.2, standard deviation 1.2.
    let ln: Vec<f32> = (1..=500).flat_map(|t| feed.feed(&b, t)[2].clone()).map(f32::ln).collect();
    let mean = ln.iter().sum::<f32>() / ln.len() as f32;
    let std = (ln.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / ln.len() as f32).sqrt();
    assert!((mean + 1.2).abs() < 0.1 && (std - 1.2).abs() < 0.1, "ln σ mean {mean}, std {std}");
    // Dropped rows carry a zero condition; kept rows carry the (possibly mirrored) features.
    let draws = feed.feed(&b, 3);
    for (i, &m) in draws[4].iter().enumerate() {
        let row = &draws[3][i * DIM..(i + 1) * DIM];
        if m == 0.0 {
            assert!(row.iter().all(|&v| v == 0.0));
        } else {
            assert!(row == features.row(i, false) || row == features.row(i, true));
        }
    }
}

#[test]
fn per_image_draws_do_not_depend_on_the_rest_of_the_batch() {
    let features = features();
    let own = DenoiserFeed { per_image: true, ..feed(&features) };
    let full = batch(0);
    // Rows 2 and 5 alone, as a DP lot without the others would hold them.
    let pick = [2usize, 5];
    let part = Batch {
        images: pick.iter().flat_map(|&r| full.images[r * 64..(r + 1) * 64].to_vec()).collect(),
        labels: vec![0.0; 2],
        indices: pick.to_vec(),
        n: 2,
    };
    let (all, alone) = (own.feed(&full, 9), own.feed(&part, 9));
    for (k, &row) in pick.iter().enumerate() {
        // image, noise: 64 values per row; sigma, mask: 1; condition: DIM.
        for (input, width) in [(0, 64), (1, 64), (2, 1), (3, DIM), (4, 1)] {
            assert_eq!(
                all[input][row * width..(row + 1) * width],
                alone[input][k * width..(k + 1) * width],
                "input {input} of row {row} changed with the batch"
            );
        }
    }
    // The batch-stream feed, by contrast, hands row 2 the draws of the batch's first place.
    let shared = feed(&features);
    assert_ne!(shared.feed(&full, 9)[2][2], shared.feed(&part, 9)[2][0]);
}
