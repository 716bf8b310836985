//! `cgtrace top` in a real terminal: a tmux pane (a server of the test's
//! own) beside real workloads. An OOM kill and a throttled group show in
//! their rows with the kernel's counts; the sort key reorders the rows, the
//! filter narrows them, the detail pane names the limit hit; `q` gives the
//! terminal back. A recording steps interval by interval. Without a
//! terminal it says what to use instead.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cgtrace_tests::{ChildGuard, cgtrace_bin, memhog, require_root, scratch, trace_path};

const MIB: u64 = 1 << 20;

/// A tmux server and its one pane, killed on drop.
struct Pane {
    socket: String,
}

impl Pane {
    /// `cgtrace top ARGS` run from a shell in a `width`×`height` pane;
    /// `None` (having said why) where tmux is not installed.
    fn start(test: &str, args: &[&str], width: u16, height: u16) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped {test}: tmux is not installed (`cargo xtask test` installs it)");
            return None;
        }
        let pane = Self {
            socket: format!("cgtrace-test-{}-{test}", std::process::id()),
        };
        pane.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env PS1='$ ' sh",
        ]);
        let command = std::iter::once(cgtrace_bin().display().to_string())
            .chain(std::iter::once("top".to_owned()))
            .chain(args.iter().map(|a| format!("'{a}'")))
            .collect::<Vec<_>>()
            .join(" ");
        pane.tmux(&[
            "send-keys",
            &format!("clear; {command}; echo cgtrace-exit=$?"),
            "Enter",
        ]);
        Some(pane)
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.tmux(&["send-keys", key]);
        }
    }

    /// Waits until the screen satisfies `wanted`; the screen then.
    fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let screen = self.screen();
            if wanted(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "no {what} on:\n{screen}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Quits with `q` and checks the terminal was given back.
    fn quit(&self) {
        self.keys(&["q"]);
        self.given_back();
    }

    /// Checks the shell got its terminal back as it was: off the
    /// alternate screen, the cursor shown, line editing and echo on
    /// (`stty`), and cgtrace's exit status 0.
    fn given_back(&self) {
        self.wait_for("the shell again", |s| s.contains("cgtrace-exit=0"));
        let state = self.tmux(&["display-message", "-p", "#{alternate_on} #{cursor_flag}"]);
        assert_eq!(
            state.trim(),
            "0 1",
            "alternate screen, cursor:\n{}",
            self.screen()
        );
        self.keys(&[
            "stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; echo",
            "Enter",
        ]);
        // Raw mode left on would print "-icanon -echo" instead.
        self.wait_for("line editing and echo on", |s| {
            s.lines().any(|l| l.trim() == "icanon echo")
        });
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let socket = Command::new("tmux")
            .args([
                "-L",
                &self.socket,
                "display-message",
                "-p",
                "#{socket_path}",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
        // tmux leaves the socket file behind.
        if !socket.is_empty() {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// The cell under `column`'s heading on the screen line naming `path`.
fn cell(screen: &str, path: &str, column: &str) -> Option<String> {
    let lines: Vec<&str> = screen.lines().collect();
    let header = lines.iter().find(|l| l.starts_with("WORKLOAD"))?;
    let at = header.find(column)?;
    let line = lines.iter().find(|l| l.contains(path))?;
    let chars: Vec<char> = line.chars().collect();
    let header_chars = header[..at].chars().count();
    let rest: String = chars.get(header_chars..)?.iter().collect();
    rest.split_whitespace().next().map(str::to_owned)
}

/// The workload column's entries, top to bottom.
fn order(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| !l.starts_with("WORKLOAD"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .take_while(|w| w.starts_with('/'))
        .collect()
}

#[test]
fn a_kill_and_a_throttled_group_show_sort_filter_and_detail_and_q_restores() {
    let test = "top-live";
    if !require_root(test) {
        return;
    }
    let killed = scratch("top-oom", Some(100 * MIB));
    let hierarchies = cgtrace_tests::Hierarchies::discover().unwrap();
    let throttled = cgtrace_tests::ScratchCgroup::create_for(
        &hierarchies,
        "cpu",
        &format!("cgtrace-test-top-spin-{}", std::process::id()),
    )
    .unwrap();
    throttled.set_cpu_quota(20_000, 100_000).unwrap();
    let glob = format!("/cgtrace-test-top-*-{}", std::process::id());
    let Some(pane) = Pane::start(test, &["--cgroup", &glob], 200, 40) else {
        return;
    };
    pane.wait_for("the screen", |s| {
        s.contains("cgtrace top") && s.contains("live")
    });
    let _spin = ChildGuard(
        throttled
            .spawn_into(
                Command::new(cgtrace_bin())
                    .args(["__spin", "60", "2"])
                    .stdout(Stdio::null()),
            )
            .unwrap(),
    );
    memhog(&killed, 200).wait();
    assert_eq!(killed.oom_kill_count().unwrap(), 1);
    let screen = pane.wait_for("the kill and the throttling", |s| {
        cell(s, killed.path(), "OOM").as_deref() == Some("1")
            && cell(s, throttled.path(), "THR%").is_some_and(|t| t != "-" && t != "0%")
    });
    assert_eq!(
        cell(&screen, throttled.path(), "QUOTA").as_deref(),
        Some("200m")
    );
    assert!(
        cell(&screen, killed.path(), "MEMORY/LIMIT").is_some(),
        "{screen}"
    );

    // Sort by OOM kills (from MEMORY, seven columns right), then by THR%.
    pane.keys(&[">"; 7]);
    let screen = pane.wait_for("sorted by OOM", |s| s.contains("sort OOM"));
    assert_eq!(
        order(&screen).first().map(String::as_str),
        Some(killed.path()),
        "{screen}"
    );
    pane.keys(&[">"]);
    let screen = pane.wait_for("sorted by THR%", |s| s.contains("sort THR%"));
    assert_eq!(
        order(&screen).first().map(String::as_str),
        Some(throttled.path()),
        "{screen}"
    );

    // The filter narrows to one.
    pane.keys(&["/", "top-oom", "Enter"]);
    let screen = pane.wait_for("the filter", |s| s.contains("filter top-oom"));
    assert_eq!(order(&screen), [killed.path()], "{screen}");
    // Its detail: the kill, at the limit it hit.
    pane.keys(&["Enter"]);
    let screen = pane.wait_for("the detail pane", |s| s.contains("OOM kills"));
    assert!(
        screen.contains(&format!("limit of {} hit at", killed.path())),
        "{screen}"
    );
    pane.keys(&["Escape", "Escape"]);
    pane.wait_for("no filter", |s| !s.contains("filter top-oom"));
    pane.quit();
}

#[test]
fn a_recording_steps_interval_by_interval() {
    let test = "top-replay";
    if !require_root(test) {
        return;
    }
    let path = trace_path("top-replay");
    let bin = cgtrace_bin();
    let script = format!("{0} __spin 2 1; exec {0} __memhog 200", bin.display());
    let status = Command::new(&bin)
        .args(["record", "--interval", "500ms", "-o"])
        .arg(&path)
        .args([
            "--memory-limit",
            "100M",
            "--cpu-limit",
            "0.2",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(137));
    let input = path.display().to_string();
    let Some(pane) = Pane::start(test, &["--input", &input], 200, 40) else {
        return;
    };
    // Read as the screen moves: the count is known once read to the end.
    let first = pane.wait_for("the first interval", |s| s.contains("replay 1/"));
    assert!(first.contains("replay 1/…"), "{first}");
    pane.keys(&["]"]);
    let end = pane.wait_for("the last interval", |s| {
        s.split("replay ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|shown| shown.split_once('/'))
            .is_some_and(|(at, count)| at == count)
    });
    let total: usize = end
        .split("replay ")
        .nth(1)
        .and_then(|rest| rest.split(['/', ',']).nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(total >= 4, "2 s of spinning in 500 ms intervals: {end}");
    pane.keys(&["["]);
    pane.wait_for("back to the first", |s| {
        s.contains(&format!("replay 1/{total}"))
    });
    pane.keys(&["Right"]);
    pane.wait_for("the second interval", |s| {
        s.contains(&format!("replay 2/{total}"))
    });
    pane.keys(&["Left", "Left"]);
    pane.wait_for("no step before the first", |s| {
        s.contains(&format!("replay 1/{total}"))
    });
    // Play to the end: the kill is in the last interval's rows.
    pane.keys(&["Space"]);
    let last = pane.wait_for("the last interval", |s| {
        s.contains(&format!("replay {total}/{total}"))
    });
    let group = last
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("/cgtrace-record-"))
        })
        .unwrap_or_else(|| panic!("no recorded group on:\n{last}"));
    assert_eq!(cell(&last, group, "OOM").as_deref(), Some("1"), "{last}");
    assert!(last.contains("paused"), "playing stops at the end: {last}");
    pane.quit();
}

#[test]
fn without_a_terminal_it_says_what_to_use() {
    let output = Command::new(cgtrace_bin())
        .args(["top", "--input", "/nonexistent.cgt"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs a terminal"), "{stderr}");
    assert!(stderr.contains("cgtrace cache"), "{stderr}");
    assert!(!Path::new("/nonexistent.cgt").exists());
}

#[test]
fn sigterm_gives_the_terminal_back() {
    let test = "top-sigterm";
    if !require_root(test) {
        return;
    }
    let Some(pane) = Pane::start(test, &["--cgroup", "/cgtrace-test-none"], 80, 24) else {
        return;
    };
    pane.wait_for("the screen", |s| s.contains("live, every 1s"));
    let shell = pane.tmux(&["display-message", "-p", "#{pane_pid}"]);
    let children = Command::new("pgrep")
        .args(["-P", shell.trim()])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("cgtrace under the pane's shell");
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    pane.given_back();
}
