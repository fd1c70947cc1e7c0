//! Everything that can be wrong with a bundle.

use std::path::PathBuf;

use super::Role;

/// A bundle that cannot be used, with the file and the field or problem.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `bundle.json` is not valid JSON, or a field has the wrong type.
    #[error("{file}: {error}")]
    Json {
        /// The `bundle.json`.
        file: String,
        /// The parser's message (names the field or position).
        error: serde_json::Error,
    },
    /// `schema_version` is one this runtime does not know.
    #[error(
        "{file}: schema_version is {found}, but this runtime reads only schema version {supported}; \
         use a runtime that knows this bundle format",
        supported = super::SCHEMA_VERSION
    )]
    SchemaVersion {
        /// The `bundle.json`.
        file: String,
        /// The version found (as written).
        found: String,
    },
    /// A field holds a value the schema does not allow.
    #[error("{file}: `{field}` {problem}")]
    Invalid {
        /// The `bundle.json`.
        file: String,
        /// Dotted path of the field, e.g. `sampler.steps`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The bundle has no model for a role that is needed.
    #[error(
        "bundle.json: `models.{role}` is missing: this bundle has no {role} model (it has: {present})"
    )]
    MissingRole {
        /// The role asked for.
        role: Role,
        /// The roles the bundle has, comma-separated.
        present: String,
    },
    /// An ONNX file's SHA-256 differs from the one `bundle.json` records.
    #[error(
        "{file} (models.{role}): sha256 is {actual} ({size} bytes), but bundle.json says {expected}; \
         the file is not the one the bundle describes (replaced, truncated or corrupted)"
    )]
    Hash {
        /// The ONNX file.
        file: String,
        /// Its role.
        role: Role,
        /// The hash `bundle.json` records.
        expected: String,
        /// The file's hash.
        actual: String,
        /// The file's size in bytes.
        size: usize,
    },
    /// An ONNX file does not parse as an ONNX model.
    #[error("{file} (models.{role}): not a valid ONNX model (truncated or corrupt?): {reason}")]
    NotOnnx {
        /// The ONNX file.
        file: String,
        /// Its role.
        role: Role,
        /// The parser's message.
        reason: String,
    },
    /// An ONNX graph's declared inputs or outputs differ from `bundle.json`.
    #[error("{file} (models.{role}): {problem}")]
    Interface {
        /// The ONNX file.
        file: String,
        /// Its role.
        role: Role,
        /// Which tensor differs, and how.
        problem: String,
    },
}
