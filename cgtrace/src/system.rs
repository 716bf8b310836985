//! Facts about the host: kernel release, privileges, tracefs, clocks.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

/// Capabilities (bit numbers from `linux/capability.h`).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// `uname -r`.
#[must_use]
pub fn kernel_release() -> String {
    read_trimmed("/proc/sys/kernel/osrelease")
}

/// `(major, minor)` of a kernel release (`5.10.0-43-cloud-amd64` →
/// `(5, 10)`); `(0, 0)` where it has no numbers.
#[must_use]
pub fn kernel_version(release: &str) -> (u32, u32) {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

#[must_use]
pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

/// What this process may do with eBPF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    pub cap_bpf: bool,
    pub cap_perfmon: bool,
    pub cap_sys_admin: bool,
}

impl Privileges {
    #[must_use]
    pub fn current() -> Self {
        let euid = rustix::process::geteuid().as_raw();
        let effective = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| parse_cap_eff(&status))
            .unwrap_or(0);
        Self::from_parts(euid, effective)
    }

    #[must_use]
    pub fn from_parts(euid: u32, effective: u64) -> Self {
        let has = |cap: u32| effective & (1 << cap) != 0;
        Self {
            euid,
            cap_bpf: has(CAP_BPF),
            cap_perfmon: has(CAP_PERFMON),
            cap_sys_admin: has(CAP_SYS_ADMIN),
        }
    }

    /// Loading tracing programs needs CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN.
    #[must_use]
    pub fn can_trace(&self) -> bool {
        (self.cap_bpf && self.cap_perfmon) || self.cap_sys_admin
    }

    /// The user-facing explanation when tracing is not possible.
    #[must_use]
    /// The capabilities it lacks to trace.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.cap_bpf {
            missing.push("CAP_BPF");
        }
        if !self.cap_perfmon {
            missing.push("CAP_PERFMON");
        }
        missing
    }
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether tracefs is mounted (classic tracepoints need it; BTF tracepoints do not).
#[must_use]
pub fn tracefs_mounted() -> bool {
    Path::new(TRACEFS).join("events").is_dir()
}

/// Converts `CLOCK_MONOTONIC` nanoseconds (what `bpf_ktime_get_ns` returns)
/// to wall-clock time, using the offset between the two clocks now.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

impl Clock {
    #[must_use]
    pub fn now() -> Self {
        let read = |clock| {
            let ts = rustix::time::clock_gettime(clock);
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        let monotonic = read(rustix::time::ClockId::Monotonic);
        let realtime = read(rustix::time::ClockId::Realtime);
        Self {
            realtime_minus_monotonic_ns: realtime - monotonic,
        }
    }

    /// The clock of a machine that booted at `boot_time_ns` (wall-clock
    /// nanoseconds since the epoch): for traces recorded elsewhere.
    #[must_use]
    pub fn from_boot_time(boot_time_ns: u64) -> Self {
        Self {
            realtime_minus_monotonic_ns: i128::from(boot_time_ns),
        }
    }

    /// Current `CLOCK_MONOTONIC` in nanoseconds.
    #[must_use]
    pub fn monotonic_now_ns() -> u64 {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec).unwrap_or(0)
    }

    #[must_use]
    pub fn wall_time(&self, monotonic_ns: u64) -> SystemTime {
        let ns = i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns;
        let ns = u64::try_from(ns.max(0)).unwrap_or(u64::MAX);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::{Privileges, parse_cap_eff};

    #[test]
    fn reads_capabilities() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x01ff_ffff_ffff));
        let root = Privileges::from_parts(0, 0x01ff_ffff_ffff);
        assert!(root.can_trace());
        let nobody = Privileges::from_parts(65534, 0);
        assert!(!nobody.can_trace());
        let refusal = crate::probe::ProbeError::NotPrivileged {
            missing: nobody.missing(),
        }
        .to_string();
        assert!(refusal.contains("CAP_BPF and CAP_PERFMON"));
        assert!(refusal.contains("sudo"));
        let bpf_only = Privileges::from_parts(1000, 1 << 39);
        assert!(!bpf_only.can_trace());
        assert!(Privileges::from_parts(1000, (1 << 39) | (1 << 38)).can_trace());
    }
}
