//! Utility of a multi-label classifier: the area under the ROC curve per label, averaged over
//! the labels that have both positive and negative test examples (as the reference reported
//! for chest X-rays), and a paired bootstrap of the difference between two classifiers.

use ndarray::{ArrayView2, Axis};
use rand::{Rng, SeedableRng};

use super::intervals::{Interval, percentile};

/// The AUROC of `scores` for binary `labels` (Mann–Whitney form, ties counting half); `None`
/// when one class is absent.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks (1-based) over ties, summed over the positives.
    let (mut rank_sum, mut i) = (0.0f64, 0);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    (positives > 0.0 && negatives > 0.0)
        .then(|| (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Mean AUROC over the labels (columns) of `scores` `[n, L]` that have both classes among the
/// selected `rows` of `labels`; `None` when no label has.
pub fn mean_auroc(scores: ArrayView2<f32>, labels: ArrayView2<f32>, rows: &[usize]) -> Option<f64> {
    let per_label: Vec<f64> = (0..scores.ncols())
        .filter_map(|l| {
            let s: Vec<f32> = rows.iter().map(|&i| scores[[i, l]]).collect();
            let y: Vec<bool> = rows.iter().map(|&i| labels[[i, l]] >= 0.5).collect();
            auroc(&s, &y)
        })
        .collect();
    (!per_label.is_empty()).then(|| per_label.iter().sum::<f64>() / per_label.len() as f64)
}

/// `mean_auroc(a) − mean_auroc(b)` on the same test examples, with the percentile-bootstrap
/// 95 % interval over `resamples` paired resamples (ChaCha8 seeded with `seed`).
pub fn bootstrap_auroc_difference(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    labels: ArrayView2<f32>,
    resamples: usize,
    seed: u64,
) -> Option<Interval> {
    assert_eq!(a.dim(), b.dim(), "score matrices of different shapes");
    let n = labels.len_of(Axis(0));
    let all: Vec<usize> = (0..n).collect();
    let estimate = mean_auroc(a, labels, &all)? - mean_auroc(b, labels, &all)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let differences: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            let rows: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            Some(mean_auroc(a, labels, &rows)? - mean_auroc(b, labels, &rows)?)
        })
        .collect();
    (!differences.is_empty()).then(|| Interval {
        estimate,
        lower: percentile(&differences, 0.025),
        upper: percentile(&differences, 0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn hand_computed_auroc() {
        // Positives 0.8, 0.4; negatives 0.5, 0.1: 3 of 4 pairs ordered → 0.75.
        assert_eq!(auroc(&[0.8, 0.4, 0.5, 0.1], &[true, true, false, false]), Some(0.75));
        // A tie between a positive and a negative counts half.
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.5, 0.7], &[true, true]), None);
    }

    #[test]
    fn a_perfect_classifier_beats_a_random_one() {
        let labels =
            array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
        let perfect = labels.clone();
        let reversed = labels.mapv(|v| 1.0 - v);
        let all: Vec<usize> = (0..6).collect();
        assert_eq!(mean_auroc(perfect.view(), labels.view(), &all), Some(1.0));
        let d = bootstrap_auroc_difference(perfect.view(), reversed.view(), labels.view(), 200, 1)
            .unwrap();
        assert_eq!(d.estimate, 1.0);
        assert!(d.lower > 0.5 && d.upper <= 1.0, "{d:?}");
    }
}
