//! Element-wise operators: Add, Sub, Mul, Div with NumPy broadcasting; Sqrt, Log, Cos, Sin,
//! Neg, Sigmoid, Relu, Abs.

use super::{Op, broadcast, broadcast_strides, padded};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// A binary arithmetic operator.
#[derive(Debug)]
pub(crate) struct Binary {
    code: u32,
}

impl Binary {
    /// `op_type` is one of Add, Sub, Mul, Div.
    pub fn new(op_type: &str) -> Binary {
        Binary { code: ["Add", "Sub", "Mul", "Div"].iter().position(|&o| o == op_type).unwrap_or(3) as u32 }
    }
}

impl Op for Binary {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        match inputs {
            [a, b] => broadcast(a, b),
            _ => Err("needs two inputs".into()),
        }
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let (a, b) = (inputs[0], inputs[1]);
        let rank = y.shape.len();
        let mut p = vec![y.len() as u32, rank as u32, self.code];
        p.extend(padded(&y.shape)?);
        p.extend(padded(&broadcast_strides(&a.shape, rank))?);
        p.extend(padded(&broadcast_strides(&b.shape, rank))?);
        Ok(vec![gpu.dispatch(kernel_1d!("binary"), &[&a.buffer, &b.buffer, &y.buffer], &p, Gpu::groups_1d(y.len()))])
    }
}

/// A unary function.
#[derive(Debug)]
pub(crate) struct Unary {
    code: u32,
}

impl Unary {
    /// `op_type` is one of Sqrt, Log, Cos, Sin, Neg, Sigmoid, Relu, Abs.
    pub fn new(op_type: &str) -> Unary {
        let all = ["Sqrt", "Log", "Cos", "Sin", "Neg", "Sigmoid", "Relu", "Abs"];
        Unary { code: all.iter().position(|&o| o == op_type).unwrap_or(all.len() - 1) as u32 }
    }
}

impl Op for Unary {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        Ok(inputs[0].to_vec())
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let p = [y.len() as u32, self.code];
        Ok(vec![gpu.dispatch(kernel_1d!("unary"), &[&inputs[0].buffer, &y.buffer], &p, Gpu::groups_1d(y.len()))])
    }
}
