//! Labelled image sets on disk: Fashion-MNIST/MNIST IDX files and folders of images (PNG, JPEG,
//! DICOM) described by a filelist (`relative/path.png l0 l1 …`) or a findings CSV
//! (`path,patient_id,finding…`, [`csv`]), held in memory as u8 pixels (NCHW) with, where the
//! files say, who each image shows. This is a file-system edge (feature `data`): the trainer's
//! training data, and the runtime's reference sets, are read here. `docs/data.md` describes
//! the formats for the people who prepare them.
//!
//! [`Dataset::load`] takes what `--data` names: a directory of IDX files, a filelist or a CSV.
//! Images of any size are brought to one square size by [`FilelistOptions::resize`]
//! ([`crate::pixels::fit_square`]). Sets larger than memory are read a chunk at a time
//! ([`Filelist::read`]), keeping per image only what [`Catalog`] holds; both kinds hand out
//! images by position through [`Images`].

pub mod catalog;
pub mod csv;
pub mod filelist;
pub mod idx;
mod uids;

pub use crate::pixels::{fit_square, supported_size};
pub use catalog::Catalog;
pub use filelist::{Filelist, FilelistOptions, load_filelist, load_image, load_image_sized};

use std::fmt;
use std::path::{Path, PathBuf};

use image::DynamicImage;

use crate::identity::Identity;

/// Most bytes of pixels an image set loads into memory (a filelist's [`Filelist::load`], an
/// IDX file inflated): 4 GiB. A larger set is read a chunk at a time ([`Filelist::read`]) or
/// brought to a smaller size first.
pub const MAX_LOADED_BYTES: u64 = 4 << 30;

/// Classes of Fashion-MNIST and MNIST: every IDX label must be below this.
pub const IDX_CLASSES: usize = 10;

/// Shown where Fashion-MNIST is missing.
const FASHION_MNIST_HINT: &str = "for Fashion-MNIST run `apt-get install dataset-fashion-mnist` \
     (files in /usr/share/datasets/fashion-mnist/)";

/// A data error. Every message names the file (and the line, for filelists and CSVs) and what
/// is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The dataset (a directory of IDX files or a filelist) does not exist.
    #[error("{path}: not found: {message}")]
    NotFound {
        /// The path that was looked for.
        path: PathBuf,
        /// What was expected there, and how to get it.
        message: String,
    },
    /// The file is read but its content is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One line of a filelist (or the record of a CSV that starts on it) is wrong.
    #[error("{path}: line {line}: {message}")]
    Line {
        /// The filelist or CSV.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_path_buf(), source }
    }

    /// `path` is read but wrong.
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        DataError::Invalid { path: path.to_path_buf(), message: message.into() }
    }

    /// Line `line` of the filelist (or CSV) `path` is wrong.
    pub fn line(path: &Path, line: usize, message: impl Into<String>) -> Self {
        DataError::Line { path: path.to_path_buf(), line, message: message.into() }
    }
}

/// Which split of an IDX directory to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `train-*` files.
    Train,
    /// `t10k-*` files.
    Test,
}

impl Split {
    /// The IDX file-name prefix (`train` or `t10k`).
    pub fn idx_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }

    /// A short name for logs (`train` or `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// An in-memory labelled image set, u8 pixels, NCHW.
#[derive(Clone, PartialEq)]
pub struct Dataset {
    /// Where it came from, e.g. `fashion-mnist/train` or the filelist path.
    pub name: String,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Labels per row (10 for Fashion-MNIST).
    pub num_labels: usize,
    /// `false`: exactly one label set per row (one-hot); `true`: multi-hot.
    pub multi_label: bool,
    /// Pixels, `len · channels · height · width`.
    pub images: Vec<u8>,
    /// Labels, `len · num_labels`, one-hot or multi-hot.
    pub labels: Vec<f32>,
    /// Horizontal flips keep the meaning of these images (true for Fashion-MNIST).
    pub allows_hflip: bool,
    /// Who each image shows, where its file says (a CSV's `patient_id` or a DICOM PatientID,
    /// hashed); `len` entries.
    pub identities: Vec<Option<Identity>>,
    /// The labels' names, `num_labels` of them in label order (a CSV's finding columns or
    /// class names); empty where the input names none (IDX files, filelists).
    pub label_names: Vec<String>,
}

/// A summary: the pixel and label buffers are far too long to print.
impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("channels", &self.channels)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("num_labels", &self.num_labels)
            .field("multi_label", &self.multi_label)
            .field("allows_hflip", &self.allows_hflip)
            .field("identified", &self.identities.iter().flatten().count())
            .field("label_names", &self.label_names)
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len() / self.num_labels.max(1)
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per image: `channels · height · width`.
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Pixels of row `i` (`[c, h, w]`). Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.image_size();
        &self.images[i * size..(i + 1) * size]
    }

    /// Pixels of the rows `indices` as one batch `[n, c, h, w]`. Panics on an index out of
    /// range, like slice indexing.
    pub fn batch(&self, indices: &[usize]) -> ndarray::Array4<u8> {
        let mut pixels =
            ndarray::Array4::<u8>::zeros((indices.len(), self.channels, self.height, self.width));
        for (mut row, &i) in pixels.outer_iter_mut().zip(indices) {
            row.as_slice_mut().expect("standard layout").copy_from_slice(self.image(i));
        }
        pixels
    }

    /// Labels of row `i`. Panics if `i >= len()`, like slice indexing.
    pub fn label(&self, i: usize) -> &[f32] {
        &self.labels[i * self.num_labels..(i + 1) * self.num_labels]
    }

    /// Who row `i` shows, if known. Panics if `i >= len()`, like slice indexing.
    pub fn identity(&self, i: usize) -> Option<Identity> {
        self.identities[i]
    }

    /// The rows `indices`, in that order, as a set of their own named `name`. Panics on an
    /// index out of range, like slice indexing.
    pub fn select(&self, indices: &[usize], name: String) -> Dataset {
        Dataset {
            name,
            images: indices.iter().flat_map(|&i| self.image(i).iter().copied()).collect(),
            labels: indices.iter().flat_map(|&i| self.label(i).iter().copied()).collect(),
            identities: indices.iter().map(|&i| self.identity(i)).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_labels: self.num_labels,
            multi_label: self.multi_label,
            allows_hflip: self.allows_hflip,
            label_names: self.label_names.clone(),
        }
    }

    /// Keeps the first `n` rows (all of them if there are fewer).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.images.truncate(n * self.image_size());
        self.labels.truncate(n * self.num_labels);
        self.identities.truncate(n);
    }

    /// Loads what `--data` names: a directory holding IDX files
    /// `{train,t10k}-images-idx3-ubyte[.gz]` and `{train,t10k}-labels-idx1-ubyte[.gz]`
    /// (`split` picks the prefix), or a filelist or findings CSV (`*.csv`) read with
    /// [`FilelistOptions::default`] (`split` is ignored: a filelist's test split is another
    /// filelist).
    pub fn load(path: &Path, split: Split) -> Result<Dataset, DataError> {
        Self::load_with(path, split, &FilelistOptions::default())
    }

    /// Like [`Dataset::load`], a filelist or CSV read with `opts`. Of `opts`, an IDX directory
    /// takes only [`FilelistOptions::resize`] (its images are gray, its labels one-hot).
    pub fn load_with(
        path: &Path,
        split: Split,
        opts: &FilelistOptions,
    ) -> Result<Dataset, DataError> {
        if path.is_dir() {
            let data = Self::load_idx(path, split)?;
            match opts.resize {
                Some(side) => data.resized(side),
                None => Ok(data),
            }
        } else if path.is_file() {
            if is_idx_file_name(path) {
                let dir = path.parent().map_or_else(|| ".".into(), |p| p.display().to_string());
                return Err(DataError::invalid(
                    path,
                    format!(
                        "an IDX file, not a filelist: pass its directory ({dir}) to load the IDX split"
                    ),
                ));
            }
            load_filelist(path, opts)
        } else {
            Err(DataError::NotFound {
                path: path.to_path_buf(),
                message: format!(
                    "expected a directory of IDX files ({{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]), \
                     a filelist or a findings CSV; {FASHION_MNIST_HINT}"
                ),
            })
        }
    }

    /// The set with every image brought to `side` × `side` pixels by
    /// [`crate::pixels::fit_square`] (a no-op for images of that size already).
    pub fn resized(self, side: usize) -> Result<Dataset, DataError> {
        let invalid = |message: String| DataError::invalid(Path::new(&self.name), message);
        let target = u32::try_from(side)
            .ok()
            .filter(|&s| (1..=crate::files::MAX_IMAGE_SIDE).contains(&s))
            .ok_or_else(|| invalid(format!("cannot bring images to {side}×{side} pixels")))?;
        if (self.height, self.width) == (side, side) {
            return Ok(self);
        }
        let (c, h, w) = (self.channels, self.height as u32, self.width as u32);
        let mut images = Vec::with_capacity(self.len() * c * side * side);
        for i in 0..self.len() {
            let chw = self.image(i);
            let img = match c {
                1 => image::GrayImage::from_raw(w, h, chw.to_vec()).map(DynamicImage::ImageLuma8),
                _ => {
                    let plane = (h * w) as usize;
                    let interleaved =
                        (0..plane * 3).map(|k| chw[(k % 3) * plane + k / 3]).collect();
                    image::RgbImage::from_raw(w, h, interleaved).map(DynamicImage::ImageRgb8)
                }
            }
            .ok_or_else(|| invalid(format!("image {i} is not {c}×{h}×{w} pixels")))?;
            let square = crate::pixels::fit_square(&img, c, target)
                .map_err(|problem| invalid(format!("image {i}: {problem}")))?;
            crate::pixels::push_chw(&mut images, &square, c);
        }
        Ok(Dataset { images, height: side, width: side, ..self })
    }

    /// Loads one split of a directory of IDX files (10 classes, one-hot, flips allowed).
    pub fn load_idx(dir: &Path, split: Split) -> Result<Dataset, DataError> {
        let images_path = find_idx_file(dir, split, "images-idx3")?;
        let labels_path = find_idx_file(dir, split, "labels-idx1")?;
        let (n, height, width, images) = idx::read_images(&images_path)?;
        let classes = idx::read_labels(&labels_path)?;
        if classes.len() != n {
            return Err(DataError::invalid(
                &labels_path,
                format!("{} labels, but {} holds {n} images", classes.len(), images_path.display()),
            ));
        }
        if n == 0 {
            return Err(DataError::invalid(&images_path, "holds no images"));
        }
        let mut labels = vec![0f32; n * IDX_CLASSES];
        for (row, &class) in labels.chunks_exact_mut(IDX_CLASSES).zip(&classes) {
            row[usize::from(class)] = 1.0;
        }
        let dir_name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "idx".to_owned());
        Ok(Dataset {
            name: format!("{dir_name}/{}", split.name()),
            channels: 1,
            height,
            width,
            num_labels: IDX_CLASSES,
            multi_label: false,
            images,
            labels,
            allows_hflip: true,
            identities: vec![None; n],
            label_names: Vec::new(),
        })
    }
}

/// A labelled image set whose images are fetched by position: a [`Dataset`] holds its pixels,
/// a [`Catalog`] decodes them again from disk.
pub trait Images: Sync {
    /// Where it came from, e.g. `fashion-mnist/train` or the filelist path.
    fn name(&self) -> String;
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Labels of image `i`. Panics if `i >= len()`, like slice indexing.
    fn label(&self, i: usize) -> &[f32];
    /// Who each image shows, where its file says; `len` entries.
    fn identities(&self) -> &[Option<Identity>];
    /// Pixels of the images `indices` as one batch `[n, C, H, W]`. Panics on an index out of
    /// range, like slice indexing.
    fn read(&self, indices: &[usize]) -> Result<ndarray::Array4<u8>, DataError>;
    /// SHA-256 (hex) of every image's pixels and labels, in order: the same set gives the same
    /// fingerprint wherever it lies, another set another one. It names no file; it stays with
    /// the personal data all the same (whoever holds the set can recognise it).
    fn fingerprint(&self) -> String;
}

impl Images for Dataset {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn len(&self) -> usize {
        Dataset::len(self)
    }

    fn label(&self, i: usize) -> &[f32] {
        Dataset::label(self, i)
    }

    fn identities(&self) -> &[Option<Identity>] {
        &self.identities
    }

    fn read(&self, indices: &[usize]) -> Result<ndarray::Array4<u8>, DataError> {
        Ok(self.batch(indices))
    }

    fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for i in 0..Dataset::len(self) {
            hasher.update(catalog::digest(self.image(i)));
            hasher.update(labels_bytes(self.label(i)));
        }
        crate::bundle::hex(&hasher.finalize())
    }
}

/// Labels as the bytes a fingerprint hashes: one byte per label, 0 or 1.
pub(crate) fn labels_bytes(labels: &[f32]) -> Vec<u8> {
    labels.iter().map(|&l| u8::from(l >= 0.5)).collect()
}

/// Whether a file name looks like an IDX file (`…-idx3-ubyte`, `…-idx1-ubyte.gz`).
fn is_idx_file_name(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with("-ubyte") && name.contains("-idx")
}

/// The raw or gzipped IDX file `{prefix}-{kind}-ubyte[.gz]` in `dir`, raw preferred.
fn find_idx_file(dir: &Path, split: Split, kind: &str) -> Result<PathBuf, DataError> {
    let base = format!("{}-{kind}-ubyte", split.idx_prefix());
    let raw = dir.join(&base);
    let gz = dir.join(format!("{base}.gz"));
    if raw.is_file() {
        Ok(raw)
    } else if gz.is_file() {
        Ok(gz)
    } else {
        Err(DataError::NotFound {
            path: dir.to_path_buf(),
            message: format!("no {base} or {base}.gz in this directory; {FASHION_MNIST_HINT}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idx::tests::{idx_bytes, write_gz};
    use idx::{IMAGES_MAGIC, LABELS_MAGIC};

    const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

    #[test]
    fn fashion_mnist_loads_with_balanced_classes() {
        let dir = Path::new(FASHION_MNIST);
        if !dir.is_dir() {
            println!(
                "note: {FASHION_MNIST} is absent (apt-get install dataset-fashion-mnist); test skipped"
            );
            return;
        }
        for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
            let started = std::time::Instant::now();
            let d = Dataset::load(dir, split).unwrap();
            println!("{} loaded in {:?}", d.name, started.elapsed());
            assert_eq!((d.len(), d.channels, d.height, d.width, d.num_labels), (n, 1, 28, 28, 10));
            assert_eq!(d.images.len(), n * 784);
            assert_eq!(d.name, format!("fashion-mnist/{}", split.name()));
            assert!(!d.multi_label && d.allows_hflip);
            let mut histogram = [0usize; 10];
            for i in 0..d.len() {
                let label = d.label(i);
                assert_eq!(label.iter().sum::<f32>(), 1.0, "row {i} is not one-hot");
                let class = label.iter().position(|&v| v == 1.0).unwrap();
                histogram[class] += 1;
            }
            assert_eq!(histogram, [n / 10; 10], "{split:?}");
        }
    }

    /// Writes `{prefix}-images-idx3-ubyte` (n images of 2×3) and a label file of `labels`.
    fn write_split(dir: &Path, prefix: &str, n: u32, labels: &[u8], gz: bool) {
        let pixels: Vec<u8> = (0..n * 6).map(|i| i as u8).collect();
        let images = idx_bytes(IMAGES_MAGIC, &[n, 2, 3], &pixels);
        let label_file = idx_bytes(LABELS_MAGIC, &[labels.len() as u32], labels);
        for (kind, bytes) in [("images-idx3", images), ("labels-idx1", label_file)] {
            let name = format!("{prefix}-{kind}-ubyte");
            if gz {
                write_gz(&dir.join(format!("{name}.gz")), &bytes);
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    #[test]
    fn idx_directories_load_raw_and_gzipped_splits() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tiny-mnist");
        std::fs::create_dir(&dir).unwrap();
        write_split(&dir, "train", 3, &[0, 9, 4], false);
        write_split(&dir, "t10k", 2, &[7, 7], true);
        let train = Dataset::load(&dir, Split::Train).unwrap();
        assert_eq!((train.len(), train.height, train.width, train.num_labels), (3, 2, 3, 10));
        assert_eq!(train.name, "tiny-mnist/train");
        assert_eq!(train.image(1), &[6, 7, 8, 9, 10, 11]);
        let mut nine = [0.0; 10];
        nine[9] = 1.0;
        assert_eq!(train.label(1), &nine);
        let test = Dataset::load(&dir, Split::Test).unwrap();
        assert_eq!((test.len(), test.label(1)[7]), (2, 1.0));
    }

    #[test]
    fn idx_images_are_resized_on_request() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path(), "train", 3, &[0, 9, 4], false);
        let opts = FilelistOptions { resize: Some(2), ..FilelistOptions::default() };
        let d = Dataset::load_with(tmp.path(), Split::Train, &opts).unwrap();
        assert_eq!((d.len(), d.height, d.width, d.images.len()), (3, 2, 2, 12));
        // 3×2 images: the shorter side already fits, the centre 2×2 starts at x = 0.
        assert_eq!(d.image(1), &[6, 7, 9, 10]);
        assert_eq!(d.label(1)[9], 1.0);
        let up = Dataset::load(tmp.path(), Split::Train).unwrap().resized(28).unwrap();
        assert_eq!((up.height, up.width, up.image(0).len()), (28, 28, 784));
        assert!(Dataset::load(tmp.path(), Split::Train).unwrap().resized(0).is_err());
    }

    #[test]
    fn idx_count_mismatch_names_both_files() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path(), "train", 3, &[0, 1], false);
        let err = Dataset::load(tmp.path(), Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("train-labels-idx1-ubyte") && err.contains("train-images-idx3-ubyte"),
            "{err}"
        );
        assert!(err.contains("2 labels") && err.contains("3 images"), "{err}");
    }

    #[test]
    fn missing_data_is_named_with_a_hint() {
        let err =
            Dataset::load(Path::new("/nonexistent/fmnist"), Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/fmnist")
                && err.contains("apt-get install dataset-fashion-mnist"),
            "{err}"
        );
        let tmp = tempfile::tempdir().unwrap();
        let err = Dataset::load(tmp.path(), Split::Test).unwrap_err().to_string();
        assert!(
            err.contains("t10k-images-idx3-ubyte") && err.contains("dataset-fashion-mnist"),
            "{err}"
        );
    }

    #[test]
    fn an_idx_file_given_as_data_points_to_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path(), "train", 1, &[0], true);
        let file = tmp.path().join("train-images-idx3-ubyte.gz");
        let err = Dataset::load(&file, Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte.gz") && err.contains("pass its directory"),
            "{err}"
        );
    }

    #[test]
    fn truncate_keeps_the_first_rows() {
        let tmp = tempfile::tempdir().unwrap();
        write_split(tmp.path(), "train", 3, &[0, 9, 4], false);
        let mut d = Dataset::load(tmp.path(), Split::Train).unwrap();
        let first = (d.image(0).to_vec(), d.label(0).to_vec());
        d.truncate(1);
        assert_eq!((d.len(), d.images.len(), d.labels.len(), d.identities.len()), (1, 6, 10, 1));
        assert_eq!((d.image(0).to_vec(), d.label(0).to_vec()), first);
        d.truncate(5);
        assert_eq!(d.len(), 1);
        assert!(format!("{d:?}").contains("len: 1"));
    }
}
