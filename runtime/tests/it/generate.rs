//! `unpersonal generate` and `unpersonal merge` on tiny test bundles: reproducibility across
//! runs, batch sizes and shards, resumption after `kill -9`, and failing closed on bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::unpersonal;
use crate::common::{Body, C, H, W, write_bundle};

/// A bundle (denoiser `0.5·x`) and a reference filelist of `n` distinct 4×4 PNGs.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new(body: Body, n: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("bundle/reference/images")).unwrap();
        write_bundle(&root.join("bundle"), body);
        let mut list = String::new();
        for i in 0..n {
            let pixels: Vec<u8> = (0..C * H * W).map(|p| ((i * 37 + p * 11) % 256) as u8).collect();
            let name = format!("images/{i}.png");
            image::GrayImage::from_raw(W as u32, H as u32, pixels).unwrap().save(root.join("bundle/reference").join(&name)).unwrap();
            let labels: String = (0..10).map(|k| if k == i % 10 { " 1" } else { " 0" }).collect();
            list.push_str(&format!("{name}{labels}\n"));
        }
        std::fs::write(root.join("bundle/reference/filelist.txt"), list).unwrap();
        Fixture { _tmp: tmp, root }
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_string()
    }

    /// Runs `generate` on the fixture's bundle into `out` with extra flags; panics on failure.
    fn generate(&self, out: &str, extra: &[&str]) -> String {
        let out = self.path(out);
        let bundle = self.path("bundle");
        let mut args = vec!["generate", "--bundle", &bundle, "--out", &out];
        args.extend_from_slice(extra);
        let result = unpersonal(&args);
        assert!(result.status.success(), "generate {extra:?} failed: {}", String::from_utf8_lossy(&result.stderr));
        String::from_utf8_lossy(&result.stdout).into_owned()
    }
}

/// Every file of a generated output that holds results, by relative path.
fn results(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for name in ["filelist.txt", "report.json", "run.json"] {
        files.insert(name.to_string(), std::fs::read(dir.join(name)).unwrap_or_else(|_| panic!("{name} missing in {}", dir.display())));
    }
    for entry in std::fs::read_dir(dir.join("images")).unwrap() {
        let path = entry.unwrap().path();
        files.insert(format!("images/{}", path.file_name().unwrap().to_string_lossy()), std::fs::read(&path).unwrap());
    }
    files
}

#[test]
fn same_seed_gives_the_same_bytes_across_runs_batches_and_shards() {
    let f = Fixture::new(Body::Scale(0.5), 7);
    let text = f.generate("a", &["--per-image", "2"]);
    assert!(text.contains("14 images") && text.contains("privacy gate NOT applied"), "{text}");
    let a = results(&f.root.join("a"));
    assert_eq!(a.len(), 3 + 14);
    let filelist = String::from_utf8(a["filelist.txt"].clone()).unwrap();
    assert!(filelist.starts_with("images/000000-000.png 1 0 0 0 0 0 0 0 0 0\nimages/000000-001.png 1 0"), "{filelist}");
    let report: serde_json::Value = serde_json::from_slice(&a["report.json"]).unwrap();
    assert_eq!(report["privacy_gate"]["applied"], false);
    assert_eq!(report["images"], 14);

    f.generate("b", &["--per-image", "2", "--batch", "3"]);
    assert_eq!(results(&f.root.join("b")), a, "batch size changed the output");

    // Three shards into one shared directory, merged in place.
    for i in 0..3 {
        let text = f.generate("shared", &["--per-image", "2", "--shard", &format!("{i}/3")]);
        assert!(text.contains(&format!("shard {i}/3")), "{text}");
    }
    assert!(!f.root.join("shared/filelist.txt").exists(), "a shard must not write the final filelist");
    let merged = unpersonal(&["merge", "--out", &f.path("shared"), &f.path("shared")]);
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    assert_eq!(results(&f.root.join("shared")), a, "merged shards differ from the single run");

    // One directory per shard, merged elsewhere; a missing shard is named.
    for i in 0..2 {
        f.generate(&format!("s{i}"), &["--per-image", "2", "--shard", &format!("{i}/2")]);
    }
    let incomplete = unpersonal(&["merge", "--out", &f.path("m"), &f.path("s0")]);
    assert!(!incomplete.status.success());
    assert!(String::from_utf8_lossy(&incomplete.stderr).contains("shards 1/2 are missing"));
    let merged = unpersonal(&["merge", "--out", &f.path("m"), &f.path("s0"), &f.path("s1")]);
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    assert_eq!(results(&f.root.join("m")), a);

    // Another seed gives other images.
    f.generate("c", &["--per-image", "2", "--seed", "1"]);
    assert_ne!(results(&f.root.join("c"))["images/000003-001.png"], a["images/000003-001.png"]);
}

#[test]
fn a_run_killed_mid_way_resumes_to_the_same_bytes() {
    let f = Fixture::new(Body::Scale(0.5), 40);
    let flags = ["--per-image", "20", "--steps", "150", "--batch", "1"];
    f.generate("whole", &flags);
    let whole = results(&f.root.join("whole"));

    let (out, bundle) = (f.path("killed"), f.path("bundle"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_unpersonal"))
        .args(["generate", "--bundle", &bundle, "--out", &out, "--quiet"])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let images = f.root.join("killed/images");
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = || std::fs::read_dir(&images).map(|d| d.count()).unwrap_or(0);
    while count() < 20 {
        assert!(Instant::now() < deadline, "the child wrote no images");
        assert!(child.try_wait().unwrap().is_none(), "the child finished before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!f.root.join("killed/report.json").exists(), "the run was killed before it finished");
    assert!(count() < whole.len() - 3, "the kill came too late to test resumption");

    let text = f.generate("killed", &flags);
    assert!(text.contains("800 images"), "{text}");
    assert_eq!(results(&f.root.join("killed")), whole, "a resumed run differs from an uninterrupted one");
    let leftovers: Vec<_> = std::fs::read_dir(&images).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temporary files remain: {leftovers:?}");
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let f = Fixture::new(Body::Scale(0.5), 3);
    f.generate("out", &[]);
    let (out, bundle) = (f.path("out"), f.path("bundle"));
    let second = unpersonal(&["generate", "--bundle", &bundle, "--out", &out, "--seed", "9"]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("other settings") && err.contains("\"seed\":9"), "{err}");
}

#[test]
fn a_model_emitting_nan_writes_no_image() {
    let f = Fixture::new(Body::Nan, 3);
    let (out, bundle) = (f.path("out"), f.path("bundle"));
    let result = unpersonal(&["generate", "--bundle", &bundle, "--out", &out]);
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("denoiser.onnx") && err.contains("NaN"), "{err}");
    assert_eq!(std::fs::read_dir(f.root.join("out/images")).unwrap().count(), 0, "no image may be written");
    assert!(!f.root.join("out/filelist.txt").exists() && !f.root.join("out/report.json").exists());
}

#[test]
fn bad_reference_data_is_named() {
    let f = Fixture::new(Body::Scale(0.5), 2);
    let bundle = f.path("bundle");
    let reference = f.root.join("bundle/reference");
    std::fs::write(reference.join("images/notes.png"), b"these are not pixels").unwrap();
    let list = std::fs::read_to_string(reference.join("filelist.txt")).unwrap();
    std::fs::write(reference.join("bad.txt"), format!("{list}images/notes.png 0 0 0 0 0 0 0 0 0 1\n")).unwrap();
    let result = unpersonal(&["generate", "--bundle", &bundle, "--out", &f.path("out"), "--reference", &f.path("bundle/reference/bad.txt")]);
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("bad.txt") && err.contains("line 3") && err.contains("notes.png"), "{err}");

    image::GrayImage::new(5, 5).save(reference.join("images/big.png")).unwrap();
    std::fs::write(reference.join("big.txt"), "images/big.png 0 0 0 0 0 0 0 0 0 1\n").unwrap();
    let result = unpersonal(&["generate", "--bundle", &bundle, "--out", &f.path("out2"), "--reference", &f.path("bundle/reference/big.txt")]);
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("big.txt") && err.contains("5×5"), "{err}");

    std::fs::remove_dir_all(&reference).unwrap();
    let result = unpersonal(&["generate", "--bundle", &bundle, "--out", &f.path("out3")]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("ships no reference sample"));
}

#[test]
fn generate_help_explains_every_flag() {
    let out = unpersonal(&["generate", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--bundle", "--reference", "--out", "--per-image", "--steps", "--guidance", "--seed", "--shard", "--batch", "--backend", "--json", "--quiet"] {
        assert!(text.contains(flag), "help lacks {flag}:\n{text}");
    }
}
