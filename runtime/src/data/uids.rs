//! The DICOM files under a folder, found by their SOPInstanceUID: what a findings CSV's
//! `sop_instance_uid` column names ([`super::csv`]).
//!
//! Every file below the root is looked at once, in name order: one that does not start like a
//! DICOM file is passed over after its first 132 bytes, a DICOM file is read up to its
//! PixelData ([`dicom::header`], usually from its first 64 KiB alone). Symbolic links to files
//! inside the root are followed, links to folders (which could loop) and to files outside the
//! root are not. The index holds a digest of each UID, not the UID.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::DataError;
use super::catalog::digest;
use super::filelist::read_prefixed;
use crate::dicom;
use crate::files::open_regular;

/// Bytes of a file read to tell whether it is a DICOM file (preamble and magic).
const MAGIC_BYTES: u64 = 132;

/// Where a SOPInstanceUID was found.
enum Found {
    /// In one file (relative to the root).
    One(PathBuf),
    /// In two files or more (the first two).
    Several(PathBuf, PathBuf),
}

/// The DICOM files under a root, by (a digest of) their SOPInstanceUID.
pub(crate) struct Uids {
    /// The root, as given.
    root: PathBuf,
    files: HashMap<[u8; 16], Found>,
    /// DICOM files looked at.
    dicom_files: usize,
    /// DICOM files whose header could not be read, and the first of them with the reason.
    unreadable: usize,
    first_unreadable: Option<(PathBuf, String)>,
}

impl Uids {
    /// Looks at every file under `root` (`canonical_root` is its real path). Fails only where
    /// a folder cannot be listed; a file that cannot be read is noted, and named by
    /// [`Uids::find`] when a UID is not found.
    pub(crate) fn scan(root: &Path, canonical_root: &Path) -> Result<Uids, DataError> {
        let mut uids = Uids {
            root: root.to_path_buf(),
            files: HashMap::new(),
            dicom_files: 0,
            unreadable: 0,
            first_unreadable: None,
        };
        let mut folders = vec![PathBuf::new()];
        while let Some(folder) = folders.pop() {
            let full = root.join(&folder);
            let mut entries = std::fs::read_dir(&full)
                .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DataError::io(&full, e))?;
            entries.sort_by_key(|entry| entry.file_name());
            let mut below = Vec::new();
            for entry in entries {
                let rel = folder.join(entry.file_name());
                let file_type = entry.file_type().map_err(|e| DataError::io(&entry.path(), e))?;
                if file_type.is_dir() {
                    below.push(rel);
                } else if file_type.is_file()
                    || (file_type.is_symlink()
                        && links_to_file_inside(&entry.path(), canonical_root))
                {
                    uids.look_at(rel);
                }
            }
            // Depth first, in name order.
            folders.extend(below.into_iter().rev());
        }
        Ok(uids)
    }

    /// Indexes the file `rel` if it is a DICOM file with a SOPInstanceUID.
    fn look_at(&mut self, rel: PathBuf) {
        let path = self.root.join(&rel);
        match is_dicom_file(&path) {
            Ok(false) => return,
            Ok(true) => self.dicom_files += 1,
            Err(problem) => return self.unreadable(rel, problem),
        }
        let uid = read_prefixed(&path, |bytes| {
            dicom::header(bytes)?
                .sop_instance_uid
                .ok_or_else(|| "the DICOM file has no SOPInstanceUID".to_string())
        });
        match uid {
            Ok(uid) => {
                let key = digest(uid.as_bytes());
                let found = match self.files.remove(&key) {
                    None => Found::One(rel),
                    Some(Found::One(first)) => Found::Several(first, rel),
                    Some(several) => several,
                };
                self.files.insert(key, found);
            }
            Err(problem) => self.unreadable(rel, problem),
        }
    }

    /// Notes a file whose header could not be read.
    fn unreadable(&mut self, rel: PathBuf, problem: String) {
        self.unreadable += 1;
        self.first_unreadable.get_or_insert((rel, problem));
    }

    /// The file (relative to the root) whose SOPInstanceUID is `uid`; the error says why there
    /// is none, or names two.
    pub(crate) fn find(&self, uid: &str) -> Result<&Path, String> {
        match self.files.get(&digest(uid.as_bytes())) {
            Some(Found::One(path)) => Ok(path),
            Some(Found::Several(first, second)) => Err(format!(
                "two DICOM files under {} have SOPInstanceUID {uid}: {} and {}",
                self.root.display(),
                first.display(),
                second.display()
            )),
            None => {
                let mut message = format!(
                    "no DICOM file under {} has SOPInstanceUID {uid} ({} DICOM files looked at",
                    self.root.display(),
                    self.dicom_files
                );
                if let Some((path, problem)) = &self.first_unreadable {
                    message.push_str(&format!(
                        "; {} could not be read, e.g. {}: {problem}",
                        self.unreadable,
                        path.display()
                    ));
                }
                message.push(')');
                Err(message)
            }
        }
    }
}

/// A summary: the index names files of patients.
impl fmt::Debug for Uids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uids")
            .field("root", &self.root)
            .field("uids", &self.files.len())
            .field("dicom_files", &self.dicom_files)
            .field("unreadable", &self.unreadable)
            .finish_non_exhaustive()
    }
}

/// Whether the symbolic link `link` leads to a regular file inside `canonical_root`.
fn links_to_file_inside(link: &Path, canonical_root: &Path) -> bool {
    std::fs::metadata(link).is_ok_and(|m| m.is_file())
        && link.canonicalize().is_ok_and(|real| real.starts_with(canonical_root))
}

/// Whether the file at `path` starts like a DICOM file (an empty or short file does not).
fn is_dicom_file(path: &Path) -> Result<bool, String> {
    let file = open_regular(path).map_err(|e| format!("cannot read it ({e})"))?;
    let mut start = Vec::new();
    file.take(MAGIC_BYTES).read_to_end(&mut start).map_err(|e| format!("cannot read it ({e})"))?;
    Ok(dicom::is_dicom(&start))
}
