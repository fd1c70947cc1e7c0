//! Folders of PNG/JPEG/DICOM images described by a filelist, one image per line:
//!
//! ```text
//! # ChestX-ray14, eight classes
//! images/00000001_000.png 0 1 0 0 0 0 0 0
//! images/00000002_000.png 0 0 0 0 0 0 0 0
//! ```
//!
//! Fields are whitespace-separated: a path relative to the data root, then the multi-hot
//! labels (`0`/`1`, also written `0.0`/`1.0`). Blank lines and lines starting with `#` are
//! skipped. Every line has as many labels as the first one. Paths may not leave the data root,
//! neither lexically (`..`, absolute paths) nor through symbolic links. All images must have
//! one size, unless [`FilelistOptions::resize`] brings each to one square size
//! ([`pixels::fit_square`]); they are converted to grayscale or RGB and stored CHW. A DICOM file
//! (`.dcm`, or any file with the DICOM magic) contributes its pixels and the hashed PatientID as
//! the image's identity; nothing else of its header is kept.
//!
//! A file named `*.csv` is a findings CSV instead ([`super::csv`]): a header row, then one image
//! per row. It is read into the same rows as a filelist, and its images the same way.
//!
//! A filelist is read line by line, never whole: [`Filelist::open`] checks every line,
//! [`Filelist::read`] then decodes the images a chunk at a time, so that sets of millions of
//! images are read with the memory of one chunk plus what [`Catalog`] keeps per image.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;
use ndarray::ArrayView4;

use super::csv::{self, CsvRows, Layout};
use super::{Catalog, DataError, Dataset, MAX_LOADED_BYTES};
use crate::files::{MAX_FILE_BYTES, MAX_IMAGE_SIDE, open_regular, read_regular};
use crate::identity::Identity;
use crate::pixels::{self, push_chw};

/// How a filelist is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilelistOptions {
    /// Channels every image is converted to: 1 (grayscale, the default) or 3 (RGB).
    pub channels: usize,
    /// Whether horizontal flips keep the images' meaning (default: no; chest X-rays, for
    /// one, have a left and a right).
    pub allows_hflip: bool,
    /// Directory the paths are relative to (default: the filelist's directory).
    pub root: Option<PathBuf>,
    /// The size (width, height) every image must have (default: the first image's). An image
    /// of another size is refused from its header, before its pixels are decoded. With
    /// `resize`, the size images are brought to, which must then be (S, S).
    pub size: Option<(u32, u32)>,
    /// Every row must set exactly one label (default: no, multi-hot rows are allowed).
    pub one_hot: bool,
    /// The columns of a findings CSV that are its findings, in the order its labels take
    /// (matched case-insensitively); the other columns are ignored. Default: every column but
    /// the reserved ones ([`super::csv`]). Not used by filelists.
    pub findings: Option<Vec<String>>,
    /// Bring every image, whatever its size, to S × S pixels by [`pixels::fit_square`] (its
    /// shorter side scaled to S, then the centre cut out). Default: images are kept as they are,
    /// and must all have one size.
    pub resize: Option<usize>,
}

impl Default for FilelistOptions {
    fn default() -> Self {
        FilelistOptions {
            channels: 1,
            allows_hflip: false,
            root: None,
            size: None,
            one_hot: false,
            findings: None,
            resize: None,
        }
    }
}

/// Longest filelist line read, in bytes: a longer one is refused, not held in memory.
pub(super) const MAX_LINE: u64 = 1 << 20;

/// One parsed line of a filelist.
#[derive(Debug)]
pub struct Row {
    /// 1-based line number.
    pub line: usize,
    /// Byte offset of the line's start in the filelist.
    pub offset: u64,
    /// Path relative to the data root, as written.
    pub path: PathBuf,
    /// Multi-hot labels.
    pub labels: Vec<f32>,
    /// Who the image shows, where the row says (a findings CSV's `patient_id`, hashed).
    pub identity: Option<Identity>,
}

/// Parses one label token: 0 or 1, written as an integer or a float.
pub(super) fn parse_label(token: &str) -> Option<f32> {
    match token.parse::<f32>() {
        Ok(0.0) => Some(0.0),
        Ok(1.0) => Some(1.0),
        _ => None,
    }
}

/// Whether a relative path stays inside its root when read lexically: not absolute, and no
/// `..` climbs above the start.
fn stays_inside(rel: &Path) -> bool {
    !rel.is_absolute()
        && rel
            .components()
            .try_fold(0usize, |depth, c| match c {
                Component::Normal(_) => Some(depth + 1),
                Component::CurDir => Some(depth),
                Component::ParentDir => depth.checked_sub(1),
                Component::RootDir | Component::Prefix(_) => None,
            })
            .is_some()
}

/// Parses one non-blank, non-comment line; `first` is the first row's line and label count.
fn parse_line(
    list: &Path,
    line: usize,
    offset: u64,
    content: &str,
    first: Option<(usize, usize)>,
) -> Result<Row, DataError> {
    // A path with spaces is written in double quotes.
    let (file, rest) = match content.strip_prefix('"') {
        Some(quoted) => quoted.split_once('"').ok_or_else(|| {
            DataError::line(list, line, "a path opened with \" is not closed with another")
        })?,
        None => content.split_once(char::is_whitespace).unwrap_or((content, "")),
    };
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let labels = tokens
        .iter()
        .enumerate()
        .map(|(k, t)| {
            parse_label(t).ok_or_else(|| {
                let hint = if k == 0 && t.contains('.') {
                    format!(
                        " (fields are separated by whitespace: a path with spaces is written in double quotes, \"{file} {}\")",
                        tokens.iter().take_while(|t| parse_label(t).is_none()).copied().collect::<Vec<_>>().join(" ")
                    )
                } else {
                    String::new()
                };
                DataError::line(list, line, format!("label {t:?} of {file} is not 0 or 1{hint}"))
            })
        })
        .collect::<Result<Vec<f32>, _>>()?;
    if labels.is_empty() {
        return Err(DataError::line(list, line, format!("{file} has no labels")));
    }
    if let Some((first_line, count)) = first
        && count != labels.len()
    {
        return Err(DataError::line(
            list,
            line,
            format!("expected {count} labels (as on line {first_line}), found {}", labels.len()),
        ));
    }
    let rel = checked_path(list, line, file)?;
    Ok(Row { line, offset, path: rel, labels, identity: None })
}

/// The path `file` of line `line`, refused if it leaves the data root lexically.
pub(super) fn checked_path(list: &Path, line: usize, file: &str) -> Result<PathBuf, DataError> {
    let rel = Path::new(file);
    if !stays_inside(rel) {
        let why = if rel.is_absolute() { "it is absolute" } else { "`..` climbs above the root" };
        return Err(DataError::line(
            list,
            line,
            format!("path escapes the data root: {file} ({why})"),
        ));
    }
    Ok(rel.to_path_buf())
}

/// Reads the next line of `reader` (its terminator included) into `buffer`, refusing one longer
/// than [`MAX_LINE`] bytes; `line` is its number, for the error. `None` at the end.
pub(super) fn read_line(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    list: &Path,
    line: usize,
) -> Option<Result<u64, DataError>> {
    buffer.clear();
    let read = match reader.by_ref().take(MAX_LINE + 1).read_until(b'\n', buffer) {
        Ok(0) => return None,
        Ok(read) => read as u64,
        Err(e) => return Some(Err(DataError::io(list, e))),
    };
    if read > MAX_LINE {
        return Some(Err(DataError::line(list, line, format!("longer than {MAX_LINE} bytes"))));
    }
    Some(Ok(read))
}

/// The rows of a filelist read line by line, holding one line at a time: blank lines and
/// comments are skipped, every row must have as many labels as the first, and no path may
/// leave the root lexically. Iteration should stop at the first error.
pub(crate) struct Rows<R> {
    list: PathBuf,
    reader: R,
    /// Lines read so far.
    line: usize,
    /// Bytes read so far.
    offset: u64,
    /// The first row's line and label count.
    first: Option<(usize, usize)>,
    buffer: Vec<u8>,
}

impl<R: BufRead> Rows<R> {
    /// The rows of the filelist `reader`; `list` names it in errors.
    pub(crate) fn new(list: &Path, reader: R) -> Self {
        Self::at(list, reader, 0, 0)
    }

    /// The rows of `reader`, positioned at byte `offset` of the filelist `list`, where line
    /// `line + 1` starts.
    pub(crate) fn at(list: &Path, reader: R, line: usize, offset: u64) -> Self {
        Rows { list: list.to_path_buf(), reader, line, offset, first: None, buffer: Vec::new() }
    }
}

impl<R: BufRead> Iterator for Rows<R> {
    type Item = Result<Row, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let read =
                match read_line(&mut self.reader, &mut self.buffer, &self.list, self.line + 1)? {
                    Ok(read) => read,
                    Err(e) => return Some(Err(e)),
                };
            self.line += 1;
            let (line, offset) = (self.line, self.offset);
            self.offset += read;
            let Ok(text) = std::str::from_utf8(&self.buffer) else {
                return Some(Err(DataError::line(&self.list, line, "not UTF-8 text")));
            };
            let text = if line == 1 { text.strip_prefix('\u{feff}').unwrap_or(text) } else { text };
            let content = text.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let row = parse_line(&self.list, line, offset, content, self.first);
            if let Ok(row) = &row {
                self.first.get_or_insert((row.line, row.labels.len()));
            }
            return Some(row);
        }
    }
}

/// The error of a filelist without rows.
fn names_no_images(list: &Path) -> DataError {
    DataError::invalid(list, "the filelist names no images")
}

/// Parses a filelist's text into rows; `list` names the filelist in errors. Every line must
/// have as many labels as the first, and no path may leave the root lexically.
pub fn parse(list: &Path, text: &str) -> Result<Vec<Row>, DataError> {
    let rows = Rows::new(list, text.as_bytes()).collect::<Result<Vec<Row>, _>>()?;
    if rows.is_empty() {
        return Err(names_no_images(list));
    }
    Ok(rows)
}

/// Where a filelist's images are and how they are read: the filelist (or findings CSV), its
/// root, and the channels and size every image is brought to.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub(crate) list: PathBuf,
    pub(super) root: PathBuf,
    pub(super) canonical_root: PathBuf,
    pub(crate) opts: FilelistOptions,
    /// How a findings CSV's records become rows; `None` for a filelist.
    csv: Option<Arc<Layout>>,
}

impl Source {
    /// Decodes `row`'s image, checks that it has the size of the first image (`size`, set by
    /// the first) or brings it to the size of [`FilelistOptions::resize`], appends its CHW
    /// pixels to `out` and returns who it shows (the row's patient, else the file's).
    pub(crate) fn pixels(
        &self,
        row: &Row,
        size: &mut Option<(u32, u32)>,
        out: &mut Vec<u8>,
    ) -> Result<Option<Identity>, DataError> {
        let err = |message: String| DataError::line(&self.list, row.line, message);
        let expect = if self.opts.resize.is_some() { None } else { size.or(self.opts.size) };
        let (real, file) = self.resolve(row)?;
        let (img, found) = decode(&real, expect)
            .map_err(|problem| err(format!("{problem} {}", file.display())))?;
        let identity = match (row.identity, found) {
            (Some(listed), Some(found)) if listed != found => {
                return Err(err(format!(
                    "the patient_id of this row and the PatientID of {} name different patients",
                    file.display()
                )));
            }
            (listed, found) => listed.or(found),
        };
        let channels = self.opts.channels;
        let img = match self.opts.resize {
            Some(side) => {
                let side = side as u32; // At most MAX_IMAGE_SIDE: checked by `Filelist::open`.
                size.get_or_insert((side, side));
                pixels::fit_square(&img, channels, side)
                    .map_err(|problem| err(format!("{problem}: {}", file.display())))?
            }
            None => {
                size.get_or_insert((img.width(), img.height()));
                img
            }
        };
        push_chw(out, &img, channels);
        Ok(identity)
    }

    /// The file `row` names: its real path, checked to lie inside the root, and the path it
    /// is shown by.
    fn resolve(&self, row: &Row) -> Result<(PathBuf, PathBuf), DataError> {
        let err = |message: String| DataError::line(&self.list, row.line, message);
        let file = self.root.join(&row.path);
        let real = file
            .canonicalize()
            .map_err(|e| err(format!("cannot read image {}: {e}", file.display())))?;
        if !real.starts_with(&self.canonical_root) {
            return Err(err(format!(
                "path escapes the data root: {} resolves to {}, outside {}",
                row.path.display(),
                real.display(),
                self.canonical_root.display()
            )));
        }
        Ok((real, file))
    }

    /// The filelist, opened for reading.
    pub(crate) fn open(&self) -> Result<BufReader<File>, DataError> {
        open_regular(&self.list).map(BufReader::new).map_err(|e| DataError::io(&self.list, e))
    }

    /// The rows of `reader`, positioned at byte `offset` of the filelist where line `line + 1`
    /// starts (0 and 0: its start).
    pub(crate) fn rows<R: BufRead>(&self, reader: R, line: usize, offset: u64) -> SourceRows<R> {
        match &self.csv {
            Some(layout) => SourceRows::Csv(CsvRows::at(&self.list, layout, reader, line, offset)),
            None => SourceRows::Filelist(Rows::at(&self.list, reader, line, offset)),
        }
    }

    /// What the file is called in messages: `filelist` or `CSV`.
    pub(crate) fn kind(&self) -> &'static str {
        if self.csv.is_some() { "CSV" } else { "filelist" }
    }
}

/// The rows of a filelist or a findings CSV.
pub(crate) enum SourceRows<R> {
    /// A filelist's.
    Filelist(Rows<R>),
    /// A findings CSV's.
    Csv(CsvRows<R>),
}

impl<R: BufRead> Iterator for SourceRows<R> {
    type Item = Result<Row, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            SourceRows::Filelist(rows) => rows.next(),
            SourceRows::Csv(rows) => rows.next(),
        }
    }
}

/// What reading every row of a filelist or CSV once established.
pub(super) struct Summary {
    /// Rows.
    pub(super) len: usize,
    /// Labels per row.
    pub(super) num_labels: usize,
    /// Whether a row sets other than exactly one label.
    pub(super) multi_label: bool,
    /// The labels' names, where the file gives them.
    pub(super) label_names: Vec<String>,
}

/// A filelist whose lines were all read and checked (labels, paths), its images not yet:
/// [`Filelist::read`] decodes them a chunk at a time, [`Filelist::load`] all into memory.
/// A findings CSV ([`super::csv`]) is opened the same way.
#[derive(Debug)]
pub struct Filelist {
    source: Source,
    len: usize,
    num_labels: usize,
    multi_label: bool,
    label_names: Vec<String>,
}

impl Filelist {
    /// Reads every line of the filelist at `path` (or every record of it, for a `*.csv` file),
    /// one at a time, and checks it.
    pub fn open(path: &Path, opts: &FilelistOptions) -> Result<Filelist, DataError> {
        if !matches!(opts.channels, 1 | 3) {
            return Err(DataError::invalid(
                path,
                format!(
                    "{} channels requested; 1 (grayscale) or 3 (RGB) are supported",
                    opts.channels
                ),
            ));
        }
        if let Some(side) = opts.resize {
            if !(1..=MAX_IMAGE_SIDE as usize).contains(&side) {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "cannot bring images to {side}×{side} pixels (1 to {MAX_IMAGE_SIDE} a side)"
                    ),
                ));
            }
            if let Some((w, h)) = opts.size
                && (w as usize, h as usize) != (side, side)
            {
                return Err(DataError::invalid(
                    path,
                    format!("images are brought to {side}×{side} pixels, but {w}×{h} are expected"),
                ));
            }
        }
        let root = match &opts.root {
            Some(root) => root.clone(),
            None => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        };
        let file = open_regular(path).map_err(|e| DataError::io(path, e))?;
        let canonical_root = root.canonicalize().map_err(|e| DataError::io(&root, e))?;
        let mut source = Source {
            list: path.to_path_buf(),
            root,
            canonical_root,
            opts: opts.clone(),
            csv: None,
        };
        let summary = if csv::is_csv(path) {
            let (layout, summary) = csv::open(&source, BufReader::new(file))?;
            source.csv = Some(Arc::new(layout));
            summary
        } else {
            open_lines(path, opts, BufReader::new(file))?
        };
        let Summary { len, num_labels, multi_label, label_names } = summary;
        Ok(Filelist { source, len, num_labels, multi_label, label_names })
    }

    /// The filelist's path.
    pub fn path(&self) -> &Path {
        &self.source.list
    }

    /// The names of the labels, in label order: a findings CSV's finding columns or class
    /// names; empty for a filelist, which names none.
    pub fn label_names(&self) -> &[String] {
        &self.label_names
    }

    /// The size (width, height) of the first image as stored, read from its header alone (no
    /// pixel is decoded): what the images are before [`FilelistOptions::resize`] brings them to
    /// one size, for choosing that size (e.g. by [`pixels::supported_size`]).
    pub fn first_size(&self) -> Result<(u32, u32), DataError> {
        let row = self
            .source
            .rows(self.source.open()?, 0, 0)
            .next()
            .ok_or_else(|| names_no_images(&self.source.list))??;
        let (real, file) = self.source.resolve(&row)?;
        read_prefixed(&real, pixels::dimensions).map_err(|problem| {
            DataError::line(&self.source.list, row.line, format!("{problem}: {}", file.display()))
        })
    }

    /// The directory its paths are relative to.
    pub fn root(&self) -> &Path {
        &self.source.root
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no images (never: [`Filelist::open`] refuses an empty filelist).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Labels per row.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// Decodes the images in filelist order and hands them to `visit` `chunk` at a time
    /// (`[n, C, H, W]`, n = `chunk` but in the last call), holding no more pixels than one
    /// chunk's; returns what is kept of every image (labels, identity, where it is).
    pub fn read<E: From<DataError>>(
        &self,
        chunk: usize,
        mut visit: impl FnMut(ArrayView4<u8>) -> Result<(), E>,
    ) -> Result<Catalog, E> {
        let chunk = chunk.max(1);
        let mut catalog = Catalog::new(
            self.source.clone(),
            self.len,
            self.num_labels,
            self.multi_label,
            self.label_names.clone(),
        );
        let mut pixels = Vec::new();
        let mut rows = 0;
        for row in self.source.rows(self.source.open()?, 0, 0) {
            let row = row?;
            let start = pixels.len();
            let identity = self.source.pixels(&row, &mut catalog.size, &mut pixels)?;
            catalog.push(&row, identity, &pixels[start..]);
            rows += 1;
            if rows % chunk == 0 {
                visit(catalog.view(&pixels))?;
                pixels.clear();
            }
        }
        if rows != self.len {
            return Err(DataError::invalid(
                &self.source.list,
                format!("changed while it was read: {rows} images, {} before", self.len),
            )
            .into());
        }
        if !pixels.is_empty() {
            visit(catalog.view(&pixels))?;
        }
        Ok(catalog)
    }

    /// Reads every image into memory.
    pub fn load(&self) -> Result<Dataset, DataError> {
        let mut images = Vec::new();
        let catalog = self.read(LOAD_CHUNK, |pixels| {
            if (images.len() + pixels.len()) as u64 > MAX_LOADED_BYTES {
                return Err(DataError::invalid(
                    &self.source.list,
                    format!(
                        "its {} images of {}×{}×{} pixels take more than the {} GiB this tool loads into memory; bring them to a smaller size",
                        self.len,
                        pixels.dim().1,
                        pixels.dim().2,
                        pixels.dim().3,
                        MAX_LOADED_BYTES >> 30
                    ),
                ));
            }
            images.extend(pixels.iter());
            Ok::<(), DataError>(())
        })?;
        Ok(catalog.into_dataset(images))
    }
}

/// Images decoded per chunk by [`Filelist::load`].
const LOAD_CHUNK: usize = 256;

/// Reads the lines of a filelist once, checking each: how many rows and labels it has.
fn open_lines(
    path: &Path,
    opts: &FilelistOptions,
    reader: impl BufRead,
) -> Result<Summary, DataError> {
    let (mut len, mut num_labels, mut multi_label) = (0, 0, false);
    for row in Rows::new(path, reader) {
        let row = row?;
        len += 1;
        num_labels = row.labels.len();
        let set = row.labels.iter().filter(|&&v| v == 1.0).count();
        if opts.one_hot && set != 1 {
            return Err(not_one_hot(path, &row, set));
        }
        multi_label |= set != 1;
    }
    if len == 0 {
        return Err(names_no_images(path));
    }
    Ok(Summary { len, num_labels, multi_label, label_names: Vec::new() })
}

/// The error of `row`, which sets `set` labels where exactly one must be set.
pub(super) fn not_one_hot(list: &Path, row: &Row, set: usize) -> DataError {
    DataError::line(
        list,
        row.line,
        format!(
            "{} sets {set} labels, but these labels are single-label: exactly one of the {} must be 1",
            row.path.display(),
            row.labels.len()
        ),
    )
}

/// Decodes an image file and the identity it names; the error says what failed and why, for
/// the caller to complete with the path it shows.
fn decode(
    file: &Path,
    expect: Option<(u32, u32)>,
) -> Result<(DynamicImage, Option<Identity>), String> {
    let bytes =
        read_regular(file, MAX_FILE_BYTES).map_err(|e| format!("cannot read image ({e}):"))?;
    if bytes.is_empty() {
        return Err("the image file is empty (0 bytes):".into());
    }
    pixels::decode_expecting(&bytes, expect).map_err(|e| format!("{e}:"))
}

/// Bytes read of a file of which only the header is wanted; a header that does not lie within
/// them is read from the whole file.
const HEADER_BYTES: u64 = 64 << 10;

/// What `parse` reads of the file at `path` from its first [`HEADER_BYTES`], or from the whole
/// file when that fails on a longer file. The error says why, for the caller to complete with
/// the path it shows.
pub(super) fn read_prefixed<T>(
    path: &Path,
    parse: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<T, String> {
    let file = open_regular(path).map_err(|e| format!("cannot read image ({e})"))?;
    let len = file.metadata().map_err(|e| format!("cannot read image ({e})"))?.len();
    if len == 0 {
        return Err("the image file is empty (0 bytes)".into());
    }
    let mut prefix = Vec::new();
    file.take(HEADER_BYTES)
        .read_to_end(&mut prefix)
        .map_err(|e| format!("cannot read image ({e})"))?;
    match parse(&prefix) {
        Err(_) if (prefix.len() as u64) < len => {
            let bytes = read_regular(path, MAX_FILE_BYTES)
                .map_err(|e| format!("cannot read image ({e})"))?;
            parse(&bytes)
        }
        parsed => parsed,
    }
}

/// Reads one image file as CHW bytes with `channels` (1 or 3) channels: `(height, width,
/// bytes)`. Errors name the file.
pub fn load_image(path: &Path, channels: usize) -> Result<(usize, usize, Vec<u8>), DataError> {
    load_image_sized(path, channels, None)
}

/// Like [`load_image`], refusing from its header an image whose size (width, height) is not
/// `expect`.
pub fn load_image_sized(
    path: &Path,
    channels: usize,
    expect: Option<(u32, u32)>,
) -> Result<(usize, usize, Vec<u8>), DataError> {
    let (img, _) = decode(path, expect)
        .map_err(|problem| DataError::invalid(path, problem.trim_end_matches(':').to_string()))?;
    let mut bytes = Vec::new();
    push_chw(&mut bytes, &img, channels);
    Ok((img.height() as usize, img.width() as usize, bytes))
}

/// Loads the images and labels named by the filelist at `path`.
pub fn load_filelist(path: &Path, opts: &FilelistOptions) -> Result<Dataset, DataError> {
    Filelist::open(path, opts)?.load()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Images;

    /// A data root with `img/a.png`, `img/b.png` (4×3 gray), `img/rgb.png` (4×3 colour),
    /// `img/big.png` (5×3), `img/notes.png` (not an image) and `secret.png` beside it.
    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("img")).unwrap();
        image::GrayImage::from_fn(4, 3, |x, y| image::Luma([(10 * y + x) as u8]))
            .save(root.join("img/a.png"))
            .unwrap();
        image::GrayImage::from_pixel(4, 3, image::Luma([7])).save(root.join("img/b.png")).unwrap();
        image::RgbImage::from_pixel(4, 3, image::Rgb([200, 100, 0]))
            .save(root.join("img/rgb.png"))
            .unwrap();
        image::GrayImage::new(5, 3).save(root.join("img/big.png")).unwrap();
        std::fs::write(root.join("img/notes.png"), b"not an image").unwrap();
        image::GrayImage::new(4, 3).save(dir.path().join("secret.png")).unwrap();
        dir
    }

    fn load_text(dir: &Path, text: &str, opts: &FilelistOptions) -> Result<Dataset, DataError> {
        let list = dir.join("root/list.txt");
        std::fs::write(&list, text).unwrap();
        load_filelist(&list, opts)
    }

    #[test]
    fn loads_images_and_multi_hot_labels() {
        let dir = setup();
        let text = "# comment\nimg/a.png 1 0 1\n\n  ./img/b.png\t0.0 1.0 0\r\n";
        let d = load_text(dir.path(), text, &FilelistOptions::default()).unwrap();
        assert_eq!((d.len(), d.channels, d.height, d.width, d.num_labels), (2, 1, 3, 4, 3));
        assert!(d.multi_label && !d.allows_hflip);
        assert!(d.name.ends_with("list.txt"));
        assert_eq!(d.label(0), &[1.0, 0.0, 1.0]);
        assert_eq!(d.label(1), &[0.0, 1.0, 0.0]);
        assert_eq!(&d.image(0)[..6], &[0, 1, 2, 3, 10, 11]);
        assert_eq!(d.image(1), &[7; 12]);
    }

    #[test]
    fn one_hot_lists_are_single_label_and_rgb_is_chw() {
        let dir = setup();
        let opts =
            FilelistOptions { channels: 3, allows_hflip: true, ..FilelistOptions::default() };
        let d = load_text(dir.path(), "img/rgb.png 0 1\nimg/b.png 1 0\n", &opts).unwrap();
        assert!(!d.multi_label && d.allows_hflip);
        assert_eq!((d.channels, d.image(0).len()), (3, 36));
        assert_eq!((d.image(0)[0], d.image(0)[12], d.image(0)[24]), (200, 100, 0));
        assert_eq!(d.image(1), &[7; 36]);
        let gray = load_text(dir.path(), "img/rgb.png 0 1\n", &FilelistOptions::default()).unwrap();
        assert_eq!(gray.channels, 1);
        assert!(gray.image(0).iter().all(|&v| v == gray.image(0)[0] && v > 0));
        let none_set =
            load_text(dir.path(), "img/a.png 0 1\nimg/b.png 0 0\n", &FilelistOptions::default())
                .unwrap();
        assert!(none_set.multi_label, "a row without labels is not one-hot");
    }

    #[test]
    fn unicode_and_spaces_in_the_root_and_unicode_names_load() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Röntgen Bilder – Größe 2");
        std::fs::create_dir_all(root.join("Bild ä")).unwrap();
        image::GrayImage::from_pixel(4, 3, image::Luma([9]))
            .save(root.join("Bild ä/Thorax-Überblick-日本.png"))
            .unwrap();
        let list = root.join("Liste ü.txt");
        std::fs::write(&list, "./Thorax-Überblick-日本.png 1 0\n").unwrap();
        let opts =
            FilelistOptions { root: Some(root.join("Bild ä")), ..FilelistOptions::default() };
        let d = load_filelist(&list, &opts).unwrap();
        assert_eq!((d.len(), d.image(0)[0]), (1, 9));
        assert!(d.name.contains("Liste ü.txt"), "{}", d.name);
    }

    #[test]
    fn a_quoted_path_may_hold_spaces() {
        let dir = setup();
        std::fs::copy(dir.path().join("root/img/b.png"), dir.path().join("root/img/b c.png"))
            .unwrap();
        let d =
            load_text(dir.path(), "\"img/b c.png\" 1 0\n", &FilelistOptions::default()).unwrap();
        assert_eq!((d.len(), d.image(0)), (1, &[7u8; 12][..]));
    }

    #[test]
    fn one_hot_sets_refuse_rows_with_two_labels_or_none() {
        let dir = setup();
        let opts = FilelistOptions { one_hot: true, ..FilelistOptions::default() };
        assert!(load_text(dir.path(), "img/a.png 0 1\n", &opts).is_ok());
        for (text, set) in
            [("img/a.png 1 0\nimg/b.png 1 1\n", 2), ("img/a.png 0 1\nimg/b.png 0 0\n", 0)]
        {
            let err = load_text(dir.path(), text, &opts).unwrap_err().to_string();
            assert!(
                err.contains(&format!("line 2: img/b.png sets {set} labels"))
                    && err.contains("single-label"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_image_of_another_size_is_refused_from_its_header() {
        let dir = setup();
        // A tiny PNG declaring 16384×16384 pixels: refused before its pixels are decoded.
        let huge = image::GrayImage::new(1, 1);
        let mut bytes = Vec::new();
        huge.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        // IHDR: type at 12..16, width and height at 16..24, its CRC at 29..33.
        bytes[16..20].copy_from_slice(&16384u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&16384u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        std::fs::write(dir.path().join("root/img/huge.png"), &bytes).unwrap();
        let text = "img/huge.png 1\n".repeat(20);
        let opts = FilelistOptions { size: Some((4, 3)), ..FilelistOptions::default() };
        let err = load_text(dir.path(), &text, &opts).unwrap_err().to_string();
        assert!(
            err.contains("line 1: image of 16384×16384 pixels where 4×3 are expected"),
            "{err}"
        );
        let text = format!("img/a.png 1\n{}", "img/huge.png 1\n".repeat(20));
        let err =
            load_text(dir.path(), &text, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(err.contains("line 2: image of 16384×16384 pixels where 4×3"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_named_in_a_filelist_is_refused_without_blocking() {
        let dir = setup();
        let fifo = dir.path().join("root/img/pipe.png");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let err =
            load_text(dir.path(), "img/a.png 1\nimg/pipe.png 1\n", &FilelistOptions::default())
                .unwrap_err()
                .to_string();
        assert!(err.contains("line 2") && err.contains("is a FIFO"), "{err}");
        let list = dir.path().join("list-fifo");
        assert!(std::process::Command::new("mkfifo").arg(&list).status().unwrap().success());
        let err = load_filelist(&list, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(err.contains("is a FIFO"), "{err}");
    }

    #[test]
    fn root_option_overrides_the_filelist_directory() {
        let dir = setup();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "img/b.png 1\n").unwrap();
        let opts =
            FilelistOptions { root: Some(dir.path().join("root")), ..FilelistOptions::default() };
        assert_eq!(load_filelist(&list, &opts).unwrap().image(0), &[7; 12]);
        let err = load_filelist(&list, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("img/b.png"), "{err}");
    }

    #[test]
    fn bad_lines_are_named_with_file_and_line() {
        let dir = setup();
        let cases = [
            (
                "img/a.png 1 0\n# c\nimg/b.png 1 0 0\n",
                "line 3: expected 2 labels (as on line 1), found 3",
            ),
            ("img/a.png 1 x\n", "line 1: label \"x\" of img/a.png is not 0 or 1"),
            ("img/a.png 1 0.5\n", "line 1: label \"0.5\""),
            ("img/a.png 1 2\n", "line 1: label \"2\""),
            ("../secret.png 1 0\n", "line 1: path escapes the data root: ../secret.png"),
            ("img/a.png 1 0\nimg/../../secret.png 1 0\n", "line 2: path escapes the data root"),
            (
                "/etc/passwd 1 0\n",
                "line 1: path escapes the data root: /etc/passwd (it is absolute)",
            ),
            ("img/a.png 1 0\nimg/missing.png 0 1\n", "line 2: cannot read image"),
            ("img/notes.png 1 0\n", "line 1: cannot decode image"),
            (
                "img/a.png 1 0\nimg/big.png 0 1\n",
                "line 2: image of 5×3 pixels where 4×3 are expected",
            ),
            ("img/a.png\n", "line 1: img/a.png has no labels"),
            (
                "img/a b.png 1 0\n",
                "label \"b.png\" of img/a is not 0 or 1 (fields are separated by whitespace: a path with spaces is written in double quotes, \"img/a b.png\")",
            ),
            ("\"img/a.png 1 0\n", "line 1: a path opened with \" is not closed"),
            ("# nothing\n\n", "names no images"),
        ];
        for (text, needle) in cases {
            let err =
                load_text(dir.path(), text, &FilelistOptions::default()).unwrap_err().to_string();
            assert!(err.contains("list.txt: ") && err.contains(needle), "{text:?} gave {err}");
        }
        let err = load_text(dir.path(), "img/missing.png 1\n", &FilelistOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.png"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_rejected() {
        let dir = setup();
        std::os::unix::fs::symlink(
            dir.path().join("secret.png"),
            dir.path().join("root/img/link.png"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("root/img/a.png"),
            dir.path().join("root/inside.png"),
        )
        .unwrap();
        let err =
            load_text(dir.path(), "img/a.png 1\nimg/link.png 1\n", &FilelistOptions::default())
                .unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("list.txt: line 2: path escapes the data root: img/link.png"),
            "{err}"
        );
        let d = load_text(dir.path(), "inside.png 1\n", &FilelistOptions::default()).unwrap();
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn unusable_options_and_files_are_errors() {
        let dir = setup();
        let opts = FilelistOptions { channels: 2, ..FilelistOptions::default() };
        let err = load_text(dir.path(), "img/a.png 1\n", &opts).unwrap_err().to_string();
        assert!(err.contains("list.txt") && err.contains("2 channels"), "{err}");
        let absent = dir.path().join("absent.txt");
        let err = load_filelist(&absent, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(err.contains("absent.txt: cannot read"), "{err}");
    }

    /// Opens `text` as `root/list.txt` of the [`setup`] root.
    fn open_text(dir: &Path, text: &str) -> Result<Filelist, DataError> {
        let list = dir.join("root/list.txt");
        std::fs::write(&list, text).unwrap();
        Filelist::open(&list, &FilelistOptions::default())
    }

    #[test]
    fn streamed_chunks_and_images_read_again_are_the_loaded_set() {
        let dir = setup();
        let text: String =
            (0..10).map(|i| format!("img/{}.png {} 1\n", ["a", "b"][i % 3 % 2], i % 2)).collect();
        let filelist = open_text(dir.path(), &format!("# ten images\n{text}")).unwrap();
        let loaded = filelist.load().unwrap();
        let mut chunks = Vec::new();
        let mut streamed: Vec<u8> = Vec::new();
        let catalog = filelist
            .read(3, |pixels| {
                chunks.push(pixels.dim());
                streamed.extend(pixels.iter());
                Ok::<(), DataError>(())
            })
            .unwrap();
        assert_eq!(chunks.iter().map(|d| d.0).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert!(chunks.iter().all(|&(_, c, h, w)| (c, h, w) == (1, 3, 4)));
        assert_eq!(streamed, loaded.images);
        assert_eq!((Images::len(&catalog), catalog.identities().len()), (10, 10));
        for i in 0..10 {
            assert_eq!(Images::label(&catalog, i), loaded.label(i), "row {i}");
        }
        let picked = [7, 0, 3, 3, 9];
        assert_eq!(catalog.read(&picked).unwrap(), loaded.batch(&picked));
        assert_eq!(Images::read(&loaded, &picked).unwrap(), loaded.batch(&picked));
    }

    #[test]
    fn errors_deep_in_a_long_filelist_name_their_line() {
        let dir = setup();
        let line = "img/a.png 1 0\n";
        let mut text = line.repeat(999_999);
        text.push_str("img/a.png 1 0 0\n");
        let err = open_text(dir.path(), &text).unwrap_err().to_string();
        assert!(
            err.contains("list.txt: line 1000000: expected 2 labels (as on line 1), found 3"),
            "{err}"
        );

        let mut text = line.repeat(5_000);
        text.push_str("img/missing.png 0 1\n");
        text.push_str(&line.repeat(10));
        let filelist = open_text(dir.path(), &text).unwrap();
        assert_eq!(filelist.len(), 5_011);
        let mut seen = 0;
        let err = filelist
            .read(256, |pixels| {
                seen += pixels.dim().0;
                Ok::<(), DataError>(())
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("list.txt: line 5001: cannot read image") && err.contains("missing.png"),
            "{err}"
        );
        assert_eq!(seen, 4_864, "the chunks before the bad line were handed on, not held");

        assert!(open_text(dir.path(), "img/a.png 1\nimg/ü.png 1\n").is_ok(), "unicode is text");
        let list = dir.path().join("root/list.txt");
        std::fs::write(&list, b"img/a.png 1\nimg/\xff.png 1\n").unwrap();
        let err = Filelist::open(&list, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(err.contains("list.txt: line 2: not UTF-8 text"), "{err}");
        std::fs::write(&list, format!("img/a.png 1\n{}\n", "x".repeat(MAX_LINE as usize + 1)))
            .unwrap();
        let err = Filelist::open(&list, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(err.contains("list.txt: line 2: longer than"), "{err}");
    }

    #[test]
    fn an_image_or_line_changed_after_the_first_read_is_refused() {
        let dir = setup();
        let read = |text: &str| {
            open_text(dir.path(), text).unwrap().read(2, |_| Ok::<(), DataError>(())).unwrap()
        };
        let catalog = read("img/a.png 1 0\n# note\nimg/b.png 0 1\n");
        assert_eq!(catalog.read(&[1]).unwrap().as_slice().unwrap(), &[7; 12]);
        image::GrayImage::from_pixel(4, 3, image::Luma([8]))
            .save(dir.path().join("root/img/b.png"))
            .unwrap();
        let err = catalog.read(&[0, 1]).unwrap_err().to_string();
        assert!(
            err.contains("list.txt: line 3: img/b.png changed since the set was first read"),
            "{err}"
        );

        let catalog = read("img/a.png 1 0\nimg/b.png 0 1\n");
        std::fs::write(dir.path().join("root/list.txt"), "img/a.png 0 1\nimg/b.png 0 1\n").unwrap();
        let err = catalog.read(&[0]).unwrap_err().to_string();
        assert!(err.contains("list.txt: line 1: the filelist changed"), "{err}");
        std::fs::write(dir.path().join("root/list.txt"), "img/a.png 1 0\n").unwrap();
        let err = catalog.read(&[1]).unwrap_err().to_string();
        assert!(err.contains("list.txt: line 2: the filelist changed"), "{err}");
    }

    #[test]
    fn lexical_escape_check() {
        for ok in ["a.png", "./a/b.png", "a/../b.png", "a/b/../../c.png"] {
            assert!(stays_inside(Path::new(ok)), "{ok}");
        }
        for bad in ["../a.png", "a/../../b.png", "/a.png", "./.."] {
            assert!(!stays_inside(Path::new(bad)), "{bad}");
        }
    }
}
