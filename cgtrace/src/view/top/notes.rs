//! What cgtrace says on stderr while the screen is up: written to the
//! terminal it would tear the screen, so stderr goes to a pipe for that
//! time, each line shows in the status bar, and all of them are written
//! to the real stderr once the screen is gone.

use std::{
    io::{BufRead as _, BufReader},
    os::fd::{AsFd as _, OwnedFd},
    sync::{Mutex, OnceLock},
};

/// The real stderr while the pipe stands in for it (the panic hook puts
/// it back too, so the panic's message is seen).
static REAL_STDERR: OnceLock<Mutex<Option<OwnedFd>>> = OnceLock::new();

/// Lines written to stderr since [`capture`], as they come.
pub type Notes = tokio::sync::mpsc::UnboundedReceiver<String>;

/// Points stderr at a pipe; its lines come out of the returned channel.
pub fn capture() -> std::io::Result<Notes> {
    let (reader, writer) = rustix::pipe::pipe()?;
    let saved = rustix::io::dup(std::io::stderr().as_fd())?;
    rustix::stdio::dup2_stderr(&writer)?;
    drop(writer);
    *REAL_STDERR
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(saved);
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(std::fs::File::from(reader))
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    Ok(receiver)
}

/// Gives stderr back (idempotent; safe from a panic hook).
pub fn release() {
    let Some(lock) = REAL_STDERR.get() else {
        return;
    };
    let mut real = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(fd) = real.take() {
        let _ = rustix::stdio::dup2_stderr(&fd);
    }
}
