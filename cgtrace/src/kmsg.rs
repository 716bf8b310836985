//! OOM kills from the kernel log (`/dev/kmsg`).
//!
//! The kernel reports every kill with a "Killed process" line, preceded
//! (unless ratelimited) by a header: the allocating task, the memcg's usage
//! and limit, and since 4.19 one `oom-kill:constraint=...` summary line that
//! names the constraining memcg. The parser turns a stream of records into
//! [`OomKill`] events; it is used for the kills before cgtrace started, and
//! to confirm what the probe derived. Formats handled: 4.x (`Task in ...
//! killed as a result of limit of ...`), 5.x and 6.x.

use std::{
    fs::File,
    io::{self, Read as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use crate::event::{
    Constraint, ConstraintFoundBy, LimitKind, OomKill, OomMemcg, OomSource, Task, VictimMemory,
};

pub const DEV_KMSG: &str = "/dev/kmsg";

/// One kernel log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    /// Microseconds since boot on the kernel's log clock.
    pub timestamp_us: u64,
    pub message: String,
}

/// Parses one `/dev/kmsg` record: `prio,seq,usec,flags[,...];message`.
/// Continuation lines (` KEY=value`) and malformed text give `None`.
#[must_use]
pub fn parse_record(text: &str) -> Option<Record> {
    let (prefix, message) = text.split_once(';')?;
    let mut fields = prefix.split(',');
    let _priority: u32 = fields.next()?.parse().ok()?;
    let sequence = fields.next()?.parse().ok()?;
    let timestamp_us = fields.next()?.parse().ok()?;
    // One line: the kernel escapes a newline inside a message, so what
    // follows one is the record's dictionary (` KEY=value` lines).
    let message = message.lines().next().unwrap_or_default();
    Some(Record {
        sequence,
        timestamp_us,
        message: crate::text::unescape_kernel(message),
    })
}

/// What the header of the current OOM episode said.
#[derive(Clone, Debug, Default)]
struct Episode {
    trigger_comm: Option<String>,
    trigger_pid: Option<u32>,
    trigger_uid: Option<u32>,
    usage_bytes: Option<u64>,
    limit_bytes: Option<u64>,
    constraint: Option<Constraint>,
    oom_memcg: Option<String>,
    task_memcg: Option<String>,
    summary_pid: Option<u32>,
    group: Option<String>,
    /// Processes reported killed in this episode in the last second, with
    /// when: a group kill reports its first victim twice (once chosen,
    /// once swept with the group). Ratelimited storms have no header to
    /// end an episode, so old entries age out instead.
    killed: Vec<(u32, u64)>,
}

/// A process reported killed twice within this long was killed once.
const SAME_KILL_WINDOW_US: u64 = 1_000_000;

/// Turns kernel log records into OOM kills.
#[derive(Debug, Default)]
pub struct OomLogParser {
    episode: Episode,
}

impl OomLogParser {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one record; returns a kill when the record reports one.
    pub fn feed(&mut self, record: &Record) -> Option<OomKill> {
        let message = record.message.trim_end();
        if let Some(at) = message.find(" invoked oom-killer:") {
            self.episode = Episode {
                trigger_comm: Some(message[..at].to_owned()),
                ..Episode::default()
            };
        } else if let Some(rest) = message.strip_prefix("CPU: ") {
            // 6.x: "CPU: 1 UID: 0 PID: 6132 Comm: ..."; 5.x: "CPU: 4 PID: 63635 Comm: ..."
            if self.episode.trigger_comm.is_some() && self.episode.trigger_pid.is_none() {
                self.episode.trigger_pid = word_after(rest, "PID: ").and_then(|w| w.parse().ok());
                self.episode.trigger_uid = word_after(rest, "UID: ").and_then(|w| w.parse().ok());
            }
        } else if let Some(rest) = message.strip_prefix("memory: usage ") {
            let (usage, limit) = usage_and_limit(rest);
            self.episode.usage_bytes = usage;
            self.episode.limit_bytes = limit;
        } else if let Some(rest) = message.strip_prefix("oom-kill:") {
            self.summary(rest);
        } else if let Some(rest) = message.strip_prefix("Task in ") {
            // 4.x: "Task in /a killed as a result of limit of /b"
            if let Some((task, limit)) = rest.split_once(" killed as a result of limit of ") {
                self.episode.task_memcg = Some(task.to_owned());
                self.episode.oom_memcg = Some(limit.to_owned());
                self.episode.constraint = Some(Constraint::Memcg);
            }
        } else if let Some(rest) = message.strip_prefix("Tasks in ") {
            if let Some(group) =
                rest.strip_suffix(" are going to be killed due to memory.oom.group set")
            {
                self.episode.group = Some(group.to_owned());
            }
        } else if let Some(at) = message.find("Killed process ") {
            return self.kill(
                record,
                &message[..at],
                &message[at + "Killed process ".len()..],
            );
        }
        None
    }

    /// `constraint=CONSTRAINT_MEMCG,nodemask=...,oom_memcg=/a,task_memcg=/a/b,task=x,pid=1,uid=0`
    ///
    /// Cgroup and process names may hold commas and `key=` text of their
    /// own, so the line is not split at every comma: the fields after the
    /// names come from the right, and the two cgroup paths are the split
    /// where the task's cgroup is the limit's or below it, as it always is
    /// in a cgroup OOM. A name cannot move the kill to another cgroup.
    fn summary(&mut self, text: &str) {
        let constraint = text
            .strip_prefix("constraint=")
            .map(|rest| rest.split(',').next().unwrap_or_default());
        if let Some(constraint) = constraint {
            self.episode.constraint = Some(match constraint {
                "CONSTRAINT_MEMCG" => Constraint::Memcg,
                "CONSTRAINT_NONE" => Constraint::Global,
                "CONSTRAINT_CPUSET" => Constraint::Cpuset,
                "CONSTRAINT_MEMORY_POLICY" => Constraint::Mempolicy,
                _ => Constraint::Unknown,
            });
        }
        let Some((rest, _uid)) = text.rsplit_once(",uid=") else {
            return;
        };
        let Some((rest, pid)) = rest.rsplit_once(",pid=") else {
            return;
        };
        self.episode.summary_pid = pid.parse().ok();
        let Some((names, _comm)) = rest.rsplit_once(",task=") else {
            return;
        };
        if let Some((oom, task)) = memcg_pair(names) {
            self.episode.oom_memcg = Some(oom.to_owned());
            self.episode.task_memcg = Some(task.to_owned());
        } else if let Some(task) = global_task_memcg(names) {
            self.episode.task_memcg = Some(task.to_owned());
        }
    }

    /// `prefix`: "Memory cgroup out of memory: " or "Out of memory: " (or
    /// empty on 4.x); `rest`: "PID (comm) total-vm:...".
    fn kill(&mut self, record: &Record, prefix: &str, rest: &str) -> Option<OomKill> {
        let (pid, rest) = rest.split_once(" (")?;
        let pid: u32 = pid.trim().parse().ok()?;
        let now_us = record.timestamp_us;
        let killed = &mut self.episode.killed;
        killed.retain(|&(_, at_us)| now_us.saturating_sub(at_us) < SAME_KILL_WINDOW_US);
        if killed.iter().any(|&(killed_pid, _)| killed_pid == pid) {
            return None;
        }
        killed.push((pid, now_us));
        let (comm, fields) = rest
            .rsplit_once(") ")
            .unwrap_or((rest.trim_end_matches(')'), ""));
        let kb = |key: &str| -> Option<u64> {
            word_after(fields, key)
                .and_then(|w| {
                    w.trim_end_matches(',')
                        .trim_end_matches("kB")
                        .parse::<u64>()
                        .ok()
                })
                // A figure too large for bytes is not a figure the kernel wrote.
                .and_then(|kb| kb.checked_mul(1024))
        };
        let episode = &self.episode;
        let in_group = episode.group.is_some() && episode.summary_pid != Some(pid);
        let constraint = episode.constraint.or_else(|| {
            prefix
                .starts_with("Memory cgroup out of memory")
                .then_some(Constraint::Memcg)
        });
        let oom_memcg = (constraint == Some(Constraint::Memcg)).then(|| OomMemcg {
            path: episode.oom_memcg.clone(),
            id: None,
            limit_bytes: episode.limit_bytes,
            usage_bytes: episode.usage_bytes,
            limit_kind: LimitKind::Memory,
            values_from: "kernel_log",
            cgroup_ref: None,
        });
        let victim_cgroup = if episode.summary_pid == Some(pid) || episode.summary_pid.is_none() {
            episode.task_memcg.clone()
        } else {
            episode.group.clone()
        };
        let trigger = episode.trigger_comm.as_ref().map(|comm| Task {
            pid: episode.trigger_pid.unwrap_or(0),
            tid: None,
            comm: comm.clone(),
            uid: episode.trigger_uid,
            cgroup: None,
            cgroup_ref: None,
        });
        Some(OomKill {
            monotonic_ns: record.timestamp_us.saturating_mul(1000),
            source: OomSource::KernelLog,
            victim: Task {
                pid,
                tid: None,
                comm: comm.to_owned(),
                uid: word_after(fields, "UID:").and_then(|w| w.parse().ok()),
                cgroup: victim_cgroup,
                cgroup_ref: None,
            },
            trigger,
            constraint: constraint.unwrap_or(Constraint::Unknown),
            constraint_found_by: if constraint.is_some() {
                ConstraintFoundBy::KernelLog
            } else {
                ConstraintFoundBy::Unknown
            },
            oom_memcg,
            memory: VictimMemory {
                total_vm_bytes: kb("total-vm:"),
                anon_rss_bytes: kb("anon-rss:"),
                file_rss_bytes: kb("file-rss:"),
                shmem_rss_bytes: kb("shmem-rss:"),
                pgtables_bytes: kb("pgtables:"),
            },
            oom_score_adj: word_after(fields, "oom_score_adj:").and_then(|w| w.parse().ok()),
            group_kill: Some(in_group || episode.group.is_some()),
            victim_memcg_oom_kills: None,
            counted_as_kill: Some(true),
            incomplete: false,
        })
    }
}

/// The whitespace-delimited word after `key` (`"PID: 12 Comm"` → `12`).
fn word_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    text[at..].split_whitespace().next()
}

/// "102400kB, limit 102400kB, failcnt 53" → bytes.
fn usage_and_limit(text: &str) -> (Option<u64>, Option<u64>) {
    let kb = |s: &str| {
        s.trim()
            .trim_end_matches(',')
            .strip_suffix("kB")?
            .parse::<u64>()
            .ok()
    };
    let usage = text
        .split(',')
        .next()
        .and_then(kb)
        .and_then(|v| v.checked_mul(1024));
    let limit = word_after(text, "limit ")
        .and_then(kb)
        .and_then(|v| v.checked_mul(1024));
    (usage, limit)
}

/// Reads every record currently in the kernel log buffer, non-blocking, and
/// returns the OOM kills among them. Each open of `/dev/kmsg` starts at the
/// oldest record still in the buffer.
pub fn kills_since_boot() -> io::Result<Vec<OomKill>> {
    let mut reader = KmsgReader::open(Path::new(DEV_KMSG))?;
    let mut parser = OomLogParser::new();
    let mut kills = Vec::new();
    while let Some(record) = reader.next_record()? {
        if let Some(kill) = parser.feed(&record) {
            kills.push(kill);
        }
    }
    Ok(kills)
}

/// A non-blocking reader of `/dev/kmsg`, one record per `read(2)`.
pub struct KmsgReader {
    file: File,
    buffer: Vec<u8>,
    /// Records overwritten before they were read (`EPIPE`).
    pub lost: u64,
}

impl KmsgReader {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        Ok(Self {
            file,
            // The kernel's maximum record size (CONSOLE_EXT_LOG_MAX) is 8 KiB.
            buffer: vec![0; 8192],
            lost: 0,
        })
    }

    /// The next record, or `None` when none is ready.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            match self.file.read(&mut self.buffer) {
                Ok(0) => return Ok(None),
                Ok(len) => {
                    let text = String::from_utf8_lossy(&self.buffer[..len]);
                    if let Some(record) = parse_record(&text) {
                        return Ok(Some(record));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                // EPIPE: the ring overwrote records we had not read yet; the
                // next read continues from the oldest one left.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => self.lost += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl std::os::fd::AsFd for KmsgReader {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `…,oom_memcg=A,task_memcg=B`: the first split where B is A or below it.
fn memcg_pair(names: &str) -> Option<(&str, &str)> {
    const OOM: &str = ",oom_memcg=";
    const TASK: &str = ",task_memcg=";
    for (at_oom, _) in names.match_indices(OOM) {
        let after_oom = &names[at_oom + OOM.len()..];
        for (at_task, _) in after_oom.match_indices(TASK) {
            let (oom, task) = (&after_oom[..at_task], &after_oom[at_task + TASK.len()..]);
            let below = task == oom
                || oom == "/"
                || task.strip_prefix(oom).is_some_and(|r| r.starts_with('/'));
            if below {
                return Some((oom, task));
            }
        }
    }
    None
}

/// `…,mems_allowed=N,task_memcg=B` without a limit's cgroup (a global or
/// cpuset OOM): the path after the node list.
fn global_task_memcg(names: &str) -> Option<&str> {
    const TASK: &str = ",task_memcg=";
    let after = names
        .find(",mems_allowed=")
        .map_or(names, |at| &names[at..]);
    after.find(TASK).map(|at| &after[at + TASK.len()..])
}

#[cfg(test)]
mod tests {
    use super::{OomLogParser, parse_record};
    use crate::event::{Constraint, ConstraintFoundBy, OomKill, OomSource};

    fn parse_fixture(name: &str) -> Vec<OomKill> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut parser = OomLogParser::new();
        text.lines()
            .filter_map(parse_record)
            .filter_map(|record| parser.feed(&record))
            .collect()
    }

    /// A cgroup named with a terminal escape, a tab, quotes and bytes that
    /// are not UTF-8: the kernel writes them as `\xNN`, and the parser
    /// gives back the name as a directory walk reads it.
    #[test]
    fn a_hostile_cgroup_name_is_read_as_the_kernel_meant_it() {
        let kills = parse_fixture("kmsg-6.18-hostile-name.txt");
        assert_eq!(kills.len(), 1);
        let name = crate::text::from_bytes(
            b"/cgtrace-test-hostile-\x1b[2J\x1b]0;pwned\x07<b>x</b>\t\"q'nl\xff\xfe*?[..]",
        );
        assert_eq!(kills[0].victim.cgroup.as_deref(), Some(name.as_str()));
        let memcg = kills[0].oom_memcg.as_ref().unwrap();
        assert_eq!(memcg.path.as_deref(), Some(name.as_str()));
        assert_eq!(kills[0].victim.pid, 14508);
    }

    /// Names with commas and `key=` text of their own cannot move a kill
    /// to another cgroup, nor change its pid.
    #[test]
    fn names_that_look_like_fields_do_not_move_the_kill() {
        let lines = [
            "4,1,100,-;x,pid=9,uid=0 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
            "6,2,101,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=a\\x2ctask_memcg=/root,mems_allowed=0,oom_memcg=/p,task_memcg=/victim,task_memcg=/p,task_memcg=/victim/c,task=x,pid=9,uid=0,pid=42,uid=0",
            "3,3,102,-;Memory cgroup out of memory: Killed process 42 (x,pid=9,uid=0) total-vm:1000kB, anon-rss:900kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0",
        ];
        let mut parser = OomLogParser::new();
        let kills: Vec<OomKill> = lines
            .iter()
            .filter_map(|l| parse_record(l))
            .filter_map(|r| parser.feed(&r))
            .collect();
        assert_eq!(kills.len(), 1);
        assert_eq!(kills[0].victim.pid, 42);
        assert_eq!(kills[0].victim.comm, "x,pid=9,uid=0");
        assert_eq!(
            kills[0].oom_memcg.as_ref().and_then(|m| m.path.as_deref()),
            Some("/p,task_memcg=/victim"),
            "the limit's cgroup, named with a field inside"
        );
        assert_eq!(
            kills[0].victim.cgroup.as_deref(),
            Some("/p,task_memcg=/victim/c"),
            "the victim's cgroup, below the limit's"
        );
    }

    /// Found by the `kmsg_oom` fuzz target: a kB figure whose bytes do not
    /// fit in 64 bits is unknown, not a panic (nor, in a release build, a
    /// figure wrapped around).
    #[test]
    fn a_figure_too_large_for_bytes_is_unknown() {
        let path = format!(
            "{}/tests/fixtures/fuzz/kmsg-overflow.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        // The fuzzer's input, as the target reads it: not all of it UTF-8.
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let mut parser = OomLogParser::new();
        let kills: Vec<OomKill> = text
            .split('\n')
            .filter_map(parse_record)
            .filter_map(|record| parser.feed(&record))
            .collect();
        assert!(kills.iter().all(|k| {
            [k.memory.total_vm_bytes, k.memory.anon_rss_bytes]
                .into_iter()
                .flatten()
                .all(|bytes| bytes % 1024 == 0)
        }));
    }

    #[test]
    fn parses_records_and_skips_continuations() {
        let r = parse_record("6,421,1347044272,-;oom-kill:constraint=X").unwrap();
        assert_eq!(r.sequence, 421);
        assert_eq!(r.timestamp_us, 1_347_044_272);
        assert_eq!(r.message, "oom-kill:constraint=X");
        assert_eq!(parse_record(" SUBSYSTEM=cpu"), None);
        assert_eq!(parse_record("garbage"), None);
        assert_eq!(parse_record("a,b,c;x"), None);
        let r = parse_record("6,1,2,-,caller=T1;two\nlines").unwrap();
        assert_eq!(r.message, "two");
    }

    #[test]
    fn linux_6_18_memcg_v1() {
        let kills = parse_fixture("kmsg-6.18-memcg-v1.txt");
        assert_eq!(kills.len(), 1);
        let k = &kills[0];
        assert_eq!(k.source, OomSource::KernelLog);
        assert_eq!(k.victim.pid, 6132);
        assert_eq!(k.victim.comm, "python3");
        assert_eq!(k.victim.uid, Some(0));
        assert_eq!(k.victim.cgroup.as_deref(), Some("/cgtrace-test-capture"));
        assert_eq!(k.constraint, Constraint::Memcg);
        assert_eq!(k.constraint_found_by, ConstraintFoundBy::KernelLog);
        let memcg = k.oom_memcg.as_ref().unwrap();
        assert_eq!(memcg.path.as_deref(), Some("/cgtrace-test-capture"));
        assert_eq!(memcg.limit_bytes, Some(100 << 20));
        assert_eq!(memcg.usage_bytes, Some(100 << 20));
        assert_eq!(k.memory.total_vm_bytes, Some(221_368 * 1024));
        assert_eq!(k.memory.anon_rss_bytes, Some(102_016 * 1024));
        assert_eq!(k.memory.file_rss_bytes, Some(6540 * 1024));
        assert_eq!(k.memory.shmem_rss_bytes, Some(0));
        assert_eq!(k.memory.pgtables_bytes, Some(256 * 1024));
        assert_eq!(k.oom_score_adj, Some(0));
        let trigger = k.trigger.as_ref().unwrap();
        assert_eq!(
            (trigger.pid, trigger.comm.as_str(), trigger.uid),
            (6132, "python3", Some(0))
        );
        assert_eq!(k.monotonic_ns, 1_347_044_295_000);
        assert_eq!(k.group_kill, Some(false));
    }

    #[test]
    fn linux_5_4_kubepods_with_systemd_driver() {
        let kills = parse_fixture("kmsg-5.4-kubepods-systemd.txt");
        assert_eq!(kills.len(), 1);
        let k = &kills[0];
        assert_eq!(k.victim.pid, 63214);
        assert_eq!(k.oom_score_adj, Some(986));
        assert!(k.victim.cgroup.as_deref().unwrap().ends_with(
            "cri-containerd-ec9ee26695deb4cc72bc665efff1cf3a03fdfb12f1303e02fe9252985e084a95.scope"
        ));
        let memcg = k.oom_memcg.as_ref().unwrap();
        assert!(
            memcg
                .path
                .as_deref()
                .unwrap()
                .ends_with("kubepods-burstable-podeded8c65_6e8e_4c6e_a889_3e427565c740.slice")
        );
        assert_eq!(memcg.limit_bytes, Some(1 << 30));
        assert_eq!(k.trigger.as_ref().unwrap().pid, 63635);
        assert_eq!(
            k.trigger.as_ref().unwrap().uid,
            None,
            "5.x has no UID on the CPU line"
        );
    }

    #[test]
    fn linux_5_3_ratelimited_storm_without_headers() {
        let kills = parse_fixture("kmsg-5.3-docker-storm.txt");
        let pids: Vec<u32> = kills.iter().map(|k| k.victim.pid).collect();
        assert_eq!(pids, [15617, 15674, 15623]);
        for k in &kills {
            assert_eq!(k.constraint, Constraint::Memcg, "from the line's prefix");
            assert_eq!(k.victim.uid, None);
            assert_eq!(k.memory.pgtables_bytes, None);
            assert_eq!(k.memory.anon_rss_bytes, Some(4292 * 1024));
            let memcg = k.oom_memcg.as_ref().unwrap();
            assert_eq!(memcg.path, None, "the header was ratelimited away");
        }
    }

    #[test]
    fn linux_4_x_legacy_lines() {
        let kills = parse_fixture("kmsg-4.x-v1-legacy.txt");
        assert_eq!(kills.len(), 1);
        let k = &kills[0];
        assert_eq!(k.victim.pid, 28438);
        assert_eq!(k.victim.comm, "java");
        assert_eq!(k.constraint, Constraint::Memcg);
        assert_eq!(
            k.oom_memcg.as_ref().unwrap().path.as_deref(),
            Some("/kubepods/burstable/pod0330b2c1-a15b-4cdd-b5e5-72d4a90bee82")
        );
        assert_eq!(
            k.victim.cgroup.as_deref(),
            Some("/kubepods/burstable/pod0330b2c1-a15b-4cdd-b5e5-72d4a90bee82/b27201334a41")
        );
        assert_eq!(k.memory.file_rss_bytes, Some(13_684 * 1024));
        assert_eq!(k.memory.shmem_rss_bytes, None);
    }

    #[test]
    fn global_oom_and_group_kill() {
        let kills = parse_fixture("kmsg-6.x-constructed-global-and-group.txt");
        assert_eq!(
            kills.len(),
            3,
            "the group sweep's second line for the first victim is the same kill"
        );
        let global = &kills[0];
        assert_eq!(global.constraint, Constraint::Global);
        assert!(global.oom_memcg.is_none());
        assert_eq!(
            global.victim.cgroup.as_deref(),
            Some("/system.slice/stress.service")
        );
        assert_eq!(global.group_kill, Some(false));

        let (first, second) = (&kills[1], &kills[2]);
        assert_eq!(first.victim.pid, 901);
        assert_eq!(first.victim.cgroup.as_deref(), Some("/app/worker"));
        assert_eq!(first.trigger.as_ref().unwrap().uid, Some(1000));
        assert_eq!(second.victim.pid, 902);
        assert_eq!(
            second.victim.cgroup.as_deref(),
            Some("/app"),
            "group members: the group's path"
        );
        assert_eq!(second.group_kill, Some(true));
        assert_eq!(
            second.oom_memcg.as_ref().unwrap().path.as_deref(),
            Some("/app")
        );
    }

    #[test]
    fn never_panics_on_mangled_lines() {
        let mut parser = OomLogParser::new();
        for message in [
            "Killed process",
            "Killed process (",
            "Killed process 12 (",
            "Killed process x (y) total-vm:kB",
            "Killed process 12 (a) b) total-vm:1kB",
            "memory: usage ",
            "memory: usage kB, limit",
            "oom-kill:",
            "oom-kill:constraint",
            "Task in ",
            "CPU: ",
            " invoked oom-killer:",
        ] {
            let record = super::Record {
                sequence: 0,
                timestamp_us: 0,
                message: message.into(),
            };
            let _ = parser.feed(&record);
        }
        let record = super::Record {
            sequence: 0,
            timestamp_us: u64::MAX,
            message: "Killed process 12 (a) b) total-vm:1kB".into(),
        };
        let kill = parser.feed(&record).unwrap();
        assert_eq!(kill.victim.comm, "a) b", "comm may contain ') '");
    }
}
