//! The `rr` offload on the reactor thread: when to let the kernel hand new
//! connections straight to the workers, and when to take them back.
//!
//! An `rr` TCP listener (Linux) is a `SO_REUSEPORT` group held by the
//! primary: its own socket at index 0, then one socket per worker, passed to
//! the worker, which listens on it as well as taking the connections the
//! primary hands over (see `src/offload.rs` for the kernel side).
//!
//! - **Exact** (the start, and whenever in doubt): every connection queues on
//!   the primary's socket and is dispatched one by one, in order, with the
//!   window of unacknowledged connections. Keep-alive pools and small bursts
//!   get an exact round robin.
//! - **Spread**: once [`SPREAD_BURST`] connections were accepted within
//!   [`SPREAD_WINDOW`] (5,000 a second or more), the group's program sends new
//!   connections to the workers' sockets at random, weighted, and the
//!   primary does no work per connection. Every [`PROBE_AFTER`] the listener
//!   goes back to exact for a moment to measure the rate again.
//! - **Never lost**: every socket stays the primary's. A worker that leaves
//!   (closes its server, disconnects, retires, dies) is taken out of the
//!   program first; what queued on its socket is accepted here and handed to
//!   the others; its socket stops listening only once the worker no longer
//!   polls it (or is gone), after a grace for handshakes in flight.
//! - **Stuck workers**: while spreading, every [`TICK`] the queue of each
//!   worker's socket is read (`TCP_INFO`). When connections wait there, the
//!   worker's channel gets a tiny control frame, and the kernel says whether
//!   the worker read it (`SIOCOUTQ`): a worker that left it unread on two
//!   ticks in a row while connections waited has a stuck event loop. It is a
//!   suspect: it leaves the program, its queue is handed to the others, and
//!   the primary gives it one connection at a time (the others a window)
//!   until it acknowledges one; then it is back. A suspect that was given
//!   nothing is tried again after [`SUSPECT_RETRY`].
//!
//! Spreading is not used while a worker of the listener has no socket of its
//! own, or counts connections for recycling (`maxConnections`): only the
//! exact mode counts them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Loop, Pending};
use crate::frame::Kind;
use crate::listener::{self, ListenRequest};
use crate::offload::{self, Program};

/// The rate measurement of the exact mode: this many accepts (by default;
/// `Config::offload_burst`)...
pub const SPREAD_BURST: u32 = 256;
/// ...within this time switch to spreading.
pub(super) const SPREAD_WINDOW: Duration = Duration::from_millis(50);
/// How long a listener spreads before it measures the rate again.
pub(super) const PROBE_AFTER: Duration = Duration::from_secs(1);
/// How often the workers' queues are looked at while spreading.
pub(super) const TICK: Duration = Duration::from_millis(10);
/// How long a leaving worker's socket keeps listening after the worker let
/// go of it (handshakes in flight complete on it, then it is drained).
pub(super) const CLOSE_GRACE: Duration = Duration::from_millis(20);
/// A suspect that was given nothing to prove itself with is tried again.
pub(super) const SUSPECT_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the program when eligible.
    Active,
    /// Out of the program; its worker may still poll the socket.
    Leaving,
    /// Its worker let go of it: stops listening at this time.
    Closing(Instant),
}

struct Member {
    fd: Arc<OwnedFd>,
    /// `None` for the primary's own socket (index 0).
    worker: Option<u32>,
    state: State,
    /// Out of the program since then, until it acknowledges a connection.
    suspect: Option<Instant>,
    /// Ticks in a row with connections queued and the worker's channel unread.
    stalled: u8,
}

/// The offload state of one `rr` listener.
pub(super) struct Offload {
    /// The group in the kernel's order (joined at listen(2); a socket that
    /// stops listening is replaced by the last one, like `Vec::swap_remove`).
    members: Vec<Member>,
    template: ListenRequest,
    attached: Program,
    /// Spreading since then; `None`: exact.
    spreading: Option<Instant>,
    rate_start: Instant,
    rate_count: u32,
    /// The rate says spread; done on the next loop turn.
    want_spread: bool,
    /// Accepts within [`SPREAD_WINDOW`] that start spreading.
    burst: u32,
    next_tick: Instant,
}

impl Offload {
    /// Starts the offload for a listener whose socket `fd` was bound with
    /// [`listener::bind_group`]; `None` where the kernel refuses the program.
    pub(super) fn new(fd: &Arc<OwnedFd>, template: &ListenRequest, burst: u32) -> Option<Offload> {
        offload::attach(fd, &Program::Primary).ok()?;
        let now = Instant::now();
        Some(Offload {
            members: vec![Member {
                fd: fd.clone(),
                worker: None,
                state: State::Active,
                suspect: None,
                stalled: 0,
            }],
            template: template.clone(),
            attached: Program::Primary,
            spreading: None,
            rate_start: now,
            rate_count: 0,
            want_spread: false,
            next_tick: now,
            burst: burst.max(1),
        })
    }

    /// Counts a connection the primary accepted (exact mode's rate).
    pub(super) fn accepted(&mut self) {
        if self.spreading.is_some() {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.rate_start) > SPREAD_WINDOW {
            self.rate_start = now;
            self.rate_count = 0;
        }
        self.rate_count += 1;
        if self.rate_count >= self.burst {
            self.want_spread = true;
        }
    }

    /// The workers that look stuck (usually none: no allocation then).
    pub(super) fn suspects(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter(|m| m.suspect.is_some())
            .filter_map(|m| m.worker)
            .collect()
    }

    /// Whether new connections go straight to the workers now.
    pub(super) fn spreading(&self) -> bool {
        self.spreading.is_some()
    }

    fn member_of(&self, worker: u32) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.worker == Some(worker) && m.state == State::Active)
    }

    /// Sets the queue length of every socket of the group (the listener's
    /// grew: a worker asked for a longer one).
    pub(super) fn relisten(&self, backlog: i32) {
        for m in self.members.iter().skip(1) {
            // SAFETY: listen(2) on a listening socket we hold; it only
            // resizes its queue.
            unsafe { libc::listen(m.fd.as_raw_fd(), backlog) };
        }
    }

    /// When this listener needs the loop next.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let closing = self.members.iter().filter_map(|m| match m.state {
            State::Closing(t) => Some(t),
            _ => None,
        });
        let tick = self.spreading.map(|_| self.next_tick);
        // Due at once (a time already past).
        let now = self.want_spread.then_some(self.rate_start);
        closing.chain(tick).chain(now).min()
    }
}

/// Accepts what queued on `fd` into `pending` (for the other workers).
fn drain(fd: &OwnedFd, pending: &mut std::collections::VecDeque<Pending>) -> u64 {
    let mut n = 0;
    while let Ok(Some(c)) = listener::accept(fd) {
        n += 1;
        pending.push_back(Pending {
            fd: Arc::new(c),
            tries: 0,
        });
    }
    n
}

impl Loop {
    /// `join_listener` for an offloaded `rr` listener: the worker's own
    /// socket in the group (a dup to pass), or `None` when it cannot be
    /// made (the worker then only gets connections from the primary, and the
    /// listener stays exact).
    pub(super) fn offload_join(&mut self, lid: u32, worker: u32) -> Option<OwnedFd> {
        let l = self.listeners.get_mut(&lid)?;
        let sockname = l.sockname.clone();
        let o = l.offload.as_mut()?;
        if let Some(i) = o.member_of(worker) {
            return o.members[i].fd.try_clone().ok();
        }
        let bound = listener::bind_reuseport(&o.template, sockname.as_ref()).ok()?;
        let pass = bound.fd.try_clone().ok()?;
        o.members.push(Member {
            fd: Arc::new(bound.fd),
            worker: Some(worker),
            state: State::Active,
            suspect: None,
            stalled: 0,
        });
        Some(pass)
    }

    /// Worker `worker` no longer takes connections of `lid`: out of the
    /// program, and what queued on its socket goes to the others. `gone`:
    /// it no longer polls the socket either (closed its server, or died).
    pub(super) fn offload_leave(&mut self, lid: u32, worker: u32, gone: bool) {
        let Some(l) = self.listeners.get_mut(&lid) else {
            return;
        };
        let Some(o) = l.offload.as_mut() else {
            return;
        };
        let mut changed = false;
        for m in o.members.iter_mut().filter(|m| m.worker == Some(worker)) {
            match m.state {
                State::Active | State::Leaving => {
                    m.state = if gone {
                        State::Closing(Instant::now() + CLOSE_GRACE)
                    } else {
                        State::Leaving
                    };
                    changed = true;
                }
                State::Closing(_) => {}
            }
        }
        if changed {
            self.offload_program(lid);
            self.offload_drain_leaving(lid);
        }
    }

    /// `offload_leave(.., gone)` for every listener `worker` had a socket in.
    pub(super) fn offload_gone(&mut self, worker: u32) {
        let lids: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(_, l)| {
                l.offload
                    .as_ref()
                    .is_some_and(|o| o.members.iter().any(|m| m.worker == Some(worker)))
            })
            .map(|(lid, _)| *lid)
            .collect();
        for lid in lids {
            self.offload_leave(lid, worker, true);
        }
    }

    /// Worker `worker` acknowledged connections: it is not stuck.
    pub(super) fn offload_alive(&mut self, worker: u32) {
        let lids: Vec<u32> = self
            .listeners
            .iter_mut()
            .filter_map(|(lid, l)| {
                let o = l.offload.as_mut()?;
                let m = o
                    .members
                    .iter_mut()
                    .find(|m| m.worker == Some(worker) && m.suspect.is_some())?;
                m.suspect = None;
                m.stalled = 0;
                Some(*lid)
            })
            .collect();
        for lid in lids {
            self.offload_program(lid);
        }
    }

    /// Hands what queued on the sockets of leaving workers to the others.
    fn offload_drain_leaving(&mut self, lid: u32) {
        let Some(l) = self.listeners.get_mut(&lid) else {
            return;
        };
        let Some(o) = l.offload.as_ref() else {
            return;
        };
        let mut n = 0;
        for m in o.members.iter().filter(|m| m.state != State::Active) {
            n += drain(&m.fd, &mut l.pending);
        }
        if n > 0 {
            l.accepted += n;
            self.counters.accepted += n;
            self.dispatch(lid);
        }
    }

    /// The program listener `lid` should run now, attached if it changed.
    pub(super) fn offload_program(&mut self, lid: u32) {
        let window = self.config.window;
        let Some(l) = self.listeners.get(&lid) else {
            return;
        };
        let Some(o) = l.offload.as_ref() else {
            return;
        };
        let workers = &self.workers;
        let sup = &self.sup;
        // Every worker of the listener must have a socket in the group, and
        // none may count connections for recycling.
        let all_members = l.workers.iter().all(|w| o.member_of(*w).is_some());
        let counting = l.workers.iter().any(|w| sup.counts_connections(*w));
        let program = if o.spreading.is_some() && all_members && !counting {
            let spread: Vec<(u32, u32)> = o
                .members
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let w = workers.get(&m.worker?)?;
                    let ok = m.state == State::Active
                        && m.suspect.is_none()
                        && w.connected
                        && w.inflight.len() < window
                        && l.workers.contains(&m.worker?);
                    ok.then_some((i as u32, w.weight))
                })
                .collect();
            Program::Spread(spread)
        } else {
            Program::Primary
        };
        let program = match program {
            Program::Spread(s) if s.iter().all(|(_, w)| *w == 0) => Program::Primary,
            p => p,
        };
        if program == o.attached {
            return;
        }
        let ok = offload::attach(&o.members[0].fd, &program).is_ok();
        let l = self.listeners.get_mut(&lid).expect("listener exists");
        let o = l.offload.as_mut().expect("offload exists");
        if ok {
            o.attached = program;
        } else {
            // The kernel took the first program and refuses this one: stay
            // exact (the program attached last still runs; ret 0 is what we
            // want, so try that once more).
            o.spreading = None;
            if offload::attach(&o.members[0].fd, &Program::Primary).is_ok() {
                o.attached = Program::Primary;
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

    /// The offload's timed work, once per loop turn: mode changes, the
    /// stuck-worker ticks, and the sockets of workers that left.
    pub(super) fn offload_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(_, l)| {
                l.offload
                    .as_ref()
                    .is_some_and(|o| o.deadline().is_some_and(|t| t <= now))
            })
            .map(|(lid, _)| *lid)
            .collect();
        for lid in due {
            self.offload_turn(lid, now);
        }
    }

    fn offload_turn(&mut self, lid: u32, now: Instant) {
        let Some(l) = self.listeners.get_mut(&lid) else {
            return;
        };
        let Some(o) = l.offload.as_mut() else {
            return;
        };
        let mut handed = 0;
        // Sockets whose worker let go of them: drain, stop, leave the group.
        let mut i = 1;
        while i < o.members.len() {
            match o.members[i].state {
                State::Closing(t) if t <= now => {
                    let m = o.members.swap_remove(i);
                    handed += drain(&m.fd, &mut l.pending);
                    offload::stop_listening(&m.fd);
                }
                _ => i += 1,
            }
        }
        if o.want_spread {
            o.want_spread = false;
            o.spreading = Some(now);
            o.next_tick = now + TICK;
        } else if let Some(since) = o.spreading {
            if now.duration_since(since) >= PROBE_AFTER {
                // Measure the rate again, in exact mode.
                o.spreading = None;
                o.rate_start = now;
                o.rate_count = 0;
            } else if o.next_tick <= now {
                o.next_tick = now + TICK;
                for m in o.members.iter_mut().skip(1) {
                    let Some(w) = m.worker.and_then(|id| self.workers.get(&id)) else {
                        continue;
                    };
                    if m.state != State::Active || !w.connected {
                        continue;
                    }
                    if let Some(t) = m.suspect {
                        if now.duration_since(t) >= SUSPECT_RETRY {
                            m.suspect = None;
                        }
                        continue;
                    }
                    if offload::queued(&m.fd).unwrap_or(0) == 0 {
                        m.stalled = 0;
                        continue;
                    }
                    // Connections wait: has the worker's loop read its channel?
                    let unread = offload::unread(&w.channel).unwrap_or(0);
                    if unread == 0 {
                        m.stalled = 0;
                        let _ =
                            w.channel
                                .send_frame(Kind::Control, 0, 0, br#"{"op":"tick"}"#, None);
                        continue;
                    }
                    m.stalled += 1;
                    if m.stalled >= 2 {
                        m.suspect = Some(now);
                        m.stalled = 0;
                        handed += drain(&m.fd, &mut l.pending);
                    }
                }
            }
        }
        if handed > 0 {
            l.accepted += handed;
            self.counters.accepted += handed;
        }
        self.offload_program(lid);
        self.dispatch(lid);
    }
}
