//! The two directories of `generate` and `merge`. The release directory holds only what may
//! be shared:
//!
//! ```text
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
//! run.json                the same run
//! records/<a>-<b>.jsonl   one line per reference image of a finished batch (a..b)
//! shards/<i>-of-<n>.json  the shards of a sharded run that finished
//! audit-log.jsonl         every record in reference order, written when the run finishes
//! ```
//!
//! Every file is written to a temporary sibling and renamed, so a killed run leaves only
//! complete files (and temporaries that the next run removes); images are written before
//! the record that names them, and a reference counts as done only once its record exists.
//! Nothing holds a time, so a resumed or sharded run produces the same bytes as an
//! uninterrupted one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use unpersonal_runtime::atomic::PARTIAL;
pub use unpersonal_runtime::atomic::write_atomically;
use unpersonal_runtime::generate::Shard;
use unpersonal_runtime::report::{self, report};
pub use unpersonal_runtime::report::{GateRule, Record, RunInfo};

/// The release directory and the audit directory of a run.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// What may be shared.
    pub release: PathBuf,
    /// The mapping to real images: personal data.
    pub audit: PathBuf,
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

impl Dirs {
    /// Starts or resumes a run: creates both directories (refusing one inside the other),
    /// removes temporaries a killed run left, and records `run` in both `run.json`s, or
    /// checks that the run already there is the same.
    pub fn claim(&self, run: &RunInfo) -> anyhow::Result<()> {
        // Checked before anything is created (as written) and after (symbolic links resolved).
        self.check_apart(absolute(&self.release)?, absolute(&self.audit)?)?;
        for dir in [self.release.join("images"), self.audit.join("records")] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        self.check_apart(canonical(&self.release)?, canonical(&self.audit)?)?;
        for dir in [
            &self.release,
            &self.release.join("images"),
            &self.audit,
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
            check_or_write_run(dir, run)?;
        }
        Ok(())
    }

    fn check_apart(&self, release: PathBuf, audit: PathBuf) -> anyhow::Result<()> {
        if release.starts_with(&audit) || audit.starts_with(&release) {
            bail!(
                "the audit directory {} and the release directory {} must not contain each other: \
                 the audit log maps synthetic images to real ones and must never be released",
                self.audit.display(),
                self.release.display()
            );
        }
        Ok(())
    }

    /// The run recorded in the release directory.
    pub fn run(&self) -> anyhow::Result<RunInfo> {
        let path = self.release.join("run.json");
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read {}: no run there", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a run description", path.display()))
    }

    /// Writes a released image (PNG bytes) under a name made from its hash and returns the
    /// name, relative to the release directory.
    pub fn write_image(&self, png: &[u8]) -> anyhow::Result<String> {
        let file = report::image_file(png);
        write_atomically(&self.release.join(&file), png)?;
        Ok(file)
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
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let record: Record = serde_json::from_str(line).with_context(|| {
                    format!("{} line {}: not an audit record", path.display(), n + 1)
                })?;
                all.entry(record.outcome.reference).or_insert(record);
            }
        }
        Ok(all)
    }

    /// The records of reference images whose every released image is in the release
    /// directory (a release directory removed or emptied under a run loses images its records
    /// name; those references are drawn again, to the same bytes).
    pub fn complete_records(&self) -> anyhow::Result<BTreeMap<usize, Record>> {
        let mut records = self.records()?;
        records
            .retain(|_, record| record.files.iter().all(|file| self.release.join(file).is_file()));
        Ok(records)
    }

    /// The record file of a finished shard.
    pub fn shard_file(&self, shard: Shard) -> PathBuf {
        self.audit.join("shards").join(format!("{}-of-{}.json", shard.index, shard.count))
    }

    /// Writes `filelist.txt`, `report.json` (aggregates only) and the audit log for a run
    /// whose every source image has a record; removes images no record names (left by a
    /// run killed between an image and its record). Returns the report.
    pub fn finish(&self, run: &RunInfo, sources: usize) -> anyhow::Result<Value> {
        let records = self.complete_records()?;
        let missing = (0..sources).filter(|r| !records.contains_key(r)).count();
        if missing > 0 {
            bail!(
                "{missing} of {sources} source images have no record in {} whose images are all in {}: the run is incomplete (run it again to finish)",
                self.audit.join("records").display(),
                self.release.display()
            );
        }
        let mut filelist: BTreeMap<&str, &[f32]> = BTreeMap::new();
        for record in records.values() {
            for file in &record.files {
                filelist.entry(file).or_insert(&record.labels);
            }
        }
        let named: BTreeSet<String> = filelist.keys().map(|f| f.to_string()).collect();
        let images = self.release.join("images");
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
        let mut log = String::new();
        for record in records.values() {
            log.push_str(&serde_json::to_string(record)?);
            log.push('\n');
        }
        write_atomically(&self.audit.join("audit-log.jsonl"), log.as_bytes())?;
        Ok(report)
    }
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

fn canonical(dir: &Path) -> anyhow::Result<PathBuf> {
    dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))
}

fn check_or_write_run(dir: &Path, run: &RunInfo) -> anyhow::Result<()> {
    let path = dir.join("run.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let existing: RunInfo = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a run description", path.display()))?;
            if &existing != run {
                bail!(
                    "{} holds a run with other settings, bundle, reference set, gate or backend; \
                     choose another --out (or delete it)\n  there: {}\n  now:   {}",
                    dir.display(),
                    serde_json::to_string(&existing)?,
                    serde_json::to_string(run)?
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(write_atomically(&path, &json_bytes(run)?)?)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
