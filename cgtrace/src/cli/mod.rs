//! Command-line interface: one module per subcommand; `main.rs` only
//! parses and dispatches.

pub mod cache;
pub mod charges;
pub mod check;
pub mod demo;
pub mod docs;
pub mod export;
pub mod floor;
pub mod interval;
pub mod live;
pub mod memhog;
pub mod oom;
pub mod own;
pub mod reclaim;
pub mod record;
pub mod report;
pub mod serve;
pub mod throttle;
pub mod top;

use clap::{Parser, Subcommand};

/// Trace Linux cgroups with eBPF: OOM kills (with the memcg whose limit was
/// hit), page-cache ownership and reclaim, CPU throttling.
#[derive(Debug, Parser)]
#[command(name = "cgtrace", version = crate::VERSION, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Have the probes say which kernel field they failed to read, and
    /// why (on stderr): for a kernel cgtrace has not met. Off, the verifier
    /// removes the log code and the probes cost nothing more.
    #[arg(long, global = true)]
    pub probe_log: bool,
    /// Treat an optional kernel struct member (`folio.memcg_data`) as
    /// absent: shows on this kernel what a kernel without it gives.
    #[arg(long, global = true, hide = true, value_name = "STRUCT.MEMBER")]
    pub pretend_absent: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What this kernel supports and which probe variant each feature uses.
    Check(check::CheckArgs),
    /// OOM kills: victim, cgroup, the memcg whose limit was hit, its limit
    /// and usage at the moment of the kill.
    Oom(oom::OomArgs),
    /// Page cache per cgroup: owned, added, evicted by reason — and by whom.
    Cache(cache::CacheArgs),
    /// Who reclaims whom, and reclaim stall latency per cgroup.
    Reclaim(reclaim::ReclaimArgs),
    /// CFS bandwidth throttling per cgroup: throttled periods and time,
    /// quota in cores and millicores, usage against it.
    Throttle(throttle::ThrottleArgs),
    /// Record every event family to a trace file, optionally while running
    /// a command in fresh (limited) cgroups.
    Record(record::RecordArgs),
    /// What a recorded run did, per cgroup (text or JSON).
    Report(report::ReportArgs),
    /// A trace as JSON lines, or as Chrome trace-event JSON for Perfetto UI.
    Export(export::ExportArgs),
    /// Run the built-in scenarios in scratch cgroups, traced, next to the
    /// kernel's own counters.
    Demo(demo::DemoArgs),
    /// Every probe family at once until SIGTERM, with a Prometheus
    /// endpoint (`/metrics`, `/healthz`): the node agent.
    Serve(serve::ServeArgs),
    /// One live screen for every cgroup's memory, page cache, reclaim,
    /// OOM kills and throttling (or a recording, stepped through).
    Top(top::TopArgs),
    /// Print a shell completion script (bash, zsh, fish, …).
    Completions(docs::CompletionsArgs),
    /// Write the man pages into a directory (`cargo xtask dist`'s input).
    #[command(name = "__man", hide = true)]
    Man(docs::ManArgs),
    /// Create a directory and give it to the agent's user (a DaemonSet's
    /// init container).
    #[command(name = "__own", hide = true)]
    Own(own::OwnArgs),
    /// Attach an empty program to each tracepoint cgtrace's hot paths use,
    /// until SIGINT or SIGTERM (the benchmark's floor).
    #[command(name = "__floor", hide = true)]
    Floor,
    /// Allocate and touch memory (the demo's and tests' workload).
    #[command(name = "__memhog", hide = true)]
    Memhog(memhog::MemhogArgs),
    /// Keep threads busy (the throttling scenario's and tests' workload).
    #[command(name = "__spin", hide = true)]
    Spin(memhog::SpinArgs),
    /// Write, read back and remove a file (`cgtrace check --probe-log`'s workload).
    #[command(name = "__pagecache", hide = true)]
    PageCache(memhog::PageCacheArgs),
}

/// How a subcommand ended, for the process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Ran, but found something wrong (a demo mismatch, a kernel that
    /// cannot run cgtrace).
    Failure,
}
