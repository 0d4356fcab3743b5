//! The supervisor, running on the reactor thread so that it keeps working
//! while the primary's JavaScript is busy: restarts with back-off and a
//! crash-loop stop, readiness (listening or an explicit signal) with a
//! timeout, heartbeats, recycling, rolling reload that stops dispatching to
//! the old worker only once its replacement is ready, and graceful shutdown
//! with deadlines (drain, then SIGTERM, then SIGKILL).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Event, Loop};
use crate::channel::Channel;
use crate::frame::Kind;
use crate::process::Process;
use crate::spawn::{self, SpawnOptions};
use crate::supervisor::{recycle_after, Config, Decision, Jitter, Readiness, SlotState};

/// How often workers are pinged for stats when no heartbeat is configured (ms).
const STATS_PING: u64 = 1000;

/// Environment variable carrying the worker id (the rest of the worker's
/// configuration is the same for every worker of a slot).
pub const ID_VAR: &str = "RCLUSTER_WORKER_ID";

/// What JS (and the reactor's own restarts) need to reach a worker.
#[derive(Clone)]
pub struct Handle {
    pub channel: Arc<Channel>,
    pub process: Arc<Process>,
    pub pid: i32,
}

/// Worker ids and handles, shared by the napi layer and the reactor.
#[derive(Default)]
pub struct Registry {
    next: AtomicU32,
    pub workers: Mutex<HashMap<u32, Handle>>,
    /// Message bytes read from each worker that JavaScript has not taken yet.
    pub backlog: super::MessageBacklog,
    /// Per worker, the last sync token (a close's frame id) the reactor read
    /// on its control channel (`u64::MAX` once the worker is gone); see [`Registry::wait_synced`].
    synced: parking_lot::Mutex<HashMap<u32, u64>>,
    sync_cv: parking_lot::Condvar,
}

impl Registry {
    /// The next worker id (1, 2, 3... as in Node).
    pub fn allocate(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The reactor read sync token `seq` on worker `id`'s control channel:
    /// every frame the worker wrote there before it has been handled.
    pub fn mark_synced(&self, id: u32, seq: u64) {
        let mut m = self.synced.lock();
        let e = m.entry(id).or_default();
        *e = (*e).max(seq);
        self.sync_cv.notify_all();
    }

    /// Worker `id` is gone: nobody waits for its tokens any longer.
    pub fn forget_synced(&self, id: u32) {
        self.synced.lock().insert(id, u64::MAX);
        self.sync_cv.notify_all();
    }

    /// Waits (at most `timeout`) until the reactor has read sync token `seq`
    /// of worker `id`. A worker closing a server sends the close on both of
    /// its channels with the same token as frame id: the primary's JS,
    /// meeting it among the messages, waits here, so the messages after it
    /// are seen after the close took effect, as on Node's single channel.
    /// False on timeout.
    pub fn wait_synced(&self, id: u32, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut m = self.synced.lock();
        loop {
            if m.get(&id).is_some_and(|s| *s >= seq) {
                return true;
            }
            if self.sync_cv.wait_until(&mut m, deadline).timed_out() {
                return m.get(&id).is_some_and(|s| *s >= seq);
            }
        }
    }

    /// Forgets worker `id`'s sync state (its exit was reported).
    pub fn drop_synced(&self, id: u32) {
        self.synced.lock().remove(&id);
    }
}

/// Sets `ID_VAR` in an environment list.
pub fn with_id(env: &[String], id: u32) -> Vec<String> {
    let prefix = format!("{ID_VAR}=");
    let mut out: Vec<String> = env
        .iter()
        .filter(|e| !e.starts_with(&prefix))
        .cloned()
        .collect();
    out.push(format!("{prefix}{id}"));
    out
}

/// A worker just spawned by [`spawn_worker`].
pub struct Started {
    pub handle: Handle,
    /// The parent ends of its pipes (see [`spawn::Spawned::pipes`]).
    pub pipes: Vec<Option<OwnedFd>>,
    /// The primary's end of its message channel, when `opts.stdio` has a
    /// [`spawn::Stdio::Messages`] slot: read by the primary's JS thread, not
    /// by the reactor.
    pub messages: Option<OwnedFd>,
}

/// Spawns worker `id` with `opts` and registers it.
pub fn spawn_worker(registry: &Registry, id: u32, opts: &SpawnOptions) -> std::io::Result<Started> {
    let mut opts = opts.clone();
    opts.env = with_id(&opts.env, id);
    let (ours, theirs) = Channel::pair()?;
    let messages = if opts.stdio.contains(&spawn::Stdio::Messages) {
        Some(crate::sys::channel_pair()?)
    } else {
        None
    };
    let spawned = spawn::spawn(&opts, Some(&theirs), messages.as_ref().map(|m| &m.1))?;
    drop(theirs);
    let handle = Handle {
        channel: Arc::new(ours),
        process: Arc::new(spawned.process),
        pid: spawned.pid,
    };
    registry.workers.lock().insert(id, handle.clone());
    Ok(Started {
        handle,
        pipes: spawned.pipes,
        messages: messages.map(|(ours, _)| ours),
    })
}

/// Commands from JS to the supervisor.
pub enum Cmd {
    /// Worker `worker` (just added) lives in `slot`, spawned with `spawn`.
    Slot {
        worker: u32,
        slot: u32,
        config: Box<Config>,
        spawn: Box<SpawnOptions>,
        /// The slot is the agent process (reachable as [`super::AGENT`]).
        agent: bool,
    },
    /// The primary disconnected or killed this worker on purpose: no restart.
    OnPurpose { worker: u32 },
    /// Drain this worker and stop its slot (scale down).
    Retire { worker: u32 },
    /// Rolling reload of every slot, `concurrency` at a time.
    Reload { concurrency: usize },
    /// Stop everything: drain for `timeout`, then SIGTERM, then SIGKILL.
    Shutdown { timeout: Duration },
}

struct Slot {
    /// Workers started into the slot after its first (restarts, reloads...).
    restarts: u32,
    config: Config,
    spawn: SpawnOptions,
    state: SlotState,
    /// The worker currently serving the slot.
    current: Option<u32>,
}

struct WorkerSup {
    slot: u32,
    pid: i32,
    started: Instant,
    ready: bool,
    on_purpose: bool,
    retiring: bool,
    /// Replacing this (old) worker once ready.
    replaces: Option<u32>,
    ping_sent: Option<Instant>,
    ping_seq: u64,
    recycle_at: u64,
    connections: u64,
    /// Connections it took itself from the shared socket of an offloaded
    /// `rr` listener, as its last report or heartbeat answer said.
    direct: u64,
    /// When `direct` was last reported.
    direct_at: Option<Instant>,
    /// Round trip of the last answered heartbeat, in ms.
    event_loop_delay_ms: Option<f64>,
    /// Killed because it was not ready in time: a failed start, unstable
    /// whatever its uptime.
    failed_start: bool,
}

impl WorkerSup {
    /// The worker's count of connections taken from shared sockets, as it
    /// just reported it (answering a count question or a heartbeat).
    fn report_direct(&mut self, n: u64) {
        self.direct = n;
        self.direct_at = Some(Instant::now());
    }
}

/// What the supervisor knows of one worker (for stats).
#[derive(Default)]
pub struct WorkerInfo {
    pub ready: bool,
    pub retiring: bool,
    pub uptime_ms: u64,
    pub restarts: u32,
    pub connections: u64,
    pub event_loop_delay_ms: Option<f64>,
    pub agent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Restart(u32),
    ReadyTimeout(u32),
    Drain(u32),
    Kill(u32),
    Heartbeat(u32),
    Memory,
}

struct ReloadOp {
    queue: VecDeque<u32>,
    /// slot -> (old worker, new worker)
    active: HashMap<u32, (u32, u32)>,
    concurrency: usize,
}

/// Supervisor state kept by the reactor loop.
pub struct State {
    slots: HashMap<u32, Slot>,
    workers: HashMap<u32, WorkerSup>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    reload: Option<ReloadOp>,
    shutting_down: bool,
    jitter: Jitter,
    memory_armed: bool,
    /// The stats pings of every worker fall on the same ticks, counted from
    /// here: one wake-up sends them all.
    epoch: Instant,
    /// The agent's slot, if there is one.
    agent: Option<u32>,
    pub registry: Arc<Registry>,
}

impl State {
    pub fn new(registry: Arc<Registry>) -> State {
        let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
        State {
            slots: HashMap::new(),
            workers: HashMap::new(),
            timers: BinaryHeap::new(),
            reload: None,
            shutting_down: false,
            jitter: Jitter::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xdead_beef),
            memory_armed: false,
            epoch: Instant::now(),
            agent: None,
            registry,
        }
    }

    /// Milliseconds until the next timer (for epoll_wait), or -1.
    pub fn timeout_ms(&self) -> i32 {
        match self.timers.peek() {
            Some(Reverse((at, _))) => {
                let d = at.saturating_duration_since(Instant::now());
                (d.as_millis().min(60_000) as i32).max(0) + i32::from(d.subsec_micros() > 0)
            }
            None => -1,
        }
    }

    /// Whether `worker` is recycled after a number of connections (so every
    /// connection must be counted by the dispatcher).
    pub fn counts_connections(&self, worker: u32) -> bool {
        self.workers.get(&worker).is_some_and(|w| w.recycle_at > 0)
    }

    /// Connections `worker` reported taking itself from offloaded `rr`
    /// listeners' shared sockets.
    pub fn direct_connections(&self, worker: u32) -> u64 {
        self.workers.get(&worker).map_or(0, |w| w.direct)
    }

    /// Whether `worker` reported that count at `since` or later (a worker
    /// the supervisor does not know has nothing to report).
    pub fn direct_reported_since(&self, worker: u32, since: Instant) -> bool {
        self.workers
            .get(&worker)
            .is_none_or(|w| w.direct_at.is_some_and(|at| at >= since))
    }

    /// What the supervisor knows of `worker`.
    pub fn worker_info(&self, worker: u32) -> WorkerInfo {
        let Some(w) = self.workers.get(&worker) else {
            return WorkerInfo::default();
        };
        WorkerInfo {
            ready: w.ready,
            retiring: w.retiring,
            uptime_ms: w.started.elapsed().as_millis() as u64,
            restarts: self.slots.get(&w.slot).map_or(0, |s| s.restarts),
            connections: w.connections + w.direct,
            event_loop_delay_ms: w.event_loop_delay_ms,
            agent: self.agent == Some(w.slot),
        }
    }

    /// The worker serving the agent slot now.
    pub fn agent_worker(&self) -> Option<u32> {
        self.slots.get(&self.agent?)?.current
    }

    /// Listeners stay open while some slot may still get a new worker.
    pub fn holds_listeners(&self) -> bool {
        !self.shutting_down
            && self.slots.values().any(|s| {
                !s.state.stopped && s.config.restart != crate::supervisor::RestartMode::Never
            })
    }

    fn at(&mut self, after: Duration, t: Timer) {
        self.timers.push(Reverse((Instant::now() + after, t)));
    }

    /// Time until the next stats ping tick (every [`STATS_PING`] ms since
    /// `epoch`), at least half a period away.
    fn until_stats_tick(&self) -> Duration {
        let period = STATS_PING as u128 * 1_000_000;
        let into = self.epoch.elapsed().as_nanos() % period;
        let mut wait = period - into;
        if wait < period / 2 {
            wait += period;
        }
        Duration::from_nanos(wait as u64)
    }
}

fn info(pairs: &[(&str, serde_json::Value)]) -> String {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        m.insert((*k).to_string(), v.clone());
    }
    serde_json::Value::Object(m).to_string()
}

impl Loop {
    fn sup_event(&mut self, kind: &'static str, worker: u32, slot: u32, data: String) {
        self.events.push(Event::Supervisor {
            kind,
            worker,
            slot,
            info: data,
        });
    }

    pub(super) fn sup_command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Slot {
                worker,
                slot,
                config,
                spawn,
                agent,
            } => {
                if agent {
                    self.sup.agent = Some(slot);
                }
                let pid = self
                    .sup
                    .registry
                    .workers
                    .lock()
                    .get(&worker)
                    .map(|h| h.pid)
                    .unwrap_or(0);
                self.sup.slots.insert(
                    slot,
                    Slot {
                        restarts: 0,
                        config: *config,
                        spawn: *spawn,
                        state: SlotState::default(),
                        current: Some(worker),
                    },
                );
                self.track(worker, slot, pid, None);
            }
            Cmd::OnPurpose { worker } => {
                if let Some(w) = self.sup.workers.get_mut(&worker) {
                    w.on_purpose = true;
                }
            }
            Cmd::Retire { worker } => {
                if let Some(w) = self.sup.workers.get(&worker) {
                    let slot = w.slot;
                    if let Some(s) = self.sup.slots.get_mut(&slot) {
                        s.state.stopped = true;
                    }
                }
                self.retire(worker, None);
            }
            Cmd::Reload { concurrency } => self.start_reload(concurrency.max(1)),
            Cmd::Shutdown { timeout } => self.shutdown(timeout),
        }
    }

    /// Starts supervising a live worker.
    fn track(&mut self, worker: u32, slot: u32, pid: i32, replaces: Option<u32>) {
        let Some(s) = self.sup.slots.get(&slot) else {
            return;
        };
        let cfg = s.config.clone();
        let rand = self.sup.jitter.next_f64();
        self.sup.workers.insert(
            worker,
            WorkerSup {
                slot,
                pid,
                started: Instant::now(),
                ready: false,
                on_purpose: false,
                retiring: false,
                replaces,
                ping_sent: None,
                ping_seq: 0,
                recycle_at: recycle_after(cfg.max_connections, cfg.recycle_jitter, rand),
                connections: 0,
                direct: 0,
                direct_at: None,
                event_loop_delay_ms: None,
                failed_start: false,
            },
        );
        if cfg.ready_timeout > 0 {
            self.sup.at(
                Duration::from_millis(cfg.ready_timeout),
                Timer::ReadyTimeout(worker),
            );
        }
        // Heartbeats also measure event-loop delay for stats: without a
        // heartbeat setting they run every STATS_PING without killing anyone
        // (the first a period after the spawn, the next ones on the tick all
        // workers share).
        let every = if cfg.heartbeat_interval > 0 {
            cfg.heartbeat_interval
        } else {
            STATS_PING
        };
        self.sup
            .at(Duration::from_millis(every), Timer::Heartbeat(worker));
        if cfg.max_memory > 0 && !self.sup.memory_armed {
            self.sup.memory_armed = true;
            self.sup.at(Duration::from_millis(1000), Timer::Memory);
        }
    }

    /// Spawns a new worker into `slot` from the reactor thread.
    fn spawn_into(&mut self, slot: u32, replaces: Option<u32>, reason: &str) -> Option<u32> {
        let opts = self.sup.slots.get(&slot)?.spawn.clone();
        let id = self.sup.registry.allocate();
        match spawn_worker(&self.sup.registry, id, &opts) {
            Ok(Started {
                handle: h,
                pipes,
                messages,
            }) => {
                self.add_worker(id, slot, h.channel.clone(), h.process.clone());
                if let Some(s) = self.sup.slots.get_mut(&slot) {
                    s.restarts += 1;
                }
                if let Some(s) = self.sup.slots.get_mut(&slot) {
                    if replaces.is_none() {
                        s.current = Some(id);
                    }
                }
                self.track(id, slot, h.pid, replaces);
                self.events.push(Event::Spawned {
                    worker: id,
                    slot,
                    pid: h.pid,
                    pipes: pipes
                        .into_iter()
                        .map(|p| p.map(IntoRawFd::into_raw_fd).unwrap_or(-1))
                        .collect(),
                    messages: messages.map_or(-1, IntoRawFd::into_raw_fd),
                    reason: reason.to_string(),
                });
                Some(id)
            }
            Err(e) => {
                self.sup_event(
                    "error",
                    0,
                    slot,
                    info(&[("reason", format!("spawn failed: {e}").into())]),
                );
                None
            }
        }
    }

    /// A frame that may concern readiness or liveness.
    pub(super) fn sup_frame(&mut self, worker: u32, kind: Kind, payload: &[u8]) {
        let Some(w) = self.sup.workers.get(&worker) else {
            return;
        };
        let readiness = self
            .sup
            .slots
            .get(&w.slot)
            .map(|s| s.config.readiness)
            .unwrap_or_default();
        let ready = match kind {
            Kind::Listening => readiness == Readiness::Listening,
            Kind::Control => {
                let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                match v["op"].as_str() {
                    Some("ready") => true,
                    Some("retire") => {
                        let reason = v["reason"].as_str().unwrap_or("").to_string();
                        self.self_retire(worker, reason);
                        false
                    }
                    // Its server refuses connections at `maxConnections`:
                    // it takes none from the shared socket, so that the
                    // listener stays exact and a refused connection goes to
                    // another worker.
                    Some("exact") => {
                        if let Some(lid) = v["key"].as_u64().and_then(|k| u32::try_from(k).ok()) {
                            self.offload_leave(lid, worker, true);
                        }
                        false
                    }
                    Some("direct") => {
                        if let (Some(w), Some(n)) =
                            (self.sup.workers.get_mut(&worker), v["n"].as_u64())
                        {
                            w.report_direct(n);
                        }
                        false
                    }
                    Some("pong") => {
                        if let Some(w) = self.sup.workers.get_mut(&worker) {
                            if let Some(direct) = v["direct"].as_u64() {
                                w.report_direct(direct);
                            }
                            if v["seq"].as_u64() == Some(w.ping_seq) {
                                if let Some(sent) = w.ping_sent.take() {
                                    w.event_loop_delay_ms =
                                        Some(sent.elapsed().as_secs_f64() * 1000.0);
                                }
                            }
                        }
                        false
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if ready {
            self.mark_ready(worker);
        }
    }

    fn mark_ready(&mut self, worker: u32) {
        let Some(w) = self.sup.workers.get_mut(&worker) else {
            return;
        };
        if w.ready {
            return;
        }
        w.ready = true;
        let slot = w.slot;
        let replaces = w.replaces.take();
        self.sup_event("ready", worker, slot, info(&[]));
        if let Some(old) = replaces {
            if let Some(s) = self.sup.slots.get_mut(&slot) {
                s.current = Some(worker);
            }
            self.sup_event(
                "reload",
                worker,
                slot,
                info(&[
                    ("phase", "retire".into()),
                    ("old", old.into()),
                    ("new", worker.into()),
                ]),
            );
            self.retire(old, None);
        }
    }

    /// Stops dispatching to `worker`, asks it to drain, and arms the deadlines.
    fn retire(&mut self, worker: u32, drain: Option<Duration>) {
        let Some(w) = self.sup.workers.get_mut(&worker) else {
            // Not supervised (already gone): nothing to drain.
            return;
        };
        if w.retiring {
            return;
        }
        w.retiring = true;
        let cfg = self
            .sup
            .slots
            .get(&w.slot)
            .map(|s| s.config.clone())
            .unwrap_or_default();
        if let Some(ws) = self.workers.get_mut(&worker) {
            let lids = std::mem::take(&mut ws.listening);
            let _ = ws
                .channel
                .send_frame(Kind::Control, 0, 0, br#"{"op":"drain"}"#, None);
            for lid in lids {
                self.leave_listener(worker, lid);
            }
        }
        let drain = drain.unwrap_or(Duration::from_millis(cfg.drain_timeout));
        self.sup.at(drain, Timer::Drain(worker));
    }

    fn signal(&mut self, worker: u32, sig: i32) {
        let h = self.sup.registry.workers.lock().get(&worker).cloned();
        if let Some(h) = h {
            let _ = spawn::signal(&h.process, sig);
        }
    }

    /// After the reactor reaped `worker`.
    pub(super) fn sup_exit(&mut self, worker: u32, code: Option<i32>, signal: Option<i32>) {
        self.sup.registry.workers.lock().remove(&worker);
        let Some(w) = self.sup.workers.remove(&worker) else {
            return;
        };
        let slot = w.slot;
        // A replacement that died before it was ready fails the reload.
        if let Some(old) = w.replaces {
            self.fail_reload(
                slot,
                old,
                worker,
                format!("new worker {worker} exited before it was ready"),
            );
        }
        // An old worker finished draining: its slot's step of the reload is done.
        let mut step_done = false;
        if let Some(r) = &mut self.sup.reload {
            if let Some(&(old, new)) = r.active.get(&slot) {
                if old == worker {
                    r.active.remove(&slot);
                    step_done = true;
                    let _ = new;
                }
            }
        }
        if step_done {
            self.sup_event(
                "reload",
                worker,
                slot,
                info(&[("phase", "done".into()), ("old", worker.into())]),
            );
            self.advance_reload();
        }
        let Some(s) = self.sup.slots.get_mut(&slot) else {
            return;
        };
        if s.current == Some(worker) {
            s.current = None;
        }
        if self.sup.shutting_down {
            self.check_shutdown_done();
            return;
        }
        let on_purpose = w.on_purpose || w.retiring;
        let uptime = if w.failed_start {
            Duration::ZERO
        } else {
            w.started.elapsed()
        };
        let cfg = s.config.clone();
        let current = s.current;
        let decision = s.state.on_exit(&cfg, code, signal, uptime, on_purpose);
        if current.is_some() {
            // The slot is already served (a replacement took over).
            return;
        }
        match decision {
            Decision::Leave => {}
            Decision::Restart { after, unstable } => {
                if unstable > 0 {
                    self.sup_event(
                        "backoff",
                        worker,
                        slot,
                        info(&[
                            ("delay", (after.as_millis() as u64).into()),
                            ("unstable", unstable.into()),
                            (
                                "reason",
                                format!(
                                    "worker {worker} exited after {} ms (minUptime {} ms)",
                                    uptime.as_millis(),
                                    cfg.min_uptime
                                )
                                .into(),
                            ),
                        ]),
                    );
                }
                self.sup_event(
                    "scheduled",
                    worker,
                    slot,
                    info(&[("delay", (after.as_millis() as u64).into())]),
                );
                self.sup.at(after, Timer::Restart(slot));
            }
            Decision::Stop { reason } => {
                self.sup_event(
                    "crashloop",
                    worker,
                    slot,
                    info(&[("reason", reason.into())]),
                );
                self.close_orphans();
            }
        }
    }

    /// Runs every timer that is due.
    pub(super) fn sup_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.sup.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, t)) = self.sup.timers.pop().expect("peeked");
            self.timer(t);
        }
    }

    fn timer(&mut self, t: Timer) {
        match t {
            Timer::Restart(slot) => {
                let Some(s) = self.sup.slots.get(&slot) else {
                    return;
                };
                if s.state.stopped || s.current.is_some() || self.sup.shutting_down {
                    return;
                }
                self.spawn_into(slot, None, "restart");
            }
            Timer::ReadyTimeout(worker) => {
                let Some(w) = self.sup.workers.get(&worker) else {
                    return;
                };
                if w.ready || w.retiring {
                    return;
                }
                let (slot, replaces) = (w.slot, w.replaces);
                let ms = self
                    .sup
                    .slots
                    .get(&slot)
                    .map(|s| s.config.ready_timeout)
                    .unwrap_or(0);
                self.sup_event(
                    "unready",
                    worker,
                    slot,
                    info(&[(
                        "reason",
                        format!("worker {worker} was not ready within readyTimeout ({ms} ms)")
                            .into(),
                    )]),
                );
                if let Some(w) = self.sup.workers.get_mut(&worker) {
                    w.failed_start = true;
                }
                if let Some(old) = replaces {
                    self.fail_reload(
                        slot,
                        old,
                        worker,
                        format!("new worker {worker} was not ready within {ms} ms"),
                    );
                }
                self.signal(worker, libc::SIGKILL);
            }
            Timer::Drain(worker) => {
                if self.sup.workers.contains_key(&worker) {
                    self.signal(worker, libc::SIGTERM);
                    let kill = self
                        .sup
                        .workers
                        .get(&worker)
                        .and_then(|w| self.sup.slots.get(&w.slot))
                        .map(|s| s.config.kill_timeout)
                        .unwrap_or(5000);
                    self.sup
                        .at(Duration::from_millis(kill), Timer::Kill(worker));
                }
            }
            Timer::Kill(worker) => {
                if self.sup.workers.contains_key(&worker) {
                    self.signal(worker, libc::SIGKILL);
                }
            }
            Timer::Heartbeat(worker) => self.heartbeat(worker),
            Timer::Memory => self.check_memory(),
        }
    }

    fn heartbeat(&mut self, worker: u32) {
        let Some(w) = self.sup.workers.get_mut(&worker) else {
            return;
        };
        let Some(cfg) = self.sup.slots.get(&w.slot).map(|s| s.config.clone()) else {
            return;
        };
        let slot = w.slot;
        let liveness = cfg.heartbeat_interval > 0;
        if let Some(sent) = w.ping_sent.filter(|_| liveness) {
            if sent.elapsed() >= Duration::from_millis(cfg.heartbeat_timeout) {
                w.ping_sent = None;
                let ms = sent.elapsed().as_millis() as u64;
                self.sup_event(
                    "unresponsive",
                    worker,
                    slot,
                    info(&[(
                        "reason",
                        format!(
                            "worker {worker} did not answer a heartbeat for {ms} ms (heartbeatTimeout {} ms); killed",
                            cfg.heartbeat_timeout
                        )
                        .into(),
                    )]),
                );
                self.signal(worker, libc::SIGKILL);
                return;
            }
        } else if w.ready || cfg.readiness == Readiness::Listening {
            w.ping_seq += 1;
            w.ping_sent = Some(Instant::now());
            let body = format!(r#"{{"op":"ping","seq":{}}}"#, w.ping_seq);
            if let Some(ws) = self.workers.get(&worker) {
                let _ = ws
                    .channel
                    .send_frame(Kind::Control, 0, 0, body.as_bytes(), None);
            }
        }
        let next = if liveness {
            Duration::from_millis(
                cfg.heartbeat_interval
                    .min(cfg.heartbeat_timeout.max(1))
                    .max(1),
            )
        } else {
            self.sup.until_stats_tick()
        };
        self.sup.at(next, Timer::Heartbeat(worker));
    }

    fn check_memory(&mut self) {
        let mut over = Vec::new();
        for (id, w) in &self.sup.workers {
            let Some(s) = self.sup.slots.get(&w.slot) else {
                continue;
            };
            if s.config.max_memory == 0 || w.retiring || w.replaces.is_some() || !w.ready {
                continue;
            }
            if let Some(rss) = rss_bytes(w.pid) {
                if rss > s.config.max_memory {
                    over.push((*id, w.slot, rss, s.config.max_memory));
                }
            }
        }
        for (id, slot, rss, max) in over {
            self.recycle(
                id,
                slot,
                format!("worker {id} RSS {rss} bytes is above maxMemory {max}"),
            );
        }
        if !self.sup.workers.is_empty() {
            self.sup.at(Duration::from_millis(1000), Timer::Memory);
        } else {
            self.sup.memory_armed = false;
        }
    }

    /// Counts a connection handed to `worker`; recycles it past its limit.
    pub(super) fn sup_connection(&mut self, worker: u32) {
        let Some(w) = self.sup.workers.get_mut(&worker) else {
            return;
        };
        w.connections += 1;
        if w.recycle_at > 0 && w.connections == w.recycle_at && !w.retiring {
            let (slot, n) = (w.slot, w.connections);
            self.recycle(
                worker,
                slot,
                format!("worker {worker} served {n} connections (maxConnections with jitter)"),
            );
        }
    }

    /// The worker asked to go (`cluster.worker.retire()`): it gets no new
    /// connection from now on, its replacement starts at once, and it drains
    /// (deadline, then SIGTERM, then SIGKILL).
    fn self_retire(&mut self, worker: u32, reason: String) {
        let Some(w) = self.sup.workers.get(&worker) else {
            return;
        };
        if w.retiring || self.sup.shutting_down {
            return;
        }
        let slot = w.slot;
        let reason = if reason.is_empty() {
            format!("worker {worker} asked to retire")
        } else {
            format!("worker {worker} asked to retire: {reason}")
        };
        self.sup_event("retire", worker, slot, info(&[("reason", reason.into())]));
        // Out of dispatch at once wherever another worker serves the same
        // listener; where it is the only one, it keeps the listener (and its
        // port) until its replacement is ready, then drains like a reload.
        let shared: Vec<u32> = self
            .workers
            .get(&worker)
            .map(|ws| {
                ws.listening
                    .iter()
                    .copied()
                    .filter(|lid| {
                        self.listeners
                            .get(lid)
                            .is_some_and(|l| l.workers.iter().any(|w| *w != worker))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ws) = self.workers.get_mut(&worker) {
            ws.listening.retain(|lid| !shared.contains(lid));
        }
        for lid in shared {
            self.leave_listener(worker, lid);
        }
        if self.spawn_into(slot, Some(worker), "retire").is_none() {
            self.retire(worker, None);
        }
    }

    /// Replaces `worker` in its slot the way a reload does.
    fn recycle(&mut self, worker: u32, slot: u32, reason: String) {
        if self.sup.shutting_down {
            return;
        }
        if let Some(w) = self.sup.workers.get_mut(&worker) {
            if w.retiring {
                return;
            }
        }
        self.sup_event("recycle", worker, slot, info(&[("reason", reason.into())]));
        self.spawn_into(slot, Some(worker), "recycle");
    }

    fn start_reload(&mut self, concurrency: usize) {
        if self.sup.reload.is_some() {
            self.sup_event(
                "reloadDone",
                0,
                0,
                info(&[
                    ("ok", false.into()),
                    ("reason", "a reload is already in progress".into()),
                ]),
            );
            return;
        }
        let mut slots: Vec<u32> = self
            .sup
            .slots
            .iter()
            .filter(|(_, s)| !s.state.stopped && s.current.is_some())
            .map(|(id, _)| *id)
            .collect();
        slots.sort_unstable();
        self.sup.reload = Some(ReloadOp {
            queue: slots.into(),
            active: HashMap::new(),
            concurrency,
        });
        self.advance_reload();
    }

    fn advance_reload(&mut self) {
        loop {
            let Some(r) = &mut self.sup.reload else {
                return;
            };
            if r.active.len() >= r.concurrency {
                return;
            }
            let Some(slot) = r.queue.pop_front() else {
                if r.active.is_empty() {
                    self.sup.reload = None;
                    self.sup_event("reloadDone", 0, 0, info(&[("ok", true.into())]));
                }
                return;
            };
            let Some(old) = self.sup.slots.get(&slot).and_then(|s| s.current) else {
                continue;
            };
            let Some(new) = self.spawn_into(slot, Some(old), "reload") else {
                self.fail_reload(
                    slot,
                    old,
                    0,
                    format!("could not spawn a worker for slot {slot}"),
                );
                return;
            };
            if let Some(r) = &mut self.sup.reload {
                r.active.insert(slot, (old, new));
            }
            self.sup_event(
                "reload",
                new,
                slot,
                info(&[
                    ("phase", "start".into()),
                    ("old", old.into()),
                    ("new", new.into()),
                ]),
            );
        }
    }

    /// A replacement failed: keep the old worker serving, stop the reload.
    fn fail_reload(&mut self, slot: u32, old: u32, new: u32, reason: String) {
        if new != 0 {
            if let Some(w) = self.sup.workers.get_mut(&new) {
                w.on_purpose = true;
                w.replaces = None;
            }
            self.signal(new, libc::SIGKILL);
        }
        if let Some(s) = self.sup.slots.get_mut(&slot) {
            s.current = Some(old);
        }
        let was_reload = self.sup.reload.take().is_some();
        self.sup_event(
            if was_reload { "reloadDone" } else { "error" },
            new,
            slot,
            info(&[("ok", false.into()), ("reason", reason.into())]),
        );
    }

    fn shutdown(&mut self, timeout: Duration) {
        self.sup.shutting_down = true;
        self.sup.reload = None;
        for s in self.sup.slots.values_mut() {
            s.state.stopped = true;
        }
        let ids: Vec<u32> = self.sup.workers.keys().copied().collect();
        // Drain for most of the deadline, then SIGTERM; SIGKILL at the deadline.
        let term = timeout.mul_f64(0.7);
        for id in ids {
            if let Some(w) = self.sup.workers.get_mut(&id) {
                w.retiring = false; // re-arm with the shutdown deadline
                w.on_purpose = true;
            }
            self.retire(id, Some(term));
            self.sup.at(timeout, Timer::Kill(id));
        }
        self.check_shutdown_done();
    }

    /// Closes listeners that no worker serves once nothing will restart.
    fn close_orphans(&mut self) {
        if self.sup.holds_listeners() {
            return;
        }
        let empty: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.workers.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for lid in empty {
            self.close_listener(lid);
        }
    }

    fn check_shutdown_done(&mut self) {
        if self.sup.shutting_down && self.sup.workers.is_empty() {
            self.close_orphans();
            self.sup_event("shutdownDone", 0, 0, info(&[]));
        }
    }
}

/// Resident set size of `pid` in bytes, from `proc_pidinfo` (macOS).
#[cfg(target_os = "macos")]
pub fn rss_bytes(pid: i32) -> Option<u64> {
    // SAFETY: proc_taskinfo is plain old data; zeroed is a valid value.
    let mut info: libc::proc_taskinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
    // SAFETY: `info` is valid and writable for `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTASKINFO,
            0,
            &mut info as *mut libc::proc_taskinfo as *mut libc::c_void,
            size,
        )
    };
    (n == size).then_some(info.pti_resident_size)
}

/// Resident set size of `pid` in bytes, from /proc.
#[cfg(not(target_os = "macos"))]
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sync_waits_for_the_token_or_the_end_of_the_worker() {
        let r = std::sync::Arc::new(Registry::default());
        assert!(!r.wait_synced(1, 1, Duration::from_millis(20)));
        let r2 = r.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            r2.mark_synced(1, 2);
        });
        assert!(r.wait_synced(1, 2, Duration::from_secs(5)));
        t.join().unwrap();
        assert!(
            r.wait_synced(1, 1, Duration::ZERO),
            "an older token is passed"
        );
        assert!(!r.wait_synced(1, 3, Duration::from_millis(10)));
        r.forget_synced(1);
        assert!(
            r.wait_synced(1, 3, Duration::ZERO),
            "a gone worker never blocks"
        );
        r.drop_synced(1);
        assert!(!r.wait_synced(1, 3, Duration::ZERO));
    }

    use super::*;

    #[test]
    fn id_var_is_replaced() {
        let env = vec!["A=1".to_string(), format!("{ID_VAR}=3")];
        let out = with_id(&env, 9);
        assert_eq!(out, vec!["A=1".to_string(), format!("{ID_VAR}=9")]);
    }

    #[test]
    fn rss_of_self() {
        assert!(rss_bytes(std::process::id() as i32).unwrap() > 0);
    }
}
