//! The training-step graph: forward, loss, backward, AdamW and EMA as one ONNX graph.
//!
//! Inputs: every parameter `p`, its optimiser state `p.adam_m`, `p.adam_v` and its moving
//! average `p.ema`; the scalars `step` (1-based), `lr` and `ema_decay`; the batch.
//! Outputs: the same state names with a `.next` suffix, `loss`, and the model's metrics.

use serde::{Deserialize, Serialize};

use crate::autodiff::gradients;
use crate::graph::{Graph, Init, Shape, Source, TensorId};
use crate::models::{Model, Training};
use crate::ops::UnaryKind;

/// AdamW hyper-parameters (the learning rate is a graph input, so schedules need no rebuild).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator fuzz.
    pub eps: f32,
    /// Decoupled weight decay, applied to weights of rank ≥ 2 only (not biases or gains).
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 }
    }
}

/// Kinds of per-parameter state the step graph carries.
pub const STATE_SUFFIXES: [&str; 4] = ["", ".adam_m", ".adam_v", ".ema"];
/// Suffix of a state output.
pub const NEXT: &str = ".next";

/// A trainable parameter as the host sees it.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// Parameter name (also its state's name prefix).
    pub name: String,
    /// Shape.
    pub shape: Shape,
    /// Initialiser.
    pub init: Init,
}

/// A built training-step graph and the names the engine binds.
#[derive(Debug)]
pub struct StepGraph {
    /// The graph, outputs marked.
    pub graph: Graph,
    /// Trainable parameters in order.
    pub params: Vec<ParamSpec>,
    /// Batch inputs (name, shape), as the model declared them.
    pub batch_inputs: Vec<(String, Shape)>,
    /// Names of the metric outputs, after `loss`.
    pub metrics: Vec<String>,
}

impl StepGraph {
    /// Names of all state tensors: for every parameter, the parameter and its state.
    pub fn state_names(&self) -> Vec<(String, Shape)> {
        self.params
            .iter()
            .flat_map(|p| {
                STATE_SUFFIXES.iter().map(move |s| (format!("{}{s}", p.name), p.shape.clone()))
            })
            .collect()
    }
}

/// A model's training graph at one batch size with the gradient of its loss: the common start
/// of the training step and of DP-SGD's per-example gradient graph.
pub(crate) struct Differentiated {
    pub graph: Graph,
    pub training: Training,
    /// Batch inputs (name, shape), as the model declared them.
    pub batch_inputs: Vec<(String, Shape)>,
    pub params: Vec<TensorId>,
    pub specs: Vec<ParamSpec>,
    /// The loss's gradient for each of `params`.
    pub grads: Vec<TensorId>,
}

impl Differentiated {
    pub(crate) fn new(model: &dyn Model, batch: usize) -> Self {
        let mut graph = Graph::new();
        let training = model.training_graph(&mut graph, batch);
        let batch_inputs = graph
            .inputs()
            .into_iter()
            .map(|id| (graph.tensor(id).name.clone(), graph.shape(id).to_vec()))
            .collect();
        let params = graph.params();
        let specs = param_specs(&graph, &params);
        let grads = gradients(&mut graph, training.loss, &params);
        Differentiated { graph, training, batch_inputs, params, specs, grads }
    }
}

/// Builds the training step of `model` for batches of `batch` samples.
pub fn build(model: &dyn Model, batch: usize, opt: &AdamW) -> StepGraph {
    let Differentiated { graph: mut g, training, batch_inputs, params, specs, grads } =
        Differentiated::new(model, batch);
    let updates: Vec<Update> = params
        .iter()
        .zip(&grads)
        .zip(&specs)
        .map(|((&param, &grad), spec)| Update { param, grad, spec })
        .collect();
    apply_updates(&mut g, &updates, opt);
    g.output("loss", training.loss);
    let mut metrics = Vec::new();
    for (name, id) in training.metrics {
        g.output(&name, id);
        metrics.push(name);
    }
    StepGraph { graph: g, params: specs, batch_inputs, metrics }
}

/// One parameter's update: its tensor, its gradient and its spec.
pub(crate) struct Update<'a> {
    pub param: TensorId,
    pub grad: TensorId,
    pub spec: &'a ParamSpec,
}

/// AdamW and the EMA for every parameter of `updates`: adds the inputs `step`, `lr`,
/// `ema_decay` and each parameter's moments and EMA, and outputs every state's `.next`.
pub(crate) fn apply_updates(g: &mut Graph, updates: &[Update], opt: &AdamW) {
    let step = g.input("step", &[]);
    let lr = g.input("lr", &[]);
    let ema_decay = g.input("ema_decay", &[]);
    let corrections = BiasCorrection::new(g, step, opt);
    for &Update { param, grad, spec } in updates {
        let m = g.input(&format!("{}.adam_m", spec.name), &spec.shape);
        let v = g.input(&format!("{}.adam_v", spec.name), &spec.shape);
        let ema = g.input(&format!("{}.ema", spec.name), &spec.shape);
        let decay = if spec.shape.len() >= 2 { opt.weight_decay } else { 0.0 };
        let (p_next, m_next, v_next) =
            adamw_update(g, param, grad, m, v, lr, &corrections, opt, decay);
        let ema_next = lerp(g, ema, p_next, ema_decay);
        g.output(&format!("{}{NEXT}", spec.name), p_next);
        g.output(&format!("{}.adam_m{NEXT}", spec.name), m_next);
        g.output(&format!("{}.adam_v{NEXT}", spec.name), v_next);
        g.output(&format!("{}.ema{NEXT}", spec.name), ema_next);
    }
}

/// The parameters of `g` as the host sees them.
pub(crate) fn param_specs(g: &Graph, params: &[TensorId]) -> Vec<ParamSpec> {
    params
        .iter()
        .map(|&id| {
            let t = g.tensor(id);
            let Source::Param(init) = t.source else { unreachable!("params() returns parameters") };
            ParamSpec { name: t.name.clone(), shape: t.shape.clone(), init }
        })
        .collect()
}

/// `1 / (1 - β₁ᵗ)` and `1 / (1 - β₂ᵗ)`, computed once per step in the graph.
struct BiasCorrection {
    first: TensorId,
    second: TensorId,
}

impl BiasCorrection {
    fn new(g: &mut Graph, step: TensorId, opt: &AdamW) -> Self {
        let mut inverse_one_minus_pow = |beta: f32| {
            // βᵗ = exp(t · ln β)
            let t_ln = g.scale(step, beta.ln());
            let pow = g.unary(UnaryKind::Exp, t_ln);
            let neg = g.neg(pow);
            let one_minus = g.add_scalar(neg, 1.0);
            let one = g.scalar(1.0);
            g.div(one, one_minus)
        };
        BiasCorrection {
            first: inverse_one_minus_pow(opt.beta1),
            second: inverse_one_minus_pow(opt.beta2),
        }
    }
}

/// One AdamW update: returns `(p', m', v')`.
#[allow(clippy::too_many_arguments)]
fn adamw_update(
    g: &mut Graph,
    p: TensorId,
    grad: TensorId,
    m: TensorId,
    v: TensorId,
    lr: TensorId,
    bc: &BiasCorrection,
    opt: &AdamW,
    weight_decay: f32,
) -> (TensorId, TensorId, TensorId) {
    let beta1 = g.scalar(opt.beta1);
    let m_next = lerp(g, m, grad, beta1);
    let beta2 = g.scalar(opt.beta2);
    let grad_sq = g.square(grad);
    let v_next = lerp(g, v, grad_sq, beta2);
    let m_hat = g.mul(m_next, bc.first);
    let v_hat = g.mul(v_next, bc.second);
    let root = g.unary(UnaryKind::Sqrt, v_hat);
    let denom = g.add_scalar(root, opt.eps);
    let mut update = g.div(m_hat, denom);
    if weight_decay > 0.0 {
        let decay = g.scale(p, weight_decay);
        update = g.add(update, decay);
    }
    let scaled = g.mul(update, lr);
    let p_next = g.sub(p, scaled);
    (p_next, m_next, v_next)
}

/// `decay · old + (1 − decay) · new`, written as `new + decay · (old − new)`.
fn lerp(g: &mut Graph, old: TensorId, new: TensorId, decay: TensorId) -> TensorId {
    let diff = g.sub(old, new);
    let scaled = g.mul(diff, decay);
    g.add(new, scaled)
}

/// The state of a run that starts from given weights (e.g. an exported model's, read with
/// [`crate::onnx::read_initializers`]): every parameter and its EMA from `weights`, the
/// optimiser's moments zero. Fails unless every parameter is there with its shape.
pub fn state_from_weights(
    params: &[ParamSpec],
    weights: &std::collections::HashMap<String, crate::engine::HostTensor>,
) -> anyhow::Result<crate::engine::State> {
    let mut state = crate::engine::State::new();
    for p in params {
        let w = weights
            .get(&p.name)
            .ok_or_else(|| anyhow::anyhow!("the initial weights lack parameter `{}`", p.name))?;
        anyhow::ensure!(
            w.shape == p.shape,
            "initial weight `{}` has shape {:?}, the model's parameter {:?}",
            p.name,
            w.shape,
            p.shape
        );
        let zeros =
            crate::engine::HostTensor { shape: p.shape.clone(), data: vec![0.0; w.data.len()] };
        state.insert(format!("{}.adam_m", p.name), zeros.clone());
        state.insert(format!("{}.adam_v", p.name), zeros);
        state.insert(format!("{}.ema", p.name), w.clone());
        state.insert(p.name.clone(), w.clone());
    }
    Ok(state)
}

/// The state before the first step: initialised parameters, zero moments, EMA = parameters.
pub fn initial_state(params: &[ParamSpec], seed: u64) -> crate::engine::State {
    let mut state = crate::engine::State::new();
    for p in params {
        let values = p.init.values(&p.name, crate::graph::numel(&p.shape), seed);
        let zeros = vec![0.0; values.len()];
        let tensor = |data: Vec<f32>| crate::engine::HostTensor { shape: p.shape.clone(), data };
        state.insert(format!("{}.adam_m", p.name), tensor(zeros.clone()));
        state.insert(format!("{}.adam_v", p.name), tensor(zeros));
        state.insert(format!("{}.ema", p.name), tensor(values.clone()));
        state.insert(p.name.clone(), tensor(values));
    }
    state
}
