//! Writing exported models into a model bundle directory (`bundle.json` + ONNX files).
//!
//! The trainer adds or replaces one model entry (by role) and keeps the rest of an existing
//! `bundle.json`. The schema is documented in `docs/bundle.md`.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::checkpoint::write_atomically;
use crate::data::{Dataset, Normalization};

/// Version of the `bundle.json` schema this trainer writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A named tensor of a model's interface; `"batch"` marks the symbolic batch axis.
pub fn tensor_spec(name: &str, dims: &[usize]) -> Value {
    let shape: Vec<Value> =
        std::iter::once(json!("batch")).chain(dims.iter().map(|&d| json!(d))).collect();
    json!({ "name": name, "shape": shape })
}

/// One model of the bundle.
pub struct Entry<'a> {
    /// Role (`classifier`, `features`, `denoiser`, …).
    pub role: &'a str,
    /// File name inside the bundle directory.
    pub file: &'a str,
    /// ONNX bytes.
    pub onnx: &'a [u8],
    /// Inputs, from [`tensor_spec`].
    pub inputs: Vec<Value>,
    /// Outputs, from [`tensor_spec`].
    pub outputs: Vec<Value>,
    /// Architecture and training facts.
    pub provenance: Value,
}

/// Writes the entries' ONNX files and records them in `dir/bundle.json` (replacing entries
/// of the same roles and top-level fields named in the object `sections`), all atomically.
pub fn write(
    dir: &Path,
    data: &Dataset,
    norm: Normalization,
    entries: Vec<Entry>,
    sections: Value,
) -> anyhow::Result<()> {
    for entry in &entries {
        write_atomically(&dir.join(entry.file), entry.onnx)?;
    }
    let path = dir.join("bundle.json");
    let mut bundle: Value = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let root = bundle
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    root.insert("schema_version".into(), json!(SCHEMA_VERSION));
    root.entry("name")
        .or_insert(json!(dir.file_name().and_then(|n| n.to_str()).unwrap_or("bundle")));
    root.insert(
        "image".into(),
        json!({
            "channels": data.channels, "height": data.height, "width": data.width,
            "normalization": { "mean": norm.mean, "std": norm.std,
                               "formula": "x = (pixel / 255 - mean) / std" },
        }),
    );
    root.insert(
        "labels".into(),
        json!({ "count": data.num_labels, "multi_label": data.multi_label }),
    );
    if let Value::Object(sections) = sections {
        root.extend(sections);
    }
    let models = root.entry("models").or_insert(json!({}));
    let models = models
        .as_object_mut()
        .with_context(|| format!("{}: `models` is not an object", path.display()))?;
    for entry in entries {
        models.insert(
            entry.role.into(),
            json!({
                "file": entry.file,
                "sha256": sha256_hex(entry.onnx),
                "inputs": entry.inputs,
                "outputs": entry.outputs,
                "provenance": entry.provenance,
            }),
        );
    }
    let mut text = serde_json::to_string_pretty(&bundle)?;
    text.push('\n');
    Ok(write_atomically(&path, text.as_bytes())?)
}

/// SHA-256 of `bytes`, lowercase hex (as `bundle.json` records files).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hexadecimal of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
