//! Portable runtime for Unpersonal model bundles.
//!
//! - [`bundle`]: `bundle.json` (schema in `docs/bundle.md`), hashes and interface checks.
//! - [`backend`]: the [`backend::Backend`] trait and its implementations (tract by default,
//!   ONNX Runtime with the `ort` feature); every call is checked for NaN/Inf.
//! - [`sampler`]: the EDM Heun sampler with guidance and per-sample seeds.
//! - [`generate`]: reference images → pseudo-conditions → samples → pixels, and sharding.
//! - [`gate`]: the privacy gate (re-identification against the source and its nearest
//!   references, selection among passing candidates); fails closed.
//!
//! - `data` (feature `fs`): labelled image sets on disk (IDX files, filelists).
//!
//! The library does no file-system access outside [`bundle::BundleDir`], `data` (and the ONNX Runtime
//! library lookup of the `ort` backend), and starts no threads.

#![warn(missing_docs)]

#[cfg(feature = "fs")]
pub mod atomic;
pub mod backend;
pub mod bundle;
#[cfg(feature = "fs")]
pub mod data;
pub mod gate;
pub mod generate;
pub mod sampler;
