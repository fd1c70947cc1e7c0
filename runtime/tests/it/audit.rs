//! `unpersonal audit` end to end on a tiny subset of the shipped Fashion-MNIST protocol: a
//! gated release from 10 sources, both utility classifiers trained by `unpersonal-train`, every
//! statistic, and the self-contained HTML; then a "release" of copied training images, which
//! every privacy measurement must flag.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use unpersonal_runtime::data::{Dataset, Split};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `unpersonal` from the workspace root (where the trainer finds ONNX Runtime's ./.venv).
fn unpersonal(args: &[&str]) -> std::process::Output {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_unpersonal"));
    assert!(
        binary.with_file_name("unpersonal-train").is_file(),
        "the audit runs unpersonal-train, which is not built beside {}: run the tests with `cargo test --workspace`",
        binary.display()
    );
    Command::new(binary).args(args).current_dir(workspace()).output().unwrap()
}

/// Writes rows `range` of the Fashion-MNIST test split as a PNG filelist in `dir`.
fn test_images(dir: &Path, range: std::ops::Range<usize>) -> String {
    let data = Dataset::load(Path::new("/usr/share/datasets/fashion-mnist"), Split::Test)
        .expect("the Fashion-MNIST test split (scripts/setup.sh installs it)");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut list = String::new();
    for i in range {
        let name = format!("images/{i}.png");
        image::GrayImage::from_raw(28, 28, data.image(i).to_vec())
            .unwrap()
            .save(dir.join(&name))
            .unwrap();
        let labels: String =
            data.label(i).iter().map(|&l| if l >= 0.5 { " 1" } else { " 0" }).collect();
        list.push_str(&format!("{name}{labels}\n"));
    }
    std::fs::write(dir.join("filelist.txt"), list).unwrap();
    dir.join("filelist.txt").to_str().unwrap().to_string()
}

fn audit(release: &Path, holdout: &str, test: &str, out: &Path, extra: &[&str]) -> (Value, String) {
    let reference = workspace().join("models/fashion-mnist/reference/filelist.txt");
    let mut args = vec![
        "audit",
        "--release",
        release.to_str().unwrap(),
        "--train",
        reference.to_str().unwrap(),
        "--holdout",
        holdout,
        "--test",
        test,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--resamples",
        "200",
        "--trainer-threads",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    let result = unpersonal(&args);
    assert!(result.status.success(), "audit failed: {}", String::from_utf8_lossy(&result.stderr));
    let json: Value = serde_json::from_slice(&result.stdout).unwrap();
    let written: Value =
        serde_json::from_slice(&std::fs::read(out.join("audit.json")).unwrap()).unwrap();
    assert_eq!(json, written, "--json prints what audit.json holds");
    (written, std::fs::read_to_string(out.join("audit.html")).unwrap())
}

/// A gated release of the shipped bundle for its first `sources` references, in `dir/release`.
fn generate(dir: &Path, sources: &str, steps: &str, candidates: &str) -> PathBuf {
    let release = dir.join("release");
    let generated = unpersonal(&[
        "generate",
        "--out",
        release.to_str().unwrap(),
        "--sources",
        sources,
        "--steps",
        steps,
        "--candidates",
        candidates,
        "--quiet",
    ]);
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    release
}

fn share(v: &Value) -> f64 {
    v["share"].as_f64().unwrap()
}

#[test]
fn audit_measures_a_gated_release_against_its_sources_and_the_holdout() {
    let tmp = tempfile::tempdir().unwrap();
    let holdout = test_images(&tmp.path().join("holdout"), 0..40);
    let test = test_images(&tmp.path().join("test"), 40..100);
    let release = generate(tmp.path(), "10", "6", "2");
    let released = std::fs::read_to_string(release.join("filelist.txt")).unwrap().lines().count();
    assert!(released > 0);

    let (a, html) = audit(&release, &holdout, &test, &tmp.path().join("audit"), &[]);
    // Utility: one classifier on the release, one on the 10 sources the audit log names.
    assert_eq!(a["utility"]["synthetic"]["training_images"], released);
    assert_eq!(a["utility"]["real"]["training_images"], 10);
    assert_eq!(a["utility"]["test_images"], 60);
    assert_eq!(a["utility"]["metric"], "accuracy");
    // --epochs 1 over 10 images is a handful of steps: the report says it cannot judge.
    let warning = a["utility"]["recipe_warning"].as_str().unwrap_or_default();
    assert!(warning.contains("raise --epochs"), "{}", a["utility"]);
    assert!(html.contains("recipe too short to judge"), "the page hides a too-short recipe");
    let gap = &a["utility"]["gap_points"];
    assert!(
        gap["lower"].as_f64().unwrap() <= gap["estimate"].as_f64().unwrap()
            && gap["estimate"].as_f64().unwrap() <= gap["upper"].as_f64().unwrap(),
        "{gap}"
    );
    // Every risk is measured on the release and on the holdout alike.
    for key in ["reidentification", "memorisation"] {
        assert_eq!(a[key]["release"]["of"], released, "{key}");
        assert_eq!(a[key]["holdout"]["of"], 40, "{key}");
    }
    assert!(
        a["dcr"]["pixels"]["released_p5"].as_f64().unwrap() > 0.0,
        "a gated release holds no copy"
    );
    assert_eq!(a["singling_out"]["records_each"], 40);
    assert_eq!(a["singling_out"]["modes"].as_array().unwrap().len(), 2);
    assert!(a["fidelity"]["frechet_release_vs_test"]["distance"].as_f64().unwrap() > 0.0);
    // The page stands alone: inline SVG and data-URL images, nothing fetched.
    assert!(html.contains("<svg") && html.contains("data:image/png;base64,"));
    for external in ["<script", "<link", "src=\"http", "@import", "url(http"] {
        assert!(!html.contains(external), "audit.html references something outside it: {external}");
    }
}

#[test]
fn audit_flags_a_release_of_copied_training_images() {
    let tmp = tempfile::tempdir().unwrap();
    let holdout = test_images(&tmp.path().join("holdout"), 0..30);
    let test = test_images(&tmp.path().join("test"), 30..60);
    // The "release": the first 20 shipped reference images, as they are.
    let release = tmp.path().join("release");
    std::fs::create_dir_all(release.join("images")).unwrap();
    let reference = workspace().join("models/fashion-mnist/reference");
    let lines: Vec<String> = std::fs::read_to_string(reference.join("filelist.txt"))
        .unwrap()
        .lines()
        .take(20)
        .map(String::from)
        .collect();
    for line in &lines {
        let file = line.split_whitespace().next().unwrap();
        std::fs::create_dir_all(release.join(file).parent().unwrap()).unwrap();
        std::fs::copy(reference.join(file), release.join(file)).unwrap();
    }
    std::fs::write(release.join("filelist.txt"), lines.join("\n") + "\n").unwrap();
    std::fs::write(release.join("report.json"), r#"{"privacy_gate": {"applied": false}}"#).unwrap();

    let real = release.join("filelist.txt");
    let (a, html) = audit(
        &release,
        &holdout,
        &test,
        &tmp.path().join("audit"),
        &["--real", real.to_str().unwrap()],
    );
    assert_eq!(share(&a["memorisation"]["release"]), 1.0, "{}", a["memorisation"]);
    assert_eq!(share(&a["reidentification"]["release"]), 1.0, "{}", a["reidentification"]);
    assert!(share(&a["reidentification"]["holdout"]) < 0.5, "{}", a["reidentification"]);
    assert_eq!(a["dcr"]["pixels"]["released_p5"], 0.0);
    assert!(
        a["dcr"]["pixels"]["test"]["p_value"].as_f64().unwrap() < 0.01,
        "{}",
        a["dcr"]["pixels"]
    );
    assert!(
        html.contains("ABOVE the holdout baseline") && html.contains("CLOSER to training images"),
        "the page must say so"
    );
}

#[test]
fn a_holdout_inside_the_training_set_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let release = generate(tmp.path(), "2", "2", "1");
    let reference = workspace().join("models/fashion-mnist/reference/filelist.txt");
    let reference = reference.to_str().unwrap();
    let result = unpersonal(&[
        "audit",
        "--release",
        release.to_str().unwrap(),
        "--train",
        reference,
        "--holdout",
        reference,
        "--test",
        reference,
        "--out",
        tmp.path().join("audit").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(
        err.contains("100 of the 100 --holdout images")
            && err.contains("disjoint from the training set"),
        "{err}"
    );
    assert!(!err.contains("NaN"), "{err}");
    assert!(!tmp.path().join("audit").exists(), "nothing is written for a refused audit");
}
