//! The WebGPU backend against tract: every kernel on random inputs (≤ 1e-4), the shipped models
//! (≤ 1e-3) and a whole sampling run (≤ 1e-2), on whatever adapter wgpu finds (lavapipe in CI).

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb;
use unpersonal_runtime::backend::webgpu::WebGpu;
use unpersonal_runtime::backend::{Backend, Model, Tract};
use unpersonal_runtime::bundle::{BundleDir, Dim, ModelSpec, Role, TensorSpec};
use unpersonal_runtime::generate::{Generator, SampleId, Settings};
use unpersonal_runtime::sampler::Solver;

use crate::common::Graph;

fn gpu() -> WebGpu {
    let gpu = WebGpu::new().expect("a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    println!("adapter: {}", gpu.adapter());
    gpu
}

fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-2.0f32..2.0))
}

fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: pb::attribute_proto::AttributeType::Ints as i32, ints: values.to_vec(), ..Default::default() }
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: pb::attribute_proto::AttributeType::Int as i32, i: value, ..Default::default() }
}

fn string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: pb::attribute_proto::AttributeType::String as i32, s: value.as_bytes().to_vec(), ..Default::default() }
}

/// Runs the graph with fixed-shape float inputs on tract and on WebGPU; the largest difference.
fn compare(gpu: &WebGpu, graph: Graph, inputs: &[(&str, &[usize])], what: &str) -> f32 {
    let dims = |s: &[usize]| s.iter().map(|&d| Some(d as i64)).collect::<Vec<_>>();
    let declared: Vec<(&str, Vec<Option<i64>>)> = inputs.iter().map(|(n, s)| (*n, dims(s))).collect();
    let onnx = graph.encode(&declared, &[("y", Vec::new())]);
    let spec = ModelSpec {
        file: format!("{what}.onnx"),
        sha256: String::new(),
        inputs: inputs.iter().map(|(n, s)| TensorSpec { name: n.to_string(), shape: s.iter().map(|&d| Dim::Fixed(d)).collect() }).collect(),
        outputs: Vec::new(),
        provenance: serde_json::Value::Null,
    };
    let values: Vec<ArrayD<f32>> = inputs.iter().enumerate().map(|(i, (_, s))| random(s, i as u64 + 1)).collect();
    let feed: Vec<(&str, ndarray::ArrayViewD<f32>)> = inputs.iter().zip(&values).map(|((n, _), v)| (*n, v.view())).collect();
    let expected = Tract.load(&onnx, &spec).unwrap().run(&feed).unwrap().remove("y").unwrap();
    let got = gpu.load(&onnx, &spec).unwrap_or_else(|e| panic!("{what}: {e}")).run(&feed).unwrap_or_else(|e| panic!("{what}: {e}")).remove("y").unwrap();
    assert_eq!(got.shape(), expected.shape(), "{what}: shapes differ");
    let diff = got.iter().zip(&expected).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("{what}: max |webgpu − tract| = {diff:e}");
    diff
}

/// One node `op(x[, extra constant inputs])` with attributes.
fn single(op: &str, inputs: &[&str], attributes: Vec<pb::AttributeProto>, build: impl FnOnce(&mut Graph)) -> Graph {
    let mut g = Graph::default();
    build(&mut g);
    g.node_with(op, inputs, "y", attributes);
    g
}

#[test]
fn every_kernel_matches_tract() {
    let gpu = gpu();
    let mut worst = 0f32;
    let mut check = |graph: Graph, inputs: &[(&str, &[usize])], what: &str| worst = worst.max(compare(&gpu, graph, inputs, what));
    for op in ["Add", "Sub", "Mul", "Div"] {
        check(single(op, &["a", "b"], vec![], |_| {}), &[("a", &[2, 3, 4, 5]), ("b", &[3, 1, 5])], &format!("{op} broadcast"));
    }
    check(single("Add", &["a", "w"], vec![], |g| g.f32("w", &[], &[0.5])), &[("a", &[3, 7])], "Add scalar constant");
    for op in ["Sqrt", "Log"] {
        // Positive inputs: |x| first.
        let mut g = Graph::default();
        g.node("Abs", &["x"], "ax");
        g.node(op, &["ax"], "y");
        check(g, &[("x", &[4, 33])], op);
    }
    for op in ["Cos", "Sin", "Neg", "Sigmoid", "Relu", "Abs"] {
        check(single(op, &["x"], vec![], |_| {}), &[("x", &[5, 67])], op);
    }
    check(single("MatMul", &["a", "b"], vec![], |_| {}), &[("a", &[2, 3, 37, 19]), ("b", &[3, 19, 23])], "MatMul batched broadcast");
    check(single("MatMul", &["a", "w"], vec![], |g| g.f32("w", &[40, 17], &random(&[40, 17], 9).into_raw_vec_and_offset().0)), &[("a", &[5, 40])], "MatMul weights");
    for (stride, pad, k) in [(1, 1, 3), (2, 1, 3), (1, 0, 1)] {
        let attrs = vec![ints("kernel_shape", &[k, k]), ints("strides", &[stride, stride]), ints("pads", &[pad; 4]), ints("dilations", &[1, 1]), int("group", 1)];
        check(
            single("Conv", &["x", "w", "b"], attrs, |g| {
                g.f32("w", &[8, 5, k, k], &random(&[8, 5, k as usize, k as usize], 10).into_raw_vec_and_offset().0);
                g.f32("b", &[8], &random(&[8], 11).into_raw_vec_and_offset().0);
            }),
            &[("x", &[2, 5, 13, 11])],
            &format!("Conv {k}×{k} stride {stride} pad {pad}"),
        );
    }
    check(single("ReduceMean", &["x"], vec![ints("axes", &[2]), int("keepdims", 1)], |_| {}), &[("x", &[2, 8, 300])], "ReduceMean last axis");
    check(single("ReduceMean", &["x"], vec![ints("axes", &[1, 3]), int("keepdims", 0)], |_| {}), &[("x", &[2, 4, 3, 5])], "ReduceMean two axes");
    check(single("ReduceSum", &["x", "axes"], vec![int("keepdims", 1)], |g| g.i64("axes", &[0])), &[("x", &[6, 10])], "ReduceSum");
    check(single("Softmax", &["x"], vec![int("axis", 2)], |_| {}), &[("x", &[2, 49, 49])], "Softmax");
    check(single("Transpose", &["x"], vec![ints("perm", &[0, 2, 1])], |_| {}), &[("x", &[2, 7, 9])], "Transpose");
    check(
        single("Slice", &["x", "s", "e", "a"], vec![], |g| {
            g.i64("s", &[1, 2]);
            g.i64("e", &[5, 100]);
            g.i64("a", &[1, 2]);
        }),
        &[("x", &[2, 8, 9])],
        "Slice",
    );
    check(single("Concat", &["a", "b"], vec![int("axis", 1)], |_| {}), &[("a", &[2, 3, 4]), ("b", &[2, 5, 4])], "Concat");
    check(single("Reshape", &["x", "s"], vec![], |g| g.i64("s", &[0, 4, -1])), &[("x", &[3, 8, 5])], "Reshape");
    check(
        single("Resize", &["x", "", "scales"], vec![string("mode", "nearest"), string("coordinate_transformation_mode", "asymmetric"), string("nearest_mode", "floor")], |g| {
            g.f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0])
        }),
        &[("x", &[2, 3, 7, 7])],
        "Resize nearest ×2",
    );
    assert!(worst <= 1e-4, "a kernel differs from tract by {worst}");
}

#[test]
fn an_operator_without_a_kernel_is_refused_at_load_naming_it() {
    let gpu = gpu();
    let onnx = single("Erf", &["x"], vec![], |_| {}).encode(&[("x", vec![Some(3)])], &[("y", vec![Some(3)])]);
    let spec = ModelSpec {
        file: "erf.onnx".into(),
        sha256: String::new(),
        inputs: vec![TensorSpec { name: "x".into(), shape: vec![Dim::Fixed(3)] }],
        outputs: Vec::new(),
        provenance: serde_json::Value::Null,
    };
    let error = gpu.load(&onnx, &spec).err().expect("Erf has no kernel").to_string();
    assert!(error.contains("Erf") && error.contains("no kernel"), "{error}");
}

fn shipped() -> BundleDir {
    BundleDir::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist")).unwrap()
}

#[test]
fn the_shipped_models_match_tract() {
    let gpu = gpu();
    let bundle = shipped();
    for role in [Role::Denoiser, Role::Features, Role::Classifier, Role::ReidEmbed, Role::ReidHead] {
        let spec = bundle.bundle.model(role).unwrap();
        let onnx = bundle.onnx(role).unwrap();
        let (mut on_tract, mut on_gpu) = (Model::load(&Tract, spec, onnx).unwrap(), Model::load(&gpu, spec, onnx).unwrap());
        let values: Vec<ArrayD<f32>> = spec.inputs.iter().enumerate().map(|(i, t)| random(&t.concrete(3), 20 + i as u64).mapv(|v| v.abs() / 2.0)).collect();
        let feed: Vec<(&str, ndarray::ArrayViewD<f32>)> = spec.inputs.iter().zip(&values).map(|(t, v)| (t.name.as_str(), v.view())).collect();
        let (a, b) = (on_tract.run(&feed).unwrap(), on_gpu.run(&feed).unwrap());
        for (name, x) in &a {
            let diff = x.iter().zip(&b[name]).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            println!("{} {name}: max |webgpu − tract| = {diff:e}", spec.file);
            assert!(diff <= 1e-3, "{} output {name} differs by {diff}", spec.file);
        }
    }
}

#[test]
fn sampling_loops_on_the_gpu_match_tract() {
    let gpu = gpu();
    let bundle = shipped();
    let reference = unpersonal_runtime::data::load_filelist(&bundle.dir.join("reference/filelist.txt"), &Default::default()).unwrap();
    // Heun's 35 evaluations on one image in model space; DPM-Solver++(2M) on a batch of three
    // in 8-bit pixels, with its progress.
    for (solver, steps, candidates) in [(Solver::Heun, 18, 1), (Solver::DpmPp2M, 10, 3)] {
        let mut settings = Settings::from_bundle(&bundle.bundle.sampler, 3);
        (settings.solver, settings.steps, settings.candidates, settings.rounds) = (solver, steps, candidates, 1);
        let ids: Vec<SampleId> = (0..candidates).map(|candidate| SampleId { reference: 0, candidate }).collect();
        let mut images = Vec::new();
        for backend in [&Tract as &dyn Backend, &gpu] {
            let mut generator = Generator::load(&bundle, backend, settings.clone()).unwrap();
            assert_eq!(generator.samples_on_device(), backend.name() == "webgpu");
            let conditions = generator.conditions(reference.batch(&[0]).view()).unwrap();
            let rows = conditions.select(ndarray::Axis(0), &vec![0; candidates]);
            if solver == Solver::Heun {
                images.push(generator.generate_model_space(&ids, rows.view()).unwrap().mapv(f64::from));
            } else {
                let mut seen = Vec::new();
                images.push(generator.generate_watched(&ids, rows.view(), &mut |done, total| seen.push((done, total))).unwrap().mapv(f64::from));
                assert_eq!(seen, (1..=steps).map(|d| (d, steps)).collect::<Vec<_>>(), "progress after every step");
            }
        }
        let diff = images[0].iter().zip(&images[1]).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        if solver == Solver::Heun {
            println!("Heun, 18 steps, loop on the GPU: max |webgpu − tract| = {diff:e} (model space)");
            assert!(diff <= 1e-2, "the sampled images differ by {diff}");
        } else {
            println!("DPM-Solver++(2M), 10 steps, 3 images, loop on the GPU: max |webgpu − tract| = {diff} in 8-bit pixels");
            assert!(diff <= 1.0, "pixels differ by {diff}");
        }
    }
}
