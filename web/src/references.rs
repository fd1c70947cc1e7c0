//! The reference images a user picks: decoded from PNG/JPEG/DICOM bytes into the bundle's shape,
//! with a notice when one had to be converted or resized, and labelled from an optional
//! filelist.

use std::path::Path;

use image::imageops::FilterType;
use unpersonal_runtime::data::filelist;
use unpersonal_runtime::identity::Identity;
use unpersonal_runtime::pixels::{decode_identified, push_chw};

/// One reference image in memory.
#[derive(Clone, Debug)]
pub struct Reference {
    /// The name it was picked under (a path inside a picked folder, or a file name).
    pub name: String,
    /// CHW pixels in the bundle's shape.
    pub pixels: Vec<u8>,
    /// Its labels, when a filelist gave them.
    pub labels: Option<Vec<f32>>,
    /// Who it shows, when the file says (a DICOM file's PatientID, hashed).
    pub identity: Option<Identity>,
}

/// Decodes `bytes` (the file `name`) into `[channels, height, width]` pixels. An image of
/// another size is resized, one with other channels converted; both say so in the returned
/// notice. A file that is not a PNG, JPEG or DICOM image is an error naming it. Nothing of a
/// DICOM header but the hashed PatientID is kept.
pub fn decode_reference(
    name: &str,
    bytes: &[u8],
    [channels, height, width]: [usize; 3],
) -> Result<(Reference, Option<String>), String> {
    let (mut img, identity) =
        decode_identified(bytes).map_err(|problem| format!("{name}: {problem}"))?;
    let mut notices = Vec::new();
    let have = usize::from(img.color().channel_count()) - usize::from(img.color().has_alpha());
    if have != channels {
        let kind = |c| if c == 1 { "grayscale" } else { "colour" };
        notices.push(format!("converted from {} to {}", kind(have), kind(channels)));
    }
    if (img.height() as usize, img.width() as usize) != (height, width) {
        notices.push(format!("resized from {}×{} to {height}×{width}", img.height(), img.width()));
        img = img.resize_exact(width as u32, height as u32, FilterType::Triangle);
    }
    let mut pixels = Vec::with_capacity(channels * height * width);
    push_chw(&mut pixels, &img, channels);
    let notice = (!notices.is_empty()).then(|| format!("{name}: {}", notices.join(", ")));
    Ok((Reference { name: name.to_string(), pixels, labels: None, identity }, notice))
}

/// Labels `references` from the filelist `text` (`path l0 l1 …`, paths relative to the
/// filelist): a reference takes the labels of the line whose path its name ends with. Every
/// line must have `count` labels; every reference must be named by a line.
pub fn label(
    references: &mut [Reference],
    list_name: &str,
    text: &str,
    count: usize,
) -> Result<(), String> {
    let rows = filelist::parse(Path::new(list_name), text).map_err(|e| e.to_string())?;
    if let Some(row) = rows.iter().find(|r| r.labels.len() != count) {
        return Err(format!(
            "{list_name} line {}: {} labels, the bundle has {count}",
            row.line,
            row.labels.len()
        ));
    }
    for reference in references.iter_mut() {
        let name = reference.name.as_str();
        // A file picked on its own has no folder: it matches by file name alone.
        let bare = !name.contains('/');
        let named: Vec<_> = rows
            .iter()
            .filter(|r| {
                let path = r.path.to_string_lossy();
                name == path
                    || name.ends_with(&format!("/{path}"))
                    || (bare && r.path.file_name().is_some_and(|f| f == name))
            })
            .collect();
        match named[..] {
            [row] => reference.labels = Some(row.labels.clone()),
            [] => return Err(format!("{name}: not named in {list_name}")),
            [a, b, ..] => {
                return Err(format!(
                    "{name}: named by lines {} and {} of {list_name}; pick the folder to tell them apart",
                    a.line, b.line
                ));
            }
        }
    }
    Ok(())
}

/// The image paths a filelist names, in order (for fetching the bundle's shipped sample).
pub fn filelist_paths(list_name: &str, text: &str) -> Result<Vec<String>, String> {
    let rows = filelist::parse(Path::new(list_name), text).map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|r| r.path.to_string_lossy().into_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use unpersonal_runtime::pixels::encode_png;

    #[test]
    fn wrong_sizes_and_channels_are_converted_with_a_notice() {
        let png = encode_png(&[100; 56 * 56 * 3], 3, 56, 56).unwrap();
        let (r, notice) = decode_reference("a.png", &png, [1, 28, 28]).unwrap();
        assert_eq!(r.pixels.len(), 28 * 28);
        let notice = notice.unwrap();
        assert!(
            notice.contains("a.png")
                && notice.contains("resized from 56×56")
                && notice.contains("colour to grayscale"),
            "{notice}"
        );
        let exact = encode_png(&[7; 28 * 28], 1, 28, 28).unwrap();
        assert_eq!(decode_reference("b.png", &exact, [1, 28, 28]).unwrap().1, None);
        let error = decode_reference("notes.txt", b"hello", [1, 28, 28]).unwrap_err();
        assert!(error.starts_with("notes.txt: cannot decode image"), "{error}");
    }

    #[test]
    fn dicom_references_decode_with_their_patient() {
        let mr = include_bytes!("../../tests/data/dicom/MR_small.dcm");
        let (r, notice) = decode_reference("series/MR_small.dcm", mr, [1, 28, 28]).unwrap();
        assert_eq!(r.pixels.len(), 28 * 28);
        assert!(r.identity.is_some());
        assert!(notice.unwrap().contains("resized from 64×64 to 28×28"));
        let rgb = include_bytes!("../../tests/data/dicom/SC_rgb_small_odd.dcm");
        let (r, _) = decode_reference("rgb.dcm", rgb, [3, 3, 3]).unwrap();
        assert_eq!(&r.pixels[..3], &[166, 166, 166], "the red plane of the first row");
        let j2k = include_bytes!("../../tests/data/dicom/JPEG2000.dcm");
        let error = decode_reference("nm.dcm", j2k, [1, 28, 28]).unwrap_err();
        assert!(
            error.starts_with("nm.dcm: unsupported DICOM transfer syntax 1.2.840.10008.1.2.4.91"),
            "{error}"
        );
    }

    #[test]
    fn filelists_label_by_path_suffix_and_refuse_mismatches() {
        let png = encode_png(&[0; 4], 1, 2, 2).unwrap();
        let mut refs = vec![
            decode_reference("scan/images/a.png", &png, [1, 2, 2]).unwrap().0,
            decode_reference("b.png", &png, [1, 2, 2]).unwrap().0,
        ];
        label(&mut refs, "filelist.txt", "images/a.png 0 1\nb.png 1 0\n", 2).unwrap();
        assert_eq!(refs[0].labels.as_deref(), Some(&[0.0, 1.0][..]));
        assert!(
            label(&mut refs, "filelist.txt", "images/a.png 0 1 0\nb.png 1 0 0\n", 2)
                .unwrap_err()
                .contains("3 labels, the bundle has 2")
        );
        assert!(
            label(&mut refs, "filelist.txt", "images/a.png 0 1\n", 2)
                .unwrap_err()
                .contains("b.png: not named")
        );
        assert!(
            label(&mut refs, "filelist.txt", "../a.png 0 1\n", 2).unwrap_err().contains("escapes")
        );
        assert_eq!(filelist_paths("f", "# c\nx.png 1\ny.png 0\n").unwrap(), ["x.png", "y.png"]);
        let mut single = vec![decode_reference("a.png", &png, [1, 2, 2]).unwrap().0];
        label(&mut single, "filelist.txt", "images/a.png 1 0\n", 2).unwrap();
        assert_eq!(single[0].labels.as_deref(), Some(&[1.0, 0.0][..]));
        assert!(
            label(&mut single, "filelist.txt", "x/a.png 1 0\ny/a.png 0 1\n", 2)
                .unwrap_err()
                .contains("lines 1 and 2")
        );
    }
}
