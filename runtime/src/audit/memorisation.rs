//! Memorisation by the criterion of Carlini et al. (USENIX Security 2023, "Extracting training
//! data from diffusion models"): a released record is a near copy when it is much closer to
//! its nearest training record than to its other close training records, i.e. when
//! `d₁ / mean(d₁ … d₅₀)` over its 50 nearest training records is small.

use ndarray::ArrayView2;
use serde::Serialize;

use crate::neighbours::nearest;

/// Training records in the neighbourhood the nearest distance is compared with.
pub const DEFAULT_NEIGHBOURS: usize = 50;
/// Ratio below which a released record counts as memorised.
pub const DEFAULT_THRESHOLD: f64 = 1.0 / 3.0;

/// One released record's closeness to the training records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorisationRow {
    /// Row of the released matrix.
    pub index: usize,
    /// Row of the training matrix nearest to it.
    pub nearest_train: usize,
    /// Euclidean distance to that training row.
    pub distance: f64,
    /// `distance` over the mean distance to its nearest training rows (0 for an exact copy).
    pub ratio: f64,
}

/// The memorisation check of a released set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memorisation {
    /// Every released row, lowest ratio first.
    pub rows: Vec<MemorisationRow>,
    /// Rows with a ratio below `threshold`.
    pub memorised: usize,
    /// The cut-off on the ratio.
    pub threshold: f64,
    /// Training rows in the neighbourhood (capped at the training set's size).
    pub neighbours: usize,
}

/// Scores every row of `released` against `train`: distance to the nearest training row over
/// the mean distance to its `neighbours` nearest ones ([`DEFAULT_NEIGHBOURS`]); rows whose
/// ratio is below `threshold` ([`DEFAULT_THRESHOLD`]) count as memorised.
pub fn memorisation(
    released: ArrayView2<f32>,
    train: ArrayView2<f32>,
    neighbours: usize,
    threshold: f64,
) -> Memorisation {
    assert!(
        neighbours >= 1 && train.nrows() > 0,
        "needs at least one training row and one neighbour"
    );
    let neighbours = neighbours.min(train.nrows());
    let mut rows: Vec<MemorisationRow> = nearest(released, train, neighbours)
        .into_iter()
        .enumerate()
        .map(|(index, list)| {
            let d1 = list[0].distance;
            let mean = list.iter().map(|n| n.distance).sum::<f64>() / list.len() as f64;
            MemorisationRow {
                index,
                nearest_train: list[0].index,
                distance: d1,
                ratio: if d1 == 0.0 { 0.0 } else { d1 / mean },
            }
        })
        .collect();
    rows.sort_by(|a, b| a.ratio.total_cmp(&b.ratio).then(a.index.cmp(&b.index)));
    let memorised = rows.iter().filter(|r| r.ratio < threshold).count();
    Memorisation { rows, memorised, threshold, neighbours }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::gaussian;
    use ndarray::array;

    #[test]
    fn ratio_matches_a_hand_computed_case() {
        // Distances from (0, 0) to the training rows: 1, 2, 3 → ratio 1 / 2 with 3 neighbours,
        // 1 / 1.5 with 2; the row (2, 0) sits on a training row.
        let train = array![[1.0f32, 0.0], [0.0, 2.0], [-3.0, 0.0]];
        let m = memorisation(
            array![[0.0f32, 0.0], [0.0, 2.0]].view(),
            train.view(),
            3,
            DEFAULT_THRESHOLD,
        );
        assert_eq!(
            m.rows[0],
            MemorisationRow { index: 1, nearest_train: 1, distance: 0.0, ratio: 0.0 }
        );
        assert_eq!(
            m.rows[1],
            MemorisationRow { index: 0, nearest_train: 0, distance: 1.0, ratio: 0.5 }
        );
        assert_eq!(m.memorised, 1);
        let m = memorisation(array![[0.0f32, 0.0]].view(), train.view(), 2, 0.7);
        assert!((m.rows[0].ratio - 1.0 / 1.5).abs() < 1e-12);
        assert_eq!((m.memorised, m.neighbours), (1, 2));
        // More neighbours than training rows: capped.
        assert_eq!(memorisation(array![[0.0f32, 0.0]].view(), train.view(), 50, 0.5).neighbours, 3);
    }

    #[test]
    fn a_near_copy_among_random_rows_is_flagged() {
        let train = gaussian(1000, 16, 0.0, 1.0, 1);
        let mut released = gaussian(200, 16, 0.0, 1.0, 2);
        released.row_mut(37).assign(&train.row(512).mapv(|v| v + 0.01));
        released.row_mut(90).assign(&train.row(3));
        let m = memorisation(released.view(), train.view(), DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD);
        assert_eq!(m.memorised, 2, "{:?}", &m.rows[..4]);
        assert_eq!((m.rows[0].index, m.rows[0].nearest_train, m.rows[0].ratio), (90, 3, 0.0));
        assert_eq!((m.rows[1].index, m.rows[1].nearest_train), (37, 512));
        assert!((m.rows[1].distance - 0.04).abs() < 1e-4, "{:?}", m.rows[1]);
        // Random rows lie well above the cut-off (in 16 dimensions distances concentrate).
        assert!(m.rows[2].ratio > 0.5, "{:?}", m.rows[2]);
        assert!(m.rows.windows(2).all(|w| w[0].ratio <= w[1].ratio));
    }
}
