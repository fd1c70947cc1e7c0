//! The EDM Heun sampler on denoisers whose answers are known.

use ndarray::{Array2, Array4, Axis, concatenate};
use serde_json::json;
use unpersonal_runtime::backend::{Backend, BackendError, Model};
use unpersonal_runtime::bundle::{Bundle, Normalization, Role};
use unpersonal_runtime::sampler::{
    self, Denoiser, Guidance, SampleError, Solver, karras_sigmas, noise, noise_batch,
};

use crate::common::{Body, C, D, H, W, backends, bundle_json, denoiser, denoiser_entry};

fn load(backend: &dyn Backend, file: &str, body: Body) -> Model {
    let onnx = denoiser(body);
    let bundle = Bundle::from_json(
        &bundle_json(json!({ "denoiser": denoiser_entry(file, &onnx) })).to_string(),
    )
    .unwrap();
    bundle.verify(Role::Denoiser, &onnx).unwrap();
    Model::load(backend, bundle.model(Role::Denoiser).unwrap(), &onnx).unwrap()
}

fn conditions(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, D), |(i, j)| if j == i % D { 1.0 } else { 0.0 })
}

fn max_abs(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
    (a - b).iter().fold(0f32, |m, v| m.max(v.abs()))
}

#[test]
fn karras_schedule_values() {
    let s = karras_sigmas(18, 0.002, 80.0, 7.0).unwrap();
    assert_eq!(s.len(), 19);
    // Reference values (the EDM paper's default 18-step schedule), computed independently.
    let expected = [
        (0, 80.0),
        (1, 57.585985),
        (2, 40.785574),
        (9, 1.92334),
        (16, 0.007528),
        (17, 0.002),
        (18, 0.0),
    ];
    for (i, v) in expected {
        assert!((s[i] - v).abs() <= 1e-6 * v.max(1.0), "sigma_{i} = {}, expected {v}", s[i]);
    }
    assert!(s.windows(2).all(|p| p[0] > p[1]));
    let five = karras_sigmas(5, 0.002, 80.0, 7.0).unwrap();
    for (got, want) in five.iter().zip([
        80.0,
        17.52783196464411,
        2.515218976147159,
        0.16975275626876413,
        0.002,
        0.0,
    ]) {
        assert!((got - want).abs() <= 1e-9 * want.max(1.0), "{got} vs {want}");
    }
    assert_eq!(karras_sigmas(1, 0.002, 80.0, 7.0).unwrap(), vec![80.0, 0.0]);
    assert!(karras_sigmas(0, 0.002, 80.0, 7.0).is_err());
    assert!(
        karras_sigmas(18, 1.0, 0.5, 7.0)
            .unwrap_err()
            .to_string()
            .contains("invalid noise schedule")
    );
}

#[test]
fn heun_on_a_single_point_converges_to_it() {
    let mu: Vec<f32> = (0..C * H * W).map(|i| (i as f32 / 8.0) - 1.0).collect();
    let mu4 = Array4::from_shape_vec((1, C, H, W), mu.clone()).unwrap();
    for backend in backends() {
        let mut den =
            Denoiser::new(load(backend.as_ref(), "point.onnx", Body::Point(mu.clone())), None)
                .unwrap();
        let sigmas = karras_sigmas(18, 0.002, 80.0, 7.0).unwrap();
        let n = noise_batch(7, &[0, 1, 2], [C, H, W]);
        let out = sampler::sample(
            &mut den,
            &sigmas,
            Solver::Heun,
            Guidance::everywhere(1.3),
            conditions(3).view(),
            n.view(),
        )
        .unwrap();
        for row in out.axis_iter(Axis(0)) {
            let diff = max_abs(&row.insert_axis(Axis(0)).to_owned(), &mu4);
            assert!(diff < 1e-4, "{}: sample is {diff} away from mu", backend.name());
        }
    }
}

#[test]
fn dpm_solver_on_a_single_point_lands_on_it() {
    let mu: Vec<f32> = (0..C * H * W).map(|i| (i as f32 / 8.0) - 1.0).collect();
    let mu4 = Array4::from_shape_vec((1, C, H, W), mu.clone()).unwrap();
    for backend in backends() {
        let mut den =
            Denoiser::new(load(backend.as_ref(), "point.onnx", Body::Point(mu.clone())), None)
                .unwrap();
        let n = noise_batch(7, &[0, 1], [C, H, W]);
        let out = sampler::sample(
            &mut den,
            &karras_sigmas(8, 0.002, 80.0, 7.0).unwrap(),
            Solver::DpmPp2M,
            Guidance::everywhere(1.3),
            conditions(2).view(),
            n.view(),
        )
        .unwrap();
        for row in out.axis_iter(Axis(0)) {
            let diff = max_abs(&row.insert_axis(Axis(0)).to_owned(), &mu4);
            assert!(diff < 1e-4, "{}: sample is {diff} away from mu", backend.name());
        }
    }
}

#[test]
fn dpm_solver_on_gaussian_data_converges_at_second_order() {
    // The exact ODE solution as in the Heun test below; DPM-Solver++(2M)'s error must fall
    // about fourfold when the steps double, and be small at 100 steps.
    let sigma_data = 0.5f32;
    let mut den = Denoiser::new(
        load(
            &unpersonal_runtime::backend::Tract::default(),
            "gauss.onnx",
            Body::Gaussian(sigma_data),
        ),
        None,
    )
    .unwrap();
    let n = Array4::from_elem((1, C, H, W), 1.0f32);
    let exact = 80.0 * sigma_data / (80.0f32 * 80.0 + sigma_data * sigma_data).sqrt();
    let mut error = |steps: usize| {
        let out = sampler::sample(
            &mut den,
            &karras_sigmas(steps, 0.002, 80.0, 7.0).unwrap(),
            Solver::DpmPp2M,
            Guidance::everywhere(1.0),
            conditions(1).view(),
            n.view(),
        )
        .unwrap();
        out.iter().map(|&v| (v - exact).abs()).fold(0.0f32, f32::max) / exact
    };
    let (e12, e24, e100) = (error(12), error(24), error(100));
    assert!(e12 / e24 > 3.0, "error {e12} at 12 steps, {e24} at 24: not second order");
    assert!(e100 < 2e-3, "100 steps off the exact solution by {e100} (relative)");
}

#[test]
fn heun_on_gaussian_data_matches_the_exact_ode_solution() {
    // Data ~ N(0, σ_d²): D(x; σ) = x·σ_d²/(σ²+σ_d²); the probability-flow ODE maps x(σ_0) to
    // x(0) = x(σ_0)·σ_d/√(σ_0²+σ_d²). Heun with 18 steps lands at 0.527624637 per unit of
    // noise (float64 reference; Euler alone would give 0.423), with 100 steps within 0.2 %.
    let sigma_data = 0.5f32;
    for backend in backends() {
        let mut den =
            Denoiser::new(load(backend.as_ref(), "gauss.onnx", Body::Gaussian(sigma_data)), None)
                .unwrap();
        let n = Array4::from_shape_fn((2, C, H, W), |(b, _, y, x)| {
            if b == 0 { 1.0 } else { (y as f32 - x as f32) / 3.0 }
        });
        let out = sampler::sample(
            &mut den,
            &karras_sigmas(18, 0.002, 80.0, 7.0).unwrap(),
            Solver::Heun,
            Guidance::everywhere(1.0),
            conditions(2).view(),
            n.view(),
        )
        .unwrap();
        let heun_18 = n.mapv(|v| v * 0.527_624_6);
        assert!(
            max_abs(&out, &heun_18) < 1e-4,
            "{}: off the Heun reference by {}",
            backend.name(),
            max_abs(&out, &heun_18)
        );
        let out = sampler::sample(
            &mut den,
            &karras_sigmas(100, 0.002, 80.0, 7.0).unwrap(),
            Solver::Heun,
            Guidance::everywhere(1.0),
            conditions(2).view(),
            n.view(),
        )
        .unwrap();
        let exact =
            n.mapv(|v| v * 80.0 * sigma_data / (80.0f32 * 80.0 + sigma_data * sigma_data).sqrt());
        let rel = max_abs(&out, &exact) / 0.5;
        assert!(
            rel < 2e-3,
            "{}: 100 steps off the exact solution by {rel} (relative)",
            backend.name()
        );
    }
}

#[test]
fn a_sample_is_the_same_in_any_batch() {
    for backend in backends() {
        let mut den =
            Denoiser::new(load(backend.as_ref(), "scale.onnx", Body::Scale(0.5)), None).unwrap();
        let sigmas = karras_sigmas(6, 0.002, 80.0, 7.0).unwrap();
        let ids = [4u64, 9, 2];
        let cond = conditions(3);
        let together = sampler::sample(
            &mut den,
            &sigmas,
            Solver::Heun,
            Guidance::everywhere(1.3),
            cond.view(),
            noise_batch(42, &ids, [C, H, W]).view(),
        )
        .unwrap();
        for (k, &id) in ids.iter().enumerate() {
            let alone = sampler::sample(
                &mut den,
                &sigmas,
                Solver::Heun,
                Guidance::everywhere(1.3),
                cond.slice(ndarray::s![k..k + 1, ..]),
                noise_batch(42, &[id], [C, H, W]).view(),
            )
            .unwrap();
            assert_eq!(
                alone.index_axis(Axis(0), 0),
                together.index_axis(Axis(0), k),
                "{}: sample {id}",
                backend.name()
            );
        }
        // Order does not matter either.
        let reversed = sampler::sample(
            &mut den,
            &sigmas,
            Solver::Heun,
            Guidance::everywhere(1.3),
            cond.slice(ndarray::s![..;-1, ..]),
            noise_batch(42, &[2, 9, 4], [C, H, W]).view(),
        )
        .unwrap();
        assert_eq!(reversed.index_axis(Axis(0), 0), together.index_axis(Axis(0), 2));
    }
}

#[test]
fn noise_depends_only_on_seed_and_sample_id() {
    let a = noise(1, 5, [C, H, W]);
    assert_eq!(a, noise(1, 5, [C, H, W]));
    assert_ne!(a, noise(1, 6, [C, H, W]));
    assert_ne!(a, noise(2, 5, [C, H, W]));
    assert_eq!(noise_batch(1, &[3, 5], [C, H, W]).index_axis(Axis(0), 1), a);
    // Standard normal: 16k draws have mean ≈ 0 and variance ≈ 1.
    let big = noise(0, 0, [1, 128, 128]);
    let mean = big.mean().unwrap();
    let var = big.mapv(|v| (v - mean) * (v - mean)).mean().unwrap();
    assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean}, variance {var}");
}

#[test]
fn guidance_applies_only_inside_its_interval() {
    let g = Guidance { weight: 2.0, interval: Some([0.3, 5.0]) };
    assert_eq!(
        (g.weight_at(0.25), g.weight_at(0.31), g.weight_at(5.0), g.weight_at(5.1)),
        (1.0, 2.0, 2.0, 1.0)
    );
    assert_eq!(Guidance::everywhere(2.0).weight_at(80.0), 2.0);
    assert_eq!(Guidance::parse_interval(" 0.3, 5").unwrap(), [0.3, 5.0]);
    for bad in ["5,0.3", "0.3", "-1,2", "0,inf", "a,b", "1,1"] {
        assert!(Guidance::parse_interval(bad).is_err(), "{bad}");
    }
    // Either solver's last step to σ = 0 lands on D at the last noise level, here σ = 1:
    // D_c = 2 there outside the interval, D_u + w·(D_c − D_u) = 0.5 + 1.5·w inside.
    for backend in backends() {
        let mut den = Denoiser::new(
            load(backend.as_ref(), "mask.onnx", Body::Mask { cond: 2.0, uncond: 0.5 }),
            None,
        )
        .unwrap();
        let n = noise_batch(3, &[0, 1], [C, H, W]);
        for solver in [Solver::Heun, Solver::DpmPp2M] {
            for (interval, want) in [(None, 3.5), (Some([0.5, 2.0]), 3.5), (Some([2.0, 20.0]), 2.0)]
            {
                let guidance = Guidance { weight: 2.0, interval };
                let out = sampler::sample(
                    &mut den,
                    &[10.0, 1.0, 0.0],
                    solver,
                    guidance,
                    conditions(2).view(),
                    n.view(),
                )
                .unwrap();
                assert!(
                    out.iter().all(|v| (v - want).abs() < 1e-5),
                    "{} {solver}: {interval:?}: got {}, want {want}",
                    backend.name(),
                    out[[0, 0, 0, 0]]
                );
            }
        }
    }
}

#[test]
fn guidance_combines_conditional_and_unconditional_rows() {
    // D_c = 2 (mask 1), D_u = 0.5 (mask 0): D = 0.5 + w·1.5.
    for backend in backends() {
        let mut den = Denoiser::new(
            load(backend.as_ref(), "mask.onnx", Body::Mask { cond: 2.0, uncond: 0.5 }),
            None,
        )
        .unwrap();
        let x = Array4::<f32>::zeros((3, C, H, W));
        for w in [0.0f32, 1.0, 1.3, 2.0] {
            let out = den.denoise(x.view(), 1.0, conditions(3).view(), w).unwrap();
            let want = 0.5 + w * 1.5;
            assert!(
                out.iter().all(|v| (v - want).abs() < 1e-6),
                "{}: w = {w}: got {}, want {want}",
                backend.name(),
                out[[0, 0, 0, 0]]
            );
        }
        // With a separate guide model: conditional rows from the denoiser, unconditional from the guide.
        let model = load(backend.as_ref(), "mask.onnx", Body::Mask { cond: 2.0, uncond: 0.5 });
        let guide = load(backend.as_ref(), "guide.onnx", Body::Mask { cond: 9.0, uncond: -1.0 });
        let mut den = Denoiser::new(model, Some(guide)).unwrap();
        let out = den.denoise(x.view(), 1.0, conditions(3).view(), 1.5).unwrap();
        assert!(
            out.iter().all(|v| (v - (-1.0 + 1.5 * 3.0)).abs() < 1e-6),
            "{}: got {}",
            backend.name(),
            out[[0, 0, 0, 0]]
        );
    }
}

#[test]
fn nan_from_the_denoiser_stops_sampling() {
    for backend in backends() {
        let mut den = Denoiser::new(load(backend.as_ref(), "nan.onnx", Body::Nan), None).unwrap();
        let n = noise_batch(0, &[0], [C, H, W]);
        let error = sampler::sample(
            &mut den,
            &karras_sigmas(4, 0.002, 80.0, 7.0).unwrap(),
            Solver::Heun,
            Guidance::everywhere(1.3),
            conditions(1).view(),
            n.view(),
        )
        .unwrap_err();
        assert!(matches!(error, SampleError::Backend(BackendError::NonFinite { .. })), "{error}");
        assert!(
            error.to_string().contains("nan.onnx") && error.to_string().contains("denoised"),
            "{error}"
        );
    }
}

#[test]
fn mismatched_arrays_are_refused() {
    let mut den = Denoiser::new(
        load(&unpersonal_runtime::backend::Tract::default(), "scale.onnx", Body::Scale(0.5)),
        None,
    )
    .unwrap();
    let sigmas = karras_sigmas(4, 0.002, 80.0, 7.0).unwrap();
    let n = noise_batch(0, &[0, 1], [C, H, W]);
    assert!(matches!(
        sampler::sample(
            &mut den,
            &sigmas,
            Solver::Heun,
            Guidance::everywhere(1.0),
            conditions(3).view(),
            n.view()
        ),
        Err(SampleError::Shape(_))
    ));
    let wide = concatenate![Axis(1), conditions(2), conditions(2)];
    assert!(matches!(
        sampler::sample(
            &mut den,
            &sigmas,
            Solver::Heun,
            Guidance::everywhere(1.0),
            wide.view(),
            n.view()
        ),
        Err(SampleError::Shape(_))
    ));
    assert!(matches!(
        sampler::sample(
            &mut den,
            &[80.0, 1.0],
            Solver::Heun,
            Guidance::everywhere(1.0),
            conditions(2).view(),
            n.view()
        ),
        Err(SampleError::Schedule(_))
    ));
    assert_eq!((den.image_shape(), den.condition_size()), ([C, H, W], D));
}

#[test]
fn pixels_follow_the_bundle_normalisation() {
    let norm = Normalization { mean: 0.5, std: 0.5, formula: String::new() };
    let image =
        ndarray::Array3::from_shape_vec((1, 1, 5), vec![-1.0, 0.0, 1.0, -3.0, 7.0]).unwrap();
    assert_eq!(
        image.mapv(|v| norm.to_pixel(v)).into_raw_vec_and_offset().0,
        vec![0, 128, 255, 0, 255]
    );
    for pixel in [0u8, 1, 127, 200, 255] {
        assert_eq!(norm.to_pixel(norm.normalize(pixel)), pixel);
    }
    // Channels come out interleaved (HWC), as PNG stores them.
    let rgb = ndarray::Array3::from_shape_vec((3, 1, 2), vec![0u8, 0, 128, 128, 255, 255]).unwrap();
    assert_eq!(
        unpersonal_runtime::generate::interleaved(rgb.view()),
        vec![0, 128, 255, 0, 128, 255]
    );
}

#[cfg(any(feature = "ort", feature = "webgpu"))]
#[test]
fn every_backend_draws_the_same_samples_as_tract() {
    let sigmas = karras_sigmas(18, 0.002, 80.0, 7.0).unwrap();
    let n = noise_batch(3, &[0, 1, 2, 3], [C, H, W]);
    let all = backends();
    let samples: Vec<Array4<f32>> = all
        .iter()
        .map(|backend| {
            let mut den =
                Denoiser::new(load(backend.as_ref(), "gauss.onnx", Body::Gaussian(0.5)), None)
                    .unwrap();
            sampler::sample(
                &mut den,
                &sigmas,
                Solver::Heun,
                Guidance::everywhere(1.3),
                conditions(4).view(),
                n.view(),
            )
            .unwrap()
        })
        .collect();
    assert!(samples.len() >= 2, "this build has only tract");
    for (backend, other) in all.iter().zip(&samples).skip(1) {
        let diff = max_abs(&samples[0], other);
        assert!(diff < 1e-5, "tract and {} differ by {diff}", backend.name());
    }
}

#[test]
fn the_distilled_solver_takes_first_order_steps() {
    // On N(0, σ_d²) data, one distilled step is x' = r·x + (1 − r)·x·σ_d²/(σ² + σ_d²) with
    // r = σ'/σ: computed here in float64 and compared with the sampler on every backend.
    let sigma_data = 0.5f64;
    let sigmas = karras_sigmas(4, 0.002, 80.0, 7.0).unwrap();
    let mut expected = sigmas[0];
    for pair in sigmas.windows(2) {
        let (s, next) = (pair[0], pair[1]);
        let denoised = expected * sigma_data * sigma_data / (s * s + sigma_data * sigma_data);
        expected = next / s * expected + (1.0 - next / s) * denoised;
    }
    for backend in backends() {
        let mut den = Denoiser::new(
            load(backend.as_ref(), "gauss.onnx", Body::Gaussian(sigma_data as f32)),
            None,
        )
        .unwrap();
        let out = sampler::sample(
            &mut den,
            &sigmas,
            Solver::Distilled,
            Guidance::everywhere(1.0),
            conditions(1).view(),
            Array4::from_elem((1, C, H, W), 1.0f32).view(),
        )
        .unwrap();
        for &v in out.iter() {
            let error = (v as f64 - expected).abs() / expected;
            assert!(error < 1e-5, "{}: {v} against {expected}", backend.name());
        }
    }
    assert_eq!(Solver::Distilled.evaluations(4), 4);
    assert_eq!("distilled".parse::<Solver>().unwrap(), Solver::Distilled);
}

#[test]
fn a_trajectory_holds_the_states_the_sampler_passes_through() {
    let mut den = Denoiser::new(
        load(&unpersonal_runtime::backend::Tract::default(), "gauss.onnx", Body::Gaussian(0.5)),
        None,
    )
    .unwrap();
    let sigmas = karras_sigmas(8, 0.002, 80.0, 7.0).unwrap();
    let n = noise_batch(3, &[0, 1], [C, H, W]);
    let guidance = Guidance::everywhere(1.0);
    let states = sampler::trajectory(
        &mut den,
        &sigmas,
        Solver::DpmPp2M,
        guidance,
        conditions(2).view(),
        n.view(),
        &[8, 0, 3],
    )
    .unwrap();
    let images = sampler::sample(
        &mut den,
        &sigmas,
        Solver::DpmPp2M,
        guidance,
        conditions(2).view(),
        n.view(),
    )
    .unwrap();
    assert_eq!(states[0], images, "the state after the last step is the sample");
    assert_eq!(states[1], n.mapv(|v| 80.0 * v), "the state after no step is σ_0·noise");
    // On Gaussian data every state is the start scaled by one factor, shrinking step by step.
    let ratio = states[2][[0, 0, 0, 0]] / states[1][[0, 0, 0, 0]];
    assert!(ratio > 0.0 && ratio < 1.0, "state 3 is {ratio} of the start");
    assert!(max_abs(&states[2], &states[1].mapv(|v| v * ratio)) < 1e-3);
    let err = sampler::trajectory(
        &mut den,
        &sigmas,
        Solver::DpmPp2M,
        guidance,
        conditions(2).view(),
        n.view(),
        &[9],
    )
    .unwrap_err();
    assert!(err.to_string().contains("no state after step 9 of 8"), "{err}");
}
