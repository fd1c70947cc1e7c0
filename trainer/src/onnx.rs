//! Serialisation of a [`Graph`] to an ONNX `ModelProto` (opset 17).
//!
//! Parameters become either graph inputs (training graphs, where they change every step) or
//! initialisers holding given values (exported inference graphs). The leading axis of the
//! inputs and outputs can be made symbolic (`batch`), so one exported file serves any batch
//! size: every op emits shape constants that copy the batch extent instead of fixing it.

use std::collections::HashMap;

use prost::Message;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto,
};

use crate::graph::{Graph, OpIo, Source, TensorId};

/// The ONNX operator set the emitted graphs use.
pub const OPSET: i64 = 17;
/// The ONNX IR version matching [`OPSET`].
const IR_VERSION: i64 = 8;

/// Collects the nodes and initialisers of one graph while ops emit themselves.
#[derive(Debug, Default)]
pub struct Emitter {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
}

impl Emitter {
    /// A fresh, unique value name starting with `hint`.
    pub fn tmp(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}__{}", self.counter)
    }

    /// Appends a node `op_type(inputs) -> output`.
    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: format!("{op_type}_{}", self.nodes.len()),
            op_type: op_type.to_string(),
            attribute: attributes,
            ..Default::default()
        });
    }

    /// Appends a node writing a fresh value and returns its name.
    pub fn node_tmp(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        let out = self.tmp(&op_type.to_lowercase());
        self.node(op_type, inputs, &out, attributes);
        out
    }

    /// A 1-D int64 constant (shapes, axes, pads), returned by name.
    pub fn const_i64(&mut self, values: &[i64]) -> String {
        let name = self.tmp("i64");
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// An f32 initialiser called `name`.
    pub fn initializer(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        self.initializers.push(f32_tensor(name, shape, values));
    }
}

/// An f32 `TensorProto` with raw little-endian data.
fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An `int` attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// An `ints` attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A `float` attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

/// A `string` attribute.
pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// How parameters are represented in the emitted model.
#[derive(Debug)]
pub enum Params<'a> {
    /// Parameters are graph inputs (training-step graphs).
    Inputs,
    /// Parameters are initialisers with these values, by parameter name (exported models).
    Baked(&'a HashMap<String, Vec<f32>>),
}

/// What to emit besides the graph itself.
#[derive(Debug)]
pub struct ExportOptions<'a> {
    /// Representation of the parameters.
    pub params: Params<'a>,
    /// Make axis 0 of every graph input and output the symbolic dimension `batch`.
    pub symbolic_batch: bool,
    /// Model metadata (`metadata_props`).
    pub metadata: Vec<(String, String)>,
}

/// Serialises `graph` to an ONNX model. Fails when a baked parameter is missing or has the
/// wrong number of values.
pub fn to_model(graph: &Graph, opts: &ExportOptions) -> anyhow::Result<ModelProto> {
    let mut e = Emitter::default();
    let mut inputs = Vec::new();
    let names: Vec<String> = graph.tensors().iter().map(|t| t.name.clone()).collect();
    let live = live_tensors(graph);
    let dims = |shape: &[usize]| -> Vec<Dim> {
        shape
            .iter()
            .enumerate()
            .map(
                |(axis, &d)| {
                    if axis == 0 && opts.symbolic_batch { Dim::Batch } else { Dim::Fixed(d) }
                },
            )
            .collect()
    };
    for id in graph.ids() {
        if !live[id.0] {
            continue;
        }
        let t = graph.tensor(id);
        match &t.source {
            Source::Input => inputs.push(value_info(&t.name, &dims(&t.shape))),
            Source::Param(_) => match opts.params {
                Params::Inputs => inputs.push(value_info(
                    &t.name,
                    &t.shape.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>(),
                )),
                Params::Baked(values) => {
                    let v = values
                        .get(&t.name)
                        .ok_or_else(|| anyhow::anyhow!("no value for parameter {}", t.name))?;
                    anyhow::ensure!(
                        v.len() == crate::graph::numel(&t.shape),
                        "parameter {} has {} values, its shape {:?} needs {}",
                        t.name,
                        v.len(),
                        t.shape,
                        crate::graph::numel(&t.shape)
                    );
                    e.initializer(&t.name, &t.shape, v);
                }
            },
            Source::Const(values) => e.initializer(&t.name, &t.shape, values),
            Source::Op { op, inputs: operands } => {
                let in_names: Vec<String> = operands.iter().map(|i| names[i.0].clone()).collect();
                let in_shapes: Vec<&[usize]> = operands.iter().map(|&i| graph.shape(i)).collect();
                op.emit(
                    &mut e,
                    &OpIo {
                        inputs: &in_names,
                        input_shapes: &in_shapes,
                        output: &t.name,
                        output_shape: &t.shape,
                    },
                );
            }
        }
    }
    let mut outputs = Vec::new();
    for (name, id) in graph.outputs() {
        // ONNX names outputs by value; an alias keeps the graph's tensor names internal.
        e.node("Identity", &[&names[id.0]], name, vec![]);
        outputs.push(value_info(name, &dims(graph.shape(*id))));
    }
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "unpersonal-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            name: "unpersonal".into(),
            node: e.nodes,
            initializer: e.initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        metadata_props: opts
            .metadata
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto { key: k.clone(), value: v.clone() })
            .collect(),
        ..Default::default()
    })
}

/// A training graph as ONNX bytes for the engine: parameters and their state are inputs, the
/// batch size fixed.
pub fn training_bytes(graph: &Graph) -> anyhow::Result<Vec<u8>> {
    to_bytes(
        graph,
        &ExportOptions { params: Params::Inputs, symbolic_batch: false, metadata: vec![] },
    )
}

/// Serialises `graph` to ONNX bytes.
pub fn to_bytes(graph: &Graph, opts: &ExportOptions) -> anyhow::Result<Vec<u8>> {
    Ok(to_model(graph, opts)?.encode_to_vec())
}

/// Tensors the outputs depend on; graph inputs always count, so the interface is stable.
fn live_tensors(graph: &Graph) -> Vec<bool> {
    let targets: Vec<TensorId> = graph.outputs().iter().map(|(_, id)| *id).collect();
    let mut live = graph.ancestors(&targets);
    for id in graph.inputs() {
        live[id.0] = true;
    }
    live
}

enum Dim {
    Fixed(usize),
    Batch,
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Batch => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The float32 initialisers of an ONNX model (e.g. an exported model's weights, by parameter
/// name), with their shapes.
pub fn read_initializers(
    model: &[u8],
) -> anyhow::Result<HashMap<String, crate::engine::HostTensor>> {
    let model = ModelProto::decode(model).map_err(|e| anyhow::anyhow!("not an ONNX model: {e}"))?;
    let graph = model.graph.ok_or_else(|| anyhow::anyhow!("the ONNX model has no graph"))?;
    let mut weights = HashMap::new();
    for t in graph.initializer {
        if t.data_type != DataType::Float as i32 {
            continue;
        }
        let shape: Vec<usize> = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("initialiser `{}` has a negative extent", t.name))?;
        let data: Vec<f32> = if t.raw_data.is_empty() {
            t.float_data
        } else {
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        anyhow::ensure!(
            data.len() == shape.iter().product::<usize>(),
            "initialiser `{}` holds {} values for shape {shape:?}",
            t.name,
            data.len()
        );
        weights.insert(t.name, crate::engine::HostTensor { shape, data });
    }
    Ok(weights)
}
