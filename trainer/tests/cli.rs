//! `unpersonal-train` on bad input: a clear message naming what is wrong, and a failing exit code.

use std::path::Path;
use std::process::Command;

/// Runs the CLI and returns its stderr, asserting that it failed.
fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unpersonal-train"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the CLI runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn train_args<'a>(data: &'a str, out: &'a str, run: &'a str) -> Vec<&'a str> {
    vec!["classifier", "--data", data, "--out", out, "--run", run, "--steps", "1", "--quiet"]
}

#[test]
fn missing_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, run) = (tmp.path().join("out"), tmp.path().join("run"));
    let err = fails(
        &train_args("/nonexistent/fashion-mnist", out.to_str().unwrap(), run.to_str().unwrap()),
        &[],
    );
    assert!(
        err.contains("/nonexistent/fashion-mnist")
            && err.contains("apt-get install dataset-fashion-mnist"),
        "{err}"
    );
}

#[test]
fn corrupt_idx_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("idx");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2],
    )
    .unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3, 4, 5])
        .unwrap();
    let (out, run) = (tmp.path().join("out"), tmp.path().join("run"));
    let err = fails(
        &train_args(data.to_str().unwrap(), out.to_str().unwrap(), run.to_str().unwrap()),
        &[],
    );
    assert!(err.contains("train-images-idx3-ubyte") && err.contains("truncated"), "{err}");
}

#[test]
fn bad_filelist_line() {
    let tmp = tempfile::tempdir().unwrap();
    image::GrayImage::new(8, 8).save(tmp.path().join("a.png")).unwrap();
    let list = tmp.path().join("train.txt");
    std::fs::write(&list, "a.png 1 0 0\na.png 0 1\n").unwrap();
    let (out, run) = (tmp.path().join("out"), tmp.path().join("run"));
    let mut args = train_args(list.to_str().unwrap(), out.to_str().unwrap(), run.to_str().unwrap());
    args.extend(["--test-data", list.to_str().unwrap()]);
    let err = fails(&args, &[]);
    assert!(err.contains("train.txt: line 2: expected 3 labels"), "{err}");
}

#[test]
fn unwritable_output() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"a file, not a directory").unwrap();
    let out = blocker.join("bundle");
    let run = tmp.path().join("run");
    let err = fails(
        &train_args(
            "/usr/share/datasets/fashion-mnist",
            out.to_str().unwrap(),
            run.to_str().unwrap(),
        ),
        &[],
    );
    assert!(
        err.contains("cannot create output directory") && err.contains(out.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn missing_onnx_runtime_library() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, run) = (tmp.path().join("out"), tmp.path().join("run"));
    let err = fails(
        &train_args(
            "/usr/share/datasets/fashion-mnist",
            out.to_str().unwrap(),
            run.to_str().unwrap(),
        ),
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")],
    );
    assert!(
        err.contains("ONNX Runtime library /nonexistent/libonnxruntime.so.1.31.1 does not exist"),
        "{err}"
    );
    let not_a_library = tmp.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"garbage").unwrap();
    let err = fails(
        &train_args(
            "/usr/share/datasets/fashion-mnist",
            out.to_str().unwrap(),
            run.to_str().unwrap(),
        ),
        &[("ORT_DYLIB_PATH", not_a_library.to_str().unwrap())],
    );
    assert!(err.contains("cannot load ONNX Runtime from"), "{err}");
}

#[test]
fn corrupt_model_for_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("broken.onnx");
    std::fs::write(&model, b"\x08\x07not a protobuf").unwrap();
    for engine in ["ort", "tract"] {
        let err = fails(&["eval", "--model", model.to_str().unwrap(), "--with", engine], &[]);
        assert!(err.contains("broken.onnx"), "{engine}: {err}");
    }
    assert!(!Path::new(&model).with_extension("tmp").exists());
}

/// Asking for CUDA where it cannot run (the CPU build of ONNX Runtime that scripts/setup.sh
/// installs has no CUDA provider) is an error, never a silent fall-back to the CPU.
#[test]
fn cuda_that_cannot_run_fails_instead_of_falling_back() {
    let err = fails(&["bench", "--device", "cuda", "--steps", "1", "--batch", "2"], &[]);
    assert!(err.contains("CUDA"), "{err}");
}

/// Training killed at points of the run (SIGKILL, then SIGTERM, each soon after a checkpoint)
/// and resumed exports the model bytes of an uninterrupted run.
#[test]
fn training_killed_mid_way_resumes_to_the_same_model() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let train = |out: &str, run: &str, resume: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_unpersonal-train"));
        cmd.args([
            "classifier",
            "--data",
            "/usr/share/datasets/fashion-mnist",
            "--out",
            out,
            "--run",
            run,
            "--steps",
            "60",
            "--checkpoint-every",
            "5",
            "--quiet",
        ]);
        if resume {
            cmd.arg("--resume");
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    };
    let whole = train(&path("whole"), &path("whole-run"), false).output().unwrap();
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let checkpoint = tmp.path().join("killed-run/checkpoint.safetensors");
    let modified = || std::fs::metadata(&checkpoint).and_then(|m| m.modified()).ok();
    for (signal, resume) in [("KILL", false), ("TERM", true)] {
        let before = modified();
        let mut child = train(&path("killed"), &path("killed-run"), resume).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while modified() == before {
            assert!(Instant::now() < deadline, "no checkpoint was written");
            assert!(
                child.try_wait().unwrap().is_none(),
                "training ended before it could be interrupted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(70));
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success(), "SIG{signal} did not stop training");
        if signal == "TERM" {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("stopped by a signal after step") && stderr.contains("--resume"),
                "SIGTERM did not checkpoint the step it stopped at: {stderr}"
            );
        }
        assert!(
            !tmp.path().join("killed/classifier.onnx").exists(),
            "an interrupted run exported a model"
        );
    }
    let resumed = train(&path("killed"), &path("killed-run"), true).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let read = |dir: &str| std::fs::read(tmp.path().join(dir).join("classifier.onnx")).unwrap();
    assert!(read("whole") == read("killed"), "a resumed training run exported other weights");
}

/// `reid --export-only` calibrates and exports a checkpoint as it is (here one stopped early),
/// and refuses a checkpoint trained with other flags.
#[test]
fn reid_exports_a_stopped_run_with_export_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, run) = (tmp.path().join("out"), tmp.path().join("run"));
    let reid = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_unpersonal-train"));
        cmd.args(["reid", "--data", "/usr/share/datasets/fashion-mnist", "--out"])
            .arg(&out)
            .arg("--run")
            .arg(&run)
            .args(["--steps", "6", "--batch", "8", "--calibration-images", "64", "--quiet"])
            .args(extra);
        cmd.output().unwrap()
    };
    let stopped = reid(&["--stop-after", "2"]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    assert!(!out.join("reid_embed.onnx").exists(), "a stopped run exported");
    let exported = reid(&["--export-only"]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(bundle["models"]["reid_embed"]["provenance"]["steps"], 2);
    assert!(bundle["reid"]["threshold"].as_f64().is_some_and(|t| t > 0.0 && t < 1.0));
    let other = reid(&["--export-only", "--lr", "0.5"]);
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("other settings"));
}
