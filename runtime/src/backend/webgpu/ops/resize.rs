//! Resize: nearest neighbour, asymmetric coordinates, floor rounding, constant scales, rank 4.

use super::{Attributes, Op};
use crate::backend::webgpu::gpu::{Dispatch, Gpu, Tensor};
use crate::backend::webgpu::graph::Constant;

/// Resize by constant per-axis scales.
#[derive(Debug)]
pub(crate) struct Resize {
    scales: [f32; 4],
}

impl Resize {
    /// From the node's attributes and its constant `scales` input.
    pub fn new(attrs: &Attributes, scales: &Constant) -> Result<Resize, String> {
        let setting = |name: &str, default: &str, wanted: &str| -> Result<(), String> {
            let value = attrs.string(name).unwrap_or_else(|| default.into());
            if value == wanted {
                Ok(())
            } else {
                Err(format!("{name} `{value}` is not supported (only `{wanted}`)"))
            }
        };
        setting("mode", "nearest", "nearest")?;
        setting("coordinate_transformation_mode", "half_pixel", "asymmetric")?;
        setting("nearest_mode", "round_prefer_floor", "floor")?;
        let values = scales
            .floats
            .as_deref()
            .ok_or("scales must be a float constant (sizes are not supported)")?;
        let scales: [f32; 4] = values
            .try_into()
            .map_err(|_| format!("{} scales; only rank-4 resizes are supported", values.len()))?;
        if scales.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(format!("scales {scales:?} must be positive"));
        }
        Ok(Resize { scales })
    }
}

impl Op for Resize {
    fn gpu_inputs(&self, _inputs: usize) -> usize {
        1
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        if inputs[0].len() != 4 {
            return Err(format!("input {:?} is not rank 4", inputs[0]));
        }
        Ok(inputs[0]
            .iter()
            .zip(&self.scales)
            .map(|(&d, &s)| (d as f32 * s).floor() as usize)
            .collect())
    }

    fn encode(&self, gpu: &Gpu, inputs: &[&Tensor], y: &Tensor) -> Result<Vec<Dispatch>, String> {
        let x = inputs[0];
        let mut p = vec![y.len() as u32];
        p.extend(x.shape.iter().map(|&d| d as u32));
        p.extend(y.shape.iter().map(|&d| d as u32));
        p.extend(self.scales.iter().map(|s| s.to_bits()));
        Ok(vec![gpu.dispatch(
            kernel_1d!("resize"),
            &[&x.buffer, &y.buffer],
            &p,
            Gpu::groups_1d(y.len()),
        )])
    }
}
