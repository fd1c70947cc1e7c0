//! Backends behind the `Backend` trait, and the checks `Model` does on every call.

use ndarray::{Array1, Array2, Array4, ArrayD};
use serde_json::json;
use unpersonal_runtime::backend::{BackendError, Model};
use unpersonal_runtime::bundle::{Bundle, Role};

use crate::common::{
    Body, C, D, H, W, backends, bundle_json, denoiser, denoiser_entry, features, features_entry,
};

fn weights() -> Vec<f32> {
    (0..C * H * W * D).map(|i| (i as f32 * 0.37).sin()).collect()
}

fn features_model(backend: &dyn unpersonal_runtime::backend::Backend) -> Model {
    let onnx = features(&weights());
    let bundle = Bundle::from_json(
        &bundle_json(json!({ "features": features_entry("features.onnx", &onnx) })).to_string(),
    )
    .unwrap();
    bundle.verify(Role::Features, &onnx).unwrap();
    Model::load(backend, bundle.model(Role::Features).unwrap(), &onnx).unwrap()
}

fn denoiser_model(backend: &dyn unpersonal_runtime::backend::Backend, body: Body) -> Model {
    let onnx = denoiser(body);
    let bundle = Bundle::from_json(
        &bundle_json(json!({ "denoiser": denoiser_entry("denoiser.onnx", &onnx) })).to_string(),
    )
    .unwrap();
    Model::load(backend, bundle.model(Role::Denoiser).unwrap(), &onnx).unwrap()
}

#[test]
fn runs_any_batch_size_and_matches_a_reference() {
    let w = Array2::from_shape_vec((C * H * W, D), weights()).unwrap();
    for backend in backends() {
        let mut model = features_model(backend.as_ref());
        for batch in [1, 3, 2, 3] {
            let images = Array4::from_shape_fn((batch, C, H, W), |(n, c, y, x)| {
                (n * 31 + c * 7 + y * 5 + x) as f32 / 50.0 - 0.5
            });
            let out = model.run(&[("image", images.view().into_dyn())]).unwrap();
            let expected = images.to_shape((batch, C * H * W)).unwrap().dot(&w);
            let got = &out["features"];
            assert_eq!(got.shape(), &[batch, D], "{}", backend.name());
            let diff = (got - &expected.into_dyn()).iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(diff < 1e-5, "{}: batch {batch} differs by {diff}", backend.name());
        }
    }
}

#[test]
fn nan_output_is_an_error_naming_file_and_output() {
    for backend in backends() {
        let mut model = denoiser_model(backend.as_ref(), Body::Nan);
        let x = Array4::<f32>::ones((2, C, H, W));
        let sigma = Array1::<f32>::ones(2);
        let condition = Array2::<f32>::zeros((2, D));
        let error = model
            .run(&[
                ("x", x.view().into_dyn()),
                ("sigma", sigma.view().into_dyn()),
                ("condition", condition.view().into_dyn()),
                ("condition_mask", sigma.view().into_dyn()),
            ])
            .unwrap_err();
        assert!(matches!(error, BackendError::NonFinite { .. }), "{}: {error}", backend.name());
        let message = error.to_string();
        assert!(
            message.contains("denoiser.onnx")
                && message.contains("`denoised`")
                && message.contains("NaN"),
            "{message}"
        );
    }
}

#[test]
fn inputs_that_do_not_fit_are_refused_before_running() {
    for backend in backends() {
        let mut model = features_model(backend.as_ref());
        let wrong: ArrayD<f32> = ArrayD::zeros(vec![2, C, H, W + 1]);
        let error = model.run(&[("image", wrong.view())]).unwrap_err();
        assert!(matches!(error, BackendError::Input { .. }), "{error}");
        assert!(
            error.to_string().contains("features.onnx") && error.to_string().contains("`image`"),
            "{error}"
        );
        let right: ArrayD<f32> = ArrayD::zeros(vec![2, C, H, W]);
        let error = model.run(&[("image", right.view()), ("extra", right.view())]).unwrap_err();
        assert!(error.to_string().contains("no input `extra`"), "{error}");
        let error = model.run(&[]).unwrap_err();
        assert!(error.to_string().contains("`image` is not given"), "{error}");
        let empty: ArrayD<f32> = ArrayD::zeros(vec![0, C, H, W]);
        assert!(model.run(&[("image", empty.view())]).unwrap_err().to_string().contains("empty"));
    }
}

#[test]
fn a_graph_the_backend_cannot_load_names_the_file() {
    // Verified-looking interface, but the node reads a value nothing produces.
    let mut onnx = features(&weights());
    let needle = b"flat";
    let at = onnx.windows(needle.len()).position(|w| w == needle).unwrap();
    onnx[at..at + needle.len()].copy_from_slice(b"flaw");
    let bundle = Bundle::from_json(
        &bundle_json(json!({ "features": features_entry("features.onnx", &onnx) })).to_string(),
    )
    .unwrap();
    for backend in backends() {
        let error = Model::load(backend.as_ref(), bundle.model(Role::Features).unwrap(), &onnx)
            .unwrap_err();
        assert!(matches!(error, BackendError::Load { .. }), "{error}");
        assert!(error.to_string().contains("features.onnx"), "{error}");
    }
}

#[cfg(feature = "ort")]
#[test]
fn ort_names_a_missing_library() {
    let missing = std::path::Path::new("/nonexistent/libonnxruntime.so.1.31.1");
    let error = unpersonal_runtime::backend::ort::find_library(Some(missing)).unwrap_err();
    assert!(error.to_string().contains("/nonexistent/libonnxruntime.so.1.31.1"), "{error}");
}
