//! The release as a zip file, built in memory.

use std::collections::BTreeMap;
use std::io::Write;

use zip::write::SimpleFileOptions;

/// A zip of `images` (path → PNG bytes), `filelist.txt` and `report.json`. PNGs are already
/// compressed, so entries are stored; a fixed timestamp makes equal releases equal bytes.
pub fn zip(
    images: &BTreeMap<String, Vec<u8>>,
    filelist: &str,
    report: &str,
) -> Result<Vec<u8>, String> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    let entries = images
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .chain([("filelist.txt", filelist.as_bytes()), ("report.json", report.as_bytes())]);
    for (path, bytes) in entries {
        writer
            .start_file(path, options)
            .map_err(|e| format!("cannot write {path} into the zip: {e}"))?;
        writer.write_all(bytes).map_err(|e| format!("cannot write {path} into the zip: {e}"))?;
    }
    Ok(writer.finish().map_err(|e| format!("cannot finish the zip: {e}"))?.into_inner())
}
