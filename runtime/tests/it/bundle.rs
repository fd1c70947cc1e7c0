//! Reading and verifying bundles: every bad input gives an error naming the file and problem.

use serde_json::{Value, json};
use unpersonal_runtime::bundle::{
    Bundle, BundleDir, BundleError, Dim, Role, SamplerSpec, sha256_hex,
};

use crate::common::{Body, bundle_json, denoiser, denoiser_entry, features, features_entry};

fn onnx() -> Vec<u8> {
    denoiser(Body::Scale(0.5))
}

fn valid() -> Value {
    bundle_json(json!({ "denoiser": denoiser_entry("denoiser.onnx", &onnx()) }))
}

fn parse(value: &Value) -> Result<Bundle, BundleError> {
    Bundle::from_json(&value.to_string())
}

fn assert_mentions(error: &BundleError, needles: &[&str]) {
    let message = error.to_string();
    for needle in needles {
        assert!(message.contains(needle), "message {message:?} does not mention {needle:?}");
    }
}

#[test]
fn valid_bundle_parses_and_verifies() {
    let bundle = parse(&valid()).unwrap();
    bundle.verify(Role::Denoiser, &onnx()).unwrap();
    let spec = bundle.model(Role::Denoiser).unwrap();
    assert_eq!(spec.input("condition").unwrap().shape, vec![Dim::Batch, Dim::Fixed(3)]);
    assert_eq!(bundle.edm.as_ref().unwrap().sigma_data, 0.5);
}

#[test]
fn sampler_defaults_apply_when_absent_and_fields_override() {
    let bundle = parse(&valid()).unwrap();
    assert_eq!(bundle.sampler, SamplerSpec::default());
    let s = &bundle.sampler;
    assert_eq!(
        (
            s.steps,
            s.sigma_min,
            s.sigma_max,
            s.rho,
            s.guidance,
            s.candidates_per_image,
            s.guidance_decrement,
            s.max_rounds
        ),
        (18, 0.002, 80.0, 7.0, 1.3, 32, 0.1, 3)
    );
    let mut value = valid();
    value["sampler"] = json!({ "steps": 32, "guidance": 1.2, "guidance_interval": [0.3, 5.0] });
    let bundle = parse(&value).unwrap();
    assert_eq!((bundle.sampler.steps, bundle.sampler.guidance, bundle.sampler.rho), (32, 1.2, 7.0));
    assert_eq!(bundle.sampler.guidance_interval, Some([0.3, 5.0]));
}

#[test]
fn the_trainers_classifier_bundle_parses() {
    // The shape of what `unpersonal-train` writes today (trainer/src/bundle.rs).
    let text = r#"{
      "schema_version": 1,
      "name": "fashion-mnist",
      "image": { "channels": 1, "height": 28, "width": 28,
                 "normalization": { "mean": 0.5, "std": 0.5, "formula": "x = (pixel / 255 - mean) / std" } },
      "labels": { "count": 10, "multi_label": false },
      "models": { "classifier": {
        "file": "classifier.onnx",
        "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "inputs": [ { "name": "image", "shape": ["batch", 1, 28, 28] } ],
        "outputs": [ { "name": "logits", "shape": ["batch", 10] }, { "name": "features", "shape": ["batch", 96] } ],
        "provenance": { "architecture": { "kind": "cnn" }, "dataset": "fashion-mnist/train", "steps": 7020,
                        "trainer": "unpersonal-trainer 0.1.0", "metrics": { "test_accuracy": 0.91 } } } }
    }"#;
    let bundle = Bundle::from_json(text).unwrap();
    let classifier = bundle.model(Role::Classifier).unwrap();
    assert_eq!(classifier.output("features").unwrap().shape, vec![Dim::Batch, Dim::Fixed(96)]);
    assert_eq!(classifier.provenance["steps"], 7020);
    assert!(bundle.edm.is_none() && bundle.reid.is_none());
}

#[test]
fn wrong_hash_names_file_and_hash() {
    let mut value = valid();
    value["models"]["denoiser"]["sha256"] = json!(sha256_hex(b"something else"));
    let error = parse(&value).unwrap().verify(Role::Denoiser, &onnx()).unwrap_err();
    assert!(matches!(error, BundleError::Hash { .. }), "{error}");
    assert_mentions(&error, &["denoiser.onnx", "sha256", &sha256_hex(&onnx())]);
}

#[test]
fn onnx_interface_differing_from_bundle_json_names_file_and_tensor() {
    // bundle.json consistently says 5×5 images; the file takes 4×4.
    let mut value = valid();
    value["image"]["width"] = json!(5);
    value["image"]["height"] = json!(5);
    value["models"]["denoiser"]["inputs"][0]["shape"] = json!(["batch", 1, 5, 5]);
    value["models"]["denoiser"]["outputs"][0]["shape"] = json!(["batch", 1, 5, 5]);
    let error = parse(&value).unwrap().verify(Role::Denoiser, &onnx()).unwrap_err();
    assert!(matches!(error, BundleError::Interface { .. }), "{error}");
    assert_mentions(
        &error,
        &["denoiser.onnx", "input `x`", "[batch, 1, 4, 4]", "[batch, 1, 5, 5]"],
    );
}

#[test]
fn onnx_with_renamed_output_is_refused() {
    let mut value = valid();
    value["models"]["denoiser"]["outputs"][0]["name"] = json!("out");
    // `out` is not what the denoiser role needs: refused while reading bundle.json.
    let error = parse(&value).unwrap_err();
    assert_mentions(&error, &["bundle.json", "models.denoiser.outputs", "denoised"]);
}

#[test]
fn role_shape_disagreeing_with_image_names_field() {
    let mut value = valid();
    value["models"]["denoiser"]["inputs"][0]["shape"] = json!(["batch", 3, 4, 4]);
    let error = parse(&value).unwrap_err();
    assert!(matches!(error, BundleError::Invalid { .. }), "{error}");
    assert_mentions(
        &error,
        &["bundle.json", "models.denoiser.inputs.x.shape", "[batch, 3, 4, 4]", "[batch, 1, 4, 4]"],
    );
}

#[test]
fn condition_size_must_agree_between_features_and_denoiser() {
    let mut value = bundle_json(json!({
        "denoiser": denoiser_entry("denoiser.onnx", &onnx()),
        "features": features_entry("features.onnx", &features(&[0.0; 48])),
    }));
    value["models"]["features"]["outputs"][0]["shape"] = json!(["batch", 7]);
    let error = parse(&value).unwrap_err();
    assert_mentions(
        &error,
        &["models.features.outputs.features.shape", "condition size D", "7", "3"],
    );
}

#[test]
fn missing_role_names_role_and_what_is_there() {
    let error = parse(&valid()).unwrap().verify(Role::Classifier, &onnx()).unwrap_err();
    assert!(matches!(error, BundleError::MissingRole { role: Role::Classifier, .. }), "{error}");
    assert_mentions(&error, &["bundle.json", "models.classifier", "denoiser"]);
}

#[test]
fn unknown_role_names_it() {
    let mut value = valid();
    value["models"]["denoisr"] = value["models"]["denoiser"].clone();
    let error = parse(&value).unwrap_err();
    assert_mentions(&error, &["bundle.json", "denoisr"]);
}

#[test]
fn unknown_schema_version_is_refused() {
    let mut value = valid();
    value["schema_version"] = json!(2);
    let error = parse(&value).unwrap_err();
    assert!(matches!(error, BundleError::SchemaVersion { .. }), "{error}");
    assert_mentions(&error, &["bundle.json", "schema_version is 2", "schema version 1"]);
    value.as_object_mut().unwrap().remove("schema_version");
    assert_mentions(&parse(&value).unwrap_err(), &["bundle.json", "schema_version", "missing"]);
}

#[test]
fn truncated_onnx_is_refused() {
    let bytes = onnx();
    let truncated = &bytes[..bytes.len() / 2];
    // With the original hash the truncation shows as a hash mismatch…
    let error = parse(&valid()).unwrap().verify(Role::Denoiser, truncated).unwrap_err();
    assert!(matches!(error, BundleError::Hash { .. }), "{error}");
    assert_mentions(&error, &["denoiser.onnx", "truncated"]);
    // …and a bundle.json written for the truncated file still does not pass.
    let value = bundle_json(json!({ "denoiser": denoiser_entry("denoiser.onnx", truncated) }));
    let error = parse(&value).unwrap().verify(Role::Denoiser, truncated).unwrap_err();
    assert!(matches!(error, BundleError::NotOnnx { .. }), "{error}");
    assert_mentions(&error, &["denoiser.onnx", "not a valid ONNX model"]);
}

#[test]
fn non_onnx_bytes_are_refused() {
    let junk = b"PNG\x89 definitely not protobuf \xff\xff\xff\xff";
    let value = bundle_json(json!({ "denoiser": denoiser_entry("denoiser.onnx", junk) }));
    let error = parse(&value).unwrap().verify(Role::Denoiser, junk).unwrap_err();
    assert!(
        matches!(error, BundleError::NotOnnx { .. } | BundleError::Interface { .. }),
        "{error}"
    );
    assert_mentions(&error, &["denoiser.onnx"]);
}

#[test]
fn invalid_fields_are_named() {
    let cases = [
        ("/sampler", json!({ "steps": 0 }), "sampler.steps"),
        ("/sampler", json!({ "sigma_min": 100.0 }), "sampler.sigma_max"),
        ("/sampler", json!({ "guidance_interval": [5.0, 0.3] }), "sampler.guidance_interval"),
        ("/image/normalization/std", json!(0.0), "image.normalization.std"),
        ("/edm", json!({ "sigma_data": -1.0 }), "edm.sigma_data"),
        ("/models/denoiser/file", json!("../elsewhere.onnx"), "models.denoiser.file"),
        ("/models/denoiser/sha256", json!("abc"), "models.denoiser.sha256"),
        ("/reid", json!({ "threshold": 1.5 }), "reid.threshold"),
    ];
    for (pointer, replacement, field) in cases {
        let mut value = valid();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target =
            if parent.is_empty() { &mut value } else { value.pointer_mut(parent).unwrap() };
        target[key] = replacement;
        let error = parse(&value).unwrap_err();
        assert_mentions(&error, &["bundle.json", field]);
    }
}

#[test]
fn malformed_shape_entry_is_named() {
    let mut value = valid();
    value["models"]["denoiser"]["inputs"][1]["shape"] = json!(["n"]);
    let error = parse(&value).unwrap_err();
    assert!(matches!(error, BundleError::Json { .. }), "{error}");
    assert_mentions(&error, &["bundle.json", "\"n\""]);
}

#[test]
fn load_dir_reads_verifies_and_names_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny");
    std::fs::create_dir(&path).unwrap();
    let mut value = valid();
    value["name"] = json!("");
    std::fs::write(path.join("bundle.json"), value.to_string()).unwrap();
    let error = BundleDir::load(&path).unwrap_err();
    assert!(matches!(error, BundleError::Io { .. }), "{error}");
    assert_mentions(&error, &["denoiser.onnx"]);

    std::fs::write(path.join("denoiser.onnx"), onnx()).unwrap();
    let loaded = BundleDir::load(&path).unwrap();
    assert_eq!(loaded.bundle.name, "tiny");
    assert_eq!(loaded.onnx(Role::Denoiser).unwrap(), onnx().as_slice());
    assert!(matches!(loaded.onnx(Role::Guide), Err(BundleError::MissingRole { .. })));

    std::fs::write(path.join("denoiser.onnx"), b"tampered").unwrap();
    let error = BundleDir::load(&path).unwrap_err();
    assert_mentions(&error, &["denoiser.onnx", "sha256"]);

    std::fs::write(path.join("bundle.json"), "{ not json").unwrap();
    let error = BundleDir::load(&path).unwrap_err();
    assert_mentions(&error, &["bundle.json"]);
}

/// A valid bundle with a distilled student of `steps` steps.
fn with_student(steps: usize) -> Value {
    let mut value = bundle_json(json!({
        "denoiser": denoiser_entry("denoiser.onnx", &onnx()),
        "student": denoiser_entry("student.onnx", &onnx()),
    }));
    value["sampler"] = json!({ "solver": "dpmpp-2m", "steps": 10, "guidance": 1.7,
                               "guidance_interval": [0.0, 5.0], "distilled": { "steps": steps } });
    value
}

#[test]
fn a_student_and_its_sampler_section_come_together() {
    let bundle = parse(&with_student(4)).unwrap();
    assert_eq!(bundle.sampler.distilled.map(|d| d.steps), Some(4));
    bundle.verify(Role::Student, &onnx()).unwrap();

    let mut value = with_student(4);
    value["sampler"].as_object_mut().unwrap().remove("distilled");
    assert_mentions(&parse(&value).unwrap_err(), &["sampler.distilled", "models.student"]);

    let mut value = with_student(4);
    value["models"].as_object_mut().unwrap().remove("student");
    assert_mentions(&parse(&value).unwrap_err(), &["sampler.distilled", "no `models.student`"]);

    let mut value = valid();
    value["sampler"] = json!({ "solver": "distilled" });
    assert_mentions(&parse(&value).unwrap_err(), &["sampler.solver", "distilled"]);

    assert_mentions(&parse(&with_student(0)).unwrap_err(), &["sampler.distilled.steps"]);
    let mut value = with_student(4);
    value["sampler"]["distilled"]["guidance"] = json!(2.0);
    assert!(parse(&value).is_err(), "an unknown field of sampler.distilled is refused");

    let mut value = with_student(4);
    value["models"].as_object_mut().unwrap().remove("denoiser");
    assert_mentions(&parse(&value).unwrap_err(), &["student", "denoiser"]);
}

#[test]
fn the_distilled_solver_takes_the_students_steps_unguided() {
    use unpersonal_runtime::generate::{Overrides, Settings};
    use unpersonal_runtime::sampler::Solver;
    let bundle = parse(&with_student(4)).unwrap();
    let flag = |s: &str| format!("--{s}");
    let teacher = Settings::resolve(&bundle.sampler, 0, &Overrides::default(), flag).unwrap();
    assert_eq!((teacher.solver, teacher.steps, teacher.guidance), (Solver::DpmPp2M, 10, 1.7));

    let distilled = Overrides { solver: Some(Solver::Distilled), ..Overrides::default() };
    let student = Settings::resolve(&bundle.sampler, 0, &distilled, flag).unwrap();
    assert_eq!((student.solver, student.steps), (Solver::Distilled, 4));
    assert_eq!((student.guidance, student.guidance_interval), (1.0, None));
    assert_eq!(student.guidance_in_round(2), 1.0, "no round is guided");
    let two = Overrides { steps: Some(2), ..distilled.clone() };
    assert_eq!(Settings::resolve(&bundle.sampler, 0, &two, flag).unwrap().steps, 2);

    let guided = Overrides { guidance: Some(2.0), ..distilled.clone() };
    let err = Settings::resolve(&bundle.sampler, 0, &guided, flag).unwrap_err();
    assert!(err.contains("--guidance does not apply"), "{err}");

    // A bundle whose default is the student samples with it unless told otherwise.
    let mut value = with_student(3);
    value["sampler"]["solver"] = json!("distilled");
    let bundle = parse(&value).unwrap();
    let default = Settings::from_bundle(&bundle.sampler, 0);
    assert_eq!((default.solver, default.steps, default.guidance), (Solver::Distilled, 3, 1.0));
    let back = Overrides { solver: Some(Solver::DpmPp2M), ..Overrides::default() };
    let teacher = Settings::resolve(&bundle.sampler, 0, &back, flag).unwrap();
    assert_eq!((teacher.steps, teacher.guidance), (10, 1.7), "the teacher's settings stay");

    let none = parse(&valid()).unwrap();
    let err = Settings::resolve(&none.sampler, 0, &distilled, flag).unwrap_err();
    assert!(err.contains("--solver distilled") && err.contains("no distilled student"), "{err}");
}
