//! Augmentations that keep an image's meaning: small translations, horizontal flips where
//! the data allows them, brightness and contrast jitter. They act in place on normalised
//! `[c, h, w]` images and allocate nothing.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Normalization;

/// Random augmentation of normalised images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Maximum translation in pixels along each axis: pad with background (the normalised
    /// value of byte 0) and crop at a random offset in `-shift..=shift`.
    pub shift: usize,
    /// Flip horizontally with probability ½ (only where the dataset allows it).
    pub hflip: bool,
    /// Additive brightness jitter range ±, in normalised units.
    pub brightness: f32,
    /// Multiplicative contrast jitter range ± around the image mean (0.1 → ×[0.9, 1.1]).
    pub contrast: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Augment::none()
    }
}

/// Whether a jitter range is in use (positive and finite; anything else disables it).
fn active(range: f32) -> bool {
    range.is_finite() && range > 0.0
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Augment { shift: 0, hflip: false, brightness: 0.0, contrast: 0.0 }
    }

    /// Whether [`Augment::apply`] leaves every image unchanged.
    pub fn is_identity(&self) -> bool {
        self.shift == 0 && !self.hflip && !active(self.brightness) && !active(self.contrast)
    }

    /// Augments one normalised `[c, h, w]` image in place, padding shifted-in pixels with −1
    /// (byte 0 under [`Normalization::SYMMETRIC`]) and flipping if `self.hflip`. Callers that
    /// know the dataset and its normalisation use [`Augment::apply_with`].
    pub fn apply(&self, img: &mut [f32], c: usize, h: usize, w: usize, rng: &mut impl Rng) {
        self.apply_with(img, (c, h, w), Normalization::SYMMETRIC.apply(0), true, rng);
    }

    /// Augments one normalised `[c, h, w]` image in place: `background` fills pixels shifted
    /// in, and flips happen only if `allow_hflip` (the dataset allows them) and `self.hflip`.
    /// The random draws depend only on `rng`, so a seeded `rng` gives a reproducible result.
    pub fn apply_with(
        &self,
        img: &mut [f32],
        dims: (usize, usize, usize),
        background: f32,
        allow_hflip: bool,
        rng: &mut impl Rng,
    ) {
        let (c, h, w) = dims;
        let plane = h * w;
        if plane == 0 || img.is_empty() {
            return;
        }
        let len = (c * plane).min(img.len());
        let img = &mut img[..len];
        let max = self.shift.min(h.max(w)) as i64;
        let (dy, dx) = if max > 0 {
            (rng.random_range(-max..=max), rng.random_range(-max..=max))
        } else {
            (0, 0)
        };
        let (dy, dx) = (dy as isize, dx as isize);
        let flip = allow_hflip && self.hflip && rng.random::<bool>();
        if flip || dy != 0 || dx != 0 {
            for p in img.chunks_mut(plane) {
                transform_plane(p, w, dy, dx, flip, background);
            }
        }
        if active(self.contrast) {
            let factor = 1.0 + rng.random_range(-self.contrast..=self.contrast);
            let mean = img.iter().sum::<f32>() / img.len() as f32;
            img.iter_mut().for_each(|v| *v = mean + (*v - mean) * factor);
        }
        if active(self.brightness) {
            let delta = rng.random_range(-self.brightness..=self.brightness);
            img.iter_mut().for_each(|v| *v += delta);
        }
    }
}

/// Mirrors every row of a `[c, h, w]` image (deterministic; its own inverse).
pub fn hflip(img: &mut [f32], w: usize) {
    if w > 0 {
        img.chunks_mut(w).for_each(<[f32]>::reverse);
    }
}

/// Flips (optionally), then moves one `[h, w]` plane by `dy` rows and `dx` columns:
/// `out[y][x] = in[y − dy][x − dx]`, `background` where that lies outside.
fn transform_plane(p: &mut [f32], w: usize, dy: isize, dx: isize, flip: bool, background: f32) {
    if flip {
        hflip(p, w);
    }
    shift_slice(p, dy * w as isize, background);
    if dx != 0 {
        p.chunks_mut(w).for_each(|row| shift_slice(row, dx, background));
    }
}

/// Moves the elements of `v` by `k` places (towards the end if positive), filling vacated
/// places with `fill`.
fn shift_slice(v: &mut [f32], k: isize, fill: f32) {
    let n = v.len();
    let m = k.unsigned_abs().min(n);
    if k > 0 {
        v.copy_within(..n - m, m);
        v[..m].fill(fill);
    } else if k < 0 {
        v.copy_within(m.., 0);
        v[n - m..].fill(fill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A test image whose values are all distinct and none is the background (−1).
    fn ramp(len: usize) -> Vec<f32> {
        (0..len).map(|i| i as f32 / 100.0).collect()
    }

    #[test]
    fn none_is_the_identity() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let original = ramp(2 * 5 * 4);
        for aug in
            [Augment::none(), Augment { brightness: f32::NAN, contrast: -1.0, ..Augment::none() }]
        {
            assert!(aug.is_identity());
            let mut img = original.clone();
            aug.apply(&mut img, 2, 5, 4, &mut rng);
            assert_eq!(img, original);
        }
    }

    #[test]
    fn hflip_twice_is_the_identity_and_mirrors_rows() {
        let original = ramp(2 * 2 * 3);
        let mut img = original.clone();
        hflip(&mut img, 3);
        assert_eq!(&img[..6], &[0.02, 0.01, 0.0, 0.05, 0.04, 0.03]);
        hflip(&mut img, 3);
        assert_eq!(img, original);
    }

    #[test]
    fn random_flip_mirrors_or_keeps_and_only_where_allowed() {
        let aug = Augment { hflip: true, ..Augment::none() };
        let original = ramp(6);
        let mut mirrored = original.clone();
        hflip(&mut mirrored, 3);
        let mut flips = 0;
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..40 {
            let mut img = original.clone();
            aug.apply(&mut img, 1, 2, 3, &mut rng);
            assert!(img == original || img == mirrored, "{img:?}");
            flips += usize::from(img == mirrored);
            let mut img = original.clone();
            aug.apply_with(&mut img, (1, 2, 3), -1.0, false, &mut rng);
            assert_eq!(img, original);
        }
        assert!((5..=35).contains(&flips), "{flips} flips in 40");
    }

    /// The offset `(dy, dx)` that explains `out` as a translation of `src` (`bg` outside).
    fn find_shift(
        src: &[f32],
        out: &[f32],
        (c, h, w): (usize, usize, usize),
        max: isize,
        bg: f32,
    ) -> Option<(isize, isize)> {
        let explains = |dy: isize, dx: isize| {
            (0..c * h * w).all(|i| {
                let (ch, y, x) = (i / (h * w), (i / w % h) as isize, (i % w) as isize);
                let (sy, sx) = (y - dy, x - dx);
                let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                out[i] == if inside { src[ch * h * w + sy as usize * w + sx as usize] } else { bg }
            })
        };
        (-max..=max)
            .flat_map(|dy| (-max..=max).map(move |dx| (dy, dx)))
            .find(|&(dy, dx)| explains(dy, dx))
    }

    #[test]
    fn shift_is_a_translation_within_the_padded_image() {
        let dims = (2, 5, 4);
        let original = ramp(40);
        let aug = Augment { shift: 2, ..Augment::none() };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut img = original.clone();
            aug.apply_with(&mut img, dims, -7.0, true, &mut rng);
            let offset = find_shift(&original, &img, dims, 2, -7.0);
            assert!(offset.is_some(), "{img:?} is no translation by at most 2 pixels");
            seen.insert(offset);
        }
        assert_eq!(seen.len(), 25, "every offset in -2..=2 × -2..=2 occurs");
    }

    #[test]
    fn shift_and_flip_compose_and_huge_shifts_are_safe() {
        let dims = (1, 3, 3);
        let original = ramp(9);
        let mut mirrored = original.clone();
        hflip(&mut mirrored, 3);
        let aug = Augment { shift: 1, hflip: true, ..Augment::none() };
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..50 {
            let mut img = original.clone();
            aug.apply_with(&mut img, dims, -1.0, true, &mut rng);
            let plain = find_shift(&original, &img, dims, 1, -1.0);
            assert!(
                plain.is_some() || find_shift(&mirrored, &img, dims, 1, -1.0).is_some(),
                "{img:?}"
            );
        }
        let huge = Augment { shift: usize::MAX, ..Augment::none() };
        let mut img = original.clone();
        huge.apply(&mut img, 1, 3, 3, &mut rng);
        assert!(img.iter().all(|v| *v == -1.0 || original.contains(v)));
    }

    #[test]
    fn brightness_adds_and_contrast_scales_around_the_mean() {
        let original = ramp(12);
        let mean = original.iter().sum::<f32>() / 12.0;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let bright = Augment { brightness: 0.2, ..Augment::none() };
        let mut img = original.clone();
        bright.apply(&mut img, 1, 3, 4, &mut rng);
        let delta = img[0] - original[0];
        assert!(delta.abs() <= 0.2 && delta != 0.0);
        assert!(img.iter().zip(&original).all(|(a, b)| (a - b - delta).abs() < 1e-6));

        let contrast = Augment { contrast: 0.1, ..Augment::none() };
        let mut img = original.clone();
        contrast.apply(&mut img, 1, 3, 4, &mut rng);
        let factor = (img[11] - img[0]) / (original[11] - original[0]);
        assert!((0.9..=1.1).contains(&factor) && factor != 1.0, "{factor}");
        assert!((img.iter().sum::<f32>() / 12.0 - mean).abs() < 1e-5);
    }

    #[test]
    fn seeded_rngs_reproduce_the_augmentation() {
        let aug = Augment { shift: 2, hflip: true, brightness: 0.1, contrast: 0.1 };
        let run = |seed| {
            let mut img = ramp(3 * 6 * 6);
            aug.apply(&mut img, 3, 6, 6, &mut ChaCha8Rng::seed_from_u64(seed));
            img
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
