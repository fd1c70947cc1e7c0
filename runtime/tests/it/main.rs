//! Integration tests of the runtime library and the `unpersonal` binary (one test binary).

mod audit;
mod backend;
mod bundle;
mod check;
mod cli;
mod common;
mod conformance;
mod dicom;
mod faults;
mod fuzz_corpus;
mod gate;
mod generate;
mod hostile;
mod imports;
mod layout;
mod membership;
mod sampler;
mod shipped;
mod site;
#[cfg(feature = "webgpu")]
mod webgpu;
