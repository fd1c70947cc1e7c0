//! Declared lengths checked against the file before dicom-rs parses it. dicom-rs reserves
//! memory for an element's declared length before it reads the value, so a few kilobytes
//! declaring a 4 GiB element would cost 4 GiB (found by fuzzing). This walk reads only element
//! headers: every defined length must fit in the bytes that remain.
//!
//! Sequences and their items are walked into (their elements are checked too); the fragments
//! of encapsulated pixel data are skipped like values. Deflated data sets and values of VR UN
//! with undefined length (an implicit-VR data set inside an explicit one) end the walk: their
//! headers cannot be read in place.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// An undefined length.
const UNDEFINED: u32 = u32::MAX;
/// The deflated explicit VR little endian transfer syntax.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// How the elements at hand are encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Encoding {
    ExplicitLittle,
    ImplicitLittle,
    ExplicitBig,
}

/// Checks every length `body` (a DICOM file from its `DICM` magic on) declares. The error
/// names the element.
pub(super) fn check(body: &[u8]) -> Result<(), String> {
    walk(body, &mut 0)
}

/// How many bytes at the start of `body` (a DICOM file from its magic on, or only the start of
/// one) hold nothing but elements whose lengths were checked: all of it when [`check`] passes,
/// else up to the element header it fails on. Whatever parses these bytes never meets a length
/// that runs past them.
pub(super) fn checked_prefix(body: &[u8]) -> usize {
    let mut start = 0;
    match walk(body, &mut start) {
        Ok(()) => body.len(),
        Err(_) => start,
    }
}

/// [`check`], keeping in `start` where the element (or item) at hand begins.
fn walk(body: &[u8], start: &mut usize) -> Result<(), String> {
    let mut pos = 4;
    let mut encoding = Encoding::ExplicitLittle;
    let mut meta = true;
    let mut syntax = String::new();
    let mut fragments = false;
    while pos < body.len() {
        *start = pos;
        if meta && u16_at(body, pos, false)? != 0x0002 {
            meta = false;
            let uid = syntax.trim_end_matches(['\0', ' ']);
            encoding = match uid {
                DEFLATED => return Ok(()),
                "1.2.840.10008.1.2" => Encoding::ImplicitLittle,
                "1.2.840.10008.1.2.2" => Encoding::ExplicitBig,
                _ => Encoding::ExplicitLittle,
            };
        }
        let big = encoding == Encoding::ExplicitBig;
        let tag = Tag(u16_at(body, pos, big)?, u16_at(body, pos + 2, big)?);
        if tag.0 == 0xFFFE {
            // Item and delimiters: a 4-byte length and no VR in every encoding.
            let length = u32_at(body, pos + 4, big)?;
            pos += 8;
            match tag.1 {
                0xE000 if fragments => pos = skip(body, pos, length, tag)?,
                0xE000 => fits(body, pos, length, tag)?,
                0xE0DD => fragments = false,
                _ => {}
            }
            continue;
        }
        let (vr, length, header) = match encoding {
            Encoding::ImplicitLittle => (
                StandardDataDictionary.by_tag(tag).and_then(|e| e.vr().exact()),
                u32_at(body, pos + 4, false)?,
                8,
            ),
            Encoding::ExplicitLittle | Encoding::ExplicitBig => {
                let code = [byte_at(body, pos + 4)?, byte_at(body, pos + 5)?];
                let vr = VR::from_binary(code);
                if vr.is_some_and(long_length) {
                    (vr, u32_at(body, pos + 8, big)?, 12)
                } else {
                    (vr, u32::from(u16_at(body, pos + 6, big)?), 8)
                }
            }
        };
        if meta && tag == Tag(0x0002, 0x0010) {
            let end = pos + header + length as usize;
            syntax = String::from_utf8_lossy(
                body.get(pos + header..end)
                    .ok_or_else(|| too_long(tag, length, body.len() - pos - header))?,
            )
            .into_owned();
        }
        pos += header;
        match (length, vr) {
            (UNDEFINED, Some(VR::UN)) => return Ok(()),
            (UNDEFINED, _) => fragments |= tag == Tag(0x7FE0, 0x0010),
            (_, Some(VR::SQ)) => fits(body, pos, length, tag)?,
            _ => pos = skip(body, pos, length, tag)?,
        }
    }
    Ok(())
}

/// Whether explicit VR `vr` has a 4-byte length (after two reserved bytes).
fn long_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    )
}

fn too_long(tag: Tag, length: u32, remaining: usize) -> String {
    format!(
        "element ({:04X},{:04X}) declares {length} bytes, but only {remaining} remain in the file (truncated or corrupt)",
        tag.0, tag.1
    )
}

/// Checks that `length` bytes fit after `pos`.
fn fits(body: &[u8], pos: usize, length: u32, tag: Tag) -> Result<(), String> {
    let remaining = body.len().saturating_sub(pos);
    if length != UNDEFINED && length as usize > remaining {
        return Err(too_long(tag, length, remaining));
    }
    Ok(())
}

/// The position after a value of `length` bytes at `pos`.
fn skip(body: &[u8], pos: usize, length: u32, tag: Tag) -> Result<usize, String> {
    if length == UNDEFINED {
        return Err(format!(
            "element ({:04X},{:04X}) has an undefined length where a value is expected",
            tag.0, tag.1
        ));
    }
    fits(body, pos, length, tag)?;
    Ok(pos + length as usize)
}

fn byte_at(body: &[u8], pos: usize) -> Result<u8, String> {
    body.get(pos)
        .copied()
        .ok_or_else(|| format!("the file ends inside an element header at byte {pos}"))
}

fn u16_at(body: &[u8], pos: usize, big: bool) -> Result<u16, String> {
    let b = [byte_at(body, pos)?, byte_at(body, pos + 1)?];
    Ok(if big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
}

fn u32_at(body: &[u8], pos: usize, big: bool) -> Result<u32, String> {
    let b = [
        byte_at(body, pos)?,
        byte_at(body, pos + 1)?,
        byte_at(body, pos + 2)?,
        byte_at(body, pos + 3)?,
    ];
    Ok(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `DICM`, a transfer syntax element, then `data`.
    fn file(syntax: &str, data: &[u8]) -> Vec<u8> {
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut out = b"DICM".to_vec();
        out.extend([0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        out.extend((uid.len() as u16).to_le_bytes());
        out.extend(uid);
        out.extend(data);
        out
    }

    #[test]
    fn declared_lengths_must_fit() {
        // (0010,0010) PN of 4 bytes: fits; then OB with a 4 GiB − 2 declared length.
        let ok = [0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'A', b'B', b'C', b'D'];
        assert_eq!(check(&file("1.2.840.10008.1.2.1", &ok)), Ok(()));
        let mut huge = ok.to_vec();
        huge.extend([0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFE, 0xFF, 0xFF, 0xFF, 1, 2]);
        let error = check(&file("1.2.840.10008.1.2.1", &huge)).unwrap_err();
        assert!(
            error.contains("(7FE0,0010) declares 4294967294 bytes")
                && error.contains("only 2 remain"),
            "{error}"
        );
        // The same in implicit VR: the dictionary is not needed for the length.
        let implicit = [0xE0, 0x7F, 0x10, 0x00, 0x00, 0x00, 0x00, 0x10, 1];
        assert!(
            check(&file("1.2.840.10008.1.2", &implicit))
                .unwrap_err()
                .contains("declares 268435456 bytes")
        );
    }

    #[test]
    fn a_prefix_is_checked_up_to_the_element_that_runs_past_it() {
        let name = [0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'A', b'B', b'C', b'D'];
        let mut data = name.to_vec();
        data.extend([0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0, 1, 0, 0, 1, 2]);
        let body = file("1.2.840.10008.1.2.1", &data);
        let pixel_data = body.len() - 14;
        assert_eq!(checked_prefix(&body), pixel_data, "256 bytes declared, 2 present");
        assert_eq!(checked_prefix(&body[..pixel_data + 3]), pixel_data, "a header cut short");
        let whole = file("1.2.840.10008.1.2.1", &name);
        assert_eq!(checked_prefix(&whole), whole.len());
    }

    #[test]
    fn sequences_are_walked_into_and_fragments_skipped() {
        // SQ of undefined length, one item of undefined length holding an element that lies.
        let mut data = vec![0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        data.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend([0x08, 0x00, 0x50, 0x11, b'U', b'I', 0xFF, 0x7F]);
        assert!(
            check(&file("1.2.840.10008.1.2.1", &data))
                .unwrap_err()
                .contains("(0008,1150) declares 32767")
        );
        // Encapsulated pixel data: an empty offset table and one 4-byte fragment, then the end.
        let mut pixels = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        pixels.extend([0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        pixels.extend([0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 0xFE, 0xFF, 0x00, 0xE0]);
        pixels.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(check(&file("1.2.840.10008.1.2.4.50", &pixels)), Ok(()));
        // A header cut short is named.
        assert!(
            check(&file("1.2.840.10008.1.2.1", &[0x10, 0x00, 0x10]))
                .unwrap_err()
                .contains("ends inside an element header")
        );
    }
}
