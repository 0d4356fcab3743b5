//! Hostile or broken workers against the real reactor, with test threads
//! playing the workers: 253 fds in one frame, lying and garbage frames, a
//! message flood, a worker that never acknowledges, and one that refuses
//! everything. Each case closes only the offender's channel (with an error
//! event), keeps the other worker serving, and shows in the dispatcher's
//! counters that no connection was lost.
//!
//! The fd-counting test needs the process to itself: every test takes `LOCK`.

use std::io::IoSlice;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rcluster::channel::Incoming;
use rcluster::frame::HEADER_LEN;
use rcluster::reactor::{Config, Counters, Event, Reactor};
use rcluster::sys;

mod support;
use support::{reactor, wait_event, FakeWorker};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// This file's spelling of the fake worker's calls.
trait HostileWorker {
    /// The port of a new or joined listener.
    fn listen(&mut self, key: &str, port: u16) -> u16;
    fn ack(&self, conns: &[Incoming], accepted: bool);
    /// Hands `fd` back for listener `lid` (`acknowledged`: it came from the primary).
    fn hand_back(&self, lid: u32, acknowledged: bool, fd: Option<OwnedFd>);
}

impl HostileWorker for FakeWorker {
    fn listen(&mut self, key: &str, port: u16) -> u16 {
        self.listen_with(key, port, "").port
    }

    fn ack(&self, conns: &[Incoming], accepted: bool) {
        let acks: Vec<(u64, bool)> = conns.iter().map(|c| (c.id, accepted)).collect();
        self.send_acks(&acks, None);
    }

    fn hand_back(&self, lid: u32, acknowledged: bool, fd: Option<OwnedFd>) {
        self.ch
            .send_frame(
                rcluster::frame::Kind::HandBack,
                0,
                u64::from(acknowledged),
                &lid.to_le_bytes(),
                fd,
            )
            .unwrap();
    }
}

fn error_of(rx: &Receiver<Event>, id: u32) -> String {
    match wait_event(
        rx,
        |e| matches!(e, Event::Error { worker, .. } if *worker == id),
    ) {
        Event::Error { message, .. } => message,
        _ => unreachable!(),
    }
}

/// Counters once nothing is held any more.
fn settled(r: &Reactor) -> Counters {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let c = r.counters().expect("reactor answers");
        if c.held == 0 || Instant::now() > end {
            return c;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends one packet with `fds` attached (any number: SCM_MAX_FD is the
/// kernel's limit, 253).
fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let data_len = std::mem::size_of_val(fds);
    // SAFETY: pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
    // u64 words keep the buffer aligned for cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let iov = [IoSlice::new(bytes)];
    // SAFETY: msghdr is plain old data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is `space` bytes, room for one cmsghdr with
    // `data_len` bytes of fds; CMSG_FIRSTHDR points into it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), data_len);
    }
    // SAFETY: `msg` points at `iov` and `cbuf`, both alive for the call.
    let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[test]
fn bad_frames_close_only_the_offender_and_leak_no_fd() {
    let _g = lock();
    let (r, rx) = reactor(16);
    let mut b = FakeWorker::start(&r, 1, 1);
    let port = b.listen("hostile", 0);
    let before = sys::count_open_fds();
    let header = |kind: u8, nfds: u16, len: u32| {
        let mut h = vec![0u8; HEADER_LEN];
        h[0] = kind;
        h[2..4].copy_from_slice(&nfds.to_le_bytes());
        h[4..8].copy_from_slice(&len.to_le_bytes());
        h
    };
    let mut huge = header(2, 0, u32::MAX);
    huge.extend_from_slice(b"{\"x\":1}");
    let mut garbage: Vec<u8> = (0..200u32).map(|i| (i * 131 + 7) as u8).collect();
    garbage[0] = 0xee;
    let mut cases: Vec<(&str, Vec<u8>, usize, &str)> = vec![
        ("huge length", huge, 0, "frame length lies"),
        ("garbage", garbage, 0, "unknown frame kind 238"),
        ("1 fd on a kind that takes none", header(1, 1, 0), 1, "fds"),
    ];
    // SCM_MAX_FD (253) and the EINVAL above it are Linux's limits.
    if cfg!(target_os = "linux") {
        cases.push(("253 fds", header(2, 253, 0), 253, "truncated"));
    }
    let mut served = 0;
    for (i, (name, bytes, nfds, expect)) in cases.into_iter().enumerate() {
        let id = 10 + i as u32;
        let a = FakeWorker::start(&r, id, id);
        let nulls: Vec<OwnedFd> = (0..nfds)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        let raw: Vec<RawFd> = nulls.iter().map(|f| f.as_raw_fd()).collect();
        if nfds == 0 {
            sys::send_packet(a.ch.as_raw_fd(), &[IoSlice::new(&bytes)], None).unwrap();
        } else {
            // 1,000 would be refused here by the kernel (EINVAL above SCM_MAX_FD).
            assert!(send_with_fds(a.ch.as_raw_fd(), &bytes, &vec![raw[0]; 1000]).is_err());
            send_with_fds(a.ch.as_raw_fd(), &bytes, &raw).unwrap();
        }
        drop(nulls);
        let message = error_of(&rx, id);
        assert!(message.contains(expect), "{name}: {message}");
        assert!(message.starts_with(&format!("worker {id}: ")), "{message}");
        wait_event(
            &rx,
            |e| matches!(e, Event::Disconnect { worker } if *worker == id),
        );
        // The other worker keeps serving.
        let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let conns = b.conns_for(200);
        assert_eq!(conns.len(), 1, "{name}: the other worker keeps serving");
        b.ack(&conns, true);
        served += 1;
        a.kill();
        wait_event(
            &rx,
            |e| matches!(e, Event::Exit { worker, .. } if *worker == id),
        );
        drop(a);
    }
    let c = settled(&r);
    assert_eq!((c.accepted, c.acknowledged, c.closed), (served, served, 0));
    assert_eq!(
        sys::count_open_fds(),
        before,
        "every fd of the offenders is closed"
    );
    b.kill();
}

#[test]
fn a_worker_that_never_acks_holds_a_window_and_loses_nothing() {
    let _g = lock();
    let (r, rx) = reactor(4);
    let mut stuck = FakeWorker::start(&r, 1, 1);
    let mut good = FakeWorker::start(&r, 2, 2);
    let port = stuck.listen("stuck", 0);
    good.listen("stuck", port);
    let clients: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut got = 0;
    let mut held = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got + held.len() < 20 && Instant::now() < end {
        let conns = good.conns_for(30);
        good.ack(&conns, true);
        got += conns.len();
        held.extend(stuck.conns_for(30));
    }
    assert!(held.len() <= 4, "at most a window: {}", held.len());
    assert_eq!(got + held.len(), 20);
    // Its process dies: the connections it never acknowledged go to the other.
    stuck.kill();
    wait_event(&rx, |e| matches!(e, Event::Exit { worker: 1, .. }));
    while got < 20 && Instant::now() < end + Duration::from_secs(5) {
        let conns = good.conns_for(50);
        good.ack(&conns, true);
        got += conns.len();
    }
    assert_eq!(got, 20);
    let c = settled(&r);
    assert_eq!(c.accepted, 20);
    assert_eq!(c.acknowledged, 20);
    assert_eq!(c.redispatched, held.len() as u64);
    assert_eq!((c.closed, c.held), (0, 0));
    drop(clients);
    good.kill();
}

#[test]
fn refused_by_every_worker_is_closed_and_counted() {
    let _g = lock();
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let port = a.listen("refuse", 0);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let conns = a.conns_for(200);
    assert_eq!(conns.len(), 1);
    a.ack(&conns, false);
    let c = settled(&r);
    assert_eq!((c.accepted, c.acknowledged, c.closed, c.held), (1, 0, 1, 0));
    // The client sees the connection closed.
    use std::io::Read as _;
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).unwrap_or(0), 0);
    a.kill();
}

#[test]
fn a_refused_connection_goes_only_to_workers_that_did_not_refuse_it() {
    let _g = lock();
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let mut c = FakeWorker::start(&r, 3, 3);
    let port = a.listen("refusers", 0);
    b.listen("refusers", port);
    c.listen("refusers", port);
    let _clients: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Two workers at their maxConnections refuse whatever they get; the
    // third takes everything, however the refusals interleave. Each
    // connection is offered to each refusing worker at most once.
    let (mut refused_a, mut refused_b, mut taken) = (Vec::new(), Vec::new(), 0);
    let end = Instant::now() + Duration::from_secs(10);
    while taken < 6 && Instant::now() < end {
        let conns = a.conns_for(10);
        a.ack(&conns, false);
        refused_a.extend(conns.iter().map(|c| c.id));
        let conns = b.conns_for(10);
        b.ack(&conns, false);
        refused_b.extend(conns.iter().map(|c| c.id));
        let conns = c.conns_for(10);
        c.ack(&conns, true);
        taken += conns.len();
    }
    assert_eq!(taken, 6);
    let k = settled(&r);
    assert_eq!((k.accepted, k.acknowledged, k.closed, k.held), (6, 6, 0, 0));
    assert!(refused_a.len() <= 6 && refused_b.len() <= 6);
    assert_eq!(
        k.redispatched as usize,
        refused_a.len() + refused_b.len(),
        "every refusal is one more offer, to another worker"
    );
    for w in [&a, &b, &c] {
        w.kill();
    }
}

#[test]
fn a_message_flood_is_delivered_whole_and_in_order() {
    let _g = lock();
    let (r, rx) = reactor(16);
    let a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let port = b.listen("flood", 0);
    const N: u32 = 20_000;
    let flooder = std::thread::spawn(move || {
        for i in 0..N {
            // The queue absorbs what the socket cannot take now.
            a.ch.send_message(0, i.to_le_bytes().repeat(64), None)
                .unwrap();
            if i % 256 == 0 {
                let _ = a.ch.flush();
            }
        }
        while a.ch.flush().unwrap() == rcluster::channel::Flush::Pending {
            std::thread::sleep(Duration::from_millis(1));
        }
        a
    });
    // Meanwhile the other worker is served.
    let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let conns = b.conns_for(300);
    assert_eq!(conns.len(), 1);
    b.ack(&conns, true);
    let mut next = 0u32;
    while next < N {
        match wait_event(&rx, |e| matches!(e, Event::Message { worker: 1, .. })) {
            Event::Message { data, .. } => {
                assert_eq!(data, next.to_le_bytes().repeat(64), "message {next}");
                next += 1;
            }
            _ => unreachable!(),
        }
    }
    let a = flooder.join().unwrap();
    a.kill();
    b.kill();
    let c = settled(&r);
    assert_eq!((c.accepted, c.acknowledged), (1, 1));
}

#[test]
fn a_worker_flooding_faster_than_js_takes_is_paused_then_resumed() {
    let _g = lock();
    let (tx, rx) = crossbeam_channel::unbounded();
    let registry = Arc::new(rcluster::reactor::Registry::default());
    registry.backlog.set_limit(64 * 1024);
    // This sink never reports messages taken: the test does, by hand.
    let r = Reactor::start_with(
        Box::new(move |batch| {
            for e in batch {
                let _ = tx.send(e);
            }
        }),
        Config {
            window: 16,
            offload: false,
            ..Config::default()
        },
        registry.clone(),
    )
    .unwrap();
    let a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let port = b.listen("paused", 0);
    const N: u32 = 1000;
    for i in 0..N {
        a.ch.send_message(0, i.to_le_bytes().repeat(256), None)
            .unwrap();
    }
    let mut got = 0u32;
    let mut warned = false;
    let end = Instant::now() + Duration::from_secs(10);
    while got < N && Instant::now() < end {
        let _ = a.ch.flush();
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Message {
                worker: 1, data, ..
            }) => {
                assert_eq!(data, got.to_le_bytes().repeat(256), "message {got}");
                got += 1;
            }
            Ok(Event::Error { worker: 1, message }) => {
                assert!(message.contains("faster than the primary"), "{message}");
                assert!(!warned, "one warning per pause");
                warned = true;
                // Paused: nothing more arrives until JS takes what waits.
                assert!(got < N, "paused before the end");
                assert!(registry.backlog.waiting(1) > 64 * 1024);
                let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let conns = b.conns_for(200);
                assert_eq!(conns.len(), 1, "other workers are not paused");
                b.ack(&conns, true);
            }
            Ok(_) => {}
            Err(_) => {
                // JS "takes" everything delivered so far: reading resumes.
                registry.backlog.taken(1, usize::MAX);
            }
        }
    }
    assert!(warned, "the flood was paused with an error event");
    assert_eq!(got, N, "every message arrived, in order");
    a.kill();
    b.kill();
}

/// A worker whose server closes hands back a connection it took and read
/// nothing from (`Kind::HandBack`): the reactor gives it to another worker
/// of the listener, with the client's bytes still unread, and counts it as
/// redispatched.
#[test]
fn a_handed_back_connection_goes_to_another_worker_unread() {
    use std::io::{Read as _, Write as _};
    let _g = lock();
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let reply = a.listen_with("handback", 0, "");
    b.listen("handback", reply.port);
    let mut client = TcpStream::connect(("127.0.0.1", reply.port)).unwrap();
    client.write_all(b"hello").unwrap();
    // Whichever worker the connection went to hands it back.
    let end = Instant::now() + Duration::from_secs(10);
    let (first, a_got_it) = loop {
        let conns = a.conns_for(20);
        if !conns.is_empty() {
            break (conns, true);
        }
        let conns = b.conns_for(20);
        if !conns.is_empty() {
            break (conns, false);
        }
        assert!(Instant::now() < end, "no worker got the connection");
    };
    let (giver, other) = if a_got_it { (&a, &mut b) } else { (&b, &mut a) };
    assert_eq!(first.len(), 1);
    let conn = first.into_iter().next().unwrap();
    let lid = u32::from_le_bytes(conn.payload[..4].try_into().unwrap());
    assert_eq!(lid, reply.lid);
    giver.send_acks(&[(conn.id, true)], None);
    giver.hand_back(lid, true, conn.fd);
    let conns = other.conns_for(2000);
    assert_eq!(conns.len(), 1, "the other worker gets it");
    other.ack_taken(&[conns[0].id]);
    let fd = conns.into_iter().next().unwrap().fd.unwrap();
    let mut taken = std::net::TcpStream::from(fd);
    taken
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 5];
    taken.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello", "nothing of it was read before");
    taken.write_all(b"served").unwrap();
    drop(taken);
    let mut answer = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"served");
    let c = settled(&r);
    assert_eq!(
        (c.accepted, c.acknowledged, c.redispatched, c.closed, c.held),
        (1, 1, 1, 0, 0),
        "taken once in the end"
    );
    a.kill();
    b.kill();
}

/// With no other worker on the listener, a handed-back connection closes
/// (as the worker's server would have closed it) and is counted.
#[test]
fn a_handed_back_connection_with_no_other_worker_closes() {
    use std::io::Read as _;
    let _g = lock();
    let (r, _rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let reply = a.listen_with("handback-alone", 0, "");
    let mut client = TcpStream::connect(("127.0.0.1", reply.port)).unwrap();
    let conns = a.conns_for(2000);
    assert_eq!(conns.len(), 1);
    let conn = conns.into_iter().next().unwrap();
    a.send_acks(&[(conn.id, true)], None);
    a.hand_back(reply.lid, true, conn.fd);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).unwrap_or(0), 0);
    let c = settled(&r);
    assert_eq!(
        (c.accepted, c.acknowledged, c.redispatched, c.closed),
        (1, 0, 0, 1)
    );
    a.kill();
}

/// A HandBack frame whose fd is not a connection (here a listening socket)
/// closes that worker's channel with an error; nothing is dispatched.
#[test]
fn a_handed_back_fd_that_is_not_a_connection_closes_the_channel() {
    let _g = lock();
    let (r, rx) = reactor(16);
    let mut a = FakeWorker::start(&r, 1, 1);
    let reply = a.listen_with("handback-bad", 0, "");
    let bogus = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    a.hand_back(reply.lid, false, Some(OwnedFd::from(bogus)));
    let message = error_of(&rx, 1);
    assert!(message.contains("HandBack"), "{message}");
    let c = settled(&r);
    assert_eq!((c.accepted, c.redispatched, c.closed), (0, 0, 0));
    a.kill();
}
