//! Reading files the user names: images no larger than [`MAX_IMAGE_SIDE`] a side, only regular files, never a FIFO, a device or a socket (which
//! would block forever or never end), and never more bytes than a stated limit.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Most bytes read from one file the user names (an image, a filelist, an ONNX model, a
/// JSON record): 2 GiB. A larger file is refused before it is read whole.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Largest width or height of an image that is decoded; larger ones are refused before their
/// pixels are decoded (a reference image is brought to the bundle's size anyway, and a small
/// file can declare a huge image).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Refuses an image wider or taller than [`MAX_IMAGE_SIDE`]; the error says why, for the
/// caller to complete with the file's name.
pub fn check_image_size(width: u32, height: u32) -> Result<(), String> {
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(format!(
            "image of {width}×{height} pixels is larger than the {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} this tool decodes"
        ));
    }
    Ok(())
}

/// What a path names when it is not a regular file.
fn kind(metadata: &std::fs::Metadata) -> &'static str {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Opens `path` for reading if it is a regular file (after symbolic links). A FIFO is opened
/// without blocking and refused, like a device or a directory; the error says what it is.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading blocks until a writer appears; O_NONBLOCK returns at once.
        // It has no effect on regular files.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {}, not a regular file", path.display(), kind(&metadata)),
        ));
    }
    Ok(file)
}

/// The bytes of the regular file `path`, refusing one longer than `limit` bytes (the error
/// names the limit) before reading it whole.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let size = file.metadata()?.len();
    let too_large = |size: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds {size} bytes, more than the {limit} bytes this tool reads from one file",
                path.display()
            ),
        )
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may grow while it is read: never past the limit.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_and_everything_else_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"hello").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"hello");
        let err = read_regular(&file, 4).unwrap_err().to_string();
        assert!(err.contains("5 bytes") && err.contains("the 4 bytes"), "{err}");
        let err = read_regular(dir.path(), 100).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        #[cfg(unix)]
        {
            let err = read_regular(Path::new("/dev/zero"), 100).unwrap_err().to_string();
            assert!(err.contains("/dev/zero is a device"), "{err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let err = read_regular(&fifo, 100).unwrap_err().to_string();
        assert!(err.contains("is a FIFO"), "{err}");
    }
}
