//! `unpersonal merge`: finishes a run whose shards (`generate --shard i/n`) wrote into one
//! release directory and one audit directory.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use unpersonal_runtime::generate::Shard;

use super::Output;
use super::generate::summary;
use super::outdir::{self, Dirs};

/// Arguments of `unpersonal merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The release directory the shards wrote into.
    #[arg(long, value_name = "DIR", default_value = "unpersonal-out")]
    pub out: PathBuf,
    /// The audit directory the shards wrote into (default: OUT-audit beside OUT).
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
}

/// Checks that every shard of the run finished, then writes the filelist, the report and the
/// audit log a single run would have written.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let dirs = Dirs {
        release: args.out.clone(),
        audit: args.audit.clone().unwrap_or_else(|| outdir::default_audit(&args.out)),
    };
    dirs.check_marked()?;
    let run = dirs.run()?;
    dirs.claim(&run, None, &[])?;
    let shards_dir = dirs.audit.join("shards");
    let listing = std::fs::read_dir(&shards_dir).with_context(|| {
        format!("{} holds no finished shard (no {})", dirs.audit.display(), shards_dir.display())
    })?;
    let mut count = None;
    let mut found = std::collections::BTreeSet::new();
    for entry in listing {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a shard record", path.display()))?;
        let shard: Shard = serde_json::from_value(value["shard"].clone())
            .with_context(|| format!("{}: no shard", path.display()))?;
        if value["run"] != serde_json::to_value(&run)? {
            bail!(
                "{} belongs to another run than {}",
                path.display(),
                dirs.release.join("run.json").display()
            );
        }
        if *count.get_or_insert(shard.count) != shard.count {
            bail!(
                "{} is a shard of {} but others are of {}",
                path.display(),
                shard.count,
                count.unwrap_or(0)
            );
        }
        found.insert(shard.index);
    }
    let Some(count) = count else { bail!("no finished shards in {}", shards_dir.display()) };
    let missing: Vec<String> =
        (0..count).filter(|i| !found.contains(i)).map(|i| format!("{i}/{count}")).collect();
    if !missing.is_empty() {
        bail!(
            "shards {} are missing from {}: run them, then merge again",
            missing.join(", "),
            shards_dir.display()
        );
    }
    let sources = run.reference["sources"]
        .as_u64()
        .context("run.json names no number of source images")? as usize;
    let report = dirs.finish(&run, sources)?;
    out.json(&json!({ "out": args.out, "audit": dirs.audit, "shards": count, "report": report }))?;
    out.text(&format!("merged {count} shards\n{}", summary(&report, &dirs)));
    Ok(())
}
