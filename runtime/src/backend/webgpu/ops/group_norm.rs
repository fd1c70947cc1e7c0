//! Group normalisation, fused from its decomposed ONNX form (`webgpu/fuse.rs`): an optional
//! Reshape into rows, a mean over the rows' trailing axes, centring, the mean of the squares,
//! `+ eps`, Sqrt, Div and an optional Reshape back, then whatever element-wise expression
//! followed (affine, scale-shift, SiLU) — one kernel, one workgroup per row.

use super::Op;
use super::elementwise::{Expr, broadcast_load, generated, parameters, scalars_at};
use super::reduce::Reduce;
use super::reshape::Reshape;
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};

/// `epilogue((x − mean) / sqrt(var + eps))` with the statistics over rows of `x`; input 0 of
/// the epilogue is the normalised value, its other inputs the op's.
#[derive(Clone, Debug)]
pub(crate) struct GroupNorm {
    /// The Reshape that splits `x` into rows, if any.
    pub split: Option<Reshape>,
    /// The mean (over trailing axes, keeping them).
    pub mean: Reduce,
    pub eps: f32,
    /// The Reshape of the normalised values, if any.
    pub restore: Option<Reshape>,
    pub epilogue: Expr,
}

impl GroupNorm {
    /// The normalised values' shape and the row length for input shape `x`.
    fn layout(&self, x: &[usize]) -> Result<(Vec<usize>, usize), String> {
        let rows = match &self.split {
            Some(split) => split.output_shape(&[x])?,
            None => x.to_vec(),
        };
        let axes = self
            .mean
            .trailing_mean(rows.len())
            .ok_or_else(|| format!("the mean is not over the trailing axes of {rows:?}"))?;
        let k = rows[rows.len() - axes..].iter().product();
        let normalised = match &self.restore {
            Some(restore) => restore.output_shape(&[&rows])?,
            None => rows,
        };
        Ok((normalised, k))
    }
}

impl Op for GroupNorm {
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (normalised, _) = self.layout(inputs[0])?;
        let mut shapes = inputs.to_vec();
        shapes[0] = &normalised;
        let shape = self.epilogue.output_shape(&shapes)?;
        if shape != normalised {
            return Err(format!(
                "the expression after the normalisation broadcasts its values {normalised:?} to {shape:?}"
            ));
        }
        Ok(shape)
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let (_, k) = self.layout(&inputs[0].shape)?;
        let scalars = scalars_at(inputs.len());
        let eps = format!("bitcast<f32>(p[{}u])", scalars + self.epilogue.scalars.len());
        let body = self.epilogue.wgsl(
            |i| if i == 0 { "(x0[i] - mean) / scale".into() } else { broadcast_load(i) },
            scalars,
        );
        let kernel =
            include_str!("../shaders/group_norm.wgsl").replace("EPS", &eps).replace("BODY", &body);
        let mut values = self.epilogue.scalars.clone();
        values.push(self.eps);
        let p = parameters(
            y,
            inputs,
            u32::try_from(k).map_err(|_| "rows too long for 32-bit indices")?,
            &values,
        )?;
        let rows = y.len().checked_div(k).unwrap_or(0);
        let x = rows.clamp(1, 65_535);
        let groups = [x as u32, rows.div_ceil(x) as u32, 1];
        Ok(vec![generated(gpu, "group_norm", &kernel, inputs, y, &p, groups)])
    }
}
