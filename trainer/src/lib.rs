//! Unpersonal's trainer: networks are written once in Rust against a small graph builder,
//! differentiated in reverse mode into standard ONNX, trained by ONNX Runtime and exported
//! to ONNX for every runtime.

pub mod autodiff;
pub mod budget;
pub mod bundle;
pub mod checkpoint;
pub mod data;
pub mod demo;
pub mod diffusion;
pub mod dp;
pub mod engine;
pub mod eval;
pub mod export;
pub mod graph;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod ops;
pub mod pairs;
pub mod privacy;
pub mod site;
pub mod step;
pub mod train;
