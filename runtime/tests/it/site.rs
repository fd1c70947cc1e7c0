//! A site's own data end to end: `unpersonal-train demo-site` writes a synthetic site built from
//! Fashion-MNIST (patients with 2–5 studies, five overlapping multi-hot findings, a findings
//! CSV), `unpersonal-train bundle` trains a whole bundle from it on a tiny time budget, and
//! `unpersonal generate` releases from the result. A second run of the same command continues
//! the finished one instead of training again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `binary` (`unpersonal` or `unpersonal-train`) from the workspace root, where both find
/// ONNX Runtime's ./.venv.
fn run(binary: &str, args: &[&str]) -> Output {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_unpersonal")).with_file_name(binary);
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    let out = Command::new(&path).args(args).current_dir(workspace()).output().unwrap();
    assert!(
        out.status.success(),
        "{binary} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_site_with_patients_and_findings_becomes_a_bundle_that_releases() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    let site_s = site.to_str().unwrap();
    run("unpersonal-train", &["demo-site", "--out", site_s, "--patients", "160", "--seed", "3"]);
    let csv = site.join("findings.csv");

    let out = tmp.path().join("my-site");
    let out_s = out.to_str().unwrap();
    let bundle_args = [
        "bundle",
        "--data",
        csv.to_str().unwrap(),
        "--out",
        out_s,
        "--time-budget",
        "30s",
        "--threads",
        "2",
        "--reference-sample",
        "8",
        "--quiet",
    ];
    let first = run("unpersonal-train", &bundle_args);

    // The bundle is multi-label, its models trained per finding, its gate calibrated on
    // people it never trained on.
    let bundle = json(&out.join("bundle/bundle.json"));
    assert_eq!(bundle["labels"]["multi_label"], true, "{}", bundle["labels"]);
    assert_eq!(bundle["labels"]["count"], 5);
    let arch = &bundle["models"]["classifier"]["provenance"]["architecture"]["config"];
    assert_eq!(arch["multi_label"], true, "a sigmoid per finding: {arch}");
    assert!(bundle["reid"]["calibration"]["patients"]["pairs"].as_u64().unwrap() > 0);

    // No patient and no training file is named in what may leave the site.
    let text = std::fs::read_to_string(out.join("bundle/bundle.json")).unwrap();
    let findings = std::fs::read_to_string(&csv).unwrap();
    for row in findings.lines().skip(1).take(50) {
        let mut fields = row.split(',');
        let (path, patient) = (fields.next().unwrap(), fields.next().unwrap());
        assert!(!text.contains(path) && !text.contains(patient), "bundle.json names {row}");
    }
    let names: Vec<String> = std::fs::read_dir(out.join("bundle"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".onnx") || n == "bundle.json"), "{names:?}");

    // Nobody is in two of the sets.
    let people = |set: &str| -> std::collections::HashSet<String> {
        std::fs::read_to_string(out.join("data").join(set).join("findings.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().to_owned())
            .collect()
    };
    let (train, calibration, held_out) =
        (people("train"), people("calibration"), people("held-out"));
    assert!(!train.is_empty() && !calibration.is_empty() && !held_out.is_empty());
    assert!(train.is_disjoint(&calibration) && train.is_disjoint(&held_out));
    assert!(calibration.is_disjoint(&held_out));

    let summary = json(&out.join("summary.json"));
    assert!(summary["verification"]["references"].as_u64().unwrap() > 0, "{summary}");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("stage 3/3: denoiser"), "{stderr}");

    // The same command again finds everything done: no stage runs twice.
    let again = run("unpersonal-train", &bundle_args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("continuing") && !stderr.contains("stage 1/3"), "{stderr}");

    // The runtime releases from the result.
    let release = tmp.path().join("release");
    run(
        "unpersonal",
        &[
            "generate",
            "--bundle",
            out.join("bundle").to_str().unwrap(),
            "--reference",
            out.join("data/train/findings.csv").to_str().unwrap(),
            "--sources",
            "4",
            "--out",
            release.to_str().unwrap(),
        ],
    );
    let report = json(&release.join("report.json"));
    assert!(report.is_object(), "{report}");
}
