//! Checkpoints: the whole training state in one safetensors file, written atomically.
//!
//! The file holds every state tensor (parameters, AdamW moments, EMA) and, in its metadata,
//! the run configuration and progress as JSON. The run has no other random state: batch
//! order and augmentation derive from the seed and the batcher position, so a resumed run
//! continues exactly where the killed one was.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

pub use unpersonal_runtime::atomic::write_atomically;

use crate::data::BatcherState;
use crate::engine::{HostTensor, State};

/// Where a run stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Steps completed.
    pub step: u64,
    /// Position of the training batcher.
    pub batcher: BatcherState,
    /// The best evaluation so far, when a selection metric chooses the exported weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Best>,
}

/// The best evaluation of a run so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// Its step.
    pub step: u64,
    /// Its value of the selection metric.
    pub value: f64,
    /// Evaluations since, none better.
    pub stale: u32,
}

/// A saved run: configuration (as written by the command), progress and state.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The run configuration, compared on resume.
    pub config: serde_json::Value,
    /// Where the run stands.
    pub progress: Progress,
    /// Every state tensor.
    pub state: State,
}

const CONFIG_KEY: &str = "unpersonal.config";
const PROGRESS_KEY: &str = "unpersonal.progress";

/// Writes `ckpt` to `path` through a temporary file in the same directory and a rename, so a
/// crash never leaves a half-written checkpoint.
pub fn save(path: &Path, ckpt: &Checkpoint) -> anyhow::Result<()> {
    let metadata = HashMap::from([
        (CONFIG_KEY.to_string(), serde_json::to_string(&ckpt.config)?),
        (PROGRESS_KEY.to_string(), serde_json::to_string(&ckpt.progress)?),
    ]);
    save_tensors(path, &ckpt.state, metadata)
}

/// Writes named f32 tensors and string metadata as one safetensors file, atomically.
pub fn save_tensors(
    path: &Path,
    tensors: &State,
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            (name.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            Ok((name.as_str(), TensorView::new(Dtype::F32, shape.clone(), data)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let encoded = safetensors::serialize(views, Some(metadata))?;
    Ok(write_atomically(path, &encoded)?)
}

/// Creates `dir` if needed and checks that files can be written in it, so a long run fails
/// at its start rather than at its end.
pub fn ensure_writable(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in output directory {}", dir.display()))?;
    Ok(())
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> anyhow::Result<Checkpoint> {
    let (meta, state) = load_tensors(path)?;
    let context = || format!("{} is not an Unpersonal checkpoint", path.display());
    let field = |key: &str| {
        meta.get(key).with_context(|| format!("{}: metadata has no {key}", path.display()))
    };
    let config = serde_json::from_str(field(CONFIG_KEY)?).with_context(context)?;
    let progress = serde_json::from_str(field(PROGRESS_KEY)?).with_context(context)?;
    Ok(Checkpoint { config, progress, state })
}

/// Reads a file written by [`save_tensors`]: its metadata and tensors.
pub fn load_tensors(path: &Path) -> anyhow::Result<(HashMap<String, String>, State)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let context = || format!("{} is not a safetensors file", path.display());
    let (_, header) = SafeTensors::read_metadata(&bytes).with_context(context)?;
    let meta = header.metadata().clone().unwrap_or_default();
    let tensors = SafeTensors::deserialize(&bytes).with_context(context)?;
    let mut state = State::new();
    for (name, view) in tensors.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor {name} is {:?}, expected F32", path.display(), view.dtype());
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        state.insert(name, HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok((meta, state))
}
