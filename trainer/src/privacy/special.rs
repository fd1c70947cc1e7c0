//! The complementary error function and its logarithm.
//!
//! [`erfc`] is the `libm` crate's (a port of fdlibm's `s_erf.c`, as in musl and FreeBSD;
//! within about one ulp). [`log_erfc`] is `ln erfc(x)` without underflow: `erfc` drops below
//! the smallest normal f64 at x ≈ 26.5 and reaches 0 at x ≈ 27.2, but the RDP accountant needs
//! its logarithm for arguments far beyond that.

/// Where [`log_erfc`] switches from `ln(libm::erfc(x))` to the asymptotic series.
///
/// Below it `erfc(x)` is a normal float (`erfc(20) ≈ 5.4e-176`, well clear of subnormals at
/// x ≈ 26.5), so its logarithm keeps libm's accuracy; from it on, the series' first omitted
/// term is at most `17!!/(2·20²)⁹ ≈ 2.6e-19`, about one ulp of the correction it truncates.
const SERIES_FROM: f64 = 20.0;

/// Terms of the asymptotic series kept by [`log_erfc`] (see [`SERIES_FROM`]).
const SERIES_TERMS: u32 = 8;

/// `ln √π`.
const LN_SQRT_PI: f64 = 0.572_364_942_924_700_1;

/// The complementary error function `erfc(x) = 1 - erf(x)`, to within about one ulp.
pub(crate) fn erfc(x: f64) -> f64 {
    libm::erfc(x)
}

/// `ln erfc(x)` for every `x`, including where `erfc(x)` underflows, to within a few ulps: about
/// 2e-16 relative, or 1e-16 absolute where `|ln erfc(x)| < 1` (near its zero at `x = 0`, where
/// the relative error of any rounded `erfc` grows as `1/|x|`).
///
/// For `x < 20` ([`SERIES_FROM`]) this is `ln(libm::erfc(x))`: there `erfc(x)` is a normal
/// float with full precision (for negative `x`, libm's `2 - erfc(-x)` lies in `(1, 2]`). For
/// `x ≥ 20` it is the asymptotic expansion
///
/// `ln erfc(x) = -x² - ln(x·√π) + ln(1 + Σ_{k≥1} (-1)^k (2k-1)!! / (2x²)^k)`,
///
/// truncated after [`SERIES_TERMS`] terms. The series diverges for fixed `x`, but term `k` is
/// `(2k-1)/(2x²)` times term `k-1`, under 1/45 for `k ≤ 9` at `x ≥ 20`, and the error of the
/// truncated alternating sum is below the first omitted term. The switch sits well below erfc's
/// underflow (x ≈ 26.5) so that no subnormal, precision-losing `erfc` value is ever used.
///
/// This is what Opacus computes as `ln 2 + log_ndtr(-√2·x)` with SciPy.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x.is_nan() || x < SERIES_FROM {
        return erfc(x).ln();
    }
    if x.is_infinite() {
        return f64::NEG_INFINITY;
    }
    // Σ (-1)^k (2k-1)!! t^k with t = 1/(2x²), in Horner form: -t(1 - 3t(1 - 5t(1 - …))).
    let t = 0.5 / (x * x);
    let sum = (1..=SERIES_TERMS).rev().fold(0.0, |acc, k| -f64::from(2 * k - 1) * t * (1.0 + acc));
    // x² = xx + xx_err exactly, so that only the final sum rounds at the scale of x².
    let xx = x * x;
    let xx_err = x.mul_add(x, -xx);
    -xx - (xx_err + x.ln() + LN_SQRT_PI - sum.ln_1p())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        if a == b { 0.0 } else { (a - b).abs() / a.abs().max(b.abs()) }
    }

    /// `(x, ln erfc(x), erfc(x))` from mpmath at 60 digits (reference.py).
    const MPMATH: [(f64, f64, f64); 19] = [
        (-6.0, std::f64::consts::LN_2, 2.0),
        (-2.0, 0.6908055736465877, 1.9953222650189528),
        (-0.5, 0.41903914777555956, 1.5204998778130465),
        (0.0, 0.0, 1.0),
        (1e-3, -0.0011290158896213548, 0.9988716212090307),
        (0.2, -0.2519322337826167, 0.7772974107895215),
        (0.5, -0.7350111298370844, 0.4795001221869535),
        (0.8, -1.3551871067286683, 0.2578990352923395),
        (1.0, -1.8496055099332482, 0.15729920705028513),
        (1.2, -2.4114403551669295, 0.08968602177036464),
        (2.0, -5.364941264616638, 0.004677734981047266),
        (2.9, -10.099554065545236, 4.109787809945886e-05),
        (5.0, -27.200889545537436, 1.537459794428035e-12),
        (10.0, -102.87988902484489, 2.088487583762545e-45),
        (26.0, -679.8311997631943, 5.663192408856143e-296),
        (27.5, -760.1372110153482, 0.0),
        (30.0, -903.9741171106439, 0.0),
        (100.0, -10005.177585122665, 0.0),
        (1e4, -100000009.78270532, 0.0),
    ];

    #[test]
    fn erfc_matches_mpmath() {
        for (x, _, want) in MPMATH {
            let got = erfc(x);
            assert!(rel(got, want) < 1e-15, "erfc({x}) = {got}, mpmath {want}");
        }
    }

    #[test]
    fn log_erfc_matches_mpmath() {
        for (x, want, _) in MPMATH {
            let got = log_erfc(x);
            // ln erfc(0) = 0 exactly; elsewhere compare relatively, and absolutely near 0.
            let err = if want == 0.0 { got.abs() } else { rel(got, want) };
            assert!(err < 1e-13, "log_erfc({x}) = {got}, mpmath {want}");
        }
    }

    #[test]
    fn log_erfc_is_continuous_where_erfc_underflows() {
        // ln(erfc) and the asymptotic series meet at the switch; and ln erfc must not jump
        // where erfc turns subnormal.
        let below = log_erfc(SERIES_FROM.next_down());
        let above = log_erfc(SERIES_FROM);
        assert!(rel(below, above) < 1e-14);
        let mut prev = log_erfc(26.0);
        let mut x: f64 = 26.0;
        while x < 28.0 {
            x += 1.0 / 64.0;
            let v = log_erfc(x);
            // d/dx ln erfc(x) ≈ -2x - 1/x: consecutive values differ by about that slope.
            let slope = (v - prev) * 64.0;
            assert!((slope + 2.0 * x).abs() < 0.2, "slope {slope} at {x}");
            prev = v;
        }
    }

    #[test]
    fn special_values() {
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
        assert!(erfc(f64::NAN).is_nan());
        assert_eq!(log_erfc(f64::INFINITY), f64::NEG_INFINITY);
        assert_eq!(log_erfc(f64::NEG_INFINITY), 2f64.ln());
        assert!(log_erfc(f64::NAN).is_nan());
        // erfc(-x) = 2 - erfc(x)
        for x in [0.3, 0.9, 1.7, 4.0] {
            assert!(rel(erfc(-x), 2.0 - erfc(x)) < 1e-15);
        }
    }
}
