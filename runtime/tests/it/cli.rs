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
        "12 Heun steps",
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
    for needle in ["--bundle <DIR>", "bundle directory", "--json", "--quiet", "models/fashion-mnist"] {
        assert!(text.contains(needle), "help lacks {needle:?}:\n{text}");
    }
}
