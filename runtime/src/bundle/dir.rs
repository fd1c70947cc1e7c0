//! The file-system edge: a bundle directory read and verified in one go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{BUNDLE_JSON, Bundle, BundleError, Role};

/// A bundle read from a directory, with every model's bytes verified against `bundle.json`.
#[derive(Clone, Debug)]
pub struct BundleDir {
    /// The directory.
    pub dir: PathBuf,
    /// Its `bundle.json` (with `name` filled in from the directory when the file leaves it empty).
    pub bundle: Bundle,
    onnx: BTreeMap<Role, Vec<u8>>,
}

impl BundleDir {
    /// Reads `dir/bundle.json` and every ONNX file it names, and verifies each (hash, parse,
    /// interface). Errors name the file and the problem.
    pub fn load(dir: &Path) -> Result<BundleDir, BundleError> {
        let json_path = dir.join(BUNDLE_JSON);
        let text = std::fs::read_to_string(&json_path).map_err(|error| BundleError::Io { path: json_path.clone(), error })?;
        let mut bundle = Bundle::from_json_at(&text, &json_path.display().to_string())?;
        if bundle.name.is_empty() {
            bundle.name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        }
        let mut onnx = BTreeMap::new();
        for (&role, spec) in &bundle.models {
            let path = dir.join(&spec.file);
            let bytes = std::fs::read(&path).map_err(|error| BundleError::Io { path, error })?;
            bundle.verify(role, &bytes)?;
            onnx.insert(role, bytes);
        }
        Ok(BundleDir { dir: dir.to_path_buf(), bundle, onnx })
    }

    /// The verified ONNX bytes of `role`'s model.
    pub fn onnx(&self, role: Role) -> Result<&[u8], BundleError> {
        self.onnx.get(&role).map(Vec::as_slice).ok_or_else(|| BundleError::MissingRole {
            role,
            present: self.onnx.keys().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}
