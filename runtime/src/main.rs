//! `unpersonal`: the command-line front end of the Unpersonal runtime.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, Output};

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so a print into a closed pipe (`unpersonal info | head -1`) would
    // panic; with the default action the process ends quietly, as a Unix tool does. Files are
    // written whole or not at all, so ending at any point leaves nothing half-written.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let out = Output { json: cli.json, quiet: cli.quiet };
    let result = match &cli.command {
        Command::Info(args) => cli::info::run(args, &out),
        Command::Generate(args) => cli::generate::run(args, &out),
        Command::Merge(args) => cli::merge::run(args, &out),
        Command::Check(args) => cli::check::run(args, &out),
        Command::Audit(args) => cli::audit::run(args, &out),
        Command::AuditModels(args) => cli::audit_models::run(args, &out),
        Command::Bench(args) => cli::bench::run(args, &out),
        Command::Sample(args) => cli::sample::run(args, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
