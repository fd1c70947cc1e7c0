//! Image files in memory (feature `image`): decoding PNG/JPEG/DICOM bytes into the runtime's
//! CHW layout, bringing images of any size to one square size ([`fit_square`]), and encoding
//! released images as PNG.

use image::imageops::FilterType;
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

/// The size (width, height) an image file declares, read from its header without decoding any
/// pixel (for DICOM, the Columns and Rows elements). `bytes` may be the start of the file only:
/// an error may then mean that the header lies further on.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), String> {
    if dicom::is_dicom(bytes) {
        return dicom::header(bytes)?
            .size
            .ok_or_else(|| "the DICOM file has no Rows and Columns (it holds no image)".into());
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image ({e})"))?;
    if reader.format().is_none() {
        return Err("cannot decode image (not a PNG, JPEG or DICOM file)".into());
    }
    reader.into_dimensions().map_err(|e| format!("cannot decode image ({e})"))
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
    match to_channels(img, channels) {
        DynamicImage::ImageRgb8(rgb) => {
            for c in 0..3 {
                out.extend(rgb.as_raw().iter().skip(c).step_by(3));
            }
        }
        gray => out.extend_from_slice(gray.as_bytes()),
    }
}

/// `img` as 8-bit grayscale (`channels` 1) or RGB (3), converted as [`push_chw`] describes.
pub fn to_channels(img: &DynamicImage, channels: usize) -> DynamicImage {
    if channels == 1 && img.color().has_color() {
        let rgb = img.to_rgb8();
        let gray = rgb.pixels().map(|p| luma(p.0)).collect();
        DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(rgb.width(), rgb.height(), gray).expect("one byte a pixel"),
        )
    } else if channels == 1 {
        DynamicImage::ImageLuma8(img.to_luma8())
    } else {
        DynamicImage::ImageRgb8(img.to_rgb8())
    }
}

/// The name bundles record for the size rule of [`fit_square`] (`image.resize.rule`).
pub const FIT_SQUARE_RULE: &str = "shorter-side-triangle-center-crop";

/// Square sides the trainer builds models for, smallest first; [`supported_size`] picks one.
pub const SUPPORTED_SIDES: [usize; 4] = [28, 32, 48, 64];

/// The default square side S for a data set whose images are `width` × `height` pixels: the
/// largest of [`SUPPORTED_SIDES`] (28, 32, 48, 64) that is at most the shorter side, so that
/// [`fit_square`] only ever shrinks them. Images whose shorter side is below 28 get 28: they
/// are enlarged, the one case where S exceeds the images.
pub fn supported_size(width: usize, height: usize) -> usize {
    let shorter = width.min(height);
    SUPPORTED_SIDES.iter().copied().filter(|&s| s <= shorter).max().unwrap_or(SUPPORTED_SIDES[0])
}

/// The size rule (`shorter-side-triangle-center-crop`, [`FIT_SQUARE_RULE`]): brings an image of
/// any size and bit depth to `side` × `side` pixels of `channels` (1 or 3) 8-bit channels.
///
/// 1. The image becomes 8-bit grayscale or RGB exactly as without resizing ([`to_channels`]:
///    16-bit samples to 8 bits, colour to Rec. 709 luma, alpha dropped).
/// 2. It is scaled so that its shorter side is `side`: a W × H image with W ≥ H becomes
///    W′ × `side` with W′ = ⌊(2·W·side + H) / (2·H)⌋ (W·side/H rounded half up; likewise with
///    the sides swapped), by the `image` crate 0.25's `resize_exact` with
///    [`FilterType::Triangle`]: separable, rows first into f32 then columns, each output pixel
///    centred at (o + ½)·r in the input (r = input/output length) weighting the input pixels
///    by `max(0, 1 − |d|/max(1, r))` (normalised), rounded to the nearest level. An image
///    already W′ × H′ is not resampled.
/// 3. The centre `side` × `side` is cut out: the left edge at ⌊(W′ − side)/2⌋, the top at
///    ⌊(H′ − side)/2⌋.
///
/// Refused, with the reason: `side` 0, and an image so elongated that the scaled image would
/// take more than 1 GiB.
pub fn fit_square(img: &DynamicImage, channels: usize, side: u32) -> Result<DynamicImage, String> {
    if side == 0 {
        return Err("cannot bring images to 0×0 pixels".into());
    }
    let img = to_channels(img, channels);
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(format!("image of {width}×{height} pixels"));
    }
    let (new_width, new_height) = shorter_side_to(width, height, side);
    // The vertical pass holds width × new_height f32 RGBA pixels, the result new_width ×
    // new_height pixels of `channels` bytes.
    let pass = u64::from(width).saturating_mul(u64::from(new_height)).saturating_mul(16);
    let result =
        u64::from(new_width).saturating_mul(u64::from(new_height)).saturating_mul(channels as u64);
    if pass.max(result) > MAX_ALLOC {
        return Err(format!(
            "image of {width}×{height} pixels is too elongated to bring to {side}×{side} \
             (scaled to {new_width}×{new_height} first, it would take more than {} MiB)",
            MAX_ALLOC >> 20
        ));
    }
    let scaled = if (new_width, new_height) == (width, height) {
        img
    } else {
        img.resize_exact(new_width, new_height, FilterType::Triangle)
    };
    Ok(scaled.crop_imm((new_width - side) / 2, (new_height - side) / 2, side, side))
}

/// The size (width, height) of a `width` × `height` image scaled so that its shorter side is
/// `side`, the longer one in proportion, rounded half up (and never below `side`).
fn shorter_side_to(width: u32, height: u32, side: u32) -> (u32, u32) {
    let longer = |long: u32, short: u32| {
        let (long, short, side) = (u128::from(long), u128::from(short), u128::from(side));
        let scaled = (2 * long * side + short) / (2 * short);
        u32::try_from(scaled.max(side)).unwrap_or(u32::MAX)
    };
    if width >= height { (longer(width, height), side) } else { (side, longer(height, width)) }
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

    /// A gray image of `width` × `height` pixels, row-major `values`.
    fn gray(width: u32, height: u32, values: Vec<u8>) -> DynamicImage {
        DynamicImage::ImageLuma8(image::GrayImage::from_raw(width, height, values).unwrap())
    }

    #[test]
    fn fit_square_crops_the_centre_of_an_image_whose_shorter_side_fits() {
        let img = gray(4, 2, vec![0, 10, 20, 30, 40, 50, 60, 70]);
        let square = fit_square(&img, 1, 2).unwrap();
        assert_eq!(square.as_bytes(), [10, 20, 50, 60], "left edge at ⌊(4 − 2)/2⌋ = 1");
        let tall = gray(1, 3, vec![1, 2, 3]);
        assert_eq!(fit_square(&tall, 1, 1).unwrap().as_bytes(), [2]);
    }

    #[test]
    fn fit_square_scales_down_with_the_triangle_filter() {
        // Columns 0, 70, 140, 210 (every row alike), halved: the triangle widened to 2 input
        // pixels weighs the inputs around output centre 1.0 (and 3.0) by 3/7, 3/7, 1/7:
        // (0·3 + 70·3 + 140)/7 = 50 and (70 + 140·3 + 210·3)/7 = 160.
        let img = gray(4, 4, [0, 70, 140, 210].repeat(4));
        assert_eq!(fit_square(&img, 1, 2).unwrap().as_bytes(), [50, 160, 50, 160]);
        // A constant image stays constant whatever the scale.
        let flat = gray(7, 5, vec![99; 35]);
        assert!(fit_square(&flat, 1, 3).unwrap().as_bytes().iter().all(|&v| v == 99));
        assert!(fit_square(&flat, 1, 11).unwrap().as_bytes().iter().all(|&v| v == 99));
    }

    #[test]
    fn fit_square_keeps_the_aspect_ratio_before_cropping() {
        assert_eq!(shorter_side_to(6, 3, 2), (4, 2));
        assert_eq!(shorter_side_to(3, 7, 2), (2, 5), "7·2/3 = 4.67 rounds to 5");
        assert_eq!(shorter_side_to(5, 2, 3), (8, 3), "5·3/2 = 7.5 rounds half up");
        assert_eq!(shorter_side_to(2, 2, 64), (64, 64));
        assert_eq!(shorter_side_to(16_384, 1, 64), (1_048_576, 64));
        // A portrait image is scaled to 2 × 5 and rows 1 and 2 of that are kept. Row 2 is
        // centred on input row 3 (the bright one, 100): triangle weights 2/7, 1, 2/7 over
        // input rows 2..=4 give 100·7/11 = 63.6. Row 1, centred at 2.1, reaches rows 1 and 2.
        let img = gray(3, 7, (0..21).map(|i| if i / 3 == 3 { 100 } else { 0 }).collect());
        let square = fit_square(&img, 1, 2).unwrap();
        assert_eq!(square.as_bytes(), [0, 0, 64, 64]);
        for (w, h) in [(28, 28), (100, 30), (30, 100), (64, 65)] {
            let square = fit_square(&gray(w, h, vec![1; (w * h) as usize]), 3, 32).unwrap();
            assert_eq!(
                (square.width(), square.height(), square.color()),
                (32, 32, image::ColorType::Rgb8)
            );
        }
    }

    #[test]
    fn fit_square_converts_16_bit_and_colour_images_first() {
        let deep = DynamicImage::ImageLuma16(
            image::ImageBuffer::from_raw(2, 2, vec![0u16, 65535, 257 * 100, 257 * 200]).unwrap(),
        );
        let square = fit_square(&deep, 1, 2).unwrap();
        assert_eq!(
            (square.color(), square.as_bytes()),
            (image::ColorType::L8, &[0, 255, 100, 200][..])
        );
        // Scaled, a 16-bit image gives what its 8-bit conversion gives.
        let values: Vec<u16> = (0..30u16).map(|i| i * 2000 + 7).collect();
        let deep = DynamicImage::ImageLuma16(image::ImageBuffer::from_raw(6, 5, values).unwrap());
        let shallow = DynamicImage::ImageLuma8(deep.to_luma8());
        assert_eq!(fit_square(&deep, 1, 3).unwrap(), fit_square(&shallow, 1, 3).unwrap());
        let red =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(3, 3, image::Rgb([255, 0, 0])));
        assert_eq!(fit_square(&red, 1, 2).unwrap().as_bytes(), [54; 4], "Rec. 709 luma");
        let mut chw = Vec::new();
        push_chw(&mut chw, &fit_square(&red, 3, 1).unwrap(), 3);
        assert_eq!(chw, [255, 0, 0]);
    }

    #[test]
    fn fit_square_refuses_a_zero_side_and_extreme_elongation() {
        let line = gray(16_384, 1, vec![5; 16_384]);
        assert_eq!(fit_square(&line, 1, 64).unwrap().as_bytes(), [5; 64 * 64]);
        let err = fit_square(&line, 1, 1024).unwrap_err();
        assert!(err.contains("16384×1 pixels is too elongated to bring to 1024×1024"), "{err}");
        assert!(fit_square(&line, 1, 0).unwrap_err().contains("0×0"));
    }

    #[test]
    fn supported_size_is_the_largest_side_that_only_shrinks() {
        let cases = [
            ((28, 28), 28),
            ((31, 100), 28),
            ((32, 32), 32),
            ((50, 47), 32),
            ((48, 48), 48),
            ((63, 1000), 48),
            ((64, 64), 64),
            ((3000, 2500), 64),
            ((10, 10), 28),
            ((0, 0), 28),
        ];
        for ((w, h), side) in cases {
            assert_eq!(supported_size(w, h), side, "{w}×{h}");
        }
    }

    #[test]
    fn dimensions_come_from_the_header() {
        let png = encode_png(&[0; 12], 1, 3, 4).unwrap();
        assert_eq!(dimensions(&png), Ok((4, 3)));
        assert!(dimensions(b"not an image").unwrap_err().contains("not a PNG, JPEG or DICOM"));
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
