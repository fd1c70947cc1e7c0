//! Differentially private training: DP-SGD (Abadi et al. 2016) at the level of the *patient*.
//!
//! Every step draws a lot by Poisson sampling of patients (each independently with
//! probability `q`; an image without a patient ID is its own unit) and takes one of each drawn
//! patient's images, chosen at random. Each image's gradient is computed alone (micro-batches
//! of one: a gradient graph at batch 1, so no example's gradient mixes with another's),
//! clipped to L2 norm `C` over all parameters together and added to a running sum in the
//! engine's memory. The update graph then adds Gaussian noise `N(0, σ²C²)` to the sum, divides
//! by the expected lot size `qN` and applies AdamW and the EMA, both post-processing.
//!
//! Which patients a lot holds and the noise must be unknown to anyone holding the weights:
//! both come from a ChaCha20 stream seeded from the operating system's entropy, never from
//! `--seed` (which is recorded in the bundle). A DP run is therefore not bit-reproducible.
//! Augmentation and the denoiser's own training noise stay seeded, each image's from a stream
//! of its own (seed, step, dataset row): they are part of that image's clipped contribution,
//! and adding or removing another patient changes none of them.
//!
//! `σ` is planned by the RDP accountant ([`crate::privacy`]) for the requested `ε` over the
//! schedule's steps at `δ`, so the run cannot exceed it; a run that ends early spends less,
//! and what it spent is what [`DpSgd::guarantee`] reports.

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::DynTensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use unpersonal_runtime::identity::Identity;

use crate::data::{Augment, Batch, Dataset, Normalization};
use crate::engine::{self, Device, HostTensor, SessionConfig, State, StepOutput};
use crate::graph::{Graph, Shape, TensorId, numel};
use crate::models::Model;
use crate::ops::UnaryKind;
use crate::privacy::{noise_for_epsilon, privacy_spent};
use crate::step::{self, AdamW, Differentiated, ParamSpec, Update};

/// The accountant's name as the bundle records it.
pub const ACCOUNTANT: &str = "rdp";

/// Suffix of a parameter's running sum of clipped per-example gradients.
const SUM: &str = ".grad_sum";
/// Suffix of a parameter's noise input.
const NOISE: &str = ".dp_noise";

/// A DP-SGD run as planned: part of the training configuration, so resuming checks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpSgd {
    /// The `ε` the run may spend at most.
    pub target_epsilon: f64,
    /// `δ`.
    pub delta: f64,
    /// Per-patient L2 clipping norm `C` of the gradient over all parameters.
    pub clip: f32,
    /// Noise multiplier `σ`: the noise added to each lot's gradient sum is `N(0, σ²C²)`.
    pub noise_multiplier: f64,
    /// Poisson sampling rate `q` of a patient per step.
    pub sample_rate: f64,
    /// Patients (units of privacy) in the training data.
    pub patients: usize,
    /// Steps the noise was planned for.
    pub planned_steps: u64,
    /// Clipped terms one patient can change per step: 1 when every term is one image's, more
    /// when terms join patients (the re-id model's in-lot pairs). The noise is scaled by it.
    #[serde(default = "one")]
    pub sensitivity: u32,
}

fn one() -> u32 {
    1
}

impl DpSgd {
    /// Plans `steps` steps over `units` patients with expected lot `lot` to spend at most
    /// `epsilon` at `delta` (default `1/(10·patients)`).
    pub fn plan(
        epsilon: f64,
        delta: Option<f64>,
        clip: f32,
        lot: usize,
        units: &Units,
        steps: u64,
    ) -> anyhow::Result<Self> {
        let patients = units.len();
        ensure!(
            lot >= 1 && lot < patients,
            "DP-SGD needs an expected lot (--batch {lot}) below the number of patients ({patients})"
        );
        ensure!(clip.is_finite() && clip > 0.0, "--dp-clip must be positive, not {clip}");
        let delta = delta.unwrap_or(1.0 / (10.0 * patients as f64));
        ensure!(
            delta < 1.0 / patients as f64,
            "--dp-delta {delta} is not below 1/patients = {:.2e}: it would allow a leak of one patient's data",
            1.0 / patients as f64
        );
        let sample_rate = lot as f64 / patients as f64;
        let noise_multiplier = noise_for_epsilon(epsilon, delta, sample_rate, steps)
            .with_context(|| format!("no noise reaches ε = {epsilon} over {steps} steps"))?;
        Ok(DpSgd {
            target_epsilon: epsilon,
            delta,
            clip,
            noise_multiplier,
            sample_rate,
            patients,
            planned_steps: steps,
            sensitivity: 1,
        })
    }

    /// The plan for terms of which one patient can change `terms` (noise `σ·C·terms`).
    pub fn with_sensitivity(mut self, terms: u32) -> Self {
        self.sensitivity = terms.max(1);
        self
    }

    /// Standard deviation of the noise added to each coordinate of a lot's gradient sum.
    pub fn noise_std(&self) -> f64 {
        self.noise_multiplier * f64::from(self.clip) * f64::from(self.sensitivity)
    }

    /// The expected lot size `q·N`.
    pub fn expected_lot(&self) -> f64 {
        self.sample_rate * self.patients as f64
    }

    /// The guarantee of weights released after `steps` steps (every step run counts, also
    /// those after the weights a selection kept), as the bundle's `provenance.dp` states it.
    pub fn guarantee(&self, steps: u64) -> anyhow::Result<serde_json::Value> {
        let spent = privacy_spent(self.sample_rate, self.noise_multiplier, steps, self.delta)?;
        Ok(serde_json::json!({
            "epsilon": spent.epsilon,
            "delta": self.delta,
            "accountant": ACCOUNTANT,
            "rdp_order": spent.order,
            "unit": "patient",
            "steps": steps,
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "sensitivity_clips": self.sensitivity,
            "sample_rate": self.sample_rate,
            "patients": self.patients,
        }))
    }
}

/// The units of privacy of a data set: each patient's rows, and each row without a patient
/// ID alone.
#[derive(Clone, Debug)]
pub struct Units(Vec<Vec<usize>>);

impl Units {
    /// Groups `data`'s rows by patient.
    pub fn of(data: &Dataset) -> Self {
        let mut by_patient: BTreeMap<Identity, Vec<usize>> = BTreeMap::new();
        let mut units = Vec::new();
        for (row, identity) in data.identities.iter().enumerate() {
            match identity {
                Some(id) => by_patient.entry(*id).or_default().push(row),
                None => units.push(vec![row]),
            }
        }
        units.extend(by_patient.into_values());
        Units(units)
    }

    /// Number of units.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Poisson-sampled lots: every step, each patient independently with probability `q`, one of
/// their images at random — from operating-system entropy.
pub struct Lots<'a> {
    data: &'a Dataset,
    units: Units,
    rate: f64,
    rng: ChaCha20Rng,
    seed: u64,
    norm: Normalization,
    augment: Augment,
}

impl<'a> Lots<'a> {
    /// Lots of `data` at `dp`'s sampling rate; `seed` only seeds augmentation.
    pub fn new(
        data: &'a Dataset,
        dp: &DpSgd,
        seed: u64,
        norm: Normalization,
        augment: Augment,
    ) -> anyhow::Result<Self> {
        let units = Units::of(data);
        ensure!(
            units.len() == dp.patients,
            "the data has {} patients, the DP plan {}",
            units.len(),
            dp.patients
        );
        Ok(Lots { data, units, rate: dp.sample_rate, rng: os_seeded()?, seed, norm, augment })
    }

    /// The lot of 1-based step `step`.
    pub fn next(&mut self, step: u64) -> Batch {
        let mut rows = Vec::new();
        for unit in &self.units.0 {
            if self.rng.random::<f64>() < self.rate {
                rows.push(unit[self.rng.random_range(0..unit.len())]);
            }
        }
        crate::data::lot(self.data, &rows, self.seed, self.norm, &self.augment, step)
    }
}

/// A ChaCha20 generator seeded from the operating system's entropy.
fn os_seeded() -> anyhow::Result<ChaCha20Rng> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("the operating system gave no entropy for DP-SGD: {e}"))?;
    Ok(ChaCha20Rng::from_seed(seed))
}

/// The gradient graph: one image's loss, its gradient, the gradient's norm over all parameters
/// and the clipped gradient added to each parameter's running sum.
///
/// Inputs: the parameters, each `p.grad_sum`, and the model's batch inputs at batch 1.
/// Outputs: `p.grad_sum.next`, `loss` and `grad_norm` (before clipping).
pub struct GradientGraph {
    /// The graph.
    pub graph: Graph,
    /// Trainable parameters in order.
    pub params: Vec<ParamSpec>,
    /// Batch inputs (name, shape at batch 1).
    pub batch_inputs: Vec<(String, Shape)>,
}

impl GradientGraph {
    /// Builds it for `model` with clipping norm `clip`.
    pub fn build(model: &dyn Model, clip: f32) -> Self {
        let Differentiated { graph: mut g, training, batch_inputs, specs, grads, .. } =
            Differentiated::new(model, 1);
        let squares: Vec<TensorId> = grads
            .iter()
            .map(|&grad| {
                let square = g.square(grad);
                let axes: Vec<usize> = (0..g.shape(square).len()).collect();
                g.reduce_sum(square, &axes, false)
            })
            .collect();
        let total = squares.into_iter().reduce(|a, b| g.add(a, b)).expect("a model has parameters");
        let norm = g.unary(UnaryKind::Sqrt, total);
        // min(1, C / ‖g‖) = 1 − relu(1 − C / ‖g‖), exactly; C shrunk by one part in a million so
        // rounding never lets a clipped norm exceed C.
        let bound = g.scalar(clip * (1.0 - 1e-6));
        let denominator = g.add_scalar(norm, 1e-12);
        let ratio = g.div(bound, denominator);
        let negated = g.neg(ratio);
        let excess = g.add_scalar(negated, 1.0);
        let cut = g.relu(excess);
        let negated_cut = g.neg(cut);
        let factor = g.add_scalar(negated_cut, 1.0);
        for (&grad, spec) in grads.iter().zip(&specs) {
            let sum = g.input(&format!("{}{SUM}", spec.name), &spec.shape);
            let clipped = g.mul(grad, factor);
            let next = g.add(sum, clipped);
            g.output(&format!("{}{SUM}{}", spec.name, step::NEXT), next);
        }
        g.output("loss", training.loss);
        g.output("grad_norm", norm);
        GradientGraph { graph: g, params: specs, batch_inputs }
    }
}

/// The update graph: the noisy mean gradient `(Σ clipped + σC·z) / (qN)`, then AdamW and the
/// EMA as in the ordinary step graph.
fn update_graph(params: &[ParamSpec], opt: &AdamW) -> Graph {
    let mut g = Graph::new();
    let noise_std = g.input("noise_std", &[]);
    let inverse_lot = g.input("inverse_lot", &[]);
    let mut tensors = Vec::with_capacity(params.len());
    for spec in params {
        let param = g.input(&spec.name, &spec.shape);
        let sum = g.input(&format!("{}{SUM}", spec.name), &spec.shape);
        let noise = g.input(&format!("{}{NOISE}", spec.name), &spec.shape);
        let scaled = g.mul(noise, noise_std);
        let noisy = g.add(sum, scaled);
        let grad = g.mul(noisy, inverse_lot);
        tensors.push((param, grad));
    }
    let updates: Vec<Update> = tensors
        .into_iter()
        .zip(params)
        .map(|((param, grad), spec)| Update { param, grad, spec })
        .collect();
    step::apply_updates(&mut g, &updates, opt);
    g
}

/// Executes DP-SGD steps: the gradient graph once per image of the lot, then the update graph;
/// the state stays in the engine's memory as in [`engine::TrainingEngine`].
pub struct DpEngine {
    gradient: Session,
    update: Session,
    device: Device,
    params: Vec<ParamSpec>,
    batch_inputs: Vec<(String, Shape)>,
    state: BTreeMap<String, DynTensor>,
    dp: DpSgd,
    noise: ChaCha20Rng,
}

impl DpEngine {
    /// Compiles `gradient` (built with `dp.clip`) and its update graph, and uploads `state`.
    pub fn new(
        env: &Environment,
        gradient: GradientGraph,
        opt: &AdamW,
        dp: &DpSgd,
        state: &State,
        config: &SessionConfig,
    ) -> anyhow::Result<Self> {
        let update = update_graph(&gradient.params, opt);
        let compile = |graph: &Graph| -> anyhow::Result<Session> {
            engine::session(env, &crate::onnx::training_bytes(graph)?, config)
        };
        let mut uploaded = BTreeMap::new();
        for spec in &gradient.params {
            for suffix in step::STATE_SUFFIXES {
                let name = format!("{}{suffix}", spec.name);
                let t = state.get(&name).with_context(|| format!("state has no tensor {name}"))?;
                ensure!(
                    t.shape == spec.shape,
                    "state tensor {name} has shape {:?}, the graph needs {:?}",
                    t.shape,
                    spec.shape
                );
                uploaded.insert(name, engine::upload(config.device, &t.shape, t.data.clone())?);
            }
        }
        Ok(DpEngine {
            gradient: compile(&gradient.graph)?,
            update: compile(&update)?,
            device: config.device,
            params: gradient.params,
            batch_inputs: gradient.batch_inputs,
            state: uploaded,
            dp: dp.clone(),
            noise: os_seeded()?,
        })
    }

    /// One step on a lot of `n` images whose feed is `inputs` (the model's batch inputs for all
    /// `n`, in order). The loss is the lot's mean; the metric `clipped` is the share of images
    /// whose gradient was clipped.
    pub fn step(
        &mut self,
        inputs: &[Vec<f32>],
        n: usize,
        step: u64,
        lr: f32,
        ema_decay: f32,
    ) -> anyhow::Result<StepOutput> {
        ensure!(
            inputs.len() == self.batch_inputs.len(),
            "expected {} batch inputs",
            self.batch_inputs.len()
        );
        for ((name, shape), data) in self.batch_inputs.iter().zip(inputs) {
            ensure!(
                data.len() == n * numel(shape),
                "batch input {name} needs {} values for a lot of {n}, got {}",
                n * numel(shape),
                data.len()
            );
        }
        let mut sums = BTreeMap::new();
        for spec in &self.params {
            let zeros = vec![0.0; numel(&spec.shape)];
            sums.insert(
                format!("{}{SUM}", spec.name),
                engine::upload(self.device, &spec.shape, zeros)?,
            );
        }
        let sum_names: Vec<String> = sums.keys().cloned().collect();
        let host_outputs = ["loss".to_string(), "grad_norm".to_string()];
        let (mut loss_sum, mut clipped) = (0.0f64, 0usize);
        for i in 0..n {
            let mut example = Vec::with_capacity(inputs.len());
            for ((name, shape), data) in self.batch_inputs.iter().zip(inputs) {
                let size = numel(shape);
                let values = data[i * size..(i + 1) * size].to_vec();
                example.push((name.as_str(), engine::upload(Device::Cpu, shape, values)?));
            }
            let params = self.params.iter().map(|p| (p.name.as_str(), &self.state[&p.name]));
            let bound = example
                .iter()
                .map(|(name, value)| (*name, value))
                .chain(params)
                .chain(sums.iter().map(|(name, value)| (name.as_str(), value)));
            let (next, host) = engine::run_bound(
                &mut self.gradient,
                self.device,
                bound,
                sum_names.iter().map(String::as_str),
                &host_outputs,
            )?;
            sums = next;
            let (loss, norm) = (host["loss"].data[0], host["grad_norm"].data[0]);
            ensure!(
                loss.is_finite() && norm.is_finite(),
                "training diverged at step {step}: an image's loss is {loss}, its gradient norm {norm}"
            );
            loss_sum += f64::from(loss);
            clipped += usize::from(norm > self.dp.clip);
        }

        let mut extra = Vec::with_capacity(self.params.len() + 5);
        for spec in &self.params {
            let z: Vec<f32> =
                (0..numel(&spec.shape)).map(|_| self.noise.sample(StandardNormal)).collect();
            extra.push((
                format!("{}{NOISE}", spec.name),
                engine::upload(self.device, &spec.shape, z)?,
            ));
        }
        let scalars = [
            ("step", step as f32),
            ("lr", lr),
            ("ema_decay", ema_decay),
            ("noise_std", self.dp.noise_std() as f32),
            ("inverse_lot", (1.0 / self.dp.expected_lot()) as f32),
        ];
        for (name, value) in scalars {
            extra.push((name.to_string(), engine::upload(Device::Cpu, &[], vec![value])?));
        }
        let bound = extra
            .iter()
            .map(|(name, value)| (name.as_str(), value))
            .chain(sums.iter().map(|(name, value)| (name.as_str(), value)))
            .chain(self.state.iter().map(|(name, value)| (name.as_str(), value)));
        let carried: Vec<String> = self.state.keys().cloned().collect();
        let (next, _) = engine::run_bound(
            &mut self.update,
            self.device,
            bound,
            carried.iter().map(String::as_str),
            &[],
        )?;
        self.state = next;
        let share = clipped as f32 / n.max(1) as f32;
        Ok(StepOutput {
            loss: (loss_sum / n.max(1) as f64) as f32,
            metrics: BTreeMap::from([(
                "clipped".to_string(),
                HostTensor { shape: vec![], data: vec![share] },
            )]),
        })
    }

    /// Downloads the whole state (for checkpoints and export).
    pub fn state(&self) -> anyhow::Result<State> {
        self.state.iter().map(|(name, value)| Ok((name.clone(), engine::to_host(value)?))).collect()
    }
}
