//! `unpersonal bench`: how fast one backend runs the bundle's models on this machine —
//! guided denoiser evaluations at several batch sizes with their achieved GFLOP/s, the same
//! backend's float32 matrix-product peak, images per second at the bundle's default settings,
//! and gate checks per second against large reference sets.

mod gemm;

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::Instant;

use anyhow::Context;
use ndarray::{Array2, Array4, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;
use unpersonal_runtime::backend::{Backend, Model, flops};
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::gate::{self, ReferenceSet, Reid};
use unpersonal_runtime::generate::{Generator, Overrides, Settings};
use unpersonal_runtime::sampler::Denoiser;

use super::{BackendArgs, DeviceKind, Output, reference};

/// Arguments of `unpersonal bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle directory (bundle.json and the ONNX files it names).
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist", value_parser = crate::cli::bundle_dir)]
    pub bundle: PathBuf,
    /// The backend to measure.
    #[command(flatten)]
    pub engine: BackendArgs,
    /// Images per guided denoiser call to time (each image is two rows of the network, the
    /// conditional and the unconditional one, in one call).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub batches: Vec<usize>,
    /// Seconds each measurement runs at least (after one untimed warm-up call; at least 3
    /// timed calls).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Reference images of the bundle's shipped sample to draw candidates for, at the
    /// bundle's default settings, for images per second.
    #[arg(long, default_value_t = 8)]
    pub images: usize,
    /// The solver the images per second are drawn with, at its defaults (default: the
    /// bundle's sampler.solver; `distilled`: the bundle's student).
    #[arg(long)]
    pub solver: Option<unpersonal_runtime::sampler::Solver>,
    /// Reference-set sizes for gate checks per second (random embeddings).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub references: Vec<usize>,
    /// Candidates per gate measurement.
    #[arg(long, default_value_t = 256)]
    pub checks: usize,
    /// Side n of the n×n×n float32 matrix products that measure the backend's peak.
    #[arg(long, default_value_t = 1024)]
    pub gemm: usize,
}

/// Everything `bench` measured.
#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    cores: usize,
    denoiser: DenoiserSpeed,
    gemm: Gemm,
    /// Best denoiser GFLOP/s over the matrix-product GFLOP/s.
    share_of_peak: f64,
    generation: Generation,
    gate: GateSpeed,
}

#[derive(Debug, Serialize)]
struct DenoiserSpeed {
    /// FLOPs of one guided evaluation of one image (its conditional and unconditional rows).
    flops_per_evaluation: u64,
    calls: Vec<DenoiserCall>,
}

#[derive(Debug, Serialize)]
struct DenoiserCall {
    images: usize,
    ms_per_call: f64,
    evaluations_per_s: f64,
    gflops: f64,
}

#[derive(Debug, Serialize)]
struct Gemm {
    n: usize,
    ms_per_call: f64,
    gflops: f64,
}

#[derive(Debug, Serialize)]
struct Generation {
    reference_images: usize,
    jobs: usize,
    candidates: usize,
    solver: String,
    steps: usize,
    guided_evaluations_per_image: usize,
    seconds: f64,
    images_per_s: f64,
}

#[derive(Debug, Serialize)]
struct GateSpeed {
    embedded_images_per_s: f64,
    neighbours: usize,
    checks: Vec<GateCheck>,
}

#[derive(Debug, Serialize)]
struct GateCheck {
    references: usize,
    checks_per_s: f64,
}

/// Runs every measurement and prints the report.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    use unpersonal_runtime::bundle::limits::{BATCH, CANDIDATES, count_problem};
    anyhow::ensure!(!args.batches.is_empty(), "--batches needs at least one size");
    for (flag, values, range) in [
        ("--batches", &args.batches[..], BATCH),
        ("--images", std::slice::from_ref(&args.images), CANDIDATES),
        ("--checks", std::slice::from_ref(&args.checks), 1..=1_000_000),
        ("--gemm", std::slice::from_ref(&args.gemm), 1..=8192),
        ("--references", &args.references[..], 1..=10_000_000),
    ] {
        if let Some(problem) = values.iter().find_map(|&v| count_problem(v, &range)) {
            anyhow::bail!("{flag} {problem}");
        }
    }
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds >= 0.0 && args.seconds <= 3600.0,
        "--seconds must be a number of seconds from 0 to 3600, is {}",
        args.seconds
    );
    args.engine.validate()?;
    let loaded = BundleDir::load(&args.bundle)
        .with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let backend = args.engine.single_backend()?;
    let device = if args.engine.device == DeviceKind::Cuda { " (CUDA)" } else { "" };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let progress = |what: &str| {
        if !out.quiet && !out.json {
            eprintln!("measuring {what} …");
        }
    };

    progress("denoiser calls");
    let denoiser = denoiser_speed(args, &loaded, backend.as_ref())?;
    progress("the matrix-product peak");
    let gemm = gemm_speed(args, backend.as_ref())?;
    progress("generation at the default settings");
    let generation = generation_speed(args, &loaded)?;
    progress("gate checks");
    let gate = gate_speed(args, &loaded, backend.as_ref())?;
    let best = denoiser.calls.iter().map(|c| c.gflops).fold(0.0, f64::max);
    let report = Report {
        backend: format!("{}{device}", backend.name()),
        cores,
        share_of_peak: best / gemm.gflops,
        denoiser,
        gemm,
        generation,
        gate,
    };
    out.json(&serde_json::to_value(&report)?)?;
    out.text(&describe(&report));
    Ok(())
}

/// Seconds per call of `f`: one untimed call, then calls until `seconds` have passed (at
/// least 3).
fn seconds_per_call(
    seconds: f64,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    f()?;
    let start = Instant::now();
    let mut calls = 0u32;
    while calls < 3 || start.elapsed().as_secs_f64() < seconds {
        f()?;
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(calls))
}

fn load(loaded: &BundleDir, backend: &dyn Backend, role: Role) -> anyhow::Result<Model> {
    Ok(Model::load(backend, loaded.bundle.model(role)?, loaded.onnx(role)?)?)
}

fn normal<D: ndarray::Dimension>(
    shape: impl ndarray::ShapeBuilder<Dim = D>,
    seed: u64,
) -> ndarray::Array<f32, D> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ndarray::Array::from_shape_simple_fn(shape, || rng.sample(StandardNormal))
}

fn denoiser_speed(
    args: &Args,
    loaded: &BundleDir,
    backend: &dyn Backend,
) -> anyhow::Result<DenoiserSpeed> {
    let bundle = &loaded.bundle;
    let denoiser_spec = bundle.model(Role::Denoiser)?;
    let guide = bundle.models.get(&Role::Guide).filter(|g| g.file != denoiser_spec.file);
    let row = |role: Role| -> anyhow::Result<u64> {
        flops(loaded.onnx(role)?, bundle.model(role)?, 1).map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot count its FLOPs: {e}",
                bundle.model(role).map_or("?", |m| &m.file)
            )
        })
    };
    let flops_per_evaluation = row(Role::Denoiser)?
        + if guide.is_some() { row(Role::Guide)? } else { row(Role::Denoiser)? };
    let guide_model = guide.map(|_| load(loaded, backend, Role::Guide)).transpose()?;
    let mut denoiser = Denoiser::new(load(loaded, backend, Role::Denoiser)?, guide_model)?;
    let [c, h, w] = denoiser.image_shape();
    let mut calls = Vec::new();
    for &images in &args.batches {
        let x: Array4<f32> = normal((images, c, h, w), 1);
        let condition: Array2<f32> = normal((images, denoiser.condition_size()), 2);
        let seconds = seconds_per_call(args.seconds, || {
            denoiser.denoise(x.view(), 1.0, condition.view(), 1.4)?;
            Ok(())
        })?;
        let evaluations_per_s = images as f64 / seconds;
        calls.push(DenoiserCall {
            images,
            ms_per_call: seconds * 1e3,
            evaluations_per_s,
            gflops: evaluations_per_s * flops_per_evaluation as f64 / 1e9,
        });
    }
    Ok(DenoiserSpeed { flops_per_evaluation, calls })
}

fn gemm_speed(args: &Args, backend: &dyn Backend) -> anyhow::Result<Gemm> {
    let n = args.gemm;
    let (onnx, spec) = gemm::model(n);
    let mut model = Model::load(backend, &spec, &onnx)?;
    let x: Array2<f32> = normal((n, n), 3);
    let seconds = seconds_per_call(args.seconds, || {
        model.run(&[("x", x.view().into_dyn())])?;
        Ok(())
    })?;
    Ok(Gemm {
        n,
        ms_per_call: seconds * 1e3,
        gflops: 2.0 * (n as f64).powi(3) * gemm::DEPTH as f64 / seconds / 1e9,
    })
}

/// Candidates for the first `--images` reference images at the bundle's defaults, drawn by
/// `--jobs` workers as `unpersonal generate` draws them (each with its own models, taking
/// every jobs-th reference image); timed from when every worker has loaded and warmed up.
fn generation_speed(args: &Args, loaded: &BundleDir) -> anyhow::Result<Generation> {
    let overrides = Overrides { solver: args.solver, ..Overrides::default() };
    let settings = Settings::resolve(&loaded.bundle.sampler, 0, &overrides, |s| format!("--{s}"))
        .map_err(anyhow::Error::msg)?;
    let data = reference::load(None, loaded)?;
    let sources: Vec<usize> = (0..args.images.min(data.len())).collect();
    let jobs = args.engine.jobs().min(sources.len());
    let ready = Barrier::new(jobs + 1);
    let (seconds, candidates) = std::thread::scope(|scope| -> anyhow::Result<(f64, usize)> {
        let workers: Vec<_> = (0..jobs)
            .map(|worker| {
                let (ready, data, settings) = (&ready, &data, &settings);
                let mine: Vec<usize> = sources.iter().copied().skip(worker).step_by(jobs).collect();
                scope.spawn(move || -> anyhow::Result<usize> {
                    let prepared = (|| -> anyhow::Result<_> {
                        let backend = args.engine.backend()?;
                        let mut generator = Generator::load(
                            loaded,
                            backend.as_ref(),
                            Settings { steps: 1, ..settings.clone() },
                        )?;
                        let conditions = generator.conditions(data.batch(&mine).view())?;
                        let (samples, rows): (Vec<_>, Vec<usize>) = mine
                            .iter()
                            .enumerate()
                            .flat_map(|(row, &r)| {
                                settings.round_samples(r, 0).map(move |id| (id, row))
                            })
                            .unzip();
                        let conditions = conditions.select(Axis(0), &rows);
                        // One single-step call plans the batch size.
                        generator.generate(&samples, conditions.view())?;
                        generator.configure(settings.clone())?;
                        Ok((generator, samples, conditions))
                    })();
                    ready.wait();
                    let (mut generator, samples, conditions) = prepared?;
                    generator.generate(&samples, conditions.view())?;
                    Ok(samples.len())
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        let mut candidates = 0;
        for worker in workers {
            candidates +=
                worker.join().map_err(|_| anyhow::anyhow!("a generation worker panicked"))??;
        }
        Ok((start.elapsed().as_secs_f64(), candidates))
    })?;
    Ok(Generation {
        reference_images: sources.len(),
        jobs,
        candidates,
        solver: settings.solver.to_string(),
        steps: settings.steps,
        guided_evaluations_per_image: settings.solver.evaluations(settings.steps),
        seconds,
        images_per_s: candidates as f64 / seconds,
    })
}

fn gate_speed(args: &Args, loaded: &BundleDir, backend: &dyn Backend) -> anyhow::Result<GateSpeed> {
    let bundle = &loaded.bundle;
    let rule = bundle
        .reid
        .as_ref()
        .with_context(|| format!("the bundle {} has no re-identification rule", bundle.name))?;
    let mut reid = Reid::new(
        load(loaded, backend, Role::ReidEmbed)?,
        load(loaded, backend, Role::ReidHead)?,
        rule.threshold,
        rule.neighbour_threshold(),
    )?;
    let image = &bundle.image;
    let images: Array4<f32> = normal((args.checks, image.channels, image.height, image.width), 4);
    let mut embeddings = Array2::zeros((0, 0));
    let embed_seconds = seconds_per_call(args.seconds, || {
        embeddings = reid.embed(images.view())?;
        Ok(())
    })?;
    let mut checks = Vec::new();
    for &n in &args.references {
        let set = ReferenceSet::new(normal((n, embeddings.ncols()), 5));
        let sources: Vec<Option<usize>> = (0..args.checks).map(|i| Some(i % n)).collect();
        let seconds = seconds_per_call(args.seconds, || {
            gate::check(&mut reid, &set, embeddings.view(), &sources, rule.neighbours)?;
            Ok(())
        })?;
        checks.push(GateCheck { references: n, checks_per_s: args.checks as f64 / seconds });
    }
    Ok(GateSpeed {
        embedded_images_per_s: args.checks as f64 / embed_seconds,
        neighbours: rule.neighbours,
        checks,
    })
}

fn describe(r: &Report) -> String {
    let mut s = format!(
        "backend {} on {} cores\n\ndenoiser: {:.1} MFLOP per guided evaluation (conditional + unconditional row)\n  images/call  ms/call  evaluations/s  GFLOP/s\n",
        r.backend,
        r.cores,
        r.denoiser.flops_per_evaluation as f64 / 1e6
    );
    for c in &r.denoiser.calls {
        s.push_str(&format!(
            "  {:>11}  {:>7.2}  {:>13.1}  {:>7.2}\n",
            c.images, c.ms_per_call, c.evaluations_per_s, c.gflops
        ));
    }
    s.push_str(&format!(
        "float32 matrix products {n}×{n}×{n}: {:.2} GFLOP/s ({:.1} ms per {} products); the best denoiser call reaches {:.0} % of it\n",
        r.gemm.gflops,
        r.gemm.ms_per_call,
        gemm::DEPTH,
        100.0 * r.share_of_peak,
        n = r.gemm.n
    ));
    let g = &r.generation;
    s.push_str(&format!(
        "\ngeneration at the bundle's defaults: {} candidates for {} reference images ({} jobs), {} {} steps ({} guided evaluations each) in {:.2} s: {:.2} images/s\n",
        g.candidates, g.reference_images, g.jobs, g.solver, g.steps, g.guided_evaluations_per_image, g.seconds, g.images_per_s
    ));
    s.push_str(&format!(
        "\ngate: {:.1} images embedded/s; checks against the source and {} nearest references:\n",
        r.gate.embedded_images_per_s, r.gate.neighbours
    ));
    for c in &r.gate.checks {
        s.push_str(&format!("  {:>7} references: {:.1} checks/s\n", c.references, c.checks_per_s));
    }
    s
}
