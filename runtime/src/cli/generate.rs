//! `unpersonal generate`: synthetic images pseudo-conditioned on each reference image, released
//! only when the privacy gate passes them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use unpersonal_runtime::bundle::limits::{self, count_problem};
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::data::{Images, Split};
use unpersonal_runtime::generate::{Generator, Shard, interleaved, shard_references};
use unpersonal_runtime::pixels::encode_png;
use unpersonal_runtime::release::{Gate, Indexing, References, draw_unfiltered, release};

use super::outdir::{self, Dirs, GateRule, Record, RunInfo, SourceInfo};
use super::{BackendArgs, DeviceKind, Output, SamplerArgs, reference};

/// Arguments of `unpersonal generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle directory (bundle.json and the ONNX files it names).
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist", value_parser = super::bundle_dir)]
    pub bundle: PathBuf,
    /// The reference images each synthetic image is pseudo-conditioned on, and that no
    /// released image may re-identify: a filelist (`relative/path.png l0 l1 …`) or a directory
    /// of IDX files (its training split). Default: the bundle's shipped sample,
    /// DIR/reference/filelist.txt.
    #[arg(long, value_name = "DATA")]
    pub reference: Option<PathBuf>,
    /// The release directory (created; an existing run there is resumed): images, filelist,
    /// aggregate report. Only images that passed the gate are ever written here.
    #[arg(long, value_name = "DIR", default_value = "unpersonal-out")]
    pub out: PathBuf,
    /// The audit directory: which real image each released image was drawn for, with its
    /// scores. It is personal data; it must lie outside --out. Default: OUT-audit beside OUT.
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
    /// Release the two best passing candidates of a reference image instead of one.
    #[arg(long)]
    pub keep_second: bool,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Seed of the initial noise; each candidate's noise depends only on the seed and the
    /// candidate's number, so results do not depend on --batch, --jobs or --shard.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Handle only shard i of n (0-based) of the reference images; n such runs into the same
    /// --out and --audit, then `unpersonal merge`, give exactly the single-run result.
    #[arg(long, value_name = "i/n")]
    pub shard: Option<Shard>,
    /// Draw only for the first N reference images (the gate still checks every candidate
    /// against all of them): a release standing for a subset of the reference set. A warning
    /// says when those N carry fewer of the set's labels than they could (a list sorted by
    /// class): shuffle such a list first.
    #[arg(long, value_name = "N")]
    pub sources: Option<usize>,
    /// The reference set's name in the release's run.json and report.json (default: none; the
    /// path typed as --reference can name a patient or a ward, so it stays in the audit
    /// directory).
    #[arg(long, value_name = "NAME")]
    pub reference_name: Option<String>,
    /// Reference images handled together in one batch of model calls (memory vs. speed only;
    /// default 16 on the CPU, 128 on CUDA, whose throughput grows up to about 500 images per
    /// call).
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// RESEARCH ONLY: skip the privacy gate and write every candidate of the first round
    /// (the same images as the gated run's round-0 candidates: same seed, same noise numbers).
    /// The output is not anonymous and must not be released.
    #[arg(long)]
    pub unfiltered_research_only: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Generates (or resumes) the run and writes the release and the audit log.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let loaded = BundleDir::load(&args.bundle)
        .with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let bundle = &loaded.bundle;
    // An unfiltered run draws round 0 of the gated run's numbering (candidate j of reference r
    // is noise stream r·candidates·rounds + j), so its images are the gated run's first-round
    // candidates.
    let settings = args.sampler.settings(&bundle.sampler, args.seed)?;
    args.backend.validate()?;
    if let Some(batch) = args.batch
        && let Some(problem) = count_problem(batch, &limits::BATCH)
    {
        anyhow::bail!("--batch {problem}");
    }
    let reference_path = reference::resolve(args.reference.as_deref(), &loaded)?;
    let reference = reference::open_split(&reference_path, Split::Train, &loaded)?;
    let folders = reference.folders(&reference_path);
    let gated = !args.unfiltered_research_only;
    let sources = args.sources.unwrap_or(reference.len());
    anyhow::ensure!(
        sources >= 1,
        "--sources must be at least 1: it is the number of reference images to draw for, from the first (the reference set {} holds {})",
        reference.name(),
        reference.len()
    );
    anyhow::ensure!(
        sources <= reference.len(),
        "--sources {sources}: the reference set {} holds only {} images",
        reference.name(),
        reference.len()
    );
    let keep = if args.keep_second { 2 } else { 1 };

    let backend_name = args.backend.single_backend()?.name();
    let batch =
        args.batch.unwrap_or(if args.backend.device == DeviceKind::Cuda { 128 } else { 16 });
    let shard = args.shard.unwrap_or(Shard::ALL);
    let mine = shard_references(sources, shard);
    // Never more workers than chunks of this shard's reference images: a short run gives
    // its one or few workers every core.
    let planned_chunks = mine.len().div_ceil(batch.max(1));
    let jobs = args.backend.jobs_for(planned_chunks);
    // One generator (and gate) per worker: models are loaded per thread; results do not
    // depend on which worker handles which batch.
    let make_worker = || -> anyhow::Result<Worker> {
        let backend = args.backend.backend_for(planned_chunks)?;
        let gate = if gated { Some(Gate::load(&loaded, backend.as_ref())?) } else { None };
        Ok(Worker {
            generator: Generator::load(&loaded, backend.as_ref(), settings.clone())?,
            gate,
        })
    };
    let mut first = make_worker()?;
    let mut roles = settings.solver.roles().to_vec();
    roles.push(Role::Features);
    if gated {
        roles.extend([Role::Classifier, Role::ReidEmbed, Role::ReidHead]);
    }
    let used: BTreeMap<&str, &str> = roles
        .into_iter()
        .filter_map(|r| bundle.models.get(&r).map(|m| (r.as_str(), m.sha256.as_str())))
        .collect();
    // The gate compares every candidate with the whole reference set, not only its shard. The
    // set is read once, a chunk at a time, for the index (before the directories are claimed,
    // so that bad reference data leaves none behind); the sources' images are read again when
    // their turn comes.
    let (reference, index) = match &mut first.gate {
        Some(gate) => {
            if !out.quiet && !out.json {
                eprintln!("indexing {} reference images for the gate …", reference.len());
            }
            let mut indexing = Indexing::default();
            let images = reference.scan(&loaded, |pixels| Ok(indexing.add(gate, pixels)?))?;
            let index = indexing.finish(gate)?.with_identities(images.identities());
            (images, Some(index))
        }
        None => (reference.scan(&loaded, |_| Ok(()))?, None),
    };
    if !out.quiet
        && let Some(warning) = coverage_warning(reference.as_ref(), sources)
    {
        eprintln!("WARNING: {warning}");
    }
    let run = RunInfo {
        bundle: json!({ "name": bundle.name, "models": used }),
        reference: json!({ "name": args.reference_name, "images": reference.len(), "sources": sources }),
        backend: backend_name.to_string(),
        settings: settings.clone(),
        gate: first.gate.as_ref().map(|g| GateRule::new(g, keep, bundle)),
    };
    let dirs = Dirs {
        release: args.out.clone(),
        audit: args.audit.clone().unwrap_or_else(|| outdir::default_audit(&args.out)),
    };
    let source = SourceInfo {
        reference: reference_path.display().to_string(),
        fingerprint: reference.fingerprint(),
    };
    let mut protected: Vec<(&str, &std::path::Path)> =
        folders.iter().map(|f| ("the reference set's folder", f.as_path())).collect();
    protected.push(("the bundle", &args.bundle));
    dirs.claim(&run, Some(&source), &protected)?;
    if !gated && !out.quiet {
        eprintln!(
            "WARNING: --unfiltered-research-only: the privacy gate is OFF; every candidate is written unfiltered. Do not release them."
        );
    }

    let done = dirs.complete_records()?;
    let pending: Vec<usize> = mine.iter().copied().filter(|r| !done.contains_key(r)).collect();
    let bar = out.progress(mine.len(), mine.len() - pending.len(), "reference images");
    let chunks: Vec<&[usize]> = pending.chunks(batch.max(1)).collect();
    let jobs = jobs.min(chunks.len()).max(1);
    let failed = AtomicBool::new(false);
    let work = |worker: usize, mut w: Worker| -> anyhow::Result<()> {
        for chunk in chunks.iter().skip(worker).step_by(jobs) {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let result = recheck(&loaded).and_then(|()| {
                w.write_chunk(reference.as_ref(), index.as_ref(), chunk, keep, &dirs)
            });
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
                return result;
            }
            bar.inc(chunk.len() as u64);
        }
        Ok(())
    };
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let others: Vec<_> = (1..jobs)
            .map(|worker| scope.spawn(move || make_worker().and_then(|w| work(worker, w))))
            .collect();
        let mine = work(0, first);
        for handle in others {
            handle.join().map_err(|_| anyhow::anyhow!("a generation worker panicked"))??;
        }
        mine
    })?;
    bar.finish_and_clear();

    let seconds = started.elapsed().as_secs_f64();
    if shard.count > 1 {
        let path = dirs.shard_file(shard);
        outdir::write_atomically(
            &path,
            &outdir::json_bytes(
                &json!({ "run": run, "shard": shard, "reference_images": mine.len() }),
            )?,
        )?;
        out.json(&json!({ "shard": shard.to_string(), "reference_images": mine.len(), "handled_now": pending.len(), "seconds": seconds }))?;
        out.text(&format!(
            "shard {shard}: {} reference images ({} now) in {seconds:.1} s; when every shard is done: unpersonal merge --out {}",
            mine.len(),
            pending.len(),
            args.out.display()
        ));
        return Ok(());
    }
    recheck(&loaded)?;
    let report = dirs.finish(&run, sources)?;
    out.json(&json!({ "out": args.out, "audit": dirs.audit, "handled_now": pending.len(), "seconds": seconds, "report": report }))?;
    out.text(&format!("done in {seconds:.1} s\n{}", summary(&report, &dirs)));
    Ok(())
}

/// A warning when the first `sources` images of `set` (those `--sources` draws for) carry fewer
/// of the set's labels than they could: a list sorted by class, cut short, makes a release that
/// does not represent the set.
fn coverage_warning(set: &dyn Images, sources: usize) -> Option<String> {
    let labels = set.label(0).len();
    let present =
        |n: usize| (0..labels).filter(|&l| (0..n).any(|i| set.label(i)[l] >= 0.5)).count();
    let (first, all) = (present(sources), present(set.len()));
    (first < all.min(sources)).then(|| {
        format!(
            "--sources {sources} draws for the first {sources} reference images, which carry {first} of the {all} labels present in the set (is the list sorted by class?): the release will not represent the set. Shuffle the reference list, or draw for all of it."
        )
    })
}

/// Share of reference images withheld above which the summary warns.
const WITHHELD_WARN: f64 = 0.10;

/// A warning when the gate withheld many reference images, or one label's images at least
/// twice as often as another's (with ten or more images each): the release then misses or
/// under-represents them.
fn withheld_warning(report: &serde_json::Value) -> Option<String> {
    let count = |key: &str| report[key].as_u64().unwrap_or(0);
    let overall =
        count("reference_images_withheld") as f64 / count("reference_images").max(1) as f64;
    let rates: Vec<(u64, f64)> = report["withheld_by_label"]
        .as_array()?
        .iter()
        .filter(|l| l["reference_images"].as_u64().unwrap_or(0) >= 10)
        .map(|l| (l["label"].as_u64().unwrap_or(0), l["rate"].as_f64().unwrap_or(0.0)))
        .collect();
    let lowest = rates.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
    let highest = rates.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
    let skewed = match (lowest, highest) {
        (Some(lo), Some(hi)) if hi.1 >= 0.05 && hi.1 >= 2.0 * lo.1 => Some((lo, hi)),
        _ => None,
    };
    if overall <= WITHHELD_WARN && skewed.is_none() {
        return None;
    }
    let mut text = format!("{:.1} % of the reference images released nothing", overall * 100.0);
    if let Some(((lo_label, lo), (hi_label, hi))) = skewed {
        text.push_str(&format!(
            ", label {hi_label} {:.1} % and label {lo_label} {:.1} %: the release under-represents some labels",
            hi * 100.0,
            lo * 100.0
        ));
    }
    text.push_str(
        " (report.json: withheld_by_label). The re-identification model may be weak for this data (see the bundle's reid.calibration): train it longer or on more images, or draw more candidates or rounds (--candidates, --rounds).",
    );
    Some(text)
}

/// The closing lines of `generate` and `merge`.
pub fn summary(report: &serde_json::Value, dirs: &Dirs) -> String {
    let count = |key: &str| report[key].as_u64().unwrap_or(0);
    let mut text = format!(
        "{} images released for {} of {} reference images → {} (images/, filelist.txt, report.json)\n\
         audit log (personal data, keep it inside the hospital): {}",
        count("released_images"),
        count("reference_images_released"),
        count("reference_images"),
        dirs.release.display(),
        dirs.audit.join("audit-log.jsonl").display()
    );
    if report["privacy_gate"]["applied"] == true {
        text.push_str(&format!(
            "\nprivacy gate applied: {} reference images released nothing (every candidate was too close to a real image)",
            count("reference_images_withheld")
        ));
        if let Some(warning) = withheld_warning(report) {
            text.push_str(&format!("\nWARNING: {warning}"));
        }
    } else {
        text.push_str("\nWARNING: privacy gate NOT applied (--unfiltered-research-only): these are unfiltered candidates, not a release.");
    }
    text
}

/// Fails when a model file on disk is no longer the one the run loaded and verified: nothing
/// more is released from a bundle that changed under the run.
fn recheck(loaded: &BundleDir) -> anyhow::Result<()> {
    loaded.recheck().context("a model file changed on disk during the run: nothing more is released (the run resumes, with the bundle it was started with, when that is restored)")
}

/// The models of one worker.
struct Worker {
    generator: Generator,
    gate: Option<Gate>,
}

impl Worker {
    /// Draws (and gates) the images of the reference images in `chunk`, writes the released
    /// ones into the release directory, then their records into the audit directory.
    fn write_chunk(
        &mut self,
        reference: &dyn Images,
        index: Option<&References>,
        chunk: &[usize],
        keep: usize,
        dirs: &Dirs,
    ) -> anyhow::Result<()> {
        let pixels = reference.read(chunk)?;
        let conditions = self.generator.conditions(pixels.view())?;
        let outcomes = match (&mut self.gate, index) {
            (Some(gate), Some(index)) => {
                release(&mut self.generator, gate, index, chunk, conditions.view(), keep)?
            }
            _ => draw_unfiltered(&mut self.generator, chunk, conditions.view())?,
        };
        let (_, c, h, w) = pixels.dim();
        let mut records = Vec::with_capacity(outcomes.len());
        for (outcome, images) in outcomes {
            let files = images
                .iter()
                .map(|image| {
                    dirs.write_image(
                        &encode_png(&interleaved(image.view()), c, h, w)
                            .map_err(anyhow::Error::msg)?,
                    )
                })
                .collect::<anyhow::Result<Vec<String>>>()?;
            records.push(Record {
                labels: reference.label(outcome.reference).to_vec(),
                outcome,
                files,
            });
        }
        dirs.write_records(&records)
    }
}

#[cfg(test)]
mod tests {
    use unpersonal_runtime::data::Dataset;

    use super::*;

    /// Images with the given single labels (of 3).
    fn set(labels: &[usize]) -> Dataset {
        Dataset {
            name: "sorted".into(),
            channels: 1,
            height: 1,
            width: 1,
            num_labels: 3,
            multi_label: false,
            images: vec![0; labels.len()],
            labels: labels
                .iter()
                .flat_map(|&l| (0..3).map(move |k| if k == l { 1.0 } else { 0.0 }))
                .collect(),
            allows_hflip: false,
            identities: vec![None; labels.len()],
            label_names: Vec::new(),
        }
    }

    #[test]
    fn a_gate_withholding_much_or_one_label_more_is_flagged() {
        let report = |withheld: u64, by_label: serde_json::Value| {
            serde_json::json!({ "reference_images": 100, "reference_images_withheld": withheld,
                                "withheld_by_label": by_label })
        };
        let label = |l: u64, n: u64, rate: f64| serde_json::json!({ "label": l, "reference_images": n, "rate": rate });
        let even = serde_json::json!([label(0, 50, 0.04), label(1, 50, 0.06)]);
        assert!(withheld_warning(&report(5, even.clone())).is_none());
        let many = withheld_warning(&report(20, even)).unwrap();
        assert!(many.starts_with("20.0 % of the reference images"), "{many}");
        let skewed = serde_json::json!([label(0, 50, 0.02), label(1, 50, 0.08), label(2, 3, 1.0)]);
        let text = withheld_warning(&report(5, skewed)).unwrap();
        assert!(text.contains("label 1 8.0 % and label 0 2.0 %"), "{text}");
    }

    #[test]
    fn a_cut_of_a_class_sorted_list_is_flagged() {
        let sorted = set(&[0, 0, 0, 1, 1, 1, 2, 2, 2]);
        let warning = coverage_warning(&sorted, 3).expect("three images of one class");
        assert!(warning.contains("carry 1 of the 3 labels"), "{warning}");
        assert!(coverage_warning(&sorted, 9).is_none(), "the whole set");
        let mixed = set(&[0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert!(coverage_warning(&mixed, 3).is_none(), "every label among the first three");
        assert!(coverage_warning(&mixed, 2).is_none(), "two images cannot carry three labels");
    }
}
