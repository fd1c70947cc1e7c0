//! Exact nearest neighbours by Euclidean distance, found with matrix products over blocks of
//! rows and reported with distances recomputed directly in `f64`, so that an exact copy is at
//! distance 0. The gate's reference search and the audit's statistics both use it.

use ndarray::{ArrayView1, ArrayView2, s};
use serde::Serialize;

/// One neighbour of a query row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Neighbour {
    /// Row of the reference matrix.
    pub index: usize,
    /// Euclidean distance to the query row.
    pub distance: f64,
}

/// Query rows per block.
const QUERY_BLOCK: usize = 1024;
/// Reference rows per block.
const REFERENCE_BLOCK: usize = 8192;

/// Euclidean distance between two rows, accumulated in `f64`.
pub fn distance(a: ArrayView1<f32>, b: ArrayView1<f32>) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>().sqrt()
}

/// Squared norms of the rows of `x`.
pub(crate) fn squared_norms(x: ArrayView2<f32>) -> Vec<f32> {
    x.rows().into_iter().map(|r| r.dot(&r)).collect()
}

/// Calls `visit(q, r, d²)` for every pair of a row `q` of `queries` and a row `r` of
/// `reference`, with `d²` the squared distance from matrix products (`f32`, may be slightly
/// off, never negative), block by block.
pub(crate) fn for_each_squared_distance(
    queries: ArrayView2<f32>,
    reference: ArrayView2<f32>,
    mut visit: impl FnMut(usize, usize, f32),
) {
    assert_eq!(queries.ncols(), reference.ncols(), "rows of different widths");
    let query_norms = squared_norms(queries);
    let reference_norms = squared_norms(reference);
    for q0 in (0..queries.nrows()).step_by(QUERY_BLOCK) {
        let q1 = (q0 + QUERY_BLOCK).min(queries.nrows());
        for r0 in (0..reference.nrows()).step_by(REFERENCE_BLOCK) {
            let r1 = (r0 + REFERENCE_BLOCK).min(reference.nrows());
            let products = queries.slice(s![q0..q1, ..]).dot(&reference.slice(s![r0..r1, ..]).t());
            for ((dq, dr), &p) in products.indexed_iter() {
                let (q, r) = (q0 + dq, r0 + dr);
                visit(q, r, (query_norms[q] + reference_norms[r] - 2.0 * p).max(0.0));
            }
        }
    }
}

/// For every row of `queries`, its `k` nearest rows of `reference` (fewer if `reference` has
/// fewer rows), nearest first.
pub fn nearest(
    queries: ArrayView2<f32>,
    reference: ArrayView2<f32>,
    k: usize,
) -> Vec<Vec<Neighbour>> {
    let k = k.min(reference.nrows());
    let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(k + 1); queries.nrows()];
    if k > 0 {
        for_each_squared_distance(queries, reference, |q, r, d2| {
            let list = &mut best[q];
            if list.len() < k || d2 < list[list.len() - 1].0 {
                let at = list.partition_point(|&(s, _)| s <= d2);
                list.insert(at, (d2, r));
                list.truncate(k);
            }
        });
    }
    best.into_iter()
        .enumerate()
        .map(|(q, list)| {
            let mut found: Vec<Neighbour> = list
                .into_iter()
                .map(|(_, r)| Neighbour {
                    index: r,
                    distance: distance(queries.row(q), reference.row(r)),
                })
                .collect();
            found.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.index.cmp(&b.index)));
            found
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    #[test]
    fn nearest_matches_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let queries = Array2::from_shape_fn((40, 5), |_| rng.random_range(-3.0f32..3.0));
        let reference = Array2::from_shape_fn((60, 5), |_| rng.random_range(-3.0f32..3.0));
        let found = nearest(queries.view(), reference.view(), 4);
        for (q, list) in found.iter().enumerate() {
            let mut all: Vec<(f64, usize)> =
                (0..60).map(|r| (distance(queries.row(q), reference.row(r)), r)).collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert_eq!(
                list.iter().map(|n| n.index).collect::<Vec<_>>(),
                all[..4].iter().map(|a| a.1).collect::<Vec<_>>()
            );
            assert!((list[0].distance - all[0].0).abs() < 1e-12);
        }
    }

    #[test]
    fn copies_are_at_distance_zero_and_k_is_capped() {
        let reference = array![[100.0f32, 200.0], [0.0, 0.0], [3.0, 4.0]];
        let found = nearest(array![[3.0f32, 4.0]].view(), reference.view(), 10);
        assert_eq!(found[0].len(), 3);
        assert_eq!(found[0][0], Neighbour { index: 2, distance: 0.0 });
        assert_eq!(found[0][1], Neighbour { index: 1, distance: 5.0 });
        assert!(nearest(array![[1.0f32, 1.0]].view(), reference.view(), 0)[0].is_empty());
    }
}
