//! A graph laid out for one batch size: a buffer for every value (reused once a value is dead),
//! the weights uploaded once, and every kernel recorded in order, so a call is one upload, one
//! submission and one read-back.

use std::collections::HashMap;

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use super::WebGpuError;
use super::gpu::{Dispatch, Gpu, Tensor};
use super::graph::Graph;
use crate::backend::Outputs;

/// The recorded graph for one batch size.
#[derive(Debug)]
pub(crate) struct Plan {
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<(String, Tensor)>,
    dispatches: Vec<Dispatch>,
}

/// Buffers handed out to values, and the ones free for reuse.
struct Buffers {
    all: Vec<(wgpu::Buffer, usize)>,
    /// Live values per buffer.
    live: Vec<usize>,
    free: Vec<usize>,
}

impl Buffers {
    /// A buffer of at least `elements` values: the smallest free one that fits, or a new one.
    fn take(&mut self, gpu: &Gpu, elements: usize) -> usize {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, id)| self.all[**id].1 >= elements)
            .min_by_key(|(_, id)| self.all[**id].1)
            .map(|(i, _)| i);
        let id = match best {
            Some(i) => self.free.swap_remove(i),
            None => {
                self.all.push((gpu.storage(elements), elements));
                self.live.push(0);
                self.all.len() - 1
            }
        };
        self.live[id] += 1;
        id
    }

    fn release(&mut self, id: usize) {
        self.live[id] -= 1;
        if self.live[id] == 0 {
            self.free.push(id);
        }
    }
}

impl Plan {
    /// Lays `graph` out for `batch` rows, with `weights` the uploaded float constants.
    pub fn new(
        graph: &Graph,
        weights: &HashMap<String, Tensor>,
        gpu: &Gpu,
        batch: usize,
    ) -> Result<Plan, WebGpuError> {
        let shapes = graph.shapes(batch)?;
        let mut buffers = Buffers { all: Vec::new(), live: Vec::new(), free: Vec::new() };
        let mut values: HashMap<&str, usize> = HashMap::new();
        let mut inputs = Vec::new();
        for t in &graph.inputs {
            let shape = t.concrete(batch);
            // Inputs are never released: one extra reference.
            let id = buffers.take(gpu, shape.iter().product());
            buffers.live[id] += 1;
            inputs.push((t.name.clone(), Tensor { buffer: buffers.all[id].0.clone(), shape }));
            values.insert(&t.name, id);
        }
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            for name in &node.inputs {
                last_use.insert(name, i);
            }
        }
        for name in &graph.outputs {
            last_use.insert(name, usize::MAX);
        }
        let max_binding = gpu.max_binding();
        let mut dispatches = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            let shape_error =
                |problem: String| WebGpuError::Shape { node: node.name.clone(), problem };
            let graph_error = |problem: &str| WebGpuError::Node {
                node: node.name.clone(),
                problem: problem.into(),
            };
            let tensors = node
                .inputs
                .iter()
                .map(|name| match (weights.get(name), values.get(name.as_str())) {
                    (Some(w), _) => Ok(w.clone()),
                    (None, Some(id)) => Ok(Tensor {
                        buffer: buffers.all[*id].0.clone(),
                        shape: shapes[name.as_str()].clone(),
                    }),
                    (None, None) => Err(graph_error(&format!("input `{name}` is not on the GPU"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let shape = shapes[node.output.as_str()].clone();
            let elements: usize = shape.iter().product();
            if 4 * elements as u64 > max_binding {
                return Err(shape_error(format!(
                    "its output {shape:?} needs {} MiB, more than this adapter binds ({} MiB): use a smaller batch",
                    (4 * elements) >> 20,
                    max_binding >> 20
                )));
            }
            let id = if node.op.aliases() {
                let id = values
                    .get(node.inputs[0].as_str())
                    .ok_or_else(|| graph_error("it can only alias a computed tensor"))?;
                buffers.live[*id] += 1;
                *id
            } else {
                buffers.take(gpu, elements)
            };
            let output = Tensor { buffer: buffers.all[id].0.clone(), shape };
            let refs: Vec<&Tensor> = tensors.iter().collect();
            dispatches.extend(node.op.encode(gpu, &refs, &output).map_err(shape_error)?);
            values.insert(&node.output, id);
            let mut done: Vec<&str> = node
                .inputs
                .iter()
                .map(String::as_str)
                .filter(|n| last_use.get(n) == Some(&i))
                .collect();
            done.sort_unstable();
            done.dedup();
            for name in done {
                if let Some(id) = values.get(name) {
                    buffers.release(*id);
                }
            }
        }
        let outputs = graph
            .outputs
            .iter()
            .map(|name| {
                let id = values.get(name.as_str()).ok_or_else(|| WebGpuError::Graph {
                    problem: format!("graph output `{name}` is never computed"),
                })?;
                Ok((
                    name.clone(),
                    Tensor {
                        buffer: buffers.all[*id].0.clone(),
                        shape: shapes[name.as_str()].clone(),
                    },
                ))
            })
            .collect::<Result<Vec<_>, WebGpuError>>()?;
        Ok(Plan { inputs, outputs, dispatches })
    }

    /// Uploads `inputs`, runs every kernel and reads the outputs back.
    pub async fn run(
        &self,
        gpu: &Gpu,
        inputs: &[(&str, ArrayViewD<'_, f32>)],
    ) -> Result<Outputs, WebGpuError> {
        for (name, tensor) in &self.inputs {
            let (_, view) = inputs.iter().find(|(n, _)| n == name).ok_or_else(|| {
                WebGpuError::Input { problem: format!("input `{name}` is not given") }
            })?;
            if view.shape() != tensor.shape.as_slice() {
                return Err(WebGpuError::Input {
                    problem: format!(
                        "input `{name}` has shape {:?}, the plan {:?}",
                        view.shape(),
                        tensor.shape
                    ),
                });
            }
            gpu.write(&tensor.buffer, &view.iter().copied().collect::<Vec<f32>>());
        }
        let mut encoder = gpu.encoder();
        Gpu::record(&mut encoder, &self.dispatches);
        let tensors: Vec<&Tensor> = self.outputs.iter().map(|(_, t)| t).collect();
        let values = gpu.read(encoder, &tensors).await?;
        let mut outputs = Outputs::new();
        for ((name, tensor), data) in self.outputs.iter().zip(values) {
            let array = ArrayD::from_shape_vec(IxDyn(&tensor.shape), data)
                .map_err(|error| WebGpuError::Output { output: name.clone(), error })?;
            outputs.insert(name.clone(), array);
        }
        Ok(outputs)
    }

    /// The buffer of input `name`.
    pub fn input(&self, name: &str) -> Result<&Tensor, WebGpuError> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| {
            WebGpuError::Graph { problem: format!("the graph has no input `{name}`") }
        })
    }

    /// The buffer of output `name` (valid after the kernels ran).
    pub fn output(&self, name: &str) -> Result<&Tensor, WebGpuError> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| {
            WebGpuError::Graph { problem: format!("the graph has no output `{name}`") }
        })
    }

    /// The recorded kernels, in order.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }
}
