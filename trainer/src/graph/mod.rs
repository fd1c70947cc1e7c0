//! The graph builder: f32 tensors with static shapes, named inputs and parameters, and
//! operations that each know their shape, their ONNX form and their gradient rule.
//!
//! A network is a Rust function over a [`Graph`]. The same function builds the training graph
//! (parameters are graph inputs, see [`crate::step`]) and the inference graph (parameters are
//! baked in as initialisers, see [`crate::onnx`]).
//!
//! Shape mismatches are programming errors in a network definition and panic with a message
//! naming the operation and the shapes, as `ndarray` does; user-supplied sizes are validated
//! before a network is built.

mod init;
mod op;

pub use init::Init;
pub use op::{Op, OpIo};

use std::collections::HashMap;
use std::sync::Arc;

/// A tensor shape: one extent per axis, outermost first.
pub type Shape = Vec<usize>;

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Floating-point operations of one evaluation of every op of `g` (see [`Op::flops`]).
pub fn flops(g: &Graph) -> u64 {
    g.tensors()
        .iter()
        .map(|t| match &t.source {
            Source::Op { op, inputs } => {
                let shapes: Vec<&[usize]> = inputs.iter().map(|&i| g.shape(i)).collect();
                op.flops(&shapes, &t.shape)
            }
            _ => 0,
        })
        .sum()
}

/// Handle to a tensor of a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub(crate) usize);

/// Where a tensor's value comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Fed when the graph runs (a batch, a learning rate).
    Input,
    /// A trainable parameter with its initialiser.
    Param(Init),
    /// A constant baked into the graph.
    Const(Arc<Vec<f32>>),
    /// The output of an operation.
    Op {
        /// The operation.
        op: Arc<dyn Op>,
        /// Its operands, in order.
        inputs: Vec<TensorId>,
    },
}

/// A tensor of the graph: its name (unique), shape and source.
#[derive(Clone, Debug)]
pub struct Tensor {
    /// Unique name; parameters are named by their scope path, e.g. `block1.conv.weight`.
    pub name: String,
    /// Static shape.
    pub shape: Shape,
    /// Where the value comes from.
    pub source: Source,
}

/// A directed acyclic graph of tensors, kept in topological (creation) order.
#[derive(Debug)]
pub struct Graph {
    tensors: Vec<Tensor>,
    by_name: HashMap<String, TensorId>,
    scope: Vec<String>,
    outputs: Vec<(String, TensorId)>,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Graph {
            tensors: Vec::new(),
            by_name: HashMap::new(),
            scope: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// All tensors in topological order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The tensor behind a handle.
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0]
    }

    /// Shape of a tensor.
    pub fn shape(&self, id: TensorId) -> &[usize] {
        &self.tensors[id.0].shape
    }

    /// Looks a tensor up by name.
    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.by_name.get(name).copied()
    }

    /// Handles of every tensor, in topological order.
    pub fn ids(&self) -> impl Iterator<Item = TensorId> + '_ {
        (0..self.tensors.len()).map(TensorId)
    }

    /// Trainable parameters, in creation order.
    pub fn params(&self) -> Vec<TensorId> {
        self.ids().filter(|&id| matches!(self.tensor(id).source, Source::Param(_))).collect()
    }

    /// Graph inputs (not parameters), in creation order.
    pub fn inputs(&self) -> Vec<TensorId> {
        self.ids().filter(|&id| matches!(self.tensor(id).source, Source::Input)).collect()
    }

    /// Named graph outputs, in the order they were marked.
    pub fn outputs(&self) -> &[(String, TensorId)] {
        &self.outputs
    }

    /// Marks `id` as a graph output called `name`.
    pub fn output(&mut self, name: &str, id: TensorId) {
        assert!(
            self.outputs.iter().all(|(n, _)| n != name),
            "graph output {name:?} is declared twice"
        );
        self.outputs.push((name.to_string(), id));
    }

    /// Runs `f` with `name` pushed on the parameter scope (`block1` → `block1.conv.weight`).
    pub fn scope<T>(&mut self, name: &str, f: impl FnOnce(&mut Graph) -> T) -> T {
        self.scope.push(name.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    fn push(&mut self, name: String, shape: Shape, source: Source) -> TensorId {
        let id = TensorId(self.tensors.len());
        let previous = self.by_name.insert(name.clone(), id);
        assert!(previous.is_none(), "tensor name {name:?} is used twice");
        self.tensors.push(Tensor { name, shape, source });
        id
    }

    /// A graph input fed at run time.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> TensorId {
        self.push(name.to_string(), shape.to_vec(), Source::Input)
    }

    /// A trainable parameter named by the current scope and `name`.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> TensorId {
        let mut path = self.scope.join(".");
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        self.push(path, shape.to_vec(), Source::Param(init))
    }

    /// A constant tensor.
    pub fn constant(&mut self, shape: &[usize], values: Vec<f32>) -> TensorId {
        assert_eq!(
            numel(shape),
            values.len(),
            "constant of shape {shape:?} needs {} values",
            numel(shape)
        );
        let name = format!("const{}", self.tensors.len());
        self.push(name, shape.to_vec(), Source::Const(Arc::new(values)))
    }

    /// A scalar constant (shape `[]`), broadcastable against anything.
    pub fn scalar(&mut self, value: f32) -> TensorId {
        self.constant(&[], vec![value])
    }

    /// Applies `op` to `inputs`; the output shape comes from [`Op::infer`].
    pub fn apply(&mut self, op: impl Op + 'static, inputs: &[TensorId]) -> TensorId {
        let shapes: Vec<&[usize]> = inputs.iter().map(|&i| self.shape(i)).collect();
        let shape = op.infer(&shapes);
        let name = format!("{}{}", op.name().to_lowercase(), self.tensors.len());
        self.push(name, shape, Source::Op { op: Arc::new(op), inputs: inputs.to_vec() })
    }

    /// Whether `id` depends on any tensor for which `seed` is true (the tensor itself counts).
    pub(crate) fn depends_on(&self, seed: impl Fn(TensorId) -> bool) -> Vec<bool> {
        let mut mark = vec![false; self.tensors.len()];
        for id in self.ids() {
            mark[id.0] = seed(id)
                || match &self.tensor(id).source {
                    Source::Op { inputs, .. } => inputs.iter().any(|i| mark[i.0]),
                    _ => false,
                };
        }
        mark
    }

    /// Marks the tensors the `targets` are computed from (the targets included).
    pub fn ancestors(&self, targets: &[TensorId]) -> Vec<bool> {
        let mut mark = vec![false; self.tensors.len()];
        for t in targets {
            mark[t.0] = true;
        }
        for index in (0..self.tensors.len()).rev() {
            if mark[index]
                && let Source::Op { inputs, .. } = &self.tensors[index].source
            {
                for i in inputs {
                    mark[i.0] = true;
                }
            }
        }
        mark
    }
}
