//! The primary's reactor: one thread, one poller (epoll on Linux, `poll(2)`
//! elsewhere) holding every listening socket, every worker channel and every
//! worker process's exit fd (processes without one are polled).
//!
//! Connections never touch JavaScript here: the reactor accepts
//! (`accept4(SOCK_CLOEXEC)`), picks the next worker of the listener that has
//! room in its window of unacknowledged connections, and passes the fd over
//! the channel. It keeps its own reference to each connection until the worker
//! acknowledges it, so a worker that dies or refuses before taking it does not
//! lose it: the connection is dispatched again to another worker.
//!
//! JavaScript hears about what it must (online, listening, messages,
//! disconnect, exit) through a [`Sink`] called once per loop iteration with
//! the whole batch.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use crate::channel::{Channel, Inbox, Read, ReadError};
use crate::frame::{self, Kind};
use crate::listener::{ListenRequest, SockName};
use crate::policy::Policy;
use crate::poller::{self, Poller, Ready};
use crate::process::{ExitStatus, Process};
use crate::sys;

/// Default number of connections a worker may hold unacknowledged.
pub const DEFAULT_WINDOW: usize = 16;

/// Default [`Config::patience`]: how long weighted `rr` and `hash` wait for
/// the worker they chose when its window is full, before they send the
/// connection to another worker.
pub const DEFAULT_PATIENCE: Duration = Duration::from_millis(20);

/// Something JavaScript must hear about.
#[derive(Debug)]
pub enum Event {
    /// The worker's runtime is up.
    Online { worker: u32 },
    /// A user message (JSON or V8 bytes per `flags`), maybe with a handle fd.
    Message {
        worker: u32,
        flags: u8,
        data: Vec<u8>,
        fd: Option<OwnedFd>,
    },
    /// Another frame for the JS layer: `Listening`, `ExitedAfterDisconnect`, `Control`.
    Frame {
        worker: u32,
        kind: Kind,
        data: Vec<u8>,
    },
    /// The worker's channel closed.
    Disconnect { worker: u32 },
    /// The worker's process ended.
    Exit {
        worker: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Something went wrong with this worker's channel (bad frame, I/O error).
    Error { worker: u32, message: String },
    /// A worker the supervisor spawned (restart, reload, recycle): `pipes` are
    /// the parent ends of its stdio pipes (raw fds now owned by the receiver).
    Spawned {
        worker: u32,
        slot: u32,
        pid: i32,
        pipes: Vec<i32>,
        /// The primary's end of its message channel (a raw fd now owned by
        /// the receiver), or -1.
        messages: i32,
        reason: String,
    },
    /// Something the supervisor did or noticed; `info` is a JSON object.
    Supervisor {
        kind: &'static str,
        worker: u32,
        slot: u32,
        info: String,
    },
}

mod listeners;
mod offload;
mod relay;
mod stats;
mod supervise;
pub use relay::{AGENT, BROADCAST};
pub use stats::{ListenerStats, Stats, WorkerStats};
pub use supervise::{spawn_worker, Cmd as SuperviseCmd, Handle, Registry, Started, ID_VAR};

/// Receives batches of events (in the napi layer: a threadsafe function).
pub type Sink = Box<dyn FnMut(Vec<Event>) + Send>;

enum Command {
    Add {
        id: u32,
        slot: u32,
        channel: Arc<Channel>,
        process: Arc<Process>,
    },
    Disconnect {
        id: u32,
        notify: bool,
    },
    Supervise(SuperviseCmd),
    Counters(Sender<Counters>),
    Stats(Sender<Stats>),
    /// Weighted round robin: the worker's weight.
    Weight {
        id: u32,
        weight: u32,
    },
    Stop,
}

/// Default per-worker ceiling of [`MessageBacklog`] in the napi layer.
pub const DEFAULT_MESSAGE_BACKLOG: usize = 16 << 20;

/// Message bytes read from each worker and handed to JavaScript, not yet
/// taken by it: the reactor adds what it reads, the sink's consumer calls
/// [`MessageBacklog::taken`] as JavaScript takes each batch. Above `limit`
/// bytes for one worker the reactor stops reading that worker's channel
/// (an error event says so) until JavaScript has caught up to half of it,
/// so a worker that floods the primary fills its own socket and queue, not
/// the primary's memory; other workers are not slowed. A `limit` of 0 (the
/// default, for sinks that do not report) turns this off.
#[derive(Default)]
pub struct MessageBacklog {
    limit: std::sync::atomic::AtomicUsize,
    bytes: parking_lot::Mutex<HashMap<u32, usize>>,
}

impl MessageBacklog {
    /// Sets the per-worker ceiling in bytes (0: no ceiling).
    pub fn set_limit(&self, bytes: usize) {
        self.limit
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn limit(&self) -> usize {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add(&self, worker: u32, n: usize) {
        if self.limit() > 0 {
            *self.bytes.lock().entry(worker).or_default() += n;
        }
    }

    /// JavaScript took `n` message bytes of `worker`.
    pub fn taken(&self, worker: u32, n: usize) {
        let mut m = self.bytes.lock();
        if let Some(b) = m.get_mut(&worker) {
            *b = b.saturating_sub(n);
            if *b == 0 {
                m.remove(&worker);
            }
        }
    }

    /// Bytes of `worker` waiting for JavaScript.
    pub fn waiting(&self, worker: u32) -> usize {
        self.bytes.lock().get(&worker).copied().unwrap_or(0)
    }
}

/// Connection accounting of the dispatcher (see [`Reactor::counters`]).
/// Once nothing is held, `accepted == acknowledged + closed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections the primary accepted (`rr`, `least`, `hash`, and what a
    /// closing `reuseport` slot socket drained).
    pub accepted: u64,
    /// Connections a worker acknowledged taking: it owns them now.
    pub acknowledged: u64,
    /// Times a connection went back to the queue for another worker: its
    /// worker died or disconnected before acknowledging it, or refused it.
    pub redispatched: u64,
    /// Connections the primary closed without any worker taking them: every
    /// worker refused it, or its listener closed while it waited.
    pub closed: u64,
    /// Connections held right now: queued, or sent and not yet acknowledged.
    pub held: u64,
}

/// Tunables of the reactor.
#[derive(Clone, Debug)]
pub struct Config {
    /// Unacknowledged connections a worker may hold.
    pub window: usize,
    /// Weighted `rr` and `hash` choose a worker for a reason (its weight,
    /// the client's address): when that worker's window is full, the
    /// connection waits for its acks (they come within a loop turn of the
    /// worker), but only while the window has been full for less than
    /// this. A worker full for longer is busy or stuck, and the connection
    /// goes to the next choice with room (so no connection waits behind a
    /// stuck worker for more than this).
    pub patience: Duration,
    /// `rr` over TCP may let the kernel hand connections to the workers
    /// under a high connection rate (Linux; see `reactor/offload.rs`).
    /// Default: on, unless `RCLUSTER_RR_OFFLOAD=0` is set.
    pub offload: bool,
    /// Connections accepted within 50 ms that start the offload (default
    /// 256, i.e. 5,000 a second; `RCLUSTER_RR_OFFLOAD_BURST` sets it, for
    /// tests and tuning).
    pub offload_burst: u32,
    /// Share of one core the exact mode may cost the reactor thread over
    /// 250 ms of sustained load (at least 64 connections) before the
    /// listener spreads (default 0.03; `RCLUSTER_RR_OFFLOAD_CPU` sets it in
    /// percent, for tests and tuning).
    pub offload_cpu: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: DEFAULT_WINDOW,
            patience: DEFAULT_PATIENCE,
            offload: std::env::var_os("RCLUSTER_RR_OFFLOAD").is_none_or(|v| v != "0"),
            offload_burst: std::env::var("RCLUSTER_RR_OFFLOAD_BURST")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(offload::SPREAD_BURST),
            offload_cpu: std::env::var("RCLUSTER_RR_OFFLOAD_CPU")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|p| p.is_finite() && *p >= 0.0)
                .map_or(offload::SPREAD_CPU, |p| p / 100.0),
        }
    }
}

/// Handle to the reactor thread. Dropping it stops the thread.
pub struct Reactor {
    tx: Sender<Command>,
    wake: Arc<sys::Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Reactor {
    /// Starts the reactor thread.
    pub fn start(sink: Sink, config: Config) -> io::Result<Reactor> {
        Reactor::start_with(sink, config, Arc::new(Registry::default()))
    }

    /// Starts the reactor thread sharing `registry` (worker ids and handles)
    /// with the caller.
    pub fn start_with(sink: Sink, config: Config, registry: Arc<Registry>) -> io::Result<Reactor> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let wake = Arc::new(sys::Waker::new()?);
        let mut lp = Loop::new(sink, rx, wake.clone(), config, registry)?;
        let thread = std::thread::Builder::new()
            .name("rcluster-reactor".into())
            .spawn(move || lp.run())?;
        Ok(Reactor {
            tx,
            wake,
            thread: Some(thread),
        })
    }

    fn command(&self, c: Command) {
        if self.tx.send(c).is_ok() {
            self.wake.wake();
        }
    }

    /// Starts watching a spawned worker: its channel and its process. `slot`
    /// is the worker's place in the pool (a restarted worker gets a new `id`
    /// and keeps its `slot`): `reuseport` gives each slot its own socket and
    /// `hash` hashes over slots, so a replacement inherits both.
    pub fn add_worker(&self, id: u32, slot: u32, channel: Arc<Channel>, process: Arc<Process>) {
        self.command(Command::Add {
            id,
            slot,
            channel,
            process,
        });
    }

    /// Stops dispatching to the worker at once and, with `notify`, asks it
    /// to disconnect (a [`Kind::Disconnect`] frame on its channel).
    pub fn disconnect(&self, id: u32, notify: bool) {
        self.command(Command::Disconnect { id, notify });
    }

    /// Sets worker `id`'s weight for weighted round robin (at least 1).
    pub fn set_weight(&self, id: u32, weight: u32) {
        self.command(Command::Weight { id, weight });
    }

    /// Sends a command to the supervisor.
    pub fn supervise(&self, cmd: SuperviseCmd) {
        self.command(Command::Supervise(cmd));
    }

    /// A snapshot of workers and listeners (`cluster.stats()`).
    pub fn stats(&self) -> Option<Stats> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.command(Command::Stats(tx));
        rx.recv_timeout(Duration::from_secs(2)).ok()
    }

    /// The dispatcher's connection accounting, read on the reactor thread
    /// (`None` when the reactor has stopped or does not answer within 2 s).
    /// Commands run in order, so an answer also means that every command
    /// sent before it was applied.
    pub fn counters(&self) -> Option<Counters> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.command(Command::Counters(tx));
        rx.recv_timeout(Duration::from_secs(2)).ok()
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.command(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.stop();
    }
}

const T_WAKE: u64 = 0;
const T_LISTENER: u64 = 1 << 32;
const T_CHANNEL: u64 = 2 << 32;
const T_PROCESS: u64 = 3 << 32;
const T_MASK: u64 = 0xffff_ffff << 32;

struct InFlight {
    fd: Arc<OwnedFd>,
    listener: u32,
    /// Workers that refused it before (see [`Pending::refused`]).
    refused: Vec<u32>,
}

/// What a connected, unpaused channel is always watched for.
const CHANNEL_READ: u32 = poller::READABLE | poller::HANGUP;

/// How often processes without an exit fd (see [`Process::exit_fd`]) are polled.
const REAP_POLL: Duration = Duration::from_millis(25);

struct WorkerState {
    channel: Arc<Channel>,
    inbox: Inbox,
    process: Arc<Process>,
    /// What the channel is registered for in the poller (0: not registered).
    watch: u32,
    inflight: HashMap<u64, InFlight>,
    listening: Vec<u32>,
    connected: bool,
    /// The worker's slot (see [`Reactor::add_worker`]).
    slot: u32,
    /// Open connections the worker last reported (`least`), on its acks.
    open: u32,
    /// Weight for weighted round robin (default 1).
    weight: u32,
    /// When its window last filled up (`None` while it has room).
    full_since: Option<Instant>,
    /// Messages received from the worker.
    messages: u64,
}

struct Pending {
    fd: Arc<OwnedFd>,
    /// Workers that refused it (their server at `maxConnections`): it goes
    /// to one that has not, as Node's round robin hands a refused connection
    /// on, and closes once every worker of the listener refused it.
    refused: Vec<u32>,
}

impl Pending {
    /// A connection just accepted.
    fn new(fd: OwnedFd) -> Pending {
        Pending {
            fd: Arc::new(fd),
            refused: Vec::new(),
        }
    }
}

/// `reuseport`: the socket of one worker slot, held by the primary.
struct SlotSocket {
    fd: Arc<OwnedFd>,
    /// Workers listening on it (two during a reload in place, usually one).
    holders: Vec<u32>,
    /// Nobody holds it: it waits for a replacement until then.
    expires: Option<Instant>,
}

/// Default `reusePortHold`: how long a slot's socket waits for a replacement.
pub const DEFAULT_REUSEPORT_HOLD: Duration = Duration::from_millis(5000);

struct Listener {
    key: String,
    /// The one listening socket (every policy but `reuseport`).
    fd: Option<Arc<OwnedFd>>,
    policy: Policy,
    /// `reuseport`: one socket per worker slot.
    slots: HashMap<u32, SlotSocket>,
    /// `reuseport`: how long an abandoned slot socket is kept.
    hold: Duration,
    /// `reuseport`: the request that created the listener (binds more slots).
    template: Option<ListenRequest>,
    workers: Vec<u32>,
    next: usize,
    pending: VecDeque<Pending>,
    armed: bool,
    sockname: Option<SockName>,
    /// The unix socket file to remove when the listener closes.
    unlink: Option<std::path::PathBuf>,
    /// Server data shared by every worker (Node's `handle.data`).
    data: Option<serde_json::Value>,
    /// Smooth weighted round robin: current weight per worker.
    current: HashMap<u32, i64>,
    /// The listen queue length (the largest backlog a worker asked for).
    backlog: i32,
    /// Connections accepted on it.
    accepted: u64,
    /// `rr` over TCP on Linux: the kernel offload (see `reactor/offload.rs`).
    offload: Option<offload::Offload>,
    /// Weighted `rr` or `hash` waits for a worker's full window (see
    /// [`Config::patience`]): dispatch again at this time at the latest.
    wait_until: Option<Instant>,
}

#[derive(Serialize)]
struct ListenReply<'a> {
    errno: i32,
    key: u32,
    /// The listener's policy (the first request for a key decides it).
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sockname: Option<&'a SockName>,
    /// `rr` offload: the queue length for the shared socket the worker
    /// listens on (the listener's, so that both sockets of the group have
    /// the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
}

struct Loop {
    poller: Poller,
    sink: Sink,
    rx: Receiver<Command>,
    wake: Arc<sys::Waker>,
    config: Config,
    workers: HashMap<u32, WorkerState>,
    listeners: HashMap<u32, Listener>,
    keys: HashMap<String, u32>,
    next_listener: u32,
    next_conn: u64,
    events: Vec<Event>,
    /// Set after EMFILE/ENFILE: listeners stay disarmed until then.
    accept_backoff: Option<Instant>,
    stopping: bool,
    sup: supervise::State,
    counters: Counters,
    /// Shared with the napi layer: the message backlog lives here.
    registry: Arc<Registry>,
    /// Workers whose channel is not read while JS catches up on their messages.
    paused: Vec<u32>,
    /// When each paused worker was last warned about (one warning per 10 s).
    paused_warned: HashMap<u32, Instant>,
    /// Workers whose process has no exit fd (see [`Process::exit_fd`]):
    /// polled every [`REAP_POLL`].
    polled_exits: Vec<u32>,
    /// When they were last polled.
    last_reap_poll: Instant,
    /// Reading a dead worker's last frames: never paused.
    reaping: bool,
    /// Listening sockets from systemd socket activation, not yet used.
    inherited: Vec<crate::systemd::Inherited>,
}

impl Loop {
    fn new(
        sink: Sink,
        rx: Receiver<Command>,
        wake: Arc<sys::Waker>,
        config: Config,
        registry: Arc<Registry>,
    ) -> io::Result<Loop> {
        let mut poller = Poller::new()?;
        poller.add(wake.fd(), T_WAKE, poller::READABLE)?;
        Ok(Loop {
            poller,
            sink,
            rx,
            wake,
            config,
            workers: HashMap::new(),
            listeners: HashMap::new(),
            keys: HashMap::new(),
            next_listener: 1,
            next_conn: 1,
            events: Vec::new(),
            accept_backoff: None,
            stopping: false,
            sup: supervise::State::new(registry.clone()),
            counters: Counters::default(),
            registry,
            paused: Vec::new(),
            paused_warned: HashMap::new(),
            polled_exits: Vec::new(),
            last_reap_poll: Instant::now(),
            reaping: false,
            inherited: crate::systemd::take_listen_fds(
                std::process::id(),
                (
                    std::env::var("LISTEN_PID").ok().as_deref(),
                    std::env::var("LISTEN_FDS").ok().as_deref(),
                    std::env::var("LISTEN_FDNAMES").ok().as_deref(),
                ),
            ),
        })
    }

    fn run(&mut self) {
        let mut ready: Vec<Ready> = Vec::with_capacity(256);
        while !self.stopping {
            ready.clear();
            let timeout = match self
                .accept_backoff
                .into_iter()
                .chain(self.hold_deadline())
                .chain(self.wait_deadline())
                .chain(self.offload_deadline())
                .min()
            {
                // Rounded up: a deadline less than a millisecond away must
                // not make the loop spin with a zero timeout until it is due.
                Some(t) => {
                    let d = t.saturating_duration_since(Instant::now());
                    (d.as_millis().min(1000) as i32) + i32::from(d.subsec_nanos() % 1_000_000 > 0)
                }
                None => -1,
            };
            let sup = self.sup.timeout_ms();
            let timeout = match (timeout, sup) {
                (-1, t) | (t, -1) => t,
                (a, b) => a.min(b),
            };
            // A paused channel is looked at again every 10 ms; processes
            // without an exit fd are polled every REAP_POLL.
            let timeout = match (timeout, self.paused.is_empty()) {
                (t, true) => t,
                (-1, false) => 10,
                (t, false) => t.min(10),
            };
            let unwatched = !self.polled_exits.is_empty();
            let timeout = match (timeout, unwatched) {
                (t, false) => t,
                (-1, true) => REAP_POLL.as_millis() as i32,
                (t, true) => t.min(REAP_POLL.as_millis() as i32),
            };
            self.update_interests();
            if let Err(e) = self.poller.wait(&mut ready, timeout) {
                self.events.push(Event::Error {
                    worker: 0,
                    message: format!("epoll_wait failed: {e}"),
                });
                self.flush_events();
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if let Some(t) = self.accept_backoff {
                if Instant::now() >= t {
                    self.accept_backoff = None;
                    let ids: Vec<u32> = self.listeners.keys().copied().collect();
                    for id in ids {
                        self.dispatch(id);
                    }
                }
            }
            if unwatched && self.last_reap_poll.elapsed() >= REAP_POLL {
                self.poll_exits();
            }
            self.expire_holds();
            self.expire_waits();
            self.resume_paused();
            for r in &ready {
                let id = (r.token & !T_MASK) as u32;
                match r.token & T_MASK {
                    T_WAKE => self.commands(),
                    T_LISTENER => self.dispatch(id),
                    T_CHANNEL => self.channel_ready(id, r.events),
                    T_PROCESS => self.reap(id),
                    _ => {}
                }
            }
            self.sup_timers();
            self.offload_timers();
            self.flush_events();
        }
        // Stopping: hand back every held connection to the kernel's care (close).
        self.listeners.clear();
        self.workers.clear();
    }

    fn flush_events(&mut self) {
        if !self.events.is_empty() {
            let batch = std::mem::take(&mut self.events);
            (self.sink)(batch);
        }
    }

    fn commands(&mut self) {
        self.wake.drain();
        while let Ok(c) = self.rx.try_recv() {
            match c {
                Command::Add {
                    id,
                    slot,
                    channel,
                    process,
                } => self.add_worker(id, slot, channel, process),
                Command::Disconnect { id, notify } => self.disconnect_cmd(id, notify),
                Command::Supervise(c) => self.sup_command(c),
                Command::Weight { id, weight } => {
                    if let Some(w) = self.workers.get_mut(&id) {
                        w.weight = weight.max(1);
                    }
                    for l in self.listeners.values_mut() {
                        l.current.clear();
                    }
                    // The offload spreads only over equal weights.
                    let lids: Vec<u32> = self.listeners.keys().copied().collect();
                    for lid in lids {
                        self.offload_program(lid);
                    }
                }
                Command::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
                Command::Counters(reply) => {
                    let mut c = self.counters;
                    c.held = self
                        .listeners
                        .values()
                        .map(|l| l.pending.len() as u64)
                        .sum::<u64>()
                        + self
                            .workers
                            .values()
                            .map(|w| w.inflight.len() as u64)
                            .sum::<u64>();
                    let _ = reply.send(c);
                }
                Command::Stop => self.stopping = true,
            }
        }
    }

    fn add_worker(&mut self, id: u32, slot: u32, channel: Arc<Channel>, process: Arc<Process>) {
        channel.set_waker(self.wake.clone());
        let watch = CHANNEL_READ;
        if let Err(e) = self
            .poller
            .add(channel.as_raw_fd(), T_CHANNEL | id as u64, watch)
        {
            self.events.push(Event::Error {
                worker: id,
                message: format!("cannot watch channel: {e}"),
            });
        }
        match process.exit_fd() {
            Some(fd) => {
                if let Err(e) = self.poller.add(fd, T_PROCESS | id as u64, poller::READABLE) {
                    self.events.push(Event::Error {
                        worker: id,
                        message: format!("cannot watch process: {e}"),
                    });
                }
            }
            None => self.polled_exits.push(id),
        }
        self.workers.insert(
            id,
            WorkerState {
                channel,
                inbox: Inbox::default(),
                process,
                watch,
                inflight: HashMap::new(),
                listening: Vec::new(),
                connected: true,
                slot,
                open: 0,
                weight: 1,
                full_since: None,
                messages: 0,
            },
        );
        // Frames may have arrived before we watched the channel.
        self.channel_ready(id, poller::READABLE);
    }

    fn disconnect_cmd(&mut self, id: u32, notify: bool) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if !w.connected {
            return;
        }
        if notify {
            let _ = w.channel.send_frame(Kind::Disconnect, 0, 0, &[], None);
        }
        let lids = std::mem::take(&mut w.listening);
        for lid in lids {
            self.leave_listener(id, lid);
        }
    }

    fn channel_ready(&mut self, id: u32, events: u32) {
        if events & poller::WRITABLE != 0 {
            if let Some(w) = self.workers.get(&id) {
                if w.connected && w.channel.flush().is_err() {
                    self.worker_gone(id, None);
                    return;
                }
            }
        }
        loop {
            let Some(w) = self.workers.get_mut(&id) else {
                return;
            };
            if !w.connected {
                return;
            }
            if !self.reaping && self.backlogged(id) {
                self.pause(id);
                return;
            }
            let w = self.workers.get_mut(&id).expect("checked above");
            let r = w.inbox.read(&w.channel);
            match r {
                Ok(Read::Frame(f)) => self.frame(id, f),
                Ok(Read::Partial) => continue,
                Ok(Read::Empty) => return,
                Ok(Read::Eof) => {
                    self.worker_gone(id, None);
                    return;
                }
                Err(e) => {
                    let msg = match &e {
                        ReadError::Frame(_) => format!("worker {id}: {e}; channel closed"),
                        ReadError::Io(_) => format!("worker {id}: {e}"),
                    };
                    self.worker_gone(id, Some(msg));
                    return;
                }
            }
        }
    }

    /// Whether JS has more of worker `id`'s messages waiting than the limit.
    fn backlogged(&self, id: u32) -> bool {
        let b = &self.registry.backlog;
        let limit = b.limit();
        limit > 0 && b.waiting(id) > limit
    }

    /// Stops reading worker `id`'s channel until JS catches up (see [`MessageBacklog`]).
    fn pause(&mut self, id: u32) {
        if self.paused.contains(&id) {
            return;
        }
        self.paused.push(id);
        let now = Instant::now();
        let warned = self.paused_warned.get(&id);
        if warned.is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(10)) {
            self.paused_warned.insert(id, now);
            let waiting = self.registry.backlog.waiting(id);
            self.events.push(Event::Error {
                worker: id,
                message: format!(
                    "worker {id}: sends messages faster than the primary's JavaScript takes them \
                     ({} MiB waiting, limit {} MiB); reading from its channel is paused until \
                     they are handled (its process.send() calls queue up in the worker)",
                    waiting >> 20,
                    self.registry.backlog.limit() >> 20
                ),
            });
        }
    }

    /// Reads again from paused workers once JS has taken half of their backlog.
    fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let limit = self.registry.backlog.limit();
        let ready: Vec<u32> = self
            .paused
            .iter()
            .copied()
            .filter(|id| limit == 0 || self.registry.backlog.waiting(*id) <= limit / 2)
            .collect();
        self.paused.retain(|id| !ready.contains(id));
        for id in ready {
            self.channel_ready(id, poller::READABLE);
        }
    }

    fn frame(&mut self, id: u32, f: crate::channel::Incoming) {
        match f.kind {
            Kind::Online => self.events.push(Event::Online { worker: id }),
            Kind::Relay => self.relay(id, f.flags, &f.payload),
            Kind::Message => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.messages += if f.flags & frame::FLAG_BATCH != 0 {
                        1 + f.payload.iter().filter(|&&b| b == b'\n').count() as u64
                    } else {
                        1
                    };
                }
                self.registry.backlog.add(id, f.payload.len());
                self.events.push(Event::Message {
                    worker: id,
                    flags: f.flags,
                    data: f.payload,
                    fd: f.fd,
                })
            }
            Kind::ListenRequest => self.listen_request(id, f.id, &f.payload),
            Kind::Ack => match frame::decode_acks(&f.payload) {
                Ok(acks) => self.acks(id, &acks, frame::load_of_ack(f.id)),
                Err(e) => self.worker_gone(id, Some(format!("worker {id}: {e}"))),
            },
            Kind::CloseListen => match frame::decode_u32(Kind::CloseListen, &f.payload) {
                Ok(lid) => {
                    if let Some(w) = self.workers.get_mut(&id) {
                        w.listening.retain(|l| *l != lid);
                    }
                    // It closed its server: it polls the shared socket of an
                    // offloaded `rr` listener no more.
                    self.offload_forget(lid, id);
                    self.leave_listener(id, lid);
                    // Its id, when set, is the token the primary's JS waits
                    // for on the message channel (see Registry::wait_synced).
                    if f.id != 0 {
                        self.registry.mark_synced(id, f.id);
                    }
                }
                Err(e) => self.worker_gone(id, Some(format!("worker {id}: {e}"))),
            },
            // Control frames (ready, retire, pongs, connection counts) are
            // the supervisor's alone: the primary's JS has nothing to do
            // with them, and waking it for each one (a pong per heartbeat, a
            // count per second while a listener spreads, from every worker)
            // cost more than the rest of an idle primary with many workers.
            Kind::Control => self.sup_frame(id, f.kind, &f.payload),
            Kind::Listening | Kind::ExitedAfterDisconnect => {
                self.sup_frame(id, f.kind, &f.payload);
                self.events.push(Event::Frame {
                    worker: id,
                    kind: f.kind,
                    data: f.payload,
                })
            }
            Kind::HandBack => match (frame::decode_u32(Kind::HandBack, &f.payload), f.fd) {
                (Ok(lid), Some(fd)) => self.hand_back(id, lid, fd, f.id == 1),
                (Err(e), _) => self.worker_gone(id, Some(format!("worker {id}: {e}"))),
                // The channel checks each kind's fd count: not reached.
                (Ok(_), None) => {}
            },
            Kind::Conn | Kind::ListenReply | Kind::Disconnect => self.worker_gone(
                id,
                Some(format!(
                    "worker {id}: {:?} frame is not allowed from a worker; channel closed",
                    f.kind
                )),
            ),
        }
    }

    /// The worker's channel is gone (EOF, error, or its process died).
    fn worker_gone(&mut self, id: u32, error: Option<String>) {
        self.registry.forget_synced(id);
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if !w.connected {
            return;
        }
        w.connected = false;
        w.watch = 0;
        self.poller.delete(w.channel.as_raw_fd());
        w.channel.shutdown();
        let lids = std::mem::take(&mut w.listening);
        let inflight = std::mem::take(&mut w.inflight);
        if let Some(message) = error {
            self.events.push(Event::Error {
                worker: id,
                message,
            });
        }
        // Connections it never acknowledged go back, oldest first.
        let mut back: Vec<(u64, InFlight)> = inflight.into_iter().collect();
        back.sort_by_key(|(cid, _)| std::cmp::Reverse(*cid));
        let mut touched = Vec::new();
        for (_, c) in back {
            if let Some(l) = self.listeners.get_mut(&c.listener) {
                self.counters.redispatched += 1;
                l.pending.push_front(Pending {
                    fd: c.fd,
                    refused: c.refused,
                });
                if !touched.contains(&c.listener) {
                    touched.push(c.listener);
                }
            } else {
                self.counters.closed += 1; // its listener closed meanwhile
            }
        }
        for lid in lids {
            self.leave_listener(id, lid);
        }
        self.offload_gone(id);
        for lid in touched {
            self.dispatch(lid);
        }
        self.events.push(Event::Disconnect { worker: id });
    }

    /// Watches each connected channel for what it needs now: reading unless
    /// paused, writability while output waits. (Sends from other threads
    /// wake the loop when output starts waiting; see [`Channel::set_waker`].)
    fn update_interests(&mut self) {
        for (&id, w) in self.workers.iter_mut() {
            if !w.connected {
                continue;
            }
            let want = if self.paused.contains(&id) {
                0
            } else if w.channel.queued_bytes() > 0 {
                CHANNEL_READ | poller::WRITABLE
            } else {
                CHANNEL_READ
            };
            if want == w.watch {
                continue;
            }
            let fd = w.channel.as_raw_fd();
            let token = T_CHANNEL | id as u64;
            let r = match (w.watch, want) {
                (_, 0) => {
                    self.poller.delete(fd);
                    Ok(())
                }
                (0, _) => self.poller.add(fd, token, want),
                _ => self.poller.modify(fd, token, want),
            };
            if r.is_ok() {
                w.watch = want;
            }
        }
    }

    /// Reaps the workers whose process has no exit fd, if they exited.
    fn poll_exits(&mut self) {
        self.last_reap_poll = Instant::now();
        for id in self.polled_exits.clone() {
            self.reap(id);
        }
    }

    fn reap(&mut self, id: u32) {
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        let status = match w.process.try_reap() {
            Ok(Some(s)) => Some(s),
            Ok(None) => return, // not yet (spurious wake-up)
            Err(_) => None,     // reaped by someone else: status unknown
        };
        // Everything the worker wrote before dying is delivered before
        // `exit`, however far behind JS is (it is finite now).
        if let Some(w) = self.workers.get_mut(&id) {
            w.inbox.rearm();
        }
        self.reaping = true;
        self.channel_ready(id, poller::READABLE);
        self.reaping = false;
        self.paused.retain(|p| *p != id);
        self.paused_warned.remove(&id);
        self.worker_gone(id, None);
        if let Some(w) = self.workers.remove(&id) {
            match w.process.exit_fd() {
                Some(fd) => self.poller.delete(fd),
                None => self.polled_exits.retain(|p| *p != id),
            }
        }
        let (code, signal) = match status {
            Some(ExitStatus::Code(c)) => (Some(c), None),
            Some(ExitStatus::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        self.events.push(Event::Exit {
            worker: id,
            code,
            signal,
        });
        self.sup_exit(id, code, signal);
    }
}
