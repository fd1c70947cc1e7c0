//! `unpersonal sample`: the partner's conformance harness. Draws one round's candidates for the
//! first reference images — from the runtime's noise generator or from explicit noise in a
//! `.npy` file — and writes the model-space results as float32 `.npy` beside their 8-bit PNGs,
//! ungated. An implementation of `docs/bundle.md` fed the same noise and conditions must
//! reproduce `model_space.npy` within the tolerances stated there.
//!
//! The output directory (a research artefact: unfiltered, conditioned on real images):
//!
//! ```text
//! .unpersonal-samples   marks the directory as this command's
//! conditions.npy        [sources, D] float32: the features of each reference image
//! noise.npy             [rows, C, H, W] float32: the standard-normal noise of each row
//! model_space.npy       [rows, C, H, W] float32: the sampler's result, normalised pixel space
//! images/NNNNNN.png     row NNNNNN as 8-bit pixels
//! samples.json          the settings, the bundle's hashes, and per row its reference
//!                       position, candidate number, noise stream and guidance weight
//! ```
//!
//! Rows are reference-major: row `k·candidates + j` is candidate j of reference k. Everything
//! is written into a temporary sibling that replaces `--out` only when complete.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use ndarray::{Array2, Array4, Axis, s};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use serde::Serialize;
use unpersonal_runtime::bundle::limits::{self, count_problem};
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::data::Split;
use unpersonal_runtime::files::{MAX_FILE_BYTES, read_regular};
use unpersonal_runtime::generate::{Generator, SampleId, Settings, interleaved};
use unpersonal_runtime::pixels::encode_png;

use super::outdir::{self, SAMPLES_MARKER};
use super::{BackendArgs, Output, SamplerArgs, reference};

/// Arguments of `unpersonal sample`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bundle directory.
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist", value_parser = super::bundle_dir)]
    pub bundle: PathBuf,
    /// Reference images to condition on (a filelist, a folder holding one, or an IDX
    /// directory; default: the bundle's shipped sample).
    #[arg(long, value_name = "DATA")]
    pub reference: Option<PathBuf>,
    /// How many reference images, from the first (default: all).
    #[arg(long, value_name = "N")]
    pub sources: Option<usize>,
    /// The round to draw (0-based): its guidance weight and its noise streams, as the gated
    /// run numbers them.
    #[arg(long, value_name = "T", default_value_t = 0)]
    pub round: usize,
    /// Seed of the runtime's noise generator (ignored with --noise).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Explicit initial noise: a NumPy float32 array [sources × candidates, C, H, W],
    /// reference-major, instead of the runtime's generator.
    #[arg(long, value_name = "FILE.npy")]
    pub noise: Option<PathBuf>,
    /// The output directory: new, empty, or an earlier output of this command (replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Rows per denoiser call (results do not depend on it).
    #[arg(long, value_name = "B", default_value_t = 64)]
    pub batch: usize,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `samples.json`.
#[derive(Serialize)]
struct Manifest<'a> {
    /// What this directory is.
    note: &'static str,
    bundle: BundleInfo<'a>,
    backend: &'static str,
    settings: &'a Settings,
    round: usize,
    /// `generator` (the runtime's, under `settings.seed`) or `file` (--noise).
    noise: &'static str,
    rows: Vec<Row>,
}

#[derive(Serialize)]
struct BundleInfo<'a> {
    name: &'a str,
    models: BTreeMap<&'static str, &'a str>,
}

/// One row of the arrays.
#[derive(Serialize)]
struct Row {
    row: usize,
    /// Position of the conditioning image in the reference set (0-based).
    reference: usize,
    /// Candidate number across rounds: `round · candidates + j`.
    candidate: usize,
    /// The runtime generator's stream for this candidate (whether or not it was used).
    noise_id: u64,
    guidance: f32,
}

/// Draws the candidates and writes the directory.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let loaded = BundleDir::load(&args.bundle)
        .with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let bundle = &loaded.bundle;
    let settings = args.sampler.settings(&bundle.sampler, args.seed)?;
    args.backend.validate()?;
    if let Some(problem) = count_problem(args.batch, &limits::BATCH) {
        bail!("--batch {problem}");
    }
    anyhow::ensure!(
        args.round < settings.rounds,
        "--round {}: the settings have {} rounds, numbered from 0 (raise --rounds to draw a later one)",
        args.round,
        settings.rounds
    );
    let reference_path = reference::resolve(args.reference.as_deref(), &loaded)?;
    let reference = reference::open_split(&reference_path, Split::Train, &loaded)?;
    let folders = reference.folders(&reference_path);
    let sources = args.sources.unwrap_or(reference.len());
    anyhow::ensure!(
        (1..=reference.len()).contains(&sources),
        "--sources {sources}: the reference set {} holds {} images, and at least one is needed",
        reference.name(),
        reference.len()
    );
    for folder in &folders {
        outdir::check_apart("--out", &args.out, "the reference set's folder", folder)?;
    }
    outdir::check_apart("--out", &args.out, "the bundle", &args.bundle)?;
    outdir::check_claimable(&args.out, SAMPLES_MARKER, "--out")?;

    let ids: Vec<SampleId> =
        (0..sources).flat_map(|r| settings.round_samples(r, args.round)).collect();
    let image = &bundle.image;
    let shape = (ids.len(), image.channels, image.height, image.width);
    let backend = args.backend.single_backend()?;
    let mut generator = Generator::load(&loaded, backend.as_ref(), settings.clone())?;
    let noise = match &args.noise {
        Some(path) => read_noise(path, shape)?,
        None => generator.noise(&ids),
    };
    let images = reference.scan(&loaded, |_| Ok(()))?;
    let first: Vec<usize> = (0..sources).collect();
    let conditions = generator.conditions(images.read(&first)?.view())?;
    let rows: Vec<usize> = ids.iter().map(|id| id.reference).collect();
    let row_conditions: Array2<f32> = conditions.select(Axis(0), &rows);

    if !out.quiet {
        eprintln!(
            "WARNING: `sample` skips the privacy gate: its images are unfiltered research output, conditioned on real images. Do not release them."
        );
    }
    let bar = out.progress(ids.len(), 0, "candidates");
    let mut model_space = Array4::<f32>::zeros(shape);
    for start in (0..ids.len()).step_by(args.batch) {
        let end = (start + args.batch).min(ids.len());
        let drawn = generator.draw(
            args.round,
            noise.slice(s![start..end, .., .., ..]),
            row_conditions.slice(s![start..end, ..]),
        )?;
        model_space.slice_mut(s![start..end, .., .., ..]).assign(&drawn);
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    let pixels = generator.to_pixels(model_space.view());

    let used: BTreeMap<&'static str, &str> = settings
        .solver
        .roles()
        .iter()
        .copied()
        .chain([Role::Features])
        .filter_map(|r| bundle.models.get(&r).map(|m| (r.as_str(), m.sha256.as_str())))
        .collect();
    let guidance = settings.guidance_in_round(args.round);
    let manifest = Manifest {
        note: "unfiltered research output of `unpersonal sample` (no privacy gate): conditioned on real images; never release it",
        bundle: BundleInfo { name: &bundle.name, models: used },
        backend: backend.name(),
        settings: &settings,
        round: args.round,
        noise: if args.noise.is_some() { "file" } else { "generator" },
        rows: ids
            .iter()
            .enumerate()
            .map(|(row, id)| Row {
                row,
                reference: id.reference,
                candidate: id.candidate,
                noise_id: id.noise_id(settings.streams()),
                guidance,
            })
            .collect(),
    };

    let staging = Staging::new(&args.out)?;
    let npy = |array: &dyn Fn(&mut Vec<u8>) -> Result<(), ndarray_npy::WriteNpyError>| {
        let mut bytes = Vec::new();
        array(&mut bytes).map(|()| bytes)
    };
    staging.write(SAMPLES_MARKER, b"unpersonal\n")?;
    staging.write("conditions.npy", &npy(&|b| conditions.write_npy(b))?)?;
    staging.write("noise.npy", &npy(&|b| noise.write_npy(b))?)?;
    staging.write("model_space.npy", &npy(&|b| model_space.write_npy(b))?)?;
    for (row, image) in pixels.outer_iter().enumerate() {
        let png = encode_png(&interleaved(image), shape.1, shape.2, shape.3)
            .map_err(anyhow::Error::msg)?;
        staging.write(&format!("images/{row:06}.png"), &png)?;
    }
    staging.write("samples.json", &outdir::json_bytes(&manifest)?)?;
    staging.finish()?;

    let seconds = started.elapsed().as_secs_f64();
    out.json(&serde_json::json!({
        "out": args.out, "candidates": ids.len(), "backend": backend.name(), "seconds": seconds
    }))?;
    out.text(&format!(
        "{} candidates ({sources} reference images × {}, round {}) in {seconds:.1} s → {} (model_space.npy, images/, samples.json)",
        ids.len(),
        settings.candidates,
        args.round,
        args.out.display()
    ));
    Ok(())
}

/// Reads `--noise`: a float32 array of exactly `shape`, every value finite.
fn read_noise(path: &Path, shape: (usize, usize, usize, usize)) -> anyhow::Result<Array4<f32>> {
    let bytes = read_regular(path, MAX_FILE_BYTES)
        .with_context(|| format!("cannot read the noise file {}", path.display()))?;
    let noise = Array4::<f32>::read_npy(Cursor::new(bytes)).with_context(|| {
        format!(
            "{}: not a NumPy .npy file holding a 4-D float32 array (little-endian '<f4', C order)",
            path.display()
        )
    })?;
    let (n, c, h, w) = shape;
    anyhow::ensure!(
        noise.dim() == shape,
        "{}: the noise has shape {:?}; this run needs [{n}, {c}, {h}, {w}] (sources × candidates rows, reference-major, of the bundle's C, H, W)",
        path.display(),
        noise.shape()
    );
    if let Some((at, value)) = noise.indexed_iter().find(|(_, v)| !v.is_finite()) {
        bail!("{}: the noise holds {value} at {at:?}; every value must be finite", path.display());
    }
    Ok(noise)
}

/// A temporary sibling of the output directory that replaces it when complete, so that a
/// failed run leaves the previous output (or nothing) behind, never a mix.
struct Staging {
    dir: tempfile::TempDir,
    out: PathBuf,
}

impl Staging {
    fn new(out: &Path) -> anyhow::Result<Staging> {
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(unpersonal_runtime::atomic::PARTIAL)
            .tempdir_in(parent)
            .with_context(|| {
                format!("cannot create a temporary directory in {}", parent.display())
            })?;
        Ok(Staging { dir, out: out.to_path_buf() })
    }

    fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(outdir::write_atomically(&self.dir.path().join(name), bytes)?)
    }

    /// Replaces the output directory (checked to be absent, empty, or marked as this
    /// command's) by the staged one.
    fn finish(self) -> anyhow::Result<()> {
        outdir::check_claimable(&self.out, SAMPLES_MARKER, "--out")?;
        if self.out.exists() {
            std::fs::remove_dir_all(&self.out)
                .with_context(|| format!("cannot replace {}", self.out.display()))?;
        }
        let staged = self.dir.keep();
        std::fs::rename(&staged, &self.out).with_context(|| {
            format!("cannot move {} to {}", staged.display(), self.out.display())
        })?;
        Ok(())
    }
}
