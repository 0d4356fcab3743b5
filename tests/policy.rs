//! Dispatch policies end to end in the reactor, with test threads playing the
//! workers: `least` prefers the idle worker, `hash` is sticky by peer address
//! and only moves a removed worker's clients, the window keeps connections
//! away from a stuck worker under every primary-accepting policy while
//! weighted `rr` and `hash` wait for their worker's acks through a burst
//! larger than the window, and `reuseport` keeps the connections queued on
//! a slot's socket across a worker restart.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rcluster::frame::Kind;
use rcluster::policy;
use rcluster::reactor::Event;

mod support;
use support::{accept_n, reactor, wait_event, FakeWorker, Reply};

/// This file's spelling of the fake worker's calls.
trait PolicyWorker {
    fn listen(&mut self, key: &str, port: u16, policy: &str, extra: &str) -> Reply;
    /// Acknowledges `ids` as taken; `open` is the load report (`least`).
    fn ack(&self, ids: &[u64], open: Option<u32>);
}

impl PolicyWorker for FakeWorker {
    fn listen(&mut self, key: &str, port: u16, policy: &str, extra: &str) -> Reply {
        self.listen_with(key, port, &format!(r#","policy":"{policy}"{extra}"#))
    }

    fn ack(&self, ids: &[u64], open: Option<u32>) {
        let acks: Vec<(u64, bool)> = ids.iter().map(|i| (*i, true)).collect();
        self.send_acks(&acks, open);
    }
}

/// A client connection from source address 127.0.0.`host`.
fn connect_from(host: u8, port: u16) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0);
    s.bind(&src.into()).unwrap();
    s.connect(&SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port).into())
        .unwrap();
    s.into()
}

fn write_fd(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: writing from a valid buffer of `data.len()` bytes to a socket fd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr() as *const _, data.len()) };
    assert_eq!(n, data.len() as isize);
}

fn read_byte(c: &mut TcpStream) -> u8 {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    b[0]
}

#[test]
fn least_prefers_the_idle_worker() {
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let la = a.listen("least", 0, "least", "");
    assert_eq!(la.policy, "least");
    b.listen("least", la.port, "least", "");
    // A reports five open connections; B has none. Probe until the report
    // is in (a probe that lands on A is taken, and A still says five).
    a.ack(&[], Some(5));
    let mut probes = Vec::new();
    let first = loop {
        assert!(probes.len() < 20, "the idle worker never got a connection");
        probes.push(TcpStream::connect(("127.0.0.1", la.port)).unwrap());
        if let Some(c) = a.conns_for(30).pop() {
            a.ack(&[c.id], Some(5));
            continue;
        }
        if let Some(c) = b.conns_for(30).pop() {
            break c;
        }
    };
    b.ack(&[first.id], Some(1));
    // B's count grows with every connection it holds (unacknowledged ones
    // count too); it stays below A's five for three more connections.
    let _clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", la.port)).unwrap())
        .collect();
    let to_b = b.conns_for(300);
    assert_eq!(to_b.len(), 3, "the idle worker takes them");
    assert!(a.conns_for(50).is_empty(), "none for the busy one");
    // A's connections closed: its report brings it back.
    a.ack(&[], Some(0));
    let mut to_a = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(TcpStream::connect(("127.0.0.1", la.port)).unwrap());
        to_a.extend(a.conns_for(30));
        if !to_a.is_empty() {
            break;
        }
    }
    assert!(!to_a.is_empty(), "the now idle worker gets the next one");
}

#[test]
fn hash_is_sticky_by_peer_address_and_spreads_clients() {
    let (r, _rx) = reactor(64);
    let mut ws: Vec<FakeWorker> = (1..=3).map(|i| FakeWorker::start(&r, i, i)).collect();
    let l = ws[0].listen("hash", 0, "hash", "");
    assert_eq!(l.policy, "hash");
    for w in ws.iter_mut().skip(1) {
        w.listen("hash", l.port, "hash", "");
    }
    // Which worker (by index) served each source address.
    let mut owner = std::collections::HashMap::new();
    let mut clients = Vec::new();
    for round in 0..2 {
        for host in 2..=31u8 {
            clients.push(connect_from(host, l.port));
            let mut got = None;
            for _ in 0..250 {
                for (i, w) in ws.iter_mut().enumerate() {
                    if let Some(c) = w.conns_for(2).pop() {
                        w.ack(&[c.id], None);
                        got = Some(i);
                    }
                }
                if got.is_some() {
                    break;
                }
            }
            let i = got.expect("connection dispatched");
            if round == 0 {
                owner.insert(host, i);
            } else {
                assert_eq!(owner[&host], i, "127.0.0.{host} moved to another worker");
            }
            // It is the rendezvous choice over the slots.
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, host));
            let want = policy::pick_hash(
                3,
                policy::hash_ip(ip),
                |p| p as u32 + 1,
                |p| {
                    Some(policy::Slot {
                        slot: p as u32 + 1,
                        open: 0,
                    })
                },
            );
            assert_eq!(Some(i), want);
        }
    }
    for i in 0..3 {
        assert!(
            owner.values().any(|o| *o == i),
            "worker {i} got no client: {owner:?}"
        );
    }
}

#[test]
fn hash_moves_only_the_clients_of_a_removed_worker() {
    let (r, rx) = reactor(64);
    let mut ws: Vec<FakeWorker> = (1..=3).map(|i| FakeWorker::start(&r, i, i)).collect();
    let l = ws[0].listen("hash-rm", 0, "hash", "");
    for w in ws.iter_mut().skip(1) {
        w.listen("hash-rm", l.port, "hash", "");
    }
    // Worker 3 leaves.
    ws[2].kill();
    wait_event(&rx, |e| matches!(e, Event::Exit { worker: 3, .. }));
    let mut clients = Vec::new();
    for host in 2..=41u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, host));
        let key = policy::hash_ip(ip);
        let all = |p: usize| {
            Some(policy::Slot {
                slot: p as u32 + 1,
                open: 0,
            })
        };
        let before = policy::pick_hash(3, key, |p| p as u32 + 1, all).unwrap();
        clients.push(connect_from(host, l.port));
        let mut got = None;
        for _ in 0..250 {
            for (i, w) in ws.iter_mut().take(2).enumerate() {
                if let Some(c) = w.conns_for(2).pop() {
                    w.ack(&[c.id], None);
                    got = Some(i);
                }
            }
            if got.is_some() {
                break;
            }
        }
        let i = got.expect("connection dispatched");
        if before != 2 {
            assert_eq!(i, before, "a client of a remaining worker moved");
        }
    }
}

/// Under `rr`, `least` and `hash` a worker that never acknowledges (a stuck
/// event loop) gets its window and nothing more; the others get the rest, and
/// no connection waits for the stuck one.
#[test]
fn the_window_keeps_connections_away_from_a_stuck_worker() {
    for pol in ["rr", "least", "hash"] {
        let (r, _rx) = reactor(2);
        let mut stuck = FakeWorker::start(&r, 1, 1);
        let mut ok = FakeWorker::start(&r, 2, 2);
        let key = format!("stuck-{pol}");
        let l = stuck.listen(&key, 0, pol, "");
        ok.listen(&key, l.port, pol, "");
        let total = 12;
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..total {
            // One source address for `hash`: every one of them wants the same
            // worker, which is the stuck one at least once its window is full.
            clients.push(TcpStream::connect(("127.0.0.1", l.port)).unwrap());
        }
        let end = Instant::now() + Duration::from_secs(10);
        let mut to_stuck = Vec::new();
        while served.len() + to_stuck.len() < total && Instant::now() < end {
            let got = ok.conns_for(20);
            ok.ack(&got.iter().map(|c| c.id).collect::<Vec<_>>(), Some(0));
            served.extend(got);
            to_stuck.extend(stuck.conns_for(5));
        }
        to_stuck.extend(stuck.conns_for(100));
        assert!(
            to_stuck.len() <= 2,
            "{pol}: the stuck worker got {}",
            to_stuck.len()
        );
        assert_eq!(
            served.len() + to_stuck.len(),
            total,
            "{pol}: every connection went somewhere"
        );
    }
}

/// Which of two workers (slots 1 and 2) `hash` picks for 127.0.0.1.
fn localhost_home() -> usize {
    let key = policy::hash_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let all = |p: usize| {
        Some(policy::Slot {
            slot: p as u32 + 1,
            open: 0,
        })
    };
    policy::pick_hash(2, key, |p| p as u32 + 1, all).unwrap()
}

/// `n` client connections to 127.0.0.1:`port`, opened at once.
fn connect_n(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect()
}

/// Serves workers `ws` (acking every connection as it arrives) until `total`
/// connections were handed out or 10 s passed; returns how many each got.
fn serve_acking(ws: &mut [&mut FakeWorker], total: usize) -> Vec<usize> {
    let mut got = vec![0; ws.len()];
    let end = Instant::now() + Duration::from_secs(10);
    while got.iter().sum::<usize>() < total && Instant::now() < end {
        for (i, w) in ws.iter_mut().enumerate() {
            let conns = w.conns_for(5);
            w.ack(&conns.iter().map(|c| c.id).collect::<Vec<_>>(), None);
            got[i] += conns.len();
        }
    }
    got
}

/// A reactor with a window of 2 and `patience`.
fn small_window(
    patience: Duration,
) -> (
    rcluster::reactor::Reactor,
    crossbeam_channel::Receiver<Event>,
) {
    support::reactor_with(rcluster::reactor::Config {
        window: 2,
        patience,
        offload: false,
        ..rcluster::reactor::Config::default()
    })
}

/// Weighted `rr` keeps its weights through a burst larger than the window:
/// the worker whose turn it is, full but acking, is waited for instead of
/// being passed over (weights 3:1 give 3 of every 4 connections to A).
#[test]
fn weighted_rr_keeps_its_weights_through_a_burst_larger_than_the_window() {
    let (r, _rx) = small_window(Duration::from_secs(2));
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let l = a.listen("weighted-burst", 0, "rr", "");
    b.listen("weighted-burst", l.port, "rr", "");
    r.set_weight(1, 3);
    r.counters().expect("the reactor answers"); // commands run in order: the weight is in
    let total = 16;
    let _clients = connect_n(l.port, total);
    let got = serve_acking(&mut [&mut a, &mut b], total);
    assert_eq!(got, vec![12, 4], "3:1 over 16 connections, window 2");
}

/// ...but not behind a worker that stopped acknowledging: once its window
/// has been full for the patience, its turns go to the others.
#[test]
fn weighted_rr_passes_a_stuck_worker_after_the_patience() {
    let (r, _rx) = small_window(Duration::from_millis(50));
    let mut stuck = FakeWorker::start(&r, 1, 1);
    let mut ok = FakeWorker::start(&r, 2, 2);
    let l = stuck.listen("weighted-stuck", 0, "rr", "");
    ok.listen("weighted-stuck", l.port, "rr", "");
    r.set_weight(1, 3);
    r.counters().expect("the reactor answers");
    let total = 10;
    let _clients = connect_n(l.port, total);
    let served = serve_acking(&mut [&mut ok], total - 2);
    let to_stuck = stuck.conns_for(100).len();
    assert_eq!(to_stuck, 2, "the stuck worker holds its window");
    assert_eq!(served, vec![total - 2], "the rest went to the other worker");
}

/// `hash` stays sticky through a burst from one client larger than the
/// window, while its worker acknowledges within the patience.
#[test]
fn hash_stays_sticky_through_a_burst_larger_than_the_window() {
    let (r, _rx) = small_window(Duration::from_secs(2));
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let l = a.listen("hash-burst", 0, "hash", "");
    b.listen("hash-burst", l.port, "hash", "");
    let home = localhost_home();
    let total = 12;
    let _clients = connect_n(l.port, total);
    let got = serve_acking(&mut [&mut a, &mut b], total);
    let mut want = vec![0, 0];
    want[home] = total;
    assert_eq!(
        got, want,
        "every connection of the one client on its worker"
    );
}

/// `hash` stays sticky while the worker has room, and overflows to the next
/// choice when its window stays full past the patience.
#[test]
fn hash_overflows_past_a_full_window() {
    let (r, _rx) = reactor(2);
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let l = a.listen("hash-full", 0, "hash", "");
    b.listen("hash-full", l.port, "hash", "");
    let home = localhost_home();
    let (home, other) = if home == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let _clients = connect_n(l.port, 3);
    let at_home = home.conns_for(300);
    assert_eq!(at_home.len(), 2, "sticky up to the window");
    assert_eq!(
        other.conns_for(300).len(),
        1,
        "the overflow goes to the next choice"
    );
}

/// `reuseport`: each slot gets its own socket on the same port; when a
/// worker dies, its slot's socket stays open in the primary and the
/// connections queued on it wait for the replacement in that slot.
#[test]
fn reuseport_keeps_queued_connections_across_a_worker_restart() {
    let (r, rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let la = a.listen("rp", 0, "reuseport", r#","reusePortHold":30000"#);
    assert_eq!(la.policy, "reuseport");
    let fd_a = la.fd.expect("the slot's socket is passed");
    // Serve one connection, as the worker would.
    let mut c0 = TcpStream::connect(("127.0.0.1", la.port)).unwrap();
    let s0 = accept_n(&fd_a, 1);
    assert_eq!(s0.len(), 1);
    write_fd(&s0[0], b"a");
    assert_eq!(read_byte(&mut c0), b'a');
    // The worker dies (its copy of the socket closes with it).
    drop(fd_a);
    a.kill();
    wait_event(&rx, |e| matches!(e, Event::Exit { worker: 1, .. }));
    // Connections made meanwhile queue on the slot's socket: not refused.
    let mut waiting: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", la.port)).expect("queued, not refused"))
        .collect();
    // The replacement (new id, same slot) takes the socket over, with them.
    let mut c = FakeWorker::start(&r, 3, 1);
    let lc = c.listen("rp", la.port, "reuseport", "");
    assert_eq!(lc.lid, la.lid);
    assert_eq!(lc.port, la.port);
    let fd_c = lc.fd.expect("the slot's socket again");
    let queued = accept_n(&fd_c, 5);
    assert_eq!(queued.len(), 5, "every queued connection is served");
    for s in &queued {
        write_fd(s, b"c");
    }
    for w in waiting.iter_mut() {
        assert_eq!(read_byte(w), b'c');
        let _ = w.write_all(b"x");
    }
}

/// `reuseport`: two slots, two sockets, one port, both used by the kernel;
/// a worker that closes its server on purpose releases its slot at once and
/// what queued on it is handed to the other worker, not reset.
#[test]
fn reuseport_spreads_over_slots_and_hands_over_a_closed_slots_queue() {
    let (r, _rx) = reactor(64);
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let la = a.listen("rp2", 0, "reuseport", "");
    let lb = b.listen("rp2", la.port, "reuseport", "");
    assert_eq!(lb.port, la.port);
    let fd_a = la.fd.unwrap();
    let fd_b = lb.fd.unwrap();
    let n = 40;
    let mut clients: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", la.port)).unwrap())
        .collect();
    // Nobody accepted yet. A leaves on purpose (closes its server).
    drop(fd_a);
    a.ch.send_frame(Kind::CloseListen, 0, 0, &la.lid.to_le_bytes(), None)
        .unwrap();
    // B accepts on its own socket; A's queue reaches B as connections.
    let handed = b.conns_for(500);
    b.ack(&handed.iter().map(|c| c.id).collect::<Vec<_>>(), None);
    let direct = accept_n(&fd_b, n - handed.len());
    assert!(!handed.is_empty(), "the kernel used A's slot too");
    assert!(!direct.is_empty(), "and B's");
    assert_eq!(handed.len() + direct.len(), n, "nothing was reset");
    for s in handed
        .iter()
        .map(|c| c.fd.as_ref().unwrap())
        .chain(direct.iter())
    {
        write_fd(s, b"b");
    }
    for c in clients.iter_mut() {
        assert_eq!(read_byte(c), b'b');
    }
}
