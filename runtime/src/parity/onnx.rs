//! Small ONNX graphs built in code, from `tract_onnx::pb` structs: single operators for the
//! parity checks, and the tiny models of the runtime's tests.

use prost::Message;
use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto,
};

/// An ONNX graph under construction.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl Graph {
    /// A node `output = op(inputs)`.
    pub fn node(&mut self, op: &str, inputs: &[&str], output: &str) {
        self.node_with(op, inputs, output, Vec::new());
    }

    /// A node with attributes (see [`int`], [`ints`], [`string`]).
    pub fn node_with(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<pb::AttributeProto>,
    ) {
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
    }

    /// A float32 initializer of shape `dims`.
    pub fn f32(&mut self, name: &str, dims: &[i64], values: &[f32]) {
        self.initializers.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }

    /// A one-dimensional int64 initializer (shapes, axes, slice bounds).
    pub fn i64(&mut self, name: &str, values: &[i64]) {
        self.initializers.push(pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
    }

    /// Serialises with the given float32 inputs and outputs (`None` in a shape: the `batch`
    /// axis).
    pub fn encode(
        self,
        inputs: &[(&str, Vec<Option<i64>>)],
        outputs: &[(&str, Vec<Option<i64>>)],
    ) -> Vec<u8> {
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
                                    None => tensor_shape_proto::dimension::Value::DimParam(
                                        "batch".into(),
                                    ),
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
            producer_name: "unpersonal-runtime".into(),
            graph: Some(pb::GraphProto {
                name: "built".into(),
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

/// An integer attribute.
pub fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// An attribute holding a list of integers.
pub fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A string attribute.
pub fn string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}
