//! `unpersonal generate` and `unpersonal merge` on tiny test bundles: the privacy gate (planted
//! leaks release nothing, released images pass `unpersonal check`, the audit log stays out of
//! the release), reproducibility across runs, batch sizes and shards, and failing closed on
//! bad input or models that cannot run (interrupted runs: `faults.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cli::unpersonal;
use crate::common::{Body, C, H, W, add_gate, write_bundle};

/// A bundle (a test denoiser, features, and with `gate` a classifier and re-id model) and a
/// reference filelist of `n` distinct 4×4 PNGs.
pub(crate) struct Fixture {
    _tmp: tempfile::TempDir,
    pub(crate) root: PathBuf,
}

impl Fixture {
    pub(crate) fn new(body: Body, n: usize) -> Fixture {
        Fixture::with_gate(body, n, false)
    }

    pub(crate) fn gated(body: Body, n: usize) -> Fixture {
        Fixture::with_gate(body, n, true)
    }

    fn with_gate(body: Body, n: usize, gate: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("bundle/reference/images")).unwrap();
        write_bundle(&root.join("bundle"), body);
        if gate {
            add_gate(&root.join("bundle"));
        }
        let mut list = String::new();
        for i in 0..n {
            let pixels: Vec<u8> = (0..C * H * W).map(|p| ((i * 37 + p * 11) % 256) as u8).collect();
            let name = format!("images/{i}.png");
            image::GrayImage::from_raw(W as u32, H as u32, pixels)
                .unwrap()
                .save(root.join("bundle/reference").join(&name))
                .unwrap();
            let labels: String = (0..10).map(|k| if k == i % 10 { " 1" } else { " 0" }).collect();
            list.push_str(&format!("{name}{labels}\n"));
        }
        std::fs::write(root.join("bundle/reference/filelist.txt"), list).unwrap();
        Fixture { _tmp: tmp, root }
    }

    pub(crate) fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_string()
    }

    /// Runs `generate` on the fixture's bundle into `out` with extra flags.
    pub(crate) fn try_generate(&self, out: &str, extra: &[&str]) -> std::process::Output {
        let out = self.path(out);
        let bundle = self.path("bundle");
        let mut args = vec!["generate", "--bundle", &bundle, "--out", &out];
        args.extend_from_slice(extra);
        unpersonal(&args)
    }

    /// Like [`Fixture::try_generate`]; panics on failure and returns standard output.
    pub(crate) fn generate(&self, out: &str, extra: &[&str]) -> String {
        let result = self.try_generate(out, extra);
        assert!(
            result.status.success(),
            "generate {extra:?} failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        String::from_utf8_lossy(&result.stdout).into_owned()
    }

    fn report(&self, out: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.root.join(out).join("report.json")).unwrap())
            .unwrap()
    }

    fn audit_log(&self, out: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.root.join(format!("{out}-audit/audit-log.jsonl")))
            .unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Every file of a generated output (release and audit directory) that holds results, by
/// relative path.
pub(crate) fn results(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for name in ["filelist.txt", "report.json", "run.json"] {
        files.insert(
            name.to_string(),
            std::fs::read(dir.join(name))
                .unwrap_or_else(|_| panic!("{name} missing in {}", dir.display())),
        );
    }
    let audit = PathBuf::from(format!("{}-audit", dir.display())).join("audit-log.jsonl");
    files.insert(
        "audit-log.jsonl".into(),
        std::fs::read(&audit).unwrap_or_else(|_| panic!("{} missing", audit.display())),
    );
    for entry in std::fs::read_dir(dir.join("images")).unwrap() {
        let path = entry.unwrap().path();
        files.insert(
            format!("images/{}", path.file_name().unwrap().to_string_lossy()),
            std::fs::read(&path).unwrap(),
        );
    }
    files
}

#[test]
fn same_seed_gives_the_same_bytes_across_runs_batches_and_shards() {
    let f = Fixture::gated(Body::Gaussian(0.5), 7);
    let flags = ["--candidates", "3", "--keep-second"];
    let text = f.generate("a", &flags);
    assert!(text.contains("privacy gate applied"), "{text}");
    let a = results(&f.root.join("a"));
    let report = f.report("a");
    assert_eq!(report["privacy_gate"]["applied"], true);
    assert_eq!(report["reference_images"], 7);
    let images = report["released_images"].as_u64().unwrap() as usize;
    assert!(images > 0 && a.len() == 4 + images, "{report}");

    f.generate("b", &[&flags[..], &["--batch", "3", "--jobs", "2"]].concat());
    assert_eq!(results(&f.root.join("b")), a, "batch size or workers changed the output");

    // Three shards into one release and audit directory, then merged.
    for i in 0..3 {
        let text = f.generate("shared", &[&flags[..], &["--shard", &format!("{i}/3")]].concat());
        assert!(text.contains(&format!("shard {i}/3")), "{text}");
        assert!(
            !f.root.join("shared/filelist.txt").exists(),
            "a shard must not write the final filelist"
        );
        if i == 1 {
            let early = unpersonal(&["merge", "--out", &f.path("shared")]);
            assert!(!early.status.success());
            assert!(
                String::from_utf8_lossy(&early.stderr).contains("shards 2/3 are missing"),
                "{}",
                String::from_utf8_lossy(&early.stderr)
            );
        }
    }
    let merged = unpersonal(&["merge", "--out", &f.path("shared")]);
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    assert_eq!(results(&f.root.join("shared")), a, "merged shards differ from the single run");

    // Another seed gives other images.
    f.generate("c", &[&flags[..], &["--seed", "1"]].concat());
    assert_ne!(results(&f.root.join("c"))["filelist.txt"], a["filelist.txt"]);

    // Another solver gives other images, and the run says which it used.
    f.generate("d", &[&flags[..], &["--solver", "dpmpp-2m"]].concat());
    let d = results(&f.root.join("d"));
    assert!(String::from_utf8_lossy(&d["run.json"]).contains("\"dpmpp-2m\""));
    assert_ne!(d["filelist.txt"], a["filelist.txt"]);
    let unknown = f.try_generate("e", &["--solver", "euler"]);
    assert!(
        !unknown.status.success()
            && String::from_utf8_lossy(&unknown.stderr).contains("known: heun, dpmpp-2m")
    );
}

#[test]
fn sources_draws_for_a_subset_and_gates_against_every_reference() {
    let f = Fixture::gated(Body::Gaussian(0.5), 7);
    f.generate("all", &["--candidates", "2"]);
    f.generate("first3", &["--candidates", "2", "--sources", "3"]);
    let report = f.report("first3");
    assert_eq!(report["reference_images"], 3, "{report}");
    assert_eq!(report["run"]["reference"]["images"], 7, "the gate must still see every reference");
    // Each source's outcome, compared against all seven references, is the full run's.
    assert_eq!(f.audit_log("first3")[..], f.audit_log("all")[..3]);

    // Shards of a subset merge into the same release.
    for i in 0..2 {
        f.generate(
            "sharded",
            &["--candidates", "2", "--sources", "3", "--shard", &format!("{i}/2")],
        );
    }
    let merged = unpersonal(&["merge", "--out", &f.path("sharded")]);
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    assert_eq!(f.audit_log("sharded"), f.audit_log("first3"));

    let too_many = f.try_generate("bad", &["--sources", "8"]);
    assert!(!too_many.status.success());
    assert!(
        String::from_utf8_lossy(&too_many.stderr).contains("--sources 8"),
        "{}",
        String::from_utf8_lossy(&too_many.stderr)
    );
}

#[test]
fn the_release_holds_only_checked_images_and_no_mapping_to_real_ones() {
    let f = Fixture::gated(Body::Gaussian(0.5), 6);
    f.generate("out", &["--candidates", "4"]);
    let filelist = std::fs::read_to_string(f.root.join("out/filelist.txt")).unwrap();
    let files: Vec<&str> = filelist.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        std::fs::read_dir(f.root.join("out/images")).unwrap().count(),
        files.len(),
        "every image in the release is listed"
    );
    // Image names are content hashes, not reference numbers.
    for file in &files {
        let stem = file.trim_start_matches("images/").trim_end_matches(".png");
        assert!(stem.len() == 16 && stem.chars().all(|c| c.is_ascii_hexdigit()), "{file}");
    }
    // The mapping to real images lives only in the audit directory.
    let release: Vec<String> = walk(&f.root.join("out"));
    assert!(release.iter().all(|p| !p.contains("audit")), "{release:?}");
    let report = std::fs::read_to_string(f.root.join("out/report.json")).unwrap();
    assert!(
        !report.contains("closest_reference") && !report.contains("max_same_person"),
        "the report must hold aggregates only: {report}"
    );
    let log = f.audit_log("out");
    assert_eq!(log.len(), 6);
    let logged: usize = log.iter().map(|r| r["files"].as_array().unwrap().len()).sum();
    assert_eq!(logged, files.len());
    for record in &log {
        for draw in record["released"].as_array().unwrap() {
            assert!(draw["scores"]["max_same_person"].as_f64().unwrap() < 0.5, "{record}");
        }
    }

    // Every released image passes `unpersonal check` against the same reference set.
    let bundle = f.path("bundle");
    let paths: Vec<String> = files.iter().map(|file| f.path(&format!("out/{file}"))).collect();
    let mut args = vec!["check", "--bundle", bundle.as_str()];
    args.extend(paths.iter().map(String::as_str));
    let checked = unpersonal(&args);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));

    // The audit directory may not sit inside the release (or the other way round).
    let nested = f.try_generate("out2", &["--audit", &f.path("out2/audit")]);
    assert!(!nested.status.success());
    assert!(String::from_utf8_lossy(&nested.stderr).contains("holds the audit directory"));
    assert!(!f.root.join("out2").exists(), "nothing may be created for a refused layout");
}

#[test]
fn a_planted_leak_releases_nothing_and_says_why() {
    // The denoiser returns its conditioning image and the features are the identity: every
    // candidate is an exact copy of its reference image.
    let f = Fixture::gated(Body::Leak, 5);
    let text = f.generate("out", &["--candidates", "3", "--rounds", "2"]);
    assert!(
        text.contains("0 images released") && text.contains("5 reference images released nothing"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(f.root.join("out/images")).unwrap().count(), 0);
    assert_eq!(std::fs::read_to_string(f.root.join("out/filelist.txt")).unwrap(), "");
    let report = f.report("out");
    assert_eq!(report["released_images"], 0);
    assert_eq!(report["reference_images_withheld"], 5);
    assert_eq!(report["rounds"][1]["rejection_rate"], 1.0);
    assert!(
        (report["rounds"][1]["guidance"].as_f64().unwrap()
            - (report["rounds"][0]["guidance"].as_f64().unwrap() - 0.1))
            .abs()
            < 1e-6
    );
    for record in f.audit_log("out") {
        assert_eq!(record["rejected"], serde_json::json!([3, 3]), "{record}");
    }

    // Without the gate the same bundle writes the copies: the gate is what stops them.
    let unfiltered = f.generate("raw", &["--candidates", "1", "--unfiltered-research-only"]);
    assert!(
        unfiltered.contains("5 images released") && unfiltered.contains("NOT applied"),
        "{unfiltered}"
    );
}

#[test]
fn a_gate_that_cannot_run_releases_nothing() {
    // No re-identification model: refused, with the research flag named.
    let f = Fixture::new(Body::Scale(0.5), 3);
    let result = f.try_generate("out", &[]);
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("no re-identification model") && err.contains("nothing can be released"),
        "{err}"
    );
    assert!(
        !f.root.join("out/images").exists()
            || std::fs::read_dir(f.root.join("out/images")).unwrap().count() == 0
    );

    // A re-id model that emits NaN (its hash is right, it just cannot give an answer).
    let f = Fixture::gated(Body::Scale(0.5), 3);
    let bundle = f.root.join("bundle");
    let broken = crate::common::nan_model("embedding", crate::common::E);
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    value["models"]["reid_embed"]["sha256"] =
        serde_json::json!(unpersonal_runtime::bundle::sha256_hex(&broken));
    std::fs::write(bundle.join("bundle.json"), value.to_string()).unwrap();
    std::fs::write(bundle.join("reid_embed.onnx"), &broken).unwrap();
    let result = f.try_generate("out", &[]);
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("reid_embed.onnx") && err.contains("NaN"), "{err}");
    // The gate fails while indexing the reference set, before any directory is created.
    assert!(!f.root.join("out").exists(), "no image may be released");

    // A corrupt model file (its bytes no longer match the bundle's hash).
    std::fs::write(bundle.join("reid_embed.onnx"), b"not onnx").unwrap();
    let result = f.try_generate("out3", &[]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("reid_embed.onnx"));
    assert!(!f.root.join("out3").exists(), "nothing may be created for an unusable bundle");
}

/// Every path under `dir`, relative.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path.display().to_string());
    }
    out
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let f = Fixture::gated(Body::Scale(0.5), 3);
    f.generate("out", &[]);
    let second = f.try_generate("out", &["--seed", "9"]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("other settings") && err.contains("\"seed\":9"), "{err}");
}

#[test]
fn a_denoiser_emitting_nan_writes_no_image() {
    let f = Fixture::gated(Body::Nan, 3);
    let result = f.try_generate("out", &[]);
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("denoiser.onnx") && err.contains("NaN"), "{err}");
    for dir in ["out/images", "out-audit/staged"] {
        let written = std::fs::read_dir(f.root.join(dir)).map_or(0, |d| d.count());
        assert_eq!(written, 0, "no image may be written");
    }
    assert!(!f.root.join("out/filelist.txt").exists() && !f.root.join("out/report.json").exists());
}

#[test]
fn bad_reference_data_is_named() {
    // Gated: images are decoded while the gate indexes them, after the models are loaded.
    let f = Fixture::gated(Body::Scale(0.5), 2);
    let bundle = f.path("bundle");
    let reference = f.root.join("bundle/reference");
    std::fs::write(reference.join("images/notes.png"), b"these are not pixels").unwrap();
    let list = std::fs::read_to_string(reference.join("filelist.txt")).unwrap();
    std::fs::write(
        reference.join("bad.txt"),
        format!("{list}images/notes.png 0 0 0 0 0 0 0 0 0 1\n"),
    )
    .unwrap();
    let result = unpersonal(&[
        "generate",
        "--bundle",
        &bundle,
        "--out",
        &f.path("out"),
        "--reference",
        &f.path("bundle/reference/bad.txt"),
    ]);
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("bad.txt") && err.contains("line 3") && err.contains("notes.png"),
        "{err}"
    );

    image::GrayImage::new(5, 5).save(reference.join("images/big.png")).unwrap();
    std::fs::write(reference.join("big.txt"), "images/big.png 0 0 0 0 0 0 0 0 0 1\n").unwrap();
    let result = unpersonal(&[
        "generate",
        "--bundle",
        &bundle,
        "--out",
        &f.path("out2"),
        "--reference",
        &f.path("bundle/reference/big.txt"),
    ]);
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
    for flag in [
        "--bundle",
        "--reference",
        "--out",
        "--audit",
        "--candidates",
        "--rounds",
        "--keep-second",
        "--steps",
        "--guidance",
        "--seed",
        "--shard",
        "--batch",
        "--unfiltered-research-only",
        "--backend",
        "--json",
        "--quiet",
    ] {
        assert!(text.contains(flag), "help lacks {flag}:\n{text}");
    }
}
