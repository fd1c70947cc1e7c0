//! DICOM parsing, pixel decoding (uncompressed, deflate, RLE, JPEG) and conversion to 1 and 3
//! channels on arbitrary bytes behind a DICOM preamble.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok((image, _)) = unpersonal_runtime::dicom::decode(bytes) {
        let mut out = Vec::new();
        for channels in [1, 3] {
            unpersonal_runtime::pixels::push_chw(&mut out, &image, channels);
        }
    }
});
