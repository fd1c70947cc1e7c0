//! Pixel-space near-copies: an image whose pixels are those of a reference image up to a
//! change of brightness or contrast, a little noise, a few changed pixels or a horizontal
//! flip. The re-identification model links people, and at a threshold that lets unseen people
//! through it misses some such copies; this test catches every one of them, whatever model the
//! bundle has (used by `unpersonal check`).
//!
//! An image is a near-copy of a reference when the Pearson correlation of their pixels (or of
//! the image and the mirrored reference) is at least [`CORRELATION`], or their pixels differ by
//! at most [`MEAN_ABS_DIFF`] gray levels on average. References are streamed a chunk at a time
//! ([`NearCopies::add`]), so a set of any size is searched with the memory of one chunk.

use ndarray::{Array2, ArrayView4, Axis, s};

/// Correlation at or above which an image is a near-copy: one pixel of a 28×28 image inverted,
/// ±3 gray levels of noise, any change of brightness or contrast all stay above it.
pub const CORRELATION: f32 = 0.99;
/// Mean absolute difference, in gray levels, at or below which an image is a near-copy (a
/// flat image has no correlation to speak of).
pub const MEAN_ABS_DIFF: f32 = 3.0;

/// An image's closest reference in pixel space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Match {
    /// The reference's position in the set.
    pub reference: usize,
    /// Pearson correlation of the pixels (0 when either image is flat).
    pub correlation: f32,
    /// Whether the match is with the mirrored reference.
    pub flipped: bool,
    /// Mean absolute difference, in gray levels, with that reference (mirrored if `flipped`).
    pub mean_abs_diff: f32,
}

impl Match {
    /// Whether the match makes the image a near-copy.
    pub fn is_near_copy(&self) -> bool {
        self.correlation >= CORRELATION || self.mean_abs_diff <= MEAN_ABS_DIFF
    }
}

/// The search of a batch of images through a reference set.
pub struct NearCopies {
    /// Pixels of the images, one row each.
    pixels: Array2<f32>,
    /// The same, centred and scaled to unit length (zero rows for flat images).
    unit: Array2<f32>,
    /// Channels, height, width.
    shape: (usize, usize, usize),
    /// References seen so far.
    seen: usize,
    best: Vec<Option<Match>>,
}

/// Rows of `images` (`[n, C, H, W]`) as f32, optionally mirrored left to right.
fn rows(images: ArrayView4<u8>, flipped: bool) -> Array2<f32> {
    let (n, c, h, w) = images.dim();
    let view = if flipped { images.slice(s![.., .., .., ..;-1]) } else { images.view() };
    Array2::from_shape_vec((n, c * h * w), view.iter().map(|&p| f32::from(p)).collect())
        .expect("n whole images")
}

/// `rows` centred and scaled to unit length, flat rows left zero.
fn unit(rows: &Array2<f32>) -> Array2<f32> {
    let mut unit = rows.clone();
    for mut row in unit.axis_iter_mut(Axis(0)) {
        let mean = row.mean().unwrap_or(0.0);
        row.mapv_inplace(|v| v - mean);
        let norm = row.dot(&row).sqrt();
        if norm > 1e-3 {
            row.mapv_inplace(|v| v / norm);
        } else {
            row.fill(0.0);
        }
    }
    unit
}

impl NearCopies {
    /// The search for `images` (`[n, C, H, W]`), before any reference.
    pub fn new(images: ArrayView4<u8>) -> NearCopies {
        let (n, c, h, w) = images.dim();
        let pixels = rows(images, false);
        NearCopies { unit: unit(&pixels), pixels, shape: (c, h, w), seen: 0, best: vec![None; n] }
    }

    /// Searches the next references of the set, `[m, C, H, W]` of the images' shape.
    pub fn add(&mut self, references: ArrayView4<u8>) {
        let (_, c, h, w) = references.dim();
        assert_eq!((c, h, w), self.shape, "references of the images' shape");
        for flipped in [false, true] {
            let refs = rows(references, flipped);
            let refs_unit = unit(&refs);
            let correlations = self.unit.dot(&refs_unit.t());
            for (i, row) in correlations.axis_iter(Axis(0)).enumerate() {
                let Some((j, &correlation)) =
                    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))
                else {
                    continue;
                };
                let image = self.pixels.row(i);
                let mad = |j: usize| {
                    image.iter().zip(refs.row(j)).map(|(a, b)| (a - b).abs()).sum::<f32>()
                        / image.len().max(1) as f32
                };
                // A flat image (or reference) has no correlation: compare its pixels with all.
                let (j, mean_abs_diff) = if correlation > 0.0 {
                    (j, mad(j))
                } else {
                    (0..refs.nrows())
                        .map(|j| (j, mad(j)))
                        .min_by(|a, b| a.1.total_cmp(&b.1))
                        .expect("a nonempty chunk")
                };
                let candidate = Match {
                    reference: self.seen + j,
                    correlation: self.unit.row(i).dot(&refs_unit.row(j)),
                    flipped,
                    mean_abs_diff,
                };
                let best = &mut self.best[i];
                let closer = best.is_none_or(|b| {
                    (candidate.is_near_copy(), candidate.correlation, -candidate.mean_abs_diff)
                        > (b.is_near_copy(), b.correlation, -b.mean_abs_diff)
                });
                if closer {
                    *best = Some(candidate);
                }
            }
        }
        self.seen += references.dim().0;
    }

    /// Each image's closest reference (`None` for every image when no reference was added).
    pub fn finish(self) -> Vec<Option<Match>> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array4;

    use super::*;

    /// `n` distinct 28×28 images with structure (not noise), like garments on a background.
    fn references(n: usize) -> Array4<u8> {
        Array4::from_shape_fn((n, 1, 28, 28), |(k, _, y, x)| {
            let (cx, cy) = (8.0 + (k % 5) as f32 * 3.0, 10.0 + (k / 5) as f32 * 2.0);
            let d =
                ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) * (1.0 + k as f32 * 0.3)).sqrt();
            (255.0 * (-d / (3.0 + k as f32)).exp()) as u8
        })
    }

    #[test]
    fn every_kind_of_near_copy_is_caught_and_other_images_are_not() {
        let refs = references(20);
        let source = refs.slice(s![7, .., .., ..]).to_owned();
        let edit = |f: &dyn Fn(usize, usize, u8) -> u8| {
            Array4::from_shape_fn((1, 1, 28, 28), |(_, _, y, x)| f(y, x, source[[0, y, x]]))
        };
        let noise = |y: usize, x: usize| ((y * 31 + x * 17) % 7) as i32 - 3;
        let copies = [
            ("exact", edit(&|_, _, p| p)),
            ("one inverted pixel", edit(&|y, x, p| if (y, x) == (14, 9) { 255 - p } else { p })),
            ("+2 brightness", edit(&|_, _, p| p.saturating_add(2))),
            ("-2 brightness", edit(&|_, _, p| p.saturating_sub(2))),
            ("±3 noise", edit(&|y, x, p| (i32::from(p) + noise(y, x)).clamp(0, 255) as u8)),
            ("×0.9 contrast", edit(&|_, _, p| (f32::from(p) * 0.9) as u8)),
            ("mirrored", edit(&|y, x, _| source[[0, y, 27 - x]])),
        ];
        for (what, copy) in &copies {
            let mut search = NearCopies::new(copy.view());
            for chunk in refs.axis_chunks_iter(Axis(0), 6) {
                search.add(chunk);
            }
            let found = search.finish()[0].unwrap();
            assert!(found.is_near_copy() && found.reference == 7, "{what}: {found:?}");
        }
        // Another image of the same family is no copy.
        let other = references(21).slice(s![20..21, .., .., ..]).to_owned();
        let mut search = NearCopies::new(other.view());
        search.add(refs.view());
        let found = search.finish()[0].unwrap();
        assert!(!found.is_near_copy(), "{found:?}");
        // A flat image is compared by its mean difference.
        let flat = Array4::from_elem((1, 1, 28, 28), 9u8);
        let mut search = NearCopies::new(flat.view());
        search.add(Array4::from_elem((2, 1, 28, 28), 200u8).view());
        search.add(Array4::from_elem((1, 1, 28, 28), 11u8).view());
        let found = search.finish()[0].unwrap();
        assert!(found.is_near_copy() && found.reference == 2, "{found:?}");
    }
}
