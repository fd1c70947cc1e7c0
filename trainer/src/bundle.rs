//! Writing exported models into a model bundle directory (`bundle.json` + ONNX files), through
//! the runtime's own typed schema ([`unpersonal_runtime::bundle::Bundle`]): what the trainer
//! writes is what the runtime reads, field for field.
//!
//! The trainer adds or replaces one model entry (by role) and keeps the rest of an existing
//! `bundle.json`. The schema is documented in `docs/bundle.md`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use unpersonal_runtime::bundle::{
    self as schema, Bundle, Dim, DistilledSpec, EdmSpec, ImageSpec, LabelSpec, ModelSpec, ReidSpec,
    ResizeRule, ResizeSpec, Role, SCHEMA_VERSION, SamplerSpec, TensorSpec,
};
use unpersonal_runtime::sampler::Solver;

use crate::checkpoint::write_atomically;
use crate::data::{Dataset, Normalization};

pub use unpersonal_runtime::bundle::sha256_hex;

/// A named tensor of a model's interface, with the symbolic batch axis first.
pub fn tensor_spec(name: &str, dims: &[usize]) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        shape: std::iter::once(Dim::Batch).chain(dims.iter().map(|&d| Dim::Fixed(d))).collect(),
    }
}

/// One model of the bundle.
pub struct Entry<'a> {
    /// Its role.
    pub role: Role,
    /// File name inside the bundle directory.
    pub file: &'a str,
    /// ONNX bytes.
    pub onnx: &'a [u8],
    /// Inputs, from [`tensor_spec`].
    pub inputs: Vec<TensorSpec>,
    /// Outputs, from [`tensor_spec`].
    pub outputs: Vec<TensorSpec>,
    /// Architecture and training facts.
    pub provenance: Value,
}

/// The sections of `bundle.json` a trainer command sets besides its models (each replaces
/// the one there when present).
#[derive(Default)]
pub struct Sections {
    /// The EDM constants of a denoiser.
    pub edm: Option<EdmSpec>,
    /// The re-identification decision rule.
    pub reid: Option<ReidSpec>,
    /// Sampler settings, written only into a bundle that has none of its own yet (a user's
    /// tuned choice is kept).
    pub sampler: Option<SamplerSpec>,
    /// The square side the training images were brought to by the size rule
    /// (`image.resize`), so that the runtime brings references of any size to it alike.
    pub resize: Option<usize>,
    /// How the student samples (`sampler.distilled`), written with a `student` entry.
    pub distilled: Option<DistilledSpec>,
}

/// The sampler settings chosen by measurement on the shipped Fashion-MNIST denoiser
/// (docs/denoiser.md: fidelity, class consistency and diversity per solver and guidance):
/// DPM-Solver++(2M) in 10 steps, guidance 1.7 only at σ ≤ 5, 4 candidates per image and round
/// — 40 denoiser evaluations per reference image and round where the schema's defaults (Heun,
/// 18 steps, 32 candidates) take 1,120. A newly trained denoiser starts from them; tune them for
/// a site's data with `unpersonal-train evaluate-denoiser`.
pub fn measured_sampler() -> SamplerSpec {
    SamplerSpec {
        solver: Solver::DpmPp2M,
        steps: 10,
        guidance: 1.7,
        guidance_interval: Some([0.0, 5.0]),
        candidates_per_image: 4,
        ..SamplerSpec::default()
    }
}

/// Writes the entries' ONNX files and records them in `dir/bundle.json` (replacing entries
/// of the same roles, and the sections given), all atomically. An existing `bundle.json` is
/// read with the runtime's parser, so a bundle the runtime would refuse is not extended.
pub fn write(
    dir: &Path,
    data: &Dataset,
    norm: Normalization,
    entries: Vec<Entry>,
    sections: Sections,
) -> anyhow::Result<()> {
    for entry in &entries {
        write_atomically(&dir.join(entry.file), entry.onnx)?;
    }
    let path = dir.join(schema::BUNDLE_JSON);
    let mut bundle = match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
            Bundle::from_json_at(&text, &path.display().to_string())?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Bundle {
            schema_version: SCHEMA_VERSION,
            name: dir.file_name().and_then(|n| n.to_str()).unwrap_or("bundle").to_string(),
            image: image_spec(data, norm, sections.resize),
            labels: label_spec(data),
            models: BTreeMap::new(),
            edm: None,
            sampler: SamplerSpec::default(),
            reid: None,
            privacy: None,
        },
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    bundle.schema_version = SCHEMA_VERSION;
    bundle.image = image_spec(data, norm, sections.resize);
    bundle.labels = label_spec(data);
    if let Some(edm) = sections.edm {
        bundle.edm = Some(edm);
    }
    if let Some(reid) = sections.reid {
        bundle.reid = Some(reid);
    }
    if let Some(sampler) = sections.sampler
        && bundle.sampler == SamplerSpec::default()
    {
        bundle.sampler = sampler;
    }
    if let Some(distilled) = sections.distilled {
        bundle.sampler.distilled = Some(distilled);
    }
    let writes = |role: Role| entries.iter().any(|e| e.role == role);
    if writes(Role::Denoiser)
        && !writes(Role::Student)
        && bundle.models.remove(&Role::Student).is_some()
    {
        // A student learnt the denoiser being replaced: it goes with it.
        eprintln!(
            "{}: the distilled student no longer matches the new denoiser and is removed from the bundle (distil it again)",
            path.display()
        );
        bundle.sampler.distilled = None;
        if bundle.sampler.solver == Solver::Distilled {
            bundle.sampler.solver = measured_sampler().solver;
        }
    }
    if !entries.is_empty() {
        // A privacy record describes the weights that were audited: new weights void it.
        bundle.privacy = None;
    }
    for entry in entries {
        bundle.models.insert(
            entry.role,
            ModelSpec {
                file: entry.file.to_string(),
                sha256: sha256_hex(entry.onnx),
                inputs: entry.inputs,
                outputs: entry.outputs,
                provenance: entry.provenance,
            },
        );
    }
    let mut text = serde_json::to_string_pretty(&bundle)?;
    text.push('\n');
    Ok(write_atomically(&path, text.as_bytes())?)
}

/// The image section of a data set read with `norm`.
fn image_spec(data: &Dataset, norm: Normalization, resize: Option<usize>) -> ImageSpec {
    ImageSpec {
        channels: data.channels,
        height: data.height,
        width: data.width,
        normalization: schema::Normalization {
            mean: norm.mean,
            std: norm.std,
            formula: "x = (pixel / 255 - mean) / std".into(),
        },
        resize: resize
            .map(|size| ResizeSpec { rule: ResizeRule::ShorterSideTriangleCenterCrop, size }),
    }
}

/// The labels section of a data set.
fn label_spec(data: &Dataset) -> LabelSpec {
    LabelSpec { count: data.num_labels, multi_label: data.multi_label }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Dataset {
        Dataset {
            name: "synthetic".into(),
            channels: 1,
            height: 2,
            width: 2,
            num_labels: 2,
            multi_label: false,
            images: vec![0; 8],
            labels: vec![1.0, 0.0, 0.0, 1.0],
            allows_hflip: true,
            identities: vec![None; 2],
            label_names: Vec::new(),
        }
    }

    fn denoiser_entry(onnx: &[u8]) -> Entry<'_> {
        Entry {
            role: Role::Denoiser,
            file: "denoiser.onnx",
            onnx,
            inputs: vec![
                tensor_spec("x", &[1, 2, 2]),
                tensor_spec("sigma", &[]),
                tensor_spec("condition", &[3]),
                tensor_spec("condition_mask", &[]),
            ],
            outputs: vec![tensor_spec("denoised", &[1, 2, 2])],
            provenance: Value::Null,
        }
    }

    fn read(dir: &Path) -> Bundle {
        let text = std::fs::read_to_string(dir.join(schema::BUNDLE_JSON)).unwrap();
        Bundle::from_json_at(&text, "bundle.json").unwrap()
    }

    #[test]
    fn a_new_denoiser_brings_the_measured_sampler_and_a_tuned_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sections = || Sections { sampler: Some(measured_sampler()), ..Sections::default() };
        let norm = Normalization::SYMMETRIC;
        write(dir.path(), &data(), norm, vec![denoiser_entry(b"one")], sections()).unwrap();
        assert_eq!(read(dir.path()).sampler, measured_sampler());

        // A user's own tuning survives retraining.
        let mut bundle = read(dir.path());
        bundle.sampler.steps = 14;
        let text = serde_json::to_string_pretty(&bundle).unwrap();
        std::fs::write(dir.path().join(schema::BUNDLE_JSON), text).unwrap();
        write(dir.path(), &data(), norm, vec![denoiser_entry(b"two")], sections()).unwrap();
        let bundle = read(dir.path());
        assert_eq!(bundle.sampler.steps, 14, "a tuned sampler section was replaced");
        assert_eq!(bundle.models[&Role::Denoiser].sha256, sha256_hex(b"two"));
    }
}
