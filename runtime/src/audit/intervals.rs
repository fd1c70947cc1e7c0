//! Confidence intervals and the normal distribution: Wilson score intervals for proportions,
//! percentile-bootstrap intervals for a difference of two accuracies, sample percentiles and
//! the standard normal CDF.

use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A point estimate with a confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The point estimate.
    pub estimate: f64,
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
}

impl Interval {
    /// Whether `x` lies within the bounds (inclusive).
    pub fn contains(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }
}

/// The Wilson score interval for `successes` out of `trials` at normal quantile `z` (1.96 for
/// 95 %); the estimate is the plain share `successes / trials`. With no trials: estimate 0 and
/// the interval [0, 1].
pub fn wilson(successes: usize, trials: usize, z: f64) -> Interval {
    assert!(successes <= trials, "{successes} successes out of {trials} trials");
    if trials == 0 {
        return Interval { estimate: 0.0, lower: 0.0, upper: 1.0 };
    }
    let (k, n, z2) = (successes as f64, trials as f64, z * z);
    let centre = (k + 0.5 * z2) / (n + z2);
    let half = z / (n + z2) * (k * (n - k) / n + 0.25 * z2).sqrt();
    Interval { estimate: k / n, lower: (centre - half).max(0.0), upper: (centre + half).min(1.0) }
}

/// The `q`-quantile (`0 ≤ q ≤ 1`) of `values`, interpolating linearly between order statistics
/// (NumPy's default). NaN for no values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    assert!((0.0..=1.0).contains(&q), "quantile {q} outside [0, 1]");
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = q * (sorted.len() - 1) as f64;
    let (below, above) = (at.floor() as usize, at.ceil() as usize);
    sorted[below] + (at - below as f64) * (sorted[above] - sorted[below])
}

/// How the two correctness vectors of [`bootstrap_accuracy_difference`] relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pairing {
    /// Both score the same test examples, in the same order: examples are resampled jointly.
    Paired,
    /// Different test sets: each vector is resampled on its own.
    Independent,
}

/// The difference `accuracy(a) − accuracy(b)` of two per-example correctness vectors, with its
/// percentile-bootstrap 95 % interval over `resamples` resamples drawn from a ChaCha8 generator
/// seeded with `seed`.
pub fn bootstrap_accuracy_difference(
    a: &[bool],
    b: &[bool],
    pairing: Pairing,
    resamples: usize,
    seed: u64,
) -> Interval {
    assert!(!a.is_empty() && !b.is_empty(), "empty correctness vector");
    assert!(resamples > 0, "no resamples");
    if pairing == Pairing::Paired {
        assert_eq!(a.len(), b.len(), "paired correctness vectors of different lengths");
    }
    let accuracy = |v: &[bool]| v.iter().filter(|&&c| c).count() as f64 / v.len() as f64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let differences: Vec<f64> = (0..resamples)
        .map(|_| {
            let (mut hits_a, mut hits_b) = (0usize, 0usize);
            match pairing {
                Pairing::Paired => {
                    for _ in 0..a.len() {
                        let i = rng.random_range(0..a.len());
                        hits_a += usize::from(a[i]);
                        hits_b += usize::from(b[i]);
                    }
                }
                Pairing::Independent => {
                    hits_a = (0..a.len()).filter(|_| a[rng.random_range(0..a.len())]).count();
                    hits_b = (0..b.len()).filter(|_| b[rng.random_range(0..b.len())]).count();
                }
            }
            hits_a as f64 / a.len() as f64 - hits_b as f64 / b.len() as f64
        })
        .collect();
    Interval {
        estimate: accuracy(a) - accuracy(b),
        lower: percentile(&differences, 0.025),
        upper: percentile(&differences, 0.975),
    }
}

/// The complementary error function, `erfc(x) = 1 − erf(x)`, by the Chebyshev fit of Numerical
/// Recipes (`erfcc`; relative error below 1.2 × 10⁻⁷ everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The standard normal cumulative distribution function, `Φ(x) = erfc(−x / √2) / 2`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_matches_known_intervals() {
        // 5/10 at z = 1.96: [0.2366, 0.7634]; 0/10: [0, z²/(n + z²)] = [0, 0.27754].
        let half = wilson(5, 10, 1.96);
        assert_eq!(half.estimate, 0.5);
        assert!(
            close(half.lower, 0.236_590, 1e-6) && close(half.upper, 0.763_410, 1e-6),
            "{half:?}"
        );
        let none = wilson(0, 10, 1.96);
        assert!(
            close(none.lower, 0.0, 1e-12) && close(none.upper, 3.8416 / 13.8416, 1e-12),
            "{none:?}"
        );
        let all = wilson(10, 10, 1.96);
        assert!(
            close(all.upper, 1.0, 1e-12) && close(all.lower, 1.0 - 3.8416 / 13.8416, 1e-12),
            "{all:?}"
        );
        // Wider with larger z, narrower with more trials.
        assert!(wilson(50, 100, 2.58).lower < wilson(50, 100, 1.96).lower);
        assert!(wilson(500, 1000, 1.96).lower > half.lower);
        assert_eq!(wilson(0, 0, 1.96), Interval { estimate: 0.0, lower: 0.0, upper: 1.0 });
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert!(close(percentile(&v, 0.05), 1.2, 1e-12));
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn normal_cdf_matches_reference_values() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_cdf(1.96), 0.975_002_104_851_779_5, 1e-7));
        assert!(close(normal_cdf(-1.0), 0.158_655_253_931_457_07, 1e-7));
        assert!(close(normal_cdf(-5.0), 2.866_515_718_791_939e-7, 1e-12));
        assert!(close(erfc(0.5), 0.479_500_122_186_953_5, 1e-7));
        assert!(close(erfc(-0.5), 1.520_499_877_813_046_5, 1e-7));
    }

    #[test]
    fn bootstrap_interval_has_the_normal_width_and_is_reproducible() {
        // Accuracies 0.8 and 0.7 on independent sets of 1000: the 95 % interval of the
        // difference is about ±1.96·√(0.16/1000 + 0.21/1000) = ±0.0377.
        let a: Vec<bool> = (0..1000).map(|i| i % 5 != 0).collect();
        let b: Vec<bool> = (0..1000).map(|i| i % 10 >= 3).collect();
        let ci = bootstrap_accuracy_difference(&a, &b, Pairing::Independent, 2000, 1);
        assert!(close(ci.estimate, 0.1, 1e-12));
        assert!(ci.contains(0.1) && !ci.contains(0.0), "{ci:?}");
        let half = (ci.upper - ci.lower) / 2.0;
        assert!(close(half, 0.0377, 0.004), "half width {half}");
        assert_eq!(ci, bootstrap_accuracy_difference(&a, &b, Pairing::Independent, 2000, 1));
        assert_ne!(ci, bootstrap_accuracy_difference(&a, &b, Pairing::Independent, 2000, 2));
    }

    #[test]
    fn paired_bootstrap_sees_identical_classifiers() {
        let a: Vec<bool> = (0..300).map(|i| i % 3 != 0).collect();
        let same = bootstrap_accuracy_difference(&a, &a, Pairing::Paired, 500, 3);
        assert_eq!(same, Interval { estimate: 0.0, lower: 0.0, upper: 0.0 });
        // Unpaired, the same vectors give a non-degenerate interval around 0.
        let unpaired = bootstrap_accuracy_difference(&a, &a, Pairing::Independent, 500, 3);
        assert!(unpaired.lower < -0.02 && unpaired.upper > 0.02, "{unpaired:?}");
        // b is right exactly where a is, plus 30 more examples: +0.1, with a narrow interval.
        let b: Vec<bool> = (0..300).map(|i| i % 3 != 0 || i < 90).collect();
        let diff = bootstrap_accuracy_difference(&b, &a, Pairing::Paired, 500, 4);
        assert!(
            close(diff.estimate, 0.1, 1e-12) && diff.lower > 0.05 && diff.upper < 0.15,
            "{diff:?}"
        );
    }
}
