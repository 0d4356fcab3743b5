#![cfg(target_os = "linux")]
//! The `rr` offload in the reactor, with test threads playing the workers:
//! few connections come one by one from the primary; a burst switches the
//! listener to its shared socket (passed to every worker in the listen
//! reply), where the kernel queues new connections; and when spreading
//! stops being allowed (here: a weight other than 1) what queued on the
//! shared socket is taken back and handed out by the primary. Once a second
//! a spreading listener asks its workers how many they took: it goes on
//! while they keep up the rate or one of them does not answer (a stuck
//! worker), and is exact again when they all answer and do not.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use rcluster::listener;
use rcluster::reactor::{Config, Reactor};

mod support;
use support::{accept_within, reactor_with, FakeWorker, Reply};

const BURST: u32 = 8;

fn offloaded() -> (
    Reactor,
    crossbeam_channel::Receiver<rcluster::reactor::Event>,
) {
    reactor_with(Config {
        window: 16,
        offload: true,
        offload_burst: BURST,
        ..Config::default()
    })
}

fn listen_rr(w: &mut FakeWorker) -> Reply {
    w.listen_with("rr", 0, r#","policy":"rr""#)
}

fn kernel(r: &Reactor) -> bool {
    r.stats().expect("stats").listeners[0].kernel
}

#[test]
fn a_burst_moves_new_connections_to_the_shared_socket() {
    let (r, _rx) = offloaded();
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let la = listen_rr(&mut a);
    let lb = listen_rr(&mut b);
    assert_eq!(la.policy, "rr");
    let shared = la.fd.expect("the shared socket is passed");
    let shared_b = lb.fd.expect("to every worker");
    assert_eq!(listener::sockname(&shared).unwrap().port, la.port);
    assert_eq!(listener::sockname(&shared_b).unwrap().port, la.port);

    // A few connections: exact round robin from the primary.
    let few: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", la.port)).unwrap())
        .collect();
    let (ca, cb) = (a.conns_for(200), b.conns_for(100));
    assert_eq!((ca.len(), cb.len()), (2, 2));
    a.ack_taken(&ca.iter().map(|f| f.id).collect::<Vec<_>>());
    b.ack_taken(&cb.iter().map(|f| f.id).collect::<Vec<_>>());
    assert!(!kernel(&r));
    assert!(
        accept_within(&shared, 1, 100).is_empty(),
        "nothing on the shared socket yet"
    );

    // A burst: through the primary, which then switches the program; the
    // kernel queues what comes next on the shared socket. Every connection
    // arrives once.
    let mut conns: Vec<TcpStream> = (0..BURST as usize + 2)
        .map(|_| TcpStream::connect(("127.0.0.1", la.port)).unwrap())
        .collect();
    let end = Instant::now() + Duration::from_secs(5);
    while !kernel(&r) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(kernel(&r), "spreading after the burst");
    conns.extend((0..30).map(|_| TcpStream::connect(("127.0.0.1", la.port)).unwrap()));
    let via_primary = a.conns_for(100).len() + b.conns_for(100).len();
    let direct = accept_within(&shared_b, 100, 300);
    // The switch comes at the BURST-th accept: the burst's last ones may
    // already have gone to the shared socket.
    assert!(via_primary >= BURST as usize, "{via_primary}");
    assert!(
        direct.len() >= 30,
        "the kernel queued them on the shared socket"
    );
    assert_eq!(via_primary + direct.len(), BURST as usize + 2 + 30);
    assert!(accept_within(&shared, 1, 100).is_empty(), "each once");
    drop((few, conns));
}

#[test]
fn what_queued_on_the_shared_socket_is_taken_back_when_spreading_stops() {
    let (r, _rx) = offloaded();
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let la = listen_rr(&mut a);
    let shared = la.fd.expect("the shared socket is passed");
    let _lb = listen_rr(&mut b);
    let warm = into_spreading(&r, la.port, &mut a, &mut b);
    // What the primary still handed out before the switch.
    let mut quiet = 0;
    while quiet < 2 {
        quiet += 1;
        for w in [&mut a, &mut b] {
            let ids: Vec<u64> = w.conns_for(100).iter().map(|f| f.id).collect();
            if !ids.is_empty() {
                quiet = 0;
            }
            w.ack_taken(&ids);
        }
    }
    // Connections made after the switch went to the shared socket: taken
    // here, as a worker would.
    let _taken = accept_within(&shared, 100, 100);
    let queued: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(("127.0.0.1", la.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    // A weight other than 1: exact again, and the queue comes back.
    r.set_weight(2, 2);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!kernel(&r));
    let got = a.conns_for(200).len() + b.conns_for(200).len();
    assert_eq!(
        got, 6,
        "the connections queued on the shared socket were handed out"
    );
    drop((warm, queued));
}

/// A fake worker known to the supervisor (which keeps the counts a worker
/// reports), as every worker the JS primary forks is.
fn supervised(r: &Reactor, id: u32) -> FakeWorker {
    let w = FakeWorker::start(r, id, id);
    r.supervise(rcluster::reactor::SuperviseCmd::Slot {
        worker: id,
        slot: id,
        config: Box::default(),
        spawn: Box::default(),
        agent: false,
    });
    w
}

/// Reads `w`'s frames for `ms`: acknowledges connections, answers every
/// `count` with `*n` after adding `step` to it. Returns how many it answered.
fn answer_counts(w: &mut FakeWorker, ms: u64, n: &mut u64, step: u64) -> usize {
    use rcluster::channel::Read;
    use rcluster::frame::Kind;
    let end = Instant::now() + Duration::from_millis(ms);
    let mut answered = 0;
    while Instant::now() < end {
        match w.inbox.read(&w.ch).unwrap() {
            Read::Frame(f) if f.kind == Kind::Conn => w.ack_taken(&[f.id]),
            Read::Frame(f) if f.kind == Kind::Control && f.payload == br#"{"op":"count"}"# => {
                *n += step;
                let body = format!(r#"{{"op":"direct","n":{n}}}"#);
                w.ch.send_frame(Kind::Control, 0, 0, body.as_bytes(), None)
                    .unwrap();
                answered += 1;
            }
            Read::Frame(_) | Read::Partial => {}
            Read::Empty => std::thread::sleep(Duration::from_millis(2)),
            Read::Eof => break,
        }
    }
    answered
}

/// A burst on `port` that switches the listener to spreading: the fake
/// workers acknowledge what the primary hands them (and accept nothing on
/// the shared socket). Returns the burst's connections.
fn into_spreading(
    r: &Reactor,
    port: u16,
    a: &mut FakeWorker,
    b: &mut FakeWorker,
) -> Vec<TcpStream> {
    let warm: Vec<TcpStream> = (0..(BURST as usize + 2))
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let end = Instant::now() + Duration::from_secs(5);
    while !kernel(r) && Instant::now() < end {
        answer_counts(a, 10, &mut 0, 0);
        answer_counts(b, 10, &mut 0, 0);
    }
    assert!(kernel(r), "spreading");
    warm
}

/// Two supervised fake workers on one offloaded listener, spreading after a
/// burst; the burst's connections are kept open (the last item).
fn spreading_pair() -> (
    Reactor,
    crossbeam_channel::Receiver<rcluster::reactor::Event>,
    FakeWorker,
    FakeWorker,
    Vec<TcpStream>,
) {
    let (r, rx) = offloaded();
    let mut a = supervised(&r, 1);
    let mut b = supervised(&r, 2);
    let la = listen_rr(&mut a);
    let _lb = listen_rr(&mut b);
    let warm = into_spreading(&r, la.port, &mut a, &mut b);
    (r, rx, a, b, warm)
}

/// Both workers answer every question with their count unchanged (they
/// took nothing) for 4 s at most: whether the listener is exact by then.
fn exact_once_both_took_nothing(
    r: &Reactor,
    a: &mut FakeWorker,
    b: &mut FakeWorker,
    na: &mut u64,
    nb: &mut u64,
) -> bool {
    let end = Instant::now() + Duration::from_secs(4);
    while kernel(r) && Instant::now() < end {
        answer_counts(a, 20, na, 0);
        answer_counts(b, 20, nb, 0);
    }
    !kernel(r)
}

#[test]
fn a_spreading_listener_asks_its_workers_and_stays_while_they_take_enough() {
    let (r, _rx, mut a, mut b, warm) = spreading_pair();
    let (mut na, mut nb) = (0, 0);
    // The burst's rate is BURST per 50 ms (160 a second); each worker says
    // it took 200 more at every question: spreading goes on.
    let mut asked = 0;
    for _ in 0..25 {
        asked += answer_counts(&mut a, 50, &mut na, 200);
        asked += answer_counts(&mut b, 50, &mut nb, 200);
        assert!(kernel(&r), "still spreading after {asked} questions");
    }
    assert!(asked >= 4, "both workers were asked about twice: {asked}");
    // They take nothing any more: the next answers make it exact.
    assert!(
        exact_once_both_took_nothing(&r, &mut a, &mut b, &mut na, &mut nb),
        "exact once the workers took nothing"
    );
    drop(warm);
}

#[test]
fn a_worker_that_does_not_answer_keeps_the_listener_spreading() {
    let (r, _rx, mut a, mut b, warm) = spreading_pair();
    // Worker 1's event loop is stuck: it reads nothing. Worker 2 answers that
    // it took nothing, which would make the listener exact, and the exact
    // mode would hand the stuck worker a window of connections: it goes on
    // spreading through two questions and more.
    let (mut na, mut nb) = (0, 0);
    let mut asked = 0;
    let end = Instant::now() + Duration::from_millis(2600);
    while Instant::now() < end {
        asked += answer_counts(&mut b, 50, &mut nb, 0);
        assert!(
            kernel(&r),
            "still spreading after {asked} questions to worker 2"
        );
    }
    assert!(asked >= 2, "worker 2 was asked twice: {asked}");
    // Worker 1 is back and answers too (nothing taken): exact again.
    assert!(
        exact_once_both_took_nothing(&r, &mut a, &mut b, &mut na, &mut nb),
        "exact once every worker answered that it took nothing"
    );
    drop(warm);
}

/// A steady load on `port` for at most `ms`, one connection every 2 ms or
/// so (far below any burst), the fake workers acknowledging what the primary
/// hands them. Returns whether the listener was spreading by the end.
fn steady_load(r: &Reactor, port: u16, a: &mut FakeWorker, b: &mut FakeWorker, ms: u64) -> bool {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end && !kernel(r) {
        for _ in 0..4 {
            drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
        answer_counts(a, 2, &mut 0, 0);
        answer_counts(b, 2, &mut 0, 0);
    }
    kernel(r)
}

/// A steady load of `ms` on an `rr` listener of two fake workers, in a
/// reactor whose only way to spread is the cost rule at `share` of a core.
/// Returns whether it spread, and the connections the primary accepted.
fn steady_load_at_cost_limit(share: f64, ms: u64) -> (bool, u64) {
    let (r, _rx) = reactor_with(Config {
        window: 16,
        offload: true,
        offload_burst: 1_000_000, // no burst: only the cost rule can spread
        offload_cpu: share,
        ..Config::default()
    });
    let mut a = FakeWorker::start(&r, 1, 1);
    let mut b = FakeWorker::start(&r, 2, 2);
    let la = listen_rr(&mut a);
    let _lb = listen_rr(&mut b);
    let spread = steady_load(&r, la.port, &mut a, &mut b, ms);
    (spread, r.stats().expect("stats").listeners[0].accepted)
}

#[test]
fn a_sustained_load_spreads_once_the_exact_mode_costs_its_share_of_a_core() {
    // A limit of 0: any period with enough accepts (256 a second) is too
    // costly.
    let (spread, _) = steady_load_at_cost_limit(0.0, 6_000);
    assert!(spread, "spreading after a period of steady load");

    // A whole core: the same load never costs that much.
    let (spread, accepted) = steady_load_at_cost_limit(1.0, 2_500);
    assert!(!spread, "exact: the dispatch is cheap enough");
    assert!(accepted >= 256);
}
