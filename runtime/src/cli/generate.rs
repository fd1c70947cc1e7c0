//! `unpersonal generate`: synthetic images pseudo-conditioned on each reference image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Array4};
use serde_json::json;
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::data::Dataset;
use unpersonal_runtime::generate::{Generator, SampleId, Settings, Shard, shard_samples};

use super::outdir::{self, Entry, Manifest, RunInfo};
use super::{BackendArgs, Output, reference};

/// Arguments of `unpersonal generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle directory (bundle.json and the ONNX files it names).
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist")]
    pub bundle: PathBuf,
    /// The reference images each synthetic image is pseudo-conditioned on: a filelist
    /// (`relative/path.png l0 l1 …`) or a directory of IDX files (its training split).
    /// Default: the bundle's shipped sample, DIR/reference/filelist.txt.
    #[arg(long, value_name = "DATA")]
    pub reference: Option<PathBuf>,
    /// Output directory (created; an existing run there is resumed).
    #[arg(long, value_name = "DIR", default_value = "unpersonal-out")]
    pub out: PathBuf,
    /// Synthetic images per reference image.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub per_image: usize,
    /// Heun steps (default: the bundle's sampler.steps).
    #[arg(long, value_name = "S")]
    pub steps: Option<usize>,
    /// Guidance weight w in D_u + w·(D_c − D_u) (default: the bundle's sampler.guidance).
    #[arg(long, value_name = "W")]
    pub guidance: Option<f32>,
    /// Seed of the initial noise; each image's noise depends only on the seed and the image's
    /// number, so results do not depend on --batch or --shard.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Handle only shard i of n (0-based) of the reference images; n such runs, with the same
    /// other flags, followed by `unpersonal merge`, give exactly the single-run result.
    #[arg(long, value_name = "i/n")]
    pub shard: Option<Shard>,
    /// Images sampled together in one batch of model calls (memory vs. speed only).
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Generates (or resumes) the run and writes images, filelist and report.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let loaded = BundleDir::load(&args.bundle).with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let bundle = &loaded.bundle;
    let reference = reference::load(args.reference.as_deref(), &loaded)?;
    let mut settings = Settings::from_bundle(&bundle.sampler, args.per_image, args.seed);
    settings.steps = args.steps.unwrap_or(settings.steps);
    settings.guidance = args.guidance.unwrap_or(settings.guidance);

    let backend_name = args.backend.backend()?.name();
    // One generator per worker: models are loaded per thread, results do not depend on which
    // worker draws which sample.
    let make_generator = || -> anyhow::Result<Generator> { Ok(Generator::load(&loaded, args.backend.backend()?.as_ref(), settings.clone())?) };
    let first = make_generator()?;

    let used: BTreeMap<&str, &str> = [Role::Denoiser, Role::Guide, Role::Features]
        .into_iter()
        .filter_map(|r| bundle.models.get(&r).map(|m| (r.as_str(), m.sha256.as_str())))
        .collect();
    let run = RunInfo {
        bundle: json!({ "name": bundle.name, "models": used }),
        reference: json!({ "name": reference.name, "images": reference.len() }),
        backend: backend_name.to_string(),
        settings: settings.clone(),
    };
    outdir::claim(&args.out, &run)?;

    let shard = args.shard.unwrap_or(Shard::ALL);
    let samples = shard_samples(reference.len(), args.per_image, shard);
    let pending: Vec<SampleId> = samples.iter().copied().filter(|&id| !args.out.join(outdir::image_file(id)).is_file()).collect();
    if !out.quiet {
        eprintln!("WARNING: the privacy gate is not applied yet: every candidate is written unfiltered (see report.json).");
    }
    let bar = progress_bar(out, samples.len(), samples.len() - pending.len());
    let chunks: Vec<&[SampleId]> = pending.chunks(args.batch.max(1)).collect();
    let jobs = args.backend.jobs().min(chunks.len()).max(1);
    let failed = AtomicBool::new(false);
    let work = |worker: usize, mut generator: Generator| -> anyhow::Result<()> {
        for chunk in chunks.iter().skip(worker).step_by(jobs) {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let result = write_chunk(&mut generator, &reference, chunk, &args.out, &bar);
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
                return result;
            }
        }
        Ok(())
    };
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let others: Vec<_> = (1..jobs)
            .map(|worker| scope.spawn(move || make_generator().and_then(|g| work(worker, g))))
            .collect();
        let mine = work(0, first);
        for handle in others {
            handle.join().map_err(|_| anyhow::anyhow!("a generation worker panicked"))??;
        }
        mine
    })?;
    bar.finish_and_clear();

    let entries: Vec<Entry> = samples
        .iter()
        .map(|&id| Entry { id, file: outdir::image_file(id), labels: reference.label(id.reference).to_vec() })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    if shard.count > 1 {
        let manifest = Manifest { run, shard, entries };
        let path = outdir::manifest_file(&args.out, shard);
        outdir::write_atomically(&path, &outdir::json_bytes(&manifest)?)?;
        out.json(&json!({ "shard": shard.to_string(), "images": samples.len(), "generated_now": pending.len(), "manifest": path, "seconds": seconds }))?;
        out.text(&format!(
            "shard {shard}: {} images ({} new) in {} in {seconds:.1} s; join the shards with `unpersonal merge`",
            samples.len(),
            pending.len(),
            args.out.display()
        ));
        return Ok(());
    }
    let report = outdir::finish(&args.out, &run, entries)?;
    out.json(&json!({ "out": args.out, "generated_now": pending.len(), "seconds": seconds, "report": report }))?;
    out.text(&format!(
        "{} images ({} new) from {} reference images in {:.1} s → {} (images/, filelist.txt, report.json)\n\
         WARNING: privacy gate NOT applied: these are unfiltered candidates, not a release.",
        samples.len(),
        pending.len(),
        reference.len(),
        seconds,
        args.out.display()
    ));
    Ok(())
}

/// Generates the samples of `chunk` and writes their PNGs atomically.
fn write_chunk(generator: &mut Generator, reference: &Dataset, chunk: &[SampleId], out: &Path, bar: &ProgressBar) -> anyhow::Result<()> {
    let [c, h, w] = [reference.channels, reference.height, reference.width];
    let mut pixels = Array4::<u8>::zeros((chunk.len(), c, h, w));
    for (mut row, id) in pixels.outer_iter_mut().zip(chunk) {
        row.as_slice_mut().expect("standard layout").copy_from_slice(reference.image(id.reference));
    }
    let conditions: Array2<f32> = generator.conditions(pixels.view())?;
    let images = generator.generate(chunk, conditions.view())?;
    for (id, image) in chunk.iter().zip(images) {
        outdir::write_atomically(&out.join(outdir::image_file(*id)), &outdir::encode_png(&image, c, h, w)?)?;
        bar.inc(1);
    }
    Ok(())
}

fn progress_bar(out: &Output, total: usize, done: usize) -> ProgressBar {
    if out.quiet || out.json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64).with_position(done as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  ETA {eta}").expect("valid progress template"));
    bar
}
