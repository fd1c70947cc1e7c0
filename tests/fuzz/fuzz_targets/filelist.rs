//! Filelist parsing (paths, labels, escapes from the root) on arbitrary text.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ =
        unpersonal_runtime::data::filelist::parse(std::path::Path::new("/data/filelist.txt"), text);
});
