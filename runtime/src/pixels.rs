//! Image files in memory (feature `image`): decoding PNG/JPEG/DICOM bytes into the runtime's
//! CHW layout, and encoding released images as PNG.

use image::{DynamicImage, ImageEncoder};

use crate::dicom;
use crate::identity::Identity;

/// Decodes image bytes of any supported format (PNG, JPEG, DICOM), guessing the format from
/// the bytes. The error says why, for the caller to complete with the file's name.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    decode_identified(bytes).map(|(image, _)| image)
}

/// Like [`decode`], with the identity of the person the image shows where the file says (the
/// PatientID of a DICOM file).
pub fn decode_identified(bytes: &[u8]) -> Result<(DynamicImage, Option<Identity>), String> {
    if dicom::is_dicom(bytes) {
        return dicom::decode(bytes);
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| format!("cannot read image ({e})"))?;
    if reader.format().is_none() {
        return Err("cannot decode image (not a PNG, JPEG or DICOM file)".into());
    }
    Ok((reader.decode().map_err(|e| format!("cannot decode image ({e})"))?, None))
}

/// Appends `img` to `out` as CHW bytes with `channels` (1 or 3) channels.
pub fn push_chw(out: &mut Vec<u8>, img: &DynamicImage, channels: usize) {
    if channels == 1 {
        out.extend_from_slice(img.to_luma8().as_raw());
    } else {
        let rgb = img.to_rgb8();
        for c in 0..3 {
            out.extend(rgb.as_raw().iter().skip(c).step_by(3));
        }
    }
}

/// PNG bytes of one image (`pixels` interleaved, `channels` 1 or 3).
pub fn encode_png(pixels: &[u8], channels: usize, height: usize, width: usize) -> Result<Vec<u8>, String> {
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
}
