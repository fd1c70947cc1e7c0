//! Planning a DP-SGD run at a fixed sampling rate: the `ε` of `T` steps, the noise that meets
//! a target `ε`, and the number of steps that stays within one. All at Opacus's
//! [`DEFAULT_ORDERS`].

use super::error::{PrivacyError, check_delta, check_epsilon, check_noise, check_sample_rate};
use super::rdp::{
    DEFAULT_ORDERS, PrivacySpent, best_epsilon, compose, epsilon_at_order, rdp_unchecked,
};

/// [`noise_for_epsilon`] stops bisecting once its bracket `[lo, hi]` has `hi/lo − 1` below
/// this.
pub const NOISE_RELATIVE_TOLERANCE: f64 = 1e-7;

/// The largest noise multiplier [`noise_for_epsilon`] searches.
pub const MAX_NOISE_MULTIPLIER: f64 = 1_048_576.0;

/// The smallest noise multiplier [`noise_for_epsilon`] searches (2⁻²⁰).
pub const MIN_NOISE_MULTIPLIER: f64 = 1.0 / 1_048_576.0;

/// The `(ε, δ)` spent by `steps` steps of DP-SGD with Poisson sampling rate `q` and noise
/// multiplier `sigma`: RDP composed over the steps (Mironov 2017, Prop. 1) and converted at
/// the best of [`DEFAULT_ORDERS`] (Balle et al. 2020). Zero steps give the conversion's own
/// cost, the smallest `ε` these orders can certify at `δ`.
///
/// ```
/// use unpersonal_trainer::privacy::privacy_spent;
///
/// // MNIST as in Abadi et al. 2016: expected lot 256 out of 60 000, σ = 1.1, 60 epochs.
/// let spent = privacy_spent(256.0 / 60_000.0, 1.1, 14_062, 1e-5)?;
/// assert!((spent.epsilon - 2.5966).abs() < 1e-4 && spent.order == 8.1);
/// # Ok::<(), unpersonal_trainer::privacy::PrivacyError>(())
/// ```
///
/// # Errors
/// [`PrivacyError::SampleRate`], [`PrivacyError::NoiseMultiplier`] or [`PrivacyError::Delta`]
/// for arguments out of range.
pub fn privacy_spent(
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
) -> Result<PrivacySpent, PrivacyError> {
    check_sample_rate(q)?;
    check_noise(sigma)?;
    check_delta(delta)?;
    Ok(spent_unchecked(q, sigma, steps, delta.ln()))
}

/// The smallest noise multiplier `σ` whose `steps` steps at sampling rate `q` spend at most
/// `target_epsilon` at `delta`.
///
/// `ε` falls as `σ` grows, so this brackets `σ` by doubling or halving from 1 and bisects
/// geometrically to a relative width of [`NOISE_RELATIVE_TOLERANCE`]. The returned `σ` is the
/// bracket's upper end: `ε(σ) ≤ target_epsilon` holds for it exactly as
/// [`privacy_spent`] computes it, and `σ·(1 − 10⁻⁷)` exceeds the target. If even
/// [`MIN_NOISE_MULTIPLIER`] meets the target, that is returned.
///
/// ```
/// use unpersonal_trainer::privacy::{noise_for_epsilon, privacy_spent};
///
/// let (q, steps, delta) = (0.01, 1_000, 1e-5);
/// let sigma = noise_for_epsilon(1.0, delta, q, steps)?;
/// assert!((sigma - 1.51312).abs() < 1e-4);
/// assert!(privacy_spent(q, sigma, steps, delta)?.epsilon <= 1.0);
/// # Ok::<(), unpersonal_trainer::privacy::PrivacyError>(())
/// ```
///
/// # Errors
/// [`PrivacyError::Epsilon`], [`PrivacyError::Delta`], [`PrivacyError::SampleRate`] or
/// [`PrivacyError::ZeroSteps`] for arguments out of range; [`PrivacyError::Unreachable`] when
/// the target is at or below what zero steps cost at `δ`; [`PrivacyError::NoiseOutOfRange`]
/// when it would take more than [`MAX_NOISE_MULTIPLIER`].
pub fn noise_for_epsilon(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    steps: u64,
) -> Result<f64, PrivacyError> {
    check_epsilon(target_epsilon)?;
    check_delta(delta)?;
    check_sample_rate(q)?;
    if steps == 0 {
        return Err(PrivacyError::ZeroSteps);
    }
    let ln_delta = delta.ln();
    let floor = floor_epsilon(&DEFAULT_ORDERS, ln_delta);
    if target_epsilon <= floor {
        return Err(PrivacyError::Unreachable { target: target_epsilon, floor });
    }
    let meets = |sigma: f64| spent_unchecked(q, sigma, steps, ln_delta).epsilon <= target_epsilon;

    // Bracket: `hi` meets the target, `lo` does not.
    let mut hi = 1.0;
    while !meets(hi) {
        if hi >= MAX_NOISE_MULTIPLIER {
            return Err(PrivacyError::NoiseOutOfRange {
                target: target_epsilon,
                max_sigma: MAX_NOISE_MULTIPLIER,
            });
        }
        hi *= 2.0;
    }
    let mut lo = hi / 2.0;
    while meets(lo) {
        if lo <= MIN_NOISE_MULTIPLIER {
            return Ok(lo);
        }
        hi = lo;
        lo /= 2.0;
    }
    while hi / lo - 1.0 > NOISE_RELATIVE_TOLERANCE {
        let mid = (lo * hi).sqrt();
        if meets(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// The largest number of steps at sampling rate `q` and noise multiplier `sigma` that spends
/// at most `target_epsilon` at `delta`: train that many steps and stop before exceeding it.
///
/// RDP grows linearly in the steps at every order, so each order's limit is solved for
/// directly and then confirmed with the exact expression [`privacy_spent`] evaluates: one
/// more step would exceed the target. Saturates at `u64::MAX` when a step costs no RDP at
/// some order that has room (only for astronomically large `σ`).
///
/// ```
/// use unpersonal_trainer::privacy::{privacy_spent, steps_for_epsilon};
///
/// let (q, sigma, delta) = (256.0 / 60_000.0, 1.1, 1e-5);
/// let steps = steps_for_epsilon(2.0, delta, q, sigma)?;
/// assert_eq!(steps, 8_642);
/// assert!(privacy_spent(q, sigma, steps, delta)?.epsilon <= 2.0);
/// assert!(privacy_spent(q, sigma, steps + 1, delta)?.epsilon > 2.0);
/// # Ok::<(), unpersonal_trainer::privacy::PrivacyError>(())
/// ```
///
/// # Errors
/// [`PrivacyError::Epsilon`], [`PrivacyError::Delta`], [`PrivacyError::SampleRate`] or
/// [`PrivacyError::NoiseMultiplier`] for arguments out of range; [`PrivacyError::Unreachable`]
/// when even zero steps cost more than the target at `δ`.
pub fn steps_for_epsilon(
    target_epsilon: f64,
    delta: f64,
    q: f64,
    sigma: f64,
) -> Result<u64, PrivacyError> {
    check_epsilon(target_epsilon)?;
    check_delta(delta)?;
    check_sample_rate(q)?;
    check_noise(sigma)?;
    let ln_delta = delta.ln();
    let per_step: Vec<f64> = DEFAULT_ORDERS.iter().map(|&a| rdp_unchecked(q, sigma, a)).collect();
    max_steps(&DEFAULT_ORDERS, ln_delta, target_epsilon, &per_step, |k, t| compose(per_step[k], t))
        .ok_or(PrivacyError::Unreachable {
            target: target_epsilon,
            floor: floor_epsilon(&DEFAULT_ORDERS, ln_delta),
        })
}

/// [`privacy_spent`] for checked arguments.
fn spent_unchecked(q: f64, sigma: f64, steps: u64, ln_delta: f64) -> PrivacySpent {
    let rdp = DEFAULT_ORDERS.iter().map(|&a| compose(rdp_unchecked(q, sigma, a), steps));
    best_epsilon(&DEFAULT_ORDERS, rdp, ln_delta)
}

/// `ε` of zero steps: the conversion's cost alone.
pub(crate) fn floor_epsilon(orders: &[f64], ln_delta: f64) -> f64 {
    best_epsilon(orders, std::iter::repeat(0.0), ln_delta).epsilon
}

/// The largest `t` with `min_k ε_k(rdp_after(k, t)) ≤ target`, or `None` if not even `t = 0`
/// qualifies. `rdp_after(k, t)` is the total RDP at order `k` after `t` more steps, exactly
/// as it will be reported; it must be non-decreasing in `t`, and `per_step[k]` its slope (a
/// first guess only: every answer is confirmed through `rdp_after`).
pub(crate) fn max_steps(
    orders: &[f64],
    ln_delta: f64,
    target: f64,
    per_step: &[f64],
    rdp_after: impl Fn(usize, u64) -> f64,
) -> Option<u64> {
    let mut best: Option<u64> = None;
    for (k, (&order, &slope)) in orders.iter().zip(per_step).enumerate() {
        let fits = |t: u64| epsilon_at_order(rdp_after(k, t), order, ln_delta) <= target;
        if !fits(0) {
            continue;
        }
        let t = if slope > 0.0 {
            let room = target - epsilon_at_order(rdp_after(k, 0), order, ln_delta);
            largest_fitting((room / slope).floor(), fits)
        } else {
            u64::MAX
        };
        best = best.max(Some(t));
    }
    best
}

/// The largest `t` with `fits(t)`, given that `fits(0)` holds, `fits` is monotone (true then
/// false), and `guess` is close: gallop away from the guess to bracket, then bisect.
fn largest_fitting(guess: f64, fits: impl Fn(u64) -> bool) -> u64 {
    // `as` saturates: NaN → 0, beyond the range → u64::MAX.
    let guess = guess as u64;
    let (mut good, mut bad);
    if fits(guess) {
        good = guess;
        let mut stride = 1u64;
        loop {
            match good.checked_add(stride) {
                None => {
                    if fits(u64::MAX) {
                        return u64::MAX;
                    }
                    bad = u64::MAX;
                    break;
                }
                Some(next) if fits(next) => good = next,
                Some(next) => {
                    bad = next;
                    break;
                }
            }
            stride = stride.saturating_mul(2);
        }
    } else {
        bad = guess;
        let mut stride = 1u64;
        loop {
            let next = bad.saturating_sub(stride);
            if fits(next) {
                good = next;
                break;
            }
            bad = next;
            stride = stride.saturating_mul(2);
        }
    }
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_fitting_finds_the_boundary_from_any_guess() {
        for limit in [0u64, 1, 7, 1000, u64::MAX - 3, u64::MAX] {
            for guess in [0.0, 1.0, 6.0, 999.0, 1e6, 1e30, f64::NAN] {
                assert_eq!(largest_fitting(guess, |t| t <= limit), limit, "{limit} {guess}");
            }
        }
    }

    #[test]
    fn privacy_spent_checks_arguments() {
        assert_eq!(privacy_spent(1.5, 1.0, 10, 1e-5), Err(PrivacyError::SampleRate(1.5)));
        assert_eq!(privacy_spent(0.1, 0.0, 10, 1e-5), Err(PrivacyError::NoiseMultiplier(0.0)));
        assert_eq!(privacy_spent(0.1, 1.0, 10, 0.0), Err(PrivacyError::Delta(0.0)));
    }

    #[test]
    fn zero_steps_cost_the_floor() {
        let ln_d = 1e-5f64.ln();
        let floor = floor_epsilon(&DEFAULT_ORDERS, ln_d);
        // At order 63: (ln 1e5 − ln 63)/62 + ln(62/63) = 0.10286725...
        let at63 = epsilon_at_order(0.0, 63.0, ln_d);
        assert_eq!(floor, at63);
        assert!((floor - 0.102_867_251).abs() < 1e-9, "{floor}");
        assert_eq!(privacy_spent(0.1, 1.0, 0, 1e-5).map(|s| s.epsilon), Ok(floor));
    }

    #[test]
    fn noise_for_epsilon_rejects_bad_and_unreachable_targets() {
        assert_eq!(noise_for_epsilon(0.0, 1e-5, 0.1, 10), Err(PrivacyError::Epsilon(0.0)));
        assert_eq!(noise_for_epsilon(1.0, 1e-5, 0.1, 0), Err(PrivacyError::ZeroSteps));
        assert_eq!(noise_for_epsilon(1.0, 1e-5, 0.0, 10), Err(PrivacyError::SampleRate(0.0)));
        assert_eq!(noise_for_epsilon(1.0, 2.0, 0.1, 10), Err(PrivacyError::Delta(2.0)));
        assert!(matches!(
            noise_for_epsilon(0.05, 1e-5, 0.1, 10),
            Err(PrivacyError::Unreachable { target, floor }) if target == 0.05 && floor > 0.1
        ));
        // Just above the floor (0.10287), with a full batch for 10⁹ steps: that needs σ ≈ 1.5e7,
        // beyond the range searched.
        assert!(matches!(
            noise_for_epsilon(0.103, 1e-5, 1.0, 1_000_000_000),
            Err(PrivacyError::NoiseOutOfRange { .. })
        ));
    }

    #[test]
    fn noise_for_epsilon_is_tight() {
        for (target, q, steps) in
            [(1.0, 0.01, 1000), (8.0, 0.1, 100), (0.5, 1.0, 1), (50.0, 0.5, 3)]
        {
            let sigma = noise_for_epsilon(target, 1e-5, q, steps).unwrap();
            let at = |s: f64| privacy_spent(q, s, steps, 1e-5).unwrap().epsilon;
            assert!(at(sigma) <= target, "{target} {q} {steps}: σ={sigma}");
            assert!(at(sigma * (1.0 - 1e-6)) > target, "{target} {q} {steps}: σ={sigma} not tight");
        }
    }

    #[test]
    fn huge_targets_need_little_noise() {
        let sigma = noise_for_epsilon(1e15, 1e-5, 0.001, 1).unwrap();
        assert!(sigma < 1e-3, "{sigma}");
        assert!(privacy_spent(0.001, sigma, 1, 1e-5).unwrap().epsilon <= 1e15);
    }

    #[test]
    fn steps_for_epsilon_checks_and_edges() {
        assert!(matches!(
            steps_for_epsilon(1.0, 1e-5, 0.1, f64::NAN),
            Err(PrivacyError::NoiseMultiplier(s)) if s.is_nan()
        ));
        assert_eq!(steps_for_epsilon(-1.0, 1e-5, 0.1, 1.0), Err(PrivacyError::Epsilon(-1.0)));
        assert!(matches!(
            steps_for_epsilon(0.1, 1e-5, 0.01, 1.0),
            Err(PrivacyError::Unreachable { .. })
        ));
        // A step that costs no RDP at some order with room: unbounded.
        assert_eq!(steps_for_epsilon(1.0, 1e-5, 1e-200, 1.0), Ok(u64::MAX));
        // A target one step cannot meet: zero steps.
        assert_eq!(steps_for_epsilon(0.2, 1e-5, 1.0, 0.5), Ok(0));
        // Exactly at a boundary: ε(T) ≤ target < ε(T + 1).
        for (target, q, sigma) in [(3.0, 0.01, 0.8), (1.5, 0.2, 2.0), (10.0, 1.0, 3.0)] {
            let t = steps_for_epsilon(target, 1e-6, q, sigma).unwrap();
            let at = |t: u64| privacy_spent(q, sigma, t, 1e-6).unwrap().epsilon;
            assert!(t > 0 && at(t) <= target && at(t + 1) > target, "{target} {q} {sigma}: {t}");
        }
    }
}
