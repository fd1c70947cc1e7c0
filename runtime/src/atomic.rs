//! Writing files so that a crash never leaves a half-written one (feature `fs`).

use std::io::Write;
use std::path::Path;

/// Prefix of the temporary siblings; a killed writer's leftovers carry it and can be removed.
pub const PARTIAL: &str = ".partial-";

/// Writes `bytes` to `path` through a synced temporary sibling (mode 0644, like any file the
/// user creates) and a rename, creating the parent directory if needed. Errors name the path.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let named = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(named)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(PARTIAL)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(named)?;
    tmp.write_all(bytes).and_then(|_| tmp.as_file().sync_all()).map_err(named)?;
    tmp.persist(path).map_err(|e| named(e.error))?;
    Ok(())
}
