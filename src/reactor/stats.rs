//! `cluster.stats()`: a snapshot of what the reactor and the supervisor know,
//! per worker and per listener, taken on the reactor thread.

use serde::Serialize;

use super::supervise::rss_bytes;
use super::Loop;

/// One worker.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    pub id: u32,
    pub slot: u32,
    pub pid: i32,
    pub connected: bool,
    pub ready: bool,
    pub retiring: bool,
    pub uptime_ms: u64,
    /// Restarts of the worker's slot so far.
    pub restarts: u32,
    /// Connections handed to it (first hand-offs), plus those it took itself
    /// from the shared socket of an offloaded `rr` listener (it reports them
    /// with every heartbeat answer, each second by default).
    pub connections: u64,
    /// Handed to it and not acknowledged yet.
    pub unacknowledged: usize,
    /// Open connections it last reported (acks carry the count).
    pub open: u32,
    /// Messages it sent to the primary.
    pub messages: u64,
    pub rss: Option<u64>,
    /// Event-loop delay measured by the last heartbeat round trip, in ms.
    pub event_loop_delay_ms: Option<f64>,
    pub weight: u32,
    pub agent: bool,
}

/// One listener.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStats {
    pub key: String,
    pub policy: &'static str,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub workers: Vec<u32>,
    pub accepted: u64,
    /// Connections waiting for a worker in the primary, plus those handed out
    /// and not acknowledged yet.
    pub queued: usize,
    /// `rr`: new connections go from the kernel straight to the shared
    /// socket the workers listen on now (the offload under a high
    /// connection rate); those are not counted in `accepted` (the workers'
    /// `connections` count them).
    pub kernel: bool,
}

/// The whole snapshot.
#[derive(Serialize)]
pub struct Stats {
    pub workers: Vec<WorkerStats>,
    pub listeners: Vec<ListenerStats>,
}

impl Loop {
    pub(super) fn stats(&self) -> Stats {
        let registry = self.sup.registry.workers.lock();
        let mut workers: Vec<WorkerStats> = self
            .workers
            .iter()
            .map(|(id, w)| {
                let sup = self.sup.worker_info(*id);
                let pid = registry.get(id).map_or(0, |h| h.pid);
                WorkerStats {
                    id: *id,
                    slot: w.slot,
                    pid,
                    connected: w.connected,
                    ready: sup.ready,
                    retiring: sup.retiring,
                    uptime_ms: sup.uptime_ms,
                    restarts: sup.restarts,
                    connections: sup.connections,
                    unacknowledged: w.inflight.len(),
                    open: w.open,
                    messages: w.messages,
                    rss: (pid > 0).then(|| rss_bytes(pid)).flatten(),
                    event_loop_delay_ms: sup.event_loop_delay_ms,
                    weight: w.weight,
                    agent: sup.agent,
                }
            })
            .collect();
        workers.sort_by_key(|w| w.id);
        let mut listeners: Vec<ListenerStats> = self
            .listeners
            .values()
            .map(|l| {
                let inflight: usize = self
                    .workers
                    .values()
                    .map(|w| {
                        w.inflight
                            .values()
                            .filter(|c| self.keys.get(&l.key) == Some(&c.listener))
                            .count()
                    })
                    .sum();
                ListenerStats {
                    key: l.key.clone(),
                    policy: l.policy.name(),
                    address: l.sockname.as_ref().map(|s| s.address.clone()),
                    port: l.sockname.as_ref().map(|s| s.port),
                    workers: l.workers.clone(),
                    accepted: l.accepted,
                    queued: l.pending.len() + inflight,
                    kernel: l.offload.as_ref().is_some_and(|o| o.spreading()),
                }
            })
            .collect();
        listeners.sort_by(|a, b| a.key.cmp(&b.key));
        Stats { workers, listeners }
    }
}
