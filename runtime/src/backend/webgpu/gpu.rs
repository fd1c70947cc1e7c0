//! The wgpu device and the pieces every kernel needs: pipelines compiled once, storage buffers,
//! parameter buffers, recorded dispatches and reading results back.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_channel::oneshot;

use wgpu::util::DeviceExt;

use super::WebGpuError;

/// Invocations per workgroup of the one-dimensional kernels.
const GROUP: u32 = 64;
/// Most workgroups along one dispatch axis.
const MAX_GROUPS: u32 = 65_535;

/// An opened adapter and device with its compiled kernels.
#[derive(Debug)]
pub(crate) struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// One zero, bound where a kernel's optional input is absent.
    zero: wgpu::Buffer,
    /// Compiled kernels by source (generated kernels differ in source, not name).
    pipelines: Mutex<HashMap<String, wgpu::ComputePipeline>>,
}

/// A tensor on the GPU: a buffer (maybe shared with the tensors it aliases) and its shape.
#[derive(Clone, Debug)]
pub(crate) struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
}

impl Tensor {
    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One recorded kernel launch.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

impl Gpu {
    /// Opens the first high-performance adapter wgpu finds (Vulkan, Metal, DX12 or, in the
    /// browser, WebGPU) with that adapter's own limits.
    pub async fn open() -> Result<Gpu, WebGpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|error| WebGpuError::NoAdapter { error })?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("unpersonal"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|error| WebGpuError::NoDevice { adapter: adapter.get_info().name, error })?;
        let zero = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("zero"),
            contents: bytemuck::cast_slice(&[0f32]),
            usage: wgpu::BufferUsages::STORAGE,
        });
        Ok(Gpu {
            device,
            queue,
            info: adapter.get_info(),
            zero,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The adapter's description.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// A buffer holding one zero, bound where a kernel's optional input is absent.
    pub fn zero(&self) -> &wgpu::Buffer {
        &self.zero
    }

    /// How many kernels were compiled.
    #[cfg(test)]
    pub fn kernels(&self) -> usize {
        self.pipelines.lock().map_or(0, |cache| cache.len())
    }

    /// Largest storage buffer a kernel may bind.
    pub fn max_binding(&self) -> u64 {
        self.device.limits().max_storage_buffer_binding_size
    }

    /// The compute pipeline of the WGSL `source` (entry point `main`), compiled on first use.
    fn pipeline(&self, name: &str, source: &str) -> wgpu::ComputePipeline {
        let mut cache = self.pipelines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pipeline) = cache.get(source) {
            return pipeline.clone();
        }
        cache
            .entry(source.to_string())
            .or_insert_with(|| {
                let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
                self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .clone()
    }

    /// An uninitialised storage buffer of `elements` float32 values (at least one).
    pub fn storage(&self, elements: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 4 * elements.max(1) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `values` (a placeholder value when empty).
    pub fn upload(&self, values: &[f32]) -> wgpu::Buffer {
        let contents: &[f32] = if values.is_empty() { &[0.0] } else { values };
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(contents),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// Records `kernel` (name, WGSL source) over `buffers` (bound in order) with the
    /// parameters `params` bound last.
    pub fn dispatch(
        &self,
        kernel: (&str, &str),
        buffers: &[&wgpu::Buffer],
        params: &[u32],
        groups: [u32; 3],
    ) -> Dispatch {
        let pipeline = self.pipeline(kernel.0, kernel.1);
        let params = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(params),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .copied()
            .chain([&params])
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.0),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch { pipeline, bind_group, groups }
    }

    /// Workgroups of a one-dimensional kernel over `count` invocations (a 2-D grid past 65,535
    /// workgroups; kernels fold it back with `num_workgroups`).
    pub fn groups_1d(count: usize) -> [u32; 3] {
        let groups = (count as u64).div_ceil(u64::from(GROUP)).max(1);
        let x = groups.min(u64::from(MAX_GROUPS));
        [x as u32, groups.div_ceil(x) as u32, 1]
    }

    /// Writes `values` into `buffer`.
    pub fn write(&self, buffer: &wgpu::Buffer, values: &[f32]) {
        self.queue.write_buffer(buffer, 0, bytemuck::cast_slice(values));
    }

    /// A command encoder for a batch of work.
    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("unpersonal") })
    }

    /// Records `dispatches` in order into one compute pass of `encoder`.
    pub fn record(encoder: &mut wgpu::CommandEncoder, dispatches: &[Dispatch]) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("graph"),
            timestamp_writes: None,
        });
        for d in dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        }
    }

    /// Submits `encoder` and waits until the GPU has done everything submitted so far.
    pub async fn settle(&self, encoder: wgpu::CommandEncoder) -> Result<(), WebGpuError> {
        let (done, finished) = oneshot::channel();
        self.queue.submit([encoder.finish()]);
        self.queue.on_submitted_work_done(move || {
            let _ = done.send(());
        });
        self.wait()?;
        finished.await.map_err(|_| WebGpuError::DeviceLost)
    }

    /// Submits `encoder` with copies of `outputs` into mappable buffers, then reads them back.
    pub async fn read(
        &self,
        mut encoder: wgpu::CommandEncoder,
        outputs: &[&Tensor],
    ) -> Result<Vec<Vec<f32>>, WebGpuError> {
        let staging: Vec<wgpu::Buffer> = outputs
            .iter()
            .map(|t| {
                let size = 4 * t.len().max(1) as u64;
                let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(&t.buffer, 0, &buffer, 0, size);
                buffer
            })
            .collect();
        self.queue.submit([encoder.finish()]);
        let mapped: Vec<_> = staging
            .iter()
            .map(|buffer| {
                let (done, mapped) = oneshot::channel();
                buffer.slice(..).map_async(wgpu::MapMode::Read, move |result| {
                    let _ = done.send(result);
                });
                mapped
            })
            .collect();
        self.wait()?;
        let mut values = Vec::with_capacity(outputs.len());
        for ((buffer, t), mapped) in staging.iter().zip(outputs).zip(mapped) {
            mapped
                .await
                .map_err(|_| WebGpuError::DeviceLost)?
                .map_err(|error| WebGpuError::Map { error })?;
            let view = buffer
                .slice(..)
                .get_mapped_range()
                .map_err(|error| WebGpuError::MappedRange { error })?;
            values.push(bytemuck::cast_slice::<u8, f32>(&view)[..t.len()].to_vec());
            drop(view);
            buffer.unmap();
        }
        Ok(values)
    }

    /// Natively, drives the device until the submitted work is done (its callbacks then have
    /// run); in a browser this returns at once and the page's event loop does that while the
    /// caller awaits.
    fn wait(&self) -> Result<(), WebGpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|error| WebGpuError::Poll { error })
    }
}
