//! The shipped Fashion-MNIST bundle: tract and ONNX Runtime agree (the Python sampler written
//! from docs/bundle.md is checked by the conformance kit, `conformance.rs`), and its gate
//! rejects copies and near-copies of reference images while letting its own samples through;
//! its index of a reference set built a chunk at a time is the one-pass index, bit for bit.

use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis};
use unpersonal_runtime::backend::{Backend, Tract};
use unpersonal_runtime::bundle::BundleDir;
use unpersonal_runtime::data::{Dataset, FilelistOptions, Split, load_filelist};
use unpersonal_runtime::generate::{Generator, SampleId, Settings};
use unpersonal_runtime::release::{Gate, Indexing, release};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn shipped() -> BundleDir {
    BundleDir::load(&workspace().join("models/fashion-mnist")).expect("the shipped bundle verifies")
}

/// Few steps keep the test quick; the schedule code is the same for any count.
fn settings(bundle: &BundleDir) -> Settings {
    let mut s = Settings::from_bundle(&bundle.bundle.sampler, 42);
    (s.steps, s.candidates, s.rounds) = (5, 1, 1);
    s
}

fn generator(bundle: &BundleDir, backend: &dyn Backend) -> Generator {
    Generator::load(bundle, backend, settings(bundle)).unwrap()
}

/// Conditions of the first `n` shipped reference images and the sample ids 0..n.
fn probe(bundle: &BundleDir, generator: &mut Generator, n: usize) -> (Vec<SampleId>, Array2<f32>) {
    let reference =
        load_filelist(&bundle.dir.join("reference/filelist.txt"), &FilelistOptions::default())
            .unwrap();
    let all: Vec<usize> = (0..n).collect();
    let ids = (0..n).map(|reference| SampleId { reference, candidate: 0 }).collect();
    (ids, generator.conditions(reference.batch(&all).view()).unwrap())
}

#[cfg(feature = "ort")]
#[test]
fn tract_and_onnx_runtime_make_the_same_images() {
    use unpersonal_runtime::backend::ort::{Device, Ort};
    let bundle = shipped();
    let ort =
        Ort::new(None, Device::Cpu, 0).expect("ONNX Runtime must be available (scripts/setup.sh)");
    let mut on_tract = generator(&bundle, &Tract::default());
    let mut on_ort = generator(&bundle, &ort);
    let (ids, conditions) = probe(&bundle, &mut on_tract, 4);
    let (_, ort_conditions) = probe(&bundle, &mut on_ort, 4);
    let a = on_tract.generate_model_space(&ids, conditions.view()).unwrap();
    let b = on_ort.generate_model_space(&ids, conditions.view()).unwrap();
    let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let features =
        conditions.iter().zip(&ort_conditions).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    println!("tract vs ONNX Runtime: images max |diff| {worst:e}, features {features:e}");
    assert!(worst <= 1e-3, "tract and ONNX Runtime differ by {worst} on the denoised images");
    assert!(features <= 1e-4, "tract and ONNX Runtime differ by {features} on the features");
}

#[test]
fn the_shipped_gate_rejects_copies_and_near_copies_of_reference_images() {
    let bundle = shipped();
    let reference =
        load_filelist(&bundle.dir.join("reference/filelist.txt"), &FilelistOptions::default())
            .unwrap();
    let all: Vec<usize> = (0..reference.len()).collect();
    let pixels = reference.batch(&all);
    let mut gate = Gate::load(&bundle, &Tract::default()).expect("the shipped bundle has a gate");
    let index = gate.index(pixels.view()).unwrap();

    let (copies, _) = gate.judge(&index, pixels.view(), &all).unwrap();
    assert!(copies.iter().all(|v| !v.passed), "an exact copy of a reference image passed the gate");

    // Near-copies: shifted by one pixel, contrast −10 %, and a fixed ±8-level dither.
    let near = ndarray::Array4::from_shape_fn(pixels.dim(), |(n, c, y, x)| {
        let v = f32::from(pixels[[n, c, y, x.saturating_sub(1)]]) * 0.9;
        let dither = if (x * 7 + y * 3 + n) % 2 == 0 { 8.0 } else { -8.0 };
        (v + dither).clamp(0.0, 255.0) as u8
    });
    let (verdicts, _) = gate.judge(&index, near.view(), &all).unwrap();
    let caught = verdicts.iter().filter(|v| !v.passed).count();
    println!("near-copies rejected: {caught} of {}", verdicts.len());
    assert!(
        caught * 100 >= verdicts.len() * 95,
        "only {caught} of {} near-copies were rejected",
        verdicts.len()
    );

    // The gate still lets the bundle's own samples through for most reference images.
    let mut settings = settings(&bundle);
    (settings.candidates, settings.rounds) = (2, 2);
    let mut generator = Generator::load(&bundle, &Tract::default(), settings).unwrap();
    let first: Vec<usize> = (0..4).collect();
    let conditions = generator.conditions(reference.batch(&first).view()).unwrap();
    let released =
        release(&mut generator, &mut gate, &index, &first, conditions.view(), 1).unwrap();
    let count = released.iter().filter(|(o, _)| !o.released.is_empty()).count();
    assert!(
        count >= 3,
        "only {count} of 4 reference images released a sample: {:?}",
        released.iter().map(|(o, _)| &o.rejected).collect::<Vec<_>>()
    );
}

#[test]
fn an_index_built_chunk_by_chunk_is_the_one_pass_index() {
    let bundle = shipped();
    let mut data = Dataset::load(Path::new("/usr/share/datasets/fashion-mnist"), Split::Test)
        .expect("the Fashion-MNIST test split (scripts/setup.sh installs it)");
    data.truncate(600);
    let pixels = data.batch(&(0..data.len()).collect::<Vec<_>>());
    let mut gate = Gate::load(&bundle, &Tract::default()).unwrap();
    let whole = gate.index(pixels.view()).unwrap();
    for chunk in [1, 7, 255, 256, 300, 1000] {
        let mut indexing = Indexing::default();
        for part in pixels.axis_chunks_iter(Axis(0), chunk) {
            indexing.add(&mut gate, part).unwrap();
        }
        let built = indexing.finish(&mut gate).unwrap();
        assert_eq!(built.len(), 600, "chunks of {chunk}");
        for i in 0..600 {
            let (a, b) = (built.embedding(i), whole.embedding(i));
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "chunks of {chunk}: embedding {i} differs"
            );
        }
        let bits = |p: ndarray::ArrayView2<f32>| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(built.probabilities()),
            bits(whole.probabilities()),
            "chunks of {chunk}: class probabilities differ"
        );
    }
}

/// tract runs a graph with convolutions one row at a time, on one thread or shared out among
/// several: every row's result is the one it gets alone, in its place, bit for bit.
#[test]
fn tract_rows_are_the_same_on_any_number_of_threads() {
    use ndarray::Array4;
    use unpersonal_runtime::backend::Model;
    use unpersonal_runtime::bundle::Role;

    let bundle = shipped();
    let spec = bundle.bundle.model(Role::Classifier).unwrap();
    let onnx = bundle.onnx(Role::Classifier).unwrap();
    let rows = 7;
    let images = Array4::from_shape_fn((rows, 1, 28, 28), |(n, _, y, x)| {
        ((n * 13 + y * 3 + x * 7) % 17) as f32 / 8.0 - 1.0
    });
    let mut alone = Model::load(&Tract::default(), spec, onnx).unwrap();
    let input = spec.inputs[0].name.clone();
    let output = spec.outputs[0].name.clone();
    for threads in [1, 2, 3, 8] {
        let mut model = Model::load(&Tract::with_threads(threads), spec, onnx).unwrap();
        let all = model.run(&[(input.as_str(), images.view().into_dyn())]).unwrap();
        assert_eq!(all[&output].shape()[0], rows);
        for n in 0..rows {
            let one = images.slice_axis(Axis(0), (n..n + 1).into());
            let expected = alone.run(&[(input.as_str(), one.into_dyn())]).unwrap();
            assert_eq!(
                all[&output].index_axis(Axis(0), n),
                expected[&output].index_axis(Axis(0), 0),
                "{threads} threads, row {n}"
            );
        }
    }
}
