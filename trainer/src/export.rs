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
pub fn onnx_bytes(model: &dyn Model, state: &State, weights: Weights, metadata: Vec<(String, String)>) -> anyhow::Result<Vec<u8>> {
    let mut g = Graph::new();
    model.inference_graph(&mut g, 1);
    let suffix = match weights {
        Weights::Ema => ".ema",
        Weights::Raw => "",
    };
    let mut values = HashMap::new();
    for id in g.params() {
        let name = &g.tensor(id).name;
        let t = state.get(&format!("{name}{suffix}")).with_context(|| format!("trained state has no {name}{suffix}"))?;
        values.insert(name.clone(), t.data.clone());
    }
    to_bytes(&g, &ExportOptions { params: Params::Baked(&values), symbolic_batch: true, metadata })
}

/// Runs an exported single-input model with tract on one batch; outputs in graph order.
pub fn run_tract(model: &[u8], input: &HostTensor) -> anyhow::Result<Vec<HostTensor>> {
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(model))?
        .with_input_fact(0, f32::fact(&input.shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let tensor = tract_ndarray::ArrayD::from_shape_vec(input.shape.clone(), input.data.clone())?;
    let outputs = plan.run(tvec!(Tensor::from(tensor).into()))?;
    outputs
        .iter()
        .map(|t| {
            let view = t.to_plain_array_view::<f32>()?;
            Ok(HostTensor { shape: view.shape().to_vec(), data: view.iter().copied().collect() })
        })
        .collect()
}

/// Largest difference between ONNX Runtime (CPU) and tract on one batch over all outputs of a
/// single-input model, each output's absolute difference divided by `max(1, max |value|)` of
/// that output (so unit-scale outputs are compared absolutely, large logits relatively).
pub fn parity(env: &ort::environment::Environment, model: &[u8], input_name: &str, input: &HostTensor) -> anyhow::Result<f32> {
    let mut session = engine::session(env, model, &engine::SessionConfig::cpu(0))?;
    let output_names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
    let ort_out = engine::run(&mut session, &[(input_name, input)])?;
    let tract_out = run_tract(model, input)?;
    let mut worst = 0f32;
    for (name, t) in output_names.iter().zip(&tract_out) {
        let o = &ort_out[name];
        anyhow::ensure!(o.shape == t.shape, "output {name}: ONNX Runtime shape {:?}, tract shape {:?}", o.shape, t.shape);
        let scale = o.data.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in o.data.iter().zip(&t.data) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    Ok(worst)
}
