//! Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed).

use std::io::Read;
use std::path::Path;

use super::DataError;

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Reads a whole file, gunzipping it when its name ends in `.gz`.
fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::invalid(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks magic number and exact payload length; returns the header's dimensions.
fn parse_header(path: &Path, bytes: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>, DataError> {
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(DataError::invalid(path, format!("truncated: {} bytes, shorter than the {header}-byte header", bytes.len())));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::invalid(path, format!("not an IDX file of the expected kind (magic 0x{found:08x}, expected 0x{magic:08x})")));
    }
    let shape: Vec<usize> = (0..dims).map(|i| be_u32(bytes, 4 + 4 * i) as usize).collect();
    let expected = shape.iter().product::<usize>();
    let payload = bytes.len() - header;
    if payload != expected {
        return Err(DataError::invalid(
            path,
            format!("{}: expected {expected} bytes of data for shape {shape:?}, found {payload}", if payload < expected { "truncated" } else { "trailing bytes" }),
        ));
    }
    Ok(shape)
}

/// Reads an IDX image file: `(count, rows, cols, pixels)`.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let bytes = read_all(path)?;
    let shape = parse_header(path, &bytes, IMAGES_MAGIC, 3)?;
    Ok((shape[0], shape[1], shape[2], bytes[16..].to_vec()))
}

/// Reads an IDX label file; every label must be below 10.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_all(path)?;
    parse_header(path, &bytes, LABELS_MAGIC, 1)?;
    let labels = bytes[8..].to_vec();
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l >= 10) {
        return Err(DataError::invalid(path, format!("label {l} of item {i} is not a class in 0..10")));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(payload);
        out
    }

    #[test]
    fn reads_raw_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx(IMAGES_MAGIC, &[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let raw = dir.path().join("x-images-idx3-ubyte");
        std::fs::write(&raw, &bytes).unwrap();
        let gz = dir.path().join("x-images-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        for p in [raw, gz] {
            let (n, h, w, px) = read_images(&p).unwrap();
            assert_eq!((n, h, w, px.len(), px[11]), (2, 2, 3, 12, 12));
        }
    }

    #[test]
    fn rejects_bad_files_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("magic", idx(LABELS_MAGIC, &[1, 1, 1], &[0]), "magic"),
            ("short", idx(IMAGES_MAGIC, &[2, 2, 2], &[0; 7]), "truncated"),
            ("long", idx(IMAGES_MAGIC, &[1, 2, 2], &[0; 5]), "trailing"),
            ("header", vec![0, 0, 8], "header"),
        ];
        for (name, bytes, needle) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let err = read_images(&p).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(needle), "{err}");
        }
        let p = dir.path().join("labels");
        std::fs::write(&p, idx(LABELS_MAGIC, &[2], &[3, 10])).unwrap();
        let err = read_labels(&p).unwrap_err().to_string();
        assert!(err.contains("labels") && err.contains("label 10"), "{err}");
        let err = read_labels(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(err.contains("absent"), "{err}");
    }
}
