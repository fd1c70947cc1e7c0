//! Square float32 matrix products as an ONNX graph: the yardstick for a backend's achievable
//! GFLOP/s on this machine.

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use unpersonal_runtime::bundle::{Dim, ModelSpec, TensorSpec};

/// ONNX's element type code of float32.
const FLOAT: i32 = 1;

/// Products in the chain of [`model`].
pub const DEPTH: usize = 8;

/// `y = mean_j (x · W^DEPTH)_{·j}`: `x` `[batch, n]` (the input) times `W` `[n, n]` (a constant
/// of pseudo-random values scaled to keep the magnitudes steady) [`DEPTH`] times, then each
/// row's mean, so that moving the input and output costs little next to the products; and the
/// interface that describes it. A call with batch `n` costs `2n³·DEPTH` FLOPs (plus `n²` for
/// the means).
pub fn model(n: usize) -> (Vec<u8>, ModelSpec) {
    let scale = (3.0 / n as f32).sqrt();
    let weights: Vec<u8> = (0..n * n)
        .flat_map(|i| ((((i * 7919) % 1000) as f32 / 500.0 - 1.0) * scale).to_le_bytes())
        .collect();
    let value = |name: &str, dims: [Option<i64>; 2]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(n) => dimension::Value::DimValue(*n),
                                None => dimension::Value::DimParam("batch".into()),
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
    let side = n as i64;
    let graph = pb::GraphProto {
        name: "gemm".into(),
        node: (0..DEPTH)
            .map(|i| pb::NodeProto {
                input: vec![if i == 0 { "x".into() } else { format!("h{i}") }, "w".into()],
                output: vec![format!("h{}", i + 1)],
                name: format!("matmul{i}"),
                op_type: "MatMul".into(),
                ..Default::default()
            })
            .chain([pb::NodeProto {
                input: vec![format!("h{DEPTH}")],
                output: vec!["y".into()],
                name: "mean".into(),
                op_type: "ReduceMean".into(),
                attribute: vec![pb::AttributeProto {
                    name: "axes".into(),
                    r#type: AttributeType::Ints as i32,
                    ints: vec![1],
                    ..Default::default()
                }],
                ..Default::default()
            }])
            .collect(),
        initializer: vec![pb::TensorProto {
            name: "w".into(),
            dims: vec![side, side],
            data_type: FLOAT,
            raw_data: weights,
            ..Default::default()
        }],
        input: vec![value("x", [None, Some(side)])],
        output: vec![value("y", [None, Some(1)])],
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "unpersonal bench".into(),
        graph: Some(graph),
        ..Default::default()
    };
    let tensor = |name: &str, width: usize| TensorSpec {
        name: name.into(),
        shape: vec![Dim::Batch, Dim::Fixed(width)],
    };
    let spec = ModelSpec {
        file: format!("{DEPTH} products {n}×{n}×{n} (built in)"),
        sha256: String::new(),
        inputs: vec![tensor("x", n)],
        outputs: vec![tensor("y", 1)],
        provenance: serde_json::Value::Null,
    };
    (proto.encode_to_vec(), spec)
}
