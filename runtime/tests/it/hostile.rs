//! What an outside probe of the CLI found (issue 21), one regression test per finding: a
//! wrong `--out` never costs a user's file, released files carry no order of their sources,
//! inputs are bounded and must be regular files, closed pipes end quietly, settings that
//! would switch a check off are refused, faults never release an image before its record,
//! and `check` catches near-copies.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cli::unpersonal;
use crate::common::{Body, C, H, W};
use crate::generate::{Fixture, results};

/// Every file under `dir` (following no links) with its bytes.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let Ok(listing) = std::fs::read_dir(dir) else { return files };
    for entry in listing.filter_map(Result::ok) {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files.extend(snapshot(&path));
        } else if kind.is_file() {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            files.insert(path, target.into_os_string().into_encoded_bytes());
        }
    }
    files
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `generate` expecting a refusal whose message holds `needle`; nothing may change.
fn refused(f: &Fixture, out: &str, extra: &[&str], needle: &str) {
    let before = snapshot(&f.root);
    let result = f.try_generate(out, extra);
    let err = stderr(&result);
    assert!(!result.status.success(), "--out {out} {extra:?} was accepted");
    assert!(err.contains(needle), "--out {out} {extra:?}: {err}");
    assert_eq!(snapshot(&f.root), before, "--out {out} {extra:?} changed files");
}

#[test]
fn an_output_directory_is_new_empty_or_the_same_run_and_never_the_reference_set() {
    let f = Fixture::gated(Body::Gaussian(0.5), 4);
    let flags = ["--candidates", "2"];
    // The reference folder, a folder inside it, the bundle, a folder holding the bundle.
    refused(&f, "bundle/reference", &flags, "the reference set's folder");
    refused(&f, "bundle/reference/images", &flags, "lies inside the reference set's folder");
    refused(&f, "bundle", &flags, "holds the reference set's folder");
    refused(&f, ".", &flags, "holds the reference set's folder");
    // An unrelated, non-empty folder (with an images/ folder and a filelist.txt).
    std::fs::create_dir_all(f.root.join("mine/images")).unwrap();
    std::fs::write(f.root.join("mine/images/holiday.png"), b"precious").unwrap();
    std::fs::write(f.root.join("mine/filelist.txt"), b"mine").unwrap();
    refused(&f, "mine", &flags, "is not empty and holds no .unpersonal-release");
    // A symbolic link to the reference folder.
    std::os::unix::fs::symlink(f.root.join("bundle/reference"), f.root.join("link")).unwrap();
    refused(&f, "link", &flags, "the reference set's folder");
    // An unrelated audit folder with an audit-log.jsonl of its own.
    std::fs::create_dir_all(f.root.join("theirs")).unwrap();
    std::fs::write(f.root.join("theirs/audit-log.jsonl"), b"their log").unwrap();
    refused(
        &f,
        "new",
        &[&["--audit", &f.path("theirs")][..], &flags].concat(),
        "holds no .unpersonal-audit",
    );
    assert!(!f.root.join("new").exists());
    // A file where a directory is wanted.
    refused(&f, "mine/filelist.txt", &flags, "is not a directory");

    // New and empty directories are fine; a second run of the same settings resumes.
    std::fs::create_dir_all(f.root.join("empty")).unwrap();
    f.generate("empty", &flags);
    f.generate("empty", &flags);
    // The release and audit directories of a run are not interchangeable.
    refused(&f, "empty-audit", &flags, "is an audit directory");
    // A release whose images/ became a link to a user's folder: nothing there is removed.
    std::fs::rename(f.root.join("empty/images"), f.root.join("moved")).unwrap();
    std::os::unix::fs::symlink(f.root.join("mine/images"), f.root.join("empty/images")).unwrap();
    refused(&f, "empty", &flags, "is a symbolic link or not a directory");
    assert!(f.root.join("mine/images/holiday.png").exists());
}

#[test]
fn released_files_carry_no_order_of_their_sources() {
    let f = Fixture::gated(Body::Gaussian(0.5), 12);
    f.generate("out", &["--candidates", "2", "--batch", "1", "--jobs", "1"]);
    let release = f.root.join("out");
    let release_time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
    let mut files = Vec::new();
    for (path, _) in snapshot(&release) {
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.modified().unwrap(), release_time, "{} has a time", path.display());
        if path.extension().is_some_and(|e| e == "png") {
            let changed = (metadata.ctime(), metadata.ctime_nsec());
            files.push((path.file_name().unwrap().to_owned(), changed));
        }
    }
    assert!(files.len() >= 10, "{files:?}");
    // Written in name (hash) order: the times the system keeps (a file's last change, which
    // no program can set) follow the names, not the reference images.
    files.sort();
    assert!(
        files.windows(2).all(|pair| pair[0].1 <= pair[1].1),
        "images were written in another order than their names': {files:?}"
    );
    // The release names neither the reference set's path nor its files.
    for name in ["run.json", "report.json", "filelist.txt"] {
        let text = std::fs::read_to_string(release.join(name)).unwrap();
        assert!(
            !text.contains(f.root.to_str().unwrap()) && !text.contains("reference/"),
            "{name} names the reference set: {text}"
        );
    }
    // The audit directory keeps where the reference set came from.
    let source = std::fs::read_to_string(f.root.join("out-audit/source.json")).unwrap();
    assert!(source.contains("fingerprint") && source.contains("reference"), "{source}");
    // A name the user chose is carried; another reference set of the same size is refused.
    f.generate("named", &["--candidates", "2", "--reference-name", "ward-free name"]);
    let run = std::fs::read_to_string(f.root.join("named/run.json")).unwrap();
    assert!(run.contains("\"ward-free name\""), "{run}");
    let image = f.root.join("bundle/reference/images/3.png");
    image::GrayImage::from_pixel(W as u32, H as u32, image::Luma([1])).save(&image).unwrap();
    let again = f.try_generate("out", &["--candidates", "2", "--batch", "1", "--jobs", "1"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("a run drawn from another reference set"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn an_audit_report_never_lands_in_the_release() {
    let f = Fixture::gated(Body::Gaussian(0.5), 4);
    f.generate("out", &["--candidates", "2"]);
    let before = snapshot(&f.root);
    for out in ["out/report", "out", "."] {
        let result = unpersonal(&[
            "audit",
            "--bundle",
            &f.path("bundle"),
            "--release",
            &f.path("out"),
            "--train",
            &f.path("bundle/reference"),
            "--holdout",
            &f.path("bundle/reference"),
            "--test",
            &f.path("bundle/reference"),
            "--out",
            &f.path(out),
        ]);
        assert!(!result.status.success());
        assert!(stderr(&result).contains("the release directory"), "{out}: {}", stderr(&result));
    }
    assert_eq!(snapshot(&f.root), before);
}

#[test]
fn flags_and_bundle_numbers_are_bounded_and_named() {
    let f = Fixture::gated(Body::Gaussian(0.5), 3);
    for (flags, needle) in [
        (&["--candidates", "1000000000000000"][..], "--candidates must be between 1 and 1024"),
        (&["--candidates", "18446744073709551615"], "--candidates must be between 1 and 1024"),
        (&["--steps", "100000000"], "--steps must be between 1 and 1000"),
        (&["--rounds", "0"], "--rounds must be between 1 and 100"),
        (&["--guidance", "nan"], "--guidance must be a number between 0 and 20"),
        (&["--guidance", "inf"], "--guidance must be a number between 0 and 20"),
        (&["--guidance=-1e30"], "--guidance must be a number between 0 and 20"),
        (&["--guidance", "0.1", "--rounds", "3"], "would be -0.1"),
        (&["--batch", "0"], "--batch must be between 1 and 4096"),
        (&["--jobs", "100000"], "--jobs must be between 1 and 256"),
        (&["--sources", "0"], "--sources must be at least 1: it is the number of reference images"),
    ] {
        refused(&f, "out", flags, needle);
    }
    let bundle = f.root.join("bundle/bundle.json");
    let good = std::fs::read_to_string(&bundle).unwrap();
    let value: serde_json::Value = serde_json::from_str(&good).unwrap();
    for (field, patch, needle) in [
        (
            "sampler",
            serde_json::json!({ "candidates_per_image": 1_000_000_000_000_000u64 }),
            "`sampler.candidates_per_image` must be between 1 and 1024",
        ),
        (
            "sampler",
            serde_json::json!({ "candidates_per_image": u64::MAX }),
            "`sampler.candidates_per_image` must be between 1 and 1024",
        ),
        (
            "sampler",
            serde_json::json!({ "steps": 100_000_000 }),
            "`sampler.steps` must be between 1 and 1000",
        ),
        (
            "sampler",
            serde_json::json!({ "guidance": -1e30 }),
            "`sampler.guidance` must be a number between 0 and 20",
        ),
        (
            "reid",
            serde_json::json!({ "neighbours": 0 }),
            "`reid.neighbours` must be between 1 and 1024",
        ),
        (
            "reid",
            serde_json::json!({ "neighbour_threshold": 1.5 }),
            "`reid.neighbour_threshold` must lie strictly between 0 and 1",
        ),
    ] {
        let mut patched = value.clone();
        let section = patched[field].as_object_mut().map(|o| o.clone()).unwrap_or_default();
        let mut section = serde_json::Value::Object(section);
        for (k, v) in patch.as_object().unwrap() {
            section[k] = v.clone();
        }
        patched[field] = section;
        std::fs::write(&bundle, patched.to_string()).unwrap();
        refused(&f, "out", &[], needle);
    }
    // A key given twice: the bundle says two things.
    let twice = good.replacen("{", "{\"schema_version\": 1,", 1);
    std::fs::write(&bundle, twice).unwrap();
    refused(&f, "out", &[], "duplicate key `schema_version`");
    std::fs::write(&bundle, good).unwrap();
    f.generate("out", &["--candidates", "2"]);
}

#[test]
fn inputs_must_be_regular_files_and_fifos_never_block() {
    let f = Fixture::gated(Body::Gaussian(0.5), 3);
    let fifo = f.root.join("pipe.png");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let bundle = f.path("bundle");
    for (image, needle) in
        [(fifo.to_str().unwrap(), "is a FIFO"), ("/dev/zero", "/dev/zero is a device")]
    {
        let result = unpersonal(&["check", "--bundle", &bundle, image]);
        assert!(!result.status.success());
        assert!(stderr(&result).contains(needle), "{}", stderr(&result));
    }
    // A FIFO as the reference set, and one named inside a filelist.
    refused(
        &f,
        "out",
        &["--reference", fifo.to_str().unwrap()],
        "neither a regular file nor a directory",
    );
    std::fs::write(f.root.join("list.txt"), "pipe.png 1 0 0 0 0 0 0 0 0 0\n").unwrap();
    refused(&f, "out", &["--reference", &f.path("list.txt")], "is a FIFO");
}

#[test]
fn a_closed_pipe_ends_every_subcommand_quietly() {
    let f = Fixture::gated(Body::Gaussian(0.5), 3);
    f.generate("out", &["--candidates", "2"]);
    let bundle = f.path("bundle");
    let image = f.path("bundle/reference/images/0.png");
    for args in [
        vec!["info", "--bundle", &bundle],
        vec!["info", "--bundle", &bundle, "--json"],
        vec!["check", "--bundle", &bundle, &image, &image, &image],
        vec!["--help"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_unpersonal"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the pipe before the command writes (it verifies the bundle first), as
        // `| head -1` does once it has its line: every write then meets a closed pipe.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let err = stderr(&output);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[test]
fn an_image_is_never_released_before_its_audit_record_and_a_tampered_one_is_redrawn() {
    let f = Fixture::gated(Body::Gaussian(0.5), 6);
    let flags = ["--candidates", "2", "--batch", "1"];
    f.generate("whole", &flags);
    let whole = results(&f.root.join("whole"));
    // The audit log cannot be written (a directory stands where it goes, as a full audit disk
    // would fail it): the run fails and the release holds no image.
    std::fs::create_dir_all(f.root.join("full-audit/audit-log.jsonl/x")).unwrap();
    std::fs::write(f.root.join("full-audit/.unpersonal-audit"), b"unpersonal\n").unwrap();
    let result = f.try_generate("full", &flags);
    assert!(!result.status.success(), "the run succeeded without its audit log");
    let released = std::fs::read_dir(f.root.join("full/images")).map_or(0, |d| d.count());
    assert_eq!(released, 0, "an image was released before its audit record");
    std::fs::remove_dir_all(f.root.join("full-audit/audit-log.jsonl")).unwrap();
    f.generate("full", &flags);
    assert_eq!(results(&f.root.join("full")), whole);

    // A released image replaced by a real one: the re-run notices and restores it.
    let (name, _) = whole.iter().find(|(k, _)| k.starts_with("images/")).unwrap();
    let real = std::fs::read(f.root.join("bundle/reference/images/0.png")).unwrap();
    std::fs::write(f.root.join("full").join(name), &real).unwrap();
    f.generate("full", &flags);
    assert_eq!(results(&f.root.join("full")), whole, "the tampered image survived the re-run");
}

#[test]
fn check_says_what_it_guarantees_and_fails_every_near_copy() {
    // The shipped bundle and its 28×28 reference sample, as the outside probe used them.
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist");
    let source = image::open(bundle.join("reference/images/train-00002.png")).unwrap().to_luma8();
    let (w, h) = source.dimensions();
    let noise = |x: u32, y: u32| ((x * 7 + y * 13) % 7) as i32 - 3;
    type Edit<'a> = &'a dyn Fn(u32, u32) -> u8;
    let variants: [(&str, Edit); 7] = [
        ("inverted-pixel", &|x, y| {
            let p = source.get_pixel(x, y)[0];
            if (x, y) == (14, 14) { 255 - p } else { p }
        }),
        ("brighter", &|x, y| source.get_pixel(x, y)[0].saturating_add(2)),
        ("darker", &|x, y| source.get_pixel(x, y)[0].saturating_sub(2)),
        ("noisy", &|x, y| (i32::from(source.get_pixel(x, y)[0]) + noise(x, y)).clamp(0, 255) as u8),
        ("contrast", &|x, y| (f32::from(source.get_pixel(x, y)[0]) * 0.9) as u8),
        ("mirrored", &|x, y| source.get_pixel(w - 1 - x, y)[0]),
        ("exact", &|x, y| source.get_pixel(x, y)[0]),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, pixel) in variants {
        let path = tmp.path().join(format!("{name}.png"));
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([pixel(x, y)])).save(&path).unwrap();
        paths.push(path.to_str().unwrap().to_string());
    }
    let b = bundle.to_str().unwrap();
    for path in &paths {
        let result = unpersonal(&["check", "--bundle", b, path]);
        let text = String::from_utf8_lossy(&result.stdout);
        assert!(!result.status.success(), "{path} passed: {text}");
        assert!(
            text.contains("FAIL") && text.contains("near-copy of reference #2"),
            "{path}: {text}"
        );
        assert!(text.contains("check: an image passes only if"), "{text}");
    }
    // --strict applies the source threshold to every reference, and says so.
    let strict = unpersonal(&["check", "--bundle", b, "--strict", "--json", &paths[0]]);
    let value: serde_json::Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert_eq!(value["strict"], true);
    assert!(value["guarantee"].as_str().unwrap().contains("--strict"), "{value}");
    let _ = (C, H, W);
}
