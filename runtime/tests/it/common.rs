//! Tiny ONNX graphs (built with `unpersonal_runtime::parity::onnx`) and bundles for the tests.

use serde_json::{Value, json};
use unpersonal_runtime::bundle::sha256_hex;
use unpersonal_runtime::parity::onnx::{Graph, int};

/// Image size of the test bundles.
pub const C: usize = 1;
/// Image height of the test bundles.
pub const H: usize = 4;
/// Image width of the test bundles.
pub const W: usize = 4;
/// Condition size of the test bundles.
pub const D: usize = 3;

/// What a test denoiser computes (every variant also reads `x`, so shapes follow the batch).
#[derive(Clone, Debug)]
pub enum Body {
    /// `mu + 0·x`: the exact denoiser when all data is the single point `mu` (`[C·H·W]`).
    Point(Vec<f32>),
    /// `x·σ_d²/(σ² + σ_d²)`: the exact denoiser for data ~ N(0, σ_d²).
    Gaussian(f32),
    /// `k·x`.
    Scale(f32),
    /// `0·x + mask·(cond − uncond) + uncond`: `cond` where `condition_mask` is 1, `uncond` where 0.
    Mask { cond: f32, uncond: f32 },
    /// `ln(−(x² + 1))`: NaN everywhere.
    Nan,
    /// `0·x + reshape(condition)`: returns its conditioning vector as the image. Its bundle
    /// (see [`write_bundle`]) has identity features (D = C·H·W), so every sample is exactly its
    /// reference image: a planted leak.
    Leak,
}

impl Body {
    /// The condition size of a denoiser computing this body.
    pub fn condition_size(&self) -> usize {
        match self {
            Body::Leak => C * H * W,
            _ => D,
        }
    }
}

fn image_dims() -> Vec<Option<i64>> {
    vec![None, Some(C as i64), Some(H as i64), Some(W as i64)]
}

/// A denoiser with the bundle interface (`x`, `sigma`, `condition`, `condition_mask` →
/// `denoised`) computing `body`.
pub fn denoiser(body: Body) -> Vec<u8> {
    let d = body.condition_size();
    let mut g = Graph::default();
    g.f32("zero", &[], &[0.0]);
    g.i64("per_row", &[-1, 1, 1, 1]);
    g.node("Mul", &["x", "zero"], "zero_x");
    match body {
        Body::Point(mu) => {
            g.f32("mu", &[1, C as i64, H as i64, W as i64], &mu);
            g.node("Add", &["zero_x", "mu"], "denoised");
        }
        Body::Gaussian(sigma_data) => {
            g.f32("sd2", &[], &[sigma_data * sigma_data]);
            g.node("Reshape", &["sigma", "per_row"], "s");
            g.node("Mul", &["s", "s"], "s2");
            g.node("Add", &["s2", "sd2"], "var");
            g.node("Div", &["sd2", "var"], "k");
            g.node("Mul", &["x", "k"], "denoised");
        }
        Body::Scale(k) => {
            g.f32("k", &[], &[k]);
            g.node("Mul", &["x", "k"], "denoised");
        }
        Body::Mask { cond, uncond } => {
            g.f32("gap", &[], &[cond - uncond]);
            g.f32("uncond", &[], &[uncond]);
            g.node("Reshape", &["condition_mask", "per_row"], "m");
            g.node("Mul", &["m", "gap"], "mg");
            g.node("Add", &["mg", "uncond"], "level");
            g.node("Add", &["zero_x", "level"], "denoised");
        }
        Body::Nan => {
            g.f32("one", &[], &[1.0]);
            g.node("Mul", &["x", "x"], "x2");
            g.node("Add", &["x2", "one"], "x2_1");
            g.node("Neg", &["x2_1"], "negative");
            g.node("Log", &["negative"], "denoised");
        }
        Body::Leak => {
            g.i64("image_shape", &[-1, C as i64, H as i64, W as i64]);
            g.node("Reshape", &["condition", "image_shape"], "leaked");
            g.node("Add", &["zero_x", "leaked"], "denoised");
        }
    }
    g.encode(
        &[
            ("x", image_dims()),
            ("sigma", vec![None]),
            ("condition", vec![None, Some(d as i64)]),
            ("condition_mask", vec![None]),
        ],
        &[("denoised", image_dims())],
    )
}

/// `flatten(image) · w` into `output` (`w` `[C·H·W, cols]`).
fn flatten_matmul(g: &mut Graph, w: &[f32], cols: usize, output: &str) {
    g.f32("w", &[(C * H * W) as i64, cols as i64], w);
    g.node_with("Flatten", &["image"], "flat", vec![int("axis", 1)]);
    g.node("MatMul", &["flat", "w"], output);
}

/// A features model: `features = flatten(image) · weights` (`weights` `[C·H·W, d]`).
pub fn features(weights: &[f32]) -> Vec<u8> {
    let d = weights.len() / (C * H * W);
    let mut g = Graph::default();
    flatten_matmul(&mut g, weights, d, "features");
    g.encode(&[("image", image_dims())], &[("features", vec![None, Some(d as i64)])])
}

/// A model of an `image` input whose `output` (`[batch, cols]`) is `ln(−(z² + 1))` of a
/// linear map `z`: NaN everywhere.
pub fn nan_model(output: &str, cols: usize) -> Vec<u8> {
    let mut g = Graph::default();
    flatten_matmul(&mut g, &vec![0.1; C * H * W * cols], cols, "z");
    g.f32("one", &[], &[1.0]);
    g.node("Mul", &["z", "z"], "z2");
    g.node("Add", &["z2", "one"], "z2_1");
    g.node("Neg", &["z2_1"], "negative");
    g.node("Log", &["negative"], output);
    g.encode(&[("image", image_dims())], &[(output, vec![None, Some(cols as i64)])])
}

/// Number of classes of the test bundles.
pub const CLASSES: usize = 10;

/// A classifier: `logits = flatten(image) · weights` (`weights` `[C·H·W, CLASSES]`).
pub fn classifier(weights: &[f32]) -> Vec<u8> {
    let mut g = Graph::default();
    flatten_matmul(&mut g, weights, CLASSES, "logits");
    g.encode(&[("image", image_dims())], &[("logits", vec![None, Some(CLASSES as i64)])])
}

/// Embedding size of the test re-identification models.
pub const E: usize = 4;

/// A re-id embedding: `sigmoid(flatten(image) · weights)` (`weights` `[C·H·W, E]`).
pub fn reid_embed(weights: &[f32]) -> Vec<u8> {
    let mut g = Graph::default();
    flatten_matmul(&mut g, weights, E, "z");
    g.node("Sigmoid", &["z"], "embedding");
    g.encode(&[("image", image_dims())], &[("embedding", vec![None, Some(E as i64)])])
}

/// A re-id head: `logit = bias − scale · Σ|a − b|` (same person when the embeddings agree).
pub fn reid_head(scale: f32, bias: f32) -> Vec<u8> {
    let mut g = Graph::default();
    g.f32("w", &[E as i64, 1], &[-scale; E]);
    g.f32("bias", &[1], &[bias]);
    g.node("Sub", &["a", "b"], "d");
    g.node("Abs", &["d"], "ad");
    g.node("MatMul", &["ad", "w"], "m");
    g.node("Add", &["m", "bias"], "logit");
    let e = vec![None, Some(E as i64)];
    g.encode(&[("a", e.clone()), ("b", e)], &[("logit", vec![None, Some(1)])])
}

/// The `bundle.json` entry of a test denoiser file.
pub fn denoiser_entry(file: &str, onnx: &[u8]) -> Value {
    let image = json!(["batch", C, H, W]);
    json!({
        "file": file,
        "sha256": sha256_hex(onnx),
        "inputs": [
            { "name": "x", "shape": image },
            { "name": "sigma", "shape": ["batch"] },
            { "name": "condition", "shape": ["batch", D] },
            { "name": "condition_mask", "shape": ["batch"] },
        ],
        "outputs": [ { "name": "denoised", "shape": image } ],
        "provenance": { "trainer": "tests", "steps": 0 },
    })
}

/// The `bundle.json` entry of a test features file.
pub fn features_entry(file: &str, onnx: &[u8]) -> Value {
    json!({
        "file": file,
        "sha256": sha256_hex(onnx),
        "inputs": [ { "name": "image", "shape": ["batch", C, H, W] } ],
        "outputs": [ { "name": "features", "shape": ["batch", D] } ],
        "provenance": { "dataset": "none" },
    })
}

/// A schema-version-1 `bundle.json` with the given `models` object.
pub fn bundle_json(models: Value) -> Value {
    json!({
        "schema_version": 1,
        "name": "test",
        "image": { "channels": C, "height": H, "width": W,
                   "normalization": { "mean": 0.5, "std": 0.5, "formula": "x = (pixel / 255 - mean) / std" } },
        "labels": { "count": 10, "multi_label": false },
        "models": models,
        "edm": { "sigma_data": 0.5 },
    })
}

/// Every backend this build has: tract, ONNX Runtime with the `ort` feature, WebGPU with the
/// `webgpu` feature.
pub fn backends() -> Vec<Box<dyn unpersonal_runtime::backend::Backend>> {
    #[allow(unused_mut)]
    let mut all: Vec<Box<dyn unpersonal_runtime::backend::Backend>> =
        vec![Box::new(unpersonal_runtime::backend::Tract::default())];
    #[cfg(feature = "ort")]
    {
        use unpersonal_runtime::backend::ort::{Device, Ort};
        all.push(Box::new(
            Ort::new(None, Device::Cpu, 1)
                .expect("the ort feature's tests need the ONNX Runtime library"),
        ));
    }
    #[cfg(feature = "webgpu")]
    all.push(Box::new(
        unpersonal_runtime::backend::webgpu::WebGpu::new().expect(
            "the webgpu feature's tests need a GPU adapter (lavapipe: mesa-vulkan-drivers)",
        ),
    ));
    all
}

/// Writes a bundle with a test denoiser computing `body`, a features model (the identity for
/// [`Body::Leak`]) and 12 sampler steps into `dir`.
pub fn write_bundle(dir: &std::path::Path, body: Body) {
    let d = body.condition_size();
    let weights: Vec<f32> = match body {
        Body::Leak => (0..d * d).map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 }).collect(),
        _ => (0..C * H * W * D).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect(),
    };
    let den = denoiser(body);
    let feat = features(&weights);
    let mut value = bundle_json(json!({
        "denoiser": denoiser_entry("denoiser.onnx", &den),
        "features": features_entry("features.onnx", &feat),
    }));
    // The entries are written for condition size D; the leak's is C·H·W.
    value["models"]["denoiser"]["inputs"][2]["shape"] = json!(["batch", d]);
    value["models"]["features"]["outputs"][0]["shape"] = json!(["batch", d]);
    value["sampler"] = json!({ "steps": 12 });
    std::fs::write(dir.join("bundle.json"), value.to_string()).unwrap();
    std::fs::write(dir.join("denoiser.onnx"), den).unwrap();
    std::fs::write(dir.join("features.onnx"), feat).unwrap();
}

/// The `bundle.json` entries of the test re-identification halves.
pub fn reid_entries(embed: &[u8], head: &[u8]) -> (Value, Value) {
    let e = json!(["batch", E]);
    (
        json!({ "file": "reid_embed.onnx", "sha256": sha256_hex(embed),
                "inputs": [ { "name": "image", "shape": ["batch", C, H, W] } ],
                "outputs": [ { "name": "embedding", "shape": e } ], "provenance": {} }),
        json!({ "file": "reid_head.onnx", "sha256": sha256_hex(head),
                "inputs": [ { "name": "a", "shape": e }, { "name": "b", "shape": e } ],
                "outputs": [ { "name": "logit", "shape": ["batch", 1] } ], "provenance": {} }),
    )
}

/// The re-identification halves used by the tests: embeddings that tell the test images apart,
/// and a head that says "same person" only for nearly equal embeddings (threshold 0.5).
pub fn reid_models() -> (Vec<u8>, Vec<u8>) {
    let weights: Vec<f32> =
        (0..C * H * W * E).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05).collect();
    (reid_embed(&weights), reid_head(40.0, 4.0))
}

/// Adds the test classifier (the gate ranks survivors by it) and re-identification model to
/// the bundle in `dir`: a bundle that `generate` can gate.
pub fn add_gate(dir: &std::path::Path) {
    add_reid(dir);
    let onnx = classifier(
        &(0..C * H * W * CLASSES).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.05).collect::<Vec<_>>(),
    );
    let path = dir.join("bundle.json");
    let mut value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    value["models"]["classifier"] = json!({
        "file": "classifier.onnx", "sha256": sha256_hex(&onnx),
        "inputs": [ { "name": "image", "shape": ["batch", C, H, W] } ],
        "outputs": [ { "name": "logits", "shape": ["batch", CLASSES] } ], "provenance": {},
    });
    std::fs::write(&path, value.to_string()).unwrap();
    std::fs::write(dir.join("classifier.onnx"), onnx).unwrap();
}

/// Adds the test re-identification model (threshold 0.5) to the bundle in `dir`.
pub fn add_reid(dir: &std::path::Path) {
    let (embed, head) = reid_models();
    let path = dir.join("bundle.json");
    let mut value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let (e, h) = reid_entries(&embed, &head);
    value["models"]["reid_embed"] = e;
    value["models"]["reid_head"] = h;
    value["reid"] = json!({ "threshold": 0.5 });
    std::fs::write(&path, value.to_string()).unwrap();
    std::fs::write(dir.join("reid_embed.onnx"), embed).unwrap();
    std::fs::write(dir.join("reid_head.onnx"), head).unwrap();
}
