//! DICOM files in memory (feature `image`): the first frame of a DICOM file's pixel data as an
//! 8-bit grayscale or RGB image, and the identity of its patient. Everything else in the header
//! (names, dates, UIDs) is dropped with the parsed object, but for what [`header`] reads to
//! find a file by its SOPInstanceUID and learn its size without decoding it.
//!
//! Pixel data is decoded by dicom-rs with its pure-Rust codecs: uncompressed (implicit or
//! explicit VR), deflated, RLE lossless and JPEG (baseline, extended, lossless). Other transfer
//! syntaxes (JPEG 2000, JPEG-LS, JPEG XL, …) are refused by name.
//!
//! Monochrome samples (MONOCHROME1/2, 8–16 bits, signed or not) go through the modality
//! rescale (`RescaleSlope`/`RescaleIntercept`) and then the file's first linear VOI window
//! (`WindowCenter`/`WindowWidth`, DICOM PS3.3 C.11.2.1.2.1); a file without a usable window is
//! shown over the full range of its own values (minimum black, maximum white). MONOCHROME1 is
//! inverted so that white is always the highest value. RGB samples are scaled from their
//! stored bit depth to 8 bits; no rescale or window applies to colour.

use std::io::Cursor;

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    DecodedPixelData, PhotometricInterpretation, PixelDecoder, PixelRepresentation,
    PlanarConfiguration,
};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use image::{DynamicImage, GrayImage, RgbImage};

use crate::identity::Identity;

mod lengths;

/// Offset of the `DICM` magic in a DICOM file (after the 128-byte preamble).
const MAGIC_AT: usize = 128;

/// Whether `bytes` are a DICOM file: `DICM` after the 128-byte preamble (or, for files
/// written without a preamble, at the start).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(MAGIC_AT..MAGIC_AT + 4) == Some(b"DICM") || bytes.starts_with(b"DICM")
}

/// Decodes the first frame of a DICOM file to 8 bits per sample, with the identity of the
/// patient when the file has a PatientID. The error says why, for the caller to complete with
/// the file's name.
pub fn decode(bytes: &[u8]) -> Result<(DynamicImage, Option<Identity>), String> {
    // dicom-rs's codecs can panic on malformed data (fuzzing found an index out of bounds in
    // its RLE decoder): such a panic is an error here, never a crash.
    std::panic::catch_unwind(|| decode_unguarded(bytes)).unwrap_or_else(|_| {
        Err("cannot decode DICOM pixel data (the decoder failed on malformed data)".into())
    })
}

/// What a DICOM file's header says of its image, read without its pixel data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Columns and Rows (width, height), when the file has both.
    pub size: Option<(u32, u32)>,
    /// SOPInstanceUID (which names this one image among all DICOM files), without padding;
    /// `None` when absent or empty.
    pub sop_instance_uid: Option<String>,
}

/// Reads the header of a DICOM file up to its PixelData, without decoding any pixel. `bytes`
/// may be the start of the file only: elements from the first one that runs past the bytes
/// given (or whose length is wrong) on are not read, so a header cut short reads as one
/// without those elements. The error says why, for the caller to complete with the file's name.
pub fn header(bytes: &[u8]) -> Result<Header, String> {
    // As in `decode`: a panic in dicom-rs on malformed data is an error here.
    std::panic::catch_unwind(|| header_unguarded(bytes)).unwrap_or_else(|_| {
        Err("cannot read DICOM header (the parser failed on malformed data)".into())
    })
}

/// [`header`], without the guard against panics in dicom-rs.
fn header_unguarded(bytes: &[u8]) -> Result<Header, String> {
    let body = without_preamble(bytes);
    let checked = &body[..lengths::checked_prefix(body)];
    let object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(Cursor::new(checked))
        .map_err(|e| format!("cannot read DICOM file ({e})"))?;
    let int = |tag| {
        object.element_opt(tag).ok().flatten().and_then(|element| element.to_int::<u32>().ok())
    };
    let sop_instance_uid = object
        .element_opt(tags::SOP_INSTANCE_UID)
        .ok()
        .flatten()
        .and_then(|element| element.to_str().ok().map(|uid| trim_padding(&uid).to_owned()))
        .filter(|uid| !uid.is_empty());
    Ok(Header { size: int(tags::COLUMNS).zip(int(tags::ROWS)), sop_instance_uid })
}

/// `value` without the spaces and NULs DICOM pads values with.
pub fn trim_padding(value: &str) -> &str {
    value.trim_matches(|c: char| c == ' ' || c == '\0')
}

/// A DICOM file from its `DICM` magic on (after the 128-byte preamble, where there is one).
fn without_preamble(bytes: &[u8]) -> &[u8] {
    if bytes.get(MAGIC_AT..MAGIC_AT + 4) == Some(b"DICM") { &bytes[MAGIC_AT..] } else { bytes }
}

/// [`decode`], without the guard against panics in dicom-rs.
fn decode_unguarded(bytes: &[u8]) -> Result<(DynamicImage, Option<Identity>), String> {
    let body = without_preamble(bytes);
    lengths::check(body).map_err(|e| format!("not a readable DICOM file: {e}"))?;
    let object = OpenFileOptions::new()
        .from_reader(Cursor::new(body))
        .map_err(|e| format!("cannot read DICOM file ({e})"))?;
    if !matches!(object.element_opt(tags::PIXEL_DATA), Ok(Some(_))) {
        return Err("the DICOM file has no PixelData (it holds no image)".into());
    }
    check_transfer_syntax(object.meta().transfer_syntax())?;
    let identity = patient(&object)?;
    let side = |tag, name| -> Result<u32, String> {
        let element = object.element(tag).map_err(|_| format!("the DICOM file has no {name}"))?;
        element.to_int::<u32>().map_err(|e| format!("cannot read {name} ({e})"))
    };
    let (columns, rows) = (side(tags::COLUMNS, "Columns")?, side(tags::ROWS, "Rows")?);
    crate::files::check_image_size(columns, rows)?;
    check_native_length(&object, columns, rows)?;
    let decoded = object
        .decode_pixel_data_frame(0)
        .map_err(|e| format!("cannot decode DICOM pixel data ({e})"))?;
    let frame = Frame::of(&decoded)?;
    Ok((frame.to_image()?, identity))
}

/// Refuses uncompressed pixel data shorter than the header says (Rows × Columns ×
/// SamplesPerPixel × BitsAllocated/8 × NumberOfFrames) before dicom-rs decodes it, which would
/// allocate and fill the declared size first. Encapsulated (compressed) data is checked by its
/// codec; a missing attribute is named by the decoder.
fn check_native_length(object: &DefaultDicomObject, columns: u32, rows: u32) -> Result<(), String> {
    let Ok(Some(pixel_data)) = object.element_opt(tags::PIXEL_DATA) else {
        return Ok(());
    };
    let Some(value) = pixel_data.value().primitive() else {
        return Ok(());
    };
    let attribute = |tag, name, absent: Option<u64>| -> Result<Option<u64>, String> {
        match object.element_opt(tag) {
            Ok(Some(element)) => {
                element.to_int::<u64>().map(Some).map_err(|e| format!("cannot read {name} ({e})"))
            }
            _ => Ok(absent),
        }
    };
    let (Some(samples), Some(bits), Some(frames)) = (
        attribute(tags::SAMPLES_PER_PIXEL, "SamplesPerPixel", None)?,
        attribute(tags::BITS_ALLOCATED, "BitsAllocated", None)?,
        attribute(tags::NUMBER_OF_FRAMES, "NumberOfFrames", Some(1))?,
    ) else {
        return Ok(());
    };
    let bits_needed = [u64::from(rows), samples, bits, frames]
        .into_iter()
        .fold(u64::from(columns), u64::saturating_mul);
    let needed = bits_needed.div_ceil(8);
    let held = value.calculate_byte_len() as u64;
    if held < needed {
        return Err(format!(
            "the uncompressed PixelData holds {held} bytes, the header declares {needed} \
             (Rows {rows} × Columns {columns} × SamplesPerPixel {samples} × BitsAllocated {bits}/8 × NumberOfFrames {frames})"
        ));
    }
    Ok(())
}

/// Refuses a transfer syntax whose pixel data this build cannot decode, by UID and name.
fn check_transfer_syntax(uid: &str) -> Result<(), String> {
    let uid = uid.trim_end_matches(['\0', ' ']);
    let supported = "this build decodes uncompressed, deflated, RLE lossless and JPEG (baseline, extended, lossless) pixel data";
    match TransferSyntaxRegistry.get(uid) {
        None => Err(format!("unknown DICOM transfer syntax {uid}; {supported}")),
        Some(ts) if !ts.can_decode_all() => {
            Err(format!("unsupported DICOM transfer syntax {uid} ({}); {supported}", ts.name()))
        }
        Some(_) => Ok(()),
    }
}

/// The patient's identity from PatientID, if the file names one.
fn patient(object: &DefaultDicomObject) -> Result<Option<Identity>, String> {
    let Some(element) =
        object.element_opt(tags::PATIENT_ID).map_err(|e| format!("cannot read PatientID ({e})"))?
    else {
        return Ok(None);
    };
    let id = element.to_str().map_err(|e| format!("cannot read PatientID ({e})"))?;
    Ok(Identity::of_patient_id(&id))
}

/// How the samples of a frame are to be shown.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Colour {
    /// Minimum white (inverted on display).
    Monochrome1,
    /// Minimum black.
    Monochrome2,
    /// Red, green, blue.
    Rgb,
}

/// A linear VOI window: values at or below `center − width/2` black, above `center + width/2`
/// white.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Window {
    center: f64,
    width: f64,
}

impl Window {
    /// The window of the file, if it is usable (finite, width at least 1, as DICOM requires).
    fn usable(center: f64, width: f64) -> Option<Window> {
        (center.is_finite() && width.is_finite() && width >= 1.0)
            .then_some(Window { center, width })
    }

    /// The 8-bit display value of `x` (DICOM PS3.3 C.11.2.1.2.1, LINEAR).
    fn apply(self, x: f64) -> u8 {
        let (c, w) = (self.center - 0.5, self.width - 1.0);
        if x <= c - w / 2.0 {
            0
        } else if x > c + w / 2.0 {
            255
        } else {
            (((x - c) / w + 0.5) * 255.0).round().clamp(0.0, 255.0) as u8
        }
    }
}

/// One decoded frame: native little-endian samples and the attributes that say how to read
/// and show them.
#[derive(Clone, Debug)]
struct Frame<'a> {
    width: u32,
    height: u32,
    colour: Colour,
    planar: bool,
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    slope: f64,
    intercept: f64,
    window: Option<Window>,
    data: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The first frame of decoded pixel data, checked: supported colour model and bit depth,
    /// enough bytes.
    fn of(decoded: &'a DecodedPixelData<'_>) -> Result<Frame<'a>, String> {
        let colour = match (decoded.photometric_interpretation(), decoded.samples_per_pixel()) {
            (PhotometricInterpretation::Monochrome1, 1) => Colour::Monochrome1,
            (PhotometricInterpretation::Monochrome2, 1) => Colour::Monochrome2,
            (PhotometricInterpretation::Rgb, 3) => Colour::Rgb,
            (p, n) => {
                return Err(format!(
                    "unsupported DICOM photometric interpretation {p} with {n} samples per pixel (MONOCHROME1, MONOCHROME2 and RGB are)"
                ));
            }
        };
        let rescale = decoded
            .rescale()
            .map_err(|e| format!("cannot read the DICOM rescale ({e})"))?
            .first()
            .copied();
        let window = decoded
            .window()
            .map_err(|e| format!("cannot read the DICOM window ({e})"))?
            .and_then(|w| w.first().copied());
        let frame = Frame {
            width: decoded.columns(),
            height: decoded.rows(),
            colour,
            planar: decoded.planar_configuration() == PlanarConfiguration::PixelFirst,
            bits_allocated: decoded.bits_allocated(),
            bits_stored: decoded.bits_stored(),
            high_bit: decoded.high_bit(),
            signed: decoded.pixel_representation() == PixelRepresentation::Signed,
            slope: rescale.map_or(1.0, |r| r.slope),
            intercept: rescale.map_or(0.0, |r| r.intercept),
            window: window.and_then(|w| Window::usable(w.center, w.width)),
            data: decoded.data(),
        };
        frame.check()?;
        Ok(frame)
    }

    /// Samples per pixel.
    fn channels(&self) -> usize {
        if self.colour == Colour::Rgb { 3 } else { 1 }
    }

    /// Refuses what [`Frame::to_image`] cannot convert.
    fn check(&self) -> Result<(), String> {
        let (allocated, stored, high) = (self.bits_allocated, self.bits_stored, self.high_bit);
        if !matches!(allocated, 8 | 16)
            || stored == 0
            || stored > allocated
            || high >= allocated
            || high + 1 < stored
        {
            return Err(format!(
                "unsupported DICOM sample layout: {allocated} bits allocated, {stored} stored, high bit {high} (8 or 16 bits allocated are)"
            ));
        }
        if self.colour == Colour::Rgb && self.signed {
            return Err("unsupported DICOM pixel data: signed RGB samples".into());
        }
        if !(self.slope.is_finite() && self.intercept.is_finite() && self.slope != 0.0) {
            return Err(format!(
                "invalid DICOM rescale: slope {}, intercept {}",
                self.slope, self.intercept
            ));
        }
        if self.width == 0 || self.height == 0 {
            return Err(format!("DICOM image of {}×{} pixels", self.width, self.height));
        }
        let needed = (self.width as usize)
            .checked_mul(self.height as usize)
            .and_then(|n| n.checked_mul(self.channels() * usize::from(allocated / 8)));
        match needed {
            Some(needed) if needed <= self.data.len() => Ok(()),
            _ => Err(format!(
                "DICOM pixel data holds {} bytes, too few for {}×{} pixels of {} × {allocated} bits",
                self.data.len(),
                self.width,
                self.height,
                self.channels()
            )),
        }
    }

    /// Stored value of sample `i` (in storage order): `bits_stored` bits ending at `high_bit`,
    /// sign-extended when signed.
    fn sample(&self, i: usize) -> i32 {
        let raw = match self.bits_allocated {
            8 => u32::from(self.data[i]),
            _ => u32::from(u16::from_le_bytes([self.data[2 * i], self.data[2 * i + 1]])),
        };
        let stored = u32::from(self.bits_stored);
        let value = (raw >> (self.high_bit + 1 - self.bits_stored)) & ((1u32 << stored) - 1);
        if self.signed && value >> (stored - 1) == 1 {
            value as i32 - (1i32 << stored)
        } else {
            value as i32
        }
    }

    /// The frame as an 8-bit image (grayscale or RGB).
    fn to_image(&self) -> Result<DynamicImage, String> {
        let pixels = self.width as usize * self.height as usize;
        let image = match self.colour {
            Colour::Rgb => {
                let max = f64::from((1u32 << self.bits_stored) - 1);
                let at = |p: usize, c: usize| if self.planar { c * pixels + p } else { 3 * p + c };
                let bytes = (0..pixels * 3)
                    .map(|i| (f64::from(self.sample(at(i / 3, i % 3))) * 255.0 / max).round() as u8)
                    .collect();
                RgbImage::from_raw(self.width, self.height, bytes).map(DynamicImage::ImageRgb8)
            }
            Colour::Monochrome1 | Colour::Monochrome2 => {
                let values: Vec<f64> = (0..pixels)
                    .map(|i| f64::from(self.sample(i)) * self.slope + self.intercept)
                    .collect();
                let window = self.window.unwrap_or_else(|| full_range(&values));
                let invert = self.colour == Colour::Monochrome1;
                let bytes = values
                    .iter()
                    .map(|&v| window.apply(v))
                    .map(|y| if invert { 255 - y } else { y })
                    .collect();
                GrayImage::from_raw(self.width, self.height, bytes).map(DynamicImage::ImageLuma8)
            }
        };
        image.ok_or_else(|| "DICOM image buffer of the wrong size".to_string())
    }
}

/// The default window: the full range of the frame's values, minimum black and maximum white
/// (a frame of one value is black).
fn full_range(values: &[f64]) -> Window {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if hi > lo {
        // Linear window mapping `lo` to 0 and `hi` to 255: center − ½ − (width − 1)/2 = lo.
        Window { center: (lo + hi) / 2.0 + 0.5, width: hi - lo + 1.0 }
    } else {
        Window { center: lo + 1.0, width: 1.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit unsigned MONOCHROME2 frame of `values` (one row), no rescale or window.
    fn mono16(values: &[u16]) -> (Vec<u8>, Frame<'static>) {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let frame = Frame {
            width: values.len() as u32,
            height: 1,
            colour: Colour::Monochrome2,
            planar: false,
            bits_allocated: 16,
            bits_stored: 16,
            high_bit: 15,
            signed: false,
            slope: 1.0,
            intercept: 0.0,
            window: None,
            data: &[],
        };
        (data, frame)
    }

    fn gray(frame: &Frame) -> Vec<u8> {
        frame.to_image().unwrap().to_luma8().into_raw()
    }

    #[test]
    fn without_a_window_the_full_range_of_values_is_shown() {
        let (data, frame) = mono16(&[1000, 1500, 2000, 3000]);
        let frame = Frame { data: &data, ..frame };
        assert_eq!(gray(&frame), [0, 64, 128, 255]);
        let (flat, frame) = mono16(&[7, 7]);
        assert_eq!(gray(&Frame { data: &flat, ..frame }), [0, 0]);
    }

    #[test]
    fn monochrome1_is_inverted() {
        let (data, frame) = mono16(&[0, 100, 400]);
        let frame = Frame { data: &data, colour: Colour::Monochrome1, ..frame };
        assert_eq!(gray(&frame), [255, 191, 0]);
    }

    #[test]
    fn rescale_comes_before_the_window() {
        // CT-like: stored 0..4095, intercept −1024 → HU −1024, −850, −600, 150, 3071; a window
        // of center −600, width 700 in HU shows −950..−251.
        let (data, frame) = mono16(&[0, 174, 424, 1174, 4095]);
        let window = Window::usable(-600.0, 700.0);
        let frame = Frame { data: &data, intercept: -1024.0, window, ..frame };
        assert_eq!(gray(&frame), [0, 36, 128, 255, 255]);
        let halved = Frame { slope: 0.5, intercept: 0.0, window: None, ..frame };
        assert_eq!(
            gray(&halved),
            gray(&Frame { window: None, ..frame }),
            "min–max is invariant to a positive linear rescale"
        );
    }

    #[test]
    fn windows_follow_the_dicom_linear_formula() {
        let w = Window::usable(40.0, 400.0).unwrap();
        assert_eq!(
            (w.apply(-160.0), w.apply(-159.0), w.apply(40.0), w.apply(239.5), w.apply(240.0)),
            (0, 1, 128, 255, 255)
        );
        let narrow = Window::usable(100.0, 1.0).unwrap();
        assert_eq!((narrow.apply(99.5), narrow.apply(99.6)), (0, 255));
        for (c, w) in [(0.0, 0.5), (f64::NAN, 10.0), (0.0, f64::INFINITY)] {
            assert_eq!(Window::usable(c, w), None);
        }
    }

    #[test]
    fn twelve_signed_bits_are_masked_and_sign_extended() {
        // 12 bits stored in 16, high bit 11: the top nibble holds overlay bits to ignore.
        let words: [u16; 3] = [0xF800, 0x07FF, 0x0000]; // −2048, +2047, 0
        let data: Vec<u8> = words.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (_, frame) = mono16(&[]);
        let frame =
            Frame { width: 3, data: &data, bits_stored: 12, high_bit: 11, signed: true, ..frame };
        assert_eq!((frame.sample(0), frame.sample(1), frame.sample(2)), (-2048, 2047, 0));
        assert_eq!(gray(&frame), [0, 255, 128]);
        let shifted = [0x0010u16.to_le_bytes(), 0xFFF0u16.to_le_bytes()].concat();
        let frame = Frame {
            width: 2,
            data: &shifted,
            bits_stored: 12,
            high_bit: 15,
            signed: false,
            ..frame
        };
        assert_eq!((frame.sample(0), frame.sample(1)), (1, 4095));
    }

    #[test]
    fn rgb_is_scaled_to_8_bits_interleaved_or_planar() {
        let (_, frame) = mono16(&[]);
        let interleaved: Vec<u8> =
            [65535u16, 0, 32768, 0, 65535, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let rgb = Frame { width: 2, colour: Colour::Rgb, data: &interleaved, ..frame.clone() };
        assert_eq!(rgb.to_image().unwrap().to_rgb8().into_raw(), [255, 0, 128, 0, 255, 0]);
        let planar = [200u8, 10, 100, 20, 0, 30];
        let rgb8 = Frame {
            width: 2,
            colour: Colour::Rgb,
            planar: true,
            bits_allocated: 8,
            bits_stored: 8,
            high_bit: 7,
            data: &planar,
            ..frame
        };
        assert_eq!(rgb8.to_image().unwrap().to_rgb8().into_raw(), [200, 100, 0, 10, 20, 30]);
    }

    #[test]
    fn unusable_layouts_are_refused() {
        let (data, frame) = mono16(&[1, 2]);
        let ok = Frame { data: &data, ..frame };
        assert!(ok.check().is_ok());
        let cases = [
            (Frame { bits_allocated: 32, ..ok.clone() }, "32 bits allocated"),
            (Frame { bits_stored: 0, ..ok.clone() }, "0 stored"),
            (Frame { high_bit: 8, ..ok.clone() }, "high bit 8"),
            (Frame { width: 3, ..ok.clone() }, "holds 4 bytes, too few for 3×1"),
            (Frame { width: u32::MAX, height: u32::MAX, ..ok.clone() }, "too few"),
            (Frame { height: 0, ..ok.clone() }, "2×0 pixels"),
            (Frame { slope: f64::NAN, ..ok.clone() }, "invalid DICOM rescale"),
            (Frame { colour: Colour::Rgb, signed: true, ..ok.clone() }, "signed RGB"),
        ];
        for (frame, needle) in cases {
            let err = frame.check().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn dicom_is_recognised_by_its_magic() {
        let mut file = vec![0u8; 132];
        file[128..].copy_from_slice(b"DICM");
        assert!(
            is_dicom(&file)
                && is_dicom(b"DICM\x02\x00")
                && !is_dicom(&file[..131])
                && !is_dicom(b"\x89PNG")
        );
        assert!(decode(&file).unwrap_err().starts_with("cannot read DICOM file"));
        assert!(
            check_transfer_syntax("1.2.840.10008.1.2.4.90\0")
                .unwrap_err()
                .contains("unsupported DICOM transfer syntax 1.2.840.10008.1.2.4.90 (JPEG 2000")
        );
        assert!(
            check_transfer_syntax("1.2.3.4")
                .unwrap_err()
                .contains("unknown DICOM transfer syntax 1.2.3.4")
        );
        assert!(check_transfer_syntax("1.2.840.10008.1.2.5").is_ok(), "RLE");
    }
}
