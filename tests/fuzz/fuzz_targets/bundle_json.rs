//! `bundle.json` parsing and validation on arbitrary text: an error, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = unpersonal_runtime::bundle::Bundle::from_json(text);
});
