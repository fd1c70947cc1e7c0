//! PNG/JPEG decoding and conversion to 1 and 3 channels on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(image) = unpersonal_runtime::pixels::decode(bytes) {
        let mut out = Vec::new();
        for channels in [1, 3] {
            unpersonal_runtime::pixels::push_chw(&mut out, &image, channels);
        }
    }
});
