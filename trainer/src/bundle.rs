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
    self as schema, Bundle, Dim, EdmSpec, ImageSpec, LabelSpec, ModelSpec, ReidSpec, Role,
    SCHEMA_VERSION, SamplerSpec, TensorSpec,
};

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
            image: image_spec(data, norm),
            labels: label_spec(data),
            models: BTreeMap::new(),
            edm: None,
            sampler: SamplerSpec::default(),
            reid: None,
        },
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    bundle.schema_version = SCHEMA_VERSION;
    bundle.image = image_spec(data, norm);
    bundle.labels = label_spec(data);
    if let Some(edm) = sections.edm {
        bundle.edm = Some(edm);
    }
    if let Some(reid) = sections.reid {
        bundle.reid = Some(reid);
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
fn image_spec(data: &Dataset, norm: Normalization) -> ImageSpec {
    ImageSpec {
        channels: data.channels,
        height: data.height,
        width: data.width,
        normalization: schema::Normalization {
            mean: norm.mean,
            std: norm.std,
            formula: "x = (pixel / 255 - mean) / std".into(),
        },
    }
}

/// The labels section of a data set.
fn label_spec(data: &Dataset) -> LabelSpec {
    LabelSpec { count: data.num_labels, multi_label: data.multi_label }
}
