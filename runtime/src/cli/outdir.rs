//! The output directory of `generate` and `merge`:
//!
//! ```text
//! images/<reference>-<candidate>.png   one synthetic image each, written atomically
//! run.json                             what decides every pixel; a re-run must match it
//! shards/<i>-of-<n>.json               a shard's images and labels (sharded runs only)
//! filelist.txt                         every image with its labels, in the reference format
//! report.json                          the run, the counts and the privacy status
//! ```
//!
//! Every file is written to a temporary sibling and renamed, so a killed run leaves only
//! complete files (and temporaries that the next run removes). Nothing holds a time or a
//! path, so a resumed or sharded run produces the same bytes as an uninterrupted one.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
pub use unpersonal_runtime::atomic::write_atomically;
use unpersonal_runtime::atomic::PARTIAL;
use unpersonal_runtime::generate::{SampleId, Settings, Shard};

/// What decides the images of a run, besides the code: stored as `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The bundle's name and the SHA-256 of each model used, by role.
    pub bundle: Value,
    /// The reference set's name and size.
    pub reference: Value,
    /// The backend (`tract`, `ort`); backends agree to about 1e-3, not bit for bit.
    pub backend: String,
    /// Sampler settings.
    pub settings: Settings,
}

/// One generated image: which sample it is, its file and the labels it carries (those of
/// its reference image).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The sample.
    #[serde(flatten)]
    pub id: SampleId,
    /// Path relative to the output directory.
    pub file: String,
    /// Labels (0 or 1 each).
    pub labels: Vec<f32>,
}

/// A shard's record: the run, the shard and its entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The run (identical across the shards of one run).
    pub run: RunInfo,
    /// Which shard.
    pub shard: Shard,
    /// Its images, in sample order.
    pub entries: Vec<Entry>,
}

/// The relative path of a sample's image.
pub fn image_file(id: SampleId) -> String {
    format!("images/{:06}-{:03}.png", id.reference, id.candidate)
}

/// The manifest path of `shard` in `out`.
pub fn manifest_file(out: &Path, shard: Shard) -> PathBuf {
    out.join("shards").join(format!("{}-of-{}.json", shard.index, shard.count))
}

/// Pretty JSON with a final newline.
pub fn json_bytes(value: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text.into_bytes())
}

/// Starts or resumes a run in `out`: creates the directory, removes temporaries a killed run
/// left, and records `run` in `run.json`, or checks that the run already there is the same.
pub fn claim(out: &Path, run: &RunInfo) -> anyhow::Result<()> {
    std::fs::create_dir_all(out.join("images")).with_context(|| format!("cannot create {}", out.join("images").display()))?;
    for dir in [out.to_path_buf(), out.join("images"), out.join("shards")] {
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        for entry in listing {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(PARTIAL) {
                std::fs::remove_file(entry.path()).with_context(|| format!("cannot remove {}", entry.path().display()))?;
            }
        }
    }
    let path = out.join("run.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let existing: RunInfo = serde_json::from_slice(&bytes).with_context(|| format!("{} is not a run description", path.display()))?;
            if &existing != run {
                bail!(
                    "{} holds a run with other settings, bundle, reference set or backend; \
                     choose another --out (or delete it)\n  there: {}\n  now:   {}",
                    out.display(),
                    serde_json::to_string(&existing)?,
                    serde_json::to_string(run)?
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(write_atomically(&path, &json_bytes(run)?)?),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What `generate` says about the privacy gate until the gate lands.
pub const UNFILTERED: &str = "NOT APPLIED: these are unfiltered candidates. No re-identification check ran, so \
     nothing here is known to be unlinkable to a real person; do not release them as anonymous data.";

/// Writes `filelist.txt` and `report.json` for the complete set of `entries` (any order) and
/// returns the report.
pub fn finish(out: &Path, run: &RunInfo, mut entries: Vec<Entry>) -> anyhow::Result<Value> {
    entries.sort_by_key(|e| e.id);
    let mut filelist = String::new();
    for e in &entries {
        filelist.push_str(&e.file);
        for l in &e.labels {
            filelist.push_str(if *l >= 0.5 { " 1" } else { " 0" });
        }
        filelist.push('\n');
    }
    write_atomically(&out.join("filelist.txt"), filelist.as_bytes())?;
    let references = entries.iter().map(|e| e.id.reference).collect::<std::collections::BTreeSet<_>>().len();
    let report = json!({
        "privacy_gate": { "applied": false, "status": UNFILTERED },
        "images": entries.len(),
        "reference_images_used": references,
        "filelist": "filelist.txt",
        "run": run,
    });
    write_atomically(&out.join("report.json"), &json_bytes(&report)?)?;
    Ok(report)
}

/// PNG bytes of one image (`pixels` interleaved, `channels` 1 or 3).
pub fn encode_png(pixels: &[u8], channels: usize, height: usize, width: usize) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder;
    let color = match channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        c => bail!("cannot write {c}-channel images as PNG (1 or 3 channels)"),
    };
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes).write_image(pixels, width as u32, height as u32, color)?;
    Ok(bytes)
}
