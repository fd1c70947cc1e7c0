//! DICOM input: real files (from pydicom's test set, `tests/data/dicom/`) decode to the values
//! the DICOM display pipeline gives, unsupported syntaxes are named, patients become
//! identities, and nothing of a DICOM header reaches a release.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::DynamicImage;
use unpersonal_runtime::data::{FilelistOptions, load_filelist};
use unpersonal_runtime::pixels::decode_identified;

use crate::cli::unpersonal;
use crate::common::{Body, H, W, add_gate, write_bundle};

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/dicom").join(name)
}

fn decode_real(
    name: &str,
) -> Result<(DynamicImage, Option<unpersonal_runtime::identity::Identity>), String> {
    decode_identified(&std::fs::read(real(name)).unwrap())
}

#[test]
fn real_monochrome_files_are_rescaled_and_windowed() {
    // MR_small: 64×64, signed 16-bit MONOCHROME2, window 600/1600. The expected values are the
    // DICOM linear window applied to the stored values (computed independently with pydicom).
    let (mr, identity) = decode_real("MR_small.dcm").unwrap();
    let mr = mr.as_luma8().expect("grayscale");
    assert_eq!(mr.dimensions(), (64, 64));
    assert_eq!(&mr.as_raw()[..6], &[176, 194, 228, 233, 153, 96]);
    assert_eq!(mr.as_raw().iter().map(|&v| u64::from(v)).sum::<u64>(), 463_120);
    // The same data set, RLE-compressed: the same pixels and the same patient.
    let (rle, rle_identity) = decode_real("MR_small_RLE.dcm").unwrap();
    assert_eq!(rle.as_luma8().unwrap(), mr);
    assert!(identity.is_some() && identity == rle_identity);
    let (big_endian, _) = decode_real("MR_small_bigendian.dcm").unwrap();
    assert_eq!(big_endian.as_luma8().unwrap(), mr);
    // CT_small: rescale intercept −1024, no window: the full range of its values.
    let (ct, ct_identity) = decode_real("CT_small.dcm").unwrap();
    let ct = ct.as_luma8().expect("grayscale");
    assert_eq!(ct.dimensions(), (128, 128));
    assert_eq!(&ct.as_raw()[64 * 128..64 * 128 + 6], &[102, 109, 111, 113, 128, 144]);
    assert_eq!(ct.as_raw().iter().map(|&v| u64::from(v)).sum::<u64>(), 1_573_473);
    assert!(ct_identity.is_some() && ct_identity != identity, "another patient");
}

#[test]
fn real_colour_files_decode_uncompressed_rle_and_jpeg() {
    let (odd, _) = decode_real("SC_rgb_small_odd.dcm").unwrap();
    let odd = odd.as_rgb8().expect("RGB");
    assert_eq!(odd.dimensions(), (3, 3));
    assert_eq!(odd.as_raw()[..9], [166, 141, 52, 166, 141, 52, 166, 141, 52]);
    assert_eq!(odd.as_raw()[18..], [158; 9]);
    let (rle, _) = decode_real("SC_rgb_rle.dcm").unwrap();
    let rle = rle.to_rgb8();
    assert_eq!(rle.dimensions(), (100, 100));
    // Bands of pure colour: the top-left pixel is red.
    assert_eq!(rle.get_pixel(0, 0).0, [255, 0, 0]);
    // The same picture as lossy JPEG (baseline, YBR_FULL): within JPEG's error of the RLE one.
    let (jpeg, _) = decode_real("SC_rgb_jpeg_dcmtk.dcm").unwrap();
    let jpeg = jpeg.to_rgb8();
    assert_eq!(jpeg.dimensions(), (100, 100));
    let mean_error = jpeg
        .as_raw()
        .iter()
        .zip(rle.as_raw())
        .map(|(&a, &b)| f64::from(a.abs_diff(b)))
        .sum::<f64>()
        / 30_000.0;
    assert!(mean_error < 4.0, "JPEG differs from RLE by {mean_error} on average");
}

#[test]
fn unsupported_syntaxes_and_broken_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(real("JPEG2000.dcm"), dir.path().join("JPEG2000.dcm")).unwrap();
    let mut truncated = std::fs::read(real("MR_small.dcm")).unwrap();
    truncated.truncate(truncated.len() - 100);
    std::fs::write(dir.path().join("cut.dcm"), truncated).unwrap();
    // Rows 64 → 16384: the header now declares 2 MiB of pixels, the file holds 8 KiB.
    let mut tall = std::fs::read(real("MR_small.dcm")).unwrap();
    let at = tall
        .windows(8)
        .position(|w| w == b"\x28\x00\x10\x00US\x02\x00")
        .expect("MR_small.dcm has Rows")
        + 8;
    tall[at..at + 2].copy_from_slice(&16384u16.to_le_bytes());
    std::fs::write(dir.path().join("tall.dcm"), tall).unwrap();
    let list = dir.path().join("list.txt");
    for (file, needle) in [
        (
            "JPEG2000.dcm",
            "unsupported DICOM transfer syntax 1.2.840.10008.1.2.4.91 (JPEG 2000 Image Compression)",
        ),
        ("cut.dcm", "truncated or corrupt"),
        (
            "tall.dcm",
            "the uncompressed PixelData holds 8192 bytes, the header declares 2097152 (Rows 16384 × Columns 64",
        ),
    ] {
        std::fs::write(&list, format!("{file} 1\n")).unwrap();
        let err = load_filelist(&list, &FilelistOptions::default()).unwrap_err().to_string();
        assert!(
            err.contains("list.txt: line 1: ") && err.contains(needle) && err.contains(file),
            "{err}"
        );
    }
}

/// Header values no release may hold.
const PATIENT_NAME: &str = "Qwertzuiop^Yxcvbnmasd";
const PATIENT_ID: &str = "PID-73914-UNIQUE";
const STUDY_DATE: &str = "19770523";
const SOP_INSTANCE: &str = "1.2.826.0.1.3680043.99.424242";
const STUDY_INSTANCE: &str = "1.2.826.0.1.3680043.99.515151";

/// A DICOM file of one 16-bit MONOCHROME2 `H`×`W` frame, with identifying header values
/// (instance `i`, patient `patient`).
fn write_dicom(path: &Path, i: usize, patient: usize, pixels: &[u16]) {
    let text = |tag, vr, value: String| DataElement::new(tag, vr, PrimitiveValue::from(value));
    let short = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
    let sop = format!("{SOP_INSTANCE}.{i}");
    let object = InMemDicomObject::from_element_iter([
        text(tags::SOP_CLASS_UID, VR::UI, uids::SECONDARY_CAPTURE_IMAGE_STORAGE.into()),
        text(tags::SOP_INSTANCE_UID, VR::UI, sop.clone()),
        text(tags::STUDY_DATE, VR::DA, STUDY_DATE.into()),
        text(tags::PATIENT_NAME, VR::PN, format!("{PATIENT_NAME}{patient}")),
        text(tags::PATIENT_ID, VR::LO, format!("{PATIENT_ID}{patient}")),
        text(tags::STUDY_INSTANCE_UID, VR::UI, format!("{STUDY_INSTANCE}.{patient}")),
        short(tags::SAMPLES_PER_PIXEL, 1),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2".into()),
        short(tags::ROWS, H as u16),
        short(tags::COLUMNS, W as u16),
        short(tags::BITS_ALLOCATED, 16),
        short(tags::BITS_STORED, 16),
        short(tags::HIGH_BIT, 15),
        short(tags::PIXEL_REPRESENTATION, 0),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.iter().copied().collect()),
        ),
    ]);
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .media_storage_sop_class_uid(uids::SECONDARY_CAPTURE_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(sop);
    object.with_meta(meta).unwrap().write_to_file(path).unwrap();
}

/// A folder of `n` DICOM files (two per patient; the last one without the `.dcm` extension)
/// with a `filelist.txt` labelling them for the test bundle's ten classes.
fn dicom_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("series")).unwrap();
    let mut list = String::new();
    for i in 0..n {
        let name =
            if i + 1 == n { format!("series/IM{i:04}") } else { format!("series/IM{i:04}.dcm") };
        let pixels: Vec<u16> =
            (0..H * W).map(|p| 1000 + ((i * 37 + p * 11) % 256) as u16 * 16).collect();
        write_dicom(&dir.join(&name), i, i / 2, &pixels);
        let labels: String = (0..10).map(|k| if k == i % 10 { " 1" } else { " 0" }).collect();
        list.push_str(&format!("{name}{labels}\n"));
    }
    std::fs::write(dir.join("filelist.txt"), list).unwrap();
}

#[test]
fn a_filelist_of_dicom_files_loads_pixels_and_patients() {
    let dir = tempfile::tempdir().unwrap();
    dicom_folder(dir.path(), 5);
    let data =
        load_filelist(&dir.path().join("filelist.txt"), &FilelistOptions::default()).unwrap();
    assert_eq!((data.len(), data.channels, data.height, data.width), (5, 1, H, W));
    assert!(data.identities.iter().all(Option::is_some));
    assert!(
        data.identity(0) == data.identity(1)
            && data.identity(1) != data.identity(2)
            && data.identity(2) == data.identity(3)
    );
    // Each image spans the full 8-bit range (no window in these files).
    for i in 0..5 {
        let image = data.image(i);
        assert_eq!((image.iter().min(), image.iter().max()), (Some(&0), Some(&255)), "image {i}");
    }
    assert!(!format!("{data:?}").contains(PATIENT_ID));
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out
}

#[test]
fn no_dicom_header_value_reaches_the_release() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir(root.join("bundle")).unwrap();
    write_bundle(&root.join("bundle"), Body::Gaussian(0.5));
    add_gate(&root.join("bundle"));
    dicom_folder(&root.join("dicom"), 6);
    let path = |rel: &str| root.join(rel).to_str().unwrap().to_string();
    let result = unpersonal(&[
        "generate",
        "--bundle",
        &path("bundle"),
        "--reference",
        &path("dicom"),
        "--out",
        &path("out"),
        "--candidates",
        "4",
        "--steps",
        "4",
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("out/report.json")).unwrap()).unwrap();
    assert_eq!(report["reference_images"], 6, "{report}");
    assert!(
        report["released_images"].as_u64().unwrap() > 0,
        "the test needs released images: {report}"
    );

    let needles =
        [PATIENT_NAME, "Qwertzuiop", PATIENT_ID, STUDY_DATE, SOP_INSTANCE, STUDY_INSTANCE];
    let mut scanned = 0;
    for dir in ["out", "out-audit"] {
        for file in files(&root.join(dir)) {
            let bytes = std::fs::read(&file).unwrap();
            for needle in needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} holds {needle:?}",
                    file.display()
                );
            }
            scanned += 1;
        }
    }
    assert!(scanned >= 5, "only {scanned} files scanned");
    let output = [result.stdout, result.stderr].concat();
    assert!(
        !needles.iter().any(|n| output.windows(n.len()).any(|w| w == n.as_bytes())),
        "the command's output names a header value"
    );
}
