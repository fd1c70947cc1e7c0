//! The ONNX operators the WebGPU backend runs, one family per file: each reads its attributes
//! (and host-side constant inputs such as shapes and axes) when the graph is parsed, infers its
//! output shape, and records its kernels.

/// A one-dimensional kernel by name: its WGSL with the shared index helpers
/// (`shaders/index.wgsl`) appended.
macro_rules! kernel_1d {
    ($name:literal) => {
        (
            $name,
            concat!(
                include_str!(concat!("../shaders/", $name, ".wgsl")),
                include_str!("../shaders/index.wgsl")
            ),
        )
    };
}

mod concat;
mod conv;
mod elementwise;
mod group_norm;
mod lincomb;
mod matmul;
mod reduce;
mod reshape;
mod resize;
mod slice;
mod softmax;
mod transpose;

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Debug;

use tract_onnx::pb;

use super::WebGpuError;
use super::gpu::{Dispatch, Gpu, Tensor};
use super::graph::Constant;

pub(crate) use self::elementwise::{Elementwise, Expr};
pub(crate) use self::group_norm::GroupNorm;
pub(crate) use self::lincomb::lincomb;
pub(crate) use self::reduce::Reduce;
pub(crate) use self::reshape::Reshape;

/// Highest tensor rank the kernels index.
pub(crate) const MAX_RANK: usize = 6;

/// One operator of a node (`Any`: the fusion pass looks at which).
pub(crate) trait Op: Any + Debug + Send + Sync {
    /// How many of the node's `inputs` inputs are tensors on the GPU (the leading ones); the
    /// rest were read on the host when the op was built.
    fn gpu_inputs(&self, inputs: usize) -> usize {
        inputs
    }

    /// The output shape for these input shapes; the error says why not (the caller names the
    /// node: [`WebGpuError::Shape`]).
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String>;

    /// Whether the output is the first input's buffer under another shape (no kernel).
    fn aliases(&self) -> bool {
        false
    }

    /// Records the kernels that compute `output` from `inputs`; the error says why not (a shape
    /// past the kernels' indices or limits; the caller names the node: [`WebGpuError::Shape`]).
    fn encode(
        &self,
        gpu: &Gpu,
        inputs: &[&Tensor],
        output: &Tensor,
    ) -> Result<Vec<Dispatch>, String>;
}

/// The op of `node` (named `name`), or why the backend cannot run it: a malformed node
/// ([`WebGpuError::Node`]) or one the kernels do not support ([`WebGpuError::Unsupported`]).
pub(crate) fn build(
    name: &str,
    node: &pb::NodeProto,
    constants: &HashMap<String, Constant>,
) -> Result<Box<dyn Op>, WebGpuError> {
    let malformed = |problem: String| WebGpuError::Node {
        node: name.to_string(),
        problem: format!("({}) {problem}", node.op_type),
    };
    let unsupported = |problem: String| WebGpuError::Unsupported {
        node: name.to_string(),
        op: node.op_type.clone(),
        problem,
    };
    let attrs = Attributes(node);
    let host = |i: usize| -> Result<&Constant, WebGpuError> {
        let input = node
            .input
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| malformed(format!("input {i} is missing")))?;
        constants.get(input).ok_or_else(|| {
            unsupported(format!("input `{input}` must be a constant (an initializer)"))
        })
    };
    if let Some(expr) = Expr::of(&node.op_type) {
        if node.input.len() != expr.inputs || node.input.iter().any(String::is_empty) {
            return Err(malformed(format!("needs {} inputs, has {:?}", expr.inputs, node.input)));
        }
        return Ok(Box::new(Elementwise { expr }));
    }
    Ok(match node.op_type.as_str() {
        "Identity" => Box::new(reshape::Reshape::identity()),
        "Flatten" => Box::new(reshape::Reshape::flatten(attrs.int("axis").unwrap_or(1))),
        "Reshape" => Box::new(
            reshape::Reshape::new(host(1)?, attrs.int("allowzero").unwrap_or(0) != 0)
                .map_err(unsupported)?,
        ),
        "Transpose" => Box::new(transpose::Transpose::new(attrs.ints("perm"))),
        "Slice" => Box::new(
            slice::Slice::new(
                host(1)?,
                host(2)?,
                node.input.get(3).map(|_| host(3)).transpose()?,
                node.input.get(4).map(|_| host(4)).transpose()?,
            )
            .map_err(unsupported)?,
        ),
        "Concat" => Box::new(concat::Concat::new(
            attrs.int("axis").ok_or_else(|| malformed("Concat needs `axis`".into()))?,
        )),
        "ReduceMean" => Box::new(reduce::Reduce::new(
            true,
            attrs.ints("axes"),
            attrs.int("keepdims").unwrap_or(1) != 0,
        )),
        "ReduceSum" => {
            let axes = if node.input.len() > 1 && !node.input[1].is_empty() {
                host(1)?.ints.clone()
            } else {
                None
            };
            Box::new(reduce::Reduce::new(false, axes, attrs.int("keepdims").unwrap_or(1) != 0))
        }
        "Softmax" => Box::new(softmax::Softmax::new(attrs.int("axis").unwrap_or(-1))),
        "MatMul" => Box::new(matmul::MatMul),
        "Conv" => Box::new(conv::Conv::new(&attrs).map_err(unsupported)?),
        "Resize" => Box::new(resize::Resize::new(&attrs, host(2)?).map_err(unsupported)?),
        other => {
            return Err(unsupported(format!(
                "the WebGPU backend has no kernel for the ONNX operator `{other}`"
            )));
        }
    })
}

/// A node's attributes.
pub(crate) struct Attributes<'a>(&'a pb::NodeProto);

impl Attributes<'_> {
    fn find(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.find(name).map(|a| a.i)
    }

    /// A list-of-integers attribute.
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.find(name).map(|a| a.ints.clone())
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> Option<String> {
        self.find(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * shape[k + 1];
    }
    strides
}

/// The broadcast shape of `a` and `b` (NumPy rules).
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|k| {
            let x = if k + a.len() >= rank { a[k + a.len() - rank] } else { 1 };
            let y = if k + b.len() >= rank { b[k + b.len() - rank] } else { 1 };
            match (x, y) {
                _ if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// Strides of `shape` read as a broadcast shape of rank `rank` (0 on broadcast axes).
pub(crate) fn broadcast_strides(shape: &[usize], rank: usize) -> Vec<usize> {
    let own = strides(shape);
    (0..rank)
        .map(|k| {
            if k + shape.len() < rank {
                return 0;
            }
            let j = k + shape.len() - rank;
            if shape[j] == 1 { 0 } else { own[j] }
        })
        .collect()
}

/// `values` as `MAX_RANK` u32 (zero-padded), or an error for a higher rank or an extent past u32.
pub(crate) fn padded(values: &[usize]) -> Result<[u32; MAX_RANK], String> {
    if values.len() > MAX_RANK {
        return Err(format!("rank {} is above the WebGPU kernels' {MAX_RANK}", values.len()));
    }
    let mut out = [0u32; MAX_RANK];
    for (o, &v) in out.iter_mut().zip(values) {
        *o = u32::try_from(v)
            .map_err(|_| format!("extent {v} does not fit the kernels' 32-bit indices"))?;
    }
    Ok(out)
}

/// `axis` (negative counts from the end) as an index into a rank-`rank` shape.
pub(crate) fn axis(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| format!("axis {axis} is outside rank {rank}"))
}

/// The strided-copy kernel (transpose, slice, concat): `y[y0 + Σ c·ys] = x[x0 + Σ c·xs]` over
/// the iteration shape `dims`.
pub(crate) fn copy(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    dims: &[usize],
    offsets: [usize; 2],
    xs: &[usize],
    ys: &[usize],
) -> Result<Dispatch, String> {
    let count: usize = dims.iter().product();
    let mut p = vec![
        u32::try_from(count).map_err(|_| "tensor too large for 32-bit indices")?,
        dims.len() as u32,
        offsets[0] as u32,
        offsets[1] as u32,
    ];
    p.extend(padded(dims)?);
    p.extend(padded(xs)?);
    p.extend(padded(ys)?);
    Ok(gpu.dispatch(kernel_1d!("copy"), &[&x.buffer, &y.buffer], &p, Gpu::groups_1d(count)))
}
