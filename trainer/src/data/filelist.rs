//! Folders of PNG/JPEG images described by a filelist, one image per line:
//! `relative/path.png l0 l1 … lK-1` (multi-hot 0/1 labels), `#` comments and blank lines
//! skipped. Paths are relative to the data root and may not leave it.

use std::path::{Component, Path, PathBuf};

use super::{DataError, Dataset};

/// How a filelist is read.
#[derive(Clone, Debug)]
pub struct Options {
    /// Channels to convert every image to (1: grayscale, 3: RGB).
    pub channels: usize,
    /// Whether horizontal flips keep the images' meaning.
    pub allows_hflip: bool,
    /// Directory the paths are relative to (default: the filelist's directory).
    pub root: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options { channels: 1, allows_hflip: false, root: None }
    }
}

/// One parsed line.
struct Row {
    line: usize,
    path: PathBuf,
    labels: Vec<f32>,
}

fn parse(path: &Path, text: &str) -> Result<Vec<Row>, DataError> {
    let mut rows: Vec<Row> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| DataError::Line { path: path.to_path_buf(), line, message };
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut fields = content.split_whitespace();
        let file = fields.next().expect("non-empty line has a field");
        let labels = fields
            .map(|t| match t {
                "0" | "0.0" => Ok(0.0),
                "1" | "1.0" => Ok(1.0),
                other => Err(err(format!("label {other:?} is not 0 or 1"))),
            })
            .collect::<Result<Vec<f32>, _>>()?;
        if labels.is_empty() {
            return Err(err(format!("{file} has no labels")));
        }
        if let Some(first) = rows.first()
            && first.labels.len() != labels.len()
        {
            return Err(err(format!("expected {} labels (as on line {}), found {}", first.labels.len(), first.line, labels.len())));
        }
        let rel = Path::new(file);
        let escapes = rel.is_absolute()
            || rel.components().try_fold(0usize, |depth, c| match c {
                Component::ParentDir => depth.checked_sub(1),
                Component::Normal(_) => Some(depth + 1),
                Component::CurDir => Some(depth),
                _ => None,
            }).is_none();
        if escapes {
            return Err(err(format!("path escapes the data root: {file}")));
        }
        rows.push(Row { line, path: rel.to_path_buf(), labels });
    }
    if rows.is_empty() {
        return Err(DataError::invalid(path, "the filelist names no images"));
    }
    Ok(rows)
}

/// Loads the images and labels of a filelist.
pub fn load(path: &Path, opts: &Options) -> Result<Dataset, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let rows = parse(path, &text)?;
    let root = opts.root.clone().unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_path_buf());
    let canonical_root = root.canonicalize().map_err(|e| DataError::io(&root, e))?;
    let mut images = Vec::new();
    let mut size: Option<(u32, u32)> = None;
    for row in &rows {
        let err = |message: String| DataError::Line { path: path.to_path_buf(), line: row.line, message };
        let file = root.join(&row.path);
        let real = file.canonicalize().map_err(|e| err(format!("cannot read {}: {e}", file.display())))?;
        if !real.starts_with(&canonical_root) {
            return Err(err(format!("path escapes the data root through a link: {}", row.path.display())));
        }
        let img = image::open(&real).map_err(|e| err(format!("{} is not a readable image: {e}", file.display())))?;
        let dims = (img.width(), img.height());
        if *size.get_or_insert(dims) != dims {
            let (w, h) = size.expect("set above");
            return Err(err(format!("{} is {}×{}, the first image is {w}×{h}", file.display(), dims.0, dims.1)));
        }
        match opts.channels {
            1 => images.extend(img.to_luma8().into_raw()),
            3 => {
                // HWC → CHW
                let rgb = img.to_rgb8().into_raw();
                for c in 0..3 {
                    images.extend(rgb.iter().skip(c).step_by(3));
                }
            }
            n => return Err(DataError::invalid(path, format!("{n} channels requested; 1 or 3 are supported"))),
        }
    }
    let (width, height) = size.expect("at least one row");
    let num_labels = rows[0].labels.len();
    let multi_label = rows.iter().any(|r| r.labels.iter().sum::<f32>() != 1.0);
    Ok(Dataset {
        name: path.display().to_string(),
        channels: opts.channels,
        height: height as usize,
        width: width as usize,
        num_labels,
        multi_label,
        images,
        labels: rows.into_iter().flat_map(|r| r.labels).collect(),
        allows_hflip: opts.allows_hflip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("img")).unwrap();
        for name in ["a", "b"] {
            image::GrayImage::from_pixel(4, 3, image::Luma([7])).save(dir.path().join(format!("img/{name}.png"))).unwrap();
        }
        std::fs::write(dir.path().join("img/notes.png"), b"not an image").unwrap();
        dir
    }

    fn load_text(dir: &Path, text: &str) -> Result<Dataset, DataError> {
        let list = dir.join("list.txt");
        std::fs::write(&list, text).unwrap();
        load(&list, &Options::default())
    }

    #[test]
    fn loads_images_and_multi_hot_labels() {
        let dir = setup();
        let d = load_text(dir.path(), "# comment\nimg/a.png 1 0 1\n\nimg/b.png 0 1 0\n").unwrap();
        assert_eq!((d.len(), d.height, d.width, d.num_labels, d.multi_label), (2, 3, 4, 3, true));
        assert_eq!(d.label(0), &[1.0, 0.0, 1.0]);
        assert_eq!(d.image(1), &[7; 12]);
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = setup();
        let cases = [
            ("img/a.png 1 0\nimg/b.png 1 0 0\n", "line 2: expected 2 labels (as on line 1), found 3"),
            ("img/a.png 1 x\n", "line 1: label \"x\""),
            ("../secret.png 1 0\n", "line 1: path escapes the data root"),
            ("img/../../x.png 1 0\n", "line 1: path escapes the data root"),
            ("/etc/passwd 1 0\n", "line 1: path escapes the data root"),
            ("img/a.png 1 0\nimg/missing.png 0 1\n", "line 2: cannot read"),
            ("img/notes.png 1 0\n", "line 1: "),
            ("img/a.png\n", "has no labels"),
        ];
        for (text, needle) in cases {
            let err = load_text(dir.path(), text).unwrap_err().to_string();
            assert!(err.contains("list.txt") && err.contains(needle), "{text:?} gave {err}");
        }
    }
}
