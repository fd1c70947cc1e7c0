//! The two directories of `generate` and `merge`. The release directory holds only what may
//! be shared:
//!
//! ```text
//! .unpersonal-release     marks the directory as a release of this tool
//! images/<hash>.png       released images, named by a hash of their bytes (a name says
//!                         nothing about the reference image the image was drawn for)
//! run.json                what decides every pixel; a re-run must match it
//! filelist.txt            every image with its labels, in the reference format
//! report.json             aggregate counts of the gate and the privacy status
//! ```
//!
//! The audit directory holds the mapping from each released image to the real image it was
//! drawn for, with its scores. That mapping is personal data (it says which patient's image
//! each synthetic one stands for), so it never sits inside the release directory:
//!
//! ```text
//! .unpersonal-audit       marks the directory as the audit directory of a run
//! run.json                the same run
//! source.json             the reference set as typed on the command line, and its fingerprint
//! staged/<hash>.png       images that passed the gate, until the run finishes
//! records/<a>-<b>.jsonl   one line per reference image of a finished batch (a..b)
//! shards/<i>-of-<n>.json  the shards of a sharded run that finished
//! audit-log.jsonl         every record in reference order, written when the run finishes
//! ```
//!
//! Directories are claimed before anything is written: each must be new, empty, or marked as
//! the same kind of directory of a run with the same `run.json`; neither may lie inside (or
//! hold) the other, the reference set's folder or the bundle. Nothing else is ever written
//! into, so a wrong `--out` costs an error message, never a user's file.
//!
//! Every file is written to a temporary sibling and renamed, so a killed run leaves only
//! complete files (and temporaries that the next run removes). Images are staged in the audit
//! directory before the record that names them; a reference counts as done once its record
//! exists and its images are whole. When the run finishes, the audit log is written first, then
//! the images are copied into the release in the order of their names (so that neither their
//! inodes nor the order of a directory listing follow the reference order), every released file
//! gets the same fixed modification time, and the staged copies are removed. Nothing holds a
//! time, so a resumed or sharded run produces the same bytes as an uninterrupted one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use unpersonal_runtime::atomic::PARTIAL;
pub use unpersonal_runtime::atomic::write_atomically;
use unpersonal_runtime::files::{MAX_FILE_BYTES, read_regular};
use unpersonal_runtime::generate::Shard;
use unpersonal_runtime::report::{self, report};
pub use unpersonal_runtime::report::{GateRule, Record, RunInfo};

/// The marker of a release directory.
pub const RELEASE_MARKER: &str = ".unpersonal-release";
/// The marker of an audit directory.
pub const AUDIT_MARKER: &str = ".unpersonal-audit";
/// The marker of the directory of an `unpersonal audit` report.
pub const REPORT_MARKER: &str = ".unpersonal-audit-report";
/// The marker of the directory of an `unpersonal sample` run.
pub const SAMPLES_MARKER: &str = ".unpersonal-samples";
/// The modification time of every released file: 2000-01-01T00:00:00Z. A release's times say
/// nothing of when, or in which order, its images were drawn.
pub const RELEASE_TIME: Duration = Duration::from_secs(946_684_800);

/// The release directory and the audit directory of a run.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// What may be shared.
    pub release: PathBuf,
    /// The mapping to real images: personal data.
    pub audit: PathBuf,
}

/// Where a run's reference set came from: kept in the audit directory only (a path can name a
/// patient or a ward), so that a resumed run is refused when its reference set is another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `--reference` as typed (or the bundle's shipped sample).
    pub reference: String,
    /// The reference set's [`fingerprint`](unpersonal_runtime::data::Images::fingerprint).
    pub fingerprint: String,
}

/// The default audit directory of release directory `release`: its sibling `<name>-audit`.
pub fn default_audit(release: &Path) -> PathBuf {
    let name =
        release.file_name().map_or("unpersonal-out".into(), |n| n.to_string_lossy().into_owned());
    release.with_file_name(format!("{name}-audit"))
}

/// Pretty JSON with a final newline.
pub fn json_bytes(value: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// The kinds of directory this tool writes, by marker.
const KINDS: [(&str, &str); 4] = [
    (RELEASE_MARKER, "a release directory"),
    (AUDIT_MARKER, "an audit directory"),
    (REPORT_MARKER, "an audit report directory"),
    (SAMPLES_MARKER, "a `sample` output directory"),
];

/// `path` made absolute with symbolic links resolved as far as it exists (the rest appended
/// as written, `..` resolved lexically), so that a directory not yet created can be compared
/// with existing ones.
pub fn resolved(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut real) => {
                for part in rest.iter().rev() {
                    match part {
                        std::path::Component::ParentDir => {
                            real.pop();
                        }
                        std::path::Component::CurDir => {}
                        other => real.push(other),
                    }
                }
                return Ok(real);
            }
            Err(_) => {
                let Some(parent) = existing.parent() else { return Ok(absolute) };
                rest.push(existing.components().next_back().expect("a path with a parent"));
                existing = parent;
            }
        }
    }
}

/// Fails when `dir` (resolved) is, lies inside or holds `other` (resolved).
pub fn check_apart(what: &str, dir: &Path, other_what: &str, other: &Path) -> anyhow::Result<()> {
    let (a, b) = (resolved(dir)?, resolved(other)?);
    let relation = if a == b {
        "is"
    } else if a.starts_with(&b) {
        "lies inside"
    } else if b.starts_with(&a) {
        "holds"
    } else {
        return Ok(());
    };
    bail!(
        "{what} {} {relation} {other_what} {}: choose a directory apart from it; nothing was written",
        dir.display(),
        other.display()
    )
}

/// Fails unless `dir` is absent, an empty directory, or a directory marked `marker`.
pub fn check_claimable(dir: &Path, marker: &str, what: &str) -> anyhow::Result<()> {
    let metadata = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot use {}", dir.display())),
    };
    if !metadata.is_dir() {
        bail!("{what} {} exists and is not a directory; nothing was written", dir.display());
    }
    for (other, kind) in KINDS {
        if dir.join(other).exists() {
            if other == marker {
                return Ok(());
            }
            bail!(
                "{what} {} is {kind} (it holds {other}), not one of this kind; choose a new or empty directory (nothing was written)",
                dir.display()
            );
        }
    }
    let mut listing =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if listing.next().is_some() {
        bail!(
            "{what} {} is not empty and holds no {marker}: this tool writes only into a new or empty directory, or one it made; choose another (nothing was written)",
            dir.display()
        );
    }
    Ok(())
}

/// Sets the modification (and access) time of `path` to [`RELEASE_TIME`].
fn set_release_time(path: &Path) -> anyhow::Result<()> {
    let time = SystemTime::UNIX_EPOCH + RELEASE_TIME;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    file.set_times(std::fs::FileTimes::new().set_modified(time).set_accessed(time))
        .with_context(|| format!("cannot set the time of {}", path.display()))
}

/// Whether `path` holds exactly the bytes its name (`<hash>.png`) was made from.
fn is_whole(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    read_regular(path, MAX_FILE_BYTES)
        .is_ok_and(|bytes| report::image_file(&bytes) == format!("images/{name}"))
}

impl Dirs {
    /// Starts or resumes a run: refuses directories that are not new, empty or the same kind
    /// of directory of a run (by their markers), directories inside each other or inside (or
    /// holding) any of `protected` (the reference set's folder, the bundle); creates both,
    /// removes temporaries a killed run left, and records `run` in both `run.json`s (and
    /// `source` in the audit directory), or checks that the run already there is the same.
    pub fn claim(
        &self,
        run: &RunInfo,
        source: Option<&SourceInfo>,
        protected: &[(&str, &Path)],
    ) -> anyhow::Result<()> {
        check_apart("the release directory", &self.release, "the audit directory", &self.audit)
            .context(
                "the audit log maps synthetic images to real ones and must never be released",
            )?;
        for (what, path) in protected {
            check_apart("the release directory", &self.release, what, path)?;
            check_apart("the audit directory", &self.audit, what, path)?;
        }
        check_claimable(&self.release, RELEASE_MARKER, "the release directory")?;
        check_claimable(&self.audit, AUDIT_MARKER, "the audit directory")?;
        self.check_own_folders()?;
        for dir in [&self.release, &self.audit.join("records"), &self.audit.join("staged")] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        for (dir, marker) in [(&self.release, RELEASE_MARKER), (&self.audit, AUDIT_MARKER)] {
            let path = dir.join(marker);
            if !path.exists() {
                write_atomically(&path, b"unpersonal\n")?;
            }
        }
        // Once more with both created: a symbolic link made meanwhile cannot join them.
        check_apart("the release directory", &self.release, "the audit directory", &self.audit)?;
        for dir in [
            &self.release,
            &self.release.join("images"),
            &self.audit,
            &self.audit.join("staged"),
            &self.audit.join("records"),
            &self.audit.join("shards"),
        ] {
            let Ok(listing) = std::fs::read_dir(dir) else { continue };
            for entry in listing {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(PARTIAL) {
                    std::fs::remove_file(entry.path())
                        .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                }
            }
        }
        for dir in [&self.release, &self.audit] {
            check_or_write(
                dir,
                "run.json",
                run,
                "a run with other settings, bundle, reference set, gate or backend",
            )?;
        }
        if let Some(source) = source {
            check_or_write(
                &self.audit,
                "source.json",
                source,
                "a run drawn from another reference set",
            )?;
        }
        Ok(())
    }

    /// Fails when a folder this tool writes or removes files in (`images/`, `staged/`,
    /// `records/`, `shards/`) is a symbolic link or not a directory: files are removed there,
    /// and never through a link into someone else's folder.
    fn check_own_folders(&self) -> anyhow::Result<()> {
        for dir in [
            self.release.join("images"),
            self.audit.join("staged"),
            self.audit.join("records"),
            self.audit.join("shards"),
        ] {
            if let Ok(metadata) = std::fs::symlink_metadata(&dir)
                && !metadata.is_dir()
            {
                bail!(
                    "{} is a symbolic link or not a directory: this tool writes and removes files there only in a folder of its own (nothing was written)",
                    dir.display()
                );
            }
        }
        Ok(())
    }

    /// Fails unless both directories are marked as this tool's (for `merge`, which writes into
    /// directories a run made).
    pub fn check_marked(&self) -> anyhow::Result<()> {
        for (dir, marker) in [(&self.release, RELEASE_MARKER), (&self.audit, AUDIT_MARKER)] {
            if !dir.join(marker).is_file() {
                bail!("{} holds no {marker}: it is not a directory of a run", dir.display());
            }
        }
        Ok(())
    }

    /// The run recorded in the release directory.
    pub fn run(&self) -> anyhow::Result<RunInfo> {
        let path = self.release.join("run.json");
        let bytes = read_regular(&path, MAX_FILE_BYTES)
            .with_context(|| format!("cannot read {}: no run there", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a run description", path.display()))
    }

    /// Stages an image that passed the gate (PNG bytes) in the audit directory under a name
    /// made from its hash, and returns its name in the release, `images/<hash>.png`.
    pub fn write_image(&self, png: &[u8]) -> anyhow::Result<String> {
        let file = report::image_file(png);
        write_atomically(&self.staged(&file), png)?;
        Ok(file)
    }

    /// Where the image `file` (`images/<hash>.png`) is staged.
    fn staged(&self, file: &str) -> PathBuf {
        self.audit.join("staged").join(file.trim_start_matches("images/"))
    }

    /// Records a finished batch of reference images.
    pub fn write_records(&self, records: &[Record]) -> anyhow::Result<()> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else { return Ok(()) };
        let mut text = String::new();
        for r in records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        let path = self
            .audit
            .join("records")
            .join(format!("{:06}-{:06}.jsonl", first.outcome.reference, last.outcome.reference));
        Ok(write_atomically(&path, text.as_bytes())?)
    }

    /// Every record written so far, by reference.
    fn records(&self) -> anyhow::Result<BTreeMap<usize, Record>> {
        let dir = self.audit.join("records");
        let mut all = BTreeMap::new();
        let listing =
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in listing {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            let bytes = read_regular(&path, MAX_FILE_BYTES)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let text = String::from_utf8_lossy(&bytes);
            for (n, line) in text.lines().enumerate() {
                let record: Record = serde_json::from_str(line).with_context(|| {
                    format!("{} line {}: not an audit record", path.display(), n + 1)
                })?;
                all.entry(record.outcome.reference).or_insert(record);
            }
        }
        Ok(all)
    }

    /// The records of reference images whose every image is whole, staged or released (its
    /// bytes are those its name was made from): an image lost, or replaced in the release by
    /// other bytes, makes its reference be drawn again, to the same bytes.
    pub fn complete_records(&self) -> anyhow::Result<BTreeMap<usize, Record>> {
        let mut records = self.records()?;
        records.retain(|_, record| {
            record
                .files
                .iter()
                .all(|file| is_whole(&self.staged(file)) || is_whole(&self.release.join(file)))
        });
        Ok(records)
    }

    /// The record file of a finished shard.
    pub fn shard_file(&self, shard: Shard) -> PathBuf {
        self.audit.join("shards").join(format!("{}-of-{}.json", shard.index, shard.count))
    }

    /// Finishes a run whose every source image has a record: writes the audit log, then
    /// copies the staged images into the release in name order, removes release images no
    /// record names (left by a run killed before its record), writes `filelist.txt` and
    /// `report.json` (aggregates only), gives every released file [`RELEASE_TIME`] and removes
    /// the staged copies. Returns the report.
    pub fn finish(&self, run: &RunInfo, sources: usize) -> anyhow::Result<Value> {
        self.check_marked()?;
        self.check_own_folders()?;
        let records = self.complete_records()?;
        let missing = (0..sources).filter(|r| !records.contains_key(r)).count();
        if missing > 0 {
            bail!(
                "{missing} of {sources} source images have no record in {} whose images are all whole: the run is incomplete (run it again to finish)",
                self.audit.join("records").display(),
            );
        }
        // The mapping first: no image is released before its audit record is in the log.
        let mut log = String::new();
        for record in records.values() {
            log.push_str(&serde_json::to_string(record)?);
            log.push('\n');
        }
        write_atomically(&self.audit.join("audit-log.jsonl"), log.as_bytes())?;

        let mut filelist: BTreeMap<&str, &[f32]> = BTreeMap::new();
        for record in records.values() {
            for file in &record.files {
                filelist.entry(file).or_insert(&record.labels);
            }
        }
        // In name order (a hash of the bytes): the order of creation says nothing of the
        // reference order. A released image already whole stays as it is.
        for file in filelist.keys() {
            let released = self.release.join(file);
            if !is_whole(&released) {
                let staged = self.staged(file);
                let bytes = read_regular(&staged, MAX_FILE_BYTES).with_context(|| {
                    format!("cannot read the staged image {}", staged.display())
                })?;
                write_atomically(&released, &bytes)?;
            }
            set_release_time(&released)?;
        }
        let named: BTreeSet<String> = filelist.keys().map(|f| f.to_string()).collect();
        let images = self.release.join("images");
        std::fs::create_dir_all(&images)
            .with_context(|| format!("cannot create {}", images.display()))?;
        for entry in std::fs::read_dir(&images)
            .with_context(|| format!("cannot read {}", images.display()))?
        {
            let entry = entry?;
            let file = format!("images/{}", entry.file_name().to_string_lossy());
            if !named.contains(&file) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
        write_atomically(
            &self.release.join("filelist.txt"),
            report::filelist_text(&filelist).as_bytes(),
        )?;
        let report = report(run, records.values(), filelist.len());
        write_atomically(&self.release.join("report.json"), &json_bytes(&report)?)?;
        for name in ["filelist.txt", "report.json", "run.json", RELEASE_MARKER, "images", "."] {
            set_release_time(&self.release.join(name))?;
        }
        let staged = self.audit.join("staged");
        if staged.is_dir() {
            std::fs::remove_dir_all(&staged)
                .with_context(|| format!("cannot remove {}", staged.display()))?;
        }
        Ok(report)
    }
}

/// Writes `value` as `dir/name`, or checks that the one there is the same.
fn check_or_write<T>(dir: &Path, name: &str, value: &T, other: &str) -> anyhow::Result<()>
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq,
{
    let path = dir.join(name);
    match read_regular(&path, MAX_FILE_BYTES) {
        Ok(bytes) => {
            let existing: T = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not this tool's {name}", path.display()))?;
            if &existing != value {
                bail!(
                    "{} holds {other}; choose another --out (or delete it)\n  there: {}\n  now:   {}",
                    dir.display(),
                    serde_json::to_string(&existing)?,
                    serde_json::to_string(value)?
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(write_atomically(&path, &json_bytes(value)?)?)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
