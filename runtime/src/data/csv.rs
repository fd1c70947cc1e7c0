//! Findings CSVs, as a RIS exports them: a header row naming the columns, then one image per
//! row.
//!
//! ```text
//! path,patient_id,Atelectasis,Effusion,No Finding
//! images/00000001_000.png,P0001,0,1,0
//! images/00000002_000.png,P0001,0,0,1
//! ```
//!
//! Columns are separated by commas (by semicolons or tabs when the header holds no comma but
//! those); a field may be quoted (`"a, b"`, `""` for a quote inside it) and a quoted field may
//! span lines; spaces around fields are dropped; blank lines are skipped. Column names are
//! matched case-insensitively, and no name may appear twice. Three are reserved:
//!
//! - `path`: the image file (PNG, JPEG, DICOM), relative to the CSV's directory or to
//!   [`FilelistOptions::root`](super::FilelistOptions::root), checked like a filelist's paths:
//!   it may not leave that root, lexically or through a symbolic link;
//! - `sop_instance_uid`, instead of `path`: the DICOM file under the root with this
//!   SOPInstanceUID (every file below the root is looked at, `data/uids.rs`);
//! - `patient_id` (optional): who the image shows, hashed as it is read
//!   ([`Identity::of_patient_id`]). Where the column is absent or empty a DICOM file's
//!   PatientID is used; where both are given they must name the same patient.
//!
//! The labels come from the other columns, in one of two ways:
//!
//! - **findings**: every other column (or those
//!   [`FilelistOptions::findings`](super::FilelistOptions::findings) lists, in its order)
//!   holds `0` or `1` (also `0.0`/`1.0`): multi-hot labels named by the columns; the set is
//!   single-label (`multi_label` false) when every row sets exactly one, as for filelists;
//! - **class name**: the CSV has exactly one other column and its values are not all 0/1: each
//!   row's class, one-hot over the distinct names sorted (at most [`MAX_CLASSES`]).
//!
//! Each image may be named once. A CSV is read record by record, never whole, into the rows a
//! filelist gives ([`Row`]), and its images are decoded as a filelist's are. Errors name the
//! CSV and the line the record starts on. `docs/data.md` describes the format for the people
//! who export it.

use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::DataError;
use super::catalog::digest;
use super::filelist::{
    MAX_LINE, Row, Source, Summary, checked_path, not_one_hot, parse_label, read_line,
};
use super::uids::Uids;
use crate::dicom::trim_padding;
use crate::identity::Identity;

/// The column naming each image's file (reserved; matched case-insensitively).
pub const PATH_COLUMN: &str = "path";
/// The column naming who each image shows (reserved).
pub const PATIENT_ID_COLUMN: &str = "patient_id";
/// The column naming each image's DICOM file by its SOPInstanceUID (reserved).
pub const SOP_INSTANCE_UID_COLUMN: &str = "sop_instance_uid";

/// Most distinct names a class-name column may hold: more are likely an identifier column.
pub const MAX_CLASSES: usize = 1024;

/// Whether `path` names a findings CSV (`*.csv`, any case) rather than a filelist.
pub fn is_csv(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("csv"))
}

/// One record of a CSV: its fields, without surrounding spaces, and where it starts.
struct Record {
    /// 1-based line it starts on.
    line: usize,
    /// Byte offset of that line in the CSV.
    offset: u64,
    fields: ::csv::StringRecord,
}

impl Record {
    /// Field `column`, empty where the record is shorter.
    fn field(&self, column: usize) -> &str {
        self.fields.get(column).unwrap_or("")
    }
}

/// Where the fields of a record stand at some byte: enough of the `csv` crate's own state to
/// tell whether a line ends inside a quoted field, and so the record goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quote {
    /// At the start of a field.
    FieldStart,
    /// Inside a field that did not start with a quote.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote that closed a quoted field (or, if another quote follows, escaped
    /// it).
    Closed,
}

impl Quote {
    /// The state after `text`, with fields separated by `delimiter`.
    fn after(self, text: &str, delimiter: u8) -> Quote {
        text.bytes().fold(self, |state, byte| match (state, byte) {
            (Quote::Quoted, b'"') => Quote::Closed,
            (Quote::Quoted, _) => Quote::Quoted,
            (Quote::Closed, b'"') => Quote::Quoted,
            (_, b'\n' | b'\r') => Quote::FieldStart,
            (_, byte) if byte == delimiter => Quote::FieldStart,
            (Quote::FieldStart, b'"') => Quote::Quoted,
            _ => Quote::Unquoted,
        })
    }
}

/// The delimiter a header line uses: a comma where it holds one outside quotes, else a
/// semicolon, else a tab, else a comma (a CSV of one column).
fn delimiter_of(header: &str) -> u8 {
    let mut quoted = false;
    let mut seen = [false; 3];
    for byte in header.bytes() {
        match byte {
            b'"' => quoted = !quoted,
            b',' if !quoted => seen[0] = true,
            b';' if !quoted => seen[1] = true,
            b'\t' if !quoted => seen[2] = true,
            _ => {}
        }
    }
    [b',', b';', b'\t'].into_iter().zip(seen).find(|&(_, seen)| seen).map_or(b',', |(d, _)| d)
}

/// The records of a CSV, read line by line and holding one record at a time: a record goes on
/// over the next line while a quoted field is open. Lines are counted as in filelists.
struct Records<R> {
    list: PathBuf,
    reader: R,
    /// The delimiter, once the header line said it.
    delimiter: Option<u8>,
    /// Lines read so far.
    line: usize,
    /// Bytes read so far.
    offset: u64,
    buffer: Vec<u8>,
    text: String,
}

impl<R: BufRead> Records<R> {
    /// The records of `reader`, positioned at byte `offset` of the CSV `list`, where line
    /// `line + 1` starts.
    fn at(list: &Path, reader: R, delimiter: Option<u8>, line: usize, offset: u64) -> Self {
        Records {
            list: list.to_path_buf(),
            reader,
            delimiter,
            line,
            offset,
            buffer: Vec::new(),
            text: String::new(),
        }
    }

    /// The next record, `None` at the end.
    fn next_record(&mut self) -> Option<Result<Record, DataError>> {
        self.text.clear();
        let (mut start, mut state) = ((0, 0), Quote::FieldStart);
        loop {
            let Some(read) =
                read_line(&mut self.reader, &mut self.buffer, &self.list, self.line + 1)
            else {
                if self.text.is_empty() {
                    return None;
                }
                return Some(Err(DataError::line(
                    &self.list,
                    start.0,
                    "a quoted field opened in this record is not closed before the end of the file",
                )));
            };
            let read = match read {
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
            if self.text.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                start = (line, offset);
            }
            if (self.text.len() + text.len()) as u64 > MAX_LINE {
                return Some(Err(DataError::line(
                    &self.list,
                    start.0,
                    format!(
                        "a record longer than {MAX_LINE} bytes (is a quoted field not closed?)"
                    ),
                )));
            }
            let delimiter = *self.delimiter.get_or_insert_with(|| delimiter_of(text));
            state = state.after(text, delimiter);
            self.text.push_str(text);
            if state != Quote::Quoted {
                break;
            }
        }
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(::csv::Trim::All)
            .delimiter(self.delimiter.unwrap_or(b','))
            .from_reader(self.text.as_bytes());
        let mut fields = ::csv::StringRecord::new();
        match reader.read_record(&mut fields) {
            Ok(_) => Some(Ok(Record { line: start.0, offset: start.1, fields })),
            Err(e) => Some(Err(DataError::line(&self.list, start.0, format!("not CSV: {e}")))),
        }
    }
}

/// How a record names its image.
#[derive(Debug)]
enum Key {
    /// By the path in this column.
    Path(usize),
    /// By the SOPInstanceUID in this column, among these DICOM files.
    Uid(usize, Uids),
}

/// How a record's labels are read.
#[derive(Debug)]
enum Labels {
    /// From these 0/1 columns, in this order.
    Findings(Vec<usize>),
    /// From this column's class name: one-hot over `names` (sorted).
    Class { column: usize, names: Vec<String> },
}

/// What a CSV's header and a first reading of every record established: how a record becomes
/// a [`Row`].
#[derive(Debug)]
pub(crate) struct Layout {
    delimiter: u8,
    /// The header's fields (column names, as written).
    names: Vec<String>,
    key: Key,
    patient: Option<usize>,
    labels: Labels,
}

impl Layout {
    /// The row of `record`, checked: field count, path, labels.
    fn row(&self, list: &Path, record: &Record) -> Result<Row, DataError> {
        let err = |message: String| DataError::line(list, record.line, message);
        if record.fields.len() != self.names.len() {
            return Err(err(format!(
                "{} fields, but the header names {} columns",
                record.fields.len(),
                self.names.len()
            )));
        }
        let path = self.path(list, record)?;
        let labels = match &self.labels {
            Labels::Findings(columns) => columns
                .iter()
                .map(|&c| {
                    parse_label(record.field(c))
                        .ok_or_else(|| err(not_a_finding(&self.names[c], record.field(c))))
                })
                .collect::<Result<Vec<f32>, _>>()?,
            Labels::Class { column, names } => {
                let name = record.field(*column);
                let class = names.binary_search_by(|n| n.as_str().cmp(name)).map_err(|_| {
                    err(format!(
                        "class {name:?} (column {}) is not one of the {} read first",
                        self.names[*column],
                        names.len()
                    ))
                })?;
                let mut labels = vec![0.0; names.len()];
                labels[class] = 1.0;
                labels
            }
        };
        let identity = self.patient.and_then(|c| Identity::of_patient_id(record.field(c)));
        Ok(Row { line: record.line, offset: record.offset, path, labels, identity })
    }

    /// The image file `record` names, relative to the root.
    fn path(&self, list: &Path, record: &Record) -> Result<PathBuf, DataError> {
        let err = |message: String| DataError::line(list, record.line, message);
        match &self.key {
            Key::Path(column) => match record.field(*column) {
                "" => Err(err(format!("no image: the {} column is empty", self.names[*column]))),
                file => checked_path(list, record.line, file),
            },
            Key::Uid(column, uids) => match trim_padding(record.field(*column)) {
                "" => Err(err(format!("no image: the {} column is empty", self.names[*column]))),
                uid => uids.find(uid).map(Path::to_path_buf).map_err(err),
            },
        }
    }

    /// The labels' names, in label order.
    fn label_names(&self) -> Vec<String> {
        match &self.labels {
            Labels::Findings(columns) => columns.iter().map(|&c| self.names[c].clone()).collect(),
            Labels::Class { names, .. } => names.clone(),
        }
    }
}

/// The error text of a finding column's value that is not 0 or 1.
fn not_a_finding(column: &str, value: &str) -> String {
    format!("{column} is {value:?}, not 0 or 1 (a finding column holds 0 or 1 in every row)")
}

/// The rows of a CSV, as [`Layout`] reads its records.
pub(crate) struct CsvRows<R> {
    layout: Arc<Layout>,
    records: Records<R>,
    /// Whether the header record is yet to be read (and checked against the layout's).
    header: bool,
}

impl<R: BufRead> CsvRows<R> {
    /// The rows of `reader`, positioned at byte `offset` of the CSV `list`, where line
    /// `line + 1` starts (0 and 0: its start, the header).
    pub(crate) fn at(
        list: &Path,
        layout: &Arc<Layout>,
        reader: R,
        line: usize,
        offset: u64,
    ) -> Self {
        CsvRows {
            layout: Arc::clone(layout),
            records: Records::at(list, reader, Some(layout.delimiter), line, offset),
            header: line == 0 && offset == 0,
        }
    }
}

impl<R: BufRead> Iterator for CsvRows<R> {
    type Item = Result<Row, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let record = match self.records.next_record()? {
                Ok(record) => record,
                Err(e) => return Some(Err(e)),
            };
            if std::mem::take(&mut self.header) {
                if !record.fields.iter().eq(self.layout.names.iter().map(String::as_str)) {
                    return Some(Err(DataError::line(
                        &self.records.list,
                        record.line,
                        "the header changed since the CSV was first read",
                    )));
                }
                continue;
            }
            return Some(self.layout.row(&self.records.list, &record));
        }
    }
}

/// The reserved columns of a header and the others.
struct Columns {
    path: Option<usize>,
    uid: Option<usize>,
    patient: Option<usize>,
    /// Every other column, in order.
    others: Vec<usize>,
}

/// Reads the header record: every column named, once (case-insensitively).
fn columns(list: &Path, header: &Record) -> Result<Columns, DataError> {
    let err = |message: String| DataError::line(list, header.line, message);
    let mut columns = Columns { path: None, uid: None, patient: None, others: Vec::new() };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (c, name) in header.fields.iter().enumerate() {
        if name.is_empty() {
            return Err(err(format!("column {} of the header has no name", c + 1)));
        }
        let folded = name.to_lowercase();
        if let Some(first) = seen.insert(folded.clone(), c) {
            return Err(err(format!(
                "columns {} and {} are both named {name:?} (names are compared ignoring case)",
                first + 1,
                c + 1
            )));
        }
        match folded.as_str() {
            PATH_COLUMN => columns.path = Some(c),
            SOP_INSTANCE_UID_COLUMN => columns.uid = Some(c),
            PATIENT_ID_COLUMN => columns.patient = Some(c),
            _ => columns.others.push(c),
        }
    }
    Ok(columns)
}

/// The finding columns: those `findings` names (in its order), else every other column.
fn finding_columns(
    list: &Path,
    header: &Record,
    columns: &Columns,
    findings: Option<&[String]>,
) -> Result<Vec<usize>, DataError> {
    let err = |message: String| DataError::line(list, header.line, message);
    let Some(findings) = findings else {
        if columns.others.is_empty() {
            return Err(err(format!(
                "no finding columns: besides {PATH_COLUMN}, {PATIENT_ID_COLUMN} and {SOP_INSTANCE_UID_COLUMN}, \
                 the header must name the findings (0/1 columns) or one class-name column"
            )));
        }
        return Ok(columns.others.clone());
    };
    if findings.is_empty() {
        return Err(err("the list of findings to use is empty".into()));
    }
    let mut chosen = Vec::with_capacity(findings.len());
    for finding in findings {
        let column = columns
            .others
            .iter()
            .copied()
            .find(|&c| header.field(c).to_lowercase() == finding.trim().to_lowercase())
            .ok_or_else(|| {
                let reserved = [PATH_COLUMN, PATIENT_ID_COLUMN, SOP_INSTANCE_UID_COLUMN]
                    .contains(&finding.trim().to_lowercase().as_str());
                let names: Vec<&str> = columns.others.iter().map(|&c| header.field(c)).collect();
                err(if reserved {
                    format!("{finding:?} is a reserved column, not a finding")
                } else {
                    format!(
                        "the finding {finding:?} is not a column of this CSV (its other columns: {})",
                        names.join(", ")
                    )
                })
            })?;
        if chosen.contains(&column) {
            return Err(err(format!("the finding {finding:?} is listed twice")));
        }
        chosen.push(column);
    }
    Ok(chosen)
}

/// What the first reading of the records gathers, to choose between findings and a class
/// column and to name the first problem.
#[derive(Default)]
struct Tally {
    len: usize,
    /// Whether a row sets other than exactly one finding.
    multi_label: bool,
    /// The first row that does, and how many it sets.
    first_not_one: Option<(Row, usize)>,
    /// The first value of a finding column that is not 0 or 1: line, column, value.
    first_bad: Option<(usize, usize, String)>,
    /// The values of the one candidate column, when it may be a class-name column.
    classes: BTreeSet<String>,
    /// The first line whose class name is empty.
    first_empty: Option<usize>,
    /// Where each image was first named (by a digest of its path).
    seen: HashMap<[u8; 16], usize>,
}

/// Reads the CSV `source` names (open as `reader`) once: its header, every record checked.
/// Returns how its records become rows, and what they hold.
pub(super) fn open(source: &Source, reader: impl BufRead) -> Result<(Layout, Summary), DataError> {
    let list = source.list.as_path();
    let mut records = Records::at(list, reader, None, 0, 0);
    let header = records.next_record().ok_or_else(|| {
        DataError::invalid(list, "the CSV is empty: a header naming its columns is expected")
    })??;
    let columns = columns(list, &header)?;
    let candidates = finding_columns(list, &header, &columns, source.opts.findings.as_deref())?;
    let key = match (columns.path, columns.uid) {
        (Some(path), None) => Key::Path(path),
        (None, Some(uid)) => Key::Uid(uid, Uids::scan(&source.root, &source.canonical_root)?),
        (Some(_), Some(_)) => {
            return Err(DataError::line(
                list,
                header.line,
                format!(
                    "both a {PATH_COLUMN} and a {SOP_INSTANCE_UID_COLUMN} column: keep the one that names the images"
                ),
            ));
        }
        (None, None) => {
            return Err(DataError::line(
                list,
                header.line,
                format!(
                    "no {PATH_COLUMN} column (nor {SOP_INSTANCE_UID_COLUMN}): the header must name the column that says which image each row describes"
                ),
            ));
        }
    };
    let mut layout = Layout {
        delimiter: records.delimiter.unwrap_or(b','),
        names: header.fields.iter().map(str::to_owned).collect(),
        key,
        patient: columns.patient,
        labels: Labels::Findings(candidates.clone()),
    };
    let class_column =
        (source.opts.findings.is_none() && candidates.len() == 1).then(|| candidates[0]);
    let mut tally = Tally::default();
    while let Some(record) = records.next_record() {
        tally.add(list, &layout, &candidates, class_column, &record?)?;
    }
    if tally.len == 0 {
        return Err(DataError::invalid(list, "the CSV names no images (a header, but no rows)"));
    }
    let multi_label = match (class_column, tally.first_bad.take()) {
        (Some(column), Some(_)) => {
            if let Some(line) = tally.first_empty {
                return Err(DataError::line(
                    list,
                    line,
                    format!("no class: the {} column is empty", layout.names[column]),
                ));
            }
            if tally.classes.len() > MAX_CLASSES {
                return Err(DataError::invalid(
                    list,
                    format!(
                        "the column {} holds more than {MAX_CLASSES} distinct values: if it names classes, there are too many; if it holds findings, write them as 0/1 columns",
                        layout.names[column]
                    ),
                ));
            }
            let names = std::mem::take(&mut tally.classes).into_iter().collect();
            layout.labels = Labels::Class { column, names };
            false
        }
        (_, Some((line, column, value))) => {
            let hint = if source.opts.findings.is_none() && candidates.len() > 1 {
                format!(
                    "; every column besides {PATH_COLUMN}, {PATIENT_ID_COLUMN} and {SOP_INSTANCE_UID_COLUMN} is a finding unless the findings to use are listed"
                )
            } else {
                String::new()
            };
            return Err(DataError::line(
                list,
                line,
                format!("{}{hint}", not_a_finding(&layout.names[column], &value)),
            ));
        }
        (_, None) => {
            if source.opts.one_hot
                && let Some((row, set)) = &tally.first_not_one
            {
                return Err(not_one_hot(list, row, *set));
            }
            tally.multi_label
        }
    };
    let label_names = layout.label_names();
    let summary =
        Summary { len: tally.len, num_labels: label_names.len(), multi_label, label_names };
    Ok((layout, summary))
}

impl Tally {
    /// Checks `record` and counts it.
    fn add(
        &mut self,
        list: &Path,
        layout: &Layout,
        candidates: &[usize],
        class_column: Option<usize>,
        record: &Record,
    ) -> Result<(), DataError> {
        if record.fields.len() != layout.names.len() {
            return Err(DataError::line(
                list,
                record.line,
                format!(
                    "{} fields, but the header names {} columns",
                    record.fields.len(),
                    layout.names.len()
                ),
            ));
        }
        let path = layout.path(list, record)?;
        let lexical: PathBuf =
            path.components().filter(|c| !matches!(c, Component::CurDir)).collect();
        let first =
            *self.seen.entry(digest(lexical.as_os_str().as_encoded_bytes())).or_insert(record.line);
        if first != record.line {
            return Err(DataError::line(
                list,
                record.line,
                format!(
                    "{} is named again (first on line {first}): each image once",
                    path.display()
                ),
            ));
        }
        let mut labels = Vec::with_capacity(candidates.len());
        for &c in candidates {
            let value = record.field(c);
            match parse_label(value) {
                Some(label) => labels.push(label),
                None => {
                    labels.push(0.0);
                    self.first_bad.get_or_insert_with(|| (record.line, c, value.to_owned()));
                }
            }
        }
        if let Some(c) = class_column {
            let name = record.field(c);
            if name.is_empty() {
                self.first_empty.get_or_insert(record.line);
            } else if self.classes.len() <= MAX_CLASSES && !self.classes.contains(name) {
                self.classes.insert(name.to_owned());
            }
        }
        let set = labels.iter().filter(|&&v| v == 1.0).count();
        self.multi_label |= set != 1;
        if set != 1 && self.first_not_one.is_none() {
            let row =
                Row { line: record.line, offset: record.offset, path, labels, identity: None };
            self.first_not_one = Some((row, set));
        }
        self.len += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

    use super::*;
    use crate::data::{Dataset, Filelist, FilelistOptions, Images, Split, load_filelist};

    /// A data root with `img/a.png`, `img/b.png`, `img/c.png` (4×3 gray), `img/wide.png`
    /// (8×3), `img/notes.png` (not an image), `img/empty.png` (0 bytes), and `secret.png`
    /// beside the root.
    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("root/img");
        std::fs::create_dir_all(&img).unwrap();
        image::GrayImage::from_fn(4, 3, |x, y| image::Luma([(10 * y + x) as u8]))
            .save(img.join("a.png"))
            .unwrap();
        image::GrayImage::from_pixel(4, 3, image::Luma([7])).save(img.join("b.png")).unwrap();
        image::GrayImage::from_pixel(4, 3, image::Luma([9])).save(img.join("c.png")).unwrap();
        image::GrayImage::from_fn(8, 3, |x, _| image::Luma([(x * 30) as u8]))
            .save(img.join("wide.png"))
            .unwrap();
        std::fs::write(img.join("notes.png"), b"not an image").unwrap();
        std::fs::write(img.join("empty.png"), b"").unwrap();
        image::GrayImage::new(4, 3).save(dir.path().join("secret.png")).unwrap();
        dir
    }

    /// Writes `text` as `root/findings.csv` and loads it with `opts`.
    fn load(dir: &Path, text: &str, opts: &FilelistOptions) -> Result<Dataset, DataError> {
        let csv = dir.join("root/findings.csv");
        std::fs::write(&csv, text).unwrap();
        load_filelist(&csv, opts)
    }

    fn patient(id: &str) -> Option<Identity> {
        Identity::of_patient_id(id)
    }

    #[test]
    fn a_findings_csv_loads_labels_patients_and_names() {
        let dir = setup();
        let csv = dir.path().join("root/findings.csv");
        let text = "path,patient_id,Effusion,Nodule,No Finding\n\
                    img/a.png,P1,1,1,0\n\
                    img/b.png,P1,0,0,1\n\
                    img/c.png,,0.0,1.0,0\n";
        std::fs::write(&csv, text).unwrap();
        let d = Dataset::load(&csv, Split::Train).unwrap();
        assert_eq!((d.len(), d.channels, d.height, d.width, d.num_labels), (3, 1, 3, 4, 3));
        assert!(d.multi_label && d.name.ends_with("findings.csv"));
        assert_eq!(d.label_names, ["Effusion", "Nodule", "No Finding"]);
        assert_eq!(
            [d.label(0), d.label(1), d.label(2)],
            [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
        );
        assert_eq!(d.identities, [patient("P1"), patient("P1"), None]);
        assert_eq!(&d.image(0)[..5], &[0, 1, 2, 3, 10]);
        assert_eq!(d.image(2), &[9; 12]);
        assert!(!format!("{d:?}").contains("P1"), "patient ids are hashed");
    }

    #[test]
    fn csv_dialects_load_alike() {
        let dir = setup();
        let expected = load(
            dir.path(),
            "path,a,b\nimg/a.png,1,0\nimg/b.png,0,1\n",
            &FilelistOptions::default(),
        )
        .unwrap();
        assert!(!expected.multi_label, "every row sets exactly one finding");
        for text in [
            "\u{feff}PATH , A,B\r\n\r\nimg/a.png, 1 ,0\r\n\"img/b.png\",0,1",
            "Path;a;b\nimg/a.png;1;0\n\nimg/b.png;0;1\n",
            "path\ta\tb\nimg/a.png\t1\t0\nimg/b.png\t0\t1\n",
        ] {
            let d = load(dir.path(), text, &FilelistOptions::default()).unwrap();
            assert_eq!(
                (d.images.clone(), d.labels.clone()),
                (expected.images.clone(), expected.labels.clone()),
                "{text:?}"
            );
        }
        // A quoted field may hold the delimiter, quotes and line breaks: line numbers still
        // count physical lines.
        let dir2 = setup();
        std::fs::copy(
            dir2.path().join("root/img/b.png"),
            dir2.path().join("root/img/b, \"x\".png"),
        )
        .unwrap();
        let text = "path,\"Finding, with comma\",\"Multi\nline\"\n\"img/b, \"\"x\"\".png\",1,0\nimg/a.png,0,2\n";
        let err = load(dir2.path(), text, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(err.contains("findings.csv: line 4: Multi\nline is \"2\", not 0 or 1"), "{err}");
        let d =
            load(dir2.path(), &text.replace(",0,2", ",0,1"), &FilelistOptions::default()).unwrap();
        assert_eq!(d.label_names, ["Finding, with comma", "Multi\nline"]);
        assert_eq!(d.image(0), &[7; 12]);
    }

    #[test]
    fn a_class_name_column_gives_one_hot_labels_over_the_sorted_names() {
        let dir = setup();
        let text = "patient_id,path,diagnosis\nP1,img/a.png,pneumonia\nP2,img/b.png,normal\nP2,img/c.png,pneumonia\n";
        let d = load(dir.path(), text, &FilelistOptions::default()).unwrap();
        assert_eq!((d.num_labels, d.multi_label), (2, false));
        assert_eq!(d.label_names, ["normal", "pneumonia"]);
        assert_eq!(d.labels, [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(d.identities, [patient("P1"), patient("P2"), patient("P2")]);
        // One 0/1 column is a finding, not a class name.
        let d = load(
            dir.path(),
            "path,nodule\nimg/a.png,1\nimg/b.png,0\n",
            &FilelistOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (d.num_labels, d.multi_label, d.label_names.clone()),
            (1, true, vec!["nodule".to_string()])
        );
    }

    #[test]
    fn findings_select_and_order_the_label_columns() {
        let dir = setup();
        let text = "path,age,Effusion,sex,Nodule\nimg/a.png,71,1,F,0\nimg/b.png,8,0,M,1\n";
        let err = load(dir.path(), text, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(
            err.contains("findings.csv: line 2: age is \"71\", not 0 or 1")
                && err.contains("unless the findings to use are listed"),
            "{err}"
        );
        let opts = FilelistOptions {
            findings: Some(vec!["nodule".into(), "EFFUSION".into()]),
            ..FilelistOptions::default()
        };
        let d = load(dir.path(), text, &opts).unwrap();
        assert_eq!(d.label_names, ["Nodule", "Effusion"]);
        assert_eq!(d.labels, [0.0, 1.0, 1.0, 0.0]);
        assert!(!d.multi_label);
    }

    #[test]
    fn bad_csvs_are_named_with_file_and_line() {
        let dir = setup();
        let one_hot = FilelistOptions { one_hot: true, ..FilelistOptions::default() };
        let only = |names: &[&str]| FilelistOptions {
            findings: Some(names.iter().map(|n| n.to_string()).collect()),
            ..FilelistOptions::default()
        };
        let plain = FilelistOptions::default();
        let cases = [
            ("file,a\nimg/a.png,1\n", &plain, "line 1: no path column (nor sop_instance_uid)"),
            (
                "path,sop_instance_uid,a\nimg/a.png,1.2,1\n",
                &plain,
                "line 1: both a path and a sop_instance_uid column",
            ),
            ("path,a,A\nimg/a.png,1,0\n", &plain, "line 1: columns 2 and 3 are both named \"A\""),
            ("path,,a\nimg/a.png,1,0\n", &plain, "line 1: column 2 of the header has no name"),
            ("path,patient_id\nimg/a.png,P\n", &plain, "line 1: no finding columns"),
            (
                "path,a,b\nimg/a.png,1,0\n",
                &only(&["a", "Mass"]),
                "line 1: the finding \"Mass\" is not a column of this CSV (its other columns: a, b)",
            ),
            (
                "path,a,b\nimg/a.png,1,0\n",
                &only(&["a", "path"]),
                "line 1: \"path\" is a reserved column",
            ),
            (
                "path,a,b\nimg/a.png,1,0\n",
                &only(&["a", "A"]),
                "line 1: the finding \"A\" is listed twice",
            ),
            ("path,a,b\nimg/a.png,1,0\nimg/b.png,2,0\n", &plain, "line 3: a is \"2\", not 0 or 1"),
            ("path,a,b\nimg/a.png,1,0\nimg/b.png,,1\n", &plain, "line 3: a is \"\", not 0 or 1"),
            (
                "path,a,b\nimg/a.png,1,0\nimg/b.png,1\n",
                &plain,
                "line 3: 2 fields, but the header names 3 columns",
            ),
            (
                "path,a,b\nimg/a.png,1,0,1\n",
                &plain,
                "line 2: 4 fields, but the header names 3 columns",
            ),
            ("path,a\nimg/a.png,1\nimg/missing.png,1\n", &plain, "line 3: cannot read image"),
            (
                "path,a\n../secret.png,1\n",
                &plain,
                "line 2: path escapes the data root: ../secret.png",
            ),
            (
                "path,a\n/etc/passwd,1\n",
                &plain,
                "line 2: path escapes the data root: /etc/passwd (it is absolute)",
            ),
            ("path,a\nimg/notes.png,1\n", &plain, "line 2: cannot decode image"),
            (
                "path,a\nimg/a.png,1\nimg/empty.png,1\n",
                &plain,
                "line 3: the image file is empty (0 bytes)",
            ),
            (
                "path,a\nimg/a.png,1\nimg/b.png,1\n./img/a.png,1\n",
                &plain,
                "line 4: ./img/a.png is named again (first on line 2)",
            ),
            ("path,a\n,1\n", &plain, "line 2: no image: the path column is empty"),
            (
                "path,a\nimg/a.png,1\n\"img/b.png,1\n",
                &plain,
                "line 3: a quoted field opened in this record is not closed",
            ),
            ("path,a\n\n", &plain, "the CSV names no images"),
            ("", &plain, "the CSV is empty"),
            (
                "path,class\nimg/a.png,x\nimg/b.png,\n",
                &plain,
                "line 3: no class: the class column is empty",
            ),
            (
                "path,a,b\nimg/a.png,1,0\nimg/b.png,1,1\n",
                &one_hot,
                "line 3: img/b.png sets 2 labels, but these labels are single-label",
            ),
            (
                "path,a\nimg/a.png,1\nimg/wide.png,1\n",
                &plain,
                "line 3: image of 8×3 pixels where 4×3 are expected",
            ),
        ];
        for (text, opts, needle) in cases {
            let err = load(dir.path(), text, opts).unwrap_err().to_string();
            assert!(err.contains("findings.csv: ") && err.contains(needle), "{text:?} gave {err}");
        }
        let many: String = (0..=MAX_CLASSES).map(|i| format!("img/{i}.png,c{i}\n")).collect();
        let err = load(dir.path(), &format!("path,class\n{many}"), &plain).unwrap_err().to_string();
        assert!(err.contains(&format!("more than {MAX_CLASSES} distinct values")), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_root_is_refused() {
        let dir = setup();
        std::os::unix::fs::symlink(
            dir.path().join("secret.png"),
            dir.path().join("root/img/link.png"),
        )
        .unwrap();
        let err =
            load(dir.path(), "path,a\nimg/a.png,1\nimg/link.png,1\n", &FilelistOptions::default())
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("findings.csv: line 3: path escapes the data root: img/link.png"),
            "{err}"
        );
    }

    #[test]
    fn resize_brings_images_of_any_size_to_one_square() {
        let dir = setup();
        let text = "path,patient_id,a\nimg/a.png,P1,1\nimg/wide.png,P1,0\n";
        let csv = dir.path().join("root/findings.csv");
        std::fs::write(&csv, text).unwrap();
        let opts = FilelistOptions { resize: Some(2), ..FilelistOptions::default() };
        let list = Filelist::open(&csv, &opts).unwrap();
        assert_eq!(list.first_size().unwrap(), (4, 3), "as stored, from the header");
        let d = list.load().unwrap();
        assert_eq!((d.len(), d.height, d.width, d.images.len()), (2, 2, 2, 8));
        // wide.png (columns 0, 30, …, 210) scaled to 5×2, its centre cut out from x = 1.
        let wide = image::open(dir.path().join("root/img/wide.png")).unwrap();
        assert_eq!(d.image(1), crate::pixels::fit_square(&wide, 1, 2).unwrap().as_bytes());
        let enlarged = Filelist::open(&csv, &FilelistOptions { resize: Some(28), ..opts.clone() })
            .unwrap()
            .load()
            .unwrap();
        assert_eq!((enlarged.height, enlarged.width), (28, 28));
        for (opts, needle) in [
            (FilelistOptions { resize: Some(0), ..opts.clone() }, "cannot bring images to 0×0"),
            (
                FilelistOptions { size: Some((4, 3)), ..opts.clone() },
                "brought to 2×2 pixels, but 4×3 are expected",
            ),
        ] {
            let err = Filelist::open(&csv, &opts).unwrap_err().to_string();
            assert!(err.contains("findings.csv: ") && err.contains(needle), "{err}");
        }
    }

    #[test]
    fn streamed_rows_are_read_again_and_a_changed_csv_is_refused() {
        let dir = setup();
        let csv = dir.path().join("root/findings.csv");
        // The header spans lines 1 and 2, line 3 is blank: img/c.png is on line 6.
        let text = "path,\"a\nb\",c\n\nimg/a.png,1,0\nimg/b.png,0,1\nimg/c.png,1,1\n";
        std::fs::write(&csv, text).unwrap();
        let list = Filelist::open(&csv, &FilelistOptions::default()).unwrap();
        let loaded = list.load().unwrap();
        let catalog = list.read(2, |_| Ok::<(), DataError>(())).unwrap();
        assert_eq!(catalog.label_names(), ["a\nb", "c"]);
        let picked = [2, 0, 1, 1];
        assert_eq!(catalog.read(&picked).unwrap(), loaded.batch(&picked));
        std::fs::write(&csv, text.replace("img/c.png,1,1", "img/c.png,0,1")).unwrap();
        let err = catalog.read(&[2]).unwrap_err().to_string();
        assert!(
            err.contains("findings.csv: line 6: the CSV changed since the set was first read"),
            "{err}"
        );
        std::fs::write(&csv, text.replace("path,", "file,")).unwrap();
        let err = list.load().unwrap_err().to_string();
        assert!(err.contains("findings.csv: line 1: the header changed"), "{err}");
    }

    /// Writes a DICOM file of one 8-bit MONOCHROME2 `side`×`side` frame with SOPInstanceUID
    /// `uid` and PatientID `patient`; without pixel data when `side` is 0.
    fn write_dicom(path: &Path, uid: &str, patient: &str, side: u16) {
        let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        let short = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
        let mut elements = vec![
            text(tags::SOP_CLASS_UID, VR::UI, uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
            text(tags::SOP_INSTANCE_UID, VR::UI, uid),
            text(tags::PATIENT_ID, VR::LO, patient),
        ];
        if side > 0 {
            let pixels: Vec<u8> =
                (0..usize::from(side) * usize::from(side)).map(|p| (p % 251) as u8).collect();
            elements.extend([
                short(tags::SAMPLES_PER_PIXEL, 1),
                text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
                short(tags::ROWS, side),
                short(tags::COLUMNS, side),
                short(tags::BITS_ALLOCATED, 8),
                short(tags::BITS_STORED, 8),
                short(tags::HIGH_BIT, 7),
                short(tags::PIXEL_REPRESENTATION, 0),
                DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels)),
            ]);
        }
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid(uids::SECONDARY_CAPTURE_IMAGE_STORAGE)
            .media_storage_sop_instance_uid(uid);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        InMemDicomObject::from_element_iter(elements)
            .with_meta(meta)
            .unwrap()
            .write_to_file(path)
            .unwrap();
    }

    #[test]
    fn dicom_files_are_found_by_sop_instance_uid() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // 300×300 pixels: 90 kB, more than the header read first.
        write_dicom(&root.join("study/series/IM1"), "1.2.3.1", "PA", 300);
        write_dicom(&root.join("study/IM2.dcm"), "1.2.3.2", "PB", 300);
        write_dicom(&root.join("report.dcm"), "1.2.3.3", "PA", 0);
        write_dicom(&root.join("copies/x.dcm"), "1.2.3.4", "PC", 4);
        write_dicom(&root.join("copies/y.dcm"), "1.2.3.4", "PC", 4);
        std::fs::write(root.join("notes.txt"), "not DICOM").unwrap();
        let csv = root.join("findings.csv");
        let load = |text: &str, opts: &FilelistOptions| {
            std::fs::write(&csv, text).unwrap();
            load_filelist(&csv, opts)
        };
        let opts = FilelistOptions::default();
        let d = load("SOP_Instance_UID,effusion\n1.2.3.2,1\n1.2.3.1,0\n", &opts).unwrap();
        assert_eq!((d.len(), d.height, d.width), (2, 300, 300));
        assert_eq!(d.identities, [patient("PB"), patient("PA")], "the files' PatientIDs");
        let list = Filelist::open(&csv, &opts).unwrap();
        assert_eq!(list.first_size().unwrap(), (300, 300));
        let d = load("sop_instance_uid,patient_id,effusion\n1.2.3.2,PB,1\n1.2.3.1,,0\n", &opts)
            .unwrap();
        assert_eq!(d.identities, [patient("PB"), patient("PA")]);
        let resized = FilelistOptions { resize: Some(32), ..FilelistOptions::default() };
        let d = load("sop_instance_uid,effusion\n1.2.3.2,1\n1.2.3.1,0\n", &resized).unwrap();
        assert_eq!((d.height, d.width), (32, 32));
        let cases = [
            (
                "sop_instance_uid,patient_id,e\n1.2.3.1,PA,1\n1.2.3.2,PA,0\n",
                "line 3: the patient_id of this row and the PatientID of",
            ),
            ("sop_instance_uid,e\n1.2.3.1,1\n9.9.9,0\n", "line 3: no DICOM file under"),
            ("sop_instance_uid,e\n1.2.3.4,1\n", "line 2: two DICOM files under"),
            ("sop_instance_uid,e\n1.2.3.3,1\n", "line 2: the DICOM file has no PixelData"),
            (
                "sop_instance_uid,e\n1.2.3.1,1\n1.2.3.1,1\n",
                "line 3: study/series/IM1 is named again (first on line 2)",
            ),
        ];
        for (text, needle) in cases {
            let err = load(text, &opts).unwrap_err().to_string();
            assert!(err.contains("findings.csv: ") && err.contains(needle), "{text:?} gave {err}");
        }
        let err = load("sop_instance_uid,e\n9.9.9,0\n", &opts).unwrap_err().to_string();
        assert!(err.contains("has SOPInstanceUID 9.9.9 (5 DICOM files looked at)"), "{err}");
        let err = load("sop_instance_uid,e\n1.2.3.4,1\n", &opts).unwrap_err().to_string();
        assert!(err.contains("copies/x.dcm and copies/y.dcm"), "{err}");
    }
}
