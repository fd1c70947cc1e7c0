//! 2-D convolution (NCHW, one group) as an implicit matrix product.

use super::{Attributes, Op};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// Conv with its attributes.
#[derive(Debug)]
pub(crate) struct Conv {
    strides: [usize; 2],
    /// Top, left, bottom, right.
    pads: [usize; 4],
    dilations: [usize; 2],
}

fn pair(v: Option<Vec<i64>>, default: usize, what: &str) -> Result<[usize; 2], String> {
    match v.as_deref() {
        None => Ok([default; 2]),
        Some([a, b]) if *a >= 1 && *b >= 1 => Ok([*a as usize, *b as usize]),
        Some(other) => Err(format!("{what} {other:?} is not two positive values")),
    }
}

impl Conv {
    /// From the node's attributes.
    pub fn new(attrs: &Attributes) -> Result<Conv, String> {
        if attrs.int("group").unwrap_or(1) != 1 {
            return Err("only group = 1 convolutions are supported".into());
        }
        if attrs.string("auto_pad").is_some_and(|p| p != "NOTSET") {
            return Err("auto_pad is not supported; give explicit pads".into());
        }
        let pads = match attrs.ints("pads").as_deref() {
            None => [0; 4],
            Some([t, l, b, r]) if [*t, *l, *b, *r].iter().all(|&p| p >= 0) => {
                [*t as usize, *l as usize, *b as usize, *r as usize]
            }
            Some(other) => Err(format!("pads {other:?} are not four non-negative values"))?,
        };
        Ok(Conv {
            strides: pair(attrs.ints("strides"), 1, "strides")?,
            pads,
            dilations: pair(attrs.ints("dilations"), 1, "dilations")?,
        })
    }

    fn out_extent(&self, input: usize, kernel: usize, axis: usize) -> Result<usize, String> {
        let span = self.dilations[axis] * (kernel - 1) + 1;
        let padded = input + self.pads[axis] + self.pads[axis + 2];
        if padded < span {
            return Err(format!("kernel {kernel} does not fit input {input}"));
        }
        Ok((padded - span) / self.strides[axis] + 1)
    }
}

impl Op for Conv {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let ([n, c, h, w], [co, ci, kh, kw]) = (inputs[0], inputs[1]) else {
            return Err(format!(
                "input {:?} and weights {:?} are not both rank 4",
                inputs[0], inputs[1]
            ));
        };
        if c != ci {
            return Err(format!("input has {c} channels, weights expect {ci}"));
        }
        if inputs.get(2).is_some_and(|b| *b != [*co]) {
            return Err(format!("bias {:?} does not match {co} output channels", inputs[2]));
        }
        Ok(vec![*n, *co, self.out_extent(*h, *kh, 0)?, self.out_extent(*w, *kw, 1)?])
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let (x, w) = (inputs[0], inputs[1]);
        let (c, h, wi) = (x.shape[1], x.shape[2], x.shape[3]);
        let (co, kh, kw) = (w.shape[0], w.shape[2], w.shape[3]);
        let (oh, ow) = (y.shape[2], y.shape[3]);
        let cols = y.shape[0] * oh * ow;
        let k = c * kh * kw;
        let bias = inputs.get(2).map_or(gpu.zero(), |b| &b.buffer);
        let p: Vec<u32> = [
            co,
            cols,
            k,
            c,
            h,
            wi,
            oh,
            ow,
            kh,
            kw,
            self.strides[0],
            self.strides[1],
            self.pads[0],
            self.pads[1],
            self.dilations[0],
            self.dilations[1],
            usize::from(inputs.len() > 2),
        ]
        .iter()
        .map(|&v| v as u32)
        .collect();
        let groups = [cols.div_ceil(16) as u32, co.div_ceil(16) as u32, 1];
        if groups[0] > 65_535 {
            return Err(format!(
                "convolution over {cols} output positions needs more than 65,535 workgroups"
            ));
        }
        Ok(vec![gpu.dispatch(
            ("conv", include_str!("../shaders/conv.wgsl")),
            &[&x.buffer, &w.buffer, bias, &y.buffer],
            &p,
            groups,
        )])
    }
}
