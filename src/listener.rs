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

use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};

/// `UV_TCP_IPV6ONLY`, as in Node's `flags`.
pub const FLAG_IPV6ONLY: u32 = 1;

/// Node's default backlog.
pub const DEFAULT_BACKLOG: i32 = 511;

/// A worker's request for a listening socket (JSON from the worker's JS).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenRequest {
    /// The listener key (Node's `address:port:addressType:fd:index`).
    pub key: String,
    /// IP address or unix path; `None` means any address.
    pub address: Option<String>,
    /// Port; negative for unix paths.
    #[serde(default)]
    pub port: i64,
    /// 4, 6 or -1 (unix path).
    #[serde(default)]
    pub address_type: i64,
    /// libuv bind flags.
    #[serde(default)]
    pub flags: u32,
    /// Requested backlog (Node passes odd values through; only numbers count).
    #[serde(default)]
    pub backlog: Option<serde_json::Value>,
    /// Scheduling: "rr" or "none".
    #[serde(default)]
    pub policy: Option<String>,
}

/// The bound address, as Node's `getsockname()` reports it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SockName {
    pub address: String,
    pub family: String,
    pub port: u16,
}

fn uv_err(e: &io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EINVAL)
}

fn tcp_socket(domain: Domain) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), None)?;
    s.set_reuse_address(true)?;
    Ok(s)
}

fn bind_listen(s: Socket, addr: &SockAddr, backlog: i32) -> io::Result<OwnedFd> {
    s.bind(addr)?;
    s.listen(backlog)?;
    // SAFETY: into_raw_fd hands over sole ownership of an open fd.
    Ok(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) })
}

/// Binds and listens as the request says. `Err` carries a negative errno.
pub fn bind(req: &ListenRequest) -> Result<OwnedFd, i32> {
    let backlog = req
        .backlog
        .as_ref()
        .and_then(|b| b.as_i64())
        .filter(|b| *b > 0)
        .map(|b| b.min(i32::MAX as i64) as i32)
        .unwrap_or(DEFAULT_BACKLOG);
    if req.address_type == -1 || req.port < 0 {
        let path = req.address.as_deref().ok_or(-libc::EINVAL)?;
        let addr = SockAddr::unix(path).map_err(|e| uv_err(&e))?;
        let s = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)
            .map_err(|e| uv_err(&e))?;
        return bind_listen(s, &addr, backlog).map_err(|e| uv_err(&e));
    }
    if !(0..=65535).contains(&req.port) {
        return Err(-libc::EINVAL);
    }
    let port = req.port as u16;
    match req.address.as_deref() {
        None | Some("") => {
            let any6 = SockAddr::from(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
            let v6 = tcp_socket(Domain::IPV6).and_then(|s| {
                s.set_only_v6(false)?;
                bind_listen(s, &any6, backlog)
            });
            match v6 {
                Ok(fd) => Ok(fd),
                Err(_) => {
                    let any4 =
                        SockAddr::from(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
                    tcp_socket(Domain::IPV4)
                        .and_then(|s| bind_listen(s, &any4, backlog))
                        .map_err(|e| uv_err(&e))
                }
            }
        }
        Some(a) => {
            let ip: IpAddr = a.parse().map_err(|_| -libc::EINVAL)?;
            let sa = SockAddr::from(SocketAddr::new(ip, port));
            let r = if ip.is_ipv6() {
                tcp_socket(Domain::IPV6).and_then(|s| {
                    s.set_only_v6(req.flags & FLAG_IPV6ONLY != 0)?;
                    bind_listen(s, &sa, backlog)
                })
            } else {
                tcp_socket(Domain::IPV4).and_then(|s| bind_listen(s, &sa, backlog))
            };
            r.map_err(|e| uv_err(&e))
        }
    }
}

/// The local address of a bound TCP socket; `None` for unix sockets.
pub fn sockname(fd: &OwnedFd) -> Option<SockName> {
    let s = socket2::SockRef::from(fd);
    let addr = s.local_addr().ok()?.as_socket()?;
    Some(SockName {
        address: addr.ip().to_string(),
        family: if addr.is_ipv6() { "IPv6" } else { "IPv4" }.to_string(),
        port: addr.port(),
    })
}

/// `accept4(SOCK_CLOEXEC)` on a listener. `Ok(None)` when nothing is waiting.
pub fn accept(fd: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: null address pointers are allowed by accept4(2).
        let r = unsafe {
            libc::accept4(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if r >= 0 {
            // SAFETY: a fresh fd that nobody else owns.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(r) }));
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
            port,
            address_type,
            flags: 0,
            backlog: None,
            policy: None,
        }
    }

    #[test]
    fn binds_loopback_port_zero_and_accepts() {
        let fd = bind(&req(Some("127.0.0.1"), 0, 4)).unwrap();
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
        let fd = bind(&req(Some("127.0.0.1"), 0, 4)).unwrap();
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
        let fd = bind(&req(None, 0, 4)).unwrap();
        assert!(sockname(&fd).unwrap().port > 0);
        let dir = std::env::temp_dir().join(format!("rcluster-l-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.sock");
        let _ = std::fs::remove_file(&p);
        let u = bind(&req(p.to_str(), -1, -1)).unwrap();
        assert!(sockname(&u).is_none());
        drop(u);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
