//! The tract backend (pure Rust; CPU; builds for wasm32).
//!
//! Natively, a graph with a convolution runs one row at a time on a plan optimised for batch
//! size 1: tract 0.23 lowers a convolution over a batch of more than one image through an
//! eager im2col copy, which on the shipped denoiser took half the time of a call and made a
//! row cost 2.1× what it costs alone (lazy im2col, fused element-wise chains; measured with
//! `runtime/examples/tract_profile.rs`, docs/performance.md). In wasm batches were measured
//! faster than single rows (docs/webgpu.md: 13.4 against 9.3 images per second at 16 and 1
//! per call), so there, as for every graph without convolutions, whole batches run on one
//! optimised plan per batch size, made the first time that size is run.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, Axis};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::Cost;

use super::{Backend, EngineError, Outputs, Session};
use crate::bundle::{Dim, ModelSpec, TensorSpec};

/// The tract backend: single-threaded by default; [`Tract::with_threads`] shares out the rows
/// of a call that runs row by row among several threads.
#[derive(Clone, Copy, Debug)]
pub struct Tract {
    threads: usize,
}

impl Default for Tract {
    fn default() -> Self {
        Tract { threads: 1 }
    }
}

impl Tract {
    /// A backend whose row-by-row calls share their rows out among `threads` threads (scoped,
    /// joined before the call returns; 0 counts as 1). In wasm every call runs on the calling
    /// thread.
    pub fn with_threads(threads: usize) -> Self {
        Tract { threads: threads.max(1) }
    }
}

impl Backend for Tract {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(&self, onnx: &[u8], spec: &ModelSpec) -> Result<Box<dyn Session>, EngineError> {
        let proto = pb::ModelProto::decode(onnx)?;
        let (model, inputs) = parse(&proto, spec)?;
        let outputs: Vec<String> =
            proto.graph.iter().flat_map(|g| g.output.iter().map(|o| o.name.clone())).collect();
        let output_axes = outputs
            .iter()
            .map(|name| spec.outputs.iter().find(|t| t.name == *name).and_then(batch_axis))
            .collect::<Vec<_>>();
        let by_row = !cfg!(target_family = "wasm")
            && proto
                .graph
                .iter()
                .flat_map(|g| &g.node)
                .any(|n| matches!(n.op_type.as_str(), "Conv" | "ConvTranspose"));
        // Rows can run alone only when every output has a batch axis to stack them along.
        let row_axes = (by_row && output_axes.iter().all(Option::is_some))
            .then(|| output_axes.into_iter().flatten().collect());
        let threads = if cfg!(target_family = "wasm") { 1 } else { self.threads };
        let mut session =
            TractSession { model, inputs, outputs, row_axes, threads, states: HashMap::new() };
        // Plan batch size 1 now, so a graph tract cannot run fails at load time.
        session.state(1)?;
        Ok(Box::new(session))
    }
}

/// Parses `proto` and pairs each graph input, in the graph's order, with its declaration in
/// `spec`.
fn parse(
    proto: &pb::ModelProto,
    spec: &ModelSpec,
) -> Result<(InferenceModel, Vec<TensorSpec>), EngineError> {
    if let Some(graph) = &proto.graph {
        // tract indexes outputs by producer and panics on a dangling one: refuse it here.
        let produced = |name: &str| {
            graph.node.iter().any(|n| n.output.iter().any(|o| o == name))
                || graph.input.iter().any(|i| i.name == name)
                || graph.initializer.iter().any(|t| t.name == name)
        };
        if let Some(output) = graph.output.iter().find(|o| !produced(&o.name)) {
            return Err(format!(
                "graph output `{}` is produced by no node, input or initializer",
                output.name
            )
            .into());
        }
    }
    // Any other malformation tract does not expect becomes an error, not a crash.
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tract_onnx::onnx().model_for_proto_model(proto)
    }))
    .map_err(|panic| {
        format!("tract cannot parse this graph ({})", panic_message(panic.as_ref()))
    })?;
    let model = parsed.map_err(|e| format!("{e:#}"))?;
    let mut inputs = Vec::new();
    for outlet in model.input_outlets().map_err(|e| format!("{e:#}"))? {
        let name = &model.node(outlet.node).name;
        let t = spec.input(name).ok_or_else(|| {
            format!("the graph has an input `{name}` the bundle does not declare")
        })?;
        inputs.push(t.clone());
    }
    Ok((model, inputs))
}

/// The position of `t`'s batch axis, if it has one.
fn batch_axis(t: &TensorSpec) -> Option<usize> {
    t.shape.iter().position(|d| *d == Dim::Batch)
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// `model` with every input's shape fixed for batch size `batch`.
fn with_batch(
    model: &InferenceModel,
    inputs: &[TensorSpec],
    batch: usize,
) -> Result<InferenceModel, EngineError> {
    let mut model = model.clone();
    for (i, t) in inputs.iter().enumerate() {
        model = model
            .with_input_fact(i, f32::fact(t.concrete(batch)).into())
            .map_err(|e| format!("{e:#}"))?;
    }
    Ok(model)
}

/// Floating-point operations of one call of `onnx` on a batch of `batch` rows, from tract's
/// cost model of the typed graph: 2 per float32 multiply-add (convolutions, matrix products
/// and the element-wise work tract costs as multiply-adds) plus 1 per division.
pub fn flops(onnx: &[u8], spec: &ModelSpec, batch: usize) -> Result<u64, EngineError> {
    let proto = pb::ModelProto::decode(onnx)?;
    let (model, inputs) = parse(&proto, spec)?;
    let typed = with_batch(&model, &inputs, batch)?
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(|e| format!("{e:#}"))?;
    let mut total = 0u64;
    for node in typed.eval_order().map_err(|e| format!("{e:#}"))? {
        let facts = typed.node_input_facts(node).map_err(|e| format!("{e:#}"))?;
        for (cost, count) in typed.node(node).op.cost(&facts).map_err(|e| format!("{e:#}"))? {
            let weight = match cost {
                Cost::FMA(DatumType::F32) => 2,
                Cost::Div(DatumType::F32) => 1,
                _ => continue,
            };
            let count = count
                .to_i64()
                .map_err(|e| format!("node {}: cost not concrete: {e:#}", typed.node(node).name))?;
            total += weight * count.max(0) as u64;
        }
    }
    Ok(total)
}

struct TractSession {
    /// The parsed graph, before shapes are fixed.
    model: InferenceModel,
    /// The declared inputs, in the graph's input order.
    inputs: Vec<TensorSpec>,
    /// Output names, in the graph's output order.
    outputs: Vec<String>,
    /// For a graph run one row at a time: each output's batch axis, along which the rows'
    /// results are stacked. `None`: whole batches run at once.
    row_axes: Option<Vec<usize>>,
    /// Threads sharing out the rows of a call run row by row.
    threads: usize,
    /// Optimised plans, with their run state, by batch size.
    states: HashMap<usize, TypedSimpleState>,
}

/// A call's inputs, in the graph's order, each with its batch axis.
type Views<'a> = [(Option<usize>, ArrayViewD<'a, f32>)];

impl TractSession {
    /// The run state of the plan for `batch` rows, made and optimised on first use.
    fn state(&mut self, batch: usize) -> Result<&mut TypedSimpleState, EngineError> {
        if !self.states.contains_key(&batch) {
            let plan: Arc<TypedRunnableModel> = with_batch(&self.model, &self.inputs, batch)?
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .map_err(|e| format!("cannot plan batch size {batch}: {e:#}"))?;
            let state = plan.spawn().map_err(|e| format!("{e:#}"))?;
            self.states.insert(batch, state);
        }
        Ok(self.states.get_mut(&batch).expect("inserted above"))
    }

    /// Runs `batch` rows one at a time on the batch-size-1 plan, shared out in contiguous
    /// ranges among the session's threads (the calling one takes the first): each row's
    /// outputs, in order.
    fn rows_alone(
        &mut self,
        views: &Views<'_>,
        batch: usize,
    ) -> Result<Vec<Vec<ArrayD<f32>>>, EngineError> {
        let threads = self.threads.min(batch);
        let outputs = self.outputs.clone();
        let state = self.state(1)?;
        if threads <= 1 {
            return run_rows(state, views, 0..batch, &outputs);
        }
        let plan = state.plan().clone();
        let per = batch.div_ceil(threads);
        let ranges: Vec<_> = (0..batch).step_by(per).map(|s| s..(s + per).min(batch)).collect();
        std::thread::scope(|scope| {
            let others: Vec<_> = ranges[1..]
                .iter()
                .map(|rows| {
                    let (plan, outputs, rows) = (&plan, &outputs, rows.clone());
                    scope.spawn(move || -> Result<_, EngineError> {
                        let mut state = plan.spawn().map_err(|e| format!("{e:#}"))?;
                        run_rows(&mut state, views, rows, outputs)
                    })
                })
                .collect();
            let mut rows = run_rows(state, views, ranges[0].clone(), &outputs)?;
            for handle in others {
                let more = handle.join().map_err(|panic| {
                    format!("a tract thread failed: {}", panic_message(panic.as_ref()))
                })??;
                rows.extend(more);
            }
            Ok(rows)
        })
    }
}

/// Runs `state`'s plan on `values` (the graph's inputs, in its order) and checks the number of
/// results against `outputs`, the graph's output names.
fn call(
    state: &mut TypedSimpleState,
    values: TVec<TValue>,
    outputs: &[String],
) -> Result<Vec<ArrayD<f32>>, EngineError> {
    let results = state.run(values).map_err(|e| format!("{e:#}"))?;
    if results.len() != outputs.len() {
        return Err(format!(
            "the graph returned {} outputs, it declares {}",
            results.len(),
            outputs.len()
        )
        .into());
    }
    outputs
        .iter()
        .zip(results)
        .map(|(name, value)| {
            Ok(value
                .to_plain_array_view::<f32>()
                .map_err(|e| format!("output `{name}`: {e:#}"))?
                .to_owned())
        })
        .collect()
}

/// A call's inputs cut to `rows` along their batch axes (an input without one is passed whole).
fn row_values(views: &Views<'_>, rows: Range<usize>) -> TVec<TValue> {
    views
        .iter()
        .map(|(axis, view)| {
            let value = match axis {
                Some(a) => view.slice_axis(Axis(*a), rows.clone().into()),
                None => view.view(),
            };
            Tensor::from(value.to_owned()).into_tvalue()
        })
        .collect()
}

/// Runs every row of `rows` alone on `state` (a batch-size-1 plan): each row's outputs.
fn run_rows(
    state: &mut TypedSimpleState,
    views: &Views<'_>,
    rows: Range<usize>,
    outputs: &[String],
) -> Result<Vec<Vec<ArrayD<f32>>>, EngineError> {
    rows.map(|row| call(state, row_values(views, row..row + 1), outputs)).collect()
}

impl Session for TractSession {
    fn run(&mut self, inputs: &[(&str, ArrayViewD<'_, f32>)]) -> Result<Outputs, EngineError> {
        let mut views = Vec::with_capacity(self.inputs.len());
        for t in &self.inputs {
            let (_, view) = inputs
                .iter()
                .find(|(name, _)| *name == t.name)
                .ok_or_else(|| format!("input `{}` is not given", t.name))?;
            views.push((batch_axis(t), view.view()));
        }
        let batch = super::batch(&self.inputs, inputs);
        let results = match self.row_axes.clone() {
            Some(axes) if batch > 1 => {
                let rows = self.rows_alone(&views, batch)?;
                axes.iter()
                    .enumerate()
                    .map(|(i, &axis)| {
                        let parts: Vec<_> = rows.iter().map(|r| r[i].view()).collect();
                        ndarray::concatenate(Axis(axis), &parts)
                            .map_err(|e| format!("output `{}`: {e}", self.outputs[i]).into())
                    })
                    .collect::<Result<Vec<_>, EngineError>>()?
            }
            _ => {
                let outputs = self.outputs.clone();
                let values: TVec<TValue> = views
                    .iter()
                    .map(|(_, view)| Tensor::from(view.to_owned()).into_tvalue())
                    .collect();
                call(self.state(batch)?, values, &outputs)?
            }
        };
        Ok(self.outputs.iter().cloned().zip(results).collect())
    }
}
