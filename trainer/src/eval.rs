//! Evaluation of an exported classifier on a labelled dataset.

use serde::Serialize;

use crate::data::{Dataset, Normalization, epoch_batches};
use crate::engine::HostTensor;

/// Classification quality on a dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Accuracy {
    /// Correct predictions (single-label: arg-max; multi-label: per-label sign of the logit).
    pub correct: usize,
    /// Predictions made.
    pub total: usize,
    /// Sum over images of the training loss: cross-entropy (single-label), or the mean over
    /// labels of the binary cross-entropy (multi-label).
    pub loss_sum: f64,
    /// Images seen.
    pub images: usize,
}

impl Accuracy {
    /// Share of correct predictions.
    pub fn rate(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }

    /// Mean loss per image (the held-out loss that selects a classifier's weights).
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }

    /// Adds the predictions for one batch of `logits[n, k]` against `labels[n, k]`.
    pub fn add(&mut self, logits: &[f32], labels: &[f32], k: usize, multi_label: bool) {
        for (l, y) in logits.chunks_exact(k).zip(labels.chunks_exact(k)) {
            self.images += 1;
            if multi_label {
                self.correct += l.iter().zip(y).filter(|(l, y)| (**l > 0.0) == (**y > 0.5)).count();
                self.total += k;
                let bce: f64 =
                    l.iter().zip(y).map(|(&l, &y)| softplus(l as f64) - (y * l) as f64).sum();
                self.loss_sum += bce / k as f64;
            } else {
                self.correct += (argmax(l) == argmax(y)) as usize;
                self.total += 1;
                let max = l.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                let log_sum = max + l.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
                let mass: f64 = y.iter().map(|&y| y as f64).sum();
                let dot: f64 = l.iter().zip(y).map(|(&l, &y)| (l * y) as f64).sum();
                self.loss_sum += mass * log_sum - dot;
            }
        }
    }
}

/// `ln(1 + eˣ)`, without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// Accuracy of a model given as a closure from an image batch to logits.
pub fn accuracy(
    data: &Dataset,
    norm: Normalization,
    batch: usize,
    mut logits: impl FnMut(&HostTensor) -> anyhow::Result<HostTensor>,
) -> anyhow::Result<Accuracy> {
    let mut acc = Accuracy::default();
    for b in epoch_batches(data, batch, norm) {
        let input =
            HostTensor { shape: vec![b.n, data.channels, data.height, data.width], data: b.images };
        let out = logits(&input)?;
        anyhow::ensure!(
            out.data.iter().all(|v| v.is_finite()),
            "the model produced NaN or infinite logits"
        );
        acc.add(&out.data, &b.labels, data.num_labels, data.multi_label);
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::Accuracy;

    #[test]
    fn loss_is_cross_entropy_or_mean_binary_cross_entropy() {
        let mut single = Accuracy::default();
        // Two classes, logits (0, ln 3): p = (1/4, 3/4); the label is the first class.
        single.add(&[0.0, 3f32.ln()], &[1.0, 0.0], 2, false);
        assert!((single.loss() - 4f64.ln()).abs() < 1e-6, "{}", single.loss());
        assert_eq!((single.correct, single.total, single.images), (0, 1, 1));

        let mut multi = Accuracy::default();
        // Logit 0 costs ln 2 whatever the label; logit ln 3 against label 1 costs ln(4/3).
        multi.add(&[0.0, 3f32.ln(), 0.0, 0.0], &[1.0, 1.0, 0.0, 1.0], 2, true);
        let expected = ((2f64.ln() + (4.0f64 / 3.0).ln()) / 2.0 + 2f64.ln()) / 2.0;
        assert!((multi.loss() - expected).abs() < 1e-6, "{} vs {expected}", multi.loss());
        assert_eq!((multi.correct, multi.total, multi.images), (2, 4, 2));
    }
}
