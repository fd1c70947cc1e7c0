//! Rényi differential privacy of the Poisson-subsampled Gaussian mechanism, and its conversion
//! to `(ε, δ)`-DP.
//!
//! The sampled Gaussian mechanism (SGM) of DP-SGD includes each example independently with
//! probability `q` and adds `N(0, σ²)` noise to the sum of gradients clipped to norm 1. Its RDP
//! at order `α` is `ln(A_α) / (α − 1)` with (Mironov, Talwar, Zhang 2019, "Rényi Differential
//! Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530, Sec. 3.3)
//!
//! `A_α = E_{z ~ N(0, σ²)} [((1 − q) + q·exp((2z − 1) / (2σ²)))^α]`,
//!
//! evaluated in log space as Opacus (`opacus/accountants/analysis/rdp.py`) and TensorFlow
//! Privacy (`rdp_accountant.py`) do: a binomial sum for integer `α` (`_compute_log_a_int`,
//! Opacus's `_compute_log_a_for_int_alpha`), and for fractional `α` the two series over
//! `(−∞, z₀]` and `[z₀, ∞)` with `ln erfc` factors (`_compute_log_a_frac`,
//! `_compute_log_a_for_frac_alpha`), summed until a term drops below `e^−30`. RDP composes additively
//! over steps (Mironov 2017, "Rényi Differential Privacy", Prop. 1), and
//! [`epsilon_from_rdp`] converts it to `(ε, δ)` with the conversion of Balle et al. 2020,
//! "Hypothesis Testing Interpretations and Rényi Differential Privacy" (AISTATS, Thm. 21 of
//! arXiv:1905.09982; also Canonne, Kamath, Steinke 2020), as Opacus's `get_privacy_spent`.
//!
//! Two numerical details differ from Opacus, both more accurate and neither changing the
//! mathematics: `ln(1 − q)` is `ln_1p(−q)`, and for integer `α` the sum is taken over
//! `A_α − 1 = Σ_{i≥2} C(α,i) qⁱ(1−q)^{α−i} (e^{(i²−i)/(2σ²)} − 1)` (all terms non-negative, the
//! `i = 0, 1` ones vanish) so that a tiny RDP is not the difference of two close logarithms.

use super::error::{PrivacyError, check_delta, check_noise, check_orders, check_sample_rate};
use super::special::log_erfc;

/// The largest RDP order accepted: the series' cost grows with the order.
pub const MAX_ORDER: f64 = 10_000.0;

/// Opacus's default RDP orders (`RDPAccountant.DEFAULT_ALPHAS`): `1 + x/10` for `x` in
/// `1..=99`, then the integers `12..=63`. 151 orders.
pub const DEFAULT_ORDERS: [f64; 151] = [
    1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9,
    3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1, 4.2, 4.3, 4.4, 4.5, 4.6, 4.7, 4.8,
    4.9, 5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 5.9, 6.0, 6.1, 6.2, 6.3, 6.4, 6.5, 6.6, 6.7,
    6.8, 6.9, 7.0, 7.1, 7.2, 7.3, 7.4, 7.5, 7.6, 7.7, 7.8, 7.9, 8.0, 8.1, 8.2, 8.3, 8.4, 8.5, 8.6,
    8.7, 8.8, 8.9, 9.0, 9.1, 9.2, 9.3, 9.4, 9.5, 9.6, 9.7, 9.8, 9.9, 10.0, 10.1, 10.2, 10.3, 10.4,
    10.5, 10.6, 10.7, 10.8, 10.9, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 22.0,
    23.0, 24.0, 25.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 32.0, 33.0, 34.0, 35.0, 36.0, 37.0, 38.0,
    39.0, 40.0, 41.0, 42.0, 43.0, 44.0, 45.0, 46.0, 47.0, 48.0, 49.0, 50.0, 51.0, 52.0, 53.0, 54.0,
    55.0, 56.0, 57.0, 58.0, 59.0, 60.0, 61.0, 62.0, 63.0,
];

/// The fractional-order series stops once a term is below `e^STOP_LOG_TERM` (Opacus: −30).
const STOP_LOG_TERM: f64 = -30.0;

/// At most this many terms of the fractional-order series. Its terms decay polynomially
/// (like `i^−(α+2)`), so a few thousand is typical; an order that would need more gets RDP
/// `+∞`, which only ever makes `ε` larger.
const MAX_TERMS: u32 = 1 << 22;

/// An `(ε, δ)` guarantee and the RDP order it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacySpent {
    /// The smallest `ε` over the orders (never negative; `+∞` when every order's RDP is).
    pub epsilon: f64,
    /// The order `α` that attains it (the first such order on ties, as `numpy.nanargmin`).
    pub order: f64,
}

/// RDP at `order` of one step of the sampled Gaussian mechanism with sampling rate `q` and
/// noise multiplier `sigma` (noise standard deviation over the clipping norm).
///
/// `q = 1` (no subsampling) gives the Gaussian mechanism's `α / (2σ²)`. The value is
/// non-negative and may be `+∞` (an order whose series does not settle, e.g. for a tiny `σ`).
///
/// # Errors
/// [`PrivacyError::SampleRate`], [`PrivacyError::NoiseMultiplier`] or [`PrivacyError::Order`]
/// for arguments out of range.
pub fn rdp_sampled_gaussian(q: f64, sigma: f64, order: f64) -> Result<f64, PrivacyError> {
    check_sample_rate(q)?;
    check_noise(sigma)?;
    check_orders(&[order])?;
    Ok(rdp_unchecked(q, sigma, order))
}

/// [`rdp_sampled_gaussian`] at each of `orders`.
///
/// # Errors
/// As [`rdp_sampled_gaussian`], and [`PrivacyError::NoOrders`] for an empty list.
pub fn rdp_sampled_gaussian_orders(
    q: f64,
    sigma: f64,
    orders: &[f64],
) -> Result<Vec<f64>, PrivacyError> {
    check_sample_rate(q)?;
    check_noise(sigma)?;
    check_orders(orders)?;
    Ok(orders.iter().map(|&a| rdp_unchecked(q, sigma, a)).collect())
}

/// Converts RDP values at `orders` (already composed over all steps) to `(ε, δ)`-DP:
/// `ε = min_α [rdp_α − (ln δ + ln α)/(α − 1) + ln((α − 1)/α)]` (Balle et al. 2020, Thm. 21;
/// Opacus's `get_privacy_spent`). A negative minimum is reported as 0, the smallest
/// meaningful `ε` (it is still a valid bound).
///
/// # Errors
/// [`PrivacyError::Delta`], [`PrivacyError::NoOrders`], [`PrivacyError::Order`],
/// [`PrivacyError::LengthMismatch`], or [`PrivacyError::Rdp`] for a negative or NaN value.
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
) -> Result<PrivacySpent, PrivacyError> {
    check_delta(delta)?;
    check_orders(orders)?;
    if orders.len() != rdp.len() {
        return Err(PrivacyError::LengthMismatch { orders: orders.len(), rdp: rdp.len() });
    }
    if let Some(&r) = rdp.iter().find(|&&r| r.is_nan() || r < 0.0) {
        return Err(PrivacyError::Rdp(r));
    }
    Ok(best_epsilon(orders, rdp.iter().copied(), delta.ln()))
}

/// RDP of `steps` steps that each cost `one_step`: their sum, `one_step·steps` (0 for no
/// step, even when `one_step` is `+∞`).
pub(crate) fn compose(one_step: f64, steps: u64) -> f64 {
    if steps == 0 { 0.0 } else { one_step * steps as f64 }
}

/// `ε` at one order from the total RDP there. Every caller goes through this one expression
/// (in Opacus's order of operations), so that planning and reporting agree to the last bit.
pub(crate) fn epsilon_at_order(rdp: f64, order: f64, ln_delta: f64) -> f64 {
    rdp - (ln_delta + order.ln()) / (order - 1.0) + ((order - 1.0) / order).ln()
}

/// The minimum of [`epsilon_at_order`] over `orders` (unchecked), clamped at 0.
pub(crate) fn best_epsilon(
    orders: &[f64],
    rdp: impl IntoIterator<Item = f64>,
    ln_delta: f64,
) -> PrivacySpent {
    let mut best = PrivacySpent { epsilon: f64::INFINITY, order: orders[0] };
    for (&order, r) in orders.iter().zip(rdp) {
        let eps = epsilon_at_order(r, order, ln_delta);
        if eps < best.epsilon {
            best = PrivacySpent { epsilon: eps, order };
        }
    }
    best.epsilon = best.epsilon.max(0.0);
    best
}

/// RDP of one SGM step for checked arguments: `ln(A_α)/(α − 1)`, with NaN (a numerical
/// breakdown) reported as `+∞` and rounding below 0 as 0.
pub(crate) fn rdp_unchecked(q: f64, sigma: f64, order: f64) -> f64 {
    let rdp = if q == 1.0 {
        order / (2.0 * sigma * sigma)
    } else if order.fract() == 0.0 {
        // `order` is an integer in (1, MAX_ORDER], so the cast is exact.
        log_a_int(q, sigma, order as u32) / (order - 1.0)
    } else {
        log_a_frac(q, sigma, order) / (order - 1.0)
    };
    if rdp.is_nan() { f64::INFINITY } else { rdp.max(0.0) }
}

/// `ln(e^x + e^y)` without overflow (`−∞` stands for 0).
fn log_add(x: f64, y: f64) -> f64 {
    let (lo, hi) = if x < y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    (lo - hi).exp().ln_1p() + hi
}

/// `ln(e^x − e^y)` for `x ≥ y`; `None` when `x < y` (the difference would be negative).
fn log_sub(x: f64, y: f64) -> Option<f64> {
    if x < y {
        return None;
    }
    if y == f64::NEG_INFINITY {
        return Some(x);
    }
    if x == y {
        return Some(f64::NEG_INFINITY);
    }
    let d = (x - y).exp_m1();
    Some(if d.is_finite() { d.ln() + y } else { x })
}

/// `ln(e^x − 1)` for `x ≥ 0` (`−∞` at 0).
fn ln_expm1(x: f64) -> f64 {
    if x > 1.0 { x + (-(-x).exp()).ln_1p() } else { x.exp_m1().ln() }
}

/// `(ln|C(n, i)|, C(n, i) > 0)` for `i = 0, 1, 2, …` and real `n`, by the recurrence
/// `C(n, i+1) = C(n, i)·(n − i)/(i + 1)`; in log space once the value leaves the normal range.
struct Binomials {
    n: f64,
    i: f64,
    value: f64,
    log_abs: f64,
    positive: bool,
}

impl Binomials {
    fn new(n: f64) -> Self {
        Self { n, i: 0.0, value: 1.0, log_abs: 0.0, positive: true }
    }
}

impl Iterator for Binomials {
    type Item = (f64, bool);

    fn next(&mut self) -> Option<(f64, bool)> {
        let current = (self.log_abs, self.positive);
        let factor = (self.n - self.i) / (self.i + 1.0);
        self.i += 1.0;
        let value = self.value * factor;
        if value.is_normal() {
            self.value = value;
            self.log_abs = value.abs().ln();
            self.positive = value > 0.0;
        } else {
            // Stays NaN from here on, so the log-space branch keeps being taken.
            self.value = f64::NAN;
            self.log_abs += factor.abs().ln();
            self.positive ^= factor < 0.0;
        }
        Some(current)
    }
}

/// `ln(A_α)` for integer `α ≥ 2` and `0 < q < 1`, as `ln(1 + (A_α − 1))` with
/// `A_α − 1 = Σ_{i=2..α} C(α,i) qⁱ (1−q)^{α−i} (e^{(i²−i)/(2σ²)} − 1)`.
fn log_a_int(q: f64, sigma: f64, alpha: u32) -> f64 {
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let two_var = 2.0 * sigma * sigma;
    let n = f64::from(alpha);
    let mut log_a_minus_1 = f64::NEG_INFINITY;
    for (i, (log_coef, _)) in (0..=alpha).zip(Binomials::new(n)).skip(2) {
        let i = f64::from(i);
        let log_pmf = log_coef + i * ln_q + (n - i) * ln_1mq;
        log_a_minus_1 = log_add(log_a_minus_1, log_pmf + ln_expm1((i * i - i) / two_var));
    }
    log_add(0.0, log_a_minus_1)
}

/// `ln(A_α)` for fractional `α > 1` and `0 < q < 1`: Opacus's `_compute_log_a_frac`, the
/// integrals over `(−∞, z₀]` and `[z₀, ∞)` (`z₀ = σ² ln(1/q − 1) + 1/2`) as alternating series
/// in `i` with `erfc` factors. `+∞` if a partial sum would go negative or the series does not
/// settle within [`MAX_TERMS`].
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let var = sigma * sigma;
    let z0 = var * (ln_1mq - ln_q) + 0.5;
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    let ln_half = -std::f64::consts::LN_2;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for (i, (log_coef, positive)) in (0..MAX_TERMS).zip(Binomials::new(alpha)) {
        let i = f64::from(i);
        let j = alpha - i;
        let log_t0 = log_coef + i * ln_q + j * ln_1mq;
        let log_t1 = log_coef + j * ln_q + i * ln_1mq;
        let log_e0 = ln_half + log_erfc((i - z0) / sqrt2_sigma);
        let log_e1 = ln_half + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * var) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * var) + log_e1;
        if positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            match (log_sub(log_a0, log_s0), log_sub(log_a1, log_s1)) {
                (Some(a0), Some(a1)) => (log_a0, log_a1) = (a0, a1),
                _ => return f64::INFINITY,
            }
        }
        if log_s0.max(log_s1) < STOP_LOG_TERM {
            return log_add(log_a0, log_a1);
        }
    }
    f64::INFINITY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        if a == b { 0.0 } else { (a - b).abs() / a.abs().max(b.abs()) }
    }

    #[test]
    fn default_orders_are_opacus_default_alphas() {
        let opacus: Vec<f64> =
            (1..100).map(|x| 1.0 + f64::from(x) / 10.0).chain((12..64).map(f64::from)).collect();
        assert_eq!(DEFAULT_ORDERS.len(), 151);
        assert_eq!(DEFAULT_ORDERS.as_slice(), opacus.as_slice());
    }

    #[test]
    fn binomials_match_exact_values() {
        let c: Vec<f64> = Binomials::new(5.0).take(6).map(|(l, _)| l.exp()).collect();
        for (got, want) in c.iter().zip([1.0, 5.0, 10.0, 10.0, 5.0, 1.0]) {
            assert!(rel(*got, want) < 1e-15, "{c:?}");
        }
        // C(1.5, i): 1, 1.5, 0.375, −0.0625, 0.0234375 (signs alternate from i = 3).
        let c: Vec<(f64, bool)> = Binomials::new(1.5).take(5).collect();
        for ((l, p), (want, wp)) in c.iter().zip([
            (1.0, true),
            (1.5, true),
            (0.375, true),
            (0.0625, false),
            (0.0234375, true),
        ]) {
            assert!(rel(l.exp(), want) < 1e-15 && *p == wp, "{c:?}");
        }
        // Past the f64 range of C(2000, i) the log-space branch takes over smoothly.
        let logs: Vec<f64> = Binomials::new(2000.0).take(1001).map(|(l, _)| l).collect();
        // ln C(2000, 1000) = 1382.26799... (mpmath)
        assert!((logs[1000] - 1382.2679935374802).abs() < 1e-9, "{}", logs[1000]);
    }

    #[test]
    fn log_arithmetic() {
        assert_eq!(log_add(f64::NEG_INFINITY, 1.5), 1.5);
        assert!(rel(log_add(2f64.ln(), 3f64.ln()), 5f64.ln()) < 1e-15);
        assert!(rel(log_add(1000.0, 1000.0), 1000.0 + 2f64.ln()) < 1e-15);
        assert_eq!(log_sub(1.0, 2.0), None);
        assert_eq!(log_sub(1.0, 1.0), Some(f64::NEG_INFINITY));
        assert!(rel(log_sub(5f64.ln(), 3f64.ln()).unwrap(), 2f64.ln()) < 1e-15);
        assert_eq!(log_sub(800.0, 0.0), Some(800.0));
        assert_eq!(ln_expm1(0.0), f64::NEG_INFINITY);
        for x in [1e-10f64, 0.5, 1.0, 1.5, 40.0] {
            let want = if x < 30.0 { x.exp_m1().ln() } else { x };
            assert!(rel(ln_expm1(x), want) < 1e-15, "{x}");
        }
        assert_eq!(ln_expm1(1e6), 1e6);
    }

    #[test]
    fn full_batch_is_the_gaussian_mechanism() {
        for a in [1.1, 2.0, 7.9, 63.0] {
            assert_eq!(rdp_sampled_gaussian(1.0, 5.0, a), Ok(a / 50.0));
        }
    }

    #[test]
    fn integer_order_matches_closed_form_for_order_two() {
        // A_2 = 1 + q²(e^{1/σ²} − 1) exactly (Mironov et al. 2019, Sec. 3.3).
        for (q, s) in [(0.01f64, 1.0f64), (1e-4, 4.0), (0.5, 0.5), (0.9, 2.0)] {
            let want = (q * q * (1.0 / (s * s)).exp_m1()).ln_1p();
            let got = rdp_sampled_gaussian(q, s, 2.0).unwrap();
            assert!(rel(got, want) < 1e-14, "q={q} σ={s}: {got} vs {want}");
        }
    }

    #[test]
    fn fractional_orders_interpolate_integer_ones() {
        // RDP is non-decreasing in α, and (α − 1)·RDP is convex in α (van Erven & Harremoës):
        // the fractional series has to sit between its integer neighbours.
        for (q, s) in [(0.01, 1.0), (0.1, 0.7), (0.3, 2.0), (256.0 / 60000.0, 1.1)] {
            let rdp = rdp_sampled_gaussian_orders(q, s, &DEFAULT_ORDERS).unwrap();
            for w in rdp.windows(2) {
                assert!(w[1] >= w[0] * (1.0 - 1e-9), "q={q} σ={s}: {rdp:?}");
            }
            let g: Vec<f64> =
                DEFAULT_ORDERS[..99].iter().zip(&rdp).map(|(a, r)| (a - 1.0) * r).collect();
            for w in g.windows(3) {
                assert!(w[0] + w[2] - 2.0 * w[1] >= -1e-12 * w[2], "q={q} σ={s} not convex");
            }
        }
    }

    #[test]
    fn rdp_shrinks_with_noise_and_grows_with_rate() {
        let r = |q: f64, s: f64| rdp_sampled_gaussian(q, s, 4.5).unwrap();
        assert!(r(0.01, 1.0) > r(0.01, 1.5) && r(0.01, 1.5) > r(0.01, 3.0));
        assert!(r(0.02, 1.0) > r(0.01, 1.0) && r(1.0, 1.0) > r(0.5, 1.0));
        // Subsampling amplifies privacy: never worse than the full batch.
        assert!(r(0.999, 1.0) <= r(1.0, 1.0));
    }

    #[test]
    fn rdp_of_a_negligible_rate_is_exactly_zero_at_integer_orders() {
        // q² underflows against 1: A_α − 1 rounds to 0, and RDP is 0, not NaN.
        assert_eq!(rdp_sampled_gaussian(1e-200, 1.0, 2.0), Ok(0.0));
        assert_eq!(rdp_sampled_gaussian(1e-200, 1.0, 63.0), Ok(0.0));
        let frac = rdp_sampled_gaussian(1e-200, 1.0, 1.5).unwrap();
        assert!((0.0..1e-300).contains(&frac), "{frac}");
    }

    #[test]
    fn tiny_noise_is_conservative_not_nan() {
        for a in [1.5, 2.0, 10.9, 63.0] {
            let r = rdp_sampled_gaussian(0.5, 0.05, a).unwrap();
            assert!(r > 10.0 && !r.is_nan(), "α={a}: {r}");
        }
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(rdp_sampled_gaussian(0.0, 1.0, 2.0), Err(PrivacyError::SampleRate(0.0)));
        assert_eq!(rdp_sampled_gaussian(0.1, -1.0, 2.0), Err(PrivacyError::NoiseMultiplier(-1.0)));
        assert_eq!(rdp_sampled_gaussian(0.1, 1.0, 1.0), Err(PrivacyError::Order(1.0)));
        assert_eq!(rdp_sampled_gaussian(0.1, 1.0, 2e4), Err(PrivacyError::Order(2e4)));
        assert_eq!(rdp_sampled_gaussian_orders(0.1, 1.0, &[]), Err(PrivacyError::NoOrders));
        let orders = [2.0, 3.0];
        assert_eq!(
            epsilon_from_rdp(&orders, &[1.0], 1e-5),
            Err(PrivacyError::LengthMismatch { orders: 2, rdp: 1 })
        );
        assert_eq!(epsilon_from_rdp(&orders, &[1.0, -1.0], 1e-5), Err(PrivacyError::Rdp(-1.0)));
        assert!(matches!(
            epsilon_from_rdp(&orders, &[1.0, f64::NAN], 1e-5),
            Err(PrivacyError::Rdp(_))
        ));
        assert_eq!(epsilon_from_rdp(&orders, &[1.0, 1.0], 1.0), Err(PrivacyError::Delta(1.0)));
    }

    #[test]
    fn conversion_formula_and_edge_cases() {
        let orders = [2.0, 3.0, 4.0];
        let rdp = [0.5, 0.5, 100.0];
        let ln_d = 1e-5f64.ln();
        let spent = epsilon_from_rdp(&orders, &rdp, 1e-5).unwrap();
        let e3 = 0.5 - (ln_d + 3f64.ln()) / 2.0 + (2.0f64 / 3.0).ln();
        assert_eq!(spent, PrivacySpent { epsilon: e3, order: 3.0 });
        // Every order infinite: ε = ∞ at the first order, as np.nanargmin.
        let inf = epsilon_from_rdp(&orders, &[f64::INFINITY; 3], 1e-5);
        assert_eq!(inf, Ok(PrivacySpent { epsilon: f64::INFINITY, order: 2.0 }));
        // δ near 1 makes the formula negative; reported as 0.
        assert_eq!(epsilon_from_rdp(&[10.0], &[0.0], 0.9).map(|s| s.epsilon), Ok(0.0));
    }
}
