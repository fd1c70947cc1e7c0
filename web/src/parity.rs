//! The runtime's WebGPU parity cases (`unpersonal_runtime::parity`) in a browser: every case
//! on the browser's WebGPU adapter against tract compiled to wasm in the same page, and the
//! denoiser's speed on either. Cargo feature `parity` only, never in the shipped page:
//! `scripts/parity.sh` builds it with wasm-bindgen and `tests/web/parity.test.mjs` runs it in
//! headless Chromium and asserts the bounds. Natively the same cases run in the runtime's
//! tests.

use std::path::Path;

use js_sys::Map;
use unpersonal_runtime::backend::webgpu::WebGpu;
use unpersonal_runtime::backend::{Backend, Tract};
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::parity::{self, Case, Difference};
use wasm_bindgen::prelude::*;

/// Every kernel case's differences, as a JSON array of `{case, output, max, bound}`.
#[wasm_bindgen]
pub async fn kernels() -> Result<String, JsError> {
    compare_all(parity::kernels()).await
}

/// The differences of every model of the bundle `name` (`files`: a `Map` from `bundle.json`
/// and each ONNX file's name to its bytes), as for [`kernels`].
#[wasm_bindgen]
pub async fn models(name: String, files: Map) -> Result<String, JsError> {
    compare_all(parity::models(&bundle(&name, &files)?)).await
}

/// Runs the bundle's denoiser `evaluations` times on `batch` random images, on `backend`
/// (`tract` or `webgpu`), after one untimed call that lays the batch size out; JSON
/// `{backend, adapter, batch, evaluations, first_ms, ms}` (`ms`: the timed calls together).
#[wasm_bindgen(js_name = timeDenoiser)]
pub async fn time_denoiser(
    name: String,
    files: Map,
    backend: String,
    batch: usize,
    evaluations: usize,
) -> Result<String, JsError> {
    let bundle = bundle(&name, &files)?;
    let (spec, onnx) = (
        bundle.bundle.model(Role::Denoiser).map_err(error)?,
        bundle.onnx(Role::Denoiser).map_err(error)?,
    );
    let inputs = parity::model_inputs(spec, batch);
    let feed: Vec<_> = inputs.iter().map(|(n, v)| (n.as_str(), v.view())).collect();
    let mut times = Vec::with_capacity(evaluations + 1);
    let adapter = match backend.as_str() {
        "tract" => {
            let mut session = Tract::default().load(onnx, spec).map_err(error)?;
            for _ in 0..=evaluations {
                let start = js_sys::Date::now();
                session.run(&feed).map_err(error)?;
                times.push(js_sys::Date::now() - start);
            }
            "the CPU (tract, wasm)".to_string()
        }
        "webgpu" => {
            let gpu = WebGpu::open().await.map_err(error)?;
            let mut session = gpu.session(onnx, spec).map_err(error)?;
            for _ in 0..=evaluations {
                let start = js_sys::Date::now();
                session.run_async(&feed).await.map_err(error)?;
                times.push(js_sys::Date::now() - start);
            }
            gpu.adapter()
        }
        other => return Err(JsError::new(&format!("no backend `{other}` (tract or webgpu)"))),
    };
    let json = serde_json::json!({
        "backend": backend, "adapter": adapter, "batch": batch, "evaluations": evaluations,
        "first_ms": times[0], "ms": times[1..].iter().sum::<f64>(),
    });
    Ok(json.to_string())
}

/// Compares every case on the browser's adapter; JSON of the differences.
async fn compare_all(cases: Vec<Case>) -> Result<String, JsError> {
    let gpu = WebGpu::open().await.map_err(error)?;
    let mut differences: Vec<Difference> = Vec::new();
    for case in &cases {
        differences.extend(parity::compare(&gpu, case).await.map_err(error)?);
    }
    serde_json::to_string(&differences).map_err(error)
}

/// The bundle `name` from the page's `files` (see `openSession`), verified.
fn bundle(name: &str, files: &Map) -> Result<BundleDir, JsError> {
    BundleDir::read_with(Path::new(name), crate::bindings::reader(name, files)).map_err(error)
}

fn error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}
