//! Image files in memory (feature `image`): decoding PNG/JPEG/DICOM bytes into the runtime's
//! CHW layout, and encoding released images as PNG.

use image::{DynamicImage, ImageEncoder};

use crate::dicom;
use crate::identity::Identity;

pub use crate::files::MAX_IMAGE_SIDE as MAX_SIDE;
use crate::files::check_image_size;

/// Most bytes one image may take decoded (16384² RGB at 8 bits is 768 MiB).
const MAX_ALLOC: u64 = 1 << 30;

/// Decodes image bytes of any supported format (PNG, JPEG, DICOM), guessing the format from
/// the bytes. The error says why, for the caller to complete with the file's name.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    decode_identified(bytes).map(|(image, _)| image)
}

/// Like [`decode`], with the identity of the person the image shows where the file says (the
/// PatientID of a DICOM file).
pub fn decode_identified(bytes: &[u8]) -> Result<(DynamicImage, Option<Identity>), String> {
    decode_expecting(bytes, None)
}

/// Like [`decode_identified`], refusing an image whose header declares another size than
/// `expect` (width, height) before any of its pixels is decoded: a set of images of one size
/// costs no more memory than its first image says, however large the others claim to be.
pub fn decode_expecting(
    bytes: &[u8],
    expect: Option<(u32, u32)>,
) -> Result<(DynamicImage, Option<Identity>), String> {
    if dicom::is_dicom(bytes) {
        let (image, identity) = dicom::decode(bytes)?;
        check_expected((image.width(), image.height()), expect)?;
        return Ok((image, identity));
    }
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format!("cannot read image ({e})"))
    };
    let mut decoder = reader()?;
    if decoder.format().is_none() {
        return Err("cannot decode image (not a PNG, JPEG or DICOM file)".into());
    }
    // The header alone first: the size is checked before any pixel is decoded.
    let (width, height) =
        reader()?.into_dimensions().map_err(|e| format!("cannot decode image ({e})"))?;
    check_image_size(width, height)?;
    check_expected((width, height), expect)?;
    let mut limits = image::Limits::default();
    (limits.max_image_width, limits.max_image_height, limits.max_alloc) =
        (Some(MAX_SIDE), Some(MAX_SIDE), Some(MAX_ALLOC));
    decoder.limits(limits);
    Ok((decoder.decode().map_err(|e| format!("cannot decode image ({e})"))?, None))
}

/// Refuses an image of `size` (width, height) when another size is expected.
fn check_expected(size: (u32, u32), expect: Option<(u32, u32)>) -> Result<(), String> {
    match expect {
        Some((w, h)) if size != (w, h) => Err(format!(
            "image of {}×{} pixels where {w}×{h} are expected (every image of a set has one size)",
            size.0, size.1
        )),
        _ => Ok(()),
    }
}

/// Appends `img` to `out` as CHW bytes with `channels` (1 or 3) channels: samples at 8 bits
/// (16-bit ones as `(v + 128) / 257`), alpha dropped, colour to gray by [`luma`], gray to colour
/// by repeating it (docs/bundle.md, "Reference images").
pub fn push_chw(out: &mut Vec<u8>, img: &DynamicImage, channels: usize) {
    if channels == 1 && img.color().has_color() {
        out.extend(img.to_rgb8().pixels().map(|p| luma(p.0)));
    } else if channels == 1 {
        out.extend_from_slice(img.to_luma8().as_raw());
    } else {
        let rgb = img.to_rgb8();
        for c in 0..3 {
            out.extend(rgb.as_raw().iter().skip(c).step_by(3));
        }
    }
}

/// The Rec. 709 luma of 8-bit R, G, B, rounded half up in integer arithmetic:
/// `(2126·R + 7152·G + 722·B + 5000) / 10000`. Written out rather than left to the `image`
/// crate, whose conversion goes through floats with coefficients derived from the primaries, so
/// that the page can state it exactly and another implementation can reproduce it.
pub fn luma([r, g, b]: [u8; 3]) -> u8 {
    let y = 2126 * u32::from(r) + 7152 * u32::from(g) + 722 * u32::from(b);
    // At most (10000·255 + 5000) / 10000 = 255.
    ((y + 5000) / 10000) as u8
}

/// PNG bytes of one image (`pixels` interleaved, `channels` 1 or 3).
pub fn encode_png(
    pixels: &[u8],
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, String> {
    let color = match channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        c => return Err(format!("cannot write {c}-channel images as PNG (1 or 3 channels)")),
    };
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(pixels, width as u32, height as u32, color)
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_keeps_gray_and_weighs_colour_by_rec_709() {
        assert!((0..=255).all(|v| luma([v, v, v]) == v), "a gray RGB pixel keeps its value");
        // 2126·255 = 542130 → 54.213 → 54; 7152·255 → 182.376 → 182; 722·255 → 18.411 → 18.
        assert_eq!([luma([255, 0, 0]), luma([0, 255, 0]), luma([0, 0, 255])], [54, 182, 18]);
        // Exactly half a level rounds up: 7152·14 + 722·76 = 155000 → 15.5 → 16.
        assert_eq!(luma([0, 14, 76]), 16);
        let rgba =
            DynamicImage::ImageRgba8(image::RgbaImage::from_raw(1, 1, vec![255, 0, 0, 7]).unwrap());
        let mut out = Vec::new();
        push_chw(&mut out, &rgba, 1);
        assert_eq!(out, [54], "alpha is dropped, not composited");
    }

    #[test]
    fn png_round_trips_and_garbage_is_named() {
        let pixels: Vec<u8> = (0..12).collect();
        let png = encode_png(&pixels, 1, 3, 4).unwrap();
        let img = decode(&png).unwrap();
        let mut chw = Vec::new();
        push_chw(&mut chw, &img, 1);
        assert_eq!(chw, pixels);
        assert!(decode(b"not an image").unwrap_err().contains("not a PNG, JPEG or DICOM"));
        assert!(decode(&png[..png.len() / 2]).unwrap_err().contains("cannot decode"));
        assert!(encode_png(&pixels, 2, 3, 2).is_err());
    }

    #[test]
    fn images_past_the_size_limit_are_refused_before_decoding() {
        let side = MAX_SIDE as usize;
        let wide = encode_png(&vec![7; side + 1], 1, 1, side + 1).unwrap();
        let error = decode(&wide).unwrap_err();
        assert!(
            error.contains(&format!("{}×1 pixels is larger than the 16384×16384", side + 1)),
            "{error}"
        );
        assert!(decode(&encode_png(&vec![7; side], 1, 1, side).unwrap()).is_ok());
    }
}
