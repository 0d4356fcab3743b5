#![cfg(target_os = "linux")]
//! The kernel side of the `rr` offload on real sockets: a group founded by
//! `listener::bind_group`, worker sockets joined with `bind_reuseport`, the
//! classic BPF programs steering real loopback connections, the accept queue
//! length, and the group's order after a socket stops listening (the order
//! the reactor mirrors).

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

/// The primary's socket and `n` worker sockets, in group order.
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
    offload::attach(&socks[0], &Program::Primary).expect("attach");
    assert_eq!(spread(&socks, &name, 60), vec![60, 0, 0]);
}

#[test]
fn spread_program_reaches_only_the_named_workers_by_weight() {
    let (socks, name) = group(3);
    offload::attach(&socks[0], &Program::Spread(vec![(1, 1), (3, 1)])).expect("attach");
    let c = spread(&socks, &name, 400);
    assert_eq!(c[0] + c[2], 0, "{c:?}");
    assert_eq!(c[1] + c[3], 400, "{c:?}");
    assert!(c[1] > 120 && c[3] > 120, "random halves: {c:?}");

    offload::attach(&socks[0], &Program::Spread(vec![(1, 3), (2, 1)])).expect("attach");
    let c = spread(&socks, &name, 400);
    assert_eq!(c[0] + c[3], 0, "{c:?}");
    assert!(c[1] > c[2] * 2, "weight 3 against 1: {c:?}");
}

#[test]
fn a_socket_that_stops_listening_is_replaced_by_the_last_one() {
    let (mut socks, name) = group(3);
    // [P, A, B, C]: A stops; the kernel moves C to index 1: [P, C, B].
    let a = socks.remove(1);
    offload::stop_listening(&a);
    let c_sock = socks.pop().expect("C");
    socks.insert(1, c_sock);
    offload::attach(&socks[0], &Program::Spread(vec![(1, 1)])).expect("attach");
    assert_eq!(spread(&socks, &name, 30), vec![0, 30, 0]);
    offload::attach(&socks[0], &Program::Spread(vec![(2, 1)])).expect("attach");
    assert_eq!(spread(&socks, &name, 30), vec![0, 0, 30]);
    // The stopped socket takes nothing and reports no queue.
    assert_eq!(listener::accept(&a).ok().flatten().map(|_| ()), None);
}

#[test]
fn queued_reads_the_accept_queue() {
    let (socks, name) = group(0);
    let addr: SocketAddr = format!("{}:{}", name.address, name.port).parse().unwrap();
    assert_eq!(offload::queued(&socks[0]), Some(0));
    let conns: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(offload::queued(&socks[0]), Some(5));
    while let Ok(Some(_)) = listener::accept(&socks[0]) {}
    assert_eq!(offload::queued(&socks[0]), Some(0));
    drop(conns);
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
