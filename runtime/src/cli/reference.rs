//! The image sets of `generate`, `check` and `audit` (`--reference DATA`, or the bundle's
//! shipped sample), checked against the bundle's image size and labels.

use std::path::{Path, PathBuf};

use anyhow::Context;

use unpersonal_runtime::bundle::BundleDir;
use unpersonal_runtime::data::{Dataset, FilelistOptions, Split, load_filelist};

/// Loads `path` (a filelist, a folder with a filelist, or an IDX directory), or the bundle's shipped sample when `None`.
pub fn load(path: Option<&Path>, loaded: &BundleDir) -> anyhow::Result<Dataset> {
    match path {
        Some(path) => load_split(path, Split::Train, loaded),
        None => load_split(&default_path(&loaded.dir)?, Split::Train, loaded),
    }
}

/// The bundle's shipped reference sample.
fn default_path(bundle_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = bundle_dir.join("reference").join("filelist.txt");
    anyhow::ensure!(path.is_file(), "the bundle {} ships no reference sample ({} is missing): pass --reference", bundle_dir.display(), path.display());
    Ok(path)
}

/// The filelist a folder of images carries (as the bundle's shipped `reference/` folder does).
const FOLDER_FILELIST: &str = "filelist.txt";

/// Loads an image set (a filelist, a folder holding a `filelist.txt`, or `split` of an IDX
/// directory) with the bundle's channel count and checks that it fits the bundle.
pub fn load_split(path: &Path, split: Split, loaded: &BundleDir) -> anyhow::Result<Dataset> {
    let image = &loaded.bundle.image;
    let folder_list = path.join(FOLDER_FILELIST);
    let list = if path.is_dir() && folder_list.is_file() { Some(folder_list.as_path()) } else { path.is_file().then_some(path) };
    let data = match list {
        Some(list) => load_filelist(list, &FilelistOptions { channels: image.channels, ..FilelistOptions::default() })?,
        None => Dataset::load(path, split).with_context(|| {
            format!("{} is neither a filelist, nor a folder holding a {FOLDER_FILELIST} that names its images (PNG, JPEG, DICOM) and their labels, nor an IDX directory", path.display())
        })?,
    };
    anyhow::ensure!(
        (data.channels, data.height, data.width) == (image.channels, image.height, image.width),
        "{}: images are {}×{}×{} (channels × height × width), the bundle {} makes {}×{}×{}",
        path.display(),
        data.channels,
        data.height,
        data.width,
        loaded.bundle.name,
        image.channels,
        image.height,
        image.width
    );
    anyhow::ensure!(
        data.num_labels == loaded.bundle.labels.count,
        "{}: images carry {} labels, the bundle {} has {}",
        path.display(),
        data.num_labels,
        loaded.bundle.name,
        loaded.bundle.labels.count
    );
    Ok(data)
}

