//! `unpersonal merge`: joins the outputs of `generate --shard i/n` runs into one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;

use super::Output;
use super::outdir::{self, Manifest};

/// Arguments of `unpersonal merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directories of the shard runs (one shared directory, or one per shard).
    #[arg(value_name = "SHARD_DIR", required = true)]
    pub shards: Vec<PathBuf>,
    /// The merged output directory (may be one of the shard directories).
    #[arg(long, value_name = "DIR", default_value = "unpersonal-out")]
    pub out: PathBuf,
}

/// Checks that every shard of one run is present, gathers their images into `--out` and
/// writes the filelist and report a single run would have written.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let mut found: BTreeMap<usize, (Manifest, PathBuf)> = BTreeMap::new();
    for dir in &args.shards {
        for (manifest, path) in manifests(dir)? {
            if let Some((first, _)) = found.values().next()
                && (manifest.run != first.run || manifest.shard.count != first.shard.count)
            {
                bail!("{} belongs to another run or shard count than the other shards", path.display());
            }
            match found.get(&manifest.shard.index) {
                Some((other, other_path)) if other != &manifest => {
                    bail!("{} and {} both claim shard {} with different contents", path.display(), other_path.display(), manifest.shard)
                }
                _ => {
                    found.insert(manifest.shard.index, (manifest, dir.clone()));
                }
            }
        }
    }
    let Some((first, _)) = found.values().next() else {
        bail!("no shard manifests (shards/<i>-of-<n>.json) in {}", display_all(&args.shards));
    };
    let (run, count) = (first.run.clone(), first.shard.count);
    let missing: Vec<String> = (0..count).filter(|i| !found.contains_key(i)).map(|i| format!("{i}/{count}")).collect();
    if !missing.is_empty() {
        bail!("shards {} are missing from {}: run them, then merge again", missing.join(", "), display_all(&args.shards));
    }

    outdir::claim(&args.out, &run)?;
    let mut entries = Vec::new();
    for (manifest, dir) in found.into_values() {
        for entry in &manifest.entries {
            gather(&dir.join(&entry.file), &args.out.join(&entry.file))?;
        }
        outdir::write_atomically(&outdir::manifest_file(&args.out, manifest.shard), &outdir::json_bytes(&manifest)?)?;
        entries.extend(manifest.entries);
    }
    let images = entries.len();
    let report = outdir::finish(&args.out, &run, entries)?;
    out.json(&json!({ "out": args.out, "shards": count, "report": report }))?;
    out.text(&format!(
        "merged {count} shards: {images} images → {} (images/, filelist.txt, report.json)\n\
         WARNING: privacy gate NOT applied: these are unfiltered candidates, not a release.",
        args.out.display()
    ));
    Ok(())
}

/// The shard manifests in `dir/shards/`.
fn manifests(dir: &Path) -> anyhow::Result<Vec<(Manifest, PathBuf)>> {
    let shards = dir.join("shards");
    let listing = std::fs::read_dir(&shards).with_context(|| format!("{} holds no shard output (no {})", dir.display(), shards.display()))?;
    let mut all = Vec::new();
    for entry in listing {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let manifest: Manifest = serde_json::from_slice(&bytes).with_context(|| format!("{} is not a shard manifest", path.display()))?;
            all.push((manifest, path));
        }
    }
    Ok(all)
}

/// Copies a shard's image into the merged directory, unless it is already there with the
/// same bytes.
fn gather(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}: the shard is incomplete", from.display()))?;
    match std::fs::read(to) {
        Ok(existing) if existing == bytes => Ok(()),
        Ok(_) => bail!("{} already exists with other content than {}", to.display(), from.display()),
        Err(_) => Ok(outdir::write_atomically(to, &bytes)?),
    }
}

fn display_all(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}
