//! The decision rule: a candidate against its source, the references nearest to it and to
//! its source, and every image of its source's person; and the ranking of those that pass.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::{GateError, ReferenceSet, Reid, SELF_MARGIN};

/// The gate's decision on one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Whether the image may be released.
    pub passed: bool,
    /// The highest same-person probability against the references it was compared with.
    pub max_probability: f32,
    /// The reference that probability was against.
    pub closest_reference: Option<usize>,
    /// How many references it was compared with.
    pub compared: usize,
    /// Why it failed: the comparison that exceeded its threshold by the widest margin.
    pub rejection: Option<Rejection>,
}

/// The comparison that rejected an image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rejection {
    /// The reference the image re-identifies.
    pub reference: usize,
    /// Whether that reference is the image's own source or shows the source's person (else a
    /// neighbour).
    pub source: bool,
    /// The same-person probability.
    pub probability: f32,
    /// The threshold it reached (after the self-cap).
    pub threshold: f32,
}

/// Checks images by their embeddings (`[m, E]`): each is compared with `sources[i]` (the
/// reference it was drawn for, if any) and with the `k` nearest references to it and to its
/// source, all in one batched call of the head. It passes when the probability against its
/// source stays below the threshold and every other one below the neighbour threshold, each
/// threshold capped at the reference's probability against itself (so that no threshold can
/// let an exact copy through).
pub fn check(
    reid: &mut Reid,
    references: &ReferenceSet,
    embeddings: ArrayView2<f32>,
    sources: &[Option<usize>],
    k: usize,
) -> Result<Vec<Verdict>, GateError> {
    assert_eq!(embeddings.nrows(), sources.len(), "one source (or none) per image");
    let near_self = references.nearest(embeddings, k);
    let source_rows: Vec<usize> = sources.iter().flatten().copied().collect();
    let source_embeddings = ndarray::stack(
        Axis(0),
        &source_rows.iter().map(|&r| references.embedding(r)).collect::<Vec<_>>(),
    )
    .ok();
    let near_source = match &source_embeddings {
        Some(e) => references.nearest(e.view(), k),
        None => Vec::new(),
    };
    let mut near_source = near_source.into_iter();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let mut compare: Vec<usize> = source.iter().copied().collect();
        if let Some(s) = source {
            compare.extend(near_source.next().unwrap_or_default());
            compare.extend(&references.same_person[*s]);
        }
        compare.extend(&near_self[i]);
        compare.sort_unstable();
        compare.dedup();
        pairs.extend(compare.into_iter().map(|r| (i, r)));
    }
    let e = embeddings.ncols();
    let a = Array2::from_shape_fn((pairs.len(), e), |(p, j)| embeddings[[pairs[p].0, j]]);
    let b =
        Array2::from_shape_fn((pairs.len(), e), |(p, j)| references.embeddings[[pairs[p].1, j]]);
    let probabilities =
        if pairs.is_empty() { Array1::zeros(0) } else { reid.same_person(a.view(), b.view())? };
    // Each reference's probability against itself caps its thresholds: an exact copy of any
    // compared reference is flagged whatever the calibrated thresholds say.
    let mut compared: Vec<usize> = pairs.iter().map(|&(_, r)| r).collect();
    compared.sort_unstable();
    compared.dedup();
    let own = references.embeddings.select(Axis(0), &compared);
    let itself = if compared.is_empty() {
        Array1::zeros(0)
    } else {
        reid.same_person(own.view(), own.view())?
    };
    let cap =
        |r: usize| compared.binary_search(&r).map_or(f32::INFINITY, |k| itself[k] - SELF_MARGIN);
    let mut verdicts = vec![
        Verdict {
            passed: true,
            max_probability: 0.0,
            closest_reference: None,
            compared: 0,
            rejection: None
        };
        sources.len()
    ];
    for (&(i, r), &p) in pairs.iter().zip(&probabilities) {
        let v = &mut verdicts[i];
        v.compared += 1;
        if v.closest_reference.is_none() || p > v.max_probability {
            v.max_probability = p;
            v.closest_reference = Some(r);
        }
        let source = sources[i]
            .is_some_and(|s| s == r || references.same_person[s].binary_search(&r).is_ok());
        let threshold =
            if source { reid.threshold() } else { reid.neighbour_threshold() }.min(cap(r));
        if p >= threshold {
            v.passed = false;
            if v.rejection.is_none_or(|worst| p - threshold > worst.probability - worst.threshold) {
                v.rejection = Some(Rejection { reference: r, source, probability: p, threshold });
            }
        }
    }
    for v in &mut verdicts {
        // An image compared with nothing was not checked: it does not pass.
        v.passed &= v.compared > 0;
    }
    Ok(verdicts)
}

/// Mean binary cross-entropy of candidate probabilities `q` against the reference's `p`:
/// `−mean(p·ln q + (1 − p)·ln(1 − q))`, the selection criterion among passing candidates.
pub fn mean_bce(p: &[f32], q: &[f32]) -> f32 {
    const EPS: f32 = 1e-7;
    let total: f32 = p
        .iter()
        .zip(q)
        .map(|(&p, &q)| {
            let q = q.clamp(EPS, 1.0 - EPS);
            -(p * q.ln() + (1.0 - p) * (1.0 - q).ln())
        })
        .sum();
    total / p.len().max(1) as f32
}

/// Class probabilities from logits: softmax over a row for single-label data, independent
/// sigmoids for multi-label data.
pub fn probabilities(logits: ArrayView2<f32>, multi_label: bool) -> Array2<f32> {
    let mut out = logits.to_owned();
    for mut row in out.rows_mut() {
        if multi_label {
            row.mapv_inplace(|z| 1.0 / (1.0 + (-z).exp()));
        } else {
            let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            row.mapv_inplace(|z| (z - max).exp());
            let sum = row.sum();
            row.mapv_inplace(|v| v / sum);
        }
    }
    out
}

/// The candidates (rows of class probabilities) whose verdict passed, with their [`mean_bce`]
/// to the reference's probabilities, closest first.
pub fn rank(
    reference: &[f32],
    candidates: ArrayView2<f32>,
    verdicts: &[Verdict],
) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = candidates
        .rows()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| verdicts[*i].passed)
        .map(|(i, row)| (i, mean_bce(reference, &row.to_vec())))
        .collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn nearest_is_exact_and_ordered() {
        let refs = ReferenceSet::new(array![[0.0f32, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]);
        let q = array![[0.9f32, 0.1], [4.0, 4.0]];
        assert_eq!(refs.nearest(q.view(), 2), vec![vec![1, 0], vec![3, 2]]);
        assert_eq!(refs.nearest(q.view(), 9)[0].len(), 4);
        assert!(refs.nearest(q.view(), 0)[0].is_empty());
    }

    #[test]
    fn selection_prefers_the_closest_passing_candidate() {
        let reference = [0.9f32, 0.1];
        let candidates = array![[0.9f32, 0.1], [0.6, 0.4], [0.2, 0.8]];
        let pass = |passed| Verdict {
            passed,
            max_probability: 0.0,
            closest_reference: None,
            compared: 1,
            rejection: None,
        };
        let order = |v: &[Verdict]| {
            rank(&reference, candidates.view(), v).into_iter().map(|(i, _)| i).collect::<Vec<_>>()
        };
        assert_eq!(order(&[pass(true), pass(true), pass(true)]), vec![0, 1, 2]);
        assert_eq!(order(&[pass(false), pass(true), pass(true)]), vec![1, 2]);
        assert!(order(&[pass(false), pass(false), pass(false)]).is_empty());
        let p = probabilities(array![[0.0f32, 0.0], [10.0, -10.0]].view(), false);
        assert!((p[[0, 0]] - 0.5).abs() < 1e-6 && p[[1, 0]] > 0.99);
        assert!(mean_bce(&[1.0], &[0.0]).is_finite());
    }
}
