//! Unpersonal in the browser: the page's Web Worker loads a bundle, reads the reference
//! images the user picked (they stay in the worker's memory), draws candidates with the tract
//! backend compiled to wasm, gates every one against all references, and packs the released
//! images into a zip. Nothing is sent anywhere; the page's Content-Security-Policy forbids it.
//!
//! - [`studio`]: the generator as plain Rust (tested natively).
//! - [`references`]: decoding picked images into the bundle's shape, labels from a filelist.
//! - [`archive`]: the zip.
//! - `bindings` (wasm32): the JavaScript face.
//! - `parity` (wasm32, cargo feature `parity`, never in the shipped page): the runtime's WebGPU
//!   parity cases and a denoiser timer as JavaScript functions, for `tests/web/parity.test.mjs`.

pub mod archive;
#[cfg(target_arch = "wasm32")]
mod bindings;
#[cfg(all(target_arch = "wasm32", feature = "parity"))]
mod parity;
pub mod references;
pub mod studio;
