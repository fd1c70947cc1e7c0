//! Reader for the IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! An IDX file is a big-endian header — magic `0x0000_08nn` (unsigned bytes, `nn`
//! dimensions), then one `u32` per dimension — followed by exactly the product of the
//! dimensions in bytes. Anything shorter or longer is rejected.

use std::io::Read;
use std::path::Path;

use super::{DataError, IDX_CLASSES, MAX_LOADED_BYTES};
use crate::files::{MAX_FILE_BYTES, read_regular};

/// Magic number of an image file: unsigned bytes, three dimensions (count, rows, columns).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of a label file: unsigned bytes, one dimension (count).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Upper bound of the buffer reserved up front for a gunzipped file (the gzip trailer's size
/// field is only a hint).
const MAX_PREALLOCATION: usize = 1 << 28;

/// The bytes of a file, gunzipped when they start with the gzip magic bytes. A gzip stream is
/// inflated no further than its IDX header declares (plus one byte, to tell that it goes on),
/// and a header declaring more than [`MAX_LOADED_BYTES`] is refused before the data is inflated.
fn unpack(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let corrupt = |e: std::io::Error| DataError::invalid(path, format!("corrupt gzip stream: {e}"));
    let mut decoder = flate2::read::MultiGzDecoder::new(raw.as_slice());
    let mut out = Vec::new();
    (&mut decoder).take(4).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() == 4 {
        let dims = u64::from(out[3]);
        (&mut decoder).take(4 * dims).read_to_end(&mut out).map_err(corrupt)?;
    }
    let declared = declared_size(&out);
    if declared > MAX_LOADED_BYTES {
        return Err(DataError::invalid(
            path,
            format!(
                "its header declares {declared} bytes, more than the {} GiB this tool inflates",
                MAX_LOADED_BYTES >> 30
            ),
        ));
    }
    out.reserve((declared as usize).min(MAX_PREALLOCATION).saturating_sub(out.len()));
    let rest = (declared + 1).saturating_sub(out.len() as u64);
    decoder.take(rest).read_to_end(&mut out).map_err(corrupt)?;
    Ok(out)
}

/// The length an IDX file's header (as far as `head` holds it) declares: header plus the
/// product of the dimensions, saturating; `head`'s own length when it is no whole header.
fn declared_size(head: &[u8]) -> u64 {
    if head.len() < 4 {
        return head.len() as u64;
    }
    let dims = usize::from(head[3]);
    if head.len() < 4 + 4 * dims {
        return head.len() as u64;
    }
    let payload =
        (0..dims).map(|i| u64::from(be_u32(head, 4 + 4 * i))).fold(1u64, u64::saturating_mul);
    (4 + 4 * dims as u64).saturating_add(payload)
}

/// The big-endian `u32` at `at`; the caller has checked the length.
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic number and the exact payload length; returns the header's dimensions
/// and the header length.
fn parse_header(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    kind: &str,
) -> Result<(Vec<usize>, usize), DataError> {
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    if bytes.len() < 4 {
        return Err(DataError::invalid(
            path,
            format!("not an IDX {kind} file: only {} bytes", bytes.len()),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::invalid(
            path,
            format!("not an IDX {kind} file (magic 0x{found:08x}, expected 0x{magic:08x})"),
        ));
    }
    if bytes.len() < header {
        return Err(DataError::invalid(
            path,
            format!("truncated: {} bytes, shorter than the {header}-byte header", bytes.len()),
        ));
    }
    let shape: Vec<usize> = (0..dims).map(|i| be_u32(bytes, 4 + 4 * i) as usize).collect();
    let expected = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::invalid(path, format!("dimensions {shape:?} are too large")))?;
    let found = bytes.len() - header;
    if found < expected {
        return Err(DataError::invalid(
            path,
            format!(
                "truncated: expected {expected} bytes of {kind} data for dimensions {shape:?}, found {found}"
            ),
        ));
    }
    if found > expected {
        return Err(DataError::invalid(
            path,
            format!(
                "trailing bytes: expected {expected} bytes of {kind} data for dimensions {shape:?}, found {found}"
            ),
        ));
    }
    Ok((shape, header))
}

/// Reads an IDX image file (raw or gzip): `(count, rows, cols, pixels)`, pixels row-major,
/// `count · rows · cols` bytes.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    parse_images(path, read_regular(path, MAX_FILE_BYTES).map_err(|e| DataError::io(path, e))?)
}

/// Parses the bytes of an IDX image file (raw or gzip) named `path` in errors, as
/// [`read_images`] does.
pub fn parse_images(
    path: &Path,
    raw: Vec<u8>,
) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let mut bytes = unpack(path, raw)?;
    let (shape, header) = parse_header(path, &bytes, IMAGES_MAGIC, "image")?;
    let (n, rows, cols) = (shape[0], shape[1], shape[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::invalid(path, format!("images of {rows}×{cols} pixels")));
    }
    bytes.drain(..header);
    Ok((n, rows, cols, bytes))
}

/// Reads an IDX label file (raw or gzip). Every label must be a class in `0..10`
/// (Fashion-MNIST/MNIST).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    parse_labels(path, read_regular(path, MAX_FILE_BYTES).map_err(|e| DataError::io(path, e))?)
}

/// Parses the bytes of an IDX label file (raw or gzip) named `path` in errors, as
/// [`read_labels`] does.
pub fn parse_labels(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    let mut bytes = unpack(path, raw)?;
    let (_, header) = parse_header(path, &bytes, LABELS_MAGIC, "label")?;
    bytes.drain(..header);
    if let Some((i, &l)) = bytes.iter().enumerate().find(|&(_, &l)| usize::from(l) >= IDX_CLASSES) {
        return Err(DataError::invalid(
            path,
            format!("label {l} of item {i} is not a class in 0..{IDX_CLASSES}"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IDX file: magic, dimensions, payload.
    pub(crate) fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(payload);
        out
    }

    /// Writes `bytes` gzip-compressed.
    pub(crate) fn write_gz(path: &Path, bytes: &[u8]) {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, bytes).unwrap();
        std::fs::write(path, enc.finish().unwrap()).unwrap();
    }

    #[test]
    fn images_and_labels_round_trip_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (1..=12).collect();
        let images = idx_bytes(IMAGES_MAGIC, &[2, 2, 3], &pixels);
        let labels = idx_bytes(LABELS_MAGIC, &[2], &[9, 0]);
        std::fs::write(dir.path().join("images"), &images).unwrap();
        std::fs::write(dir.path().join("labels"), &labels).unwrap();
        write_gz(&dir.path().join("images.gz"), &images);
        write_gz(&dir.path().join("labels.gz"), &labels);
        for suffix in ["", ".gz"] {
            let (n, h, w, px) = read_images(&dir.path().join(format!("images{suffix}"))).unwrap();
            assert_eq!((n, h, w), (2, 2, 3));
            assert_eq!(px, pixels);
            assert_eq!(
                read_labels(&dir.path().join(format!("labels{suffix}"))).unwrap(),
                vec![9, 0]
            );
        }
    }

    #[test]
    fn a_gzip_stream_is_inflated_no_further_than_its_header_declares() {
        let dir = tempfile::tempdir().unwrap();
        // One 28×28 image declared, 64 MiB of zeros after it: stops one byte past the image.
        let mut bomb = idx_bytes(IMAGES_MAGIC, &[1, 28, 28], &[]);
        bomb.resize(bomb.len() + (64 << 20), 0);
        write_gz(&dir.path().join("bomb.gz"), &bomb);
        let err = read_images(&dir.path().join("bomb.gz")).unwrap_err().to_string();
        assert!(err.contains("bomb.gz: trailing bytes: expected 784 bytes"), "{err}");
        assert!(err.contains("found 785"), "inflated past one byte more: {err}");
        // A header declaring more than can be held is refused before any data is inflated.
        write_gz(
            &dir.path().join("huge.gz"),
            &idx_bytes(IMAGES_MAGIC, &[1 << 20, 4096, 4096], &[]),
        );
        let err = read_images(&dir.path().join("huge.gz")).unwrap_err().to_string();
        assert!(err.contains("declares") && err.contains("the 4 GiB this tool inflates"), "{err}");
    }

    #[test]
    fn bad_image_files_are_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "wrong-magic",
                idx_bytes(LABELS_MAGIC, &[1, 1, 1], &[0]),
                "not an IDX image file (magic 0x00000801",
            ),
            (
                "short-payload",
                idx_bytes(IMAGES_MAGIC, &[2, 2, 2], &[0; 7]),
                "truncated: expected 8 bytes",
            ),
            (
                "long-payload",
                idx_bytes(IMAGES_MAGIC, &[1, 2, 2], &[0; 5]),
                "trailing bytes: expected 4 bytes",
            ),
            ("short-header", idx_bytes(IMAGES_MAGIC, &[2], &[]), "shorter than the 16-byte header"),
            ("tiny", vec![0, 0, 8], "only 3 bytes"),
            ("huge", idx_bytes(IMAGES_MAGIC, &[u32::MAX; 3], &[]), "too large"),
            ("empty-images", idx_bytes(IMAGES_MAGIC, &[3, 0, 5], &[]), "0×5"),
        ];
        for (name, bytes, needle) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = read_images(&path).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(needle), "{name}: {err}");
        }
        let path = dir.path().join("truncated.gz");
        let mut gz = Vec::new();
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &idx_bytes(IMAGES_MAGIC, &[1, 2, 2], &[0; 4])).unwrap();
        enc.finish().unwrap();
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        let err = read_images(&path).unwrap_err().to_string();
        assert!(err.contains("truncated.gz") && err.contains("gzip"), "{err}");
    }

    #[test]
    fn bad_label_files_are_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("class-ten-labels");
        std::fs::write(&path, idx_bytes(LABELS_MAGIC, &[3], &[3, 9, 10])).unwrap();
        let err = read_labels(&path).unwrap_err().to_string();
        assert!(err.contains("class-ten-labels") && err.contains("label 10 of item 2"), "{err}");

        let path = dir.path().join("image-not-labels");
        std::fs::write(&path, idx_bytes(IMAGES_MAGIC, &[1, 1, 1], &[0])).unwrap();
        let err = read_labels(&path).unwrap_err().to_string();
        assert!(err.contains("image-not-labels") && err.contains("not an IDX label file"), "{err}");

        let err = read_labels(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(err.contains("absent") && err.contains("cannot read"), "{err}");
    }
}
