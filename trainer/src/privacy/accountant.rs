//! [`Accountant`]: the privacy spent by the steps a run has taken, over phases that may change
//! the sampling rate or the noise.

use super::error::{
    PrivacyError, check_delta, check_epsilon, check_noise, check_orders, check_sample_rate,
};
use super::plan::max_steps;
use super::rdp::{DEFAULT_ORDERS, PrivacySpent, best_epsilon, compose, rdp_unchecked};

/// A run of consecutive DP-SGD steps at one sampling rate and noise multiplier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Poisson sampling rate `q ∈ (0, 1]`: each example's probability of joining a step.
    pub sample_rate: f64,
    /// Noise standard deviation over the clipping norm, `σ > 0`.
    pub noise_multiplier: f64,
    /// Steps taken at these settings.
    pub steps: u64,
}

/// Tracks the steps of DP-SGD with Poisson sampling and reports the `(ε, δ)` they spent.
///
/// Steps are kept as [`Phase`]s (consecutive steps at the same `(q, σ)` merge into one) with
/// each phase's one-step RDP at every order cached, so [`Accountant::step`] is O(1) unless the
/// settings change. RDP adds over all steps at each order (Mironov 2017, Prop. 1) and is
/// converted as in [`epsilon_from_rdp`](super::epsilon_from_rdp) — Opacus's
/// `RDPAccountant.get_privacy_spent`. To resume from a checkpoint, store
/// [`Accountant::phases`] and rebuild with [`Accountant::from_phases`].
///
/// ```
/// use unpersonal_trainer::privacy::Accountant;
///
/// let mut accountant = Accountant::new();
/// accountant.record(0.01, 1.0, 500)?; // warm-up phase
/// accountant.record(0.02, 1.3, 300)?; // larger lots, more noise
/// for _ in 0..200 {
///     accountant.step(0.01, 0.9)?;
/// }
/// let spent = accountant.privacy_spent(1e-5)?;
/// assert!((spent.epsilon - 2.47701).abs() < 1e-5 && spent.order == 6.7);
/// // How many more steps at (0.01, 0.9) fit in ε = 3?
/// let more = accountant.remaining_steps(3.0, 1e-5, 0.01, 0.9)?;
/// assert!(more > 0);
/// # Ok::<(), unpersonal_trainer::privacy::PrivacyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Accountant {
    orders: Vec<f64>,
    phases: Vec<Phase>,
    /// `per_step[p][k]`: RDP of one step of `phases[p]` at `orders[k]`.
    per_step: Vec<Vec<f64>>,
}

impl Default for Accountant {
    fn default() -> Self {
        Self::new()
    }
}

impl Accountant {
    /// An accountant with no steps, at Opacus's [`DEFAULT_ORDERS`].
    pub fn new() -> Self {
        Self { orders: DEFAULT_ORDERS.to_vec(), phases: Vec::new(), per_step: Vec::new() }
    }

    /// An accountant with no steps, at the given RDP orders.
    ///
    /// # Errors
    /// [`PrivacyError::NoOrders`] or [`PrivacyError::Order`].
    pub fn with_orders(orders: &[f64]) -> Result<Self, PrivacyError> {
        check_orders(orders)?;
        Ok(Self { orders: orders.to_vec(), phases: Vec::new(), per_step: Vec::new() })
    }

    /// An accountant at [`DEFAULT_ORDERS`] that has taken `phases` (as from
    /// [`Accountant::phases`] of a checkpointed run).
    ///
    /// # Errors
    /// As [`Accountant::record`] for any phase.
    pub fn from_phases(phases: &[Phase]) -> Result<Self, PrivacyError> {
        let mut accountant = Self::new();
        for p in phases {
            accountant.record(p.sample_rate, p.noise_multiplier, p.steps)?;
        }
        Ok(accountant)
    }

    /// The RDP orders in use.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The phases so far, oldest first.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// Steps taken over all phases (saturating).
    pub fn total_steps(&self) -> u64 {
        self.phases.iter().fold(0u64, |n, p| n.saturating_add(p.steps))
    }

    /// Accounts for one step at sampling rate `sample_rate` and noise `noise_multiplier`.
    ///
    /// # Errors
    /// As [`Accountant::record`].
    pub fn step(&mut self, sample_rate: f64, noise_multiplier: f64) -> Result<(), PrivacyError> {
        self.record(sample_rate, noise_multiplier, 1)
    }

    /// Accounts for `steps` steps at `(sample_rate, noise_multiplier)`; they extend the last
    /// phase when it has the same settings. Zero steps change nothing (after the checks).
    ///
    /// # Errors
    /// [`PrivacyError::SampleRate`] or [`PrivacyError::NoiseMultiplier`]; nothing is recorded.
    pub fn record(
        &mut self,
        sample_rate: f64,
        noise_multiplier: f64,
        steps: u64,
    ) -> Result<(), PrivacyError> {
        check_sample_rate(sample_rate)?;
        check_noise(noise_multiplier)?;
        if steps == 0 {
            return Ok(());
        }
        match self.phases.last_mut() {
            Some(last)
                if last.sample_rate == sample_rate && last.noise_multiplier == noise_multiplier =>
            {
                last.steps = last.steps.saturating_add(steps);
            }
            _ => {
                self.per_step.push(self.one_step(sample_rate, noise_multiplier));
                self.phases.push(Phase { sample_rate, noise_multiplier, steps });
            }
        }
        Ok(())
    }

    /// Total RDP of all steps at each of [`Accountant::orders`].
    pub fn rdp(&self) -> Vec<f64> {
        (0..self.orders.len()).map(|k| self.rdp_at(k, None)).collect()
    }

    /// The `(ε, δ)` spent so far, and the order that gives it. With no step this is the
    /// conversion's own cost at `δ`, the smallest `ε` these orders can certify.
    ///
    /// # Errors
    /// [`PrivacyError::Delta`] for `δ ∉ (0, 1)`.
    pub fn privacy_spent(&self, delta: f64) -> Result<PrivacySpent, PrivacyError> {
        check_delta(delta)?;
        Ok(self.spent(delta.ln()))
    }

    /// `ε` spent so far at `delta` (see [`Accountant::privacy_spent`]).
    ///
    /// # Errors
    /// [`PrivacyError::Delta`] for `δ ∉ (0, 1)`.
    pub fn epsilon(&self, delta: f64) -> Result<f64, PrivacyError> {
        self.privacy_spent(delta).map(|s| s.epsilon)
    }

    /// The largest number of further steps at `(sample_rate, noise_multiplier)` after which
    /// [`Accountant::epsilon`] at `delta` is still at most `target_epsilon`: what a run may
    /// still take before it would exceed its budget. Exact for this accountant's arithmetic:
    /// after [`Accountant::record`] of that many steps `ε ≤ target`, after one more `ε >
    /// target`. Saturates at `u64::MAX`.
    ///
    /// # Errors
    /// [`PrivacyError::Epsilon`], [`PrivacyError::Delta`], [`PrivacyError::SampleRate`] or
    /// [`PrivacyError::NoiseMultiplier`] for arguments out of range;
    /// [`PrivacyError::BudgetExceeded`] when the steps taken already spent more than the
    /// target, and [`PrivacyError::Unreachable`] when no step was taken and the conversion
    /// alone costs more.
    pub fn remaining_steps(
        &self,
        target_epsilon: f64,
        delta: f64,
        sample_rate: f64,
        noise_multiplier: f64,
    ) -> Result<u64, PrivacyError> {
        check_epsilon(target_epsilon)?;
        check_delta(delta)?;
        check_sample_rate(sample_rate)?;
        check_noise(noise_multiplier)?;
        let ln_delta = delta.ln();
        let spent = self.spent(ln_delta).epsilon;
        if spent > target_epsilon {
            return Err(if self.phases.is_empty() {
                PrivacyError::Unreachable { target: target_epsilon, floor: spent }
            } else {
                PrivacyError::BudgetExceeded { spent, target: target_epsilon }
            });
        }
        let extends_last = self.phases.last().is_some_and(|p| {
            p.sample_rate == sample_rate && p.noise_multiplier == noise_multiplier
        });
        let (per_step, new_phase) = match self.per_step.last() {
            Some(last) if extends_last => (last.clone(), false),
            _ => (self.one_step(sample_rate, noise_multiplier), true),
        };
        let rdp_after = |k: usize, t: u64| {
            if new_phase {
                self.rdp_at(k, None) + compose(per_step[k], t)
            } else {
                self.rdp_at(k, Some(t))
            }
        };
        Ok(max_steps(&self.orders, ln_delta, target_epsilon, &per_step, rdp_after).unwrap_or(0))
    }

    /// One step's RDP at each order.
    fn one_step(&self, q: f64, sigma: f64) -> Vec<f64> {
        self.orders.iter().map(|&a| rdp_unchecked(q, sigma, a)).collect()
    }

    /// Total RDP at `orders[k]`, with `extra_last` more steps in the last phase: the one sum
    /// that both reporting and [`Accountant::remaining_steps`] evaluate.
    fn rdp_at(&self, k: usize, extra_last: Option<u64>) -> f64 {
        let last = self.phases.len().saturating_sub(1);
        let mut total = 0.0;
        for (p, (phase, rdp)) in self.phases.iter().zip(&self.per_step).enumerate() {
            let steps = match extra_last {
                Some(t) if p == last => phase.steps.saturating_add(t),
                _ => phase.steps,
            };
            total += compose(rdp[k], steps);
        }
        total
    }

    fn spent(&self, ln_delta: f64) -> PrivacySpent {
        best_epsilon(&self.orders, (0..self.orders.len()).map(|k| self.rdp_at(k, None)), ln_delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::privacy_spent;

    #[test]
    fn one_phase_matches_privacy_spent_exactly() {
        let mut acc = Accountant::new();
        for _ in 0..1000 {
            acc.step(0.01, 1.0).unwrap();
        }
        assert_eq!(
            acc.phases(),
            &[Phase { sample_rate: 0.01, noise_multiplier: 1.0, steps: 1000 }]
        );
        assert_eq!(acc.total_steps(), 1000);
        assert_eq!(acc.privacy_spent(1e-5), privacy_spent(0.01, 1.0, 1000, 1e-5));
    }

    #[test]
    fn phases_merge_only_when_consecutive_and_equal() {
        let mut acc = Accountant::new();
        acc.record(0.01, 1.0, 10).unwrap();
        acc.record(0.01, 1.0, 5).unwrap();
        acc.record(0.02, 1.0, 0).unwrap(); // zero steps: nothing
        acc.record(0.02, 1.0, 3).unwrap();
        acc.record(0.01, 1.0, 2).unwrap();
        let steps: Vec<u64> = acc.phases().iter().map(|p| p.steps).collect();
        assert_eq!(steps, [15, 3, 2]);
        assert_eq!(acc.total_steps(), 20);
        // Rebuilding from the phases gives the same accountant.
        let again = Accountant::from_phases(acc.phases()).unwrap();
        assert_eq!(again.rdp(), acc.rdp());
    }

    #[test]
    fn bad_steps_are_not_recorded() {
        let mut acc = Accountant::new();
        assert_eq!(acc.step(0.0, 1.0), Err(PrivacyError::SampleRate(0.0)));
        assert_eq!(acc.step(0.1, f64::INFINITY), Err(PrivacyError::NoiseMultiplier(f64::INFINITY)));
        assert_eq!(acc.total_steps(), 0);
        assert_eq!(acc.epsilon(0.0), Err(PrivacyError::Delta(0.0)));
        assert!(Accountant::with_orders(&[0.5]).is_err());
    }

    #[test]
    fn rdp_adds_across_phases() {
        let orders = [1.5, 2.0, 8.0];
        let mut acc = Accountant::with_orders(&orders).unwrap();
        acc.record(0.05, 1.2, 7).unwrap();
        acc.record(0.1, 2.0, 3).unwrap();
        let a = crate::privacy::rdp_sampled_gaussian_orders(0.05, 1.2, &orders).unwrap();
        let b = crate::privacy::rdp_sampled_gaussian_orders(0.1, 2.0, &orders).unwrap();
        for (k, r) in acc.rdp().iter().enumerate() {
            assert_eq!(*r, a[k] * 7.0 + b[k] * 3.0);
        }
    }

    #[test]
    fn remaining_steps_stop_before_exceeding() {
        let (target, delta) = (2.0, 1e-5);
        let mut acc = Accountant::new();
        acc.record(0.01, 1.0, 300).unwrap();
        for (q, sigma) in [(0.01, 1.0), (0.02, 1.5)] {
            let more = acc.remaining_steps(target, delta, q, sigma).unwrap();
            let mut after = acc.clone();
            after.record(q, sigma, more).unwrap();
            assert!(after.epsilon(delta).unwrap() <= target, "{q} {sigma} {more}");
            after.step(q, sigma).unwrap();
            assert!(after.epsilon(delta).unwrap() > target, "{q} {sigma} {more}");
        }
        // Fresh accountant: the same as steps_for_epsilon.
        let fresh = Accountant::new().remaining_steps(target, delta, 0.01, 1.0).unwrap();
        assert_eq!(Ok(fresh), crate::privacy::steps_for_epsilon(target, delta, 0.01, 1.0));
    }

    #[test]
    fn remaining_steps_errors() {
        let mut acc = Accountant::new();
        assert!(matches!(
            acc.remaining_steps(0.05, 1e-5, 0.01, 1.0),
            Err(PrivacyError::Unreachable { .. })
        ));
        acc.record(0.1, 0.8, 1000).unwrap();
        let spent = acc.epsilon(1e-5).unwrap();
        assert_eq!(
            acc.remaining_steps(1.0, 1e-5, 0.1, 0.8),
            Err(PrivacyError::BudgetExceeded { spent, target: 1.0 })
        );
        assert!(matches!(
            acc.remaining_steps(f64::NAN, 1e-5, 0.1, 0.8),
            Err(PrivacyError::Epsilon(e)) if e.is_nan()
        ));
    }
}
