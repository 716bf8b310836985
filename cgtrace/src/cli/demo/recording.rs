//! The demo's recording: `cgtrace record` runs beside the scenarios, so the
//! demo ends with the report of what it just did, and leaves the trace and
//! its HTML report behind to look at.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// How long the recorder may take to load and attach its probes.
const START_TIMEOUT: Duration = Duration::from_mins(1);

/// A `cgtrace record` child process.
pub struct DemoRecording {
    child: Child,
    path: PathBuf,
}

impl DemoRecording {
    /// Starts the recorder and waits until it has attached its probes and
    /// written the trace header.
    pub fn start(path: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the cgtrace binary")?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot replace {}", path.display()));
            }
            _ => {}
        }
        let mut command = Command::new(exe);
        command
            .args(["record", "--interval", "250ms", "-o"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe and allocates nothing.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                // A demo killed outright must not leave the recorder running.
                let _ = rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ));
                Ok(())
            });
        }
        let mut child = command.spawn().context("cannot start cgtrace record")?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                bail!("cgtrace record exited ({status}): {}", stderr.trim());
            }
            if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
                return Ok(Self {
                    child,
                    path: path.to_owned(),
                });
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                bail!("cgtrace record did not start within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the recorder as Ctrl-C would, so it finishes the file.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("pid out of range")?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("cgtrace record failed ({status}): {}", stderr.trim());
        }
        Ok(self.path.clone())
    }
}

impl Drop for DemoRecording {
    fn drop(&mut self) {
        // Ended early (a scenario failed): do not leave the recorder behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
