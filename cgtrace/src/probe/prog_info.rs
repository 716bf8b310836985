//! `bpf_prog_info` fields aya does not expose: `recursion_misses`, and the
//! run-time statistics the kernel keeps while statistics are enabled
//! (`BpfStatsEnabled`, or the `kernel.bpf_stats_enabled` sysctl).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya_obj::generated::bpf_prog_info;

/// `BPF_OBJ_GET_INFO_BY_FD` from `linux/bpf.h`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// A program's counters from the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Runs the kernel skipped because another BPF program was already
    /// running on the CPU (kernel 5.12+; 0 before).
    pub recursion_misses: u64,
    /// Runs and total run time, counted only while statistics are enabled.
    pub run_count: u64,
    pub run_time_ns: u64,
    /// The program's size after the verifier (which removes dead code) and
    /// its rewrites, in bytes.
    pub xlated_bytes: u32,
}

/// Reads a loaded program's counters.
pub fn counters(fd: BorrowedFd<'_>) -> io::Result<ProgramCounters> {
    // SAFETY: bpf_prog_info is a plain C struct of integers; all-zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: u32::try_from(fd.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        info_len: u32::try_from(size_of::<bpf_prog_info>()).unwrap_or(u32::MAX),
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: attr points at a valid InfoByFd whose `info` points at a
    // writable bpf_prog_info of `info_len` bytes; the kernel writes at most
    // that many.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ProgramCounters {
        recursion_misses: info.recursion_misses,
        run_count: info.run_cnt,
        run_time_ns: info.run_time_ns,
        xlated_bytes: info.xlated_prog_len,
    })
}
