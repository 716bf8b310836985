//! `cgtrace check`: what this kernel supports and which probe variant each
//! feature uses. It loads the real probes (as root), so "ready" means the
//! verifier accepted them and they attached here. With `--probe-log` the
//! probes also run on a workload of check's own ([`exercise`]).

mod exercise;

use std::fmt::Write as _;

use clap::Args;
use serde::Serialize;

use super::Outcome;
use crate::{
    btf::{Btf, BtfError},
    cgroup::{Hierarchies, Version},
    probe::{
        FeatureSet, FeatureStatus, Probe, ProbeError, ProbeOptions,
        features::{FEATURES, Feature, best_variant},
        offsets::{cost_of_absence, resolve},
    },
    system::{self, Privileges},
};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    btf: Result<usize, String>,
    cgroup_mode: String,
    hierarchies: Vec<HierarchyRow>,
    tracefs_mounted: bool,
    privileges: String,
    can_trace: bool,
    capabilities: CapabilityRow,
    fentry: String,
    /// Optional kernel members this kernel lacks, and what each costs (the
    /// fallbacks declared in `probe::offsets`).
    absent_members: Vec<AbsentMember>,
    features: Vec<FeatureRow>,
    can_run: bool,
    /// With `--probe-log`: the probes on check's workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_log: Option<Result<exercise::Exercised, String>>,
}

#[derive(Debug, Serialize)]
struct AbsentMember {
    member: String,
    loses: &'static str,
}

/// The optional members this kernel's BTF lacks.
fn absent_members(btf: Result<&Btf, &BtfError>) -> Vec<AbsentMember> {
    let Ok(layout) = btf
        .map_err(|_| ())
        .and_then(|btf| resolve(btf).map_err(|_| ()))
    else {
        return Vec::new();
    };
    layout
        .absent
        .into_iter()
        .map(|member| AbsentMember {
            loses: cost_of_absence(&member).unwrap_or("undeclared"),
            member,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct HierarchyRow {
    id: Option<u32>,
    version: &'static str,
    mount: String,
    controllers: Vec<String>,
}

/// The capabilities in effect, and what each live view keeps once its
/// probes are attached (it gives up the rest).
#[derive(Debug, Serialize)]
struct CapabilityRow {
    effective: Vec<String>,
    /// Whether opening `/dev/kmsg` needs CAP_SYSLOG here.
    kernel_log_needs_syslog: bool,
    kept_after_attach: Vec<KeptRow>,
}

#[derive(Debug, Serialize)]
struct KeptRow {
    view: &'static str,
    kept: Vec<String>,
    reasons: Vec<&'static str>,
}

impl CapabilityRow {
    fn now() -> Self {
        Self {
            effective: crate::privilege::effective_names(),
            kernel_log_needs_syslog: std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
                .is_ok_and(|v| v.trim() == "1"),
            kept_after_attach: crate::privilege::KEPT_BY_VIEW
                .iter()
                .map(|(view, keep)| KeptRow {
                    view,
                    kept: crate::privilege::names(keep),
                    reasons: keep.iter().map(|k| k.reason()).collect(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct FeatureRow {
    feature: &'static str,
    status: &'static str,
    variant: Option<String>,
    detail: String,
}

pub fn run(args: &CheckArgs) -> anyhow::Result<Outcome> {
    let report = gather();
    if args.json {
        crate::say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::say!("{}", render(&report).trim_end());
    }
    Ok(if report.can_run {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}

fn gather() -> Report {
    let btf = Btf::from_sys_fs();
    let hierarchies = Hierarchies::discover().unwrap_or_default();
    let privileges = Privileges::current();

    // Loading the probe is the only honest test of what the kernel accepts.
    let mut probe = if privileges.can_trace() && btf.is_ok() {
        Some(Probe::load(&ProbeOptions {
            features: FeatureSet::ALL,
            ..ProbeOptions::default()
        }))
    } else {
        None
    };
    let statuses: Vec<FeatureStatus> = match &probe {
        Some(Ok(p)) => p.features().to_vec(),
        _ => Vec::new(),
    };
    let oom_status = statuses.iter().find(|f| f.feature == "oom").cloned();
    // The OOM probe tries fentry first; its outcome says whether this kernel
    // allows BPF trampolines at all.
    let fentry_allowed = oom_status.as_ref().is_some_and(|s| {
        s.variant
            .as_deref()
            .is_some_and(|v| v.starts_with("fentry"))
    });
    let fentry = match (&oom_status, &probe) {
        (Some(s), _) if fentry_allowed => format!("allowed ({})", s.detail),
        (Some(_), _) => {
            "refused by this kernel (the OOM probe's fentry load failed; see oom below)".to_owned()
        }
        (None, Some(Err(e))) => format!("unknown: the probe did not load ({})", error_text(e)),
        (None, _) => "unknown: needs root to try".to_owned(),
    };

    let features = FEATURES
        .iter()
        .map(|feature| {
            feature_row(
                feature,
                btf.as_ref(),
                probe.as_ref(),
                statuses.iter().find(|s| s.feature == feature.name),
                privileges,
                fentry_allowed,
            )
        })
        .collect();

    let can_run = btf.is_ok() && privileges.can_trace() && matches!(probe, Some(Ok(_)));
    let probe_log = match &mut probe {
        Some(Ok(probe)) if crate::probe::log::requested() => {
            Some(exercise::exercise(probe).map_err(|e| format!("{e:#}")))
        }
        _ => None,
    };
    Report {
        kernel: system::kernel_release(),
        btf: btf.as_ref().map(Btf::len).map_err(ToString::to_string),
        cgroup_mode: hierarchies.mode().to_string(),
        hierarchies: hierarchies
            .list
            .iter()
            .map(|h| HierarchyRow {
                id: h.id,
                version: match h.version {
                    Version::V1 => "v1",
                    Version::V2 => "v2",
                },
                mount: h.mount.display().to_string(),
                controllers: h.controllers.clone(),
            })
            .collect(),
        tracefs_mounted: system::tracefs_mounted(),
        privileges: if privileges.euid == 0 {
            "root".to_owned()
        } else {
            format!("uid {}", privileges.euid)
        },
        can_trace: privileges.can_trace(),
        capabilities: CapabilityRow::now(),
        fentry,
        absent_members: absent_members(btf.as_ref()),
        features,
        can_run,
        probe_log,
    }
}

/// One feature's row: the OOM feature from the probe that was loaded, the
/// others from the hooks BTF says exist.
fn feature_row(
    feature: &Feature,
    btf: Result<&Btf, &BtfError>,
    probe: Option<&Result<Probe, ProbeError>>,
    status: Option<&FeatureStatus>,
    privileges: Privileges,
    fentry_allowed: bool,
) -> FeatureRow {
    let btf = match btf {
        Ok(btf) => btf,
        Err(e) => {
            return FeatureRow {
                feature: feature.name,
                status: "unavailable",
                variant: None,
                detail: e.to_string(),
            };
        }
    };
    if feature.implemented {
        // Loaded and attached for real: the probe's own account.
        return match (probe, status) {
            (_, Some(status)) => FeatureRow {
                feature: feature.name,
                status: if status.variant.is_some() {
                    "ready"
                } else {
                    "unavailable"
                },
                variant: status.variant.clone(),
                detail: if status.variant.is_some() {
                    status.detail.clone()
                } else {
                    format!(
                        "{}; falls back to {}",
                        status.detail,
                        feature.fallback.unwrap_or("nothing")
                    )
                },
            },
            (Some(Err(e)), _) => FeatureRow {
                feature: feature.name,
                status: "unavailable",
                variant: None,
                detail: format!(
                    "{}; falls back to {}",
                    error_text(e),
                    feature.fallback.unwrap_or("nothing")
                ),
            },
            _ => FeatureRow {
                feature: feature.name,
                status: "not verified",
                variant: None,
                detail: crate::probe::ProbeError::NotPrivileged {
                    missing: privileges.missing(),
                }
                .to_string(),
            },
        };
    }
    let (variant, reasons) = best_variant(btf, feature, fentry_allowed);
    let mut detail = if variant.is_none() {
        format!(
            "no hook available; would fall back to {}",
            feature.fallback.unwrap_or("nothing")
        )
    } else {
        "hooks present; not implemented in this version".to_owned()
    };
    for reason in reasons {
        let _ = write!(detail, "; {reason}");
    }
    FeatureRow {
        feature: feature.name,
        status: if variant.is_some() {
            "planned"
        } else {
            "unavailable"
        },
        variant: variant.map(str::to_owned),
        detail,
    }
}

fn error_text(error: &ProbeError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let _ = write!(text, ": {e}");
        source = e.source();
    }
    text
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel      {}", report.kernel);
    let _ = match &report.btf {
        Ok(types) => writeln!(
            out,
            "btf         {} ({types} types)",
            crate::btf::VMLINUX_BTF
        ),
        Err(e) => writeln!(out, "btf         MISSING: {e}"),
    };
    let _ = writeln!(out, "cgroups     {}", report.cgroup_mode);
    for h in &report.hierarchies {
        let controllers = if h.controllers.is_empty() {
            "no controllers".to_owned()
        } else {
            h.controllers.join(",")
        };
        let id = h.id.map_or_else(|| "-".to_owned(), |id| id.to_string());
        let _ = writeln!(
            out,
            "  {:<3} {:>2}  {:<28} {controllers}",
            h.version, id, h.mount
        );
    }
    let _ = writeln!(
        out,
        "tracefs     {}",
        if report.tracefs_mounted {
            format!("mounted at {}", system::TRACEFS)
        } else {
            "not mounted (only classic tracepoints need it: mount -t tracefs nodev /sys/kernel/tracing)".to_owned()
        }
    );
    let _ = writeln!(
        out,
        "privileges  {} ({})",
        report.privileges,
        if report.can_trace {
            "can load eBPF tracing programs"
        } else {
            "cannot load eBPF programs: run with sudo"
        }
    );
    render_capabilities(&mut out, &report.capabilities);
    let _ = writeln!(out, "fentry      {}", report.fentry);
    if report.absent_members.is_empty() {
        let _ = writeln!(
            out,
            "layout      every kernel member the probes read is there"
        );
    }
    for absent in &report.absent_members {
        let _ = writeln!(
            out,
            "layout      no {} on this kernel: without {}",
            absent.member, absent.loses
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<24} {:<12} {:<42} DETAIL",
        "FEATURE", "STATUS", "VARIANT"
    );
    for f in &report.features {
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<42} {}",
            f.feature,
            f.status,
            f.variant.as_deref().unwrap_or("-"),
            f.detail
        );
    }
    match &report.probe_log {
        Some(Ok(exercised)) => render_exercised(&mut out, exercised),
        Some(Err(e)) => {
            let _ = writeln!(out, "\nprobe log: the workload could not run: {e}");
        }
        None => {}
    }
    if !report.can_run {
        let _ = writeln!(
            out,
            "\ncgtrace cannot trace on this machine as it is: see above."
        );
    }
    out
}

fn render_exercised(out: &mut String, exercised: &exercise::Exercised) {
    let _ = writeln!(
        out,
        "\nprobe log: a 96 MiB file written and read under a 32 MiB limit, and a spinner under a 0.1-core quota"
    );
    for run in &exercised.programs {
        let _ = writeln!(out, "  ran      {:<24} {:>9} times", run.program, run.runs);
    }
    if !exercised.not_run.is_empty() {
        let _ = writeln!(
            out,
            "  not run  {} (nothing in the workload reaches them)",
            exercised.not_run.join(", ")
        );
    }
    if exercised.read_failures.is_empty() {
        let _ = writeln!(out, "  every kernel field the programs read was read");
    }
    for failed in &exercised.read_failures {
        let _ = writeln!(
            out,
            "  FAILED   {:<24} {:>9} reads",
            failed.chain, failed.failures
        );
    }
    for line in &exercised.log {
        let _ = writeln!(out, "  log      {line}");
    }
}

fn render_capabilities(out: &mut String, row: &CapabilityRow) {
    let effective = match row.effective.len() {
        0 => "none".to_owned(),
        n if n > 6 => format!("{n} (all a root process has)"),
        _ => row.effective.join(", "),
    };
    let _ = writeln!(out, "capabilities in effect: {effective}");
    let _ = writeln!(
        out,
        "            to start: CAP_BPF and CAP_PERFMON (load and attach){}",
        if row.kernel_log_needs_syslog {
            ", CAP_SYSLOG (the kernel log: kernel.dmesg_restrict is 1)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "            kept once attached (the rest is given up; record and demo keep theirs, which what they run inherits):"
    );
    for kept in &row.kept_after_attach {
        let _ = writeln!(
            out,
            "              {:<16} {} ({})",
            kept.view,
            kept.kept.join(", "),
            kept.reasons.join("; ")
        );
    }
}
