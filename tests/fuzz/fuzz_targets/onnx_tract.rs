//! Loading arbitrary bytes as a model on the tract backend (a denoiser-like interface).
#![no_main]
use unpersonal_runtime::backend::{Backend, Tract};
use unpersonal_runtime::bundle::{Dim, ModelSpec, TensorSpec};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let spec = ModelSpec {
        file: "fuzz.onnx".into(),
        sha256: String::new(),
        inputs: vec![TensorSpec { name: "x".into(), shape: vec![Dim::Batch, Dim::Fixed(4)] }],
        outputs: vec![TensorSpec { name: "y".into(), shape: vec![Dim::Batch, Dim::Fixed(4)] }],
        provenance: Default::default(),
    };
    let _ = Tract.load(bytes, &spec);
});
