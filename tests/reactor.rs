//! The reactor end to end, with test threads playing the workers: listen
//! requests, round-robin dispatch, the window of unacknowledged connections,
//! and re-dispatch of connections a dead worker never acknowledged.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rcluster::channel::{Channel, Inbox, Incoming, Read};
use rcluster::frame::{self, Kind};
use rcluster::reactor::{Config, Event, Reactor};
use rcluster::spawn::{self, SpawnOptions, Stdio};

struct FakeWorker {
    ch: Channel,
    inbox: Inbox,
    pidfd: Arc<OwnedFd>,
}

impl FakeWorker {
    /// A real process (for the pidfd) whose channel end this test holds.
    fn start(reactor: &Reactor, id: u32) -> FakeWorker {
        let (primary, theirs) = Channel::pair().unwrap();
        let opts = SpawnOptions {
            file: "/bin/sleep".into(),
            argv: vec!["sleep".into(), "30".into()],
            stdio: vec![Stdio::Ignore, Stdio::Ignore, Stdio::Ignore],
            ..Default::default()
        };
        let s = spawn::spawn(&opts, None).unwrap();
        let pidfd = Arc::new(s.pidfd);
        reactor.add_worker(id, id, Arc::new(primary), pidfd.clone());
        FakeWorker {
            ch: Channel::new(theirs).unwrap(),
            inbox: Inbox::default(),
            pidfd,
        }
    }

    fn next(&mut self) -> Option<Incoming> {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            match self.inbox.read(&self.ch).unwrap() {
                Read::Frame(f) => return Some(f),
                Read::Partial => continue,
                Read::Empty => std::thread::sleep(Duration::from_millis(2)),
                Read::Eof => return None,
            }
        }
        None
    }

    /// Reads frames for `ms` and returns the connections among them.
    fn conns_for(&mut self, ms: u64) -> Vec<Incoming> {
        let end = Instant::now() + Duration::from_millis(ms);
        let mut out = Vec::new();
        while Instant::now() < end {
            match self.inbox.read(&self.ch).unwrap() {
                Read::Frame(f) if f.kind == Kind::Conn => out.push(f),
                Read::Frame(_) | Read::Partial => {}
                Read::Empty => std::thread::sleep(Duration::from_millis(2)),
                Read::Eof => break,
            }
        }
        out
    }

    fn listen(&mut self, key: &str, port: u16) -> (u32, u16) {
        let req = format!(
            r#"{{"key":"{key}","address":"127.0.0.1","port":{port},"addressType":4,"flags":0}}"#
        );
        self.ch
            .send_frame(Kind::ListenRequest, 0, 7, req.as_bytes(), None)
            .unwrap();
        let reply = self.next().expect("listen reply");
        assert_eq!(reply.kind, Kind::ListenReply);
        assert_eq!(reply.id, 7);
        let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(v["errno"], 0, "{v}");
        (
            v["key"].as_u64().unwrap() as u32,
            v["sockname"]["port"].as_u64().unwrap() as u16,
        )
    }

    fn ack(&self, ids: &[u64]) {
        let acks: Vec<(u64, bool)> = ids.iter().map(|i| (*i, true)).collect();
        self.ch
            .send_frame(Kind::Ack, 0, 0, &frame::encode_acks(&acks), None)
            .unwrap();
    }
}

fn reactor(window: usize) -> (Reactor, Receiver<Event>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let r = Reactor::start(
        Box::new(move |batch| {
            for e in batch {
                let _ = tx.send(e);
            }
        }),
        Config { window },
    )
    .unwrap();
    (r, rx)
}

fn wait_event(rx: &Receiver<Event>, pred: impl Fn(&Event) -> bool) -> Event {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if pred(&e) => return e,
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                panic!("event not seen")
            }
        }
    }
}

#[test]
fn round_robin_between_two_workers() {
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1);
    let mut b = FakeWorker::start(&r, 2);
    let (lid, port) = a.listen("rr", 0);
    let (lid_b, _) = b.listen("rr", port);
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
    spawn::signal(&a.pidfd, libc::SIGKILL).unwrap();
    spawn::signal(&b.pidfd, libc::SIGKILL).unwrap();
}

#[test]
fn window_keeps_connections_away_from_a_worker_that_does_not_ack() {
    let (r, _rx) = reactor(2);
    let mut a = FakeWorker::start(&r, 1);
    let (_, port) = a.listen("win", 0);
    let _clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let first = a.conns_for(300);
    assert_eq!(first.len(), 2, "only the window is handed out");
    a.ack(&first.iter().map(|c| c.id).collect::<Vec<_>>());
    let second = a.conns_for(300);
    assert_eq!(second.len(), 2, "acks open the window again");
    spawn::signal(&a.pidfd, libc::SIGKILL).unwrap();
}

#[test]
fn unacknowledged_connections_of_a_dead_worker_go_to_another() {
    let (r, rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1);
    let (_, port) = a.listen("redispatch", 0);
    let mut clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let held = a.conns_for(300);
    assert_eq!(held.len(), 5);
    drop(held); // the worker never takes them: its copies close, the primary's stay
    let mut b = FakeWorker::start(&r, 2);
    b.listen("redispatch", port);
    spawn::signal(&a.pidfd, libc::SIGKILL).unwrap();
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
    spawn::signal(&b.pidfd, libc::SIGKILL).unwrap();
}

#[test]
fn listener_closes_when_its_last_worker_leaves() {
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1);
    let (lid, port) = a.listen("close", 0);
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
    spawn::signal(&a.pidfd, libc::SIGKILL).unwrap();
}

#[test]
fn a_lying_frame_closes_only_that_worker() {
    let (r, rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1);
    let mut b = FakeWorker::start(&r, 2);
    let (_, port) = b.listen("liar", 0);
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
    spawn::signal(&a.pidfd, libc::SIGKILL).unwrap();
    spawn::signal(&b.pidfd, libc::SIGKILL).unwrap();
}
