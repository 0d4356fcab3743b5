//! A handle on one child process: signal it and reap it without ever touching
//! another child (no `waitpid(-1)`) and without racing a recycled pid.
//!
//! On Linux the handle is a pidfd: it becomes readable when the child exits,
//! signals go through `pidfd_send_signal`, and `waitid(P_PIDFD)` reaps it.
//! Where pidfds do not exist (macOS), or when [`crate::sys::portable`] is on,
//! the handle is the pid itself: the owner polls [`Process::try_reap`] (the
//! reactor does so every few tens of milliseconds and at once when the
//! channel closes), and signals are sent with `kill` under the same lock that
//! reaps, so a pid is never signalled after it was reaped and could be reused.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use parking_lot::Mutex;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// One child process of ours.
#[derive(Debug)]
pub struct Process {
    pid: libc::pid_t,
    /// The pidfd, where there is one.
    fd: Option<OwnedFd>,
    /// Set once reaped: the pid may belong to someone else after that.
    reaped: Mutex<bool>,
}

impl Process {
    /// Takes charge of child `pid` (ours, not yet reaped).
    pub fn open(pid: libc::pid_t) -> io::Result<Process> {
        #[cfg(target_os = "linux")]
        let fd = if crate::sys::portable() {
            None
        } else {
            Some(pidfd_open(pid)?)
        };
        #[cfg(not(target_os = "linux"))]
        let fd = None;
        Ok(Process {
            pid,
            fd,
            reaped: Mutex::new(false),
        })
    }

    /// The process id.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// An fd that becomes readable when the process exits, if there is one.
    /// Without it the owner must call [`Process::try_reap`] from time to time.
    pub fn exit_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Sends `sig`. After the process was reaped this fails with `ESRCH`.
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        let reaped = self.reaped.lock();
        if *reaped {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            return pidfd_send_signal(fd.as_raw_fd(), sig);
        }
        // SAFETY: kill takes two integers. The pid is our unreaped child (a
        // zombie at worst), so it cannot have been given to another process.
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reaps the process if it has exited. `Ok(None)` while it still runs; an
    /// error when it was reaped already (by us or by someone else).
    pub fn try_reap(&self) -> io::Result<Option<ExitStatus>> {
        let mut reaped = self.reaped.lock();
        if *reaped {
            return Err(io::Error::from_raw_os_error(libc::ECHILD));
        }
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            let r = pidfd_try_reap(fd);
            if !matches!(r, Ok(None)) {
                *reaped = true;
            }
            return r;
        }
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable int; WNOHANG never blocks and
        // the pid names exactly one child of ours.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r == 0 {
            return Ok(None);
        }
        *reaped = true;
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else {
            ExitStatus::Signal(libc::WTERMSIG(status))
        }))
    }
}

/// `pidfd_open(2)`: a close-on-exec fd that becomes readable when `pid` exits.
#[cfg(target_os = "linux")]
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: the syscall takes two integers; pidfds are always close-on-exec.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `pidfd_send_signal(2)`: signals exactly the process behind `pidfd`.
#[cfg(target_os = "linux")]
fn pidfd_send_signal(pidfd: RawFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: null siginfo is allowed; flags must be 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps the process behind `pidfd` if it has exited (`waitid(P_PIDFD)`).
#[cfg(target_os = "linux")]
fn pidfd_try_reap(pidfd: &OwnedFd) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain old data; zeroed means "no child" (si_pid == 0).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid and writable; P_PIDFD (3) takes the fd as id.
    let r = unsafe {
        libc::waitid(
            3, /* P_PIDFD */
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful waitid the pid/status union members are initialised.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(if info.si_code == libc::CLD_EXITED {
        ExitStatus::Code(status)
    } else {
        ExitStatus::Signal(status)
    }))
}
