//! Element-wise operators as expressions: Add, Sub, Mul, Div with NumPy broadcasting; Sqrt,
//! Log, Cos, Sin, Neg, Sigmoid, Relu, Abs. One ONNX node, or a region of them fused into one
//! (`webgpu/fuse.rs`), is one [`Elementwise`] op: an [`Expr`] whose WGSL kernel is generated,
//! one expression per output element with every input read through broadcast strides. Shapes,
//! strides and scalar constants go in the parameters, so the kernel's source (and pipeline)
//! depends only on the expression's structure.

use super::{Op, broadcast, broadcast_strides, padded, strides};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// A unary function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Sqrt,
    Log,
    Cos,
    Sin,
    Neg,
    Sigmoid,
    Relu,
    Abs,
}

impl Func {
    /// The function of an ONNX operator, if it is one of these.
    pub fn of(op_type: &str) -> Option<Func> {
        use Func::*;
        [
            ("Sqrt", Sqrt),
            ("Log", Log),
            ("Cos", Cos),
            ("Sin", Sin),
            ("Neg", Neg),
            ("Sigmoid", Sigmoid),
            ("Relu", Relu),
            ("Abs", Abs),
        ]
        .into_iter()
        .find_map(|(name, f)| (name == op_type).then_some(f))
    }

    fn wgsl(self, a: &str) -> String {
        match self {
            Func::Sqrt => format!("sqrt({a})"),
            Func::Log => format!("log({a})"),
            Func::Cos => format!("circular({a}, 1)"),
            Func::Sin => format!("circular({a}, 0)"),
            Func::Neg => format!("-{a}"),
            Func::Sigmoid => format!("1.0 / (1.0 + exp(-{a}))"),
            Func::Relu => format!("max({a}, 0.0)"),
            Func::Abs => format!("abs({a})"),
        }
    }
}

/// A binary arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

impl Arith {
    /// The operator of an ONNX operator, if it is one of these.
    pub fn of(op_type: &str) -> Option<Arith> {
        use Arith::*;
        [("Add", Add), ("Sub", Sub), ("Mul", Mul), ("Div", Div)]
            .into_iter()
            .find_map(|(name, a)| (name == op_type).then_some(a))
    }

    fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
        }
    }
}

/// What a step reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operand {
    /// Input `k` of the op.
    Input(usize),
    /// The value of an earlier step.
    Step(usize),
    /// Scalar constant `k` of the expression.
    Scalar(usize),
}

/// One operation of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Unary(Func, Operand),
    Binary(Arith, Operand, Operand),
}

impl Step {
    fn map(self, f: impl Fn(Operand) -> Operand) -> Step {
        match self {
            Step::Unary(func, a) => Step::Unary(func, f(a)),
            Step::Binary(arith, a, b) => Step::Binary(arith, f(a), f(b)),
        }
    }
}

/// An element-wise expression over `inputs` tensors: its steps in order, the last one its
/// value (the first input itself when there are none).
#[derive(Clone, Debug)]
pub(crate) struct Expr {
    pub inputs: usize,
    pub steps: Vec<Step>,
    pub scalars: Vec<f32>,
}

impl Expr {
    /// The value of input 0: no steps.
    pub fn identity() -> Expr {
        Expr { inputs: 1, steps: Vec::new(), scalars: Vec::new() }
    }

    /// The expression of one ONNX node (`None` when it is not element-wise).
    pub fn of(op_type: &str) -> Option<Expr> {
        let (inputs, step) = match (Func::of(op_type), Arith::of(op_type)) {
            (Some(f), _) => (1, Step::Unary(f, Operand::Input(0))),
            (_, Some(a)) => (2, Step::Binary(a, Operand::Input(0), Operand::Input(1))),
            _ => return None,
        };
        Some(Expr { inputs, steps: vec![step], scalars: Vec::new() })
    }

    /// What the expression's value is.
    fn value(&self) -> Operand {
        self.steps.len().checked_sub(1).map_or(Operand::Input(0), Operand::Step)
    }

    /// The expression with input `k` renumbered `inputs[k]`, out of `count` inputs.
    pub fn rewire(&self, inputs: &[usize], count: usize) -> Expr {
        let steps = self
            .steps
            .iter()
            .map(|s| {
                s.map(|o| if let Operand::Input(i) = o { Operand::Input(inputs[i]) } else { o })
            })
            .collect();
        Expr { inputs: count, steps, scalars: self.scalars.clone() }
    }

    /// The expression with input `k` replaced by the constant `value`, and the inputs after
    /// `k` moved down by one.
    pub fn with_scalar(&self, k: usize, value: f32) -> Expr {
        let s = self.scalars.len();
        let steps = self
            .steps
            .iter()
            .map(|step| {
                step.map(|o| match o {
                    Operand::Input(i) if i == k => Operand::Scalar(s),
                    Operand::Input(i) if i > k => Operand::Input(i - 1),
                    o => o,
                })
            })
            .collect();
        let mut scalars = self.scalars.clone();
        scalars.push(value);
        Expr { inputs: self.inputs - 1, steps, scalars }
    }

    /// `consumer` applied to this expression's value: this expression's steps, then the
    /// consumer's with its input `k` replaced by this value and its input `i ≠ k` renumbered
    /// `inputs[i]`, out of `count` inputs (this expression's inputs keep their numbers).
    pub fn then(&self, consumer: &Expr, k: usize, inputs: &[usize], count: usize) -> Expr {
        let (offset, scalars) = (self.steps.len(), self.scalars.len());
        let value = self.value();
        let mut steps = self.steps.clone();
        steps.extend(consumer.steps.iter().map(|s| {
            s.map(|o| match o {
                Operand::Input(i) if i == k => value,
                Operand::Input(i) => Operand::Input(inputs[i]),
                Operand::Step(j) => Operand::Step(j + offset),
                Operand::Scalar(j) => Operand::Scalar(j + scalars),
            })
        }));
        let mut all = self.scalars.clone();
        all.extend(&consumer.scalars);
        Expr { inputs: count, steps, scalars: all }
    }

    /// The output shape for these input shapes (each step broadcasting its operands).
    pub fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        if inputs.len() != self.inputs {
            return Err(format!("needs {} inputs, has {}", self.inputs, inputs.len()));
        }
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.steps.len());
        let shape = |o: Operand, shapes: &[Vec<usize>]| match o {
            Operand::Input(i) => inputs[i].to_vec(),
            Operand::Step(j) => shapes[j].clone(),
            Operand::Scalar(_) => Vec::new(),
        };
        for step in &self.steps {
            let s = match *step {
                Step::Unary(_, a) => shape(a, &shapes),
                Step::Binary(_, a, b) => broadcast(&shape(a, &shapes), &shape(b, &shapes))?,
            };
            shapes.push(s);
        }
        Ok(shape(self.value(), &shapes))
    }

    /// WGSL statements that leave the value for output element `i` in `y[i]`: input `k` is
    /// `load(k)`, scalar `k` the float32 bits at `p[scalars + k]`.
    pub fn wgsl(&self, load: impl Fn(usize) -> String, scalars: usize) -> String {
        let name = |o: Operand| match o {
            Operand::Input(k) => format!("v{k}"),
            Operand::Step(j) => format!("s{j}"),
            Operand::Scalar(k) => format!("bitcast<f32>(p[{}u])", scalars + k),
        };
        let mut body: String =
            (0..self.inputs).map(|k| format!("let v{k} = {};\n", load(k))).collect();
        for (j, step) in self.steps.iter().enumerate() {
            let value = match *step {
                Step::Unary(f, a) => f.wgsl(&name(a)),
                Step::Binary(op, a, b) => format!("{} {} {}", name(a), op.symbol(), name(b)),
            };
            body.push_str(&format!("let s{j} = {value};\n"));
        }
        body.push_str(&format!("y[i] = {};\n", name(self.value())));
        body
    }
}

/// The parameters a generated kernel over `y` reads: count, rank, dims[6] of `y`, `extra`,
/// then per input a flag (1: `y`'s own shape, read at `i`) and its broadcast strides[6], then
/// the scalars' bits.
pub(crate) fn parameters(
    y: &Tensor,
    inputs: &[&Tensor],
    extra: u32,
    scalars: &[f32],
) -> Result<Vec<u32>, String> {
    let rank = y.shape.len();
    let mut p = vec![
        u32::try_from(y.len()).map_err(|_| "tensor too large for 32-bit indices")?,
        rank as u32,
    ];
    p.extend(padded(&y.shape)?);
    p.push(extra);
    for x in inputs {
        let own = x.shape == y.shape;
        p.push(u32::from(own));
        p.extend(padded(&if own { strides(&y.shape) } else { broadcast_strides(&x.shape, rank) })?);
    }
    p.extend(scalars.iter().map(|s| s.to_bits()));
    Ok(p)
}

/// Words before the first input's in [`parameters`].
const HEADER: usize = 9;

/// Words per input in [`parameters`].
const PER_INPUT: usize = 7;

/// Where the scalars of an op with `inputs` inputs start in [`parameters`].
pub(crate) fn scalars_at(inputs: usize) -> usize {
    HEADER + PER_INPUT * inputs
}

/// Input `k` read at output element `i` through its broadcast strides.
pub(crate) fn broadcast_load(k: usize) -> String {
    format!("x{k}[at(i, {}u)]", HEADER + PER_INPUT * k)
}

/// Records the generated kernel `name` over `inputs` and `y`: `kernel`'s WGSL (`BINDINGS` in
/// its text stands for the bindings) with the expression helpers and the shared index helpers
/// appended.
pub(crate) fn generated(
    gpu: &Gpu,
    name: &str,
    kernel: &str,
    inputs: &[&Tensor],
    y: &Tensor,
    p: &[u32],
    groups: [u32; 3],
) -> Dispatch {
    let n = inputs.len();
    let mut bindings: String = (0..n)
        .map(|k| format!("@group(0) @binding({k}) var<storage, read> x{k}: array<f32>;\n"))
        .collect();
    bindings
        .push_str(&format!("@group(0) @binding({n}) var<storage, read_write> y: array<f32>;\n"));
    bindings
        .push_str(&format!("@group(0) @binding({}) var<storage, read> p: array<u32>;\n", n + 1));
    let source = [
        kernel.replace("BINDINGS", &bindings).as_str(),
        include_str!("../shaders/expression.wgsl"),
        include_str!("../shaders/index.wgsl"),
    ]
    .concat();
    let mut buffers: Vec<&wgpu::Buffer> = inputs.iter().map(|t| &t.buffer).collect();
    buffers.push(&y.buffer);
    gpu.dispatch((name, &source), &buffers, p, groups)
}

/// An element-wise expression as an op.
#[derive(Debug)]
pub(crate) struct Elementwise {
    pub expr: Expr,
}

impl Op for Elementwise {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        self.expr.output_shape(inputs)
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let kernel = include_str!("../shaders/elementwise.wgsl")
            .replace("BODY", &self.expr.wgsl(broadcast_load, scalars_at(inputs.len())));
        let p = parameters(y, inputs, 0, &self.expr.scalars)?;
        Ok(vec![generated(gpu, "elementwise", &kernel, inputs, y, &p, Gpu::groups_1d(y.len()))])
    }
}
