//! `unpersonal-train evaluate-denoiser`: fidelity, class consistency and diversity of a
//! bundle's denoiser for each of several guidance weights.
//!
//! - Fidelity: Fréchet distance between the classifier features of samples (each conditioned on
//!   one of the first N training images) and of the first N test images, next to the same
//!   distance between the first N training images and the test images (the floor).
//! - Class consistency: how often the classifier gives a sample its conditioning image's label.
//! - Diversity: for each of K conditioning images, the mean pairwise distance among its M
//!   candidates (classifier features and pixels in [-1, 1]), next to the mean pairwise distance
//!   among M real training images of the same class; and the fraction of candidates whose
//!   nearest training image in pixel space is their own conditioning image.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, ArrayView2, Axis, concatenate};
use serde_json::{Value, json};

use unpersonal_runtime::backend::ort::{Device as OrtDevice, Ort};
use unpersonal_runtime::backend::{Backend, Model};
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::generate::{Generator, Overrides, SampleId, Settings};
use unpersonal_runtime::sampler::{Guidance, Solver};
use unpersonal_trainer::checkpoint::write_atomically;
use unpersonal_trainer::data::{Dataset, Split};
use unpersonal_trainer::engine::Device;
use unpersonal_trainer::eval::argmax;
use unpersonal_trainer::metrics::{frechet_distance, mean_pairwise_distance, nearest_rows};

use super::EngineArgs;

#[derive(Args)]
pub struct EvaluateArgs {
    /// The bundle holding denoiser, features and classifier.
    #[arg(long, default_value = "models/fashion-mnist")]
    bundle: PathBuf,
    /// Labelled IDX directory: its training split conditions the samples, its test split is
    /// the fidelity reference.
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data: PathBuf,
    /// Guidance weights to compare.
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 1.2, 1.4, 1.7])]
    guidance: Vec<f32>,
    /// Guide only at noise levels lo < σ ≤ hi (default: the bundle's
    /// sampler.guidance_interval; `0,1e9` guides everywhere).
    #[arg(long, value_name = "LO,HI", value_parser = Guidance::parse_interval)]
    guidance_interval: Option<[f64; 2]>,
    /// Samples per weight for fidelity and class consistency (10000 for the headline numbers).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Conditioning images for the diversity metrics.
    #[arg(long, default_value_t = 50)]
    diversity_images: usize,
    /// Candidates per conditioning image for the diversity metrics.
    #[arg(long, default_value_t = 8)]
    candidates: usize,
    /// ODE solver, `heun`, `dpmpp-2m` or `distilled` (the bundle's student, unguided: one
    /// pass, whatever --guidance says) (default: the bundle's sampler.solver).
    #[arg(long)]
    solver: Option<Solver>,
    /// Solver steps (default: the bundle's sampler.steps, or the student's).
    #[arg(long)]
    steps: Option<usize>,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples per batch of model calls.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Write a PNG grid for the first weight: per class, a real conditioning image followed by
    /// its candidates.
    #[arg(long)]
    grid: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The classifier on 8-bit images: logits and features.
struct Classifier {
    model: Model,
    norm: unpersonal_runtime::bundle::Normalization,
}

impl Classifier {
    fn run(
        &mut self,
        pixels: ArrayView2<u8>,
        shape: [usize; 3],
    ) -> anyhow::Result<(Array2<f32>, Array2<f32>)> {
        let [c, h, w] = shape;
        let (mut logits, mut features) = (Vec::new(), Vec::new());
        for chunk in pixels.axis_chunks_iter(Axis(0), 500) {
            let x = chunk.mapv(|p| self.norm.normalize(p)).into_shape_with_order((
                chunk.nrows(),
                c,
                h,
                w,
            ))?;
            let mut out = self.model.run(&[("image", x.view().into_dyn())])?;
            logits.push(
                out.remove("logits")
                    .context("the classifier has no `logits`")?
                    .into_dimensionality()?,
            );
            features.push(
                out.remove("features")
                    .context("the classifier has no `features`")?
                    .into_dimensionality()?,
            );
        }
        let join = |parts: Vec<Array2<f32>>| -> anyhow::Result<Array2<f32>> {
            let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
            Ok(concatenate(Axis(0), &views)?)
        };
        Ok((join(logits)?, join(features)?))
    }
}

/// The first `n` images of `data` as rows of pixels.
fn pixel_rows(data: &Dataset, n: usize) -> ArrayView2<'_, u8> {
    ArrayView2::from_shape((n, data.image_size()), &data.images[..n * data.image_size()])
        .expect("contiguous images")
}

/// Pixels of a sample in [-1, 1] (the distance space of the diversity metrics).
fn unit(p: u8) -> f32 {
    f32::from(p) / 127.5 - 1.0
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let loaded = BundleDir::load(&args.bundle)
        .with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let bundle = &loaded.bundle;
    let device = match args.engine.device {
        Device::Cpu => OrtDevice::Cpu,
        Device::Cuda => OrtDevice::Cuda,
    };
    let backend = Ort::new(args.engine.ort_lib.as_deref(), device, args.engine.threads)?;
    let load = |role: Role| -> anyhow::Result<Model> {
        Ok(Model::load(&backend as &dyn Backend, bundle.model(role)?, loaded.onnx(role)?)?)
    };
    let mut classifier =
        Classifier { model: load(Role::Classifier)?, norm: bundle.image.normalization.clone() };
    let train = Dataset::load(&args.data, Split::Train)?;
    let test = Dataset::load(&args.data, Split::Test)?;
    let shape = [train.channels, train.height, train.width];
    let n = args.samples.min(train.len()).min(test.len());
    let (k, m) = (args.diversity_images.min(train.len()), args.candidates.max(2));

    // Real references: the fidelity floor and the same-class spread of real images.
    let (_, train_features) = classifier.run(pixel_rows(&train, n), shape)?;
    let (_, test_features) = classifier.run(pixel_rows(&test, n), shape)?;
    let floor = frechet_distance(train_features.view(), test_features.view());
    let real_spread = real_same_class_spread(&train, k, m, &mut classifier, shape)?;
    let all_train: Array2<f32> = pixel_rows(&train, train.len()).mapv(unit);

    let resolve = |guidance: Option<f32>| {
        let overrides = Overrides {
            solver: args.solver,
            steps: args.steps,
            guidance,
            guidance_interval: guidance.and(args.guidance_interval),
            candidates: Some(m),
            rounds: Some(1),
        };
        Settings::resolve(&bundle.sampler, args.seed, &overrides, |s| format!("--{s}"))
            .map_err(anyhow::Error::msg)
    };
    // The student has its teacher's guidance built in: one pass.
    let weights: Vec<Option<f32>> = match resolve(None)?.solver {
        Solver::Distilled => vec![None],
        Solver::Heun | Solver::DpmPp2M => args.guidance.iter().map(|&w| Some(w)).collect(),
    };
    let first = resolve(weights[0])?;
    let mut table = Vec::new();
    for (wi, &w) in weights.iter().enumerate() {
        let settings = resolve(w)?;
        let mut generator = Generator::load(&loaded, &backend, settings)?;
        let bar = bar(n + k * m, &w.map_or("student".to_string(), |w| format!("w = {w}")));

        // Fidelity and class consistency: one sample (candidate 0) per conditioning image.
        let ids: Vec<SampleId> =
            (0..n).map(|reference| SampleId { reference, candidate: 0 }).collect();
        let samples = sample(&mut generator, &train, &ids, args.batch, &bar)?;
        let (logits, features) = classifier.run(samples.view(), shape)?;
        let consistent = (0..n)
            .filter(|&i| argmax(logits.row(i).as_slice().unwrap()) == argmax(train.label(i)))
            .count();
        let fd = frechet_distance(features.view(), test_features.view());

        // Diversity: m candidates for each of the first k conditioning images.
        let ids: Vec<SampleId> = (0..k)
            .flat_map(|reference| (0..m).map(move |candidate| SampleId { reference, candidate }))
            .collect();
        let candidates = sample(&mut generator, &train, &ids, args.batch, &bar)?;
        let (_, cand_features) = classifier.run(candidates.view(), shape)?;
        let cand_pixels = candidates.mapv(unit);
        let spread_features = mean_over_groups(cand_features.view(), m);
        let spread_pixels = mean_over_groups(cand_pixels.view(), m);
        let nearest = nearest_rows(cand_pixels.view(), all_train.view());
        let copies = nearest.iter().zip(&ids).filter(|(nn, id)| **nn == id.reference).count();
        bar.finish_and_clear();

        let row = json!({
            "guidance": w, "samples": n, "frechet_distance": fd, "class_consistency": consistent as f64 / n as f64,
            "candidate_spread_features": spread_features, "candidate_spread_pixels": spread_pixels,
            "nearest_training_image_is_own_condition": copies as f64 / ids.len() as f64,
        });
        eprintln!("{row}");
        table.push(row);
        if wi == 0
            && let Some(path) = &args.grid
        {
            write_grid(path, &mut generator, &train, shape)?;
        }
    }

    let sampling_model = bundle.model(first.solver.roles()[0])?;
    let report = json!({
        "bundle": args.bundle, "denoiser_sha256": bundle.model(Role::Denoiser)?.sha256,
        "denoiser_steps": bundle.model(Role::Denoiser)?.provenance.get("steps"),
        "sampling_model": first.solver.roles()[0], "sampling_model_sha256": sampling_model.sha256,
        "sampler_solver": first.solver.to_string(), "sampler_steps": first.steps, "seed": args.seed,
        "guidance_interval": first.guidance_interval,
        "guided_evaluations_per_image": first.solver.evaluations(first.steps),
        "fidelity_reference": format!("first {n} test images"), "frechet_distance_floor": floor,
        "real_same_class_spread": real_spread, "diversity_images": k, "candidates": m,
        "per_guidance": table, "seconds": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    print_table(&report);
    if let Some(path) = &args.json_out {
        write_atomically(path, format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes())?;
    }
    Ok(())
}

/// Generates `ids` (conditioned on training images) in batches; 8-bit pixel rows.
fn sample(
    generator: &mut Generator,
    train: &Dataset,
    ids: &[SampleId],
    batch: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Array2<u8>> {
    let size = train.image_size();
    let mut rows = Array2::<u8>::zeros((ids.len(), size));
    for (chunk_index, chunk) in ids.chunks(batch.max(1)).enumerate() {
        let references: Vec<usize> = chunk.iter().map(|id| id.reference).collect();
        let conditions = generator.conditions(train.batch(&references).view())?;
        for (i, image) in generator.generate(chunk, conditions.view())?.outer_iter().enumerate() {
            rows.row_mut(chunk_index * batch.max(1) + i)
                .assign(&ndarray::Array1::from_iter(image.iter().copied()));
        }
        bar.inc(chunk.len() as u64);
    }
    Ok(rows)
}

/// Mean over consecutive groups of `m` rows of the mean pairwise distance within the group.
fn mean_over_groups(rows: ArrayView2<f32>, m: usize) -> f64 {
    let groups: Vec<f64> = rows.axis_chunks_iter(Axis(0), m).map(mean_pairwise_distance).collect();
    groups.iter().sum::<f64>() / groups.len().max(1) as f64
}

/// For each of the first `k` training images, the mean pairwise distance among it and the
/// next `m − 1` training images of its class (features and pixels), averaged.
fn real_same_class_spread(
    train: &Dataset,
    k: usize,
    m: usize,
    classifier: &mut Classifier,
    shape: [usize; 3],
) -> anyhow::Result<Value> {
    let size = train.image_size();
    let mut group_pixels = Array2::<u8>::zeros((k * m, size));
    for i in 0..k {
        let class = argmax(train.label(i));
        let members = (i..train.len()).filter(|&j| argmax(train.label(j)) == class).take(m);
        for (slot, j) in members.enumerate() {
            group_pixels
                .row_mut(i * m + slot)
                .as_slice_mut()
                .expect("contiguous")
                .copy_from_slice(train.image(j));
        }
    }
    let (_, features) = classifier.run(group_pixels.view(), shape)?;
    Ok(json!({
        "features": mean_over_groups(features.view(), m),
        "pixels": mean_over_groups(group_pixels.mapv(unit).view(), m),
    }))
}

/// Per class, the first training image of the class and 8 candidates conditioned on it, one
/// row per class, 2× enlarged.
fn write_grid(
    path: &std::path::Path,
    generator: &mut Generator,
    train: &Dataset,
    shape: [usize; 3],
) -> anyhow::Result<()> {
    let [c, h, w] = shape;
    anyhow::ensure!(c == 1, "grids are written for grayscale images");
    let classes = train.num_labels;
    let cols = generator.settings().candidates + 1;
    let mut grid = image::GrayImage::new((cols * w) as u32, (classes * h) as u32);
    for class in 0..classes {
        let Some(index) = (0..train.len()).find(|&j| argmax(train.label(j)) == class) else {
            continue;
        };
        let ids: Vec<SampleId> =
            (0..cols - 1).map(|candidate| SampleId { reference: index, candidate }).collect();
        let rows = sample(generator, train, &ids, cols, &ProgressBar::hidden())?;
        let mut tiles: Vec<&[u8]> = vec![train.image(index)];
        tiles.extend(rows.outer_iter().map(|r| r.to_slice().expect("contiguous")));
        for (col, tile) in tiles.iter().enumerate() {
            for (p, &v) in tile.iter().enumerate() {
                grid.put_pixel(
                    (col * w + p % w) as u32,
                    (class * h + p / w) as u32,
                    image::Luma([v]),
                );
            }
        }
    }
    let big = image::imageops::resize(
        &grid,
        grid.width() * 2,
        grid.height() * 2,
        image::imageops::FilterType::Nearest,
    );
    let mut bytes = Vec::new();
    big.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    Ok(write_atomically(path, &bytes)?)
}

fn bar(total: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} samples  ETA {eta}")
            .expect("valid template"),
    );
    bar.set_message(label.to_string());
    bar
}

/// The guidance table as Markdown.
fn print_table(report: &Value) {
    println!(
        "\n| w | FD (floor {:.4}) | class consistency | spread features (real {:.3}) | spread pixels (real {:.2}) | NN = own condition |",
        report["frechet_distance_floor"].as_f64().unwrap_or(f64::NAN),
        report["real_same_class_spread"]["features"].as_f64().unwrap_or(f64::NAN),
        report["real_same_class_spread"]["pixels"].as_f64().unwrap_or(f64::NAN)
    );
    println!("|---|---|---|---|---|---|");
    for row in report["per_guidance"].as_array().into_iter().flatten() {
        let f = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {} | {:.4} | {:.2}% | {:.3} | {:.2} | {:.1}% |",
            row["guidance"].as_f64().map_or("student".to_string(), |w| (w as f32).to_string()),
            f("frechet_distance"),
            100.0 * f("class_consistency"),
            f("candidate_spread_features"),
            f("candidate_spread_pixels"),
            100.0 * f("nearest_training_image_is_own_condition")
        );
    }
}
