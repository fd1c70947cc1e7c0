//! Evaluation of an exported classifier on a labelled dataset.

use serde::Serialize;

use crate::data::{Dataset, Normalization, epoch_batches};
use crate::engine::HostTensor;

/// Classification quality on a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    /// Correct predictions (single-label: arg-max; multi-label: per-label sign of the logit).
    pub correct: usize,
    /// Predictions made.
    pub total: usize,
}

impl Accuracy {
    /// Share of correct predictions.
    pub fn rate(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }

    /// Adds the predictions for one batch of `logits[n, k]` against `labels[n, k]`.
    pub fn add(&mut self, logits: &[f32], labels: &[f32], k: usize, multi_label: bool) {
        for (l, y) in logits.chunks_exact(k).zip(labels.chunks_exact(k)) {
            if multi_label {
                self.correct += l.iter().zip(y).filter(|(l, y)| (**l > 0.0) == (**y > 0.5)).count();
                self.total += k;
            } else {
                self.correct += (argmax(l) == argmax(y)) as usize;
                self.total += 1;
            }
        }
    }
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
    let mut acc = Accuracy { correct: 0, total: 0 };
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
