//! A minimal readiness poller: register fds with a `u64` token and an interest
//! set, wait for events. Level-triggered: an fd is reported for as long as it
//! is ready for something it is watched for, so owners change interests as
//! their state changes (watch writability only while output waits; stop
//! watching a channel they pause).
//!
//! Linux uses epoll. Elsewhere (and on Linux when [`sys::portable`] is on) it
//! is `poll(2)` over the registered set, which is small: listeners, worker
//! channels and process handles, never client connections.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

#[cfg(target_os = "linux")]
use crate::sys;

/// Readable (or, for a listener, a connection is waiting).
pub const READABLE: u32 = 0x1;
/// Writable.
pub const WRITABLE: u32 = 0x4;
/// Hung up or failed. Always reported, whether asked for or not.
pub const HANGUP: u32 = 0x2000 | 0x10 | 0x8;

/// One readiness event.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub token: u64,
    pub events: u32,
}

/// A set of watched fds.
pub struct Poller {
    imp: Imp,
}

enum Imp {
    #[cfg(target_os = "linux")]
    Epoll(epoll::Epoll),
    Poll(PollSet),
}

impl Poller {
    /// epoll on Linux, `poll(2)` where [`sys::portable`] is on.
    pub fn new() -> io::Result<Poller> {
        #[cfg(target_os = "linux")]
        if !sys::portable() {
            return Ok(Poller {
                imp: Imp::Epoll(epoll::Epoll::new()?),
            });
        }
        Ok(Poller::with_poll())
    }

    /// A poller backed by `poll(2)`, whatever the platform.
    pub fn with_poll() -> Poller {
        Poller {
            imp: Imp::Poll(PollSet::default()),
        }
    }

    /// Starts watching `fd` for `events`, reported with `token`.
    pub fn add(&mut self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        match &mut self.imp {
            #[cfg(target_os = "linux")]
            Imp::Epoll(e) => e.ctl(libc::EPOLL_CTL_ADD, fd, token, events),
            Imp::Poll(p) => p.add(fd, token, events),
        }
    }

    /// Changes what `fd` is watched for (and its token).
    pub fn modify(&mut self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        match &mut self.imp {
            #[cfg(target_os = "linux")]
            Imp::Epoll(e) => e.ctl(libc::EPOLL_CTL_MOD, fd, token, events),
            Imp::Poll(p) => p.modify(fd, token, events),
        }
    }

    /// Stops watching `fd`. Removing an fd that was never added is harmless.
    pub fn delete(&mut self, fd: RawFd) {
        match &mut self.imp {
            #[cfg(target_os = "linux")]
            Imp::Epoll(e) => {
                let _ = e.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
            }
            Imp::Poll(p) => p.delete(fd),
        }
    }

    /// Waits up to `timeout_ms` (-1: forever) and appends what is ready to `out`.
    pub fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: i32) -> io::Result<()> {
        let r = match &mut self.imp {
            #[cfg(target_os = "linux")]
            Imp::Epoll(e) => e.wait(out, timeout_ms),
            Imp::Poll(p) => p.wait(out, timeout_ms),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            r => r,
        }
    }
}

/// The `poll(2)` backend: parallel arrays of pollfds and tokens.
#[derive(Default)]
struct PollSet {
    fds: Vec<libc::pollfd>,
    tokens: Vec<u64>,
    index: HashMap<RawFd, usize>,
}

fn poll_events(events: u32) -> libc::c_short {
    let mut e = 0;
    if events & READABLE != 0 {
        e |= libc::POLLIN;
    }
    if events & WRITABLE != 0 {
        e |= libc::POLLOUT;
    }
    e
}

impl PollSet {
    fn add(&mut self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if self.index.contains_key(&fd) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.index.insert(fd, self.fds.len());
        self.fds.push(libc::pollfd {
            fd,
            events: poll_events(events),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let Some(&i) = self.index.get(&fd) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        self.fds[i].events = poll_events(events);
        self.tokens[i] = token;
        Ok(())
    }

    fn delete(&mut self, fd: RawFd) {
        let Some(i) = self.index.remove(&fd) else {
            return;
        };
        self.fds.swap_remove(i);
        self.tokens.swap_remove(i);
        if let Some(moved) = self.fds.get(i) {
            self.index.insert(moved.fd, i);
        }
    }

    fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: i32) -> io::Result<()> {
        // SAFETY: `fds` is a valid, writable array of `len` pollfds.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(());
        }
        for (p, &token) in self.fds.iter().zip(&self.tokens) {
            if p.revents == 0 {
                continue;
            }
            let mut events = 0;
            if p.revents & libc::POLLIN != 0 {
                events |= READABLE;
            }
            if p.revents & libc::POLLOUT != 0 {
                events |= WRITABLE;
            }
            if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                // Reading is how the owner learns what happened.
                events |= HANGUP | READABLE;
            }
            out.push(Ready { token, events });
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod epoll {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub struct Epoll {
        fd: OwnedFd,
        buf: Vec<libc::epoll_event>,
    }

    impl Epoll {
        pub fn new() -> io::Result<Epoll> {
            // SAFETY: epoll_create1 takes a flag only.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Epoll {
                // SAFETY: a fresh fd that nobody else owns.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                buf: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            })
        }

        pub fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
            // Our bit values are epoll's, so they pass through unchanged.
            let mut ev = libc::epoll_event { events, u64: token };
            // SAFETY: `ev` is a valid epoll_event for the call.
            if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        pub fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: i32) -> io::Result<()> {
            // SAFETY: `buf` has `len` initialised slots the kernel may write into.
            let n = unsafe {
                libc::epoll_wait(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr(),
                    self.buf.len() as i32,
                    timeout_ms,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for ev in &self.buf[..n as usize] {
                out.push(Ready {
                    token: ev.u64,
                    events: ev.events,
                });
            }
            Ok(())
        }
    }

    // The portable constants above are epoll's own values.
    const _: () = assert!(READABLE == libc::EPOLLIN as u32);
    const _: () = assert!(WRITABLE == libc::EPOLLOUT as u32);
    const _: () = assert!(HANGUP == (libc::EPOLLHUP | libc::EPOLLRDHUP | libc::EPOLLERR) as u32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;
    use std::os::fd::AsRawFd;

    fn backends() -> Vec<Poller> {
        let mut v = vec![Poller::with_poll()];
        if let Ok(p) = Poller::new() {
            v.push(p);
        }
        v
    }

    #[test]
    fn level_triggered_read_write_and_hangup() {
        for mut p in backends() {
            let (a, b) = sys::stream_pair().unwrap();
            p.add(a.as_raw_fd(), 7, READABLE).unwrap();
            let mut out = Vec::new();
            p.wait(&mut out, 0).unwrap();
            assert!(out.is_empty());
            // SAFETY: writes one byte from a valid buffer.
            unsafe { libc::write(b.as_raw_fd(), b"x".as_ptr() as *const libc::c_void, 1) };
            for _ in 0..2 {
                // Level-triggered: reported again while unread.
                out.clear();
                p.wait(&mut out, 1000).unwrap();
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].token, 7);
                assert!(out[0].events & READABLE != 0);
            }
            p.modify(a.as_raw_fd(), 8, WRITABLE).unwrap();
            out.clear();
            p.wait(&mut out, 1000).unwrap();
            assert_eq!(out[0].token, 8);
            assert_eq!(out[0].events & READABLE, 0);
            assert!(out[0].events & WRITABLE != 0);
            p.modify(a.as_raw_fd(), 9, 0).unwrap();
            drop(b);
            out.clear();
            p.wait(&mut out, 1000).unwrap();
            assert_eq!(out[0].token, 9);
            assert!(out[0].events & HANGUP != 0);
            p.delete(a.as_raw_fd());
            p.delete(a.as_raw_fd());
            out.clear();
            p.wait(&mut out, 0).unwrap();
            assert!(out.is_empty());
        }
    }

    #[test]
    fn poll_set_deletes_from_the_middle() {
        let mut p = Poller::with_poll();
        let pairs: Vec<_> = (0..3).map(|_| sys::stream_pair().unwrap()).collect();
        for (i, (a, _)) in pairs.iter().enumerate() {
            p.add(a.as_raw_fd(), i as u64, READABLE).unwrap();
        }
        assert!(p.add(pairs[0].0.as_raw_fd(), 9, READABLE).is_err());
        p.delete(pairs[0].0.as_raw_fd());
        // SAFETY: writes one byte from a valid buffer.
        unsafe {
            libc::write(
                pairs[2].1.as_raw_fd(),
                b"x".as_ptr() as *const libc::c_void,
                1,
            )
        };
        let mut out = Vec::new();
        p.wait(&mut out, 1000).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].token, 2);
        p.modify(pairs[2].0.as_raw_fd(), 5, 0).unwrap();
        out.clear();
        p.wait(&mut out, 0).unwrap();
        assert!(out.is_empty());
    }
}
