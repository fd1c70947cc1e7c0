//! Sample-quality metrics: Fréchet distance between feature sets, pairwise distances, and
//! nearest neighbours in pixel space.

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use ndarray::{Array1, ArrayView2, Axis, s};

/// Mean and covariance (divided by n − 1) of the rows of `x`.
fn moments(x: ArrayView2<f32>) -> (DVector<f64>, DMatrix<f64>) {
    let (n, d) = x.dim();
    let mean = x.mapv(f64::from).mean_axis(Axis(0)).expect("at least one row");
    let centred = DMatrix::from_fn(n, d, |i, j| f64::from(x[[i, j]]) - mean[j]);
    let cov = centred.transpose() * &centred / (n.max(2) - 1) as f64;
    (DVector::from_iterator(d, mean.iter().copied()), cov)
}

/// Square root of a symmetric positive semi-definite matrix (negative eigenvalues, which
/// only rounding makes, count as zero).
fn sqrt_psd(m: DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(m);
    let roots = eigen.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// The Fréchet distance between Gaussians fitted to the rows of `a` and of `b`:
/// `‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2(Σ_a^{½} Σ_b Σ_a^{½})^{½})`.
pub fn frechet_distance(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    assert_eq!(a.ncols(), b.ncols(), "feature sets of different widths");
    let (mu_a, cov_a) = moments(a);
    let (mu_b, cov_b) = moments(b);
    let root_a = sqrt_psd(cov_a.clone());
    let middle = &root_a * &cov_b * &root_a;
    let middle = (&middle + middle.transpose()) * 0.5;
    let cross: f64 = SymmetricEigen::new(middle).eigenvalues.iter().map(|v| v.max(0.0).sqrt()).sum();
    (mu_a - mu_b).norm_squared() + cov_a.trace() + cov_b.trace() - 2.0 * cross
}

/// Euclidean distance between two rows.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt()
}

/// Mean Euclidean distance over all pairs of distinct rows (0 for fewer than two rows).
pub fn mean_pairwise_distance(rows: ArrayView2<f32>) -> f64 {
    let n = rows.nrows();
    let mut total = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            total += distance(rows.row(i).as_slice().expect("contiguous"), rows.row(j).as_slice().expect("contiguous"));
        }
    }
    let pairs = n * n.saturating_sub(1) / 2;
    if pairs == 0 { 0.0 } else { total / pairs as f64 }
}

/// For every row of `queries`, the index of the nearest row of `base` (Euclidean), computed as
/// `argmin ‖b‖² − 2 q·b` with matrix products over blocks of `base`.
pub fn nearest_rows(queries: ArrayView2<f32>, base: ArrayView2<f32>) -> Vec<usize> {
    let base_norms: Array1<f32> = base.rows().into_iter().map(|r| r.dot(&r)).collect();
    let mut best = vec![(f32::INFINITY, 0usize); queries.nrows()];
    const BLOCK: usize = 4096;
    for start in (0..base.nrows()).step_by(BLOCK) {
        let end = (start + BLOCK).min(base.nrows());
        let products = queries.dot(&base.slice(s![start..end, ..]).t());
        for (q, row) in products.rows().into_iter().enumerate() {
            for (k, &p) in row.iter().enumerate() {
                let score = base_norms[start + k] - 2.0 * p;
                if score < best[q].0 {
                    best[q] = (score, start + k);
                }
            }
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// Area under the ROC curve of scores of positives against negatives: the probability that
/// a random positive scores above a random negative (ties count half).
pub fn roc_auc(positives: &[f32], negatives: &[f32]) -> f64 {
    let mut all: Vec<(f32, bool)> = positives.iter().map(|&s| (s, true)).chain(negatives.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the (average, for ties) ranks of the positives: Mann–Whitney U.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += average_rank * all[i..j].iter().filter(|(_, p)| *p).count() as f64;
        i = j;
    }
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// The threshold at which at most a fraction `fpr` of the negatives score at or above it (the
/// smallest score strictly above the negatives' `1 − fpr` quantile), and the fraction of the
/// positives that reach it.
pub fn tpr_at_fpr(positives: &[f32], negatives: &[f32], fpr: f64) -> (f64, f32) {
    let mut neg = negatives.to_vec();
    neg.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * neg.len() as f64).floor() as usize;
    let threshold = match neg.get(allowed) {
        Some(&v) => next_up(v),
        None => f32::NEG_INFINITY,
    };
    let hits = positives.iter().filter(|&&s| s >= threshold).count();
    (hits as f64 / positives.len().max(1) as f64, threshold)
}

/// The smallest f32 above `v`.
fn next_up(v: f32) -> f32 {
    if v.is_nan() || v == f32::INFINITY {
        return v;
    }
    let bits = v.to_bits();
    let next = if v == 0.0 { 1 } else if v > 0.0 { bits + 1 } else { bits - 1 };
    f32::from_bits(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    fn gaussian(n: usize, d: usize, shift: f32, scale: f32, seed: u64) -> Array2<f32> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((n, d), |_| {
            let z: f32 = StandardNormal.sample(&mut rng);
            shift + scale * z
        })
    }

    #[test]
    fn frechet_distance_matches_the_closed_form_for_isotropic_gaussians() {
        // N(0, I) vs N(m·1, s²I) in d dimensions: d·m² + d·(1 − s)².
        let (d, m, sc) = (4, 0.5f32, 2.0f32);
        let a = gaussian(20_000, d, 0.0, 1.0, 1);
        let b = gaussian(20_000, d, m, sc, 2);
        let expected = d as f64 * (m as f64).powi(2) + d as f64 * (1.0 - sc as f64).powi(2);
        let fd = frechet_distance(a.view(), b.view());
        assert!((fd - expected).abs() < 0.1 * expected, "FD {fd}, expected {expected}");
        let same = frechet_distance(a.view(), gaussian(20_000, d, 0.0, 1.0, 3).view());
        assert!(same < 0.01, "two samples of one distribution: {same}");
    }

    #[test]
    fn roc_auc_and_operating_points() {
        assert_eq!(roc_auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(roc_auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(roc_auc(&[1.0], &[1.0]), 0.5);
        assert!((roc_auc(&[2.0, 4.0], &[1.0, 3.0]) - 0.75).abs() < 1e-12);
        let negatives: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let (tpr, threshold) = tpr_at_fpr(&[50.0, 98.5, 99.5, 120.0], &negatives, 0.01);
        assert!(threshold > 98.0 && threshold <= 99.0, "{threshold}");
        assert_eq!(negatives.iter().filter(|&&n| n >= threshold).count(), 1);
        assert_eq!(tpr, 0.75);
    }

    #[test]
    fn pairwise_and_nearest() {
        let rows = array![[0.0f32, 0.0], [3.0, 4.0], [0.0, 4.0]];
        assert!((mean_pairwise_distance(rows.view()) - (5.0 + 4.0 + 3.0) / 3.0).abs() < 1e-9);
        let queries = array![[2.9f32, 4.2], [0.1, -0.1]];
        assert_eq!(nearest_rows(queries.view(), rows.view()), vec![1, 0]);
    }
}
