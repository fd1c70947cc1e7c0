//! A property test of `generate` over random flags and random directory layouts: existing
//! files and folders, symbolic links, a previous release of the same or another run, the
//! reference set inside the output and the output inside the reference set. Whatever the
//! layout, no file outside `--out` and `--audit` changes (none at all when the run is
//! refused), and a release holds only what may be shared: its marker, run.json, report.json,
//! filelist.txt and images named by hash, none of them a reference image or naming one.
//!
//! The test command runs [`DEFAULT_CASES`] cases; `UNPERSONAL_LAYOUT_CASES=N` runs N (and
//! `UNPERSONAL_LAYOUT_SEED=S` starts from seed S), e.g. for a longer run:
//! `UNPERSONAL_LAYOUT_CASES=500 cargo test --release -p unpersonal-runtime --test it layout`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::Body;
use crate::generate::Fixture;
use crate::hostile::snapshot;

/// Cases in the test command.
const DEFAULT_CASES: u64 = 40;

/// The places `--out` and `--audit` are drawn from (relative to the fixture's root).
const PLACES: [&str; 16] = [
    "new/out",
    "empty",
    "user",
    "user/images",
    "user/notes.txt",
    "bundle",
    "bundle/reference",
    "bundle/reference/images",
    ".",
    "link-to-reference",
    "link-to-user",
    "link-to-empty",
    "data",
    "data/set/out",
    "prev",
    "prev-audit",
];

/// Builds the layout: a user's folder with files a release also has, an empty folder, links,
/// a copy of the reference set under `data/set`, and sometimes a previous run in `prev`.
fn layout(f: &Fixture) {
    let root = &f.root;
    std::fs::create_dir_all(root.join("user/images")).unwrap();
    for (name, bytes) in [
        ("user/images/x.png", &b"a user's picture"[..]),
        ("user/filelist.txt", b"user list"),
        ("user/audit-log.jsonl", b"user log"),
        ("user/run.json", b"{\"not\": \"ours\"}"),
        ("user/notes.txt", b"notes"),
    ] {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
    for (link, target) in [
        ("link-to-reference", "bundle/reference"),
        ("link-to-user", "user"),
        ("link-to-empty", "empty"),
    ] {
        std::os::unix::fs::symlink(root.join(target), root.join(link)).unwrap();
    }
    std::fs::create_dir_all(root.join("data/set/images")).unwrap();
    let list = std::fs::read_to_string(root.join("bundle/reference/filelist.txt")).unwrap();
    std::fs::write(root.join("data/set/filelist.txt"), &list).unwrap();
    for entry in std::fs::read_dir(root.join("bundle/reference/images")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, root.join("data/set/images").join(path.file_name().unwrap())).unwrap();
    }
}

/// Random flags of a run.
fn flags(rng: &mut ChaCha8Rng, f: &Fixture) -> Vec<String> {
    let mut flags: Vec<String> = vec![
        "--candidates".into(),
        rng.random_range(1..=3).to_string(),
        "--steps".into(),
        rng.random_range(2..=5).to_string(),
        "--seed".into(),
        rng.random_range(0..3).to_string(),
        "--sources".into(),
        rng.random_range(1..=5).to_string(),
        "--quiet".into(),
    ];
    if rng.random_bool(0.3) {
        flags.push("--keep-second".into());
    }
    if rng.random_bool(0.2) {
        flags.push("--unfiltered-research-only".into());
    }
    match rng.random_range(0..3) {
        0 => {}
        1 => flags.extend(["--reference".into(), f.path("data/set")]),
        _ => flags.extend(["--reference".into(), f.path("bundle/reference/filelist.txt")]),
    }
    flags
}

/// Whether `path` (resolved) lies inside (or is) one of `dirs` (resolved).
fn inside(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

/// `path` resolved as far as it exists.
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while existing.canonicalize().is_err() {
        rest.push(existing.file_name().unwrap().to_owned());
        existing.pop();
    }
    let mut real = existing.canonicalize().unwrap();
    for part in rest.iter().rev() {
        real.push(part);
    }
    real
}

/// One case; panics with the case's description when the property fails. Returns whether the
/// run released.
fn case(seed: u64) -> bool {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let f = Fixture::gated(Body::Gaussian(0.5), 5);
    layout(&f);
    let run_flags = flags(&mut rng, &f);
    if rng.random_bool(0.3) {
        // A previous run: the same flags, or another seed.
        let mut prev = run_flags.clone();
        if rng.random_bool(0.5) {
            prev.extend(["--seed".into(), "7".into()]);
        }
        let prev: Vec<&str> = prev.iter().map(String::as_str).collect();
        let _ = f.try_generate("prev", &prev);
    }
    let out = PLACES[rng.random_range(0..PLACES.len())];
    let audit = rng.random_bool(0.5).then(|| PLACES[rng.random_range(0..PLACES.len())]);
    let mut args: Vec<String> = run_flags.clone();
    if let Some(audit) = audit {
        args.extend(["--audit".into(), f.path(audit)]);
    }
    let out_path = f.root.join(out);
    let audit_path = audit
        .map_or_else(|| PathBuf::from(format!("{}-audit", out_path.display())), |a| f.root.join(a));
    let description = format!("seed {seed}: --out {out} --audit {audit:?} {run_flags:?}");

    let before = snapshot(&f.root);
    let real: BTreeMap<PathBuf, PathBuf> =
        before.keys().map(|p| (p.clone(), resolved(p))).collect();
    let reference_images: Vec<Vec<u8>> = std::fs::read_dir(f.root.join("bundle/reference/images"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let allowed = [resolved(&out_path), resolved(&audit_path)];

    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = f.try_generate(out, &args);
    let err = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(!err.contains("panicked"), "{description}: {err}");
    let after = snapshot(&f.root);

    for (path, bytes) in &before {
        let may_change = result.status.success() && inside(&real[path], &allowed);
        if !may_change {
            assert_eq!(
                after.get(path),
                Some(bytes),
                "{description}: {} changed ({err})",
                path.display()
            );
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        assert!(
            inside(&resolved(path), &allowed),
            "{description}: {} was created outside --out and --audit",
            path.display()
        );
    }
    if !result.status.success() {
        return false;
    }
    // A release holds only what may be shared.
    let release = resolved(&out_path);
    let root = f.root.canonicalize().unwrap();
    let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    for (path, bytes) in
        after.iter().filter(|(p, _)| !is_link(p) && resolved(p).starts_with(&release))
    {
        let rel = resolved(path).strip_prefix(&release).unwrap().to_path_buf();
        let name = rel.to_string_lossy().into_owned();
        let expected = matches!(
            name.as_str(),
            ".unpersonal-release" | "run.json" | "report.json" | "filelist.txt"
        ) || (name.starts_with("images/")
            && name.len() == "images/".len() + 20
            && name.ends_with(".png"));
        assert!(expected, "{description}: the release holds {name}");
        assert!(!reference_images.contains(bytes), "{description}: {name} is a reference image");
        let text = String::from_utf8_lossy(bytes);
        for personal in [root.to_str().unwrap(), "reference/images", "data/set", "train-0"] {
            assert!(!text.contains(personal), "{description}: {name} names {personal:?}");
        }
    }
    assert!(
        !resolved(&audit_path).starts_with(&release) && !release.starts_with(resolved(&audit_path)),
        "{description}: the audit directory and the release are not apart"
    );
    true
}

#[test]
fn no_layout_of_directories_and_flags_changes_a_file_outside_out_and_audit() {
    let cases = std::env::var("UNPERSONAL_LAYOUT_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let start: u64 =
        std::env::var("UNPERSONAL_LAYOUT_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let released = (start..start + cases).filter(|&seed| case(seed)).count();
    println!("{released} of {cases} layouts released, the others were refused");
    // Both outcomes must be exercised, or the property says little.
    assert!(released > 0 && released < cases as usize, "{released} of {cases} released");
}
