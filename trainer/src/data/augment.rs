//! Augmentations that keep an image's meaning: small shifts, horizontal flips where the data
//! allows them, brightness and contrast jitter.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Random augmentation, applied to normalised images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Maximum translation in pixels along each axis (pad with background, random crop).
    pub shift: usize,
    /// Flip horizontally with probability ½ (only where the dataset allows it).
    pub hflip: bool,
    /// Additive brightness jitter range ±, in normalised units.
    pub brightness: f32,
    /// Multiplicative contrast jitter range ± around the image mean (0.1 → ×[0.9, 1.1]).
    pub contrast: f32,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Augment { shift: 0, hflip: false, brightness: 0.0, contrast: 0.0 }
    }

    /// Augments one `[c, h, w]` image in place; `background` fills pixels shifted in.
    pub fn apply(&self, img: &mut [f32], (c, h, w): (usize, usize, usize), background: f32, allow_flip: bool, rng: &mut impl Rng) {
        let s = self.shift as i64;
        let (dy, dx) = if s > 0 { (rng.random_range(-s..=s) as isize, rng.random_range(-s..=s) as isize) } else { (0, 0) };
        let flip = allow_flip && self.hflip && rng.random::<bool>();
        if dy != 0 || dx != 0 || flip {
            let src = img.to_vec();
            for ch in 0..c {
                let plane = &src[ch * h * w..(ch + 1) * h * w];
                for y in 0..h {
                    for x in 0..w {
                        let sx = if flip { w - 1 - x } else { x } as isize - dx;
                        let sy = y as isize - dy;
                        let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                        img[ch * h * w + y * w + x] = if inside { plane[sy as usize * w + sx as usize] } else { background };
                    }
                }
            }
        }
        if self.contrast > 0.0 {
            let factor = 1.0 + rng.random_range(-self.contrast..=self.contrast);
            let mean = img.iter().sum::<f32>() / img.len() as f32;
            img.iter_mut().for_each(|v| *v = mean + (*v - mean) * factor);
        }
        if self.brightness > 0.0 {
            let delta = rng.random_range(-self.brightness..=self.brightness);
            img.iter_mut().for_each(|v| *v += delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn none_is_the_identity_and_shift_only_moves_pixels() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let original: Vec<f32> = (0..2 * 5 * 4).map(|i| i as f32).collect();
        let mut img = original.clone();
        Augment::none().apply(&mut img, (2, 5, 4), -1.0, true, &mut rng);
        assert_eq!(img, original);

        let aug = Augment { shift: 2, ..Augment::none() };
        for _ in 0..20 {
            let mut img = original.clone();
            aug.apply(&mut img, (2, 5, 4), -1.0, false, &mut rng);
            assert!(img.iter().all(|v| *v == -1.0 || original.contains(v)));
        }
    }

    #[test]
    fn flip_mirrors_rows_and_only_where_allowed() {
        let aug = Augment { hflip: true, ..Augment::none() };
        let original: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let mut flipped_once = false;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for _ in 0..20 {
            let mut img = original.clone();
            aug.apply(&mut img, (1, 2, 3), 0.0, true, &mut rng);
            assert!(img == original || img == vec![2., 1., 0., 5., 4., 3.], "{img:?}");
            flipped_once |= img != original;
            let mut img = original.clone();
            aug.apply(&mut img, (1, 2, 3), 0.0, false, &mut rng);
            assert_eq!(img, original);
        }
        assert!(flipped_once);
    }
}
