//! Listening sockets bound by the primary on behalf of workers.
//!
//! A worker's `server.listen()` arrives as a [`ListenRequest`]; the primary
//! binds it once per key, the way Node's primary does (libuv semantics:
//! `SO_REUSEADDR`, a missing address means `::` dual-stack falling back to
//! `0.0.0.0`, `ipv6Only` honoured). Errors are negative errno values, which
//! are libuv error codes on Unix, so JS can build the same exception as Node.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};

/// `UV_TCP_IPV6ONLY` / `UV_UDP_IPV6ONLY`, as in Node's `flags`.
pub const FLAG_IPV6ONLY: u32 = 1;

/// `UV_UDP_REUSEADDR`, as dgram's `reuseAddr` sets it.
pub const FLAG_UDP_REUSEADDR: u32 = 4;

/// Node's default backlog.
pub const DEFAULT_BACKLOG: i32 = 511;

/// Node's `addressType`: a number for streams (4, 6, -1 for unix paths) or
/// the string `'udp4'`/`'udp6'` for dgram sockets.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum AddressType {
    Num(i64),
    Str(String),
}

/// A worker's request for a listening socket (JSON from the worker's JS).
/// Node sends `null` for fields it has no value for (`listen({ fd })` sends
/// `port: null, addressType: null`), so every field but the key is optional.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenRequest {
    /// The listener key (Node's `address:port:addressType:fd:index`).
    pub key: String,
    /// IP address or unix path; `None` means any address.
    pub address: Option<String>,
    /// Port; negative for unix paths.
    #[serde(default)]
    pub port: Option<i64>,
    /// 4, 6, -1 (unix path), "udp4" or "udp6".
    #[serde(default)]
    pub address_type: Option<AddressType>,
    /// A file descriptor of the primary to listen on (`listen({ fd })`).
    #[serde(default)]
    pub fd: Option<i64>,
    /// libuv bind flags.
    #[serde(default)]
    pub flags: Option<u32>,
    /// Requested backlog (Node passes odd values through; only numbers count).
    #[serde(default)]
    pub backlog: Option<serde_json::Value>,
    /// Scheduling: "rr", "none", "reuseport", "least" or "hash" (see
    /// [`crate::policy::Policy::for_listener`]). The first request for a key
    /// decides; later workers join the listener as it is.
    #[serde(default)]
    pub policy: Option<String>,
    /// `reuseport`: how long (ms) a slot's socket outlives its worker, waiting
    /// for a replacement in the same slot.
    #[serde(default)]
    pub reuse_port_hold: Option<u64>,
    /// `rr`: `false` keeps every connection going through the primary (the
    /// `rrOffload` setting; see `reactor/offload.rs`).
    #[serde(default)]
    pub rr_offload: Option<bool>,
    /// The server's `_getServerData()` (tls: session ticket keys). The
    /// first worker's data is kept per key and given to every worker.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// Unix paths: `listen({ path, readableAll: true })` makes the socket
    /// file readable by every user (libuv's `uv_pipe_chmod`).
    #[serde(default)]
    pub readable_all: Option<bool>,
    /// Unix paths: `writableAll`, the same for writing (connecting).
    #[serde(default)]
    pub writable_all: Option<bool>,
    /// How the two apply, as the primary's libuv does: `true` (libuv 1.51+)
    /// sets the mode to exactly those bits, otherwise they are added to the
    /// mode the umask gave.
    #[serde(default)]
    pub pipe_mode_exact: Option<bool>,
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A TCP listener on an address and port.
    Tcp,
    /// A unix-domain stream listener on a path.
    Unix,
    /// An existing stream socket of the primary, by fd number.
    Fd,
    /// A datagram socket (always shared, like Node's SharedHandle).
    Udp,
}

impl ListenRequest {
    pub fn kind(&self) -> Kind {
        if self.is_udp() {
            return Kind::Udp;
        }
        if self.fd.is_some_and(|fd| fd >= 0) {
            return Kind::Fd;
        }
        if self.address_type == Some(AddressType::Num(-1)) || self.port.is_some_and(|p| p < 0) {
            return Kind::Unix;
        }
        Kind::Tcp
    }

    pub fn is_udp(&self) -> bool {
        matches!(&self.address_type, Some(AddressType::Str(s)) if s == "udp4" || s == "udp6")
    }

    fn flags(&self) -> u32 {
        self.flags.unwrap_or(0)
    }
}

/// The bound address, as Node's `getsockname()` reports it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SockName {
    pub address: String,
    pub family: String,
    pub port: u16,
}

/// A bound socket, and the unix path to unlink when it closes (libuv removes
/// the socket file of a pipe server it bound when the handle closes).
#[derive(Debug)]
pub struct Bound {
    pub fd: OwnedFd,
    pub unlink: Option<PathBuf>,
}

impl From<OwnedFd> for Bound {
    fn from(fd: OwnedFd) -> Bound {
        Bound { fd, unlink: None }
    }
}

fn uv_err(e: &io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EINVAL)
}

/// A non-blocking, close-on-exec socket.
fn new_socket(domain: Domain, ty: Type) -> io::Result<Socket> {
    #[cfg(target_os = "linux")]
    return Socket::new(domain, ty.nonblocking().cloexec(), None);
    #[cfg(not(target_os = "linux"))]
    {
        // socket2 sets close-on-exec itself where the flag does not exist.
        let s = Socket::new(domain, ty, None)?;
        s.set_nonblocking(true)?;
        Ok(s)
    }
}

fn tcp_socket(domain: Domain) -> io::Result<Socket> {
    let s = new_socket(domain, Type::STREAM)?;
    s.set_reuse_address(true)?;
    Ok(s)
}

fn into_owned(s: Socket) -> OwnedFd {
    // SAFETY: into_raw_fd hands over sole ownership of an open fd.
    unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) }
}

fn bind_listen(s: Socket, addr: &SockAddr, backlog: i32) -> io::Result<OwnedFd> {
    s.bind(addr)?;
    s.listen(backlog)?;
    Ok(into_owned(s))
}

/// `to` relative to `from` (both absolute and normalized), like Node's
/// `path.relative()`.
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// The path the primary binds for a worker's (absolute) unix path: the
/// shorter of it and its path relative to the primary's cwd, as Node's
/// primary picks (sockaddr_un holds ~107 bytes).
pub fn unix_bind_path(path: &str) -> PathBuf {
    let abs = PathBuf::from(path);
    if !abs.is_absolute() {
        return abs;
    }
    match std::env::current_dir() {
        Ok(cwd) => {
            let rel = relative(&cwd, &abs);
            if rel.as_os_str().len() < abs.as_os_str().len() && !rel.as_os_str().is_empty() {
                rel
            } else {
                abs
            }
        }
        Err(_) => abs,
    }
}

/// `readableAll` / `writableAll`: read and/or write permission for user,
/// group and others on the socket file just bound, as libuv's
/// `uv_pipe_chmod` gives them: added to the other bits, or (libuv 1.51+,
/// `pipe_mode_exact`) as the whole mode. Abstract names have no file.
fn chmod_all(req: &ListenRequest, bind_path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut want = 0;
    if req.readable_all == Some(true) {
        want |= 0o444;
    }
    if req.writable_all == Some(true) {
        want |= 0o222;
    }
    if want == 0 || bind_path.as_os_str().as_encoded_bytes().first() == Some(&0) {
        return Ok(());
    }
    if req.pipe_mode_exact == Some(true) {
        return std::fs::set_permissions(bind_path, std::fs::Permissions::from_mode(want));
    }
    let mode = std::fs::metadata(bind_path)?.permissions().mode();
    if mode & want == want {
        return Ok(());
    }
    std::fs::set_permissions(bind_path, std::fs::Permissions::from_mode(mode | want))
}

/// The backlog a request asks for (Node's 511 when it names none).
pub fn backlog_of(req: &ListenRequest) -> i32 {
    req.backlog
        .as_ref()
        .and_then(|b| b.as_i64())
        .filter(|b| *b > 0)
        .map(|b| b.min(i32::MAX as i64) as i32)
        .unwrap_or(DEFAULT_BACKLOG)
}

/// A duplicate (close-on-exec) of the primary's own fd `fd`, when it is a
/// socket of type `ty`. The original stays open and untouched.
fn dup_socket(fd: i64, ty: Type) -> Result<Socket, i32> {
    let raw = i32::try_from(fd).map_err(|_| -libc::EBADF)?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) only reads its arguments; an fd that is
    // not open yields EBADF, never undefined behaviour.
    let r = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        return Err(uv_err(&io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nobody else owns.
    let s = unsafe { Socket::from_raw_fd(r) };
    match s.r#type() {
        Ok(t) if t == ty => {}
        _ => return Err(-libc::EINVAL),
    }
    s.set_nonblocking(true).map_err(|e| uv_err(&e))?;
    Ok(s)
}

/// Binds and listens as the request says. `Err` carries a negative errno.
pub fn bind(req: &ListenRequest) -> Result<Bound, i32> {
    bind_as(req, false)
}

/// Like [`bind`] for a TCP request, and the socket then founds a
/// `SO_REUSEPORT` group (the `rr` offload, `src/offload.rs`): the bind itself
/// is a plain one, so a port that anyone holds fails with `EADDRINUSE` as in
/// Node (a socket with `SO_REUSEPORT` set before its bind could share a
/// port with another reuseport program of the same user), and port 0 picks a
/// free port; `SO_REUSEPORT` is set between bind and listen, so that the
/// workers' sockets ([`bind_reuseport`] with the address it got) join it.
pub fn bind_group(req: &ListenRequest) -> Result<Bound, i32> {
    if req.kind() != Kind::Tcp {
        return Err(-libc::EINVAL);
    }
    bind_as(req, true)
}

fn bind_as(req: &ListenRequest, group: bool) -> Result<Bound, i32> {
    let backlog = backlog_of(req);
    let bind_listen = |s: Socket, addr: &SockAddr, backlog: i32| -> io::Result<OwnedFd> {
        s.bind(addr)?;
        if group {
            s.set_reuse_port(true)?;
        }
        s.listen(backlog)?;
        Ok(into_owned(s))
    };
    match req.kind() {
        Kind::Udp => return bind_udp(req).map(Bound::from),
        Kind::Fd => {
            let s = dup_socket(req.fd.unwrap_or(-1), Type::STREAM)?;
            s.listen(backlog).map_err(|e| uv_err(&e))?;
            return Ok(into_owned(s).into());
        }
        Kind::Unix => {
            let path = req.address.as_deref().ok_or(-libc::EINVAL)?;
            let bind_path = unix_bind_path(path);
            // Too long even relative: EINVAL, as Node 24 (libuv 1.52) says;
            // Node 20 and 22 silently bind a truncated path.
            if bind_path.as_os_str().len() >= 108 {
                return Err(-libc::EINVAL);
            }
            let addr = SockAddr::unix(&bind_path).map_err(|e| uv_err(&e))?;
            let s = new_socket(Domain::UNIX, Type::STREAM).map_err(|e| uv_err(&e))?;
            let fd = bind_listen(s, &addr, backlog).map_err(|e| uv_err(&e))?;
            if let Err(e) = chmod_all(req, &bind_path) {
                let _ = std::fs::remove_file(&bind_path);
                return Err(uv_err(&e));
            }
            return Ok(Bound {
                fd,
                unlink: Some(PathBuf::from(path)),
            });
        }
        Kind::Tcp => {}
    }
    let port = req.port.unwrap_or(0);
    if !(0..=65535).contains(&port) {
        return Err(-libc::EINVAL);
    }
    let port = port as u16;
    match req.address.as_deref() {
        None | Some("") => {
            let any6 = SockAddr::from(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
            let v6 = tcp_socket(Domain::IPV6).and_then(|s| {
                s.set_only_v6(req.flags() & FLAG_IPV6ONLY != 0)?;
                bind_listen(s, &any6, backlog)
            });
            match v6 {
                Ok(fd) => Ok(fd.into()),
                Err(_) => {
                    let any4 =
                        SockAddr::from(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
                    tcp_socket(Domain::IPV4)
                        .and_then(|s| bind_listen(s, &any4, backlog))
                        .map(Bound::from)
                        .map_err(|e| uv_err(&e))
                }
            }
        }
        Some(a) => {
            let ip: IpAddr = a.parse().map_err(|_| -libc::EINVAL)?;
            let sa = SockAddr::from(SocketAddr::new(ip, port));
            let r = if ip.is_ipv6() {
                tcp_socket(Domain::IPV6).and_then(|s| {
                    s.set_only_v6(req.flags() & FLAG_IPV6ONLY != 0)?;
                    bind_listen(s, &sa, backlog)
                })
            } else {
                tcp_socket(Domain::IPV4).and_then(|s| bind_listen(s, &sa, backlog))
            };
            r.map(Bound::from).map_err(|e| uv_err(&e))
        }
    }
}

/// One member of a `SO_REUSEPORT` group for a TCP request: the first (`at`
/// is `None`) binds the request's address and port like [`bind`] (`::`
/// dual-stack falling back to `0.0.0.0`, port 0 picks a port); the others
/// bind exactly the address and port the first one got (`at`), so
/// `listen(0)` still gives every worker the same port. The kernel spreads
/// incoming connections over the group's sockets.
pub fn bind_reuseport(req: &ListenRequest, at: Option<&SockName>) -> Result<Bound, i32> {
    if req.kind() != Kind::Tcp {
        return Err(-libc::EINVAL);
    }
    let backlog = backlog_of(req);
    let v6only = req.flags() & FLAG_IPV6ONLY != 0;
    let one = |ip: IpAddr, port: u16| -> io::Result<OwnedFd> {
        let s = tcp_socket(if ip.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        })?;
        s.set_reuse_port(true)?;
        if ip.is_ipv6() {
            s.set_only_v6(v6only)?;
        }
        bind_listen(s, &SockAddr::from(SocketAddr::new(ip, port)), backlog)
    };
    if let Some(at) = at {
        let ip: IpAddr = at.address.parse().map_err(|_| -libc::EINVAL)?;
        return one(ip, at.port).map(Bound::from).map_err(|e| uv_err(&e));
    }
    let port = req.port.unwrap_or(0);
    if !(0..=65535).contains(&port) {
        return Err(-libc::EINVAL);
    }
    let port = port as u16;
    match req.address.as_deref() {
        None | Some("") => one(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
            .or_else(|_| one(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .map(Bound::from)
            .map_err(|e| uv_err(&e)),
        Some(a) => {
            let ip: IpAddr = a.parse().map_err(|_| -libc::EINVAL)?;
            one(ip, port).map(Bound::from).map_err(|e| uv_err(&e))
        }
    }
}

/// The IP address of a connected socket's peer (`getpeername`); `None` for
/// unix sockets or when the peer is already gone.
pub fn peer_ip(fd: &OwnedFd) -> Option<IpAddr> {
    let s = socket2::SockRef::from(fd);
    Some(s.peer_addr().ok()?.as_socket()?.ip())
}

/// A datagram socket for a dgram `bind()` routed to the primary, the way
/// Node's primary makes one (`dgram._createSocketHandle`, libuv's
/// `uv_udp_bind`): `udp6` honours `UV_UDP_IPV6ONLY`, `reuseAddr` sets
/// `SO_REUSEADDR`; `{ fd }` opens an existing datagram socket of the primary.
pub fn bind_udp(req: &ListenRequest) -> Result<OwnedFd, i32> {
    if let Some(fd) = req.fd.filter(|fd| *fd > 0) {
        return dup_socket(fd, Type::DGRAM).map(into_owned);
    }
    let v6 = matches!(&req.address_type, Some(AddressType::Str(s)) if s == "udp6");
    let port = req.port.unwrap_or(0);
    if !(0..=65535).contains(&port) {
        return Err(-libc::EINVAL);
    }
    let ip: IpAddr = match req.address.as_deref() {
        None | Some("") if v6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(a) => a.parse().map_err(|_| -libc::EINVAL)?,
    };
    if ip.is_ipv6() != v6 {
        return Err(-libc::EINVAL);
    }
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = new_socket(domain, Type::DGRAM).map_err(|e| uv_err(&e))?;
    let flags = req.flags();
    let r = (|| {
        if flags & FLAG_UDP_REUSEADDR != 0 {
            s.set_reuse_address(true)?;
        }
        if v6 {
            s.set_only_v6(flags & FLAG_IPV6ONLY != 0)?;
        }
        s.bind(&SockAddr::from(SocketAddr::new(ip, port as u16)))
    })();
    r.map_err(|e| uv_err(&e))?;
    Ok(into_owned(s))
}

/// The local address of a bound TCP or UDP socket; `None` for unix sockets.
pub fn sockname(fd: &OwnedFd) -> Option<SockName> {
    let s = socket2::SockRef::from(fd);
    let addr = s.local_addr().ok()?.as_socket()?;
    Some(SockName {
        address: addr.ip().to_string(),
        family: if addr.is_ipv6() { "IPv6" } else { "IPv4" }.to_string(),
        port: addr.port(),
    })
}

/// `accept4(SOCK_CLOEXEC)` on a listener (elsewhere `accept` and then
/// `FD_CLOEXEC`). `Ok(None)` when nothing is waiting.
pub fn accept(fd: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: null address pointers are allowed by accept4(2).
        #[cfg(target_os = "linux")]
        let r = unsafe {
            libc::accept4(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        // SAFETY: null address pointers are allowed by accept(2).
        #[cfg(not(target_os = "linux"))]
        let r = unsafe { libc::accept(fd.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
        if r >= 0 {
            // SAFETY: a fresh fd that nobody else owns.
            let conn = unsafe { OwnedFd::from_raw_fd(r) };
            if cfg!(not(target_os = "linux")) {
                crate::sys::set_cloexec(r, true)?;
                // BSD accept inherits O_NONBLOCK from the listener; Linux does not.
                crate::sys::set_nonblocking(r, false)?;
            }
            return Ok(Some(conn));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(address: Option<&str>, port: i64, address_type: i64) -> ListenRequest {
        ListenRequest {
            key: "k".into(),
            address: address.map(String::from),
            port: Some(port),
            address_type: Some(AddressType::Num(address_type)),
            fd: None,
            flags: None,
            backlog: None,
            policy: None,
            reuse_port_hold: None,
            rr_offload: None,
            data: None,
            readable_all: None,
            writable_all: None,
            pipe_mode_exact: None,
        }
    }

    #[test]
    fn binds_loopback_port_zero_and_accepts() {
        let fd = bind(&req(Some("127.0.0.1"), 0, 4)).unwrap().fd;
        let name = sockname(&fd).unwrap();
        assert_eq!(name.family, "IPv4");
        assert_eq!(name.address, "127.0.0.1");
        assert!(name.port > 0);
        assert!(accept(&fd).unwrap().is_none());
        let _c = std::net::TcpStream::connect(("127.0.0.1", name.port)).unwrap();
        let mut got = None;
        for _ in 0..100 {
            if let Some(c) = accept(&fd).unwrap() {
                got = Some(c);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(got.is_some());
    }

    #[test]
    fn port_in_use_is_eaddrinuse() {
        let fd = bind(&req(Some("127.0.0.1"), 0, 4)).unwrap().fd;
        let port = sockname(&fd).unwrap().port as i64;
        let _hold = std::net::TcpStream::connect(("127.0.0.1", port as u16));
        assert_eq!(
            bind(&req(Some("127.0.0.1"), port, 4)).err(),
            Some(-libc::EADDRINUSE)
        );
    }

    #[test]
    fn bad_port_and_address() {
        assert_eq!(bind(&req(None, 70000, 4)).err(), Some(-libc::EINVAL));
        assert_eq!(
            bind(&req(Some("not-an-ip"), 0, 4)).err(),
            Some(-libc::EINVAL)
        );
    }

    #[test]
    fn any_address_and_unix_path() {
        let fd = bind(&req(None, 0, 4)).unwrap().fd;
        assert!(sockname(&fd).unwrap().port > 0);
        let dir = std::env::temp_dir().join(format!("rcluster-l-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.sock");
        let _ = std::fs::remove_file(&p);
        let u = bind(&req(p.to_str(), -1, -1)).unwrap();
        assert!(sockname(&u.fd).is_none());
        assert_eq!(u.unlink.as_deref(), Some(p.as_path()));
        drop(u);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unix_path_readable_and_writable_by_all() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rcluster-m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let cases = [
            (None, None, 0o000),
            (Some(true), None, 0o444),
            (None, Some(true), 0o222),
            (Some(true), Some(true), 0o666),
            (Some(false), Some(false), 0o000),
        ];
        for (i, (readable, writable, set)) in cases.into_iter().enumerate() {
            let p = dir.join(format!("m{i}.sock"));
            let _ = std::fs::remove_file(&p);
            let mut r = req(p.to_str(), -1, -1);
            r.readable_all = readable;
            r.writable_all = writable;
            let u = bind(&r).unwrap();
            // The bits asked for are all there, the umask's others kept.
            assert_eq!(mode(&p) & set, set, "case {i}");
            drop(u);
            let _ = std::fs::remove_file(&p);
        }
        // Whatever the umask left: from 0700, each option adds its bits.
        let p = dir.join("x.sock");
        let _ = std::fs::remove_file(&p);
        let u = bind(&req(p.to_str(), -1, -1)).unwrap();
        let mut r = req(p.to_str(), -1, -1);
        for (readable, writable, want, exact) in [
            (Some(true), None, 0o744, 0o444),
            (None, Some(true), 0o722, 0o222),
            (Some(true), Some(true), 0o766, 0o666),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
            r.readable_all = readable;
            r.writable_all = writable;
            chmod_all(&r, &p).unwrap();
            assert_eq!(mode(&p), want);
            // libuv 1.51+: the bits asked for are the whole mode.
            r.pipe_mode_exact = Some(true);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
            chmod_all(&r, &p).unwrap();
            assert_eq!(mode(&p), exact);
            r.pipe_mode_exact = None;
        }
        drop(u);
        let _ = std::fs::remove_file(&p);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_paths_like_node() {
        assert_eq!(
            relative(Path::new("/a/b/c"), Path::new("/a/b/c/x.sock")),
            PathBuf::from("x.sock")
        );
        assert_eq!(
            relative(Path::new("/a/b/c"), Path::new("/a/x.sock")),
            PathBuf::from("../../x.sock")
        );
        assert_eq!(
            relative(Path::new("/"), Path::new("/x")),
            PathBuf::from("x")
        );
    }

    #[test]
    fn parses_node_requests() {
        let r: ListenRequest = serde_json::from_str(
            r#"{"key":"k","address":null,"port":null,"addressType":null,"fd":7,"flags":null}"#,
        )
        .unwrap();
        assert_eq!(r.kind(), Kind::Fd);
        let r: ListenRequest = serde_json::from_str(
            r#"{"key":"k","address":"127.0.0.1","port":0,"addressType":"udp4","fd":-1,"flags":0}"#,
        )
        .unwrap();
        assert_eq!(r.kind(), Kind::Udp);
        let r: ListenRequest =
            serde_json::from_str(r#"{"key":"k","address":"/x","port":-1,"addressType":-1}"#)
                .unwrap();
        assert_eq!(r.kind(), Kind::Unix);
        let r: ListenRequest =
            serde_json::from_str(r#"{"key":"k","address":"::1","port":0,"addressType":6}"#)
                .unwrap();
        assert_eq!(r.kind(), Kind::Tcp);
    }

    #[test]
    fn udp_binds_and_fd_duplicates() {
        let mut r = req(Some("127.0.0.1"), 0, 0);
        r.address_type = Some(AddressType::Str("udp4".into()));
        let fd = bind(&r).unwrap().fd;
        let name = sockname(&fd).unwrap();
        assert_eq!(name.family, "IPv4");
        assert!(name.port > 0);
        // The same port again without reuseAddr: in use.
        r.port = Some(name.port as i64);
        assert_eq!(bind(&r).err(), Some(-libc::EADDRINUSE));
        // A UDP socket of this process by fd number: duplicated, not taken.
        use std::os::fd::AsRawFd;
        let mut by_fd = req(None, 0, 0);
        by_fd.address_type = Some(AddressType::Str("udp4".into()));
        by_fd.fd = Some(fd.as_raw_fd() as i64);
        let dup = bind(&by_fd).unwrap().fd;
        assert_ne!(dup.as_raw_fd(), fd.as_raw_fd());
        assert_eq!(sockname(&dup).unwrap().port, name.port);
        // A datagram fd is not a stream listener.
        let mut stream_fd = req(None, 0, 0);
        stream_fd.address_type = None;
        stream_fd.port = None;
        stream_fd.fd = Some(fd.as_raw_fd() as i64);
        assert_eq!(bind(&stream_fd).err(), Some(-libc::EINVAL));
        stream_fd.fd = Some(1_000_000);
        assert_eq!(bind(&stream_fd).err(), Some(-libc::EBADF));
    }

    #[test]
    fn reuseport_group_shares_one_port_and_peer_ip() {
        let first = bind_reuseport(&req(Some("127.0.0.1"), 0, 4), None)
            .unwrap()
            .fd;
        let name = sockname(&first).unwrap();
        assert!(name.port > 0);
        let second = bind_reuseport(&req(Some("127.0.0.1"), 0, 4), Some(&name))
            .unwrap()
            .fd;
        assert_eq!(sockname(&second).unwrap(), name);
        // A plain (non-reuseport) bind of that port is refused.
        assert_eq!(
            bind(&req(Some("127.0.0.1"), name.port as i64, 4)).err(),
            Some(-libc::EADDRINUSE)
        );
        // Connections land on one of the two; the peer is the loopback.
        let _c = std::net::TcpStream::connect(("127.0.0.1", name.port)).unwrap();
        let mut got = None;
        for _ in 0..200 {
            got = accept(&first).unwrap().or(accept(&second).unwrap());
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let conn = got.expect("a connection on the group");
        assert_eq!(peer_ip(&conn), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(peer_ip(&first), None, "a listener has no peer");
        // Unix paths cannot form a group.
        assert_eq!(
            bind_reuseport(&req(Some("/tmp/x.sock"), -1, -1), None).err(),
            Some(-libc::EINVAL)
        );
    }

    #[test]
    fn udp6_and_mismatched_family() {
        let mut r = req(Some("::1"), 0, 0);
        r.address_type = Some(AddressType::Str("udp6".into()));
        let fd = bind(&r).unwrap().fd;
        assert_eq!(sockname(&fd).unwrap().family, "IPv6");
        r.address = Some("127.0.0.1".into());
        assert_eq!(bind(&r).err(), Some(-libc::EINVAL));
    }
}
