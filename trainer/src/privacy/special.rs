//! The complementary error function and its logarithm, accurate to about one ulp.
//!
//! [`erfc`] is a port of FreeBSD's `s_erf.c` (Sun's fdlibm), the rational approximations that
//! also back musl, Go's `math.Erfc` and the `libm` crate. [`log_erfc`] evaluates the same
//! approximation in log space: for `x ≥ 1.25` fdlibm writes
//! `erfc(x) = exp(-x² - 0.5625 + R(1/x²)/S(1/x²)) / x`, so `ln erfc(x)` is that exponent minus
//! `ln x`, with no underflow however large `x` is. The approximation of
//! `g(s) = ln(x·erfc(x)) + x² - 0.5625` (`s = 1/x²`) holds to the end of the asymptotic
//! expansion: at `s = 0` it gives `ln(1/√π)` to 1e-17, so no separate series is needed
//! past fdlibm's underflow point (x ≈ 27).
//!
//! The coefficients are fdlibm's, written as its decimal literals (their hexadecimal words
//! follow each); hence the file-wide `excessive_precision` allowance.
// ====================================================
// Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
//
// Developed at SunPro, a Sun Microsystems, Inc. business.
// Permission to use, copy, modify, and distribute this
// software is freely granted, provided that this notice
// is preserved.
// ====================================================
#![allow(clippy::excessive_precision)]

/// erf(1) rounded to single precision (fdlibm's `erx`).
const ERX: f64 = 8.45062911510467529297e-01; // 0x3FEB0AC1, 0x60000000

// erf on [0, 0.84375]: erf(x) = x + x·P(x²)/Q(x²).
const PP0: f64 = 1.28379167095512558561e-01; // 0x3FC06EBA, 0x8214DB68
const PP1: f64 = -3.25042107247001499370e-01; // 0xBFD4CD7D, 0x691CB913
const PP2: f64 = -2.84817495755985104766e-02; // 0xBF9D2A51, 0xDBD7194F
const PP3: f64 = -5.77027029648944159157e-03; // 0xBF77A291, 0x236668E4
const PP4: f64 = -2.37630166566501626084e-05; // 0xBEF8EAD6, 0x120016AC
const QQ1: f64 = 3.97917223959155352819e-01; // 0x3FD97779, 0xCDDADC09
const QQ2: f64 = 6.50222499887672944485e-02; // 0x3FB0A54C, 0x5536CEBA
const QQ3: f64 = 5.08130628187576562776e-03; // 0x3F74D022, 0xC4D36B0F
const QQ4: f64 = 1.32494738004321644526e-04; // 0x3F215DC9, 0x221C1A10
const QQ5: f64 = -3.96022827877536812320e-06; // 0xBED09C43, 0x42A26120

// erf on [0.84375, 1.25]: erf(1 + s) = erx + P(s)/Q(s).
const PA0: f64 = -2.36211856075265944077e-03; // 0xBF6359B8, 0xBEF77538
const PA1: f64 = 4.14856118683748331666e-01; // 0x3FDA8D00, 0xAD92B34D
const PA2: f64 = -3.72207876035701323847e-01; // 0xBFD7D240, 0xFBB8C3F1
const PA3: f64 = 3.18346619901161753674e-01; // 0x3FD45FCA, 0x805120E4
const PA4: f64 = -1.10894694282396677476e-01; // 0xBFBC6398, 0x3D3E28EC
const PA5: f64 = 3.54783043256182359371e-02; // 0x3FA22A36, 0x599795EB
const PA6: f64 = -2.16637559486879084300e-03; // 0xBF61BF38, 0x0A96073F
const QA1: f64 = 1.06420880400844228286e-01; // 0x3FBB3E66, 0x18EEE323
const QA2: f64 = 5.40397917702171048937e-01; // 0x3FE14AF0, 0x92EB6F33
const QA3: f64 = 7.18286544141962662868e-02; // 0x3FB2635C, 0xD99FE9A7
const QA4: f64 = 1.26171219808761642112e-01; // 0x3FC02660, 0xE763351F
const QA5: f64 = 1.36370839120290507362e-02; // 0x3F8BEDC2, 0x6B51DD1C
const QA6: f64 = 1.19844998467991074170e-02; // 0x3F888B54, 0x5735151D

// erfc on [1.25, 1/0.35]: ln(x·erfc(x)) + x² + 0.5625 ≈ R(1/x²)/S(1/x²).
const RA0: f64 = -9.86494403484714822705e-03; // 0xBF843412, 0x600D6435
const RA1: f64 = -6.93858572707181764372e-01; // 0xBFE63416, 0xE4BA7360
const RA2: f64 = -1.05586262253232909814e+01; // 0xC0251E04, 0x41B0E726
const RA3: f64 = -6.23753324503260060396e+01; // 0xC04F300A, 0xE4CBA38D
const RA4: f64 = -1.62396669462573470355e+02; // 0xC0644CB1, 0x84282266
const RA5: f64 = -1.84605092906711035994e+02; // 0xC067135C, 0xEBCCABB2
const RA6: f64 = -8.12874355063065934246e+01; // 0xC0545265, 0x57E4D2F2
const RA7: f64 = -9.81432934416914548592e+00; // 0xC023A0EF, 0xC69AC25C
const SA1: f64 = 1.96512716674392571292e+01; // 0x4033A6B9, 0xBD707687
const SA2: f64 = 1.37657754143519042600e+02; // 0x4061350C, 0x526AE721
const SA3: f64 = 4.34565877475229228821e+02; // 0x407B290D, 0xD58A1A71
const SA4: f64 = 6.45387271733267880336e+02; // 0x40842B19, 0x21EC2868
const SA5: f64 = 4.29008140027567833386e+02; // 0x407AD021, 0x57700314
const SA6: f64 = 1.08635005541779435134e+02; // 0x405B28A3, 0xEE48AE2C
const SA7: f64 = 6.57024977031928170135e+00; // 0x401A47EF, 0x8E484A93
const SA8: f64 = -6.04244152148580987438e-02; // 0xBFAEEFF2, 0xEE749A62

// erfc on [1/0.35, ∞): the same form with R2/S2.
const RB0: f64 = -9.86494292470009928597e-03; // 0xBF843412, 0x39E86F4A
const RB1: f64 = -7.99283237680523006574e-01; // 0xBFE993BA, 0x70C285DE
const RB2: f64 = -1.77579549177547519889e+01; // 0xC031C209, 0x555F995A
const RB3: f64 = -1.60636384855821916062e+02; // 0xC064145D, 0x43C5ED98
const RB4: f64 = -6.37566443368389627722e+02; // 0xC083EC88, 0x1375F228
const RB5: f64 = -1.02509513161107724954e+03; // 0xC0900461, 0x6A2E5992
const RB6: f64 = -4.83519191608651397019e+02; // 0xC07E384E, 0x9BDC383F
const SB1: f64 = 3.03380607434824582924e+01; // 0x403E568B, 0x261D5190
const SB2: f64 = 3.25792512996573918826e+02; // 0x40745CAE, 0x221B9F0A
const SB3: f64 = 1.53672958608443695994e+03; // 0x409802EB, 0x189D5118
const SB4: f64 = 3.19985821950859553908e+03; // 0x40A8FFB7, 0x688C246A
const SB5: f64 = 2.55305040643316442583e+03; // 0x40A3F219, 0xCEDF3BE6
const SB6: f64 = 4.74528541206955367215e+02; // 0x407DA874, 0xE79FE763
const SB7: f64 = -2.24409524465858183362e+01; // 0xC03670E2, 0x42712D62

/// The high 32 bits of `x` with the sign cleared (fdlibm's `ix`).
fn high_word_abs(x: f64) -> u32 {
    ((x.to_bits() >> 32) as u32) & 0x7fff_ffff
}

/// `erfc(x)` for `0.84375 ≤ |x| < 1.25` and `x > 0`: `1 - erx - P(s)/Q(s)` with `s = |x| - 1`.
fn erfc_near_one(x: f64) -> f64 {
    let s = x.abs() - 1.0;
    let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
    let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
    1.0 - ERX - p / q
}

/// For `a = |x| ≥ 1.25`, the two parts of `ln erfc(a) + ln a`: `-z² - 0.5625` (exact, `z` is
/// `a` with its low word cleared) and the small correction `(z - a)(z + a) + R/S`.
fn log_tail_parts(a: f64) -> (f64, f64) {
    let s = 1.0 / (a * a);
    let (r, big_s) = if a < 1.0 / 0.35 {
        (
            RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7)))))),
            1.0 + s
                * (SA1
                    + s * (SA2
                        + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8))))))),
        )
    } else {
        (
            RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6))))),
            1.0 + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7)))))),
        )
    };
    let z = f64::from_bits(a.to_bits() & 0xffff_ffff_0000_0000);
    (-z * z - 0.5625, (z - a) * (z + a) + r / big_s)
}

/// `erfc(|x|)` for `|x| ≥ 1.25` (underflows to 0 past x ≈ 27.2).
fn erfc_tail(a: f64) -> f64 {
    let (big, small) = log_tail_parts(a);
    big.exp() * small.exp() / a
}

/// The complementary error function `erfc(x) = 1 - erf(x)`, to within about one ulp.
pub(crate) fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ix = high_word_abs(x);
    let negative = x.is_sign_negative();
    if ix < 0x3feb_0000 {
        // |x| < 0.84375
        if ix < 0x3c70_0000 {
            // |x| < 2^-56
            return 1.0 - x;
        }
        let z = x * x;
        let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
        let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
        let y = r / s;
        return if negative || ix < 0x3fd0_0000 {
            // x < 1/4
            1.0 - (x + x * y)
        } else {
            0.5 - (x - 0.5 + x * y)
        };
    }
    if ix < 0x3ff4_0000 {
        // 0.84375 ≤ |x| < 1.25
        let c = erfc_near_one(x);
        return if negative { 2.0 - c } else { c };
    }
    if negative {
        // erfc(x) = 2 - erfc(-x); past |x| = 6 that is 2 to the last bit.
        return if ix < 0x4018_0000 { 2.0 - erfc_tail(-x) } else { 2.0 };
    }
    if x.is_infinite() {
        return 0.0;
    }
    erfc_tail(x)
}

/// `ln erfc(x)`, accurate to about one ulp of `erfc` for every `x`, including where `erfc(x)`
/// itself underflows (`x > 27`): there it is `-x² - 0.5625 + R/S - ln x` in fdlibm's terms.
///
/// This is what Opacus computes as `ln 2 + log_ndtr(-√2·x)` with SciPy.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 1.25 {
        // erfc(x) ∈ (0.078, 2]: its logarithm is well conditioned.
        return erfc(x).ln();
    }
    if x.is_infinite() {
        return f64::NEG_INFINITY;
    }
    let (big, small) = log_tail_parts(x);
    big + small - x.ln()
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
        // Both branches meet at 1.25; and ln erfc must not jump where erfc turns subnormal.
        let below = erfc(1.25f64.next_down()).ln();
        let above = log_erfc(1.25);
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
