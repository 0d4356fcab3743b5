//! Thin, checked wrappers over the system calls rcluster needs.
//!
//! Everything here returns `io::Result` and owns the fds it creates
//! (`OwnedFd`), so an early return never leaks a descriptor. Every fd is
//! created close-on-exec.

use std::io::{self, IoSlice};
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most fds accepted from one packet; anything past this is closed.
pub const RECV_FD_SLOTS: usize = 8;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Creates a connected pair of `AF_UNIX` `SOCK_SEQPACKET` sockets, both
/// close-on-exec. Nothing on the filesystem: no other process can connect.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two ints as socketpair(2) requires.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL takes no pointers; a bad fd is reported as EBADF.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        let new = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if new != flags {
            cvt(libc::fcntl(fd, libc::F_SETFL, new))?;
        }
    }
    Ok(())
}

/// Sets or clears `FD_CLOEXEC`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFD/F_SETFD takes no pointers.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        let new = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        cvt(libc::fcntl(fd, libc::F_SETFD, new))?;
    }
    Ok(())
}

/// Sends one packet made of `iov`, with at most one fd attached. Never blocks
/// and never raises SIGPIPE: a full socket is `WouldBlock`, a gone peer `EPIPE`.
pub fn send_packet(fd: RawFd, iov: &[IoSlice<'_>], pass: Option<RawFd>) -> io::Result<usize> {
    // Control buffer big enough for one SCM_RIGHTS fd, aligned for cmsghdr.
    #[repr(C)]
    union Cmsg {
        _align: libc::cmsghdr,
        buf: [u8; 64],
    }
    let mut cbuf = Cmsg { buf: [0; 64] };
    // SAFETY: msghdr is plain old data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    if let Some(pfd) = pass {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic; the buffer is 64 bytes,
        // more than CMSG_SPACE(4) (24 on 64-bit), and CMSG_FIRSTHDR points into it
        // because msg_control/msg_controllen describe exactly that buffer.
        unsafe {
            let space = libc::CMSG_SPACE(mem::size_of::<RawFd>() as u32) as usize;
            msg.msg_control = cbuf.buf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, pfd);
        }
    }
    // SAFETY: `msg` points at `iov` (IoSlice is ABI-compatible with iovec) and at
    // `cbuf`, both alive for the duration of the call.
    cvt_size(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) })
}

/// One received packet.
#[derive(Debug)]
pub struct Received {
    /// Bytes of payload written into the buffer.
    pub len: usize,
    /// fds that came with it, already owned (closed on drop) and close-on-exec.
    pub fds: Vec<OwnedFd>,
    /// The packet or its control data did not fit: the frame must be refused.
    pub truncated: bool,
}

/// Receives one packet into `buf` with `MSG_CMSG_CLOEXEC`. `Ok(None)` when
/// nothing is waiting. A `len` of 0 with no fds is end of file.
///
/// Every fd the kernel installed is returned as `OwnedFd`, even when the
/// control data was truncated, so nothing that arrived can leak.
pub fn recv_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    #[repr(C)]
    union Cmsg {
        _align: libc::cmsghdr,
        buf: [u8; 128],
    }
    let mut cbuf = Cmsg { buf: [0; 128] };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: taking the address of the union's byte view; the union is alive here.
    msg.msg_control = unsafe { cbuf.buf.as_mut_ptr() } as *mut libc::c_void;
    // SAFETY: pure arithmetic.
    let space =
        unsafe { libc::CMSG_SPACE((RECV_FD_SLOTS * mem::size_of::<RawFd>()) as u32) } as usize;
    debug_assert!(space <= 128);
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes `buf` and `cbuf`, both valid and writable for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(e);
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR
    // walk only within that range, and CMSG_DATA of an SCM_RIGHTS header holds
    // (cmsg_len - CMSG_LEN(0)) / 4 ints, each a new fd installed in our table.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let bytes = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    Ok(Some(Received {
        len: n as usize,
        fds,
        truncated,
    }))
}

/// Whether the peer of the connected socket `fd` has hung up or shut down its
/// writing side (`POLLHUP`/`POLLRDHUP`). Tells a real end of file apart from
/// an empty packet, which `recvmsg` also reports as 0 bytes. A failing poll
/// counts as hung up.
pub fn peer_hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid, writable pollfd; a zero timeout never blocks.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r >= 0 {
            return p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL)
                != 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return true;
        }
    }
}

/// A non-blocking, close-on-exec eventfd used to wake a poll loop.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd (wakes its reader).
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64. EAGAIN (counter full) still wakes the reader.
    unsafe {
        libc::write(fd, &one as *const u64 as *const libc::c_void, 8);
    }
}

/// Resets an eventfd to zero.
pub fn eventfd_drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64.
    unsafe {
        libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8);
    }
}

/// `pidfd_open(2)`: a close-on-exec fd that becomes readable when `pid` exits.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: the syscall takes two integers; pidfds are always close-on-exec.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `pidfd_send_signal(2)`: signals exactly the process behind `pidfd`, never a
/// recycled pid.
pub fn pidfd_send_signal(pidfd: RawFd, sig: libc::c_int) -> io::Result<()> {
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

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// Reaps the process behind `pidfd` if it has exited (`waitid(P_PIDFD)`), never
/// touching other children. `Ok(None)` while it still runs.
pub fn pidfd_try_reap(pidfd: &OwnedFd) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain old data; zeroed means "no child" (si_pid == 0).
    let mut info: libc::siginfo_t = unsafe { mem::zeroed() };
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

/// Counts the fds open in this process (for leak tests).
pub fn count_open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_an_fd_and_get_it_back_cloexec() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _y) = seqpacket_pair().unwrap();
        send_packet(
            a.as_raw_fd(),
            &[IoSlice::new(b"hello")],
            Some(x.as_raw_fd()),
        )
        .unwrap();
        let mut buf = [0u8; 64];
        let r = recv_packet(b.as_raw_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.fds.len(), 1);
        assert!(!r.truncated);
        // SAFETY: F_GETFD on an fd we own.
        let fl = unsafe { libc::fcntl(r.fds[0].as_raw_fd(), libc::F_GETFD) };
        assert!(fl & libc::FD_CLOEXEC != 0);
        assert!(recv_packet(b.as_raw_fd(), &mut buf).unwrap().is_none());
        drop(a);
        let eof = recv_packet(b.as_raw_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(eof.len, 0);
    }

    #[test]
    fn truncated_packet_is_flagged() {
        let (a, b) = seqpacket_pair().unwrap();
        send_packet(a.as_raw_fd(), &[IoSlice::new(&[7u8; 100])], None).unwrap();
        let mut buf = [0u8; 10];
        let r = recv_packet(b.as_raw_fd(), &mut buf).unwrap().unwrap();
        assert!(r.truncated);
    }
}
