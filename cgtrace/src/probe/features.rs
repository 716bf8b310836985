//! The feature table: which kernel hooks each cgtrace feature can use, and
//! which of them this kernel has, for `cgtrace check`.

use serde::Serialize;

use crate::btf::{Btf, Kind};

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// fentry/fexit on a kernel function (BPF trampoline).
    Fentry,
    /// A BTF-typed tracepoint.
    TpBtf,
}

/// One hook a feature can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Hook {
    pub kind: HookKind,
    pub name: &'static str,
}

/// A feature and its probe variants, best first.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Feature {
    pub name: &'static str,
    /// Each variant is the set of hooks it needs.
    pub variants: &'static [(&'static str, &'static [Hook])],
    /// Whether this version of cgtrace implements the feature.
    pub implemented: bool,
    /// What the feature falls back to when no variant is available.
    pub fallback: Option<&'static str>,
}

const fn fentry(name: &'static str) -> Hook {
    Hook {
        kind: HookKind::Fentry,
        name,
    }
}

const fn tp_btf(name: &'static str) -> Hook {
    Hook {
        kind: HookKind::TpBtf,
        name,
    }
}

pub const FEATURES: &[Feature] = &[
    Feature {
        name: "oom",
        variants: &[
            (
                "fentry out_of_memory + tp_btf mark_victim",
                &[fentry("out_of_memory"), tp_btf("mark_victim")],
            ),
            ("tp_btf mark_victim + limit walk", &[tp_btf("mark_victim")]),
        ],
        implemented: true,
        fallback: Some("kernel log (/dev/kmsg) only"),
    },
    Feature {
        name: "page cache",
        variants: &[(
            "tp_btf filemap add/delete",
            &[
                tp_btf("mm_filemap_add_to_page_cache"),
                tp_btf("mm_filemap_delete_from_page_cache"),
            ],
        )],
        implemented: true,
        fallback: Some("memory.stat file/workingset counters"),
    },
    Feature {
        name: "reclaim",
        variants: &[(
            "tp_btf mm_vmscan_*",
            &[
                tp_btf("mm_vmscan_memcg_reclaim_begin"),
                tp_btf("mm_vmscan_memcg_reclaim_end"),
                tp_btf("mm_vmscan_direct_reclaim_begin"),
                tp_btf("mm_vmscan_direct_reclaim_end"),
                tp_btf("mm_vmscan_lru_shrink_inactive"),
            ],
        )],
        implemented: true,
        fallback: None,
    },
    Feature {
        name: "throttle",
        variants: &[
            (
                "fexit throttle_cfs_rq + fentry unthrottle_cfs_rq",
                &[fentry("throttle_cfs_rq"), fentry("unthrottle_cfs_rq")],
            ),
            ("tp_btf sched_switch", &[tp_btf("sched_switch")]),
        ],
        implemented: true,
        fallback: Some("cpu.stat deltas"),
    },
    Feature {
        name: "memcg stat tracepoints",
        variants: &[(
            "tp_btf mod_memcg_(lruvec_)state",
            &[tp_btf("mod_memcg_state"), tp_btf("mod_memcg_lruvec_state")],
        )],
        implemented: true,
        fallback: Some("memory.stat / memory.events deltas"),
    },
    Feature {
        name: "cgroup names",
        variants: &[(
            "tp_btf cgroup_mkdir/rmdir",
            &[tp_btf("cgroup_mkdir"), tp_btf("cgroup_rmdir")],
        )],
        implemented: true,
        fallback: Some(
            "paths read from cgroupfs when an event names a cgroup (one removed before that is id:N)",
        ),
    },
];

/// Whether the kernel's BTF has a hook.
#[must_use]
pub fn hook_present(btf: &Btf, hook: Hook) -> bool {
    match hook.kind {
        HookKind::Fentry => btf.has(Kind::Func, hook.name),
        HookKind::TpBtf => btf.has_btf_tracepoint(hook.name),
    }
}

/// The first variant whose hooks all exist, given whether the kernel lets
/// fentry programs load. Returns the variant's name and the hooks that
/// ruled out the better ones.
#[must_use]
pub fn best_variant(
    btf: &Btf,
    feature: &Feature,
    fentry_allowed: bool,
) -> (Option<&'static str>, Vec<String>) {
    let mut reasons = Vec::new();
    for (name, hooks) in feature.variants {
        let missing: Vec<&Hook> = hooks.iter().filter(|h| !hook_present(btf, **h)).collect();
        let needs_fentry = hooks.iter().any(|h| h.kind == HookKind::Fentry);
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|h| h.name).collect();
            reasons.push(format!("{name}: kernel lacks {}", names.join(", ")));
        } else if needs_fentry && !fentry_allowed {
            reasons.push(format!("{name}: fentry refused by this kernel"));
        } else {
            return (Some(name), reasons);
        }
    }
    (None, reasons)
}

#[cfg(test)]
mod tests {
    use super::{FEATURES, best_variant};
    use crate::btf::{Btf, fixture::Builder};

    fn kernel(funcs: &[&str], tracepoints: &[&str]) -> Btf {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let ptr = b.ptr(int);
        for tp in tracepoints {
            b.typedef(&format!("btf_trace_{tp}"), ptr);
        }
        let mut bytes_builder = b;
        for f in funcs {
            bytes_builder.func(f);
        }
        Btf::parse(bytes_builder.build()).unwrap()
    }

    #[test]
    fn picks_fentry_only_where_allowed() {
        let btf = kernel(&["out_of_memory"], &["mark_victim"]);
        let oom = &FEATURES[0];
        assert_eq!(
            best_variant(&btf, oom, true).0,
            Some("fentry out_of_memory + tp_btf mark_victim")
        );
        let (variant, reasons) = best_variant(&btf, oom, false);
        assert_eq!(variant, Some("tp_btf mark_victim + limit walk"));
        assert!(reasons[0].contains("fentry refused"), "{reasons:?}");
    }

    #[test]
    fn says_which_hook_is_missing() {
        let btf = kernel(&[], &[]);
        let (variant, reasons) = best_variant(&btf, &FEATURES[0], true);
        assert_eq!(variant, None);
        assert!(
            reasons.iter().any(|r| r.contains("mark_victim")),
            "{reasons:?}"
        );
        let memcg_stats = FEATURES
            .iter()
            .find(|f| f.name == "memcg stat tracepoints")
            .unwrap();
        let (variant, reasons) = best_variant(&btf, memcg_stats, true);
        assert_eq!(variant, None);
        assert!(reasons[0].contains("mod_memcg_state"));
    }
}
