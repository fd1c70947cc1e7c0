//! The accountant's error type and the argument checks that produce it.

use std::fmt;

/// Why a privacy computation was refused.
///
/// Every variant carries the offending value, so the message says what was wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PrivacyError {
    /// The Poisson sampling rate `q` was not in `(0, 1]`.
    SampleRate(f64),
    /// The noise multiplier `σ` was not finite and positive.
    NoiseMultiplier(f64),
    /// `δ` was not in `(0, 1)`.
    Delta(f64),
    /// A target `ε` was not finite and positive.
    Epsilon(f64),
    /// An RDP order `α` was not finite, or not in `(1, MAX_ORDER]`.
    Order(f64),
    /// An empty list of RDP orders.
    NoOrders,
    /// An RDP value was negative or NaN.
    Rdp(f64),
    /// RDP values and orders of different lengths.
    LengthMismatch {
        /// Number of orders.
        orders: usize,
        /// Number of RDP values.
        rdp: usize,
    },
    /// Zero steps where at least one is needed.
    ZeroSteps,
    /// The target `ε` is at or below what the orders can certify at this `δ` even with no
    /// step at all (equivalently, with unbounded noise): the RDP-to-DP conversion costs
    /// `floor` by itself.
    Unreachable {
        /// The requested `ε`.
        target: f64,
        /// `ε` of zero steps at this `δ` with these orders.
        floor: f64,
    },
    /// Reaching the target `ε` would need a noise multiplier above `max_sigma`.
    NoiseOutOfRange {
        /// The requested `ε`.
        target: f64,
        /// The largest noise multiplier searched.
        max_sigma: f64,
    },
    /// The steps already accounted for have spent more than the target `ε`.
    BudgetExceeded {
        /// `ε` spent so far.
        spent: f64,
        /// The requested `ε`.
        target: f64,
    },
}

impl fmt::Display for PrivacyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::SampleRate(q) => write!(f, "sampling rate q must be in (0, 1], got {q}"),
            Self::NoiseMultiplier(s) => {
                write!(f, "noise multiplier σ must be finite and greater than 0, got {s}")
            }
            Self::Delta(d) => write!(f, "δ must be in (0, 1), got {d}"),
            Self::Epsilon(e) => write!(f, "target ε must be finite and greater than 0, got {e}"),
            Self::Order(a) => write!(
                f,
                "RDP order α must be finite, greater than 1 and at most {}, got {a}",
                super::rdp::MAX_ORDER
            ),
            Self::NoOrders => write!(f, "at least one RDP order is needed"),
            Self::Rdp(r) => write!(f, "RDP values must be non-negative (or +∞), got {r}"),
            Self::LengthMismatch { orders, rdp } => {
                write!(f, "{orders} RDP orders but {rdp} RDP values: they must pair up")
            }
            Self::ZeroSteps => write!(f, "the number of steps must be at least 1"),
            Self::Unreachable { target, floor } => write!(
                f,
                "ε = {target} cannot be certified at this δ: with these RDP orders even zero \
                 steps (or unbounded noise) give ε = {floor}; raise the target ε or δ"
            ),
            Self::NoiseOutOfRange { target, max_sigma } => write!(
                f,
                "ε = {target} would need a noise multiplier above {max_sigma}; raise the target \
                 ε, or lower the sampling rate or the number of steps"
            ),
            Self::BudgetExceeded { spent, target } => {
                write!(f, "privacy budget exhausted: ε = {spent} already spent, target {target}")
            }
        }
    }
}

impl std::error::Error for PrivacyError {}

/// `q ∈ (0, 1]`.
pub(crate) fn check_sample_rate(q: f64) -> Result<f64, PrivacyError> {
    if q > 0.0 && q <= 1.0 { Ok(q) } else { Err(PrivacyError::SampleRate(q)) }
}

/// `σ` finite and positive.
pub(crate) fn check_noise(sigma: f64) -> Result<f64, PrivacyError> {
    if sigma.is_finite() && sigma > 0.0 {
        Ok(sigma)
    } else {
        Err(PrivacyError::NoiseMultiplier(sigma))
    }
}

/// `δ ∈ (0, 1)`.
pub(crate) fn check_delta(delta: f64) -> Result<f64, PrivacyError> {
    if delta > 0.0 && delta < 1.0 { Ok(delta) } else { Err(PrivacyError::Delta(delta)) }
}

/// `ε` finite and positive.
pub(crate) fn check_epsilon(eps: f64) -> Result<f64, PrivacyError> {
    if eps.is_finite() && eps > 0.0 { Ok(eps) } else { Err(PrivacyError::Epsilon(eps)) }
}

/// A non-empty list of orders, each in `(1, MAX_ORDER]`.
pub(crate) fn check_orders(orders: &[f64]) -> Result<(), PrivacyError> {
    if orders.is_empty() {
        return Err(PrivacyError::NoOrders);
    }
    match orders.iter().find(|&&a| !(a > 1.0 && a <= super::rdp::MAX_ORDER)) {
        Some(&a) => Err(PrivacyError::Order(a)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_reject_out_of_range_and_non_finite() {
        for q in [0.0, -0.1, 1.0 + 1e-12, f64::NAN, f64::INFINITY] {
            assert_eq!(
                check_sample_rate(q).map_err(|e| matches!(e, PrivacyError::SampleRate(_))),
                Err(true),
                "{q}"
            );
        }
        assert!(check_sample_rate(1.0).is_ok() && check_sample_rate(1e-300).is_ok());
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(check_noise(s), Err(PrivacyError::NoiseMultiplier(_))), "{s}");
        }
        for d in [0.0, 1.0, -1e-5, f64::NAN, f64::INFINITY] {
            assert!(matches!(check_delta(d), Err(PrivacyError::Delta(_))), "{d}");
        }
        for e in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(check_epsilon(e), Err(PrivacyError::Epsilon(_))), "{e}");
        }
        assert_eq!(check_orders(&[]), Err(PrivacyError::NoOrders));
        assert_eq!(check_orders(&[2.0, 1.0]), Err(PrivacyError::Order(1.0)));
        assert!(matches!(check_orders(&[f64::NAN]), Err(PrivacyError::Order(a)) if a.is_nan()));
        assert_eq!(check_orders(&[f64::INFINITY]), Err(PrivacyError::Order(f64::INFINITY)));
        assert!(check_orders(&[1.5, 64.0]).is_ok());
    }

    #[test]
    fn messages_name_the_value() {
        assert_eq!(
            PrivacyError::SampleRate(1.5).to_string(),
            "sampling rate q must be in (0, 1], got 1.5"
        );
        assert_eq!(PrivacyError::Delta(0.0).to_string(), "δ must be in (0, 1), got 0");
        let e: Box<dyn std::error::Error> =
            Box::new(PrivacyError::Unreachable { target: 0.05, floor: 0.1 });
        assert!(e.to_string().contains("ε = 0.05") && e.to_string().contains("0.1"));
    }
}
