//! Everything that can go wrong in the WebGPU backend: opening the GPU, reading the graph,
//! laying it out for a batch size, and running it.
//!
//! Each kind of failure has its own variants, so that a GPU that fails at run time is never
//! reported as a problem of the graph or of a shape. Causes from wgpu and prost are kept typed
//! and written into the message (as [`crate::bundle::BundleError`] does), so the message alone
//! says everything. At the [`Backend`](crate::backend::Backend) and
//! [`Session`](crate::backend::Session) boundary a `WebGpuError` becomes an
//! [`EngineError`](crate::backend::EngineError) through `?`.

/// A WebGPU backend failure, naming the node, tensor or GPU operation.
#[derive(Debug, thiserror::Error)]
pub enum WebGpuError {
    /// wgpu found no adapter (no GPU, no driver, or a browser without WebGPU).
    #[error("no GPU adapter: {error}")]
    NoAdapter {
        /// wgpu's reason.
        error: wgpu::RequestAdapterError,
    },
    /// The adapter was found but refused to open a device.
    #[error("the adapter {adapter} refused a device: {error}")]
    NoDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        error: wgpu::RequestDeviceError,
    },
    /// The bytes do not parse as an ONNX model.
    #[error("not an ONNX model: {error}")]
    NotOnnx {
        /// The protobuf decoder's message.
        error: prost::DecodeError,
    },
    /// The graph is not one the backend can read or lay out: no graph, an input the bundle
    /// does not declare, an unreadable initializer, an output never computed, or an input or
    /// output the sampler needs that the graph lacks.
    #[error("{problem}")]
    Graph {
        /// What is wrong, naming the tensor or initializer.
        problem: String,
    },
    /// A node the graph gives wrongly: an input missing, never computed, or of a form its
    /// operator does not have.
    #[error("node `{node}`: {problem}")]
    Node {
        /// The node's name (its first output when it has none).
        node: String,
        /// What is wrong.
        problem: String,
    },
    /// A node whose operator, attribute or form of input the kernels do not support.
    #[error("node `{node}` ({op}): {problem}")]
    Unsupported {
        /// The node's name (its first output when it has none).
        node: String,
        /// Its ONNX operator.
        op: String,
        /// What is not supported.
        problem: String,
    },
    /// A node reads an int64 constant as a GPU tensor (the kernels read float32 only).
    #[error("node `{node}` reads the int64 constant `{constant}` on the GPU")]
    IntegerConstant {
        /// The node's name.
        node: String,
        /// The constant's name.
        constant: String,
    },
    /// A node cannot take its input shapes, or its output does not fit what the kernels index
    /// or the adapter binds at this batch size.
    #[error("node `{node}`: {problem}")]
    Shape {
        /// The node's name.
        node: String,
        /// Which shapes, and why.
        problem: String,
    },
    /// The inputs of a call differ from the plan's (a missing input, another shape).
    #[error("{problem}")]
    Input {
        /// Which input, with both shapes.
        problem: String,
    },
    /// The values read back for an output do not fill its shape.
    #[error("output `{output}`: {error}")]
    Output {
        /// The output's name.
        output: String,
        /// ndarray's message.
        error: ndarray::ShapeError,
    },
    /// The sampling loop on the GPU cannot go on (images of another shape than the plan's, a
    /// linear combination the kernel cannot record, work already submitted).
    #[error("{problem}")]
    Sampler {
        /// What is wrong.
        problem: String,
    },
    /// The GPU device was lost while work was pending.
    #[error("the GPU device was lost")]
    DeviceLost,
    /// Waiting for submitted work failed.
    #[error("the GPU did not finish: {error}")]
    Poll {
        /// wgpu's reason.
        error: wgpu::PollError,
    },
    /// A result buffer could not be mapped for reading.
    #[error("cannot read a result back: {error}")]
    Map {
        /// wgpu's reason.
        error: wgpu::BufferAsyncError,
    },
    /// A mapped result buffer could not be viewed.
    #[error("cannot read a result back: {error}")]
    MappedRange {
        /// wgpu's reason.
        error: wgpu::MapRangeError,
    },
    /// A synchronous call in a browser, where the GPU is reached only through futures.
    #[error(
        "a browser cannot wait for its GPU synchronously: use the sampling loop or `WebGpuSession::run_async`"
    )]
    Synchronous,
}
