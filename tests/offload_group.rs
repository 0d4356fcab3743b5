#![cfg(target_os = "linux")]
//! The kernel side of the `rr` offload on real sockets: a group founded by
//! `listener::bind_group`, the shared socket joined with `bind_reuseport`,
//! and the classic BPF programs steering real loopback connections.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rcluster::listener::{self, ListenRequest, SockName};
use rcluster::offload::{self, Program};

fn request(port: i64) -> ListenRequest {
    serde_json::from_value(serde_json::json!({
        "key": "test",
        "address": "127.0.0.1",
        "port": port,
        "addressType": 4,
        "backlog": 512,
    }))
    .expect("request")
}

/// The primary's socket and `n` more members, in group order.
fn group(n: usize) -> (Vec<OwnedFd>, SockName) {
    let req = request(0);
    let first = listener::bind_group(&req).expect("bind_group").fd;
    let name = listener::sockname(&first).expect("sockname");
    let mut all = vec![first];
    for _ in 0..n {
        all.push(
            listener::bind_reuseport(&req, Some(&name))
                .expect("join group")
                .fd,
        );
    }
    (all, name)
}

/// Opens `n` connections (kept open until counted) and counts, per socket,
/// how many queued on it.
fn spread(socks: &[OwnedFd], name: &SockName, n: usize) -> Vec<usize> {
    let addr: SocketAddr = format!("{}:{}", name.address, name.port).parse().unwrap();
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let counts = socks
        .iter()
        .map(|s| {
            let mut k = 0;
            while let Ok(Some(_)) = listener::accept(s) {
                k += 1;
            }
            k
        })
        .collect();
    drop(conns);
    counts
}

#[test]
fn primary_program_queues_everything_on_the_primary() {
    let (socks, name) = group(2);
    offload::attach(&socks[0], Program::Primary).expect("attach");
    assert_eq!(spread(&socks, &name, 60), vec![60, 0, 0]);
}

#[test]
fn shared_program_queues_everything_on_the_shared_socket() {
    let (socks, name) = group(2);
    offload::attach(&socks[0], Program::Shared).expect("attach");
    assert_eq!(spread(&socks, &name, 60), vec![0, 60, 0]);
    offload::attach(&socks[0], Program::Primary).expect("attach");
    assert_eq!(spread(&socks, &name, 60), vec![60, 0, 0]);
}

#[test]
fn bind_group_refuses_a_port_held_even_by_a_reuseport_socket() {
    // Another program's SO_REUSEPORT socket on the port: a plain bind fails,
    // so an rr cluster reports EADDRINUSE instead of sharing the port.
    let other = listener::bind_reuseport(&request(0), None)
        .expect("other")
        .fd;
    let port = listener::sockname(&other).expect("sockname").port;
    assert_eq!(
        listener::bind_group(&request(port as i64)).err(),
        Some(-libc::EADDRINUSE)
    );
    // And a plain socket cannot take a port the group holds.
    let (socks, name) = group(1);
    assert_eq!(
        listener::bind(&request(name.port as i64)).err(),
        Some(-libc::EADDRINUSE)
    );
    drop(socks);
}
