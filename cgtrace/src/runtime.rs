//! The event loop's plumbing: a signal pipe for SIGINT/SIGTERM and poll(2)
//! over the ring buffer, the kernel log and that pipe.

use std::{
    io::{self, Read as _},
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd},
        unix::net::UnixStream,
    },
    time::Duration,
};

/// Turns SIGINT and SIGTERM into a readable descriptor, so the loop wakes
/// up, finishes what it holds and detaches cleanly.
pub struct Shutdown {
    read: UnixStream,
    ids: Vec<signal_hook::SigId>,
}

impl Shutdown {
    pub fn install() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let mut ids = Vec::new();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            ids.push(signal_hook::low_level::pipe::register(
                signal,
                write.try_clone()?,
            )?);
        }
        Ok(Self { read, ids })
    }

    /// Whether a signal arrived (consumes the wake-up bytes).
    pub fn requested(&mut self) -> bool {
        let mut buffer = [0u8; 16];
        matches!(self.read.read(&mut buffer), Ok(n) if n > 0)
    }
}

impl AsFd for Shutdown {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Waits until one of `fds` is readable or `timeout` passes.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<()> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let count = libc::nfds_t::try_from(polls.len()).unwrap_or(0);
    // SAFETY: polls is a valid array of `count` pollfd structs.
    let rc = unsafe { libc::poll(polls.as_mut_ptr(), count, millis) };
    if rc < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}
