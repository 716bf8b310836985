//! The `cgtrace` command: parses, dispatches, and turns errors into a
//! message and an exit code (1: could not run or found a problem; 2: usage).

use std::process::ExitCode;

use cgtrace::cli::{self, Cli, Command, Outcome};
use clap::Parser as _;

fn main() -> ExitCode {
    keep_large_allocations_out_of_the_heap();
    let cli = Cli::parse();
    cgtrace::privilege::raise_permitted();
    cgtrace::probe::log::request(cli.probe_log);
    cgtrace::probe::offsets::pretend_absent(&cli.pretend_absent);
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
        Command::Serve(args) => cli::serve::run(args),
        Command::Top(args) => cli::top::run(args),
        Command::Completions(args) => cli::docs::completions(args),
        Command::Man(args) => cli::docs::man(args),
        Command::Own(args) => cli::own::run(args),
        Command::Floor => cli::floor::run(),
        Command::Memhog(args) => cli::memhog::run(args),
        Command::Spin(args) => cli::memhog::spin(args),
        Command::PageCache(args) => cli::memhog::page_cache(args),
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

/// Large allocations (above all the kernel's parsed BTF, ~20 MB needed
/// only while the probes load) get mappings of their own, so their memory
/// returns to the system when loading ends and growing them moves no data.
/// Left alone, glibc raises this threshold after the first large free and
/// keeps later ones in the heap for the life of the process.
fn keep_large_allocations_out_of_the_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
