//! A snapshot's rows as the screen lists them: by workload (a pod's
//! figures summed over its cgroups, its containers below it when
//! expanded; Docker containers, systemd units and plain cgroups as their
//! own lines), or as the flat cgroup tree; filtered, then sorted.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use crate::{
    identity::{
        Identity,
        selector::{has_wildcards, unescape, wildcard},
    },
    model::top::Row,
};

/// How the screen groups cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    /// Pods (by namespace), expanding into their containers; other
    /// workloads as they are named.
    #[default]
    Workloads,
    /// Every cgroup, indented below its parent, in path order.
    Tree,
}

/// A column the lines can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Name,
    Memory,
    Cache,
    Evicted,
    EvictedByOthers,
    Refaults,
    StallP99,
    Pressure,
    OomKills,
    Throttled,
    ThrottledMs,
    Quota,
}

impl Column {
    pub const ALL: [Self; 12] = [
        Self::Name,
        Self::Memory,
        Self::Cache,
        Self::Evicted,
        Self::EvictedByOthers,
        Self::Refaults,
        Self::StallP99,
        Self::Pressure,
        Self::OomKills,
        Self::Throttled,
        Self::ThrottledMs,
        Self::Quota,
    ];

    /// The column's heading.
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::Name => "WORKLOAD",
            Self::Memory => "MEMORY/LIMIT",
            Self::Cache => "CACHE",
            Self::Evicted => "EVICT/s",
            Self::EvictedByOthers => "BY-OTHERS",
            Self::Refaults => "REFLT/s",
            Self::StallP99 => "STALL99",
            Self::Pressure => "PSI10",
            Self::OomKills => "OOM",
            Self::Throttled => "THR%",
            Self::ThrottledMs => "THRms/s",
            Self::Quota => "QUOTA",
        }
    }

    /// The value this column sorts by (larger first, names aside).
    fn key(self, row: &Row) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "sort keys")]
        let float = |v: Option<u64>| v.map_or(-1.0, |v| v as f64);
        match self {
            Self::Name => 0.0,
            Self::Memory => float(row.usage_bytes),
            Self::Cache => float(row.cache_bytes),
            Self::Evicted => row.evicted_per_s,
            Self::EvictedByOthers => row.evicted_by_others.unwrap_or(-1.0),
            Self::Refaults => row.refaults_per_s,
            Self::StallP99 => float(row.stall_p99_ns),
            Self::Pressure => row.memory_pressure.unwrap_or(-1.0),
            Self::OomKills => float(Some(row.oom_kills)),
            Self::Throttled => row.throttled_share.unwrap_or(-1.0),
            Self::ThrottledMs => row.throttled_ms_per_s.unwrap_or(-1.0),
            Self::Quota => float(row.quota_millicores),
        }
    }
}

/// One line of the table. It borrows the snapshot's rows: the screen
/// lists every cgroup each second, and copying each row (and its path)
/// into its line would allocate and touch all of them again.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<'a> {
    /// What the screen prints in the first column (indented for a
    /// container under its pod, or a cgroup under its parent).
    pub label: String,
    pub depth: usize,
    /// The cgroup path whose detail Enter opens (a pod: its own cgroup,
    /// or its first container's).
    pub path: &'a str,
    /// The figures: a cgroup's own, or a pod's summed.
    pub row: Cow<'a, Row>,
    /// A pod line that has containers to expand into.
    pub expandable: bool,
}

/// The lines to show: grouped, filtered by `filter` (a substring, or a
/// glob when it has `*`, `?` or `[`, over the label and the path), sorted
/// by `sort` (descending, or ascending when `reverse`).
#[must_use]
pub fn lines<'a>(
    rows: &'a [Row],
    identify: &mut dyn FnMut(&str) -> Identity,
    grouping: Grouping,
    expanded: &BTreeSet<String>,
    filter: &str,
    sort: Column,
    reverse: bool,
) -> Vec<Line<'a>> {
    let mut lines = match grouping {
        Grouping::Tree => tree(rows),
        Grouping::Workloads => workloads(rows, identify, expanded),
    };
    if !filter.is_empty() {
        lines.retain(|l| matches(filter, &l.label) || matches(filter, l.path));
    }
    if grouping == Grouping::Tree {
        return lines;
    }
    sort_keeping_children(lines, sort, reverse)
}

fn matches(filter: &str, text: &str) -> bool {
    if has_wildcards(filter) {
        wildcard(filter, text)
    } else {
        text.contains(unescape(filter).as_str())
    }
}

/// Every cgroup under its parent, in path order.
fn tree(rows: &[Row]) -> Vec<Line<'_>> {
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    sorted
        .into_iter()
        .map(|row| {
            let depth = row.path.matches('/').count().saturating_sub(1);
            let leaf = match row.path.rsplit('/').next() {
                Some("") | None => "/",
                Some(leaf) => leaf,
            };
            Line {
                label: format!("{}{leaf}", "  ".repeat(depth)),
                depth,
                path: &row.path,
                row: Cow::Borrowed(row),
                expandable: false,
            }
        })
        .collect()
}

/// A pod's cgroups: its own, and its containers' with their names.
#[derive(Default)]
struct PodRows<'a> {
    own: Vec<&'a Row>,
    containers: Vec<(String, &'a Row)>,
}

/// Pods with their containers; everything else by its own label.
fn workloads<'a>(
    rows: &'a [Row],
    identify: &mut dyn FnMut(&str) -> Identity,
    expanded: &BTreeSet<String>,
) -> Vec<Line<'a>> {
    let mut pods: BTreeMap<String, PodRows<'_>> = BTreeMap::new();
    let mut lines = Vec::new();
    for row in rows {
        let who = identify(&row.path);
        match (&who.namespace, &who.pod) {
            (Some(namespace), Some(pod)) => {
                let entry = pods.entry(format!("{namespace}/{pod}")).or_default();
                match &who.container {
                    Some(container) => entry.containers.push((container.clone(), row)),
                    None if who.container_id().is_some() => {
                        entry.containers.push((who.label(&row.path), row));
                    }
                    None => entry.own.push(row),
                }
            }
            _ => lines.push(Line {
                label: who.label(&row.path),
                depth: 0,
                path: &row.path,
                row: Cow::Borrowed(row),
                expandable: false,
            }),
        }
    }
    for (pod, PodRows { own, containers }) in pods {
        let pod_row = sum(&own, &containers);
        let path = own
            .first()
            .or(containers.first().map(|(_, r)| r))
            .map_or("", |r| r.path.as_str());
        let open = expanded.contains(&pod);
        lines.push(Line {
            label: pod.clone(),
            depth: 0,
            path,
            row: Cow::Owned(pod_row),
            expandable: !containers.is_empty(),
        });
        if open {
            for (name, row) in containers {
                lines.push(Line {
                    label: format!("  {name}"),
                    depth: 1,
                    path: &row.path,
                    row: Cow::Borrowed(row),
                    expandable: false,
                });
            }
        }
    }
    lines
}

/// A pod's figures: its own cgroup's usage, limit and cache where it was
/// read (the kernel counts its containers in it), else its containers'
/// summed; events and rates summed over all its cgroups.
fn sum(own: &[&Row], containers: &[(String, &Row)]) -> Row {
    let all: Vec<&Row> = own
        .iter()
        .copied()
        .chain(containers.iter().map(|(_, r)| *r))
        .collect();
    let pod = own.iter().find(|r| r.usage_bytes.is_some());
    let sum_opt = |f: &dyn Fn(&Row) -> Option<u64>| {
        let values: Vec<u64> = containers.iter().filter_map(|(_, r)| f(r)).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let max_f = |f: &dyn Fn(&Row) -> Option<f64>| all.iter().filter_map(|r| f(r)).reduce(f64::max);
    Row {
        path: pod.map_or_else(String::new, |r| r.path.clone()),
        usage_bytes: pod
            .and_then(|r| r.usage_bytes)
            .or_else(|| sum_opt(&|r| r.usage_bytes)),
        limit_bytes: pod.and_then(|r| r.limit_bytes),
        cache_bytes: own
            .iter()
            .find_map(|r| r.cache_bytes)
            .or_else(|| sum_opt(&|r| r.cache_bytes)),
        evicted_per_s: all.iter().map(|r| r.evicted_per_s).sum(),
        evicted_by_others: max_f(&|r| r.evicted_by_others),
        refaults_per_s: all.iter().map(|r| r.refaults_per_s).sum(),
        stall_p99_ns: all.iter().filter_map(|r| r.stall_p99_ns).max(),
        memory_pressure: max_f(&|r| r.memory_pressure),
        oom_kills: all.iter().map(|r| r.oom_kills).sum(),
        last_kill_ns: all.iter().filter_map(|r| r.last_kill_ns).max(),
        throttled_share: max_f(&|r| r.throttled_share),
        throttled_ms_per_s: all
            .iter()
            .filter_map(|r| r.throttled_ms_per_s)
            .reduce(|a, b| a + b),
        quota_millicores: own
            .iter()
            .find_map(|r| r.quota_millicores)
            .or_else(|| sum_opt(&|r| r.quota_millicores)),
        gone: all.iter().all(|r| r.gone),
    }
}

/// Sorts top-level lines by `sort`, each followed by its children.
fn sort_keeping_children(lines: Vec<Line<'_>>, sort: Column, reverse: bool) -> Vec<Line<'_>> {
    // Each top-level line and its children as a range of `lines`: sorting
    // the ranges moves no line until the end.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        match groups.last_mut() {
            Some(group) if line.depth > 0 => group.end = index + 1,
            _ => groups.push(index..index + 1),
        }
    }
    groups.sort_by(|a, b| {
        let (a, b) = (&lines[a.start], &lines[b.start]);
        let order = if sort == Column::Name {
            a.label.cmp(&b.label)
        } else {
            sort.key(&b.row)
                .total_cmp(&sort.key(&a.row))
                .then_with(|| a.label.cmp(&b.label))
        };
        if reverse { order.reverse() } else { order }
    });
    let mut slots: Vec<Option<Line<'_>>> = lines.into_iter().map(Some).collect();
    groups
        .into_iter()
        .flatten()
        .filter_map(|index| slots[index].take())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use super::{Column, Grouping, lines};
    use crate::{identity::Identity, model::top::Row};

    pub const POD: &str = "/kubepods/burstable/pod0c8e3a4e-4c55-4b39-9d4b-6b7c3a1e2f10";
    pub const CONTAINER_ID: &str =
        "3f1a2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70";

    /// A pod with one container, a plain cgroup OOM-killed, a throttled one.
    pub fn rows() -> Vec<Row> {
        vec![
            Row {
                path: POD.to_owned(),
                usage_bytes: Some(300 << 20),
                limit_bytes: Some(512 << 20),
                ..Row::default()
            },
            Row {
                path: format!("{POD}/{CONTAINER_ID}"),
                usage_bytes: Some(290 << 20),
                cache_bytes: Some(100 << 20),
                evicted_per_s: 4096.0,
                ..Row::default()
            },
            Row {
                path: "/batch".to_owned(),
                usage_bytes: Some(100 << 20),
                limit_bytes: Some(100 << 20),
                oom_kills: 2,
                last_kill_ns: Some(5_000_000_000),
                ..Row::default()
            },
            Row {
                path: "/spinner".to_owned(),
                usage_bytes: Some(1 << 20),
                throttled_share: Some(0.9),
                throttled_ms_per_s: Some(450.0),
                quota_millicores: Some(200),
                ..Row::default()
            },
        ]
    }

    /// Names as the node's files would give them.
    pub fn identify(path: &str) -> Identity {
        let mut identity = Identity::unnamed(path);
        if path.starts_with(POD) {
            identity.namespace = Some("shop".to_owned());
            identity.pod = Some("web-7d9f".to_owned());
            if path.len() > POD.len() {
                identity.container = Some("nginx".to_owned());
            }
        }
        identity
    }

    fn labels(grouping: Grouping, expanded: &[&str], filter: &str, sort: Column) -> Vec<String> {
        let expanded: BTreeSet<String> = expanded.iter().map(|s| (*s).to_owned()).collect();
        lines(
            &rows(),
            &mut identify,
            grouping,
            &expanded,
            filter,
            sort,
            false,
        )
        .into_iter()
        .map(|l| l.label)
        .collect()
    }

    #[test]
    fn pods_hold_their_containers_and_sort_as_one() {
        assert_eq!(
            labels(Grouping::Workloads, &[], "", Column::Memory),
            ["shop/web-7d9f", "/batch", "/spinner"]
        );
        assert_eq!(
            labels(Grouping::Workloads, &["shop/web-7d9f"], "", Column::Memory),
            ["shop/web-7d9f", "  nginx", "/batch", "/spinner"]
        );
        assert_eq!(
            labels(
                Grouping::Workloads,
                &["shop/web-7d9f"],
                "",
                Column::OomKills
            ),
            ["/batch", "/spinner", "shop/web-7d9f", "  nginx"],
            "a pod's container moves with it; ties by name"
        );
        assert_eq!(
            labels(Grouping::Workloads, &[], "", Column::Throttled)[0],
            "/spinner"
        );
    }

    #[test]
    fn a_pod_line_sums_its_cgroups() {
        let rows = rows();
        let all = lines(
            &rows,
            &mut identify,
            Grouping::Workloads,
            &BTreeSet::new(),
            "",
            Column::Name,
            false,
        );
        let pod = all.iter().find(|l| l.label == "shop/web-7d9f").unwrap();
        assert_eq!(pod.row.usage_bytes, Some(300 << 20), "the pod cgroup's own");
        assert_eq!(pod.row.limit_bytes, Some(512 << 20));
        assert_eq!(
            pod.row.cache_bytes,
            Some(100 << 20),
            "its containers' where the pod's own was not read"
        );
        assert!((pod.row.evicted_per_s - 4096.0).abs() < f64::EPSILON);
        assert!(pod.expandable);
    }

    #[test]
    fn filters_take_names_paths_and_globs() {
        assert_eq!(
            labels(Grouping::Workloads, &[], "shop", Column::Memory),
            ["shop/web-7d9f"]
        );
        assert_eq!(
            labels(Grouping::Workloads, &[], "/b*", Column::Memory),
            ["/batch"]
        );
        assert!(labels(Grouping::Workloads, &[], "nothing", Column::Memory).is_empty());
    }

    #[test]
    fn the_tree_indents_by_path() {
        let tree = labels(Grouping::Tree, &[], "", Column::Memory);
        assert_eq!(tree[0], "batch");
        assert!(tree.contains(&format!("      {CONTAINER_ID}")), "{tree:?}");
    }
}
