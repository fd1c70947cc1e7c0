//! `unpersonal`: the command-line front end of the Unpersonal runtime.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, Output};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output { json: cli.json, quiet: cli.quiet };
    let result = match &cli.command {
        Command::Info(args) => cli::info::run(args, &out),
        Command::Generate(args) => cli::generate::run(args, &out),
        Command::Merge(args) => cli::merge::run(args, &out),
        Command::Check(args) => cli::check::run(args, &out),
        Command::Audit(args) => cli::audit::run(args, &out),
        Command::Bench(args) => cli::bench::run(args, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
