//! Training to a time budget: a site knows "tonight on this GPU", not "40,000 steps". The
//! trainer times a few steps of every model on the device it runs on, then gives each stage
//! its share of the time left, in steps; a stage that starts later is planned with the time
//! that is then left and with the speed measured so far, so early misestimates are corrected.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dp::{DpEngine, DpSgd, GradientGraph};
use crate::engine::{SessionConfig, TrainingEngine};
use crate::graph::{Shape, numel};
use crate::models::Model;
use crate::step::{self, AdamW};

/// One training stage as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Its name (`classifier`, `denoiser`, `reid`).
    pub name: String,
    /// Seconds one optimisation step takes (measured, then corrected by the stages run).
    pub seconds_per_step: f64,
    /// Share of the training time it gets (the shares of the stages left are renormalised).
    pub share: f64,
    /// Steps it gets at least, whatever the budget (a shorter run teaches nothing).
    pub min_steps: u64,
    /// Steps beyond which more time is better spent elsewhere (its time passes on to the
    /// stages left without a cap).
    pub max_steps: u64,
}

/// Steps for each of `stages` (the stages still to run, in order) to fit `time` of training:
/// each gets its share of `time`, clamped to its step range; what a capped stage leaves goes to
/// the others in proportion to their shares.
pub fn plan(stages: &[Stage], time: Duration) -> Vec<u64> {
    let mut steps: Vec<Option<u64>> = vec![None; stages.len()];
    let mut left = time.as_secs_f64();
    // Fix capped or floored stages one at a time until the rest fit their shares.
    loop {
        let open: Vec<usize> = (0..stages.len()).filter(|&i| steps[i].is_none()).collect();
        let total_share: f64 = open.iter().map(|&i| stages[i].share).sum();
        if open.is_empty() || total_share <= 0.0 {
            break;
        }
        let wanted = |i: usize| left * stages[i].share / total_share / stages[i].seconds_per_step;
        let clamped = open.iter().copied().find(|&i| {
            let s = wanted(i);
            s < stages[i].min_steps as f64 || s > stages[i].max_steps as f64
        });
        match clamped {
            Some(i) => {
                let s = (wanted(i).max(0.0) as u64).clamp(stages[i].min_steps, stages[i].max_steps);
                steps[i] = Some(s);
                left -= s as f64 * stages[i].seconds_per_step;
            }
            None => {
                for i in open {
                    steps[i] = Some(wanted(i) as u64);
                }
                break;
            }
        }
    }
    steps.into_iter().map(|s| s.unwrap_or(0)).collect()
}

/// Seconds one optimisation step of `model` at batch size `batch` takes on `session`'s device:
/// the mean of `steps` steps on synthetic inputs after two warm-up steps.
pub fn seconds_per_step(
    env: &ort::environment::Environment,
    model: &dyn Model,
    batch: usize,
    steps: u64,
    session: &SessionConfig,
) -> anyhow::Result<f64> {
    let step_graph = step::build(model, batch, &AdamW::default());
    let state = step::initial_state(&step_graph.params, 0);
    let mut engine = TrainingEngine::new(env, &step_graph, &state, session)?;
    let inputs = synthetic_inputs(&step_graph.batch_inputs, 1);
    let inputs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    timed(2, steps, |t| engine.step(&inputs, t, 1e-3, 0.99).map(drop))
}

/// Like [`seconds_per_step`], for DP-SGD steps on lots of `lot` images: each image's gradient
/// alone, clipped, then the noisy update ([`crate::dp`]).
pub fn dp_seconds_per_step(
    env: &ort::environment::Environment,
    model: &dyn Model,
    lot: usize,
    steps: u64,
    session: &SessionConfig,
) -> anyhow::Result<f64> {
    let gradient = GradientGraph::build(model, 1.0);
    let state = step::initial_state(&gradient.params, 0);
    // Planning needs only the shapes and a noise scale: any plan's graphs cost the same.
    let dp = DpSgd {
        target_epsilon: 8.0,
        delta: 1e-5,
        clip: 1.0,
        noise_multiplier: 1.0,
        sample_rate: 0.01,
        patients: lot * 100,
        planned_steps: steps,
        sensitivity: 1,
    };
    let inputs = synthetic_inputs(&gradient.batch_inputs, lot);
    let mut engine = DpEngine::new(env, gradient, &AdamW::default(), &dp, &state, session)?;
    timed(1, steps, |t| engine.step(&inputs, lot, t, 1e-3, 0.99).map(drop))
}

/// Values for `copies` samples of every batch input: positive values in (0, 1], valid for
/// every input (labels, noise levels, masks).
fn synthetic_inputs(batch_inputs: &[(String, Shape)], copies: usize) -> Vec<Vec<f32>> {
    batch_inputs
        .iter()
        .map(|(_, shape)| {
            (0..copies * numel(shape)).map(|i| ((i * 7919) % 255 + 1) as f32 / 256.0).collect()
        })
        .collect()
}

/// Mean seconds of `steps` calls of `step` (1-based step numbers), after `warmup` untimed ones.
fn timed(
    warmup: u64,
    steps: u64,
    mut step: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for t in 1..=warmup {
        step(t)?;
    }
    let started = Instant::now();
    for t in warmup + 1..=warmup + steps.max(1) {
        step(t)?;
    }
    Ok(started.elapsed().as_secs_f64() / steps.max(1) as f64)
}

/// Parses a duration as people write it: `45m`, `2h`, `1h30m`, `90s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 45m, 2h or 1h30m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, seconds_per_step: f64, share: f64, range: (u64, u64)) -> Stage {
        Stage { name: name.into(), seconds_per_step, share, min_steps: range.0, max_steps: range.1 }
    }

    #[test]
    fn shares_of_the_time_become_steps() {
        let stages = [
            stage("classifier", 0.1, 0.2, (10, 100_000)),
            stage("denoiser", 0.5, 0.6, (10, 100_000)),
            stage("reid", 0.2, 0.2, (10, 100_000)),
        ];
        let steps = plan(&stages, Duration::from_secs(1000));
        assert_eq!(steps, [2000, 1200, 1000]);
    }

    #[test]
    fn a_capped_stage_passes_its_time_on() {
        let stages = [
            stage("classifier", 0.1, 0.2, (10, 500)),
            stage("denoiser", 0.5, 0.6, (10, 100_000)),
            stage("reid", 0.2, 0.2, (10, 100_000)),
        ];
        let steps = plan(&stages, Duration::from_secs(1000));
        assert_eq!(steps[0], 500);
        // 950 s left for shares 0.6 : 0.2.
        assert_eq!(steps[1..], [1425, 1187]);
        let used: f64 =
            steps.iter().zip(&stages).map(|(&s, st)| s as f64 * st.seconds_per_step).sum();
        assert!(used <= 1000.0 && used > 999.0, "{used}");
    }

    #[test]
    fn a_tiny_budget_still_runs_the_floor() {
        let stages = [stage("a", 1.0, 0.5, (20, 1000)), stage("b", 1.0, 0.5, (30, 1000))];
        assert_eq!(plan(&stages, Duration::from_secs(5)), [20, 30]);
    }

    #[test]
    fn durations_are_read_as_written() {
        assert_eq!(parse_duration("45m"), Ok(Duration::from_secs(2700)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").unwrap_err().contains("45m"));
    }
}
