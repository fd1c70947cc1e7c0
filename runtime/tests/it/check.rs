//! `unpersonal check`: copies of reference images fail (exit ≠ 0), distinct images pass.

use crate::cli::unpersonal;
use crate::common::{Body, C, H, W, add_reid, write_bundle};

/// A bundle with the test re-identification model and a reference sample of 6 PNGs.
fn fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir_all(bundle.join("reference/images")).unwrap();
    write_bundle(&bundle, Body::Scale(0.5));
    add_reid(&bundle);
    let mut list = String::new();
    for i in 0..6 {
        image::GrayImage::from_raw(W as u32, H as u32, pattern(i * 13))
            .unwrap()
            .save(bundle.join(format!("reference/images/{i}.png")))
            .unwrap();
        list.push_str(&format!("images/{i}.png 1 0 0 0 0 0 0 0 0 0\n"));
    }
    std::fs::write(bundle.join("reference/filelist.txt"), list).unwrap();
    tmp
}

/// Distinct test images (the same family of patterns as the gate tests).
fn pattern(phase: usize) -> Vec<u8> {
    (0..C * H * W)
        .map(|p| ((((phase + (p / W) * 5 + (p % W) * 3) % 17) as f32 / 8.0) * 127.5) as u8)
        .collect()
}

#[test]
fn copies_fail_and_distinct_images_pass() {
    let tmp = fixture();
    let bundle = tmp.path().join("bundle");
    let copy = bundle.join("reference/images/4.png");
    let fresh = tmp.path().join("fresh.png");
    image::GrayImage::from_raw(W as u32, H as u32, pattern(100)).unwrap().save(&fresh).unwrap();
    let b = bundle.to_str().unwrap();

    let ok = unpersonal(&["check", "--bundle", b, fresh.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("PASS"));

    let bad =
        unpersonal(&["check", "--bundle", b, fresh.to_str().unwrap(), copy.to_str().unwrap()]);
    assert!(!bad.status.success());
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("FAIL") && text.contains("4.png") && text.contains("reference #4"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("1 of 2 images"));

    let json = unpersonal(&["check", "--bundle", b, "--json", copy.to_str().unwrap()]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["images"][0]["passed"], false);
    assert_eq!(value["failed"], 1);
}

#[test]
fn unusable_input_is_named() {
    let tmp = fixture();
    let bundle = tmp.path().join("bundle");
    let b = bundle.to_str().unwrap();
    let big = tmp.path().join("big.png");
    image::GrayImage::new(9, 9).save(&big).unwrap();
    let out = unpersonal(&["check", "--bundle", b, big.to_str().unwrap()]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("image of 9×9 pixels where 4×4")
            && String::from_utf8_lossy(&out.stderr).contains("big.png")
    );

    let text = tmp.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let out = unpersonal(&["check", "--bundle", b, text.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("notes.png"));

    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    write_bundle(&plain, Body::Scale(0.5));
    let out = unpersonal(&["check", "--bundle", plain.to_str().unwrap(), text.to_str().unwrap()]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("no re-identification model")
    );
}
