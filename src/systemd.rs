//! systemd integration: socket activation (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`) and readiness notification (`sd_notify` over
//! `NOTIFY_SOCKET`). Written from sd_listen_fds(3) and sd_notify(3).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use crate::sys;

/// First fd passed by socket activation (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// A listening socket inherited from the service manager.
#[derive(Debug)]
pub struct Inherited {
    pub fd: OwnedFd,
    pub addr: SocketAddr,
    /// Its name from `LISTEN_FDNAMES`, if any.
    pub name: Option<String>,
}

/// Takes over the sockets passed by socket activation, if `LISTEN_PID` names
/// this process: each becomes close-on-exec and owned. Only TCP listening
/// sockets are returned; others are left open and untouched.
///
/// `vars` gives (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`).
pub fn take_listen_fds(
    pid: u32,
    vars: (Option<&str>, Option<&str>, Option<&str>),
) -> Vec<Inherited> {
    let (listen_pid, listen_fds, names) = vars;
    if listen_pid.and_then(|p| p.parse::<u32>().ok()) != Some(pid) {
        return Vec::new();
    }
    let Some(n) = listen_fds.and_then(|n| n.parse::<i32>().ok()) else {
        return Vec::new();
    };
    let names: Vec<&str> = names.map(|s| s.split(':').collect()).unwrap_or_default();
    let mut out = Vec::new();
    for i in 0..n.clamp(0, 1024) {
        let fd = LISTEN_FDS_START + i;
        let Some(addr) = listening_tcp_addr(fd) else {
            continue;
        };
        let _ = sys::set_cloexec(fd, true);
        let _ = sys::set_nonblocking(fd, true);
        out.push(Inherited {
            // SAFETY: the service manager passed this fd to this process
            // (LISTEN_PID matched) and nothing else in it owns it; we take it once.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            addr,
            name: names.get(i as usize).map(|s| s.to_string()),
        });
    }
    out
}

/// The local address of `fd` if it is a listening TCP socket.
fn listening_tcp_addr(fd: RawFd) -> Option<SocketAddr> {
    if !crate::sys::is_listening(fd).unwrap_or(false) {
        return None;
    }
    // SAFETY: borrowing an fd that stays open for the duration of the call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&borrowed)
        .local_addr()
        .ok()?
        .as_socket()
}

/// Whether an inherited socket serves a request for `address:port`: same
/// port, and the same address unless either side is a wildcard.
pub fn matches(inherited: &SocketAddr, address: Option<&str>, port: u16) -> bool {
    if port == 0 || inherited.port() != port {
        return false;
    }
    let Some(a) = address.filter(|a| !a.is_empty()) else {
        return true;
    };
    let Ok(ip) = a.parse::<IpAddr>() else {
        return false;
    };
    ip.is_unspecified() || inherited.ip().is_unspecified() || ip == inherited.ip()
}

/// Sends `state` (e.g. `READY=1`) to the service manager if `NOTIFY_SOCKET`
/// is set; `Ok(false)` when it is not.
pub fn notify(socket: Option<&str>, state: &str) -> io::Result<bool> {
    let Some(path) = socket.filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    sys::set_cloexec(sock.as_raw_fd(), true)?;
    if let Some(abstract_name) = path.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = abstract_name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract unix socket names exist only on Linux",
            ));
        }
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_rules() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(matches(&any, None, 8080));
        assert!(matches(&any, Some("127.0.0.1"), 8080));
        assert!(matches(&lo, Some("127.0.0.1"), 8080));
        assert!(matches(&lo, None, 8080));
        assert!(!matches(&lo, Some("127.0.0.2"), 8080));
        assert!(!matches(&lo, Some("127.0.0.1"), 8081));
        assert!(!matches(&lo, None, 0));
    }

    #[test]
    fn not_for_another_pid() {
        assert!(take_listen_fds(1, (Some("2"), Some("1"), None)).is_empty());
        assert!(take_listen_fds(1, (None, Some("1"), None)).is_empty());
    }

    #[test]
    fn notify_reaches_a_socket_and_is_skipped_without_one() {
        let dir = std::env::temp_dir().join(format!("rcluster-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        assert!(notify(path.to_str(), "READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!notify(None, "READY=1").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
