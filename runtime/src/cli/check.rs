//! `unpersonal check`: checks arbitrary images against a reference set: no image may be a
//! pixel near-copy of a reference ([`near_copy`]), nor be linked to one by the privacy gate's
//! re-identification test; the exit status is 0 only if every image passes, and the output
//! states the guarantee and the calibration it rests on.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use ndarray::Array4;
use serde_json::json;
use unpersonal_runtime::bundle::BundleDir;
use unpersonal_runtime::bundle::limits::{self, count_problem};
use unpersonal_runtime::data::load_image_sized;
use unpersonal_runtime::gate::Screen;
use unpersonal_runtime::near_copy::{self, NearCopies};

use super::{BackendArgs, Output, reference};

/// Arguments of `unpersonal check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The images to check (PNG or JPEG, the bundle's image size).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    /// The bundle directory; it must hold the re-identification model (reid_embed, reid_head,
    /// reid.threshold).
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist", value_parser = super::bundle_dir)]
    pub bundle: PathBuf,
    /// The real images nobody may be re-identified from: a filelist or an IDX directory
    /// (default: the bundle's shipped sample).
    #[arg(long, value_name = "DATA")]
    pub reference: Option<PathBuf>,
    /// Each image is compared with this many nearest references by embedding (default: the
    /// bundle's reid.neighbours).
    #[arg(long, value_name = "K")]
    pub neighbours: Option<usize>,
    /// Apply the re-identification model's strict threshold (reid.threshold, calibrated to
    /// catch near-copies of a known source) against every compared reference, instead of the
    /// neighbour threshold (reid.neighbour_threshold, calibrated to let unseen people pass).
    /// Expect many more images to fail.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Embeds the references and the images and prints a verdict per image.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let loaded = BundleDir::load(&args.bundle)
        .with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let bundle = &loaded.bundle;
    // An image checked here has no source: every reference is "another" one for it.
    let (rule, neighbours) =
        bundle.reid.as_ref().map(|r| (r, args.neighbours.unwrap_or(r.neighbours))).with_context(
            || {
                format!(
                    "the bundle {} has no re-identification model: nothing can be checked",
                    args.bundle.display()
                )
            },
        )?;
    if let Some(problem) = count_problem(neighbours, &limits::NEIGHBOURS) {
        bail!("--neighbours {problem}");
    }
    let backend = args.backend.single_backend()?;
    let mut screen = Screen::load(&loaded, backend.as_ref(), args.strict, Some(neighbours))?;
    let threshold = screen.threshold();
    let [c, h, w] = [bundle.image.channels, bundle.image.height, bundle.image.width];

    let mut pixels = Array4::<u8>::zeros((args.images.len(), c, h, w));
    for (mut row, path) in pixels.outer_iter_mut().zip(&args.images) {
        let (_, _, bytes) = load_image_sized(path, c, Some((w as u32, h as u32)))
            .with_context(|| format!("the bundle's images are {w}×{h} pixels"))?;
        row.iter_mut().zip(bytes).for_each(|(v, p)| *v = p);
    }
    let references = reference::open(args.reference.as_deref(), &loaded)?;
    let (name, count) = (references.name(), references.len());
    let started = Instant::now();
    let mut copies = NearCopies::new(pixels.view());
    references.scan(&loaded, |chunk| {
        copies.add(chunk);
        Ok(screen.add_references(chunk)?)
    })?;
    let copies = copies.finish();
    let indexed = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut verdicts = screen.check(pixels.view())?;
    for (verdict, copy) in verdicts.iter_mut().zip(&copies) {
        verdict.passed &= !copy.is_some_and(|m| m.is_near_copy());
    }
    let checking = started.elapsed().as_secs_f64();
    let guarantee = format!(
        "an image passes only if it is no pixel near-copy of any reference (correlation ≥ {} with it or its mirror image, or a mean difference ≤ {} gray levels) and the re-identification model gives it a same-person probability below {threshold} against each of its {neighbours} nearest references by embedding ({}). What the model catches beyond near-copies is what its calibration says: {}",
        near_copy::CORRELATION,
        near_copy::MEAN_ABS_DIFF,
        if args.strict {
            "--strict: the threshold calibrated to catch near-copies of a known source"
        } else {
            "the neighbour threshold, calibrated to let unseen people pass; --strict applies the source threshold"
        },
        rule.calibration
    );

    let failed = verdicts.iter().filter(|v| !v.passed).count();
    let rows: Vec<_> = args
        .images
        .iter()
        .zip(&verdicts)
        .zip(&copies)
        .map(|((path, v), copy)| {
            json!({ "image": path, "passed": v.passed, "max_same_person_probability": v.max_probability,
                    "closest_reference": v.closest_reference, "references_compared": v.compared,
                    "pixel_match": copy.map(|m| json!({ "reference": m.reference, "correlation": m.correlation,
                        "mirrored": m.flipped, "mean_abs_diff": m.mean_abs_diff, "near_copy": m.is_near_copy() })) })
        })
        .collect();
    let seconds = json!({ "embedding_references": indexed, "checking_images": checking, "images_per_second": args.images.len() as f64 / checking.max(1e-9) });
    out.json(&json!({ "guarantee": guarantee, "threshold": threshold, "strict": args.strict, "reference": name, "reference_images": count, "images": rows, "failed": failed, "seconds": seconds }))?;
    out.text(&format!("check: {guarantee}"));
    for ((path, v), copy) in args.images.iter().zip(&verdicts).zip(&copies) {
        let verdict = if v.passed { "PASS" } else { "FAIL" };
        let closest = v.closest_reference.map_or("none".to_string(), |r| format!("reference #{r}"));
        let pixels = match copy {
            Some(m) if m.is_near_copy() => format!(
                "; a pixel near-copy of reference #{}{} (correlation {:.4}, mean difference {:.1} gray levels)",
                m.reference,
                if m.flipped { " mirrored" } else { "" },
                m.correlation,
                m.mean_abs_diff
            ),
            _ => String::new(),
        };
        out.text(&format!("{verdict} {}  (max same-person probability {:.4} vs {closest}; threshold {threshold}, or the reference's own probability against itself if lower{pixels})", path.display(), v.max_probability));
    }
    if failed > 0 {
        bail!(
            "{failed} of {} images could single out a person in {} (a pixel near-copy, or same-person probability ≥ {threshold})",
            args.images.len(),
            name
        );
    }
    Ok(())
}
