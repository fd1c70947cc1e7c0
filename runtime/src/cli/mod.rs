//! Command-line arguments and output conventions shared by every subcommand.

pub mod info;

use clap::{Parser, Subcommand};

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

    /// Prints `value` (pretty) in JSON mode.
    pub fn json(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        Ok(())
    }
}
