//! Strong augmentations for re-identification pairs: two independent draws of the same image
//! must still be recognised as "the same person". Geometry (shift, rotation, scale and a
//! smooth grid warp, resampled bilinearly), photometry (brightness, contrast), blur, noise and
//! a small occlusion, on normalised `[c, h, w]` images.

use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Ranges of the strong augmentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Strong {
    /// Maximum translation in pixels.
    pub shift: f32,
    /// Maximum rotation in degrees.
    pub rotate: f32,
    /// Maximum relative scale change (0.1 → ×[0.9, 1.1]).
    pub scale: f32,
    /// Maximum displacement of the grid warp in pixels.
    pub warp: f32,
    /// Additive brightness range ±, normalised units.
    pub brightness: f32,
    /// Multiplicative contrast range ± around the mean.
    pub contrast: f32,
    /// Probability of a 3×3 Gaussian blur.
    pub blur: f32,
    /// Maximum standard deviation of additive Gaussian noise, normalised units.
    pub noise: f32,
    /// Probability of an occluding rectangle (background-filled, up to a quarter of each side).
    pub occlude: f32,
}

impl Default for Strong {
    fn default() -> Self {
        Strong {
            shift: 3.0,
            rotate: 10.0,
            scale: 0.1,
            warp: 1.0,
            brightness: 0.2,
            contrast: 0.25,
            blur: 0.3,
            noise: 0.25,
            occlude: 0.25,
        }
    }
}

/// A uniform draw in `[-range, range]` (0 when the range is not positive).
fn uniform(rng: &mut impl Rng, range: f32) -> f32 {
    if range > 0.0 { rng.random_range(-range..=range) } else { 0.0 }
}

/// Bilinear sample of an `[h, w]` plane at (y, x); `background` outside.
fn bilinear(p: &[f32], h: usize, w: usize, y: f32, x: f32, background: f32) -> f32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let at = |yy: f32, xx: f32| {
        if yy < 0.0 || xx < 0.0 || yy >= h as f32 || xx >= w as f32 {
            background
        } else {
            p[yy as usize * w + xx as usize]
        }
    };
    let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1.0) * fx;
    let bottom = at(y0 + 1.0, x0) * (1.0 - fx) + at(y0 + 1.0, x0 + 1.0) * fx;
    top * (1.0 - fy) + bottom * fy
}

impl Strong {
    /// No edit at all: every image is drawn as it is.
    pub const NONE: Strong = Strong {
        shift: 0.0,
        rotate: 0.0,
        scale: 0.0,
        warp: 0.0,
        brightness: 0.0,
        contrast: 0.0,
        blur: 0.0,
        noise: 0.0,
        occlude: 0.0,
    };

    /// Augments one normalised `[c, h, w]` image in place; `background` is the normalised value
    /// of an empty pixel. The draws depend only on `rng`.
    pub fn apply(
        &self,
        img: &mut [f32],
        (c, h, w): (usize, usize, usize),
        background: f32,
        rng: &mut impl Rng,
    ) {
        let plane = h * w;
        let (dy, dx) = (uniform(rng, self.shift), uniform(rng, self.shift));
        let angle = uniform(rng, self.rotate).to_radians();
        let zoom = 1.0 + uniform(rng, self.scale);
        // A coarse 3×3 grid of random displacements, interpolated bilinearly: a smooth warp.
        let grid: Vec<(f32, f32)> =
            (0..9).map(|_| (uniform(rng, self.warp), uniform(rng, self.warp))).collect();
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        let (sin, cos) = angle.sin_cos();
        let source: Vec<(f32, f32)> = (0..plane)
            .map(|i| {
                let (y, x) = ((i / w) as f32, (i % w) as f32);
                let (gy, gx) =
                    (2.0 * y / (h as f32 - 1.0).max(1.0), 2.0 * x / (w as f32 - 1.0).max(1.0));
                let (gy0, gx0) = ((gy.floor() as usize).min(1), (gx.floor() as usize).min(1));
                let (ty, tx) = (gy - gy0 as f32, gx - gx0 as f32);
                let g = |r: usize, q: usize| grid[(gy0 + r) * 3 + gx0 + q];
                let lerp = |sel: fn((f32, f32)) -> f32| {
                    let top = sel(g(0, 0)) * (1.0 - tx) + sel(g(0, 1)) * tx;
                    let bottom = sel(g(1, 0)) * (1.0 - tx) + sel(g(1, 1)) * tx;
                    top * (1.0 - ty) + bottom * ty
                };
                let (wy, wx) = (lerp(|d| d.0), lerp(|d| d.1));
                // Inverse map: output pixel → source position.
                let (ry, rx) = (y - cy - dy, x - cx - dx);
                let sy = (cos * ry + sin * rx) / zoom + cy + wy;
                let sx = (-sin * ry + cos * rx) / zoom + cx + wx;
                (sy, sx)
            })
            .collect();
        for p in img.chunks_mut(plane).take(c) {
            let original = p.to_vec();
            for (v, &(sy, sx)) in p.iter_mut().zip(&source) {
                *v = bilinear(&original, h, w, sy, sx, background);
            }
        }
        if rng.random::<f32>() < self.blur {
            let sigma: f32 = rng.random_range(0.5..1.0);
            let k = [(-0.5 / (sigma * sigma)).exp(), 1.0, (-0.5 / (sigma * sigma)).exp()];
            let norm: f32 = k.iter().sum();
            for p in img.chunks_mut(plane).take(c) {
                blur_plane(p, h, w, [k[0] / norm, k[1] / norm, k[2] / norm]);
            }
        }
        let contrast = 1.0 + uniform(rng, self.contrast);
        let brightness = uniform(rng, self.brightness);
        let mean = img.iter().sum::<f32>() / img.len().max(1) as f32;
        let noise = if self.noise > 0.0 { rng.random_range(0.0..self.noise) } else { 0.0 };
        for v in img.iter_mut() {
            let z: f32 = rng.sample(StandardNormal);
            *v = mean + (*v - mean) * contrast + brightness + noise * z;
        }
        if rng.random::<f32>() < self.occlude {
            let (oh, ow) =
                (rng.random_range(1..=(h / 4).max(1)), rng.random_range(1..=(w / 4).max(1)));
            let (oy, ox) = (rng.random_range(0..=h - oh), rng.random_range(0..=w - ow));
            for p in img.chunks_mut(plane).take(c) {
                for y in oy..oy + oh {
                    p[y * w + ox..y * w + ox + ow].fill(background);
                }
            }
        }
    }
}

/// Separable 3-tap blur of an `[h, w]` plane, edges clamped.
fn blur_plane(p: &mut [f32], h: usize, w: usize, k: [f32; 3]) {
    let tap = |v: &[f32], i: usize, n: usize, stride: usize, base: usize| {
        let prev = base + i.saturating_sub(1) * stride;
        let next = base + (i + 1).min(n - 1) * stride;
        k[0] * v[prev] + k[1] * v[base + i * stride] + k[2] * v[next]
    };
    let rows: Vec<f32> = (0..h * w).map(|i| tap(p, i % w, w, 1, (i / w) * w)).collect();
    for (i, v) in p.iter_mut().enumerate() {
        *v = tap(&rows, i / w, h, w, i % w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn image() -> Vec<f32> {
        (0..28 * 28)
            .map(|i| {
                if (8..20).contains(&(i / 28)) && (10..18).contains(&(i % 28)) { 1.0 } else { -1.0 }
            })
            .collect()
    }

    #[test]
    fn the_identity_setting_changes_nothing_and_draws_are_reproducible() {
        let none = Strong::NONE;
        let mut img = image();
        none.apply(&mut img, (1, 28, 28), -1.0, &mut ChaCha8Rng::seed_from_u64(1));
        let diff = img.iter().zip(image()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-5, "identity changed the image by {diff}");

        let strong = Strong::default();
        let (mut a, mut b, mut c) = (image(), image(), image());
        strong.apply(&mut a, (1, 28, 28), -1.0, &mut ChaCha8Rng::seed_from_u64(7));
        strong.apply(&mut b, (1, 28, 28), -1.0, &mut ChaCha8Rng::seed_from_u64(7));
        strong.apply(&mut c, (1, 28, 28), -1.0, &mut ChaCha8Rng::seed_from_u64(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Strong but recognisable: most pixels stay on their side of the midpoint.
        let agree = a.iter().zip(image()).filter(|(x, y)| (**x > 0.0) == (*y > 0.0)).count();
        assert!(agree > 28 * 28 * 3 / 4, "only {agree} pixels agree");
    }
}
