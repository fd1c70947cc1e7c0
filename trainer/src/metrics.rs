//! Sample-quality metrics: Fréchet distance between feature sets (the runtime's), pairwise
//! distances, nearest neighbours in pixel space, and ROC statistics.

use ndarray::ArrayView2;

pub use unpersonal_runtime::audit::frechet_distance;

/// Euclidean distance between two rows.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    unpersonal_runtime::neighbours::distance(a.into(), b.into())
}

/// Mean Euclidean distance over all pairs of distinct rows (0 for fewer than two rows).
pub fn mean_pairwise_distance(rows: ArrayView2<f32>) -> f64 {
    let n = rows.nrows();
    let mut total = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            total += distance(
                rows.row(i).as_slice().expect("contiguous"),
                rows.row(j).as_slice().expect("contiguous"),
            );
        }
    }
    let pairs = n * n.saturating_sub(1) / 2;
    if pairs == 0 { 0.0 } else { total / pairs as f64 }
}

/// For every row of `queries`, the index of the nearest row of `base` (Euclidean).
pub fn nearest_rows(queries: ArrayView2<f32>, base: ArrayView2<f32>) -> Vec<usize> {
    unpersonal_runtime::neighbours::nearest(queries, base, 1)
        .into_iter()
        .map(|list| list[0].index)
        .collect()
}

/// Area under the ROC curve of scores of positives against negatives: the probability that
/// a random positive scores above a random negative (ties count half).
pub fn roc_auc(positives: &[f32], negatives: &[f32]) -> f64 {
    let mut all: Vec<(f32, bool)> =
        positives.iter().map(|&s| (s, true)).chain(negatives.iter().map(|&s| (s, false))).collect();
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

/// The highest threshold at which at least `share` of `positives` score at or above it.
pub fn threshold_detecting(positives: &[f32], share: f64) -> f32 {
    let mut sorted = positives.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let missed = ((1.0 - share).max(0.0) * sorted.len() as f64).floor() as usize;
    sorted.get(missed).copied().unwrap_or(f32::NEG_INFINITY)
}

/// The smallest f32 above `v`.
fn next_up(v: f32) -> f32 {
    if v.is_nan() || v == f32::INFINITY {
        return v;
    }
    let bits = v.to_bits();
    let next = if v == 0.0 {
        1
    } else if v > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

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
    fn the_detecting_threshold_keeps_the_asked_share() {
        let positives: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let t = threshold_detecting(&positives, 0.99);
        assert_eq!(t, 1.0);
        assert_eq!(positives.iter().filter(|&&s| s >= t).count(), 99);
        assert_eq!(threshold_detecting(&positives, 1.0), 0.0);
        assert_eq!(threshold_detecting(&[], 0.5), f32::NEG_INFINITY);
    }

    #[test]
    fn pairwise_and_nearest() {
        let rows = array![[0.0f32, 0.0], [3.0, 4.0], [0.0, 4.0]];
        assert!((mean_pairwise_distance(rows.view()) - (5.0 + 4.0 + 3.0) / 3.0).abs() < 1e-9);
        let queries = array![[2.9f32, 4.2], [0.1, -0.1]];
        assert_eq!(nearest_rows(queries.view(), rows.view()), vec![1, 0]);
    }
}
