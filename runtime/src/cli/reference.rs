//! The reference set of `generate` and `check`: `--reference DATA`, or the bundle's shipped
//! sample, checked against the bundle's image size and labels.

use std::path::{Path, PathBuf};

use unpersonal_runtime::bundle::BundleDir;
use unpersonal_runtime::data::{Dataset, FilelistOptions, Split, load_filelist};

/// Loads `path` (a filelist or an IDX directory), or the bundle's shipped sample when `None`.
pub fn load(path: Option<&Path>, loaded: &BundleDir) -> anyhow::Result<Dataset> {
    match path {
        Some(path) => load_from(path, loaded),
        None => load_from(&default_path(&loaded.dir)?, loaded),
    }
}

/// The bundle's shipped reference sample.
fn default_path(bundle_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = bundle_dir.join("reference").join("filelist.txt");
    anyhow::ensure!(path.is_file(), "the bundle {} ships no reference sample ({} is missing): pass --reference", bundle_dir.display(), path.display());
    Ok(path)
}

/// Loads the reference set (images with the bundle's channel count) and checks that it fits
/// the bundle.
fn load_from(path: &Path, loaded: &BundleDir) -> anyhow::Result<Dataset> {
    let image = &loaded.bundle.image;
    let data = if path.is_file() {
        load_filelist(path, &FilelistOptions { channels: image.channels, ..FilelistOptions::default() })?
    } else {
        Dataset::load(path, Split::Train)?
    };
    anyhow::ensure!(
        (data.channels, data.height, data.width) == (image.channels, image.height, image.width),
        "{}: reference images are {}×{}×{} (channels × height × width), the bundle {} makes {}×{}×{}",
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
        "{}: reference images carry {} labels, the bundle {} has {}",
        path.display(),
        data.num_labels,
        loaded.bundle.name,
        loaded.bundle.labels.count
    );
    Ok(data)
}

