//! Distance to closest record (DCR): how close released records lie to the training records,
//! compared with how close records the model never saw (a holdout set) lie to them.
//!
//! A model that copies its training data puts released records nearer to training records
//! than fresh records of the same distribution are: `dcr_ratio` falls below 1 and the one-sided
//! Mann–Whitney test rejects.

use ndarray::ArrayView2;
use serde::Serialize;

use super::intervals::{normal_cdf, percentile};
use crate::neighbours::nearest;

/// The one-sided Mann–Whitney U test of "x is stochastically smaller than y".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MannWhitney {
    /// `U` of the first sample: pairs `(xᵢ, yⱼ)` with `xᵢ > yⱼ`, ties counting half.
    pub u: f64,
    /// The normal approximation's statistic, with continuity and tie corrections.
    pub z: f64,
    /// `Φ(z)`: small when x is smaller than y.
    pub p_value: f64,
}

/// The DCR comparison of released and holdout records against the training records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dcr {
    /// 5th percentile of the released records' distances to their closest training record.
    pub released_p5: f64,
    /// 5th percentile of the holdout records' distances to their closest training record.
    pub holdout_p5: f64,
    /// `released_p5 / holdout_p5` (infinite or NaN when `holdout_p5` is 0).
    pub dcr_ratio: f64,
    /// Median distance of the released records.
    pub released_median: f64,
    /// Median distance of the holdout records.
    pub holdout_median: f64,
    /// Are released distances smaller than holdout distances?
    pub test: MannWhitney,
}

/// For every row of `queries`, the Euclidean distance to its closest row of `reference`
/// (exact, by brute force).
pub fn closest_record_distances(queries: ArrayView2<f32>, reference: ArrayView2<f32>) -> Vec<f64> {
    assert!(reference.nrows() > 0, "no reference records");
    nearest(queries, reference, 1).into_iter().map(|n| n[0].distance).collect()
}

/// Compares the distances to the closest `train` row of the `released` rows with those of the
/// `holdout` rows (same features, one row per record).
pub fn dcr(released: ArrayView2<f32>, holdout: ArrayView2<f32>, train: ArrayView2<f32>) -> Dcr {
    dcr_of_distances(
        &closest_record_distances(released, train),
        &closest_record_distances(holdout, train),
    )
}

/// [`dcr`] from the distances already found: each released and each holdout record's distance
/// to its closest training record.
pub fn dcr_of_distances(released_d: &[f64], holdout_d: &[f64]) -> Dcr {
    let (released_p5, holdout_p5) = (percentile(released_d, 0.05), percentile(holdout_d, 0.05));
    Dcr {
        released_p5,
        holdout_p5,
        dcr_ratio: released_p5 / holdout_p5,
        released_median: percentile(released_d, 0.5),
        holdout_median: percentile(holdout_d, 0.5),
        test: mann_whitney_less(released_d, holdout_d),
    }
}

/// The Mann–Whitney U test of the alternative "`x` is stochastically smaller than `y`", by the
/// normal approximation with tie and continuity corrections (SciPy's
/// `mannwhitneyu(x, y, alternative="less", method="asymptotic")`).
pub fn mann_whitney_less(x: &[f64], y: &[f64]) -> MannWhitney {
    assert!(!x.is_empty() && !y.is_empty(), "empty sample");
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let mut all: Vec<(f64, bool)> =
        x.iter().map(|&v| (v, true)).chain(y.iter().map(|&v| (v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mid-ranks (1-based) of each run of ties; sum of x's ranks and Σ(t³ − t).
    let (mut rank_sum_x, mut ties) = (0.0, 0.0);
    let mut start = 0;
    while start < all.len() {
        let end = start + all[start..].iter().take_while(|a| a.0 == all[start].0).count();
        let t = (end - start) as f64;
        let mid_rank = (start + end + 1) as f64 / 2.0;
        rank_sum_x += mid_rank * all[start..end].iter().filter(|a| a.1).count() as f64;
        ties += t * t * t - t;
        start = end;
    }
    let u = rank_sum_x - nx * (nx + 1.0) / 2.0;
    let n = nx + ny;
    let mean = nx * ny / 2.0;
    let variance = nx * ny / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let z = if variance > 0.0 { (u - mean + 0.5) / variance.sqrt() } else { 0.0 };
    MannWhitney { u, z, p_value: if variance > 0.0 { normal_cdf(z) } else { 1.0 } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::gaussian;
    use ndarray::array;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn mann_whitney_matches_hand_computed_values() {
        // No ties: U = 0, σ² = 9/12·7, z = (0 − 4.5 + 0.5)/σ = −1.745743, p = Φ(z) = 0.040428.
        let t = mann_whitney_less(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert_eq!(t.u, 0.0);
        assert!((t.z + 1.745_743_121_887_939).abs() < 1e-12, "{t:?}");
        assert!((t.p_value - 0.040_427_799_185).abs() < 1e-7, "{t:?}");
        // One tie of three: ranks 1, 3, 3 | 3, 5, 6, U = 1, σ² = 9/12·(7 − 24/30).
        let t = mann_whitney_less(&[1.0, 2.0, 2.0], &[2.0, 3.0, 4.0]);
        assert_eq!(t.u, 1.0);
        assert!((t.z + 1.391_216_687_280_504_7).abs() < 1e-12, "{t:?}");
        assert!((t.p_value - 0.082_079_864_239).abs() < 1e-7, "{t:?}");
        // The opposite direction: x larger than y.
        let t = mann_whitney_less(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]);
        assert_eq!(t.u, 9.0);
        assert!(t.p_value > 0.95);
    }

    #[test]
    fn mann_whitney_p_values_for_equal_and_shifted_samples() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut draw = |n: usize, shift: f64| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    shift + z
                })
                .collect()
        };
        let (a, b) = (draw(2000, 0.0), draw(2000, 0.0));
        let same = mann_whitney_less(&a, &b);
        assert!(same.p_value > 0.01 && same.p_value < 0.99, "{same:?}");
        assert!((same.u / (2000.0 * 2000.0) - 0.5).abs() < 0.02);
        // A sample against itself: U = n²/2 exactly, z = 0.5/σ (the continuity correction).
        let itself = mann_whitney_less(&a, &a);
        assert_eq!(itself.u, 2000.0 * 2000.0 / 2.0);
        assert!(itself.p_value > 0.5 && itself.p_value < 0.501, "{itself:?}");
        let shifted = mann_whitney_less(&draw(2000, -0.3), &b);
        assert!(shifted.p_value < 1e-12, "{shifted:?}");
        // All values equal: no evidence either way.
        assert_eq!(mann_whitney_less(&[1.0; 4], &[1.0; 5]).p_value, 1.0);
    }

    #[test]
    fn closest_record_distances_are_exact() {
        let train = array![[0.0f32, 0.0], [10.0, 0.0]];
        let d = closest_record_distances(
            array![[3.0f32, 4.0], [10.0, 0.0], [11.0, 0.0]].view(),
            train.view(),
        );
        assert_eq!(d, vec![5.0, 0.0, 1.0]);
    }

    #[test]
    fn dcr_flags_copies_and_not_fresh_samples() {
        let train = gaussian(500, 4, 0.0, 1.0, 1);
        let holdout = gaussian(500, 4, 0.0, 1.0, 2);
        let fresh = dcr(gaussian(500, 4, 0.0, 1.0, 3).view(), holdout.view(), train.view());
        assert!(fresh.dcr_ratio > 0.7 && fresh.dcr_ratio < 1.4, "{fresh:?}");
        assert!(fresh.test.p_value > 0.01, "{fresh:?}");
        // Half of the release copies training records (with a little noise).
        let mut leaky = gaussian(500, 4, 0.0, 1.0, 3);
        for i in 0..250 {
            let row = train.row(i).mapv(|v| v + 1e-3);
            leaky.row_mut(i).assign(&row);
        }
        let leak = dcr(leaky.view(), holdout.view(), train.view());
        assert!(leak.released_p5 < 0.003 && leak.dcr_ratio < 0.05, "{leak:?}");
        assert!(leak.test.p_value < 1e-10, "{leak:?}");
        assert!(leak.released_median < leak.holdout_median);
    }
}
