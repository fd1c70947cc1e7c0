//! The `unpersonal` binary.

use std::process::Command;

use crate::common::{Body, write_bundle};

pub fn unpersonal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_unpersonal")).args(args).output().unwrap()
}

#[test]
fn info_describes_a_verified_bundle() {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), Body::Scale(0.5));
    let bundle = dir.path().to_str().unwrap();
    let out = unpersonal(&["info", "--bundle", bundle]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "denoiser: denoiser.onnx",
        "features: features.onnx",
        "verified",
        "condition_mask",
        "[batch, 1, 4, 4]",
        "heun 12 steps",
        "\"trainer\": \"tests\"",
    ] {
        assert!(text.contains(needle), "info output lacks {needle:?}:\n{text}");
    }

    let out = unpersonal(&["info", "--bundle", bundle, "--json"]);
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["models"]["denoiser"]["verified"], true);
    assert_eq!(value["sampler"]["steps"], 12);
    assert_eq!(value["sampler"]["guidance"], 1.3f32 as f64);

    let out = unpersonal(&["info", "--bundle", bundle, "--quiet"]);
    assert!(out.status.success() && out.stdout.is_empty());
}

#[test]
fn info_on_a_tampered_bundle_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), Body::Scale(0.5));
    std::fs::write(dir.path().join("features.onnx"), b"not the model").unwrap();
    let out = unpersonal(&["info", "--bundle", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("features.onnx") && err.contains("sha256"), "{err}");

    let out = unpersonal(&["info", "--bundle", dir.path().join("nowhere").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere/bundle.json"));
}

#[test]
fn every_flag_has_help() {
    let out = unpersonal(&["info", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["--bundle <DIR>", "bundle directory", "--json", "--quiet", "models/fashion-mnist"]
    {
        assert!(text.contains(needle), "help lacks {needle:?}:\n{text}");
    }
}

#[test]
fn bench_measures_every_part_on_the_shipped_bundle() {
    let bundle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist");
    let out = unpersonal(&[
        "bench",
        "--bundle",
        bundle.to_str().unwrap(),
        "--json",
        "--batches",
        "1,2",
        "--seconds",
        "0",
        "--images",
        "1",
        "--references",
        "10,20",
        "--checks",
        "3",
        "--gemm",
        "16",
        "--jobs",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["backend"], "tract");
    // The shipped denoiser costs hundreds of MFLOP per guided evaluation, counted from its graph.
    let flops = report["denoiser"]["flops_per_evaluation"].as_f64().unwrap();
    assert!(flops > 1e8, "{flops} FLOPs per evaluation");
    let calls = report["denoiser"]["calls"].as_array().unwrap();
    assert_eq!(calls.iter().map(|c| c["images"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2]);
    assert!(calls.iter().all(|c| c["evaluations_per_s"].as_f64().unwrap() > 0.0));
    assert!(
        report["gemm"]["gflops"].as_f64().unwrap() > 0.0
            && report["share_of_peak"].as_f64().unwrap() > 0.0
    );
    let generation = &report["generation"];
    assert_eq!(generation["reference_images"], 1);
    assert_eq!(generation["candidates"], report_candidates(&bundle));
    assert!(generation["images_per_s"].as_f64().unwrap() > 0.0);
    let checks = report["gate"]["checks"].as_array().unwrap();
    assert_eq!(
        checks.iter().map(|c| c["references"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![10, 20]
    );

    let out = unpersonal(&["bench", "--bundle", bundle.to_str().unwrap(), "--batches", "0"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--batches"));
}

/// The shipped bundle's candidates per reference image.
fn report_candidates(bundle: &std::path::Path) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    json["sampler"]["candidates_per_image"].clone()
}

#[test]
fn the_default_bundle_is_found_beside_the_executable_from_any_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_unpersonal"))
        .arg("info")
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("models/fashion-mnist"), "{text}");
    let missing = Command::new(env!("CARGO_BIN_EXE_unpersonal"))
        .args(["info", "--bundle", "models/nothing-here"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("models/nothing-here"));
}
