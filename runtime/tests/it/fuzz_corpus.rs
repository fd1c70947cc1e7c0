//! Replays the fuzzing corpora of `tests/fuzz/corpus/` (minimised by cargo-fuzz) through the
//! same entry points as the fuzz targets, on stable: every input must give a result or an
//! error, never a panic, so a regression found once stays caught.

use std::path::{Path, PathBuf};

use unpersonal_runtime::backend::{Backend, Tract};
use unpersonal_runtime::bundle::{Bundle, Dim, ModelSpec, TensorSpec};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz/corpus").join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

#[test]
fn bundle_json_corpus() {
    for (_, bytes) in corpus("bundle_json") {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Bundle::from_json(text);
        }
    }
}

#[test]
fn filelist_corpus() {
    for (_, bytes) in corpus("filelist") {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ =
                unpersonal_runtime::data::filelist::parse(Path::new("/data/filelist.txt"), text);
        }
    }
}

/// Converts a decoded image to 1 and 3 channels, as the image targets do.
fn to_both_layouts(image: &image::DynamicImage) {
    let mut out = Vec::new();
    for channels in [1, 3] {
        unpersonal_runtime::pixels::push_chw(&mut out, image, channels);
    }
}

#[test]
fn image_corpus() {
    for (_, bytes) in corpus("image") {
        if let Ok(image) = unpersonal_runtime::pixels::decode(&bytes) {
            to_both_layouts(&image);
        }
    }
}

#[test]
fn dicom_corpus() {
    let mut decoded = 0;
    for (_, bytes) in corpus("dicom") {
        if let Ok((image, _)) = unpersonal_runtime::dicom::decode(&bytes) {
            to_both_layouts(&image);
            decoded += 1;
        }
    }
    assert!(decoded > 0, "the corpus holds decodable files");
}

#[test]
fn idx_corpus() {
    let path = Path::new("/data/train-images-idx3-ubyte");
    for (_, bytes) in corpus("idx") {
        let _ = unpersonal_runtime::data::idx::parse_images(path, bytes.clone());
        let _ = unpersonal_runtime::data::idx::parse_labels(path, bytes);
    }
}

#[test]
fn onnx_corpus_on_tract() {
    let spec = ModelSpec {
        file: "fuzz.onnx".into(),
        sha256: String::new(),
        inputs: vec![TensorSpec { name: "x".into(), shape: vec![Dim::Batch, Dim::Fixed(4)] }],
        outputs: vec![TensorSpec { name: "y".into(), shape: vec![Dim::Batch, Dim::Fixed(4)] }],
        provenance: serde_json::Value::Null,
    };
    for (path, bytes) in corpus("onnx_tract") {
        let outcome = std::panic::catch_unwind(|| Tract::default().load(&bytes, &spec).map(|_| ()));
        assert!(outcome.is_ok(), "{}: tract panicked", path.display());
    }
}
