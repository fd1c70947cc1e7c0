//! Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019): each feature set stands
//! for a manifold, the union of balls around its rows whose radius is the distance to the
//! row's `k`-th nearest other row. Precision is the share of generated rows inside the real
//! manifold (fidelity), recall the share of real rows inside the generated one (coverage).

use ndarray::ArrayView2;
use serde::Serialize;

use crate::neighbours::{distance, for_each_squared_distance, nearest, squared_norms};

/// The neighbourhood size of Kynkäänniemi et al.
pub const DEFAULT_K: usize = 3;

/// Precision and recall of a generated feature set against a real one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrecisionRecall {
    /// Share of generated rows inside the real manifold.
    pub precision: f64,
    /// Share of real rows inside the generated manifold.
    pub recall: f64,
    /// The neighbourhood size used for the radii.
    pub k: usize,
}

/// For every row of `x`, the distance to its `k`-th nearest other row of `x`.
pub fn knn_radii(x: ArrayView2<f32>, k: usize) -> Vec<f64> {
    assert!(k >= 1 && k < x.nrows(), "k = {k} needs more than k rows, got {}", x.nrows());
    nearest(x, x, k + 1)
        .into_iter()
        .enumerate()
        .map(|(i, list)| {
            // Drop the row itself (or, if a duplicate of it came first, the farthest).
            let others: Vec<f64> = match list.iter().position(|n| n.index == i) {
                Some(at) => list
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != at)
                    .map(|(_, n)| n.distance)
                    .collect(),
                None => list[..k].iter().map(|n| n.distance).collect(),
            };
            others[k - 1]
        })
        .collect()
}

/// The share of `queries` rows that lie within the radius of at least one `manifold` row
/// (`radii[j]` for row `j`, boundary included).
pub fn share_inside(queries: ArrayView2<f32>, manifold: ArrayView2<f32>, radii: &[f64]) -> f64 {
    assert_eq!(manifold.nrows(), radii.len(), "one radius per manifold row");
    if queries.nrows() == 0 {
        return f64::NAN;
    }
    let squared: Vec<f32> = radii.iter().map(|&r| (r * r) as f32).collect();
    let (query_norms, manifold_norms) = (squared_norms(queries), squared_norms(manifold));
    let mut inside = vec![false; queries.nrows()];
    for_each_squared_distance(queries, manifold, |q, j, d2| {
        // Near the boundary, where the products' rounding could decide, compare exactly.
        let rounding = 1e-5 * (query_norms[q] + manifold_norms[j]);
        if !inside[q] && d2 <= squared[j] + rounding {
            inside[q] =
                d2 < squared[j] - rounding || distance(queries.row(q), manifold.row(j)) <= radii[j];
        }
    });
    inside.iter().filter(|&&i| i).count() as f64 / queries.nrows() as f64
}

/// Precision and recall of `generated` against `real` with neighbourhood size `k`
/// ([`DEFAULT_K`] is 3).
pub fn precision_recall(
    real: ArrayView2<f32>,
    generated: ArrayView2<f32>,
    k: usize,
) -> PrecisionRecall {
    let precision = share_inside(generated, real, &knn_radii(real, k));
    let recall = share_inside(real, generated, &knn_radii(generated, k));
    PrecisionRecall { precision, recall, k }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::gaussian;
    use ndarray::array;

    #[test]
    fn radii_exclude_the_row_itself() {
        let x = array![[0.0f32], [1.0], [3.0], [7.0]];
        assert_eq!(knn_radii(x.view(), 1), vec![1.0, 1.0, 2.0, 4.0]);
        assert_eq!(knn_radii(x.view(), 2), vec![3.0, 2.0, 3.0, 6.0]);
        // A duplicate is another row at distance 0.
        assert_eq!(knn_radii(array![[2.0f32], [2.0], [5.0]].view(), 1), vec![0.0, 0.0, 3.0]);
    }

    #[test]
    fn hand_computed_one_dimensional_case() {
        // Real 0, 1, 2, 3 with k = 1: every radius is 1. Generated 0.5 and 3.9 fall inside,
        // −1.5 and 10 do not: precision 1/2. The generated radii (2, 2, 3.4, 6.1) cover all
        // real rows: recall 1.
        let real = array![[0.0f32], [1.0], [2.0], [3.0]];
        let generated = array![[0.5f32], [10.0], [3.9], [-1.5]];
        let pr = precision_recall(real.view(), generated.view(), 1);
        assert_eq!((pr.precision, pr.recall), (0.5, 1.0));
    }

    #[test]
    fn identical_sets_are_fully_precise_and_complete() {
        let x = gaussian(300, 8, 0.0, 1.0, 1);
        let pr = precision_recall(x.view(), x.view(), DEFAULT_K);
        assert_eq!((pr.precision, pr.recall, pr.k), (1.0, 1.0, 3));
    }

    #[test]
    fn far_away_sets_score_zero() {
        let pr = precision_recall(
            gaussian(200, 8, 0.0, 1.0, 1).view(),
            gaussian(200, 8, 100.0, 1.0, 2).view(),
            DEFAULT_K,
        );
        assert_eq!((pr.precision, pr.recall), (0.0, 0.0));
    }

    #[test]
    fn mode_collapse_keeps_precision_and_loses_recall() {
        let real = gaussian(400, 4, 0.0, 1.0, 1);
        // All generated rows near the origin, where the real data are dense.
        let collapsed = gaussian(400, 4, 0.0, 0.1, 2);
        let pr = precision_recall(real.view(), collapsed.view(), DEFAULT_K);
        assert!(pr.precision > 0.95, "{pr:?}");
        assert!(pr.recall < 0.3, "{pr:?}");
        // Another sample of the real distribution scores high on both.
        let fresh = precision_recall(real.view(), gaussian(400, 4, 0.0, 1.0, 3).view(), DEFAULT_K);
        assert!(fresh.precision > 0.6 && fresh.recall > 0.6, "{fresh:?}");
    }
}
