//! Differential-privacy accounting for DP-SGD with Poisson subsampling.
//!
//! Each DP-SGD step samples every example independently with probability `q` (Poisson
//! sampling), clips per-example gradients to norm `C` and adds `N(0, σ²C²)` noise to their sum:
//! the *sampled Gaussian mechanism* (Abadi et al. 2016, "Deep Learning with Differential
//! Privacy"). This module bounds the privacy such a run spends, as Opacus's `RDPAccountant`
//! does:
//!
//! - [`rdp_sampled_gaussian`]: Rényi DP of one step at integer and fractional orders
//!   (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
//!   Mechanism"), in log space with an accurate `ln erfc`;
//! - composition: RDP adds over steps at each order (Mironov 2017, "Rényi Differential
//!   Privacy");
//! - conversion to `(ε, δ)` ([`epsilon_from_rdp`]): Balle et al. 2020, "Hypothesis Testing
//!   Interpretations and Rényi Differential Privacy" (Thm. 21), the bound Opacus's
//!   `get_privacy_spent` uses, minimised over Opacus's [`DEFAULT_ORDERS`];
//! - planning: [`privacy_spent`] of a run, [`noise_for_epsilon`] and [`steps_for_epsilon`];
//! - tracking: [`Accountant`], over [`Phase`]s whose `q` and `σ` may differ.
//!
//! `ε` agrees with Opacus 1.6 to about 1e-11 relative, with the same optimal order (see
//! `tests.rs`; the reference values come from a script that runs Opacus's own `rdp.py`).
//! Per-order RDP agrees to 3e-13 absolute; where it is tiny (`q = 1e-5`) this crate is the
//! more accurate of the two at integer orders. The guarantee is only as good as the trainer's sampling:
//! it must be genuinely Poisson (not fixed-size shuffled batches) with rate `q`, and the noise
//! must be `σ` times the clipping norm.
//!
//! ```
//! use unpersonal_trainer::privacy::{Accountant, noise_for_epsilon};
//!
//! // Plan: the noise for ε = 3 at δ = 1e-5 over 10 epochs at q = 0.01.
//! let (q, delta) = (0.01, 1e-5);
//! let steps = 1_000;
//! let sigma = noise_for_epsilon(3.0, delta, q, steps)?;
//!
//! // Train, accounting for each step.
//! let mut accountant = Accountant::new();
//! for _ in 0..steps {
//!     accountant.step(q, sigma)?;
//! }
//! assert!(accountant.epsilon(delta)? <= 3.0);
//! # Ok::<(), unpersonal_trainer::privacy::PrivacyError>(())
//! ```

mod accountant;
mod error;
mod plan;
mod rdp;
mod special;

#[cfg(test)]
mod tests;

pub use accountant::{Accountant, Phase};
pub use error::PrivacyError;
pub use plan::{
    MAX_NOISE_MULTIPLIER, MIN_NOISE_MULTIPLIER, NOISE_RELATIVE_TOLERANCE, noise_for_epsilon,
    privacy_spent, steps_for_epsilon,
};
pub use rdp::{
    DEFAULT_ORDERS, MAX_ORDER, PrivacySpent, epsilon_from_rdp, rdp_sampled_gaussian,
    rdp_sampled_gaussian_orders,
};
