//! A fake worker for reactor tests: a real process (for the process) whose
//! channel end the test holds and drives frame by frame, plus a reactor whose
//! events land in a channel.
#![allow(dead_code)] // each test binary uses its own subset

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rcluster::channel::{Channel, Inbox, Incoming, Read};
use rcluster::frame::{self, Kind};
use rcluster::process::Process;
use rcluster::reactor::{Config, Event, Reactor};
use rcluster::spawn::{self, SpawnOptions, Stdio};

pub struct FakeWorker {
    pub ch: Channel,
    pub inbox: Inbox,
    pub process: Arc<Process>,
}

/// A listen reply.
pub struct Reply {
    pub lid: u32,
    pub port: u16,
    pub policy: String,
    pub fd: Option<OwnedFd>,
}

impl FakeWorker {
    /// Spawns `sleep 30` for the process and adds it as worker `id` in `slot`.
    pub fn start(reactor: &Reactor, id: u32, slot: u32) -> FakeWorker {
        let (primary, theirs) = Channel::pair().unwrap();
        let opts = SpawnOptions {
            file: "/bin/sleep".into(),
            argv: vec!["sleep".into(), "30".into()],
            stdio: vec![Stdio::Ignore, Stdio::Ignore, Stdio::Ignore],
            ..Default::default()
        };
        let s = spawn::spawn(&opts, None, None).unwrap();
        let process = Arc::new(s.process);
        reactor.add_worker(id, slot, Arc::new(primary), process.clone());
        FakeWorker {
            ch: Channel::new(theirs).unwrap(),
            inbox: Inbox::default(),
            process,
        }
    }

    /// The next frame (5 s at most); `None` at end of file.
    pub fn next(&mut self) -> Option<Incoming> {
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
    pub fn conns_for(&mut self, ms: u64) -> Vec<Incoming> {
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

    /// Asks for a listener on 127.0.0.1:`port` under `key` (`extra`: more
    /// JSON members, e.g. `,"policy":"hash"`); the reply must be a success.
    pub fn listen_with(&mut self, key: &str, port: u16, extra: &str) -> Reply {
        let req = format!(
            r#"{{"key":"{key}","address":"127.0.0.1","port":{port},"addressType":4,"flags":0{extra}}}"#
        );
        self.ch
            .send_frame(Kind::ListenRequest, 0, 7, req.as_bytes(), None)
            .unwrap();
        let reply = loop {
            let f = self.next().expect("listen reply");
            if f.kind == Kind::ListenReply {
                break f;
            }
        };
        assert_eq!(reply.id, 7);
        let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(v["errno"], 0, "{v}");
        Reply {
            lid: v["key"].as_u64().unwrap() as u32,
            port: v["sockname"]["port"].as_u64().unwrap_or(0) as u16,
            policy: v["policy"].as_str().unwrap_or("").to_string(),
            fd: reply.fd,
        }
    }

    /// Sends one ack frame; `open` is the load report (`least`).
    pub fn send_acks(&self, acks: &[(u64, bool)], open: Option<u32>) {
        self.ch
            .send_frame(
                Kind::Ack,
                0,
                frame::ack_load_id(open),
                &frame::encode_acks(acks),
                None,
            )
            .unwrap();
    }

    /// Acknowledges `ids` as taken.
    pub fn ack_taken(&self, ids: &[u64]) {
        let acks: Vec<(u64, bool)> = ids.iter().map(|i| (*i, true)).collect();
        self.send_acks(&acks, None);
    }

    pub fn kill(&self) {
        let _ = spawn::signal(&self.process, libc::SIGKILL);
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Accepts on a listening socket until `n` connections came or 5 s passed.
pub fn accept_n(fd: &OwnedFd, n: usize) -> Vec<OwnedFd> {
    accept_within(fd, n, 5000)
}

/// Accepts on a listening socket until `n` connections came or `ms` passed.
pub fn accept_within(fd: &OwnedFd, n: usize, ms: u64) -> Vec<OwnedFd> {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < end {
        match rcluster::listener::accept(fd).unwrap() {
            Some(c) => out.push(c),
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    out
}

/// A reactor with `window`, its events forwarded to the returned receiver.
/// The dispatcher itself: the rr offload (kernel hand-off under a high
/// connection rate) is off; `reactor_with` turns it on.
pub fn reactor(window: usize) -> (Reactor, Receiver<Event>) {
    reactor_with(Config {
        window,
        offload: false,
        ..Config::default()
    })
}

/// A reactor with `config`, its events forwarded to the returned receiver.
pub fn reactor_with(config: Config) -> (Reactor, Receiver<Event>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let r = Reactor::start(
        Box::new(move |batch| {
            for e in batch {
                let _ = tx.send(e);
            }
        }),
        config,
    )
    .unwrap();
    (r, rx)
}

/// The first event matching `pred` within 10 s (panics otherwise).
pub fn wait_event(rx: &Receiver<Event>, pred: impl Fn(&Event) -> bool) -> Event {
    let end = Instant::now() + Duration::from_secs(10);
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
