//! Portable runtime for Unpersonal model bundles.
//!
//! - [`bundle`]: `bundle.json` (schema in `docs/bundle.md`), hashes and interface checks.
//! - [`backend`]: the [`backend::Backend`] trait and its implementations (tract by default,
//!   ONNX Runtime with the `ort` feature, WGSL kernels through wgpu with the `webgpu` feature);
//!   every call is checked for NaN/Inf.
//! - [`solver`]: what every device shares: noise schedule, per-sample noise, guidance, and the
//!   solvers' updates written once over a field of
//!   images, host arrays or device buffers (a leaf: it imports no backend).
//! - [`sampler`]: the host's sampler (EDM Heun, DPM-Solver++(2M)) over the backends' models.
//! - [`generate`]: reference images → pseudo-conditions → samples → pixels, and sharding.
//! - [`gate`]: the privacy gate (re-identification against the source and its nearest
//!   references, ranking of passing candidates); fails closed.
//! - [`release`]: gated generation: rounds of candidates per reference image, only passing
//!   images leave it.
//! - [`audit`]: the statistics of `unpersonal audit` (DCR, precision/recall, memorisation,
//!   singling-out risk, Fréchet distance); pure functions, no I/O.
//!
//! - [`near_copy`]: pixel-space near-copies of reference images (`unpersonal check`).
//! - [`report`]: what a release says about itself (run, records, aggregate report, filelist).
//! - [`identity`]: who an image shows (a hashed PatientID), for the gate's "same person".
//! - `parity` (feature `parity`): the WebGPU backend against tract, kernel by kernel and model
//!   by model, run natively and in a browser; and the ONNX graph builder of the tests.
//! - `pixels` (feature `image`): PNG/JPEG/DICOM bytes to CHW pixels, and PNG back.
//! - `dicom` (feature `image`): DICOM files to 8-bit images (rescale, window, MONOCHROME1).
//! - `data` (feature `data`): labelled image sets (IDX files, filelists).
//! - `atomic` (feature `fs`): files written whole or not at all.
//! - [`files`]: reading only regular files, never more than a stated limit.
//!
//! The library does no file-system access outside [`bundle::BundleDir`], `data` (and the ONNX Runtime
//! library lookup of the `ort` backend), and starts no threads of its own except the scoped ones
//! a [`backend::Tract::with_threads`] backend shares a call's rows out among (joined before
//! the call returns).

#![warn(missing_docs)]

#[cfg(feature = "fs")]
pub mod atomic;
pub mod audit;
pub mod backend;
pub mod bundle;
#[cfg(feature = "data")]
pub mod data;
#[cfg(feature = "image")]
pub mod dicom;
pub mod files;
pub mod gate;
pub mod generate;
pub mod identity;
pub mod near_copy;
pub mod neighbours;
#[cfg(feature = "parity")]
pub mod parity;
#[cfg(feature = "image")]
pub mod pixels;
pub mod release;
pub mod report;
pub mod sampler;
pub mod solver;
