//! Command-line arguments and output conventions shared by every subcommand.

pub mod audit;
pub mod audit_models;
pub mod bench;
pub mod check;
pub mod generate;
pub mod info;
pub mod merge;
mod outdir;
mod progress;
mod reference;
pub mod sample;

use clap::{Parser, Subcommand};
use unpersonal_runtime::bundle::SamplerSpec;
use unpersonal_runtime::generate::{Overrides, Settings};
use unpersonal_runtime::sampler::{Guidance, Solver};

/// Turns personal image sets into unpersonal synthetic ones, with the model bundles the
/// Unpersonal trainer exports (ONNX files + bundle.json).
#[derive(Debug, Parser)]
#[command(name = "unpersonal", version)]
pub struct Cli {
    /// Print one JSON document on standard output instead of text (errors still go to
    /// standard error, with a nonzero exit status).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing on success; errors still go to standard error and the exit status says
    /// whether the command succeeded.
    #[arg(long, short, global = true, conflicts_with = "json")]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a model bundle and show what it holds: roles, files and their verified hashes,
    /// expected inputs and outputs, sampler defaults, provenance.
    Info(info::Args),
    /// Generate synthetic images pseudo-conditioned on each reference image (PNG + a filelist
    /// in the reference format + report.json). Re-running over the same --out resumes.
    Generate(generate::Args),
    /// Join the outputs of `generate --shard i/n` runs into the single-run result.
    Merge(merge::Args),
    /// Check images against a reference set: exit status 0 only if no image is a pixel
    /// near-copy of a reference (correlation ≥ 0.99, mirrored too) and the re-identification
    /// model links none to its nearest references (at the neighbour threshold, or the strict
    /// one with --strict); what the model catches is what the bundle's calibration says.
    Check(check::Args),
    /// Measure what a release is worth and what it risks: utility, fidelity, re-identification,
    /// distance to closest record, singling-out, memorisation (audit.json + audit.html).
    Audit(audit::Args),
    /// Membership inference against the bundle's models: how well an attacker holding the
    /// weights tells training records from holdout records (ROC AUC with a bootstrap interval,
    /// TPR at 0.1 % and 1 % FPR, per model and attack).
    AuditModels(audit_models::Args),
    /// Measure how fast a backend runs the bundle's models here: denoiser evaluations/s and
    /// GFLOP/s at several batch sizes against the backend's matrix-product peak, images/s at
    /// the default settings, gate checks/s against 10k and 100k references.
    Bench(bench::Args),
    /// RESEARCH ONLY, ungated: draw one round's candidates for the first reference images,
    /// from the runtime's noise or explicit noise (--noise FILE.npy), and write the
    /// model-space results (model_space.npy) beside their PNGs: the harness a partner checks
    /// an implementation of docs/bundle.md against.
    Sample(sample::Args),
}

/// The ONNX engine, as `--backend` (and for ONNX Runtime `--device`, `--threads`) say.
#[derive(Debug, clap::Args)]
pub struct BackendArgs {
    /// Engine running the models: `tract` (pure Rust, CPU), `ort` (ONNX Runtime; needs a
    /// build with `--features ort` and the ONNX Runtime library, found through
    /// $ORT_DYLIB_PATH or the .venv scripts/setup.sh made, in the working directory or beside
    /// the executable) or `webgpu` (WGSL kernels on a GPU adapter; needs `--features webgpu`).
    #[arg(long, value_enum, default_value_t = BackendKind::Tract)]
    pub backend: BackendKind,
    /// ONNX Runtime's device: `cpu`, or `cuda` (an error if CUDA cannot run, never a silent
    /// CPU fallback).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// CPU cores the run uses in all (0: every core): the default number of jobs on the CPU,
    /// and shared out among the jobs as ONNX Runtime's intra-op threads or as the threads
    /// that run tract's rows (`--threads 1` runs on one core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Batches run in parallel, each by its own copy of the models (default: one per core of
    /// --threads on the CPU, where independent single-threaded sessions outrun one
    /// multi-threaded session; 1 on CUDA and WebGPU).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// `--bundle`: the directory as given; or, when a relative path names nothing from the working
/// directory, the bundle of that path beside the running executable or one of its parents (so
/// that `target/release/unpersonal` finds the checkout's `models/` from anywhere). A path that
/// names no bundle either way is kept as given, for the error that names it.
pub fn bundle_dir(text: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(text);
    if path.is_absolute() || path.exists() {
        return Ok(path);
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(std::path::Path::parent).and_then(|dir| {
        dir.ancestors().map(|a| a.join(&path)).find(|p| p.join("bundle.json").is_file())
    });
    Ok(beside.unwrap_or(path))
}

/// The cores this process may run on.
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--backend` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// tract, pure Rust.
    Tract,
    /// ONNX Runtime.
    Ort,
    /// WebGPU through wgpu: Vulkan, Metal or DX12 (needs a build with `--features webgpu`).
    Webgpu,
}

/// `--device` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// The CPU.
    Cpu,
    /// NVIDIA GPU 0 through CUDA.
    Cuda,
}

impl BackendArgs {
    /// Fails when `--jobs` or `--threads` lies outside [`limits`](unpersonal_runtime::bundle::limits).
    pub fn validate(&self) -> anyhow::Result<()> {
        use unpersonal_runtime::bundle::limits::{JOBS, THREADS, count_problem};
        if let Some(problem) = self.jobs.and_then(|jobs| count_problem(jobs, &JOBS)) {
            anyhow::bail!("--jobs {problem}");
        }
        if let Some(problem) = count_problem(self.threads, &THREADS) {
            anyhow::bail!("--threads {problem}");
        }
        Ok(())
    }

    /// Parallel workers, as `--jobs` says or by default.
    pub fn jobs(&self) -> usize {
        self.plan(available_cores(), usize::MAX).0
    }

    /// `(jobs, threads per job)` on a machine of `cores` cores for `chunks` independent pieces
    /// of work: `--threads` (else `cores`) cores in all, one job per core on the CPU unless
    /// `--jobs` says otherwise but never more jobs than pieces, each job with its share of the
    /// cores (at least one).
    fn plan(&self, cores: usize, chunks: usize) -> (usize, usize) {
        let budget = if self.threads > 0 { self.threads } else { cores.max(1) };
        let gpu = self.device == DeviceKind::Cuda || self.backend == BackendKind::Webgpu;
        let jobs = self.jobs.unwrap_or(if gpu { 1 } else { budget }).min(chunks).max(1);
        (jobs, (budget / jobs).max(1))
    }

    /// The backend of one of [`BackendArgs::jobs`] workers.
    pub fn backend(&self) -> anyhow::Result<Box<dyn unpersonal_runtime::backend::Backend>> {
        self.backend_for(usize::MAX)
    }

    /// Parallel workers for `chunks` independent pieces of work: [`BackendArgs::jobs`], but
    /// never more than there are pieces.
    pub fn jobs_for(&self, chunks: usize) -> usize {
        self.plan(available_cores(), chunks).0
    }

    /// The backend of one of the [`BackendArgs::jobs_for`] workers of `chunks` pieces of work:
    /// fewer workers than cores each run on several.
    pub fn backend_for(
        &self,
        chunks: usize,
    ) -> anyhow::Result<Box<dyn unpersonal_runtime::backend::Backend>> {
        self.backend_with(self.plan(available_cores(), chunks).1)
    }

    /// The backend of a single worker with the whole machine (`--threads`, else every core).
    pub fn single_backend(&self) -> anyhow::Result<Box<dyn unpersonal_runtime::backend::Backend>> {
        self.backend_with(self.threads)
    }

    fn backend_with(
        &self,
        threads: usize,
    ) -> anyhow::Result<Box<dyn unpersonal_runtime::backend::Backend>> {
        match self.backend {
            BackendKind::Tract => {
                anyhow::ensure!(
                    self.device == DeviceKind::Cpu,
                    "--device cuda needs --backend ort (tract runs on the CPU)"
                );
                // 0 (every core, as for ONNX Runtime's intra-op threads) is this machine's
                // cores for tract's rows.
                let threads = if threads == 0 { available_cores() } else { threads };
                Ok(Box::new(unpersonal_runtime::backend::Tract::with_threads(threads)))
            }
            #[cfg(feature = "ort")]
            BackendKind::Ort => {
                use unpersonal_runtime::backend::ort::{Device, Ort};
                let device = match self.device {
                    DeviceKind::Cpu => Device::Cpu,
                    DeviceKind::Cuda => Device::Cuda,
                };
                Ok(Box::new(Ort::new(None, device, threads)?))
            }
            #[cfg(feature = "webgpu")]
            BackendKind::Webgpu => {
                anyhow::ensure!(
                    self.device == DeviceKind::Cpu,
                    "--device is ONNX Runtime's; --backend webgpu picks the GPU adapter itself"
                );
                Ok(Box::new(unpersonal_runtime::backend::webgpu::WebGpu::new()?))
            }
            #[cfg(not(feature = "webgpu"))]
            BackendKind::Webgpu => anyhow::bail!(
                "this `unpersonal` was built without WebGPU: rebuild with `--features webgpu`"
            ),
            #[cfg(not(feature = "ort"))]
            BackendKind::Ort => {
                let _ = threads;
                anyhow::bail!(
                    "this `unpersonal` was built without ONNX Runtime: rebuild with `--features ort` (e.g. cargo run --release -p unpersonal-runtime --features ort -- …)"
                )
            }
        }
    }
}

/// The sampler's settings a run may change from the bundle's `sampler` defaults.
#[derive(Debug, clap::Args)]
pub struct SamplerArgs {
    /// Candidates drawn per reference image and round (default: the bundle's
    /// sampler.candidates_per_image).
    #[arg(long, value_name = "N")]
    pub candidates: Option<usize>,
    /// Rounds per reference image, each with guidance lowered by the bundle's
    /// sampler.guidance_decrement, before it releases nothing (default: sampler.max_rounds).
    #[arg(long, value_name = "R")]
    pub rounds: Option<usize>,
    /// ODE solver: `heun`, `dpmpp-2m`, or `distilled` (the bundle's student: unguided, in
    /// sampler.distilled.steps steps) (default: the bundle's sampler.solver).
    #[arg(long)]
    pub solver: Option<Solver>,
    /// Solver steps (default: the bundle's sampler.steps; for `distilled`, the steps its
    /// student learnt).
    #[arg(long, value_name = "S")]
    pub steps: Option<usize>,
    /// Guidance weight w in D_u + w·(D_c − D_u) of the first round (default: the bundle's
    /// sampler.guidance).
    #[arg(long, value_name = "W")]
    pub guidance: Option<f32>,
    /// Guide only at noise levels lo < σ ≤ hi, with the conditional model alone elsewhere
    /// (default: the bundle's sampler.guidance_interval; `0,1e9` guides everywhere).
    #[arg(long, value_name = "LO,HI", value_parser = Guidance::parse_interval)]
    pub guidance_interval: Option<[f64; 2]>,
}

impl SamplerArgs {
    /// The bundle's defaults with `seed`, changed by these flags and checked against the
    /// limits.
    pub fn settings(&self, sampler: &SamplerSpec, seed: u64) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            solver: self.solver,
            steps: self.steps,
            guidance: self.guidance,
            guidance_interval: self.guidance_interval,
            candidates: self.candidates,
            rounds: self.rounds,
        };
        Settings::resolve(sampler, seed, &overrides, |setting| format!("--{setting}"))
            .map_err(anyhow::Error::msg)
    }
}

/// Where results go, as the global flags say.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// `--json`.
    pub json: bool,
    /// `--quiet`.
    pub quiet: bool,
}

impl Output {
    /// Prints `text` unless quiet or in JSON mode.
    pub fn text(&self, text: &str) {
        if !self.quiet && !self.json {
            println!("{text}");
        }
    }

    /// Progress over `total` items (`done` of them already done): a bar on a terminal, lines
    /// in a log; nothing when quiet or in JSON mode.
    pub fn progress(&self, total: usize, done: usize, unit: &str) -> progress::Progress {
        progress::Progress::new(total, done, unit, self.quiet || self.json)
    }

    /// Prints `value` (pretty) in JSON mode.
    pub fn json(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        backend: BackendArgs,
    }

    fn plan(flags: &[&str], cores: usize) -> (usize, usize) {
        plan_for(flags, cores, usize::MAX)
    }

    fn plan_for(flags: &[&str], cores: usize, chunks: usize) -> (usize, usize) {
        let flags = Flags::try_parse_from(std::iter::once("test").chain(flags.iter().copied()));
        flags.unwrap().backend.plan(cores, chunks)
    }

    #[test]
    fn threads_bound_the_cores_a_run_uses() {
        assert_eq!(plan(&[], 8), (8, 1), "one single-threaded job per core by default");
        assert_eq!(plan(&["--threads", "1"], 8), (1, 1), "--threads 1 alone runs on one core");
        assert_eq!(plan(&["--threads", "4"], 8), (4, 1));
        assert_eq!(plan(&["--threads", "4", "--jobs", "2"], 8), (2, 2));
        assert_eq!(plan(&["--jobs", "3"], 8), (3, 2));
        assert_eq!(plan(&["--backend", "ort", "--device", "cuda"], 8), (1, 8));
        assert_eq!(plan(&["--jobs", "16"], 8), (16, 1), "at least one thread per job");
    }

    #[test]
    fn fewer_pieces_of_work_than_cores_give_each_job_more_cores() {
        assert_eq!(plan_for(&[], 8, 1), (1, 8), "one piece: one job on every core");
        assert_eq!(plan_for(&[], 8, 3), (3, 2));
        assert_eq!(plan_for(&["--threads", "4"], 8, 2), (2, 2));
        assert_eq!(plan_for(&[], 8, 0), (1, 8), "no work still plans one job");
    }
}
