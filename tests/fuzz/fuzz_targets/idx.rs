//! IDX image and label parsing (raw and gzip) on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let path = std::path::Path::new("/data/train-images-idx3-ubyte");
    let _ = unpersonal_runtime::data::idx::parse_images(path, bytes.to_vec());
    let _ = unpersonal_runtime::data::idx::parse_labels(path, bytes.to_vec());
});
