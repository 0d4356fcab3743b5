//! Helpers shared by the channel integration tests.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rcluster::channel::{Channel, Flush, Inbox, Incoming, Read, ReadError};
use rcluster::sys;

/// Upper bound for any single wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A connected pair of channels.
pub fn pair() -> (Channel, Channel) {
    let (a, b) = Channel::pair().expect("socketpair");
    (a, Channel::new(b).expect("channel"))
}

/// Polls `fd` for `events` for at most `ms` milliseconds. Returns the revents.
pub fn poll_fd(fd: RawFd, events: libc::c_short, ms: libc::c_int) -> libc::c_short {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid, writable pollfd and nfds is 1.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r >= 0 {
            return p.revents;
        }
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
    }
}

/// Flushes `ch` until its queue is empty, waiting for `POLLOUT` in between.
pub fn flush_all(ch: &Channel, mut state: Flush) {
    let deadline = Instant::now() + TIMEOUT;
    while state == Flush::Pending {
        assert!(Instant::now() < deadline, "flush timed out");
        poll_fd(ch.as_raw_fd(), libc::POLLOUT, 100);
        state = ch.flush().expect("flush");
    }
}

/// Reads the next complete frame, polling for input. Panics on EOF, error or timeout.
pub fn next_frame(inbox: &mut Inbox, ch: &Channel) -> Incoming {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match inbox.read(ch) {
            Ok(Read::Frame(f)) => return f,
            Ok(Read::Partial) => continue,
            Ok(Read::Empty) => {
                assert!(Instant::now() < deadline, "read timed out");
                poll_fd(ch.as_raw_fd(), libc::POLLIN, 100);
            }
            Ok(Read::Eof) => panic!("unexpected EOF"),
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
}

/// Reads until something other than a frame-in-progress happens: returns the
/// error, or panics if a complete frame, EOF or nothing at all arrives.
pub fn expect_error(inbox: &mut Inbox, ch: &Channel) -> ReadError {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match inbox.read(ch) {
            Ok(Read::Partial) => continue,
            Ok(Read::Empty) => {
                assert!(Instant::now() < deadline, "no error arrived");
                poll_fd(ch.as_raw_fd(), libc::POLLIN, 100);
            }
            Ok(other) => panic!("expected an error, got {other:?}"),
            Err(e) => return e,
        }
    }
}

/// Whether `fd` has `FD_CLOEXEC` set.
pub fn is_cloexec(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no pointer; a bad fd yields -1.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(fl >= 0, "F_GETFD: {}", io::Error::last_os_error());
    fl & libc::FD_CLOEXEC != 0
}

/// `(st_dev, st_ino)` of the file behind `fd`.
pub fn file_id(fd: RawFd) -> (u64, u64) {
    // SAFETY: `stat` is plain old data; zeroed is a valid out-buffer.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: `st` is valid and writable for fstat.
    let r = unsafe { libc::fstat(fd, &mut st) };
    assert_eq!(r, 0, "fstat: {}", io::Error::last_os_error());
    (st.st_dev as u64, st.st_ino as u64)
}

/// A pipe: `(read end, write end)`, both close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    sys::pipe().expect("pipe")
}

/// A plain `dup` of `fd`, deliberately *without* close-on-exec, so that a
/// received copy having `FD_CLOEXEC` proves the receiver set it.
pub fn dup_inheritable(fd: RawFd) -> OwnedFd {
    // SAFETY: dup takes no pointers.
    let d = unsafe { libc::dup(fd) };
    assert!(d >= 0, "dup: {}", io::Error::last_os_error());
    // SAFETY: a fresh fd owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(d) }
}

/// Sends one packet of `bytes` with any number of fds in one `SCM_RIGHTS`
/// message (the library's `send_packet` carries at most one).
pub fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain old data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // u64 backing store keeps the control buffer aligned for cmsghdr.
    let data_len = mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control/msg_controllen describe `control`, which is at
        // least CMSG_SPACE(data_len) bytes and aligned; CMSG_FIRSTHDR is
        // therefore non-null and CMSG_DATA has room for all of `fds`.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                data_len as usize,
            );
        }
    }
    // SAFETY: `msg` points at `iov`/`bytes` and `control`, all alive for the call.
    let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Process-wide fd count, via the library.
pub fn fds_open() -> usize {
    sys::count_open_fds()
}

/// A deterministic byte pattern, different for every `(seed, index)`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
