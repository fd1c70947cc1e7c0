//! What training the denoiser needs besides the network: the pseudo-conditions (features of
//! every training image, computed once by the exported features model and cached), and the
//! random part of each step (noise levels, noise, condition dropout, mirroring), drawn on the
//! host from the seed and the step so that a resumed run repeats an uninterrupted one.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::augment::hflip;
use crate::data::batch::mix;
use crate::data::{Batch, Dataset, Normalization, epoch_batches};
use crate::engine::{self, HostTensor, SessionConfig, State};
use crate::train::Feed;

/// Per-image condition vectors: of each training image, and of its mirror image when the
/// data allows horizontal flips.
#[derive(Clone, Debug)]
pub struct Features {
    /// Length of one vector.
    pub dim: usize,
    /// `[n, dim]`, row `i` for training image `i`.
    pub plain: Vec<f32>,
    /// `[n, dim]` for the mirrored images, when flips are used.
    pub mirrored: Option<Vec<f32>>,
}

impl Features {
    /// The condition of image `index`, mirrored or not.
    pub fn row(&self, index: usize, mirrored: bool) -> &[f32] {
        let table = match (&self.mirrored, mirrored) {
            (Some(m), true) => m,
            _ => &self.plain,
        };
        &table[index * self.dim..(index + 1) * self.dim]
    }
}

/// A features model (ONNX with input `image` and output `features`) run by ONNX Runtime.
pub struct Extractor<'a> {
    /// ONNX Runtime.
    pub env: &'a ort::environment::Environment,
    /// The model's ONNX bytes.
    pub model: &'a [u8],
    /// How its session runs.
    pub session: &'a SessionConfig,
}

impl Extractor<'_> {
    /// The features of every image of `data`, and of every mirrored image if `mirrored`.
    pub fn compute(
        &self,
        data: &Dataset,
        norm: Normalization,
        mirrored: bool,
    ) -> anyhow::Result<Features> {
        let mut session = engine::session(self.env, self.model, self.session)
            .context("ONNX Runtime cannot load the features model")?;
        let (c, h, w) = (data.channels, data.height, data.width);
        let mut run = |images: Vec<f32>, n: usize| -> anyhow::Result<HostTensor> {
            let x = HostTensor { shape: vec![n, c, h, w], data: images };
            let mut out = engine::run(&mut session, &[("image", &x)])?;
            let f =
                out.remove("features").context("the features model has no `features` output")?;
            anyhow::ensure!(
                f.shape.len() == 2 && f.shape[0] == n,
                "features output has shape {:?}, expected [{n}, D]",
                f.shape
            );
            anyhow::ensure!(
                f.data.iter().all(|v| v.is_finite()),
                "the features model produced NaN or infinite values"
            );
            Ok(f)
        };
        let (mut plain, mut flipped, mut dim) = (Vec::new(), Vec::new(), 0);
        for batch in epoch_batches(data, 500, norm) {
            if mirrored {
                let mut images = batch.images.clone();
                images
                    .chunks_exact_mut(c * h * w)
                    .flat_map(|img| img.chunks_exact_mut(h * w))
                    .for_each(|p| hflip(p, w));
                flipped.extend(run(images, batch.n)?.data);
            }
            let f = run(batch.images, batch.n)?;
            dim = f.shape[1];
            plain.extend(f.data);
        }
        Ok(Features { dim, plain, mirrored: mirrored.then_some(flipped) })
    }

    /// [`Extractor::compute`], cached in `path`: reused when the cache was made by the same
    /// model bytes from the same data, recomputed (and rewritten atomically) otherwise.
    pub fn cached(
        &self,
        path: &Path,
        data: &Dataset,
        norm: Normalization,
        mirrored: bool,
    ) -> anyhow::Result<Features> {
        let key = HashMap::from([
            ("features_sha256".to_string(), crate::bundle::sha256_hex(self.model)),
            ("data".to_string(), format!("{} ({} images)", data.name, data.len())),
            ("mirrored".to_string(), mirrored.to_string()),
        ]);
        if let Ok((meta, mut tensors)) = checkpoint::load_tensors(path)
            && key.iter().all(|(k, v)| meta.get(k) == Some(v))
            && let Some(plain) = tensors.remove("plain")
            && plain.shape.len() == 2
            && plain.shape[0] == data.len()
        {
            let mirrored = tensors.remove("mirrored").map(|t| t.data);
            return Ok(Features { dim: plain.shape[1], plain: plain.data, mirrored });
        }
        let features = self.compute(data, norm, mirrored)?;
        let shape = vec![data.len(), features.dim];
        let mut tensors = State::new();
        tensors.insert(
            "plain".into(),
            HostTensor { shape: shape.clone(), data: features.plain.clone() },
        );
        if let Some(m) = &features.mirrored {
            tensors.insert("mirrored".into(), HostTensor { shape, data: m.clone() });
        }
        checkpoint::save_tensors(path, &tensors, key)?;
        Ok(features)
    }
}

/// How the noise level and the condition of a training row are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdmTraining {
    /// Mean of ln σ.
    pub p_mean: f32,
    /// Standard deviation of ln σ.
    pub p_std: f32,
    /// Probability that a row is unconditional (mask 0, zero condition).
    pub p_uncond: f32,
    /// Mirror rows at random (only where the data allows flips).
    pub hflip: bool,
}

impl Default for EdmTraining {
    fn default() -> Self {
        EdmTraining { p_mean: -1.2, p_std: 1.2, p_uncond: 0.1, hflip: true }
    }
}

/// Stream of the per-step draws, distinct from the batcher's shuffle and augmentation streams.
const EDM_STREAM: u64 = 3;
/// Stream of one image's draws under [`DenoiserFeed::per_image`] (4 is the DP lots').
const EDM_IMAGE_STREAM: u64 = 5;

/// The denoiser's [`Feed`]: `image`, `noise`, `sigma`, `condition`, `condition_mask`.
pub struct DenoiserFeed<'a> {
    /// Conditions of the training images.
    pub features: &'a Features,
    /// Noise and dropout distribution.
    pub edm: EdmTraining,
    /// Run seed.
    pub seed: u64,
    /// Image shape `[C, H, W]`.
    pub image: [usize; 3],
    /// Draw each image's flip, noise level, dropout and noise from its own stream, seeded by
    /// (seed, step, dataset row), instead of one stream for the batch. An image's draws then do
    /// not depend on which other images share its batch, as DP-SGD's per-patient sensitivity
    /// needs (the seed is public: it is in the bundle).
    pub per_image: bool,
}

impl Feed for DenoiserFeed<'_> {
    fn feed(&self, batch: &Batch, step: u64) -> Vec<Vec<f32>> {
        let [c, h, w] = self.image;
        let size = c * h * w;
        let mut batch_rng = ChaCha8Rng::seed_from_u64(mix(self.seed, EDM_STREAM, step, 0));
        let mut images = batch.images.clone();
        let mut sigma = Vec::with_capacity(batch.n);
        let mut condition = Vec::with_capacity(batch.n * self.features.dim);
        let mut mask = Vec::with_capacity(batch.n);
        let mut noise: Vec<f32> = Vec::with_capacity(images.len());
        for (i, &index) in batch.indices.iter().enumerate() {
            let mut own;
            let rng = if self.per_image {
                own =
                    ChaCha8Rng::seed_from_u64(mix(self.seed, EDM_IMAGE_STREAM, step, index as u64));
                &mut own
            } else {
                &mut batch_rng
            };
            let flip = self.edm.hflip && self.features.mirrored.is_some() && rng.random::<bool>();
            if flip {
                images[i * size..(i + 1) * size].chunks_exact_mut(h * w).for_each(|p| hflip(p, w));
            }
            let z: f32 = rng.sample(StandardNormal);
            sigma.push((self.edm.p_mean + self.edm.p_std * z).exp());
            let keep = rng.random::<f32>() >= self.edm.p_uncond;
            mask.push(if keep { 1.0 } else { 0.0 });
            let row = self.features.row(index, flip);
            condition.extend(row.iter().map(|&v| if keep { v } else { 0.0 }));
            if self.per_image {
                noise.extend((0..size).map(|_| rng.sample::<f32, _>(StandardNormal)));
            }
        }
        if !self.per_image {
            noise.extend((0..images.len()).map(|_| batch_rng.sample::<f32, _>(StandardNormal)));
        }
        vec![images, noise, sigma, condition, mask]
    }
}

/// Noise levels of the validation loss, spanning the sampler's range.
pub const VALIDATION_SIGMAS: [f32; 6] = [0.02, 0.1, 0.3, 1.0, 3.0, 10.0];

/// The EDM loss `λ(σ)·mean((D − y)²)` of an exported denoiser at each of
/// [`VALIDATION_SIGMAS`], on conditional rows with fixed noise (seed 0): a training-free
/// measure that is comparable across checkpoints.
pub fn validation_loss(
    session: &mut ort::session::Session,
    images: &HostTensor,
    conditions: &HostTensor,
    sigma_data: f32,
) -> anyhow::Result<Vec<f32>> {
    let n = images.shape[0];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut losses = Vec::new();
    for &s in &VALIDATION_SIGMAS {
        let noisy: Vec<f32> =
            images.data.iter().map(|&y| y + s * rng.sample::<f32, _>(StandardNormal)).collect();
        let x = HostTensor { shape: images.shape.clone(), data: noisy };
        let sigma = HostTensor { shape: vec![n], data: vec![s; n] };
        let mask = HostTensor { shape: vec![n], data: vec![1.0; n] };
        let inputs =
            [("x", &x), ("sigma", &sigma), ("condition", conditions), ("condition_mask", &mask)];
        let out = engine::run(session, &inputs)?
            .remove("denoised")
            .context("the denoiser has no `denoised` output")?;
        let mse =
            out.data.iter().zip(&images.data).map(|(d, y)| ((d - y) as f64).powi(2)).sum::<f64>()
                / out.data.len() as f64;
        let weight = (s * s + sigma_data * sigma_data) / (s * sigma_data).powi(2);
        losses.push((mse * weight as f64) as f32);
    }
    Ok(losses)
}
