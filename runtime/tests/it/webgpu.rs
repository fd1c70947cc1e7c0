//! The WebGPU backend against tract, on whatever adapter wgpu finds (lavapipe in CI): the
//! parity cases (`unpersonal_runtime::parity`: every kernel on random inputs ≤ 1e-4, the
//! shipped models ≤ 1e-3; `tests/web/parity.test.mjs` runs the same cases in a browser), an
//! operator without a kernel, and whole sampling runs (≤ 1e-2).

use std::path::Path;

use unpersonal_runtime::backend::webgpu::{WebGpu, WebGpuError};
use unpersonal_runtime::backend::{Backend, Tract};
use unpersonal_runtime::bundle::{BundleDir, Dim, ModelSpec, TensorSpec};
use unpersonal_runtime::generate::{Generator, SampleId, Settings};
use unpersonal_runtime::parity::{self, onnx::Graph};
use unpersonal_runtime::sampler::Solver;

fn gpu() -> WebGpu {
    let gpu = WebGpu::new().expect("a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    println!("adapter: {}", gpu.adapter());
    gpu
}

/// Every case within its bound, each difference printed.
fn check(gpu: &WebGpu, cases: Vec<parity::Case>) {
    assert!(!cases.is_empty());
    for case in &cases {
        for difference in pollster::block_on(parity::compare(gpu, case)).unwrap() {
            println!("{difference}");
            assert!(difference.holds(), "{difference}");
        }
    }
}

#[test]
fn every_kernel_matches_tract() {
    check(&gpu(), parity::kernels());
}

#[test]
fn an_operator_without_a_kernel_is_refused_at_load_naming_it() {
    let gpu = gpu();
    let mut graph = Graph::default();
    graph.node("Erf", &["x"], "y");
    let onnx = graph.encode(&[("x", vec![Some(3)])], &[("y", vec![Some(3)])]);
    let spec = ModelSpec {
        file: "erf.onnx".into(),
        sha256: String::new(),
        inputs: vec![TensorSpec { name: "x".into(), shape: vec![Dim::Fixed(3)] }],
        outputs: Vec::new(),
        provenance: serde_json::Value::Null,
    };
    let error = gpu.load(&onnx, &spec).err().expect("Erf has no kernel");
    // Boxed as the backend's `EngineError`, it is still the WebGPU backend's typed error.
    assert!(
        matches!(error.downcast_ref(), Some(WebGpuError::Unsupported { op, .. }) if op == "Erf"),
        "{error:?}"
    );
    let error = error.to_string();
    assert!(error.contains("Erf") && error.contains("no kernel"), "{error}");
}

fn shipped() -> BundleDir {
    BundleDir::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist")).unwrap()
}

#[test]
fn the_shipped_models_match_tract() {
    let cases = parity::models(&shipped());
    let files: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(files, ["denoiser.onnx", "classifier.onnx", "reid_embed.onnx", "reid_head.onnx"]);
    check(&gpu(), cases);
}

#[test]
fn sampling_loops_on_the_gpu_match_tract() {
    let gpu = gpu();
    let bundle = shipped();
    let reference = unpersonal_runtime::data::load_filelist(
        &bundle.dir.join("reference/filelist.txt"),
        &Default::default(),
    )
    .unwrap();
    // Heun's 35 evaluations on one image in model space; DPM-Solver++(2M) on a batch of three
    // in 8-bit pixels, with its progress.
    for (solver, steps, candidates) in [(Solver::Heun, 18, 1), (Solver::DpmPp2M, 10, 3)] {
        let mut settings = Settings::from_bundle(&bundle.bundle.sampler, 3);
        (settings.solver, settings.steps, settings.candidates, settings.rounds) =
            (solver, steps, candidates, 1);
        if solver == Solver::DpmPp2M {
            // Guided only in the middle: the loop on the GPU switches w per step like the host.
            settings.guidance_interval = Some([0.3, 5.0]);
        }
        let ids: Vec<SampleId> =
            (0..candidates).map(|candidate| SampleId { reference: 0, candidate }).collect();
        let mut images = Vec::new();
        for backend in [&Tract::default() as &dyn Backend, &gpu] {
            let mut generator = Generator::load(&bundle, backend, settings.clone()).unwrap();
            assert_eq!(generator.samples_on_device(), backend.name() == "webgpu");
            let conditions = generator.conditions(reference.batch(&[0]).view()).unwrap();
            let rows = conditions.select(ndarray::Axis(0), &vec![0; candidates]);
            if solver == Solver::Heun {
                images.push(
                    generator.generate_model_space(&ids, rows.view()).unwrap().mapv(f64::from),
                );
            } else {
                let mut seen = Vec::new();
                images.push(
                    generator
                        .generate_watched(&ids, rows.view(), &mut |done, total| {
                            seen.push((done, total))
                        })
                        .unwrap()
                        .mapv(f64::from),
                );
                assert_eq!(
                    seen,
                    (1..=steps).map(|d| (d, steps)).collect::<Vec<_>>(),
                    "progress after every step"
                );
            }
        }
        let diff = images[0].iter().zip(&images[1]).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        if solver == Solver::Heun {
            println!(
                "Heun, 18 steps, loop on the GPU: max |webgpu − tract| = {diff:e} (model space)"
            );
            assert!(diff <= 1e-2, "the sampled images differ by {diff}");
        } else {
            println!(
                "DPM-Solver++(2M), 10 steps, 3 images, guided at 0.3 < σ ≤ 5, loop on the GPU: max |webgpu − tract| = {diff} in 8-bit pixels"
            );
            assert!(diff <= 1.0, "pixels differ by {diff}");
        }
    }
}
