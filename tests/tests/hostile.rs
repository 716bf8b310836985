//! Names from whoever runs a workload, against the real kernel: a memory
//! cgroup named with terminal escapes, a bidirectional override, markup,
//! quotes, a tab, glob characters and bytes that are not UTF-8 (255 bytes,
//! the most a name may have), a process whose name holds a newline and
//! escapes, and a pod whose namespace, name and container (from a fixture
//! pod-logs tree) hold the same. Both are OOM-killed while `oom --follow`
//! (text and JSON), `serve` and `record` watch; then the recording is
//! reported as text, JSON and HTML and exported.
//!
//! Nothing cgtrace writes for a terminal may hold a control character but
//! its own line ends; JSON stays valid and carries the names; the HTML
//! page escapes the markup; `promtool` accepts the metrics; a `--cgroup`
//! filter with backslash escapes matches the name literally.

use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt as _, fs::symlink, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use cgtrace::{cgroup::Version, text::from_bytes};
use cgtrace_tests::{
    ChildGuard, Follower, View, cgtrace_bin,
    http::{free_port, get, scrape},
    json_lines, promtool_accepts, report_json, require_root, scratch, trace_path, wait_until,
};

const MIB: u64 = 1 << 20;

/// What a hostile cgroup name ends with: ESC [2J clears the screen, ESC ]0;
/// … BEL sets the window title, U+202E reverses what follows.
const HOSTILE_END: &[u8] =
    b"\x1b[2J\x1b]0;pwned\x07<script>alert('x')<\\script>\t\"q\xff\xfe*?[..]\xe2\x80\xaegnp";

/// The process's name (the kernel keeps 15 bytes of the file executed).
const HOSTILE_COMM: &[u8] = b"\x1b[2J\n<b>\x07\"";

const POD_UID: &str = "7e57ab1e-0000-4bad-8a9b-0c1d2e3f4a5b";
const CONTAINER_ID: &str = "badc0ffee0ddf00dbadc0ffee0ddf00dbadc0ffee0ddf00dbadc0ffee0ddf00d";
const NAMESPACE: &[u8] = b"ns\x1b[31m";
const POD: &[u8] = b"web\n<script>\"'";
const CONTAINER: &[u8] = b"app\x07\t";

/// A 255-byte name ending in [`HOSTILE_END`].
fn hostile_name() -> Vec<u8> {
    let mut name = vec![b'x'; 255 - HOSTILE_END.len()];
    name.extend_from_slice(HOSTILE_END);
    name
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Directories made below a scratch cgroup, removed deepest first on drop.
struct Tree {
    made: Vec<PathBuf>,
}

impl Tree {
    /// Makes `dir` a cgroup with the memory controller, limited to `limit`.
    fn cgroup(&mut self, dir: &Path, version: Version, limit: Option<u64>) {
        if version == Version::V2 {
            let parent = dir.parent().expect("a parent");
            std::fs::write(parent.join("cgroup.subtree_control"), "+memory")
                .expect("enable memory below the parent");
        }
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        self.made.push(dir.to_path_buf());
        if let Some(limit) = limit {
            let file = match version {
                Version::V1 => "memory.limit_in_bytes",
                Version::V2 => "memory.max",
            };
            std::fs::write(dir.join(file), limit.to_string()).expect("set the limit");
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The kubelet's log trees for the hostile pod, removed on drop.
struct PodLogs(tempfile::TempDir);

impl PodLogs {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let dir_name = [NAMESPACE, b"_", POD, b"_", POD_UID.as_bytes()].concat();
        let dir = root
            .path()
            .join("pods")
            .join(os(&dir_name))
            .join(os(CONTAINER));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.log"), "").unwrap();
        std::fs::create_dir_all(root.path().join("containers")).unwrap();
        let link = [
            POD,
            b"_",
            NAMESPACE,
            b"_",
            CONTAINER,
            b"-",
            CONTAINER_ID.as_bytes(),
            b".log",
        ]
        .concat();
        symlink(
            dir.join("0.log"),
            root.path().join("containers").join(os(&link)),
        )
        .unwrap();
        Self(root)
    }

    fn args(&self) -> Vec<String> {
        let at = |dir| self.0.path().join(dir).display().to_string();
        vec![
            "--pod-logs".into(),
            at("pods"),
            "--container-logs".into(),
            at("containers"),
        ]
    }
}

/// Runs a 64 MiB hog in `dir` (killed at its limit), as a process named
/// `comm`: the kernel names a process after the file it executes.
fn oom_in(dir: &Path, comm: &[u8], scratch_dir: &Path) {
    let link = scratch_dir.join(os(comm));
    let _ = std::fs::remove_file(&link);
    symlink(cgtrace_bin(), &link).expect("a link named like the process");
    let procs = dir.join("cgroup.procs");
    let mut command = Command::new(&link);
    command.args(["__memhog", "64"]).stdout(Stdio::null());
    // SAFETY: the closure only writes a file and returns its error.
    unsafe {
        command.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let status = command.status().expect("run the hog");
    assert!(!status.success(), "the hog was not killed: {status}");
    let _ = std::fs::remove_file(&link);
}

/// Whether a terminal would act on `c`: a C0 control (but a line end),
/// DEL, a C1 control or a bidirectional override.
fn acts(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn assert_terminal_safe(what: &str, bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    if let Some(line) = text.lines().find(|line| line.chars().any(acts)) {
        panic!("{what} printed a control character raw: {line:?}");
    }
}

fn cgtrace(args: &[&OsStr]) -> Vec<u8> {
    let output = Command::new(cgtrace_bin()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "cgtrace {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
#[expect(clippy::too_many_lines, reason = "one workload, every view of it")]
fn hostile_names_are_shown_escaped_in_every_view() {
    if !require_root("hostile_names_are_shown_escaped_in_every_view") {
        return;
    }
    let parent = scratch("hostile", None);
    let version = parent.version();
    let logs = PodLogs::new();
    let trace = trace_path("hostile");
    let mut views_args = logs.args();
    views_args.extend(["--interval".into(), "200ms".into()]);
    let view_args: Vec<&str> = views_args.iter().map(String::as_str).collect();

    // Watching from before the cgroups exist.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _serve = ChildGuard(
        Command::new(cgtrace_bin())
            .args(["serve", "--listen", &listen])
            .args(&view_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cgtrace serve"),
    );
    wait_until("serve to be ready", || {
        get(port, "/healthz", "").is_some_and(|(status, _)| status == 200)
    });
    let log_args = logs.args();
    let mut text_args = vec!["oom", "--follow"];
    text_args.extend(log_args.iter().map(String::as_str));
    let text_oom = View::start(&text_args, "cgtrace: oom:");
    let mut follower = Follower::start(&log_args.iter().map(String::as_str).collect::<Vec<_>>());
    let trace_arg = trace.display().to_string();
    let mut record_args = vec!["record", "-o", &trace_arg, "--cgroup", parent.path()];
    record_args.extend(&view_args);
    let recorder = View::start(&record_args, "cgtrace: keeping");

    // The hostile cgroup, and a kubepods-shaped pod with a hostile name.
    let mut tree = Tree { made: Vec::new() };
    let hostile_dir = parent.dir().join(os(&hostile_name()));
    tree.cgroup(&hostile_dir, version, Some(16 * MIB));
    let mut container_dir = parent.dir().to_path_buf();
    for part in [
        "kubepods",
        "burstable",
        &format!("pod{POD_UID}"),
        CONTAINER_ID,
    ] {
        container_dir.push(part);
        let limit = (part == CONTAINER_ID).then_some(16 * MIB);
        tree.cgroup(&container_dir, version, limit);
    }
    let links = tempfile::tempdir().expect("a directory for the hog's link");
    oom_in(&hostile_dir, HOSTILE_COMM, links.path());
    oom_in(&container_dir, b"hog", links.path());

    // JSON carries the names as they are (bytes that are not UTF-8 as \xNN).
    let hostile_path = format!("{}/{}", parent.path(), from_bytes(&hostile_name()));
    let container_path = format!(
        "{}/kubepods/burstable/pod{POD_UID}/{CONTAINER_ID}",
        parent.path()
    );
    let kill = follower.wait_for("the hostile cgroup's kill", |v| {
        v["victim"]["cgroup"].as_str() == Some(hostile_path.as_str())
    });
    assert_eq!(kill["victim"]["comm"], from_bytes(HOSTILE_COMM), "{kill}");
    let pod_kill = follower.wait_for("the hostile pod's kill", |v| {
        v["victim"]["cgroup"].as_str() == Some(container_path.as_str())
    });
    let workload = &pod_kill["victim"]["workload"];
    assert_eq!(workload["namespace"], from_bytes(NAMESPACE), "{pod_kill}");
    assert_eq!(workload["pod"], from_bytes(POD), "{pod_kill}");
    assert_eq!(workload["container"], from_bytes(CONTAINER), "{pod_kill}");

    // The metrics: label values escaped as the format wants, promtool content.
    let pod_label = "pod=\"web\\n<script>\\\"'\"";
    wait_until("serve to count both kills", || {
        let text = scrape(port);
        text.contains(pod_label) && text.contains("pwned")
    });
    let metrics = scrape(port);
    promtool_accepts(&metrics);

    // The terminal view: escaped, never raw.
    let (status, text) = text_oom.interrupt_raw();
    assert!(status.success(), "{status}");
    assert_terminal_safe("oom --follow", &text);
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("\\xff\\xfe*?[..]\\u202egnp"), "{text}");
    assert!(text.contains("2J\\x0a<b>\\x07\""), "the comm: {text}");
    assert!(
        text.contains("<script>\"'/app\\x07\\x09"),
        "the pod: {text}"
    );
    let (status, _, _) = follower.interrupt();
    assert!(status.success(), "{status}");
    let (status, _) = recorder.interrupt();
    assert!(status.success(), "{status}");
    drop(tree);

    // The recording, as text, JSON and HTML, and exported.
    let report = cgtrace(&["report".as_ref(), trace.as_ref()]);
    assert_terminal_safe("report", &report);
    let html_path = trace.with_extension("html");
    let _html_gone = RemoveOnDrop(html_path.clone());
    let _ = cgtrace(&[
        "report".as_ref(),
        trace.as_ref(),
        "--html".as_ref(),
        html_path.as_os_str(),
    ]);
    let html = std::fs::read(&html_path).expect("the HTML report");
    assert_terminal_safe("report --html", &html);
    let html = String::from_utf8(html).unwrap();
    assert!(
        !html.contains("<script>alert"),
        "markup from a name got through"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)"),
        "the name, escaped"
    );
    let json = report_json(&trace);
    let cgroups = json["cgroups"].as_array().expect("cgroups");
    assert!(
        cgroups.iter().any(|c| c["cgroup"] == hostile_path.as_str()),
        "{json}"
    );
    let exported = json_lines(&[
        "export".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
        trace.as_ref(),
    ]);
    assert!(
        exported
            .iter()
            .any(|record| record.to_string().contains("pwned")),
        "the hostile cgroup's records"
    );
    let chrome: serde_json::Value = serde_json::from_slice(&cgtrace(&[
        "export".as_ref(),
        "--format".as_ref(),
        "chrome-trace".as_ref(),
        trace.as_ref(),
    ]))
    .expect("the Chrome trace is JSON");
    assert!(chrome.to_string().contains("pwned"), "{chrome}");
    for view in ["oom", "cache", "reclaim", "throttle"] {
        let replayed = cgtrace(&[view.as_ref(), "--input".as_ref(), trace.as_ref()]);
        assert_terminal_safe(&format!("{view} --input"), &replayed);
    }

    // A filter with the name's wildcards escaped keeps it, and only it.
    let literal = format!("{}/*\\*\\?\\[..\\]*", parent.path());
    let kept = json_lines(&[
        "oom".as_ref(),
        "--json".as_ref(),
        "--input".as_ref(),
        trace.as_ref(),
        "--cgroup".as_ref(),
        literal.as_ref(),
    ]);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["victim"]["cgroup"], hostile_path.as_str());
}

/// A file removed on drop.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
