//! DICOM parsing, pixel decoding (uncompressed, deflate, RLE, JPEG) and conversion to 1 and 3
//! channels on arbitrary bytes behind a DICOM preamble.
//!
//! `dicom::decode` turns a panic inside dicom-rs into an error (known: an index out of bounds
//! in its RLE decoder). libFuzzer's panic hook aborts before that can happen, so it is wrapped:
//! panics raised in dicom-rs's sources unwind to the product's guard; any other panic is a
//! crash as usual.
#![no_main]
libfuzzer_sys::fuzz_target!(
    init: {
        let crash = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("/dicom-")) {
                crash(info);
            }
        }));
    },
    |bytes: &[u8]| {
        if let Ok((image, _)) = unpersonal_runtime::dicom::decode(bytes) {
            let mut out = Vec::new();
            for channels in [1, 3] {
                unpersonal_runtime::pixels::push_chw(&mut out, &image, channels);
            }
        }
    }
);
