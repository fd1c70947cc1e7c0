//! The operations of the graph, one family per file, and the builder methods that apply them.
//!
//! Every operation lowers to standard ONNX operators (opset 17) that ONNX Runtime and tract
//! both run, and states its gradient in terms of other operations of this module.

mod binary;
mod concat;
mod conv;
mod conv_transpose;
mod expand;
mod matmul;
mod pad;
mod pool;
mod reduce;
mod reshape;
mod resize;
mod slice;
mod softmax;
mod transpose;
mod unary;

pub use binary::{Binary, BinaryKind};
pub use concat::Concat;
pub use conv::Conv;
pub use conv_transpose::ConvTranspose;
pub use expand::Expand;
pub use matmul::MatMul;
pub use pad::Pad;
pub use pool::AveragePool;
pub use reduce::{Reduce, ReduceKind};
pub use reshape::Reshape;
pub use resize::Upsample;
pub use slice::Slice;
pub use softmax::{Softmax, SoftmaxKind};
pub use transpose::Transpose;
pub use unary::{Unary, UnaryKind};

use crate::graph::{Graph, Shape, TensorId};

/// Numpy-style broadcast of two shapes. Panics when they are incompatible.
pub fn broadcast(a: &[usize], b: &[usize]) -> Shape {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
            let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
            assert!(da == db || da == 1 || db == 1, "shapes {a:?} and {b:?} do not broadcast");
            da.max(db)
        })
        .collect()
}

/// Resolves a possibly negative axis against a rank.
pub fn axis(axis: isize, rank: usize) -> usize {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    assert!((0..rank as isize).contains(&a), "axis {axis} out of range for rank {rank}");
    a as usize
}

impl Graph {
    /// `a + b`, broadcasting.
    pub fn add(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.apply(Binary(BinaryKind::Add), &[a, b])
    }

    /// `a - b`, broadcasting.
    pub fn sub(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.apply(Binary(BinaryKind::Sub), &[a, b])
    }

    /// `a * b`, broadcasting.
    pub fn mul(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.apply(Binary(BinaryKind::Mul), &[a, b])
    }

    /// `a / b`, broadcasting.
    pub fn div(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.apply(Binary(BinaryKind::Div), &[a, b])
    }

    /// `a ^ b`, broadcasting (`a` must be positive where `b` is differentiated).
    pub fn pow(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.apply(Binary(BinaryKind::Pow), &[a, b])
    }

    /// `x * c` for a scalar constant.
    pub fn scale(&mut self, x: TensorId, c: f32) -> TensorId {
        let c = self.scalar(c);
        self.mul(x, c)
    }

    /// `x + c` for a scalar constant.
    pub fn add_scalar(&mut self, x: TensorId, c: f32) -> TensorId {
        let c = self.scalar(c);
        self.add(x, c)
    }

    /// An element-wise function of `x`.
    pub fn unary(&mut self, kind: UnaryKind, x: TensorId) -> TensorId {
        self.apply(Unary(kind), &[x])
    }

    /// `-x`.
    pub fn neg(&mut self, x: TensorId) -> TensorId {
        self.unary(UnaryKind::Neg, x)
    }

    /// Logistic sigmoid.
    pub fn sigmoid(&mut self, x: TensorId) -> TensorId {
        self.unary(UnaryKind::Sigmoid, x)
    }

    /// Rectified linear unit.
    pub fn relu(&mut self, x: TensorId) -> TensorId {
        self.unary(UnaryKind::Relu, x)
    }

    /// SiLU (swish): `x · sigmoid(x)`.
    pub fn silu(&mut self, x: TensorId) -> TensorId {
        let s = self.sigmoid(x);
        self.mul(x, s)
    }

    /// `x²`.
    pub fn square(&mut self, x: TensorId) -> TensorId {
        self.mul(x, x)
    }

    /// Sum over `axes`.
    pub fn reduce_sum(&mut self, x: TensorId, axes: &[usize], keepdims: bool) -> TensorId {
        self.apply(Reduce { kind: ReduceKind::Sum, axes: axes.to_vec(), keepdims }, &[x])
    }

    /// Mean over `axes`.
    pub fn reduce_mean(&mut self, x: TensorId, axes: &[usize], keepdims: bool) -> TensorId {
        self.apply(Reduce { kind: ReduceKind::Mean, axes: axes.to_vec(), keepdims }, &[x])
    }

    /// Mean of all elements, as a scalar of shape `[]`.
    pub fn mean_all(&mut self, x: TensorId) -> TensorId {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        self.reduce_mean(x, &axes, false)
    }

    /// Reshapes to `shape` (same number of elements).
    pub fn reshape(&mut self, x: TensorId, shape: &[usize]) -> TensorId {
        if self.shape(x) == shape {
            return x;
        }
        self.apply(Reshape(shape.to_vec()), &[x])
    }

    /// Permutes axes.
    pub fn transpose(&mut self, x: TensorId, perm: &[usize]) -> TensorId {
        self.apply(Transpose(perm.to_vec()), &[x])
    }

    /// Broadcasts `x` to `shape`.
    pub fn expand(&mut self, x: TensorId, shape: &[usize]) -> TensorId {
        if self.shape(x) == shape {
            return x;
        }
        self.apply(Expand(shape.to_vec()), &[x])
    }

    /// Sums a broadcast result back to `shape` (the gradient of broadcasting).
    pub fn sum_to(&mut self, x: TensorId, shape: &[usize]) -> TensorId {
        let from = self.shape(x).to_vec();
        if from == shape {
            return x;
        }
        let lead = from.len() - shape.len();
        let axes: Vec<usize> = (0..from.len())
            .filter(|&i| i < lead || (shape[i - lead] == 1 && from[i] != 1))
            .collect();
        let summed = if axes.is_empty() { x } else { self.reduce_sum(x, &axes, true) };
        self.reshape(summed, shape)
    }

    /// `x[.., start..end, ..]` along `axis`.
    pub fn slice(&mut self, x: TensorId, axis: usize, start: usize, end: usize) -> TensorId {
        if start == 0 && end == self.shape(x)[axis] {
            return x;
        }
        self.apply(Slice { axis, start, end }, &[x])
    }

    /// Concatenation along `axis`.
    pub fn concat(&mut self, xs: &[TensorId], axis: usize) -> TensorId {
        self.apply(Concat { axis }, xs)
    }

    /// Matrix product over the last two axes.
    pub fn matmul(&mut self, a: TensorId, b: TensorId) -> TensorId {
        self.apply(MatMul, &[a, b])
    }

    /// Softmax over `axis`.
    pub fn softmax(&mut self, x: TensorId, axis: usize) -> TensorId {
        self.apply(Softmax { kind: SoftmaxKind::Softmax, axis }, &[x])
    }

    /// Log-softmax over `axis`.
    pub fn log_softmax(&mut self, x: TensorId, axis: usize) -> TensorId {
        self.apply(Softmax { kind: SoftmaxKind::LogSoftmax, axis }, &[x])
    }
}
