//! The reactor end to end, with test threads playing the workers: listen
//! requests, round-robin dispatch, the window of unacknowledged connections,
//! and re-dispatch of connections a dead worker never acknowledged.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rcluster::frame::{self, Kind};
use rcluster::reactor::Event;
use rcluster::spawn;

mod support;
use support::{reactor, wait_event, FakeWorker};

/// `(listener id, port)` of a new or joined listener.
fn listen(w: &mut FakeWorker, key: &str, port: u16) -> (u32, u16) {
    let r = w.listen_with(key, port, "");
    (r.lid, r.port)
}

#[test]
fn round_robin_between_two_workers() {
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let (lid, port) = listen(&mut a, "rr", 0);
    let (lid_b, _) = listen(&mut b, "rr", port);
    assert_eq!(lid, lid_b, "one listener per key");
    let clients: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let ca = a.conns_for(300);
    let cb = b.conns_for(300);
    assert_eq!(ca.len() + cb.len(), 10);
    assert!(
        ca.len() >= 4 && cb.len() >= 4,
        "{} / {}",
        ca.len(),
        cb.len()
    );
    for c in ca.iter().chain(cb.iter()) {
        assert_eq!(frame::decode_u32(Kind::Conn, &c.payload).unwrap(), lid);
        assert!(c.fd.is_some());
    }
    drop(clients);
    spawn::signal(&a.process, libc::SIGKILL).unwrap();
    spawn::signal(&b.process, libc::SIGKILL).unwrap();
}

#[test]
fn window_keeps_connections_away_from_a_worker_that_does_not_ack() {
    let (r, _rx) = reactor(2);
    let mut a = FakeWorker::start(&r, 1, 1);
    let (_, port) = listen(&mut a, "win", 0);
    let _clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let first = a.conns_for(300);
    assert_eq!(first.len(), 2, "only the window is handed out");
    a.ack_taken(&first.iter().map(|c| c.id).collect::<Vec<_>>());
    let second = a.conns_for(300);
    assert_eq!(second.len(), 2, "acks open the window again");
    spawn::signal(&a.process, libc::SIGKILL).unwrap();
}

#[test]
fn unacknowledged_connections_of_a_dead_worker_go_to_another() {
    let (r, rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let (_, port) = listen(&mut a, "redispatch", 0);
    let mut clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let held = a.conns_for(300);
    assert_eq!(held.len(), 5);
    drop(held); // the worker never takes them: its copies close, the primary's stay
    let mut b = FakeWorker::start(&r, 2, 2);
    listen(&mut b, "redispatch", port);
    spawn::signal(&a.process, libc::SIGKILL).unwrap();
    // Disconnect comes before exit, and exit carries the signal.
    wait_event(&rx, |e| matches!(e, Event::Disconnect { worker: 1 }));
    match wait_event(&rx, |e| matches!(e, Event::Exit { worker: 1, .. })) {
        Event::Exit { signal, code, .. } => {
            assert_eq!(signal, Some(libc::SIGKILL));
            assert_eq!(code, None);
        }
        _ => unreachable!(),
    }
    let got = b.conns_for(500);
    assert_eq!(
        got.len(),
        5,
        "every unacknowledged connection is re-dispatched"
    );
    // They are the very same connections: write through them, clients read it.
    for c in &got {
        let fd = c.fd.as_ref().unwrap();
        // SAFETY: writing 2 bytes from a valid buffer to a socket fd we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"hi".as_ptr() as *const _, 2) };
        assert_eq!(n, 2);
    }
    drop(got);
    for c in clients.iter_mut() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        let _ = c.write_all(b"x");
    }
    spawn::signal(&b.process, libc::SIGKILL).unwrap();
}

#[test]
fn listener_closes_when_its_last_worker_leaves() {
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let (lid, port) = listen(&mut a, "close", 0);
    a.ch.send_frame(Kind::CloseListen, 0, 0, &lid.to_le_bytes(), None)
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut freed = false;
    while Instant::now() < end {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            freed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(freed, "the port is free once no worker listens");
    spawn::signal(&a.process, libc::SIGKILL).unwrap();
}

#[test]
fn a_lying_frame_closes_only_that_worker() {
    let (r, rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let (_, port) = listen(&mut b, "liar", 0);
    // A Conn frame may not come from a worker.
    rcluster::sys::send_packet(
        a.ch.as_raw_fd(),
        &[std::io::IoSlice::new(&frame::encode(
            Kind::Ack,
            0,
            0,
            1,
            &[1, 2, 3],
        ))],
        None,
    )
    .unwrap();
    match wait_event(&rx, |e| matches!(e, Event::Error { worker: 1, .. })) {
        Event::Error { message, .. } => assert!(message.contains("Ack"), "{message}"),
        _ => unreachable!(),
    }
    wait_event(&rx, |e| matches!(e, Event::Disconnect { worker: 1 }));
    assert!(a.next().is_none(), "the liar's channel is closed");
    let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(b.conns_for(300).len(), 1, "the other worker keeps serving");
    spawn::signal(&a.process, libc::SIGKILL).unwrap();
    spawn::signal(&b.process, libc::SIGKILL).unwrap();
}
