//! The image sets of `generate`, `check` and `audit` (`--reference DATA`, or the bundle's
//! shipped sample), checked against the bundle's image size and labels. Where the bundle
//! records a size rule (`image.resize`), every image is brought to its size by that rule, as
//! its training images were.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ndarray::{ArrayView4, Axis};

use unpersonal_runtime::bundle::BundleDir;
use unpersonal_runtime::data::{Dataset, Filelist, FilelistOptions, Images, Split};
use unpersonal_runtime::gate::EMBED_BATCH;

/// A reference set, opened: a filelist (or findings CSV) whose lines were checked, its images
/// read only by [`Reference::scan`], or an IDX split held in memory (the IDX file bounds it).
pub enum Reference {
    /// A filelist or findings CSV (or a folder holding a filelist).
    Filelist(Filelist),
    /// A split of an IDX directory.
    Idx(Dataset),
}

/// Opens `path` (a filelist, a folder with a filelist, or an IDX directory), or the bundle's
/// shipped sample when `None`.
pub fn open(path: Option<&Path>, loaded: &BundleDir) -> anyhow::Result<Reference> {
    open_split(&resolve(path, loaded)?, Split::Train, loaded)
}

/// Loads into memory what [`open`] opens.
pub fn load(path: Option<&Path>, loaded: &BundleDir) -> anyhow::Result<Dataset> {
    load_split(&resolve(path, loaded)?, Split::Train, loaded)
}

/// `path`, or the bundle's shipped reference sample when `None`.
pub fn resolve(path: Option<&Path>, loaded: &BundleDir) -> anyhow::Result<PathBuf> {
    if let Some(path) = path {
        return Ok(path.to_path_buf());
    }
    let path = loaded.dir.join("reference").join("filelist.txt");
    anyhow::ensure!(
        path.is_file(),
        "the bundle {} ships no reference sample ({} is missing): pass --reference",
        loaded.dir.display(),
        path.display()
    );
    Ok(path)
}

/// The filelist a folder of images carries (as the bundle's shipped `reference/` folder does).
const FOLDER_FILELIST: &str = "filelist.txt";

/// How the images of a set are read for the bundle: its channels, its size (and the size rule
/// that brings images to it, where it records one), and single-label rows for a single-label
/// bundle.
fn options(loaded: &BundleDir) -> FilelistOptions {
    let image = &loaded.bundle.image;
    FilelistOptions {
        channels: image.channels,
        size: Some((image.width as u32, image.height as u32)),
        one_hot: !loaded.bundle.labels.multi_label,
        resize: image.resize.map(|rule| rule.size),
        ..FilelistOptions::default()
    }
}

/// Opens an image set (a filelist or findings CSV, a folder holding a `filelist.txt`, or
/// `split` of an IDX directory) with the bundle's channel count and size rule, and checks what
/// it can before reading images: the label count, and an IDX set's image size.
pub fn open_split(path: &Path, split: Split, loaded: &BundleDir) -> anyhow::Result<Reference> {
    let folder_list = path.join(FOLDER_FILELIST);
    if let Ok(metadata) = std::fs::metadata(path)
        && !metadata.is_file()
        && !metadata.is_dir()
    {
        anyhow::bail!(
            "{} is neither a regular file nor a directory (a FIFO, a device or a socket): pass a filelist, a folder holding one, or an IDX directory",
            path.display()
        );
    }
    let list = if path.is_dir() && folder_list.is_file() {
        Some(folder_list.as_path())
    } else {
        path.is_file().then_some(path)
    };
    let (reference, num_labels) = match list {
        Some(list) => {
            let filelist = Filelist::open(list, &options(loaded))?;
            let num_labels = filelist.num_labels();
            (Reference::Filelist(filelist), num_labels)
        }
        None => {
            let data = Dataset::load_with(path, split, &options(loaded)).with_context(|| {
                format!("{} is neither a filelist or findings CSV, nor a folder holding a {FOLDER_FILELIST} that names its images (PNG, JPEG, DICOM) and their labels, nor an IDX directory", path.display())
            })?;
            fits(path, [data.channels, data.height, data.width], loaded)?;
            let num_labels = data.num_labels;
            (Reference::Idx(data), num_labels)
        }
    };
    anyhow::ensure!(
        num_labels == loaded.bundle.labels.count,
        "{}: images carry {num_labels} labels, the bundle {} has {}",
        path.display(),
        loaded.bundle.name,
        loaded.bundle.labels.count
    );
    Ok(reference)
}

/// Loads an image set into memory, as [`open_split`] opens it, and checks its image size.
pub fn load_split(path: &Path, split: Split, loaded: &BundleDir) -> anyhow::Result<Dataset> {
    match open_split(path, split, loaded)? {
        Reference::Idx(data) => Ok(data),
        Reference::Filelist(filelist) => {
            let data = filelist.load()?;
            fits(path, [data.channels, data.height, data.width], loaded)?;
            Ok(data)
        }
    }
}

/// Fails unless images of `shape` (channels, height, width) are the bundle's.
fn fits(path: &Path, shape: [usize; 3], loaded: &BundleDir) -> anyhow::Result<()> {
    let image = &loaded.bundle.image;
    let [c, h, w] = shape;
    anyhow::ensure!(
        shape == [image.channels, image.height, image.width],
        "{}: images are {c}×{h}×{w} (channels × height × width), the bundle {} makes {}×{}×{}",
        path.display(),
        loaded.bundle.name,
        image.channels,
        image.height,
        image.width
    );
    Ok(())
}

impl Reference {
    /// Where it came from: the filelist path, or e.g. `fashion-mnist/train`.
    pub fn name(&self) -> String {
        match self {
            Reference::Filelist(filelist) => filelist.path().display().to_string(),
            Reference::Idx(data) => data.name.clone(),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Reference::Filelist(filelist) => filelist.len(),
            Reference::Idx(data) => data.len(),
        }
    }

    /// The folders that hold the set (a filelist's folder and the root its paths start from,
    /// or the IDX directory): nothing is ever written inside them.
    pub fn folders(&self, path: &Path) -> Vec<PathBuf> {
        let parent = |p: &Path| {
            p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
        };
        match self {
            Reference::Filelist(filelist) => {
                vec![parent(filelist.path()), filelist.root().to_path_buf()]
            }
            Reference::Idx(_) if path.is_dir() => vec![path.to_path_buf()],
            Reference::Idx(_) => vec![parent(path)],
        }
    }

    /// Reads every image once, in order, handing them to `visit` [`EMBED_BATCH`] at a time
    /// (`[n, C, H, W]`); a filelist's images must have the bundle's size. Returns the set to
    /// draw from: a filelist keeps per image only its labels, identity, place and digest.
    pub fn scan(
        self,
        loaded: &BundleDir,
        mut visit: impl FnMut(ArrayView4<u8>) -> anyhow::Result<()>,
    ) -> anyhow::Result<Box<dyn Images>> {
        match self {
            Reference::Filelist(filelist) => {
                let mut checked = false;
                let catalog = filelist.read(EMBED_BATCH, |pixels| {
                    if !checked {
                        let (_, c, h, w) = pixels.dim();
                        fits(filelist.path(), [c, h, w], loaded)?;
                        checked = true;
                    }
                    visit(pixels)
                })?;
                Ok(Box::new(catalog))
            }
            Reference::Idx(data) => {
                let pixels = ArrayView4::from_shape(
                    (data.len(), data.channels, data.height, data.width),
                    &data.images,
                )?;
                for chunk in pixels.axis_chunks_iter(Axis(0), EMBED_BATCH) {
                    visit(chunk)?;
                }
                Ok(Box::new(data))
            }
        }
    }
}
