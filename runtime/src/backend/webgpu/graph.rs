//! An ONNX graph as the WebGPU backend runs it: nodes with their kernels, constants, and the
//! shapes of every value for a batch size.

use std::collections::HashMap;

use prost::Message;
use tract_onnx::pb;

use super::WebGpuError;
use super::ops::{self, Op};
use crate::bundle::{ModelSpec, TensorSpec};

/// An initializer, as the host reads it.
#[derive(Debug)]
pub(crate) struct Constant {
    pub dims: Vec<usize>,
    /// Float32 values (float initializers).
    pub floats: Option<Vec<f32>>,
    /// Int64 values (shapes, axes, slice bounds).
    pub ints: Option<Vec<i64>>,
}

/// One node.
#[derive(Debug)]
pub(crate) struct Node {
    pub name: String,
    pub op: Box<dyn Op>,
    /// Input value names (the GPU tensors the op reads, in order).
    pub inputs: Vec<String>,
    pub output: String,
}

/// A parsed graph.
#[derive(Debug)]
pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    pub constants: HashMap<String, Constant>,
    /// Declared inputs in the graph's order.
    pub inputs: Vec<TensorSpec>,
    /// Output names in the graph's order.
    pub outputs: Vec<String>,
}

impl Graph {
    /// Parses `onnx`; every node must have a kernel, or the error names the first that has
    /// none.
    pub fn parse(onnx: &[u8], spec: &ModelSpec) -> Result<Graph, WebGpuError> {
        let proto = pb::ModelProto::decode(onnx).map_err(|error| WebGpuError::NotOnnx { error })?;
        let graph = proto
            .graph
            .ok_or_else(|| WebGpuError::Graph { problem: "the model has no graph".into() })?;
        let mut constants = HashMap::new();
        for t in &graph.initializer {
            constants.insert(t.name.clone(), constant(t)?);
        }
        let inputs = graph
            .input
            .iter()
            .filter(|i| !constants.contains_key(&i.name))
            .map(|i| {
                spec.input(&i.name).cloned().ok_or_else(|| WebGpuError::Graph {
                    problem: format!(
                        "the graph has an input `{}` the bundle does not declare",
                        i.name
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut nodes = Vec::with_capacity(graph.node.len());
        for n in &graph.node {
            let name = if n.name.is_empty() {
                n.output.first().cloned().unwrap_or_default()
            } else {
                n.name.clone()
            };
            let op = ops::build(&name, n, &constants)?;
            let [output] = n.output.as_slice() else {
                return Err(WebGpuError::Unsupported {
                    node: name,
                    op: n.op_type.clone(),
                    problem: format!(
                        "{} outputs; the WebGPU backend runs single-output nodes",
                        n.output.len()
                    ),
                });
            };
            let inputs = n.input.iter().take(op.gpu_inputs(n.input.len())).cloned().collect();
            nodes.push(Node { name, op, inputs, output: output.clone() });
        }
        Ok(Graph {
            nodes,
            constants,
            inputs,
            outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
        })
    }

    /// The shape of every value for `batch` rows: the inputs', the constants' and each node's
    /// output; the error names the first node whose input shapes it cannot take.
    pub fn shapes(&self, batch: usize) -> Result<HashMap<&str, Vec<usize>>, WebGpuError> {
        let mut shapes: HashMap<&str, Vec<usize>> =
            self.inputs.iter().map(|t| (t.name.as_str(), t.concrete(batch))).collect();
        shapes.extend(self.constants.iter().map(|(name, c)| (name.as_str(), c.dims.clone())));
        for node in &self.nodes {
            let inputs = node
                .inputs
                .iter()
                .map(|name| {
                    shapes.get(name.as_str()).map(Vec::as_slice).ok_or_else(|| WebGpuError::Node {
                        node: node.name.clone(),
                        problem: format!(
                            "input `{name}` is neither a graph input, a constant nor computed earlier"
                        ),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let shape = node
                .op
                .output_shape(&inputs)
                .map_err(|problem| WebGpuError::Shape { node: node.name.clone(), problem })?;
            shapes.insert(&node.output, shape);
        }
        Ok(shapes)
    }
}

fn constant(t: &pb::TensorProto) -> Result<Constant, WebGpuError> {
    let dims = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| WebGpuError::Graph {
                problem: format!("initializer `{}` has a negative extent", t.name),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let raw = |width: usize| (!t.raw_data.is_empty()).then(|| t.raw_data.chunks_exact(width));
    let (mut floats, mut ints) = (None, None);
    match t.data_type {
        1 => {
            floats = Some(raw(4).map_or_else(
                || t.float_data.clone(),
                |c| c.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            ))
        }
        7 => {
            ints = Some(raw(8).map_or_else(
                || t.int64_data.clone(),
                |c| c.map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            ))
        }
        other => {
            return Err(WebGpuError::Graph {
                problem: format!(
                    "initializer `{}` has ONNX element type {other}; the WebGPU backend reads float32 and int64",
                    t.name
                ),
            });
        }
    }
    Ok(Constant { dims, floats, ints })
}
