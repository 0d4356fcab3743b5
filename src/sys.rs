//! Thin, checked wrappers over the system calls rcluster needs.
//!
//! Everything here returns `io::Result` and owns the fds it creates
//! (`OwnedFd`), so an early return never leaks a descriptor. Every fd is
//! created close-on-exec.
//!
//! Linux gets its own primitives (`SOCK_SEQPACKET` channels, `eventfd`,
//! `MSG_CMSG_CLOEXEC`). Other Unix systems (macOS) get the portable ones: a
//! `SOCK_STREAM` channel with framing done by [`crate::channel`], a pipe as
//! waker, and `FD_CLOEXEC` set right after receipt. Setting
//! `RCLUSTER_PORTABLE=1` selects the portable primitives on Linux too, which
//! is how the macOS code paths are tested on a Linux machine.

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

/// Whether the portable primitives are in use: always off Linux, and on
/// Linux when `RCLUSTER_PORTABLE` is set to anything but `0` or empty.
pub fn portable() -> bool {
    if cfg!(not(target_os = "linux")) {
        return true;
    }
    static PORTABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PORTABLE.get_or_init(|| {
        std::env::var_os("RCLUSTER_PORTABLE").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

fn socketpair(ty: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    #[cfg(target_os = "linux")]
    let ty = ty | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` is a valid, writable array of two ints as socketpair(2) requires.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) })?;
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if cfg!(not(target_os = "linux")) {
        set_cloexec(pair.0.as_raw_fd(), true)?;
        set_cloexec(pair.1.as_raw_fd(), true)?;
    }
    Ok(pair)
}

/// Creates a connected pair of `AF_UNIX` `SOCK_SEQPACKET` sockets, both
/// close-on-exec. Nothing on the filesystem: no other process can connect.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(libc::SOCK_SEQPACKET)
}

/// Creates a connected pair of `AF_UNIX` `SOCK_STREAM` sockets, both
/// close-on-exec (the portable channel).
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(libc::SOCK_STREAM)
}

/// The socket pair a channel uses here: seqpacket on Linux, a stream where
/// [`portable`] is on.
pub fn channel_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    if portable() {
        stream_pair()
    } else {
        seqpacket_pair()
    }
}

/// An int-valued `SOL_SOCKET` option of `fd`.
fn socket_int_option(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid and writable; the options asked
    // for here write one int.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(value)
}

/// Whether `fd` is a `SOCK_STREAM` socket (its type, from `SO_TYPE`).
pub fn is_stream(fd: RawFd) -> io::Result<bool> {
    Ok(socket_int_option(fd, libc::SO_TYPE)? == libc::SOCK_STREAM)
}

/// Whether `fd` is a listening socket (`SO_ACCEPTCONN`).
pub fn is_listening(fd: RawFd) -> io::Result<bool> {
    Ok(socket_int_option(fd, libc::SO_ACCEPTCONN)? != 0)
}

/// Makes writes to a gone peer fail with `EPIPE` instead of raising SIGPIPE
/// where `MSG_NOSIGNAL` does not exist (macOS: `SO_NOSIGPIPE`).
pub fn no_sigpipe(fd: RawFd) -> io::Result<()> {
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    {
        let one: libc::c_int = 1;
        // SAFETY: SO_NOSIGPIPE reads one int from a valid pointer.
        cvt(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                &one as *const libc::c_int as *const libc::c_void,
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    let _ = fd;
    Ok(())
}

/// Asks for socket buffers of at least `bytes` each way (best effort: the
/// kernel may cap it). macOS gives unix stream sockets 8 KiB by default.
pub fn grow_buffers(fd: RawFd, bytes: usize) {
    let size = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads one int from a valid pointer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &size as *const libc::c_int as *const libc::c_void,
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

#[cfg(target_os = "linux")]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
#[cfg(not(target_os = "linux"))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

#[cfg(target_os = "linux")]
const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
#[cfg(not(target_os = "linux"))]
const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

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
    cvt_size(unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) })
}

/// Sends one packet from one contiguous buffer, without an fd: `send(2)`,
/// which spares the kernel the message header and iovec copies of
/// `sendmsg(2)`. Returns the bytes sent.
pub fn send_bytes(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call.
    cvt_size(unsafe {
        libc::send(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            SEND_FLAGS,
        )
    })
}

/// Sends several packets with one `sendmmsg` call (a single packet, or
/// anywhere but Linux: one [`send_packet`]): packet `i` is `packets[i].0`
/// with at most one fd. Returns how many packets were sent; `WouldBlock`
/// when not even the first fit.
pub fn send_packets(fd: RawFd, packets: &[([IoSlice<'_>; 2], Option<RawFd>)]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    if packets.len() > 1 {
        const MAX: usize = 32;
        #[repr(C)]
        #[derive(Clone, Copy)]
        union Cmsg {
            _align: libc::cmsghdr,
            buf: [u8; 32],
        }
        let n = packets.len().min(MAX);
        if n == 0 {
            return Ok(0);
        }
        let mut cbufs = [Cmsg { buf: [0; 32] }; MAX];
        // SAFETY: mmsghdr is plain old data; zeroed is a valid empty header.
        let mut msgs: [libc::mmsghdr; MAX] = unsafe { mem::zeroed() };
        for (i, (iov, pass)) in packets[..n].iter().enumerate() {
            let h = &mut msgs[i].msg_hdr;
            h.msg_iov = iov.as_ptr() as *mut libc::iovec;
            h.msg_iovlen = iov.len() as _;
            if let Some(pfd) = pass {
                // SAFETY: CMSG_SPACE(4) is 24 on 64-bit, within the 32-byte
                // buffer that msg_control/msg_controllen describe, so
                // CMSG_FIRSTHDR is non-null and CMSG_DATA has room for one fd.
                unsafe {
                    let space = libc::CMSG_SPACE(mem::size_of::<RawFd>() as u32) as usize;
                    h.msg_control = cbufs[i].buf.as_mut_ptr() as *mut libc::c_void;
                    h.msg_controllen = space as _;
                    let cmsg = libc::CMSG_FIRSTHDR(h);
                    (*cmsg).cmsg_level = libc::SOL_SOCKET;
                    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<RawFd>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, *pfd);
                }
            }
        }
        // SAFETY: `msgs[..n]` point at the callers' iovecs (IoSlice is
        // ABI-compatible with iovec) and at `cbufs`, all alive for the call.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, SEND_FLAGS) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(r as usize);
    }
    match packets.first() {
        Some((iov, pass)) => send_packet(fd, iov, *pass).map(|_| 1),
        None => Ok(0),
    }
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

/// Receives one packet into `buf` with `MSG_CMSG_CLOEXEC` (elsewhere,
/// `FD_CLOEXEC` is set on each fd at once). `Ok(None)` when nothing is
/// waiting. A `len` of 0 with no fds is end of file (or, on a seqpacket
/// socket, maybe an empty packet: see [`peer_hung_up`]).
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
    let n = unsafe { libc::recvmsg(fd, &mut msg, RECV_FLAGS) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(e);
    }
    let fds = take_fds(&msg);
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    Ok(Some(Received {
        len: n as usize,
        fds,
        truncated,
    }))
}

/// Receives up to `slots` packets with one `recvmmsg` call, packet `i` into
/// `buf[i * slot_len..(i + 1) * slot_len]`, appending them to `out` in order.
/// Returns how many arrived (0: nothing waiting). Linux only; elsewhere it
/// receives one packet with [`recv_packet`].
///
/// Every fd the kernel installed is returned as `OwnedFd`, as with
/// [`recv_packet`]. At end of file each slot holds a 0-byte packet.
pub fn recv_packets(
    fd: RawFd,
    buf: &mut [u8],
    slot_len: usize,
    out: &mut Vec<Received>,
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        // The channel reads 16 at a time; the headers live on the stack and
        // only the slots used are set up (this runs once per wake-up).
        const MAX_SLOTS: usize = 16;
        #[repr(C)]
        #[derive(Clone, Copy)]
        union Cmsg {
            _align: libc::cmsghdr,
            buf: [u8; 128],
        }
        let slots = (buf.len() / slot_len).min(MAX_SLOTS);
        if slots == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: pure arithmetic.
        let space =
            unsafe { libc::CMSG_SPACE((RECV_FD_SLOTS * mem::size_of::<RawFd>()) as u32) } as usize;
        debug_assert!(space <= 128);
        // Control buffers need no initialising: the kernel writes them and
        // reports the length it wrote in msg_controllen.
        let mut cbufs = [mem::MaybeUninit::<Cmsg>::uninit(); MAX_SLOTS];
        let mut iovs = [mem::MaybeUninit::<libc::iovec>::uninit(); MAX_SLOTS];
        let mut msgs = [mem::MaybeUninit::<libc::mmsghdr>::uninit(); MAX_SLOTS];
        let base = buf.as_mut_ptr();
        for i in 0..slots {
            iovs[i].write(libc::iovec {
                // SAFETY: slot `i` lies inside `buf` (i < buf.len() / slot_len).
                iov_base: unsafe { base.add(i * slot_len) } as *mut libc::c_void,
                iov_len: slot_len,
            });
            // SAFETY: mmsghdr is plain old data; zeroed is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = cbufs[i].as_mut_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_controllen = space as _;
            msgs[i].write(m);
        }
        // SAFETY: `msgs[..slots]` are initialised above and describe buffers
        // (`buf` slices, `cbufs`) that are valid and writable for the call; a
        // null timeout is allowed.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr() as *mut libc::mmsghdr,
                slots as libc::c_uint,
                RECV_FLAGS,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        for m in &msgs[..n as usize] {
            // SAFETY: the first `slots` (>= n) headers were initialised above.
            let m = unsafe { m.assume_init_ref() };
            let fds = take_fds(&m.msg_hdr);
            out.push(Received {
                len: m.msg_len as usize,
                fds,
                truncated: m.msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0,
            });
        }
        Ok(n as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        match recv_packet(fd, &mut buf[..slot_len])? {
            Some(r) => {
                out.push(r);
                Ok(1)
            }
            None => Ok(0),
        }
    }
}

/// Takes ownership of every fd in `msg`'s `SCM_RIGHTS` control data.
fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR
    // walk only within that range, and CMSG_DATA of an SCM_RIGHTS header holds
    // (cmsg_len - CMSG_LEN(0)) / 4 ints, each a new fd installed in our table.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let bytes = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..bytes / mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    if cfg!(not(target_os = "linux")) {
        for f in &fds {
            // No MSG_CMSG_CLOEXEC here: close the window as soon as we can.
            let _ = set_cloexec(f.as_raw_fd(), true);
        }
    }
    fds
}

/// Whether the peer of the connected socket `fd` has hung up or shut down its
/// writing side (`POLLHUP`/`POLLRDHUP`). Tells a real end of file apart from
/// an empty packet, which `recvmsg` also reports as 0 bytes. A failing poll
/// counts as hung up.
pub fn peer_hung_up(fd: RawFd) -> bool {
    #[cfg(target_os = "linux")]
    const RDHUP: libc::c_short = libc::POLLRDHUP;
    #[cfg(not(target_os = "linux"))]
    const RDHUP: libc::c_short = 0;
    let mut p = libc::pollfd {
        fd,
        events: RDHUP,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one valid, writable pollfd; a zero timeout never blocks.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r >= 0 {
            return p.revents & (libc::POLLHUP | RDHUP | libc::POLLERR | libc::POLLNVAL) != 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return true;
        }
    }
}

/// Wakes a poll loop from another thread: an eventfd on Linux, a pipe where
/// [`portable`] is on. Both ends are non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Waker {
    read: OwnedFd,
    /// The pipe's write end (`None`: the eventfd is both ends).
    write: Option<OwnedFd>,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        #[cfg(target_os = "linux")]
        if !portable() {
            // SAFETY: eventfd takes no pointers.
            let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
            return Ok(Waker {
                // SAFETY: a fresh fd that nobody else owns.
                read: unsafe { OwnedFd::from_raw_fd(fd) },
                write: None,
            });
        }
        let (read, write) = pipe()?;
        set_nonblocking(read.as_raw_fd(), true)?;
        set_nonblocking(write.as_raw_fd(), true)?;
        Ok(Waker {
            read,
            write: Some(write),
        })
    }

    /// The fd to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Wakes the reader. A full counter or pipe still wakes it.
    pub fn wake(&self) {
        let one: u64 = 1;
        let (fd, n) = match &self.write {
            Some(w) => (w.as_raw_fd(), 1),
            None => (self.read.as_raw_fd(), 8),
        };
        // SAFETY: writes `n` (1 or 8) bytes from a valid u64.
        unsafe {
            libc::write(fd, &one as *const u64 as *const libc::c_void, n);
        }
    }

    /// Takes every pending wake-up.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads at most 64 bytes into a valid buffer (an eventfd
            // needs 8 and gives them all at once).
            let n = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 || self.write.is_none() || (n as usize) < buf.len() {
                return;
            }
        }
    }
}

/// A close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two ints as pipe(2) requires.
    #[cfg(target_os = "linux")]
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: as above.
    #[cfg(not(target_os = "linux"))]
    cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    // SAFETY: pipe succeeded, so both fds are open and owned by nobody else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    if cfg!(not(target_os = "linux")) {
        set_cloexec(pair.0.as_raw_fd(), true)?;
        set_cloexec(pair.1.as_raw_fd(), true)?;
    }
    Ok(pair)
}

/// Whether the calling thread is the process's initial thread (where Node
/// runs its main JS thread), as opposed to a worker or loader-hooks thread.
pub fn is_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the gettid system call and getpid take no arguments and
        // cannot fail. (The syscall, not glibc's gettid(), which needs 2.30.)
        unsafe { libc::syscall(libc::SYS_gettid) == libc::getpid() as libc::c_long }
    }
    #[cfg(target_os = "macos")]
    {
        // SAFETY: pthread_main_np takes no arguments and cannot fail.
        unsafe { libc::pthread_main_np() == 1 }
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        true
    }
}

/// Whether the kernel started this process in secure-execution mode
/// (`AT_SECURE` in its auxiliary vector: setuid, setgid, or file
/// capabilities gained at exec). Always false outside Linux.
pub fn secure_exec() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getauxval reads the auxiliary vector the kernel gave this
        // process; it has no preconditions and returns 0 for a missing entry.
        unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// CPU time (user and system) the calling thread has used so far; zero
/// where the clock is not available.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer we own;
    // CLOCK_THREAD_CPUTIME_ID exists on Linux and macOS.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub use crate::process::ExitStatus;

/// Where the C library, the Rust runtime and the test harness open files on
/// their own, for a moment and on any thread: glibc's malloc reads
/// `/proc/sys/vm/overcommit_memory` when a thread's heap shrinks, std reads
/// `/proc/self/maps` and the cgroup files, libtest reads terminfo, and
/// `count_open_fds` itself reads `/proc/self/fd`. This library opens a file
/// there only through `std::fs::read_to_string` (a worker's
/// `/proc/<pid>/statm`), which closes it before returning, so an fd on one
/// of these paths is never one of its leaks.
#[cfg(target_os = "linux")]
const RUNTIME_PATHS: [&str; 5] = ["/proc/", "/sys/", "/etc/", "/lib", "/usr/"];

/// Counts the fds open in this process (for leak tests), leaving out the
/// files that the runtime opens by itself (`RUNTIME_PATHS`): a leak test on
/// one thread would otherwise count, now and then, a file that another
/// thread of the process holds for a few microseconds.
pub fn count_open_fds() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return 0;
        };
        dir.filter_map(Result::ok)
            .filter(|e| match std::fs::read_link(e.path()) {
                // Gone since the directory was read: it was not ours to count.
                Err(_) => false,
                Ok(target) => {
                    let t = target.to_string_lossy();
                    !RUNTIME_PATHS.iter().any(|p| t.starts_with(p))
                }
            })
            .count()
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::fs::read_dir("/dev/fd")
            .map(|d| d.count().saturating_sub(1))
            .unwrap_or(0)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_exec_is_not_secure() {
        // The test binary runs without setuid, setgid or file capabilities.
        assert!(!secure_exec());
    }

    #[test]
    fn main_thread_is_told_apart_from_other_threads() {
        // Whether the harness runs this test on the main thread varies; every
        // worker's bootstrap (the node suites) relies on the true case.
        assert!(!std::thread::spawn(is_main_thread).join().unwrap());
    }

    #[test]
    fn thread_cpu_time_counts_this_threads_work_only() {
        // Work advances it (however many other threads share the CPUs: the
        // spin ends on the thread's own clock, the wall clock only bounds it).
        let before = thread_cpu_time();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        let mut spun = std::time::Duration::ZERO;
        while spun < std::time::Duration::from_millis(10) && t0.elapsed().as_secs() < 10 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            spun = thread_cpu_time() - before;
        }
        assert!(spun >= std::time::Duration::from_millis(10), "{spun:?}");
        // A thread that only sleeps uses (almost) none.
        let idle = std::thread::spawn(|| {
            let before = thread_cpu_time();
            std::thread::sleep(std::time::Duration::from_millis(30));
            thread_cpu_time() - before
        })
        .join()
        .unwrap();
        assert!(idle < std::time::Duration::from_millis(5), "{idle:?}");
    }

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
