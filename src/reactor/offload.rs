//! The `rr` offload on the reactor thread: when to let the kernel hand new
//! connections straight to the workers, and when to take them back.
//!
//! An `rr` TCP listener (Linux) is a `SO_REUSEPORT` group of two sockets,
//! both held by the primary: its own (index 0), and a shared one (index 1)
//! that every worker of the listener also listens on, underneath its
//! Node-like server handle (see `src/offload.rs` for the kernel side).
//!
//! - **Exact** (the start, and whenever in doubt): the group's program queues
//!   every connection on the primary's socket; the primary accepts and hands
//!   them out one by one, in turn, with the window of unacknowledged
//!   connections. Keep-alive pools and small bursts get an exact round robin.
//! - **Spread**: once a rule of [`rules`] says the load is high (a burst, a
//!   steady rate of 2,500 a second, or the exact mode costing the primary
//!   3% of a core), the program queues new
//!   connections on the shared socket and whichever worker is free first
//!   accepts them: the primary does no work per connection, and no
//!   connection waits for a busy or stuck worker while another one is free
//!   (one queue, many servers). Every [`PROBE_AFTER`] the listener asks its
//!   workers how many connections they took (one control frame each) and
//!   reads the answers [`COUNT_WAIT`] later: below half the rate of the rule
//!   that started it it is exact again, and measures there. Not while a
//!   worker has not answered: its event loop is stuck or slow, and the exact
//!   mode would hand it a window of connections.
//! - **Never lost**: both sockets stay the primary's. A worker that stops
//!   taking connections while it lives (disconnect, retire) is told to stop
//!   listening on the shared socket; one that dies or closes its server
//!   simply stops accepting. When no worker is left to spread to, the
//!   program goes back to exact and what queued on the shared socket is
//!   accepted here and held for the workers, like any connection.
//!
//! Spreading is not used while a worker of the listener counts connections
//! for recycling (`maxConnections`), has a weight other than 1, or did not
//! get the shared socket or left it (its server refuses connections at
//! `server.maxConnections`: the control op `exact`): only the exact mode
//! counts, weighs, reaches them and hands a refused connection on.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Loop, Pending};
use crate::frame::Kind;
use crate::listener::{self, ListenRequest, SockName};
use crate::offload::{self, Program};
use crate::sys;

mod rules;

use rules::{keeps_spreading, ExactRate};
pub use rules::{SPREAD_BURST, SPREAD_CPU};

/// How often a spreading listener checks the rate: it asks its workers how
/// many connections they took from the shared socket...
pub(super) const PROBE_AFTER: Duration = Duration::from_secs(1);
/// ...and reads their answers this long after asking (a worker whose event
/// loop is slower than that has not answered: the listener goes on
/// spreading, since the exact mode would hand that worker a window of
/// connections, and asks again).
pub(super) const COUNT_WAIT: Duration = Duration::from_millis(200);

/// The offload state of one `rr` listener.
pub(super) struct Offload {
    /// The primary's own socket (the listener's), index 0 of the group.
    primary: Arc<OwnedFd>,
    /// The socket every worker listens on, index 1.
    shared: Arc<OwnedFd>,
    /// Workers that were given the shared socket and still listen on it.
    joined: Vec<u32>,
    attached: Program,
    /// Spreading; the rate is measured from then (`direct_since` is the
    /// workers' count at that time). `None`: exact.
    spreading: Option<Instant>,
    /// The workers were asked for their counts then; the answers are read
    /// [`COUNT_WAIT`] later.
    counting: Option<Instant>,
    /// The exact mode's measurements (see `rules`).
    rate: ExactRate,
    /// A rule says spread (since then); done on the next loop turn.
    want_spread: Option<Instant>,
    /// The rate (connections a second) of the rule that started spreading;
    /// it goes on down to half of it.
    spread_rate: f64,
    /// The workers' count of connections taken from the shared socket when
    /// spreading started or was last confirmed.
    direct_since: u64,
}

impl Offload {
    /// Starts the offload for a listener whose socket `fd` was bound with
    /// [`listener::bind_group`] at `at`: binds the shared socket into its
    /// group. `None` where that or the program fails (the listener stays
    /// exact).
    pub(super) fn new(
        fd: &Arc<OwnedFd>,
        at: Option<&SockName>,
        template: &ListenRequest,
        burst: u32,
        cpu_limit: f64,
    ) -> Option<Offload> {
        let shared = listener::bind_reuseport(template, Some(at?)).ok()?.fd;
        offload::attach(fd, Program::Primary).ok()?;
        let now = Instant::now();
        Some(Offload {
            primary: fd.clone(),
            shared: Arc::new(shared),
            joined: Vec::new(),
            attached: Program::Primary,
            spreading: None,
            counting: None,
            rate: ExactRate::new(burst, cpu_limit, now),
            want_spread: None,
            spread_rate: 0.0,
            direct_since: 0,
        })
    }

    /// Counts a connection the primary accepted (the exact mode's
    /// measurements). Runs on the reactor thread, whose CPU time the cost
    /// rule reads once a `LOAD_PERIOD` (250 ms) at most.
    pub(super) fn accepted(&mut self) {
        if self.spreading.is_some() || self.want_spread.is_some() {
            return;
        }
        let now = Instant::now();
        if let Some(rate) = self.rate.accept(now, sys::thread_cpu_time) {
            self.want_spread = Some(now);
            self.spread_rate = rate;
        }
    }

    /// Whether new connections go straight to the workers now.
    pub(super) fn spreading(&self) -> bool {
        self.attached != Program::Primary
    }

    /// Sets the shared socket's queue length (the listener's grew: a worker
    /// asked for a longer one).
    pub(super) fn relisten(&self, backlog: i32) {
        // SAFETY: listen(2) on a listening socket we hold; it only resizes
        // its queue.
        unsafe { libc::listen(self.shared.as_raw_fd(), backlog) };
    }

    /// When this listener needs the loop next.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if let Some(since) = self.want_spread {
            return Some(since); // due at once (a time already past)
        }
        let since = self.spreading?;
        Some(match self.counting {
            Some(asked) => asked + COUNT_WAIT,
            None => since + PROBE_AFTER,
        })
    }
}

impl Loop {
    /// `join_listener` for an offloaded `rr` listener: a dup of the shared
    /// socket for worker `worker` to listen on, or `None` when it cannot be
    /// made (the worker then only gets connections from the primary, and the
    /// listener stays exact while it is there).
    pub(super) fn offload_join(&mut self, lid: u32, worker: u32) -> Option<OwnedFd> {
        let o = self.listeners.get_mut(&lid)?.offload.as_mut()?;
        let pass = o.shared.try_clone().ok()?;
        if !o.joined.contains(&worker) {
            o.joined.push(worker);
        }
        Some(pass)
    }

    /// Worker `worker` no longer takes connections of `lid`. `gone`: it
    /// no longer polls the shared socket either (closed its server, or
    /// died); otherwise it is told to stop listening on it.
    pub(super) fn offload_leave(&mut self, lid: u32, worker: u32, gone: bool) {
        if self.offload_forget(lid, worker) && !gone {
            if let Some(w) = self.workers.get(&worker) {
                let body = format!(r#"{{"op":"unlisten","key":{lid}}}"#);
                let _ = w
                    .channel
                    .send_frame(Kind::Control, 0, 0, body.as_bytes(), None);
            }
        }
        self.offload_program(lid);
    }

    /// Worker `worker` closed its server of `lid`: it no longer listens on
    /// the shared socket (the program follows once it left the listener).
    /// Returns whether it had been given the shared socket.
    pub(super) fn offload_forget(&mut self, lid: u32, worker: u32) -> bool {
        let Some(o) = self
            .listeners
            .get_mut(&lid)
            .and_then(|l| l.offload.as_mut())
        else {
            return false;
        };
        let Some(pos) = o.joined.iter().position(|w| *w == worker) else {
            return false;
        };
        o.joined.remove(pos);
        true
    }

    /// The offloaded listeners whose offload state satisfies `pred`.
    fn offloaded_where(&self, pred: impl Fn(&Offload) -> bool) -> Vec<u32> {
        self.listeners
            .iter()
            .filter(|(_, l)| l.offload.as_ref().is_some_and(&pred))
            .map(|(lid, _)| *lid)
            .collect()
    }

    /// `offload_leave(.., gone)` for every listener `worker` was spread to.
    pub(super) fn offload_gone(&mut self, worker: u32) {
        for lid in self.offloaded_where(|o| o.joined.contains(&worker)) {
            self.offload_leave(lid, worker, true);
        }
    }

    /// The program listener `lid` should run now, attached if it changed.
    /// Going back to exact because the workers cannot all take from the
    /// shared socket any more, what queued on it is accepted here and
    /// dispatched like any connection (for a rate probe the workers take it).
    pub(super) fn offload_program(&mut self, lid: u32) {
        let Some(l) = self.listeners.get(&lid) else {
            return;
        };
        let Some(o) = l.offload.as_ref() else {
            return;
        };
        let workers = &self.workers;
        let sup = &self.sup;
        let eligible = !l.workers.is_empty()
            && l.workers.iter().all(|id| {
                o.joined.contains(id)
                    && !sup.counts_connections(*id)
                    && workers
                        .get(id)
                        .is_some_and(|w| w.connected && w.weight == 1)
            });
        let program = if o.spreading.is_some() && eligible {
            Program::Shared
        } else {
            Program::Primary
        };
        if program == o.attached {
            return;
        }
        let attached = offload::attach(&o.primary, program).is_ok();
        let l = self.listeners.get_mut(&lid).expect("listener exists");
        let o = l.offload.as_mut().expect("offload exists");
        if attached {
            o.attached = program;
        } else {
            o.spreading = None;
            o.counting = None;
        }
        if o.attached == Program::Primary && !eligible {
            let mut n = 0;
            while let Ok(Some(c)) = listener::accept(&o.shared) {
                n += 1;
                l.pending.push_back(Pending::new(c));
            }
            if n > 0 {
                l.accepted += n;
                self.counters.accepted += n;
                self.dispatch(lid);
            }
        }
    }

    /// When any offloaded listener needs the loop next.
    pub(super) fn offload_deadline(&self) -> Option<Instant> {
        self.listeners
            .values()
            .filter_map(|l| l.offload.as_ref()?.deadline())
            .min()
    }

    /// The offload's mode changes, once per loop turn.
    pub(super) fn offload_timers(&mut self) {
        let now = Instant::now();
        for lid in self.offloaded_where(|o| o.deadline().is_some_and(|t| t <= now)) {
            let Some(l) = self.listeners.get(&lid) else {
                continue;
            };
            // What the listener's workers took from the shared socket so far
            // (their last answers: to the count question when evaluating it,
            // else to the stats heartbeat), and whether every worker asked
            // has answered the question.
            let direct: u64 = l
                .workers
                .iter()
                .map(|w| self.sup.direct_connections(*w))
                .sum();
            let answered = l.offload.as_ref().is_none_or(|o| {
                o.counting.is_none_or(|asked| {
                    o.joined
                        .iter()
                        .all(|w| self.sup.direct_reported_since(*w, asked))
                })
            });
            let Some(o) = self
                .listeners
                .get_mut(&lid)
                .and_then(|l| l.offload.as_mut())
            else {
                continue;
            };
            if o.want_spread.take().is_some() {
                o.spreading = Some(now);
                o.counting = None;
                o.direct_since = direct;
            } else if let (Some(since), Some(asked)) = (o.spreading, o.counting.take()) {
                // The rate is what the workers took themselves, as they
                // counted it when asked. A worker that has not answered in
                // `COUNT_WAIT` has a stuck or slow event loop: the exact
                // mode would hand it a window of connections, so the
                // listener goes on spreading (the others take them) and
                // measures again from here.
                let took = direct.saturating_sub(o.direct_since);
                if !answered || keeps_spreading(took, o.spread_rate, asked.duration_since(since)) {
                    o.spreading = Some(asked);
                    o.direct_since = direct;
                } else {
                    o.spreading = None;
                    o.rate.restart(now);
                }
            } else if o.spreading.is_some() {
                // Ask every worker spread to: one frame each per second, in
                // place of a report from each one every few milliseconds.
                o.counting = Some(now);
                for id in &o.joined {
                    if let Some(w) = self.workers.get(id) {
                        let _ =
                            w.channel
                                .send_frame(Kind::Control, 0, 0, br#"{"op":"count"}"#, None);
                    }
                }
                continue;
            }
            self.offload_program(lid);
        }
    }
}
