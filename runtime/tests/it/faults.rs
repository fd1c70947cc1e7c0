//! Fault injection on `unpersonal generate`: killed (SIGKILL, SIGTERM at several points), a
//! write that fails (a file-size limit standing in for a full disk), the release directory
//! removed under the run, a model file replaced on disk during the run. After each, nothing
//! half-written is visible in the release directory, and running again finishes with the
//! bytes of an uninterrupted run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Body;
use crate::generate::{Fixture, results};

/// Slow enough to interrupt: 40 references, 20 candidates each, one reference per batch.
const FLAGS: [&str; 8] = [
    "--unfiltered-research-only",
    "--candidates",
    "20",
    "--steps",
    "150",
    "--batch",
    "1",
    "--quiet",
];

/// `generate` on `f`'s bundle into `out`, started through `sh -c PRELUDE` (empty: directly).
fn spawn(f: &Fixture, out: &str, prelude: &str) -> Child {
    let (out, bundle) = (f.path(out), f.path("bundle"));
    Command::new("sh")
        .arg("-c")
        .arg(format!("{prelude} exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_unpersonal"))
        .args(["generate", "--bundle", &bundle, "--out", &out])
        .args(FLAGS)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Images that passed the gate so far: staged in the audit directory until the run finishes.
fn images(dir: &Path) -> usize {
    std::fs::read_dir(Path::new(&format!("{}-audit", dir.display())).join("staged"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until `child` has released `n` images into `dir`.
fn wait_for(child: &mut Child, dir: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while images(dir) < n {
        assert!(Instant::now() < deadline, "the run wrote no images");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The child's exit, with its standard error.
fn finish(child: Child) -> (std::process::ExitStatus, String) {
    let output = child.wait_with_output().unwrap();
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Every visible file of the release directory is whole: images decode, JSON parses.
fn assert_nothing_half_written(dir: &Path) {
    for entry in std::fs::read_dir(dir.join("images")).into_iter().flatten().filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            assert!(image::open(entry.path()).is_ok(), "{name} is not a whole PNG");
        }
    }
    for name in ["run.json", "report.json"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
                "{name} is not whole JSON"
            );
        }
    }
}

/// Runs `generate` to the end in `out` and checks it matches `whole`.
fn resume_matches(f: &Fixture, out: &str, whole: &std::collections::BTreeMap<String, Vec<u8>>) {
    f.generate(out, &FLAGS);
    assert_eq!(
        &results(&f.root.join(out)),
        whole,
        "a resumed run differs from an uninterrupted one"
    );
    let leftovers: Vec<_> = std::fs::read_dir(f.root.join(out).join("images"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files remain: {leftovers:?}");
}

#[test]
fn runs_killed_at_several_points_resume_to_the_same_bytes() {
    let f = Fixture::new(Body::Scale(0.5), 40);
    f.generate("whole", &FLAGS);
    let whole = results(&f.root.join("whole"));
    let dir = f.root.join("killed");
    // SIGKILL and SIGTERM, at points spread over the run (after 20, 150 and 420 of its 800 images).
    for (signal, after) in [("KILL", 20), ("TERM", 150), ("TERM", 420)] {
        let mut child = spawn(&f, "killed", "");
        wait_for(&mut child, &dir, after);
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let (status, _) = finish(child);
        assert!(!status.success(), "SIG{signal} after {after} images did not stop the run");
        assert!(!dir.join("report.json").exists(), "the run was interrupted before it finished");
        assert_nothing_half_written(&dir);
    }
    assert!(images(&dir) < whole.len() - 4, "the interruptions came too late to test resumption");
    resume_matches(&f, "killed", &whole);
}

#[test]
fn a_write_that_fails_names_the_file_and_leaves_nothing_half_written() {
    let f = Fixture::new(Body::Scale(0.5), 40);
    f.generate("whole", &FLAGS);
    let whole = results(&f.root.join("whole"));
    // A 4 KiB file-size limit (sh's `ulimit -f` counts 512-byte blocks) with SIGXFSZ ignored:
    // writes past it fail with EFBIG, as they would with ENOSPC on a full disk. Images and
    // records fit; the filelist of 800 images does not.
    let (status, stderr) = finish(spawn(&f, "full", "trap '' XFSZ; ulimit -f 8;"));
    assert!(!status.success(), "the run succeeded despite a failing write");
    let failed = stderr
        .split("cannot write ")
        .nth(1)
        .and_then(|rest| rest.split(": ").next())
        .unwrap_or_else(|| panic!("no file named: {stderr}"));
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(!Path::new(failed).exists(), "the failed write left {failed} behind");
    let dir = f.root.join("full");
    assert!(!dir.join("report.json").exists(), "a release with a failed write was finished");
    assert_nothing_half_written(&dir);
    let parent = Path::new(failed).parent().unwrap();
    let partial = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with(".partial-"));
    assert!(!partial, "the failed write left its temporary file in {}", parent.display());
    // The audit log is what failed (its directory is the one full): no image was released
    // without its record.
    assert!(failed.ends_with("full-audit/audit-log.jsonl"), "{failed}");
    assert_eq!(std::fs::read_dir(dir.join("images")).map_or(0, |d| d.count()), 0);
    resume_matches(&f, "full", &whole);
}

#[test]
fn a_release_directory_removed_mid_run_fails_and_the_next_run_finishes_it() {
    let f = Fixture::new(Body::Scale(0.5), 40);
    f.generate("whole", &FLAGS);
    let whole = results(&f.root.join("whole"));
    let dir = f.root.join("gone");
    let mut child = spawn(&f, "gone", "");
    wait_for(&mut child, &dir, 100);
    // Moved away in one step (the run keeps writing while a recursive removal walks), then removed.
    let away = f.root.join("removed");
    std::fs::rename(&dir, &away).unwrap();
    let (status, stderr) = finish(child);
    std::fs::remove_dir_all(&away).unwrap();
    assert!(!status.success(), "the run went on without its release directory");
    // Either a later write fails, or (when every image was written before the move, as on a
    // loaded machine) the final check finds records whose images are gone.
    // Images are staged in the audit directory until the end, when the run finds its release
    // directory gone (or, moved while it was finishing, a write fails).
    let failed_write = stderr.contains("cannot write");
    let found_gone = stderr.contains("holds no .unpersonal-release");
    assert!((failed_write || found_gone) && stderr.contains("gone"), "{stderr}");
    // The audit directory still records references whose images went with the directory.
    assert!(std::fs::read_dir(f.root.join("gone-audit/records")).unwrap().count() > 0);
    resume_matches(&f, "gone", &whole);
}

#[test]
fn a_model_replaced_on_disk_during_the_run_stops_the_release() {
    let f = Fixture::new(Body::Scale(0.5), 40);
    f.generate("whole", &FLAGS);
    let whole = results(&f.root.join("whole"));
    let dir = f.root.join("swapped");
    let model = f.root.join("bundle/denoiser.onnx");
    let original = std::fs::read(&model).unwrap();
    let mut child = spawn(&f, "swapped", "");
    wait_for(&mut child, &dir, 40);
    let mut changed = original.clone();
    changed.extend_from_slice(b"\0");
    std::fs::write(&model, &changed).unwrap();
    let (status, stderr) = finish(child);
    assert!(!status.success(), "the run released from a bundle that changed under it");
    assert!(
        stderr.contains("changed on disk")
            && stderr.contains("denoiser.onnx")
            && stderr.contains("sha256"),
        "{stderr}"
    );
    assert!(
        !dir.join("report.json").exists() && !dir.join("filelist.txt").exists(),
        "the release was finished"
    );
    assert_nothing_half_written(&dir);
    std::fs::write(&model, &original).unwrap();
    resume_matches(&f, "swapped", &whole);
}
