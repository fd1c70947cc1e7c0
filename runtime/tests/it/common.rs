//! Tiny ONNX graphs and bundles for the tests, built from `tract_onnx::pb` structs.

use prost::Message;
use serde_json::{Value, json};
use tract_onnx::pb::{self, tensor_proto::DataType, tensor_shape_proto};
use unpersonal_runtime::bundle::sha256_hex;

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

/// An ONNX graph under construction.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl Graph {
    pub fn node(&mut self, op: &str, inputs: &[&str], output: &str) {
        self.node_with(op, inputs, output, Vec::new());
    }

    /// A node with attributes.
    pub fn node_with(&mut self, op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>) {
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
    }

    pub fn f32(&mut self, name: &str, dims: &[i64], values: &[f32]) {
        self.initializers.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }

    pub fn i64(&mut self, name: &str, values: &[i64]) {
        self.initializers.push(pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
    }

    /// Serialises with the given inputs and outputs (`None` in a shape: the `batch` axis).
    pub fn encode(self, inputs: &[(&str, Vec<Option<i64>>)], outputs: &[(&str, Vec<Option<i64>>)]) -> Vec<u8> {
        let info = |(name, dims): &(&str, Vec<Option<i64>>)| pb::ValueInfoProto {
            name: name.to_string(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| tensor_shape_proto::Dimension {
                                value: Some(match d {
                                    Some(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                                    None => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            producer_name: "unpersonal-runtime-tests".into(),
            graph: Some(pb::GraphProto {
                name: "test".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: inputs.iter().map(info).collect(),
                output: outputs.iter().map(info).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
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
        &[("x", image_dims()), ("sigma", vec![None]), ("condition", vec![None, Some(d as i64)]), ("condition_mask", vec![None])],
        &[("denoised", image_dims())],
    )
}

impl Graph {
    /// `flatten(image) · w` into `output` (`w` `[C·H·W, cols]`).
    fn flatten_matmul(&mut self, w: &[f32], cols: usize, output: &str) {
        self.f32("w", &[(C * H * W) as i64, cols as i64], w);
        self.nodes.push(pb::NodeProto {
            input: vec!["image".into()],
            output: vec!["flat".into()],
            name: "flatten".into(),
            op_type: "Flatten".into(),
            attribute: vec![pb::AttributeProto {
                name: "axis".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: 1,
                ..Default::default()
            }],
            ..Default::default()
        });
        self.node("MatMul", &["flat", "w"], output);
    }
}

/// A features model: `features = flatten(image) · weights` (`weights` `[C·H·W, d]`).
pub fn features(weights: &[f32]) -> Vec<u8> {
    let d = weights.len() / (C * H * W);
    let mut g = Graph::default();
    g.flatten_matmul(weights, d, "features");
    g.encode(&[("image", image_dims())], &[("features", vec![None, Some(d as i64)])])
}

/// A model of an `image` input whose `output` (`[batch, cols]`) is `ln(−(z² + 1))` of a
/// linear map `z`: NaN everywhere.
pub fn nan_model(output: &str, cols: usize) -> Vec<u8> {
    let mut g = Graph::default();
    g.flatten_matmul(&vec![0.1; C * H * W * cols], cols, "z");
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
    g.flatten_matmul(weights, CLASSES, "logits");
    g.encode(&[("image", image_dims())], &[("logits", vec![None, Some(CLASSES as i64)])])
}

/// Embedding size of the test re-identification models.
pub const E: usize = 4;

/// A re-id embedding: `sigmoid(flatten(image) · weights)` (`weights` `[C·H·W, E]`).
pub fn reid_embed(weights: &[f32]) -> Vec<u8> {
    let mut g = Graph::default();
    g.flatten_matmul(weights, E, "z");
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
    let mut all: Vec<Box<dyn unpersonal_runtime::backend::Backend>> = vec![Box::new(unpersonal_runtime::backend::Tract)];
    #[cfg(feature = "ort")]
    {
        use unpersonal_runtime::backend::ort::{Device, Ort};
        all.push(Box::new(Ort::new(None, Device::Cpu, 1).expect("the ort feature's tests need the ONNX Runtime library")));
    }
    #[cfg(feature = "webgpu")]
    all.push(Box::new(unpersonal_runtime::backend::webgpu::WebGpu::new().expect("the webgpu feature's tests need a GPU adapter (lavapipe: mesa-vulkan-drivers)")));
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
    let weights: Vec<f32> = (0..C * H * W * E).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05).collect();
    (reid_embed(&weights), reid_head(40.0, 4.0))
}

/// Adds the test classifier (the gate ranks survivors by it) and re-identification model to
/// the bundle in `dir`: a bundle that `generate` can gate.
pub fn add_gate(dir: &std::path::Path) {
    add_reid(dir);
    let onnx = classifier(&(0..C * H * W * CLASSES).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.05).collect::<Vec<_>>());
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
