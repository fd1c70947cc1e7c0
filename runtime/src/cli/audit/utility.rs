//! Utility: the bundle's classifier recipe trained (by `unpersonal-train classifier`, same
//! budget) on the released set and on the real set it came from, both scored on the real test
//! set — accuracy for single-label data, mean AUROC for multi-label data.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;
use unpersonal_runtime::audit::{
    Interval, Pairing, bootstrap_accuracy_difference, bootstrap_auroc_difference, mean_auroc,
};
use unpersonal_runtime::backend::{Backend, Model};
use unpersonal_runtime::bundle::{BundleDir, Normalization, Role};
use unpersonal_runtime::data::Dataset;
use unpersonal_runtime::generate::interleaved;

use super::outputs;
use unpersonal_runtime::pixels::encode_png;

/// How the two classifiers are trained.
#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    /// The `unpersonal-train` executable.
    pub trainer: PathBuf,
    /// Optimisation steps of each training (epochs over the real set).
    pub steps: u64,
    /// Images per step (the trainer's 128, or fewer for a smaller set).
    pub batch: usize,
    /// Seed of both trainings.
    pub seed: u64,
    /// ONNX Runtime threads of the trainer (0: one per core).
    pub threads: usize,
}

/// One trained classifier, scored on the test set.
#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    /// Images it was trained on.
    pub training_images: usize,
    /// Accuracy (single-label) or mean AUROC (multi-label) on the test set.
    pub score: f64,
    /// Wall time of its training, in seconds.
    pub seconds: f64,
}

/// The utility comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Utility {
    /// `accuracy` or `mean_auroc`.
    pub metric: &'static str,
    /// Trained on the released images.
    pub synthetic: Trained,
    /// Trained on the real images the release came from.
    pub real: Trained,
    /// `synthetic − real` in percentage points, with its paired-bootstrap 95 % interval.
    pub gap_points: Interval,
    /// The recipe both were trained with.
    pub recipe: Recipe,
    /// Test images both were scored on.
    pub test_images: usize,
}

/// Writes `data` as PNGs and a filelist under `dir` and returns the filelist's path.
pub fn write_filelist(data: &Dataset, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("images"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut text = String::new();
    for i in 0..data.len() {
        let pixels = data.batch(&[i]);
        let file = format!("images/{i:06}.png");
        let png = encode_png(
            &interleaved(pixels.index_axis(Axis(0), 0)),
            data.channels,
            data.height,
            data.width,
        )
        .map_err(anyhow::Error::msg)?;
        std::fs::write(dir.join(&file), png)
            .with_context(|| format!("cannot write {}", dir.join(&file).display()))?;
        text.push_str(&file);
        for l in data.label(i) {
            text.push_str(if *l >= 0.5 { " 1" } else { " 0" });
        }
        text.push('\n');
    }
    let path = dir.join("filelist.txt");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Trains a classifier on the filelist `data` into bundle directory `out` and returns the
/// training's wall time.
fn train(recipe: &Recipe, data: &Path, test: &Path, out: &Path, run: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let output = Command::new(&recipe.trainer)
        .arg("classifier")
        .args(["--data".as_ref(), data.as_os_str(), "--test-data".as_ref(), test.as_os_str()])
        .args(["--out".as_ref(), out.as_os_str(), "--run".as_ref(), run.as_os_str()])
        .args([
            "--steps",
            &recipe.steps.to_string(),
            "--batch",
            &recipe.batch.to_string(),
            "--seed",
            &recipe.seed.to_string(),
            "--threads",
            &recipe.threads.to_string(),
        ])
        .args(["--eval-every", "0", "--quiet"])
        .output()
        .with_context(|| format!("cannot run the trainer {}", recipe.trainer.display()))?;
    if !output.status.success() {
        let tail =
            |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(2000)..]).into_owned();
        bail!(
            "training the utility classifier on {} failed ({}):\n{}{}",
            data.display(),
            output.status,
            tail(&output.stdout),
            tail(&output.stderr)
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The logits of the classifier exported into bundle directory `dir` on the test pixels.
fn test_logits(
    dir: &Path,
    backend: &dyn Backend,
    test: &Dataset,
    normalization: &Normalization,
) -> anyhow::Result<Array2<f32>> {
    let loaded = BundleDir::load(dir).with_context(|| {
        format!("the trainer's export in {} is not a usable bundle", dir.display())
    })?;
    let mut model = Model::load(
        backend,
        loaded.bundle.model(Role::Classifier)?,
        loaded.onnx(Role::Classifier)?,
    )?;
    Ok(outputs(&mut model, test, normalization)?.0)
}

/// Whether each row's arg-max is the labelled class.
fn correct(logits: ArrayView2<f32>, test: &Dataset) -> Vec<bool> {
    let argmax = |row: &[f32]| {
        row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
    };
    logits
        .outer_iter()
        .enumerate()
        .map(|(i, row)| argmax(&row.to_vec()) == argmax(test.label(i)))
        .collect()
}

/// The three sets the utility comparison trains and tests on.
pub struct Sets<'a> {
    /// The release's filelist.
    pub release: &'a Path,
    /// The real images the release stands for.
    pub real: &'a Dataset,
    /// The real test set.
    pub test: &'a Dataset,
}

/// Trains both classifiers in `work` (a scratch directory) and compares them on `test`.
pub fn compare(
    recipe: Recipe,
    Sets { release, real, test }: Sets,
    work: &Path,
    backend: &dyn Backend,
    normalization: &Normalization,
    resamples: usize,
) -> anyhow::Result<Utility> {
    let test_list = write_filelist(test, &work.join("test"))?;
    let real_list = write_filelist(real, &work.join("real"))?;
    let synthetic_images = std::fs::read_to_string(release)
        .with_context(|| format!("cannot read {}", release.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let synthetic_seconds = train(
        &recipe,
        release,
        &test_list,
        &work.join("synthetic-model"),
        &work.join("synthetic-run"),
    )?;
    let real_seconds =
        train(&recipe, &real_list, &test_list, &work.join("real-model"), &work.join("real-run"))?;
    let synthetic = test_logits(&work.join("synthetic-model"), backend, test, normalization)?;
    let real_logits = test_logits(&work.join("real-model"), backend, test, normalization)?;
    let (metric, scores, gap) = if test.multi_label {
        let labels = Array2::from_shape_vec((test.len(), test.num_labels), test.labels.clone())?;
        let all: Vec<usize> = (0..test.len()).collect();
        let sigmoid = |x: &Array2<f32>| x.mapv(|z| 1.0 / (1.0 + (-z).exp()));
        let (s, r) = (sigmoid(&synthetic), sigmoid(&real_logits));
        let score = |x: &Array2<f32>| {
            mean_auroc(x.view(), labels.view(), &all).context(
                "no test label has both positive and negative examples: AUROC is undefined",
            )
        };
        let gap = bootstrap_auroc_difference(
            s.view(),
            r.view(),
            labels.view(),
            resamples.min(500),
            recipe.seed,
        )
        .context("AUROC is undefined on the test set")?;
        ("mean_auroc", (score(&s)?, score(&r)?), gap)
    } else {
        let (s, r) = (correct(synthetic.view(), test), correct(real_logits.view(), test));
        let share = |v: &[bool]| v.iter().filter(|&&c| c).count() as f64 / v.len() as f64;
        (
            "accuracy",
            (share(&s), share(&r)),
            bootstrap_accuracy_difference(&s, &r, Pairing::Paired, resamples, recipe.seed),
        )
    };
    let points = |x: f64| 100.0 * x;
    Ok(Utility {
        metric,
        synthetic: Trained {
            training_images: synthetic_images,
            score: scores.0,
            seconds: synthetic_seconds,
        },
        real: Trained { training_images: real.len(), score: scores.1, seconds: real_seconds },
        gap_points: Interval {
            estimate: points(gap.estimate),
            lower: points(gap.lower),
            upper: points(gap.upper),
        },
        recipe,
        test_images: test.len(),
    })
}
