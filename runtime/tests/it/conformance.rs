//! The partners' conformance kit (`tests/conformance/`, docs/bundle.md "Conformance"): the
//! runtime on tract and on ONNX Runtime and the Python sampler written from the page each pass
//! it; the Python sampler on onnxruntime makes the runtime-on-ONNX-Runtime's pixels bit for bit;
//! the runtime's generator draws the kit's noise; the page's reference decoding is the
//! runtime's; and an unfiltered run draws the gated run's round-0 candidates.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::{Array4, ArrayD};
use ndarray_npy::ReadNpyExt;
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::data::{FilelistOptions, load_filelist};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn kit() -> PathBuf {
    workspace().join("tests/conformance")
}

fn python() -> PathBuf {
    let python = workspace().join(".venv/bin/python");
    assert!(python.is_file(), "{} is missing: run scripts/setup.sh", python.display());
    python
}

/// The kit's cases: name and the `sample` flags that select it.
fn cases() -> Vec<(String, Vec<String>)> {
    let kit: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kit().join("kit.json")).unwrap()).unwrap();
    kit["cases"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, case)| {
            let flags = case["flags"].as_array().unwrap();
            (name.clone(), flags.iter().map(|f| f.as_str().unwrap().to_string()).collect())
        })
        .collect()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `unpersonal sample` on the kit's references (with the kit's noise unless `generator`).
fn runtime_sample(backend: &str, flags: &[String], generator: bool, out: &Path) {
    sample_from(&workspace().join("models/fashion-mnist"), backend, flags, generator, out);
}

/// [`runtime_sample`] with the bundle in `bundle`.
fn sample_from(bundle: &Path, backend: &str, flags: &[String], generator: bool, out: &Path) {
    let (reference, noise) = (kit().join("reference"), kit().join("noise.npy"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_unpersonal"));
    command.arg("sample").arg("--bundle").arg(bundle).arg("--reference").arg(&reference);
    command.args(["--sources", "6", "--backend", backend]).args(flags).arg("--out").arg(out);
    if !generator {
        command.arg("--noise").arg(&noise);
    }
    let result = command.output().unwrap();
    assert!(result.status.success(), "unpersonal sample --backend {backend}: {}", text(&result));
}

/// `sampler.py sample` on the kit's references from `bundle` with `flags` (its noise drawn
/// by noise.py, seed 0) into `out`; what it printed.
#[cfg(feature = "ort")]
fn python_sample(bundle: &Path, flags: &[String], out: &Path) -> String {
    let result = Command::new(python())
        .arg(kit().join("sampler.py"))
        .arg("sample")
        .arg(bundle)
        .arg("--reference")
        .arg(kit().join("reference"))
        .args(["--sources", "6"])
        .args(flags)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(result.status.success(), "sampler.py: {}", text(&result));
    text(&result)
}

/// `check.py EXPECTED ACTUAL [--exact]`: whether it passed, and what it printed.
fn check(expected: &Path, actual: &Path, exact: bool) -> (bool, String) {
    let mut command = Command::new(python());
    command.arg(kit().join("check.py")).arg(expected).arg(actual);
    if exact {
        command.arg("--exact");
    }
    let out = command.output().unwrap();
    (out.status.success(), text(&out))
}

fn npy(path: &Path) -> ArrayD<f32> {
    ArrayD::<f32>::read_npy(std::fs::File::open(path).unwrap()).unwrap()
}

#[test]
fn the_runtime_on_tract_passes_the_kit_and_draws_its_noise() {
    let kit_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kit().join("kit.json")).unwrap()).unwrap();
    let shipped = BundleDir::load(&workspace().join("models/fashion-mnist")).unwrap();
    for (role, sha) in kit_json["bundle"]["models"].as_object().unwrap() {
        let role = Role::ALL.into_iter().find(|r| r.as_str() == role).unwrap();
        assert_eq!(
            shipped.bundle.models[&role].sha256,
            sha.as_str().unwrap(),
            "the shipped {role:?} changed since the kit was made: run tests/conformance/make.sh and update kit.json"
        );
    }
    for (name, flags) in cases() {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("tract");
        // The first case draws its own noise: the generator's must be the kit's, bit for bit.
        let generator = name == "dpmpp-2m";
        runtime_sample("tract", &flags, generator, &dir);
        if generator {
            let (drawn, kit_noise) = (npy(&dir.join("noise.npy")), npy(&kit().join("noise.npy")));
            assert!(
                drawn.iter().zip(&kit_noise).all(|(a, b)| a.to_bits() == b.to_bits())
                    && drawn.shape() == kit_noise.shape(),
                "the runtime's generator no longer draws the kit's noise"
            );
        }
        let (passed, report) = check(&kit().join("expected").join(&name), &dir, false);
        println!("{name}, tract: {report}");
        assert!(passed, "the runtime on tract fails the kit's {name} case: {report}");
    }
}

#[cfg(feature = "ort")]
#[test]
fn the_runtime_on_onnx_runtime_and_the_python_sampler_pass_the_kit_and_agree_bit_for_bit() {
    for (name, flags) in cases() {
        let out = tempfile::tempdir().unwrap();
        let (ort, python_out) = (out.path().join("ort"), out.path().join("python"));
        runtime_sample("ort", &flags, false, &ort);
        // The Python sampler draws its noise with noise.py (seed 0), from the page alone.
        python_sample(&workspace().join("models/fashion-mnist"), &flags, &python_out);
        let expected = kit().join("expected").join(&name);
        for (who, dir) in [("the runtime on ONNX Runtime", &ort), ("sampler.py", &python_out)] {
            let (passed, report) = check(&expected, dir, false);
            println!("{name}, {who}: {report}");
            assert!(passed, "{who} fails the kit's {name} case: {report}");
        }
        let (identical, report) = check(&ort, &python_out, true);
        println!("{name}, sampler.py vs the runtime on ONNX Runtime: {report}");
        assert!(identical, "sampler.py and the runtime on ONNX Runtime differ in pixels: {report}");
    }
}

#[cfg(feature = "ort")]
/// The shipped bundle in `dir` with a student: the denoiser's own file listed again as
/// `student`, in 3 distilled steps (the arithmetic is what is checked, not a distillation).
fn bundle_with_student(dir: &Path) {
    let shipped = workspace().join("models/fashion-mnist");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("bundle.json")).unwrap()).unwrap();
    bundle["models"]["student"] = bundle["models"]["denoiser"].clone();
    bundle["sampler"]["distilled"] = serde_json::json!({ "steps": 3 });
    std::fs::write(dir.join("bundle.json"), serde_json::to_vec_pretty(&bundle).unwrap()).unwrap();
}

#[cfg(feature = "ort")]
#[test]
fn the_python_sampler_draws_the_distilled_students_pixels_bit_for_bit() {
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    bundle_with_student(&bundle);
    let (ort, python_out) = (out.path().join("ort"), out.path().join("python"));
    let flags = ["--solver", "distilled", "--candidates", "2"].map(String::from);
    sample_from(&bundle, "ort", &flags, true, &ort);
    let printed = python_sample(&bundle, &flags, &python_out);
    assert!(printed.contains("distilled, 3 steps"), "{printed}");
    let (identical, report) = check(&ort, &python_out, true);
    assert!(identical, "sampler.py and the runtime differ on the distilled solver: {report}");
    let manifest = std::fs::read_to_string(ort.join("samples.json")).unwrap();
    assert!(manifest.contains("\"student\"") && !manifest.contains("\"guide\""), "{manifest}");
}

#[test]
fn the_reference_decoding_the_page_states_is_the_runtimes() {
    let out = tempfile::tempdir().unwrap();
    let decoded = out.path().join("decoded.npy");
    let result = Command::new(python())
        .arg(kit().join("sampler.py"))
        .args(["decode"])
        .arg(kit().join("reference/filelist.txt"))
        .args(["1", "28", "28"])
        .arg(&decoded)
        .output()
        .unwrap();
    assert!(result.status.success(), "sampler.py decode: {}", text(&result));
    let page = Array4::<u8>::read_npy(std::fs::File::open(&decoded).unwrap()).unwrap();
    let runtime =
        load_filelist(&kit().join("reference/filelist.txt"), &FilelistOptions::default()).unwrap();
    let all: Vec<usize> = (0..runtime.len()).collect();
    let runtime = runtime.batch(&all);
    assert_eq!(page.dim(), runtime.dim());
    for (k, (a, b)) in page.outer_iter().zip(runtime.outer_iter()).enumerate() {
        let off = a.iter().zip(b.iter()).filter(|(x, y)| x != y).count();
        assert_eq!(off, 0, "reference {k}: {off} pixels decode differently by the page's rules");
    }
}

/// The images of a finished release, as a set of file contents.
fn released(dir: &Path) -> BTreeSet<Vec<u8>> {
    std::fs::read_dir(dir.join("images"))
        .unwrap()
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn an_unfiltered_run_draws_the_gated_runs_first_round_candidates() {
    let out = tempfile::tempdir().unwrap();
    let bundle = workspace().join("models/fashion-mnist");
    let (unfiltered, sampled) = (out.path().join("unfiltered"), out.path().join("sampled"));
    // Reference 1 (not 0): its noise numbers r·K·R + j differ from the r·K + j of a
    // one-round numbering.
    let result = Command::new(env!("CARGO_BIN_EXE_unpersonal"))
        .arg("generate")
        .arg("--bundle")
        .arg(&bundle)
        .args(["--sources", "2", "--unfiltered-research-only", "--quiet", "--out"])
        .arg(&unfiltered)
        .output()
        .unwrap();
    assert!(result.status.success(), "generate: {}", text(&result));
    let result = Command::new(env!("CARGO_BIN_EXE_unpersonal"))
        .arg("sample")
        .arg("--bundle")
        .arg(&bundle)
        .args(["--sources", "2", "--quiet", "--out"])
        .arg(&sampled)
        .output()
        .unwrap();
    assert!(result.status.success(), "sample: {}", text(&result));
    let sampled: BTreeSet<Vec<u8>> = (0..8)
        .map(|row| std::fs::read(sampled.join(format!("images/{row:06}.png"))).unwrap())
        .collect();
    assert_eq!(sampled.len(), 8, "eight different candidates");
    assert_eq!(released(&unfiltered), sampled, "an unfiltered run drew other candidates");
}

#[test]
fn the_python_noise_generator_passes_its_test_vectors() {
    let out = Command::new(python()).arg(kit().join("test_noise.py")).output().unwrap();
    assert!(out.status.success(), "tests/conformance/test_noise.py: {}", text(&out));
}

#[test]
fn sample_refuses_bad_noise_and_foreign_directories_naming_the_problem() {
    use ndarray_npy::WriteNpyExt;
    let dir = tempfile::tempdir().unwrap();
    let bundle = workspace().join("models/fashion-mnist");
    let sample = |noise: &Path, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_unpersonal"))
            .arg("sample")
            .arg("--bundle")
            .arg(&bundle)
            .args(["--sources", "1", "--noise"])
            .arg(noise)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = dir.path().join("out");
    let wrong = dir.path().join("wrong.npy");
    Array4::<f32>::zeros((3, 1, 28, 28)).write_npy(std::fs::File::create(&wrong).unwrap()).unwrap();
    let mut with_nan = Array4::<f32>::zeros((4, 1, 28, 28));
    with_nan[[2, 0, 5, 6]] = f32::NAN;
    let nan = dir.path().join("nan.npy");
    with_nan.write_npy(std::fs::File::create(&nan).unwrap()).unwrap();
    for (noise, expected) in [(&wrong, "[4, 1, 28, 28]"), (&nan, "NaN at (2, 0, 5, 6)")] {
        let result = sample(noise, &out);
        let message = text(&result);
        assert!(!result.status.success(), "{message}");
        assert!(
            message.contains(noise.to_str().unwrap()) && message.contains(expected),
            "{message}"
        );
        assert!(!out.exists(), "a refused run wrote {}", out.display());
    }
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let good = dir.path().join("good.npy");
    Array4::<f32>::zeros((4, 1, 28, 28)).write_npy(std::fs::File::create(&good).unwrap()).unwrap();
    let result = sample(&good, &foreign);
    assert!(!result.status.success() && text(&result).contains("not empty"), "{}", text(&result));
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1, "a foreign directory was written");
}
