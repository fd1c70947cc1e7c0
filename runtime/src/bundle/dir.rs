//! The file-system edge: a bundle directory read and verified in one go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{BUNDLE_JSON, Bundle, BundleError, Role};
use crate::files::{MAX_FILE_BYTES, read_regular};

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
        BundleDir::read_with(dir, |path| read_regular(path, MAX_FILE_BYTES))
    }

    /// [`BundleDir::load`] with the files' bytes coming from `read` (given `dir` joined with a
    /// file's name): a bundle fetched over the network or held in memory.
    pub fn read_with(
        dir: &Path,
        mut read: impl FnMut(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<BundleDir, BundleError> {
        let json_path = dir.join(BUNDLE_JSON);
        let io = |path: &Path, error| BundleError::Io { path: path.to_path_buf(), error };
        let bytes = read(&json_path).map_err(|e| io(&json_path, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| io(&json_path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let mut bundle = Bundle::from_json_at(&text, &json_path.display().to_string())?;
        if bundle.name.is_empty() {
            bundle.name =
                dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        }
        let mut onnx = BTreeMap::new();
        for (&role, spec) in &bundle.models {
            let path = dir.join(&spec.file);
            let bytes = read(&path).map_err(|e| io(&path, e))?;
            bundle.verify(role, &bytes)?;
            onnx.insert(role, bytes);
        }
        Ok(BundleDir { dir: dir.to_path_buf(), bundle, onnx })
    }

    /// Reads every model file again and checks it against `bundle.json`'s hash: a file
    /// replaced on disk after loading is reported by name, so that a long run stops before it
    /// releases more images from a bundle that is no longer the one on disk.
    pub fn recheck(&self) -> Result<(), BundleError> {
        for (&role, spec) in &self.bundle.models {
            let path = self.dir.join(&spec.file);
            let bytes = read_regular(&path, MAX_FILE_BYTES)
                .map_err(|error| BundleError::Io { path, error })?;
            self.bundle.verify_hash(role, &bytes)?;
        }
        Ok(())
    }

    /// The verified ONNX bytes of `role`'s model.
    pub fn onnx(&self, role: Role) -> Result<&[u8], BundleError> {
        self.onnx.get(&role).map(Vec::as_slice).ok_or_else(|| BundleError::MissingRole {
            role,
            present: self.onnx.keys().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}
