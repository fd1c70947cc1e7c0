//! The browser's generator end to end on the shipped bundle, natively (the same code runs in
//! the Web Worker): references in, gated images out, the zip checked.

use std::io::Read;
use std::path::{Path, PathBuf};

use unpersonal_runtime::backend::webgpu::WebGpu;
use unpersonal_runtime::generate::Overrides;
use unpersonal_web::studio::{Choices, Drawn, Studio};

fn bundle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist")
}

/// Loads the shipped bundle as the worker does: every file through a reader keyed by name.
fn load(tamper: impl Fn(&Path, &mut Vec<u8>)) -> Result<Studio, String> {
    load_on(tamper, None)
}

fn load_on(tamper: impl Fn(&Path, &mut Vec<u8>), gpu: Option<&WebGpu>) -> Result<Studio, String> {
    let dir = bundle_dir();
    let read = |path: &Path| {
        let mut bytes = std::fs::read(dir.join(path.strip_prefix("fashion-mnist").unwrap()))?;
        tamper(path, &mut bytes);
        Ok(bytes)
    };
    Studio::load("fashion-mnist", read, gpu)
}

/// The page's choices: candidates, guidance, steps, seed, rounds (the rest from the bundle).
fn choices(candidates: usize, guidance: f32, steps: usize, seed: u64, rounds: usize) -> Choices {
    let overrides = Overrides {
        candidates: Some(candidates),
        guidance: Some(guidance),
        steps: Some(steps),
        rounds: Some(rounds),
        ..Overrides::default()
    };
    Choices { seed, overrides }
}

/// [`Studio::draw`], waited for (the worker awaits its promise).
fn draw(
    studio: &mut Studio,
    k: usize,
    on_step: &mut dyn FnMut(usize, usize, usize),
) -> Result<Drawn, String> {
    pollster::block_on(studio.draw(k, on_step))
}

/// The first `n` images of the shipped sample with its filelist, picked into `studio`.
fn pick(studio: &mut Studio, n: usize) {
    let sample = bundle_dir().join("reference");
    let list = std::fs::read_to_string(sample.join("filelist.txt")).unwrap();
    let paths = unpersonal_web::references::filelist_paths("filelist.txt", &list).unwrap();
    for path in &paths[..n] {
        let notice = studio
            .add_reference(&format!("picked/{path}"), &std::fs::read(sample.join(path)).unwrap())
            .unwrap();
        assert_eq!(notice, None, "the shipped sample has the bundle's shape");
    }
    studio.label_references("filelist.txt", &list).unwrap();
}

#[test]
fn picked_references_give_a_gated_zip() {
    let mut studio = load(|_, _| {}).unwrap();
    pick(&mut studio, 3);
    studio.configure(&choices(2, 1.2, 4, 3, 2)).unwrap();
    assert!(studio.zip().is_err(), "nothing to download before generating");
    studio.prepare().unwrap();

    let info = studio.info();
    let threshold = info["threshold"].as_f64().unwrap() as f32;
    let mut released = 0;
    for k in 0..3 {
        let mut steps = Vec::new();
        let drawn =
            draw(&mut studio, k, &mut |round, done, total| steps.push((round, done, total)))
                .unwrap();
        assert_eq!(steps.first(), Some(&(0, 1, 4)), "step progress from the first step of round 0");
        assert!(steps.contains(&(0, 4, 4)));
        assert!(drawn.released.len() <= 1);
        for shown in &drawn.released {
            assert!(
                shown
                    .file
                    .as_deref()
                    .is_some_and(|f| f.starts_with("images/") && f.ends_with(".png"))
            );
            assert!(
                shown.score < threshold,
                "a released image scored {} against threshold {threshold}",
                shown.score
            );
        }
        assert_eq!(drawn.rejected.len(), drawn.rejected_per_round.iter().sum::<usize>());
        for shown in &drawn.rejected {
            assert!(
                shown.file.is_none()
                    && shown.reason.as_deref().is_some_and(|r| r.contains("re-identifies"))
            );
        }
        released += drawn.released.len();
    }
    assert!(
        draw(&mut studio, 3, &mut |_, _, _| {}).is_err(),
        "only picked references can be drawn for"
    );

    let zip = studio.zip().unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("images/")).count(), released);
    assert!(
        names.contains(&"filelist.txt".to_string()) && names.contains(&"report.json".to_string())
    );
    assert_eq!(names.len(), released + 2, "only images, filelist and report: {names:?}");
    // The zip's order and times say nothing of the reference order: entries by name, one time.
    let images: Vec<&String> = names.iter().filter(|n| n.starts_with("images/")).collect();
    assert!(
        images.windows(2).all(|pair| pair[0] < pair[1]),
        "entries not in name order: {names:?}"
    );
    for i in 0..archive.len() {
        let entry = archive.by_index(i).unwrap();
        assert_eq!(entry.last_modified(), Some(zip::DateTime::default()), "{}", entry.name());
    }
    let mut text = String::new();
    archive.by_name("filelist.txt").unwrap().read_to_string(&mut text).unwrap();
    assert_eq!(text.lines().count(), released);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 11, "{line}");
        assert!(names.contains(&fields[0].to_string()));
    }
    let mut report = String::new();
    archive.by_name("report.json").unwrap().read_to_string(&mut report).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["privacy_gate"]["applied"], true);
    assert_eq!(report["released_images"], released);
    assert_eq!(report["reference_images"], 3);
    assert_eq!(report["run"]["reference"]["labels"], "filelist");
    assert!(!report.to_string().contains("picked/"), "the report names no reference image");
}

#[test]
fn a_tampered_bundle_file_is_refused_by_name() {
    let error = load(|path, bytes| {
        if path.ends_with("reid_head.onnx") {
            bytes.truncate(bytes.len() / 2);
        }
    })
    .err()
    .unwrap();
    assert!(error.contains("reid_head.onnx"), "{error}");
    let error = Studio::load(
        "fashion-mnist",
        |_| Err(std::io::Error::new(std::io::ErrorKind::NotFound, "gone")),
        None,
    )
    .err()
    .unwrap();
    assert!(error.contains("bundle.json"), "{error}");
}

#[test]
fn unlabelled_references_take_the_classifiers_labels_and_bad_files_are_named() {
    let mut studio = load(|_, _| {}).unwrap();
    assert!(studio.prepare().unwrap_err().contains("no reference images"));
    let error = studio.add_reference("notes.png", b"not an image").unwrap_err();
    assert!(error.contains("notes.png") && error.contains("cannot decode"), "{error}");
    let sample = bundle_dir().join("reference");
    let list = std::fs::read_to_string(sample.join("filelist.txt")).unwrap();
    let path = &unpersonal_web::references::filelist_paths("filelist.txt", &list).unwrap()[0];
    studio.add_reference("a.png", &std::fs::read(sample.join(path)).unwrap()).unwrap();
    studio.configure(&choices(1, 1.2, 2, 0, 1)).unwrap();
    studio.prepare().unwrap();
    draw(&mut studio, 0, &mut |_, _, _| {}).unwrap();
    assert_eq!(
        studio.report()["run"]["reference"]["labels"],
        "predicted by the bundle's classifier"
    );
    assert!(studio.configure(&choices(0, 1.2, 2, 0, 1)).is_err());
}

#[test]
fn the_denoising_loop_on_webgpu_draws_the_images_the_cpu_draws() {
    let gpu = WebGpu::new().expect("a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    let choices = choices(2, 1.4, 6, 5, 1);
    let mut runs = Vec::new();
    for on in [None, Some(&gpu)] {
        let mut studio = load_on(|_, _| {}, on).unwrap();
        assert_eq!(studio.backend().starts_with("webgpu"), on.is_some(), "{}", studio.backend());
        pick(&mut studio, 2);
        studio.configure(&choices).unwrap();
        studio.prepare().unwrap();
        let drawn: Vec<Drawn> =
            (0..2).map(|k| draw(&mut studio, k, &mut |_, _, _| {}).unwrap()).collect();
        assert_eq!(studio.report()["run"]["backend"], studio.backend());
        runs.push(drawn);
    }
    let pixels = |shown: &unpersonal_web::studio::Shown| {
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(&shown.png).unwrap();
        image::load_from_memory(&png).unwrap().to_luma8().into_raw()
    };
    let mut compared = 0;
    for (cpu, gpu) in runs[0].iter().zip(&runs[1]) {
        let (a, b): (Vec<_>, Vec<_>) = (
            cpu.released.iter().chain(&cpu.rejected).collect(),
            gpu.released.iter().chain(&gpu.rejected).collect(),
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            let diff = pixels(x).iter().zip(pixels(y)).map(|(p, q)| p.abs_diff(q)).max().unwrap();
            assert!(
                diff <= 1,
                "an image drawn on WebGPU differs from the CPU's by {diff} in 8-bit pixels"
            );
            compared += 1;
        }
    }
    assert!(compared >= 2);
}

/// The shipped bundle with a student: the denoiser's own file listed again as `student`
/// (same interface), sampling in 2 distilled steps. Checks the plumbing, not distillation.
fn with_student(path: &Path, bytes: &mut Vec<u8>) {
    if path.ends_with("bundle.json") {
        let mut bundle: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        bundle["models"]["student"] = bundle["models"]["denoiser"].clone();
        bundle["sampler"]["distilled"] = serde_json::json!({ "steps": 2 });
        *bytes = serde_json::to_vec(&bundle).unwrap();
    }
}

#[test]
fn the_page_switches_to_the_distilled_student_and_back() {
    let mut studio = load(with_student).unwrap();
    let info = studio.info();
    let solvers: Vec<(&str, u64)> = info["solvers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["solver"].as_str().unwrap(), s["steps"].as_u64().unwrap()))
        .collect();
    assert_eq!(solvers, [("dpmpp-2m", 10), ("distilled", 2)]);
    assert_eq!(info["solvers"][1]["guidance"], 1.0, "the student is unguided");
    pick(&mut studio, 1);

    let student = |guidance: Option<f32>| Choices {
        seed: 0,
        overrides: Overrides {
            solver: Some(unpersonal_runtime::sampler::Solver::Distilled),
            candidates: Some(2),
            rounds: Some(1),
            guidance,
            ..Overrides::default()
        },
    };
    let err = studio.configure(&student(Some(1.5))).unwrap_err();
    assert!(err.contains("guidance does not apply"), "{err}");
    studio.configure(&student(None)).unwrap();
    studio.prepare().unwrap();
    let mut steps = Vec::new();
    draw(&mut studio, 0, &mut |round, done, total| steps.push((round, done, total))).unwrap();
    assert_eq!(steps, [(0, 1, 2), (0, 2, 2)], "two student steps");

    // Back to the teacher: the denoiser is loaded again.
    studio.configure(&choices(2, 1.2, 3, 0, 1)).unwrap();
    studio.prepare().unwrap();
    let mut steps = Vec::new();
    draw(&mut studio, 0, &mut |round, done, total| steps.push((round, done, total))).unwrap();
    assert_eq!(steps.last(), Some(&(0, 3, 3)));

    // The shipped bundle offers only its own solver.
    assert_eq!(load(|_, _| {}).unwrap().info()["solvers"].as_array().unwrap().len(), 1);
}
