//! `unpersonal audit`: what a release is worth (utility, fidelity, diversity) and what it
//! risks (re-identification, distance to closest record, singling-out, memorisation), each
//! risk next to the same number for people the models never saw. Writes `audit.json` and a
//! self-contained `audit.html`.

pub(crate) mod html;
mod utility;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::index::sample;
use serde_json::{Value, json};
use unpersonal_runtime::audit::{self, Pca, SinglingOutConfig, wilson};
use unpersonal_runtime::backend::Model;
use unpersonal_runtime::bundle::{BundleDir, Normalization, Role};
use unpersonal_runtime::data::{Dataset, Split};
use unpersonal_runtime::gate::Screen;

use super::outdir::{self, Record};
use super::{BackendArgs, Output, reference};

/// Arguments of `unpersonal audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The release directory `generate` wrote (filelist.txt, images/, report.json).
    #[arg(long, value_name = "DIR")]
    pub release: PathBuf,
    /// The records the models were trained on and the release was gated against (the
    /// `generate --reference`): a filelist or an IDX directory (its training split).
    #[arg(long, value_name = "DATA")]
    pub train: PathBuf,
    /// Records of the same population no model ever saw: the baseline every risk is compared
    /// with. A filelist or an IDX directory (its test split).
    #[arg(long, value_name = "DATA")]
    pub holdout: PathBuf,
    /// The real test set the utility classifiers and the Fréchet distance are measured on: a
    /// filelist or an IDX directory (its test split).
    #[arg(long, value_name = "DATA")]
    pub test: PathBuf,
    /// The real images the release stands for (utility's real-data side). Default: the source
    /// images of the release, read from its audit log (RELEASE-audit/audit-log.jsonl).
    #[arg(long, value_name = "DATA")]
    pub real: Option<PathBuf>,
    /// The release's audit directory (default: RELEASE-audit beside RELEASE).
    #[arg(long, value_name = "DIR")]
    pub release_audit: Option<PathBuf>,
    /// Where audit.json and audit.html go (created). The HTML shows real training images
    /// next to their closest released ones: keep it where the training data may be.
    #[arg(long, value_name = "DIR", default_value = "unpersonal-audit")]
    pub out: PathBuf,
    /// The bundle whose classifier gives the feature space and whose re-identification model
    /// links images to people.
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist", value_parser = crate::cli::bundle_dir)]
    pub bundle: PathBuf,
    /// Utility training length: epochs over the real set, the same number of steps for both
    /// (default: 15 epochs and at least 500 steps, so that a small set's classifiers are
    /// trained out rather than for a handful of steps; a shorter recipe is flagged).
    #[arg(long, value_name = "N")]
    pub epochs: Option<u64>,
    /// The `unpersonal-train` executable (default: the one beside this `unpersonal`).
    #[arg(long, value_name = "PATH")]
    pub trainer: Option<PathBuf>,
    /// ONNX Runtime threads of the trainer (default: --threads; 0: one per core).
    #[arg(long, value_name = "N")]
    pub trainer_threads: Option<usize>,
    /// Principal components of the classifier features the singling-out attack works on.
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub components: usize,
    /// Bootstrap resamples of the utility gap's interval.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub resamples: usize,
    /// Seed of every random choice (subsamples, predicates, bootstrap, training).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Images per model call.
const BATCH: usize = 256;
/// Neighbours of the manifold estimate (Kynkäänniemi et al.'s k).
const MANIFOLD_K: usize = 3;
/// Released images shown with their nearest training image.
const GALLERY: usize = 8;

/// The classifier's logits and features of every image of `data`.
pub(crate) fn outputs(
    model: &mut Model,
    data: &Dataset,
    normalization: &Normalization,
) -> anyhow::Result<(Array2<f32>, Array2<f32>)> {
    let (mut logits, mut features) = (Vec::new(), Vec::new());
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(BATCH) {
        let x = data.batch(chunk).mapv(|p| normalization.normalize(p));
        let mut out = model.run(&[("image", x.view().into_dyn())])?;
        let file = &model.spec().file;
        for (name, into) in [("logits", &mut logits), ("features", &mut features)] {
            let value = out
                .remove(name)
                .with_context(|| format!("{file}: the classifier has no output `{name}`"))?;
            into.push(
                value
                    .into_dimensionality::<ndarray::Ix2>()
                    .with_context(|| format!("{file}: output `{name}` is not 2-D"))?,
            );
        }
    }
    let join = |parts: Vec<Array2<f32>>| -> anyhow::Result<Array2<f32>> {
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        Ok(ndarray::concatenate(Axis(0), &views)?)
    };
    Ok((join(logits)?, join(features)?))
}

/// How well the bundle's classifier agrees with the labels of `data` (for a release, the labels
/// its images were drawn for): arg-max accuracy (single-label), or the mean AUROC over the
/// findings (multi-label), with the images counted.
fn class_consistency(logits: ArrayView2<f32>, data: &Dataset) -> Value {
    let n = data.len();
    let labels = ArrayView2::from_shape((n, data.num_labels), &data.labels)
        .expect("a dataset holds one label row per image");
    let (metric, value) = if data.multi_label {
        ("mean_auroc", audit::mean_auroc(logits, labels, &(0..n).collect::<Vec<_>>()))
    } else {
        let argmax = |row: ndarray::ArrayView1<f32>| {
            row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
        };
        let agree =
            logits.outer_iter().zip(labels.outer_iter()).filter(|(l, y)| argmax(*l) == argmax(*y));
        ("accuracy", Some(agree.count() as f64 / n.max(1) as f64))
    };
    json!({ "metric": metric, "value": value, "images": n })
}

/// Pixels scaled to [0, 1], one flattened row per image.
fn pixel_rows(data: &Dataset) -> Array2<f32> {
    Array2::from_shape_fn((data.len(), data.image_size()), |(i, j)| {
        f32::from(data.image(i)[j]) / 255.0
    })
}

/// `n` rows of `x` drawn without replacement (all of them, in order, when it has no more).
fn subsample(x: ArrayView2<f32>, n: usize, seed: u64) -> Array2<f32> {
    if x.nrows() <= n {
        return x.to_owned();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut rows = sample(&mut rng, x.nrows(), n).into_vec();
    rows.sort_unstable();
    x.select(Axis(0), &rows)
}

/// The release: its images and labels, and its report (`None` when it has none).
fn load_release(dir: &Path, loaded: &BundleDir) -> anyhow::Result<(Dataset, Value)> {
    let filelist = dir.join("filelist.txt");
    let images = reference::load_split(&filelist, Split::Train, loaded)
        .with_context(|| format!("{} is not a finished release", dir.display()))?;
    let path = dir.join("report.json");
    let report: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a release report", path.display()))?;
    Ok((images, report))
}

/// The real images the release stands for: `--real`, or the sources its audit log names.
fn real_images(
    args: &Args,
    loaded: &BundleDir,
    train: &Dataset,
    report: &Value,
) -> anyhow::Result<Dataset> {
    if let Some(path) = &args.real {
        return reference::load_split(path, Split::Train, loaded);
    }
    let drawn_from = &report["run"]["reference"];
    let mismatch = || {
        anyhow::anyhow!(
            "the release was drawn from a reference set{} of {} images but --train is {} ({} images): pass the release's --reference as --train, or the real images it stands for as --real",
            drawn_from["name"].as_str().map_or(String::new(), |n| format!(" named {n:?}")),
            drawn_from["images"],
            train.name,
            train.len()
        )
    };
    if drawn_from["images"] != json!(train.len()) {
        return Err(mismatch());
    }
    let dir = args.release_audit.clone().unwrap_or_else(|| outdir::default_audit(&args.release));
    let log = dir.join("audit-log.jsonl");
    let text = std::fs::read_to_string(&log).with_context(|| {
        format!("cannot read {} (the release's sources; or pass --real)", log.display())
    })?;
    let mut sources = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let record: Record = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an audit record", log.display(), n + 1))?;
        // The records carry their source's labels: a different --train of the same size shows.
        if record.outcome.reference >= train.len()
            || record.labels != train.label(record.outcome.reference)
        {
            return Err(mismatch().context(format!(
                "{}:{}: source #{} is not that image of --train",
                log.display(),
                n + 1,
                record.outcome.reference
            )));
        }
        sources.push(record.outcome.reference);
    }
    if sources.is_empty() {
        bail!("{} names no source image", log.display());
    }
    Ok(train.select(&sources, format!("{} (the release's {} sources)", train.name, sources.len())))
}

/// `holdout` without the images that are also in `train` (pixel for pixel): the holdout is
/// the baseline of people no model saw. A few shared images (duplicates in a public data set)
/// are dropped with a warning; more than 1 % means the holdout is not one, and is refused.
fn without_training_images(holdout: Dataset, train: &Dataset) -> anyhow::Result<Dataset> {
    use sha2::{Digest, Sha256};
    let seen: std::collections::HashSet<_> =
        (0..train.len()).map(|i| Sha256::digest(train.image(i))).collect();
    let fresh: Vec<usize> =
        (0..holdout.len()).filter(|&i| !seen.contains(&Sha256::digest(holdout.image(i)))).collect();
    let shared = holdout.len() - fresh.len();
    if shared == 0 {
        return Ok(holdout);
    }
    if shared * 100 > holdout.len() {
        bail!(
            "{shared} of the {} --holdout images ({}) are also in --train ({}): the holdout must be records of the same population that no model saw, disjoint from the training set",
            holdout.len(),
            holdout.name,
            train.name
        );
    }
    eprintln!(
        "WARNING: {shared} of the {} --holdout images are also in --train; they are left out of the holdout",
        holdout.len()
    );
    let name = format!("{} (without {shared} images also in --train)", holdout.name);
    Ok(holdout.select(&fresh, name))
}

/// A share of `flagged` out of `n` with its 95 % Wilson interval.
fn share(flagged: usize, n: usize) -> Value {
    json!({ "flagged": flagged, "of": n, "share": flagged as f64 / n.max(1) as f64, "ci95": wilson(flagged, n, 1.96) })
}

/// Epochs of the utility classifiers when `--epochs` is not given.
const DEFAULT_EPOCHS: u64 = 15;

/// Fewest utility training steps by default; a shorter recipe is flagged in the report. (15
/// steps on a 200-image release once reported a 9.6-point gap where 100 steps found none; the
/// shipped protocol trains 700.)
const MIN_UTILITY_STEPS: u64 = 500;

/// Runs the audit and writes audit.json and audit.html.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let started = Instant::now();
    for (flag, value, range) in [
        ("--epochs", args.epochs.unwrap_or(DEFAULT_EPOCHS) as usize, 1..=10_000),
        ("--resamples", args.resamples, 1..=100_000),
        ("--components", args.components, 1..=64),
    ] {
        if let Some(problem) = unpersonal_runtime::bundle::limits::count_problem(value, &range) {
            bail!("{flag} {problem}");
        }
    }
    args.backend.validate()?;
    let loaded = BundleDir::load(&args.bundle)
        .with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let bundle = &loaded.bundle;
    bundle.reid.as_ref().with_context(|| {
        format!(
            "the bundle {} has no re-identification model: the audit cannot link images to people",
            args.bundle.display()
        )
    })?;
    let trainer = match &args.trainer {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("unpersonal-train"),
    };
    if !trainer.is_file() {
        bail!(
            "cannot find the trainer {} (build it: cargo build --release -p unpersonal-trainer), or pass --trainer PATH",
            trainer.display()
        );
    }
    // The report shows real training images: never inside what is shared.
    outdir::check_apart("--out", &args.out, "the release directory", &args.release)?;
    outdir::check_claimable(&args.out, outdir::REPORT_MARKER, "--out")?;
    let (release, report) = load_release(&args.release, &loaded)?;
    if report["privacy_gate"]["applied"] != json!(true) {
        eprintln!(
            "WARNING: {} was generated without the privacy gate; auditing it anyway",
            args.release.display()
        );
    }
    let train = reference::load_split(&args.train, Split::Train, &loaded)?;
    let holdout = without_training_images(
        reference::load_split(&args.holdout, Split::Test, &loaded)?,
        &train,
    )?;
    let test = reference::load_split(&args.test, Split::Test, &loaded)?;
    let real = real_images(args, &loaded, &train, &report)?;
    for (what, set) in
        [("--train", &train), ("--holdout", &holdout), ("--test", &test), ("the release", &release)]
    {
        if set.len() < 2 {
            bail!("{what} ({}) holds {} images; the audit needs at least 2", set.name, set.len());
        }
    }
    let progress = |what: &str| {
        if !out.quiet && !out.json {
            eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
        }
    };

    let backend = args.backend.single_backend()?;
    let load = |role: Role| -> anyhow::Result<Model> {
        Ok(Model::load(backend.as_ref(), bundle.model(role)?, loaded.onnx(role)?)?)
    };
    let norm = &bundle.image.normalization;
    progress("classifier features of every set");
    let mut classifier = load(Role::Classifier)?;
    let features = |data: &Dataset, model: &mut Model| -> anyhow::Result<Array2<f32>> {
        Ok(outputs(model, data, norm)?.1)
    };
    let (l_release, f_release) = outputs(&mut classifier, &release, norm)?;
    let (l_real, _) = outputs(&mut classifier, &real, norm)?;
    let f_train = features(&train, &mut classifier)?;
    let f_holdout = features(&holdout, &mut classifier)?;
    let f_test = features(&test, &mut classifier)?;
    let f_real = features(&real, &mut classifier)?;

    progress("fidelity and diversity");
    let fidelity = json!({
        "feature_space": format!("{} `features` output ({} values)", bundle.model(Role::Classifier)?.file, f_release.ncols()),
        "frechet_release_vs_test": audit::frechet(f_release.view(), f_test.view()),
        "frechet_real_vs_test": audit::frechet(f_real.view(), f_test.view()),
        "manifold_release_vs_real": audit::precision_recall(f_real.view(), f_release.view(), MANIFOLD_K),
        "class_consistency": {
            "release": class_consistency(l_release.view(), &release),
            "real": class_consistency(l_real.view(), &real),
        },
    });

    progress("re-identification against every training image");
    let mut screen = Screen::load(&loaded, backend.as_ref(), false, None)?;
    let embed = |data: &Dataset, screen: &mut Screen| -> anyhow::Result<Array2<f32>> {
        Ok(screen.embed(data.batch(&(0..data.len()).collect::<Vec<_>>()).view())?)
    };
    let e_train = embed(&train, &mut screen)?;
    let e_release = embed(&release, &mut screen)?;
    let e_holdout = embed(&holdout, &mut screen)?;
    screen.add_reference_embeddings(e_train.view());
    let linked = |e: &Array2<f32>, screen: &mut Screen| -> anyhow::Result<usize> {
        Ok(screen.check_embeddings(e.view())?.iter().filter(|v| !v.passed).count())
    };
    let reidentification = json!({
        "rule": format!("same-person probability ≥ {} against any of the {} nearest training images by re-id embedding", screen.threshold(), screen.neighbours()),
        "release": share(linked(&e_release, &mut screen)?, release.len()),
        "holdout": share(linked(&e_holdout, &mut screen)?, holdout.len()),
    });

    progress("distance to closest record and memorisation (Carlini et al.)");
    // One nearest-neighbour search per set and space: the Carlini rows carry each record's
    // distance to its closest training image, which is the pixel DCR.
    let (p_release, p_train, p_holdout) =
        (pixel_rows(&release), pixel_rows(&train), pixel_rows(&holdout));
    let carlini = |x: &Array2<f32>| {
        audit::memorisation(
            x.view(),
            p_train.view(),
            audit::memorisation::DEFAULT_NEIGHBOURS,
            audit::memorisation::DEFAULT_THRESHOLD,
        )
    };
    let (memorised, holdout_memorised) = (carlini(&p_release), carlini(&p_holdout));
    let closest =
        |m: &audit::Memorisation| -> Vec<f64> { m.rows.iter().map(|r| r.distance).collect() };
    let (pixels_release, pixels_holdout) = (closest(&memorised), closest(&holdout_memorised));
    let (embedding_release, embedding_holdout) = (
        audit::closest_record_distances(e_release.view(), e_train.view()),
        audit::closest_record_distances(e_holdout.view(), e_train.view()),
    );
    let pixel_dcr = audit::dcr_of_distances(&pixels_release, &pixels_holdout);
    let embedding_dcr = audit::dcr_of_distances(&embedding_release, &embedding_holdout);
    let histograms = json!({
        "pixels": { "release": pixels_release, "holdout": pixels_holdout },
        "embedding": { "release": embedding_release, "holdout": embedding_holdout },
    });
    let worst: Vec<_> = memorised.rows.iter().take(GALLERY).cloned().collect();
    let memorisation = json!({
        "criterion": format!("ℓ2 pixel distance to the nearest training image < {:.3} × the mean distance to its {} nearest", memorised.threshold, memorised.neighbours),
        "release": share(memorised.memorised, release.len()),
        "holdout": share(holdout_memorised.memorised, holdout.len()),
        "worst": worst,
    });

    progress("singling-out (Anonymeter)");
    let pca = Pca::fit(f_release.view(), args.components);
    let size = train.len().min(holdout.len());
    let (s_release, s_train, s_control) = (
        pca.project(f_release.view()),
        pca.project(subsample(f_train.view(), size, args.seed).view()),
        pca.project(subsample(f_holdout.view(), size, args.seed ^ 1).view()),
    );
    let modes: Vec<_> = [audit::Mode::Univariate, audit::Mode::Multivariate]
        .into_iter()
        .map(|mode| {
            audit::singling_out(
                s_release.view(),
                s_train.view(),
                s_control.view(),
                &SinglingOutConfig { mode, seed: args.seed, ..SinglingOutConfig::default() },
            )
        })
        .collect();
    let singling_out = json!({
        "feature_space": format!("the {} leading principal components (fitted on the release) of the classifier features", pca.variances.len()),
        "records_each": size,
        "modes": modes,
    });

    progress("utility: training the classifier on the release and on the real images");
    let work = tempfile::Builder::new()
        .prefix(".audit-work-")
        .tempdir_in(std::env::temp_dir())
        .context("cannot create a scratch directory")?;
    let batch = 128.min(real.len()).min(release.len());
    let per_epoch = (real.len() / batch).max(1) as u64;
    let steps = match args.epochs {
        Some(epochs) => epochs * per_epoch,
        None => (DEFAULT_EPOCHS * per_epoch).max(MIN_UTILITY_STEPS),
    };
    let recipe = utility::Recipe {
        trainer,
        steps,
        batch,
        seed: args.seed,
        threads: args.trainer_threads.unwrap_or(args.backend.threads),
    };
    let utility = utility::compare(
        recipe,
        utility::Sets { release: &args.release.join("filelist.txt"), real: &real, test: &test },
        work.path(),
        backend.as_ref(),
        norm,
        args.resamples,
    )?;
    let mut utility = serde_json::to_value(utility)?;
    if steps < MIN_UTILITY_STEPS {
        let warning = format!(
            "the utility classifiers trained only {steps} steps (fewer than {MIN_UTILITY_STEPS}): the gap may measure unfinished training rather than the release; raise --epochs"
        );
        if !out.quiet {
            eprintln!("WARNING: {warning}");
        }
        utility["recipe_warning"] = json!(warning);
    }

    let seconds = started.elapsed().as_secs_f64();
    let report_json = json!({
        "release": { "dir": args.release, "images": release.len(), "report": report },
        "data": {
            "train": { "name": train.name, "images": train.len() },
            "holdout": { "name": holdout.name, "images": holdout.len() },
            "test": { "name": test.name, "images": test.len() },
            "real": { "name": real.name, "images": real.len() },
        },
        "bundle": { "name": bundle.name, "dir": args.bundle },
        "backend": backend.name(),
        "utility": utility,
        "fidelity": fidelity,
        "reidentification": reidentification,
        "dcr": { "pixels": pixel_dcr, "embedding": embedding_dcr },
        "memorisation": memorisation,
        "singling_out": singling_out,
        "seconds": seconds,
    });
    let page = html::render(&report_json, &histograms, &release, &train)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    outdir::write_atomically(&args.out.join(outdir::REPORT_MARKER), b"unpersonal\n")?;
    outdir::write_atomically(&args.out.join("audit.json"), &outdir::json_bytes(&report_json)?)?;
    outdir::write_atomically(&args.out.join("audit.html"), page.as_bytes())?;
    out.json(&report_json)?;
    out.text(&html::summary(&report_json));
    out.text(&format!(
        "audit of {} images in {seconds:.0} s → {}",
        release.len(),
        args.out.join("audit.html").display()
    ));
    Ok(())
}
