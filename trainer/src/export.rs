//! Export: the inference graph of a model with trained weights baked in, and the check that
//! ONNX Runtime and tract agree on it.

use std::collections::HashMap;

use anyhow::Context;
use tract_onnx::prelude::*;

use crate::engine::{self, HostTensor, State};
use crate::graph::Graph;
use crate::models::Model;
use crate::onnx::{ExportOptions, Params, to_bytes};

/// Which copy of the weights to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// The exponential moving average (what ships).
    Ema,
    /// The raw parameters of the last step.
    Raw,
}

/// The inference graph of `model` with the chosen weights of `state`, symbolic batch axis.
pub fn onnx_bytes(
    model: &dyn Model,
    state: &State,
    weights: Weights,
    metadata: Vec<(String, String)>,
) -> anyhow::Result<Vec<u8>> {
    let mut g = Graph::new();
    model.inference_graph(&mut g, 1);
    let suffix = match weights {
        Weights::Ema => ".ema",
        Weights::Raw => "",
    };
    let mut values = HashMap::new();
    for id in g.params() {
        let name = &g.tensor(id).name;
        let t = state
            .get(&format!("{name}{suffix}"))
            .with_context(|| format!("trained state has no {name}{suffix}"))?;
        values.insert(name.clone(), t.data.clone());
    }
    to_bytes(&g, &ExportOptions { params: Params::Baked(&values), symbolic_batch: true, metadata })
}

/// Runs an exported model with tract on one batch; `inputs` in the graph's input order,
/// outputs in graph order.
pub fn run_tract(model: &[u8], inputs: &[&HostTensor]) -> anyhow::Result<Vec<HostTensor>> {
    let mut typed = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(model))?;
    for (i, input) in inputs.iter().enumerate() {
        typed = typed.with_input_fact(i, f32::fact(&input.shape).into())?;
    }
    let plan = typed.into_optimized()?.into_runnable()?;
    let values = inputs
        .iter()
        .map(|t| {
            Ok(Tensor::from(tract_ndarray::ArrayD::from_shape_vec(
                t.shape.clone(),
                t.data.clone(),
            )?)
            .into())
        })
        .collect::<anyhow::Result<TVec<TValue>>>()?;
    let outputs = plan.run(values)?;
    outputs
        .iter()
        .map(|t| {
            let view = t.to_plain_array_view::<f32>()?;
            Ok(HostTensor { shape: view.shape().to_vec(), data: view.iter().copied().collect() })
        })
        .collect()
}

/// Largest difference between ONNX Runtime (CPU) and tract on one batch over all outputs of
/// a model, each output's absolute difference divided by `max(1, max |value|)` of that output
/// (so unit-scale outputs are compared absolutely, large logits relatively). `inputs` are
/// named and in the graph's input order.
pub fn parity(
    env: &ort::environment::Environment,
    model: &[u8],
    inputs: &[(&str, &HostTensor)],
) -> anyhow::Result<f32> {
    let mut session = engine::session(env, model, &engine::SessionConfig::cpu(0))?;
    let output_names: Vec<String> =
        session.outputs().iter().map(|o| o.name().to_string()).collect();
    let ort_out = engine::run(&mut session, inputs)?;
    let tensors: Vec<&HostTensor> = inputs.iter().map(|(_, t)| *t).collect();
    let tract_out = run_tract(model, &tensors)?;
    let mut worst = 0f32;
    for (name, t) in output_names.iter().zip(&tract_out) {
        let o = &ort_out[name];
        anyhow::ensure!(
            o.shape == t.shape,
            "output {name}: ONNX Runtime shape {:?}, tract shape {:?}",
            o.shape,
            t.shape
        );
        worst = worst.max(scaled_diff(&o.data, &t.data));
    }
    Ok(worst)
}

/// `max |a − b| / max(1, max |a|)`.
pub fn scaled_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |worst, (x, y)| worst.max((x - y).abs() / scale))
}
