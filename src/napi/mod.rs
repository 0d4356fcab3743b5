//! The napi layer: converts between JavaScript and the core modules, nothing
//! else. Every exported method catches panics (`catch_unwind`) so that no Rust
//! panic crosses into Node; they become JS exceptions.

mod frame_batch;
mod loop_hold;
mod primary;
mod text_sender;
mod uv_channel;
mod worker;

use std::os::fd::{FromRawFd, OwnedFd};

use napi::{Error, Result, Status};

/// Duplicates a JS-owned fd (close-on-exec) so that Rust can own and close
/// its copy while JS keeps the original.
pub(crate) fn dup_js_fd(fd: i32) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an integer; a bad fd is reported as EBADF.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if r < 0 {
        return Err(io_err(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// An I/O error as a JS error whose message carries the errno name.
pub(crate) fn io_err(e: std::io::Error) -> Error {
    let code = match e.raw_os_error() {
        Some(libc::EPIPE) => "EPIPE",
        // A write to a channel whose other end closed with unread frames.
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::ENOTCONN) => "ENOTCONN",
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::EBADF) => "EBADF",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EMSGSIZE) => "EMSGSIZE",
        Some(libc::EAGAIN) => "EAGAIN",
        _ => match e.kind() {
            std::io::ErrorKind::NotConnected => "ERR_IPC_CHANNEL_CLOSED",
            _ => "EIO",
        },
    };
    Error::new(Status::GenericFailure, format!("{code}: {e}"))
}
