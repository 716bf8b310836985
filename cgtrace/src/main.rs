//! The `cgtrace` command: parses, dispatches, and turns errors into a
//! message and an exit code (1: could not run or found a problem; 2: usage).

use std::process::ExitCode;

use cgtrace::cli::{self, Cli, Command, Outcome};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Record(args) = &cli.command {
        // A recorded command's exit code is cgtrace's.
        return cli::record::run(args).unwrap_or_else(|error| {
            cgtrace::note!("cgtrace: {error:#}");
            ExitCode::FAILURE
        });
    }
    let result = match &cli.command {
        Command::Check(args) => cli::check::run(args),
        Command::Oom(args) => cli::oom::run(args),
        Command::Cache(args) => cli::cache::run(args),
        Command::Reclaim(args) => cli::reclaim::run(args),
        Command::Throttle(args) => cli::throttle::run(args),
        Command::Report(args) => cli::report::run(args),
        Command::Export(args) => cli::export::run(args),
        Command::Record(_) => unreachable!("handled above"),
        Command::Demo(args) => cli::demo::run(args),
        Command::Memhog(args) => cli::memhog::run(args),
        Command::Spin(args) => cli::memhog::spin(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::FAILURE,
        Err(error) => {
            cgtrace::note!("cgtrace: {error:#}");
            ExitCode::FAILURE
        }
    }
}
