//! `unpersonal check`: checks arbitrary images against a reference set with the privacy gate's
//! re-identification test; the exit status is 0 only if every image passes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use ndarray::{Array4, Axis};
use serde_json::json;
use unpersonal_runtime::backend::Model;
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::data::load_image;
use unpersonal_runtime::gate::{ReferenceSet, Reid, check};

use super::{BackendArgs, Output, reference};

/// Arguments of `unpersonal check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The images to check (PNG or JPEG, the bundle's image size).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    /// The bundle directory; it must hold the re-identification model (reid_embed, reid_head,
    /// reid.threshold).
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist")]
    pub bundle: PathBuf,
    /// The real images nobody may be re-identified from: a filelist or an IDX directory
    /// (default: the bundle's shipped sample).
    #[arg(long, value_name = "DATA")]
    pub reference: Option<PathBuf>,
    /// Each image is compared with this many nearest references by embedding (default: the
    /// bundle's reid.neighbours).
    #[arg(long, value_name = "K")]
    pub neighbours: Option<usize>,
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
    let backend = args.backend.single_backend()?;
    let load = |role: Role| -> anyhow::Result<Model> {
        Ok(Model::load(backend.as_ref(), bundle.model(role)?, loaded.onnx(role)?)?)
    };
    let mut reid = Reid::new(
        load(Role::ReidEmbed)?,
        load(Role::ReidHead)?,
        rule.threshold,
        rule.neighbour_threshold(),
    )?;
    let threshold = rule.neighbour_threshold();
    let norm = &bundle.image.normalization;
    let [c, h, w] = [bundle.image.channels, bundle.image.height, bundle.image.width];

    let references = reference::open(args.reference.as_deref(), &loaded)?;
    let (name, count) = (references.name(), references.len());
    let started = Instant::now();
    let refs = {
        let mut parts = Vec::new();
        references.scan(&loaded, |pixels| {
            parts.push(reid.embed_pixels(pixels, norm)?);
            Ok(())
        })?;
        let views: Vec<_> = parts.iter().map(|e| e.view()).collect();
        ReferenceSet::new(ndarray::concatenate(Axis(0), &views)?)
    };
    let indexed = started.elapsed().as_secs_f64();

    let mut pixels = Array4::<u8>::zeros((args.images.len(), c, h, w));
    for (mut row, path) in pixels.outer_iter_mut().zip(&args.images) {
        let (ih, iw, bytes) = load_image(path, c)?;
        if (ih, iw) != (h, w) {
            bail!(
                "{}: the image is {iw}×{ih} pixels, the bundle's images are {w}×{h}",
                path.display()
            );
        }
        row.iter_mut().zip(bytes).for_each(|(v, p)| *v = p);
    }
    let started = Instant::now();
    let image_embeddings = reid.embed_pixels(pixels.view(), norm)?;
    let verdicts = check(
        &mut reid,
        &refs,
        image_embeddings.view(),
        &vec![None; args.images.len()],
        neighbours,
    )?;
    let checking = started.elapsed().as_secs_f64();

    let failed = verdicts.iter().filter(|v| !v.passed).count();
    let rows: Vec<_> = args
        .images
        .iter()
        .zip(&verdicts)
        .map(|(path, v)| {
            json!({ "image": path, "passed": v.passed, "max_same_person_probability": v.max_probability,
                    "closest_reference": v.closest_reference, "references_compared": v.compared })
        })
        .collect();
    let seconds = json!({ "embedding_references": indexed, "checking_images": checking, "images_per_second": args.images.len() as f64 / checking.max(1e-9) });
    out.json(&json!({ "threshold": threshold, "reference": name, "reference_images": count, "images": rows, "failed": failed, "seconds": seconds }))?;
    for (path, v) in args.images.iter().zip(&verdicts) {
        let verdict = if v.passed { "PASS" } else { "FAIL" };
        let closest = v.closest_reference.map_or("none".to_string(), |r| format!("reference #{r}"));
        out.text(&format!("{verdict} {}  (max same-person probability {:.4} vs {closest}; threshold {threshold}, or the reference's own probability against itself if lower)", path.display(), v.max_probability));
    }
    if failed > 0 {
        bail!(
            "{failed} of {} images could single out a person in {} (same-person probability ≥ {threshold})",
            args.images.len(),
            name
        );
    }
    Ok(())
}
