//! Listeners and dispatch on the reactor thread: listen requests (bind once
//! per key, join, leave, close), the `reuseport` slot sockets and their hold
//! time, and the hand-off of each accepted connection to a worker by policy,
//! with the window of unacknowledged connections and the acknowledgements.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Counters, Event, InFlight, ListenReply, Listener, Loop, Pending, SlotSocket,
    DEFAULT_REUSEPORT_HOLD, T_LISTENER,
};
use crate::frame::Kind;
use crate::listener::{self, ListenRequest};
use crate::policy::{self, Policy};
use crate::poller;

impl Loop {
    pub(super) fn reply(&mut self, id: u32, req: u64, errno: i32, lid: u32, fd: Option<OwnedFd>) {
        let l = self.listeners.get(&lid);
        let body = serde_json::to_vec(&ListenReply {
            errno,
            key: lid,
            policy: l.map(|l| l.policy.name()),
            backlog: l.filter(|l| l.offload.is_some()).map(|l| l.backlog),
            sockname: l.and_then(|l| l.sockname.as_ref()),
            data: l.and_then(|l| l.data.as_ref()),
        })
        .unwrap_or_default();
        if let Some(w) = self.workers.get(&id) {
            let _ = w.channel.send_frame(Kind::ListenReply, 0, req, &body, fd);
        }
    }

    pub(super) fn listen_request(&mut self, id: u32, req: u64, payload: &[u8]) {
        let parsed: Result<ListenRequest, _> = serde_json::from_slice(payload);
        let Ok(r) = parsed else {
            self.reply(id, req, -libc::EINVAL, 0, None);
            return;
        };
        let slot = self.workers.get(&id).map_or(id, |w| w.slot);
        let lid = match self.keys.get(&r.key) {
            Some(lid) => *lid,
            None => match self.new_listener(&r, slot) {
                Ok(lid) => lid,
                Err(errno) => {
                    self.reply(id, req, errno, 0, None);
                    return;
                }
            },
        };
        let pass = match self.join_listener(lid, id, slot, &r) {
            Ok(fd) => fd,
            Err(errno) => {
                self.reply(id, req, errno, 0, None);
                let l = self.listeners.get(&lid).expect("listener exists");
                if l.workers.is_empty() && l.slots.values().all(|s| s.expires.is_none()) {
                    self.close_listener(lid);
                }
                return;
            }
        };
        if let Some(w) = self.workers.get_mut(&id) {
            if !w.listening.contains(&lid) {
                w.listening.push(lid);
            }
        }
        self.reply(id, req, 0, lid, pass);
        self.dispatch(lid);
    }

    /// Binds the listener for a key the first time a worker asks for it; the
    /// request's policy becomes the listener's (see
    /// [`Policy::for_listener`]). Returns the listener id or a negative errno.
    pub(super) fn new_listener(&mut self, r: &ListenRequest, slot: u32) -> Result<u32, i32> {
        let tcp = r.kind() == listener::Kind::Tcp;
        let policy = Policy::for_listener(r.policy.as_deref(), r.is_udp(), tcp);
        // A socket passed by systemd socket activation serves the matching
        // address and port instead of a new bind.
        let port = r.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
        let activated = (tcp && policy != Policy::ReusePort)
            .then(|| {
                self.inherited
                    .iter()
                    .position(|i| crate::systemd::matches(&i.addr, r.address.as_deref(), port))
            })
            .flatten()
            .map(|pos| self.inherited.remove(pos));
        // `rr` over TCP founds a SO_REUSEPORT group for the offload.
        let offload = policy == Policy::RoundRobin
            && tcp
            && activated.is_none()
            && self.config.offload
            && r.rr_offload != Some(false)
            && crate::offload::supported();
        let bound = if let Some(i) = activated {
            listener::Bound::from(i.fd)
        } else if policy == Policy::ReusePort {
            listener::bind_reuseport(r, None)?
        } else if offload {
            listener::bind_group(r)?
        } else {
            listener::bind(r)?
        };
        let listener::Bound { fd, unlink } = bound;
        let lid = self.next_listener;
        let sockname = listener::sockname(&fd);
        if policy.primary_accepts() {
            if let Err(e) = self.poller.add(fd.as_raw_fd(), T_LISTENER | lid as u64, 0) {
                if let Some(path) = &unlink {
                    let _ = std::fs::remove_file(path);
                }
                return Err(-e.raw_os_error().unwrap_or(libc::EIO));
            }
        }
        self.next_listener += 1;
        let (fd, slots) = if policy == Policy::ReusePort {
            let first = SlotSocket {
                fd: Arc::new(fd),
                holders: Vec::new(),
                expires: None,
            };
            (None, HashMap::from([(slot, first)]))
        } else {
            (Some(Arc::new(fd)), HashMap::new())
        };
        let offload = match (&fd, offload) {
            (Some(fd), true) => super::offload::Offload::new(
                fd,
                sockname.as_ref(),
                r,
                self.config.offload_burst,
                self.config.offload_cpu,
            ),
            _ => None,
        };
        self.keys.insert(r.key.clone(), lid);
        self.listeners.insert(
            lid,
            Listener {
                key: r.key.clone(),
                fd,
                policy,
                slots,
                hold: r
                    .reuse_port_hold
                    .map_or(DEFAULT_REUSEPORT_HOLD, Duration::from_millis),
                template: (policy == Policy::ReusePort).then(|| r.clone()),
                workers: Vec::new(),
                next: 0,
                pending: VecDeque::new(),
                armed: false,
                sockname,
                unlink,
                data: None,
                current: HashMap::new(),
                backlog: listener::backlog_of(r),
                accepted: 0,
                offload,
                wait_until: None,
            },
        );
        Ok(lid)
    }

    /// Adds worker `id` (in `slot`) to listener `lid`; returns the socket to
    /// pass to it (`none`: the listener's; `reuseport`: its slot's, bound now
    /// unless the slot still holds one) or a negative errno.
    pub(super) fn join_listener(
        &mut self,
        lid: u32,
        id: u32,
        slot: u32,
        r: &ListenRequest,
    ) -> Result<Option<OwnedFd>, i32> {
        let l = self.listeners.get_mut(&lid).expect("listener exists");
        if l.data.as_ref().is_none_or(|d| d.is_null()) {
            l.data = r.data.clone();
        }
        // The backlog a worker asks for is honoured: the largest one asked so
        // far (listen(2) again only changes the queue length).
        let asked = listener::backlog_of(r);
        if asked > l.backlog {
            l.backlog = asked;
            if let Some(fd) = l.fd.as_ref() {
                // SAFETY: listen(2) on a listening socket we own; it only resizes its queue.
                unsafe { libc::listen(fd.as_raw_fd(), asked) };
            }
            if let Some(o) = l.offload.as_ref() {
                o.relisten(asked);
            }
        }
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| -e.raw_os_error().unwrap_or(libc::EMFILE))
        };
        let pass = match l.policy {
            Policy::Shared => Some(dup(l.fd.as_ref().expect("shared listener fd"))?),
            Policy::ReusePort => {
                if !l.slots.contains_key(&slot) {
                    let template = l.template.as_ref().expect("reuseport template");
                    let bound = listener::bind_reuseport(template, l.sockname.as_ref())?;
                    l.slots.insert(
                        slot,
                        SlotSocket {
                            fd: Arc::new(bound.fd),
                            holders: Vec::new(),
                            expires: None,
                        },
                    );
                }
                let s = l.slots.get_mut(&slot).expect("slot socket");
                let fd = dup(&s.fd)?;
                // A replacement takes the slot over, with what queued on it.
                s.expires = None;
                if !s.holders.contains(&id) {
                    s.holders.push(id);
                }
                Some(fd)
            }
            Policy::RoundRobin | Policy::Least | Policy::Hash => None,
        };
        if !l.workers.contains(&id) {
            l.workers.push(id);
        }
        if l.offload.is_some() {
            // The worker listens on the group's shared socket as well.
            return Ok(self.offload_join(lid, id));
        }
        Ok(pass)
    }

    /// Removes worker `id` from listener `lid`; closes the listener when it was
    /// the last one (Node closes the primary's handle then, freeing the port).
    ///
    /// `reuseport`: when the worker died (its channel is gone), its slot's
    /// socket is kept for the listener's hold time so that a replacement in
    /// the same slot takes it over with the connections queued on it; when it
    /// left on purpose (closed its server, was disconnected) nobody is coming
    /// back: what queued on the slot is accepted here and handed to the other
    /// workers, and the socket closes.
    pub(super) fn leave_listener(&mut self, id: u32, lid: u32) {
        let died = self.workers.get(&id).is_none_or(|w| !w.connected);
        // A supervised slot that will be restarted keeps the listener open, so
        // that its port stays and queued connections wait for the new worker.
        let supervised = self.sup.holds_listeners();
        let Some(l) = self.listeners.get_mut(&lid) else {
            return;
        };
        if let Some(pos) = l.workers.iter().position(|w| *w == id) {
            l.workers.remove(pos);
            if l.next > pos {
                l.next -= 1;
            }
            if l.next >= l.workers.len() {
                l.next = 0;
            }
        }
        let mut release = Vec::new();
        for (slot, s) in l.slots.iter_mut() {
            if let Some(pos) = s.holders.iter().position(|w| *w == id) {
                s.holders.remove(pos);
                if s.holders.is_empty() {
                    if died && !l.hold.is_zero() {
                        s.expires = Some(Instant::now() + l.hold);
                    } else {
                        release.push(*slot);
                    }
                }
            }
        }
        for slot in release {
            Self::release_slot(l, slot, &mut self.counters);
        }
        let held = l.slots.values().any(|s| s.expires.is_some());
        if l.workers.is_empty() && !held && !supervised {
            self.close_listener(lid);
        } else {
            self.offload_leave(lid, id, died);
            self.dispatch(lid);
        }
    }

    /// `reuseport`: closes a slot's socket after accepting what queued on it
    /// (those connections go to the listener's other workers).
    pub(super) fn release_slot(l: &mut Listener, slot: u32, counters: &mut Counters) {
        if let Some(s) = l.slots.remove(&slot) {
            while let Ok(Some(fd)) = listener::accept(&s.fd) {
                counters.accepted += 1;
                l.pending.push_back(Pending::new(fd));
            }
        }
    }

    /// When the next abandoned `reuseport` slot socket expires.
    pub(super) fn hold_deadline(&self) -> Option<Instant> {
        self.listeners
            .values()
            .flat_map(|l| l.slots.values())
            .filter_map(|s| s.expires)
            .min()
    }

    /// Releases the `reuseport` slot sockets whose replacement did not come.
    pub(super) fn expire_holds(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(_, l)| {
                l.slots
                    .values()
                    .any(|s| s.expires.is_some_and(|t| t <= now))
            })
            .map(|(lid, _)| *lid)
            .collect();
        for lid in due {
            let l = self.listeners.get_mut(&lid).expect("listener exists");
            let expired: Vec<u32> = l
                .slots
                .iter()
                .filter(|(_, s)| s.expires.is_some_and(|t| t <= now))
                .map(|(slot, _)| *slot)
                .collect();
            for slot in expired {
                Self::release_slot(l, slot, &mut self.counters);
            }
            let held = l.slots.values().any(|s| s.expires.is_some());
            if l.workers.is_empty() && !held {
                self.close_listener(lid);
            } else {
                self.dispatch(lid);
            }
        }
    }

    /// When the next listener waiting for a full window gives up waiting.
    pub(super) fn wait_deadline(&self) -> Option<Instant> {
        self.listeners.values().filter_map(|l| l.wait_until).min()
    }

    /// Dispatches again where a wait for a full window is over: the
    /// connection goes to the next choice with room.
    pub(super) fn expire_waits(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.wait_until.is_some_and(|t| t <= now))
            .map(|(lid, _)| *lid)
            .collect();
        for lid in due {
            self.dispatch(lid);
        }
    }

    pub(super) fn close_listener(&mut self, lid: u32) {
        if let Some(l) = self.listeners.remove(&lid) {
            if let Some(fd) = &l.fd {
                if l.policy.primary_accepts() {
                    self.poller.delete(fd.as_raw_fd());
                }
            }
            self.keys.remove(&l.key);
            self.counters.closed += l.pending.len() as u64;
            // Pending connections are closed with it: nobody is left to serve them.
            // Like libuv closing a pipe server it bound, remove the socket file.
            if let Some(path) = &l.unlink {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    pub(super) fn set_armed(&mut self, lid: u32, on: bool) {
        let on = on && self.accept_backoff.is_none();
        if let Some(l) = self.listeners.get_mut(&lid) {
            if !l.policy.primary_accepts() {
                return;
            }
            if let Some(fd) = &l.fd {
                if l.armed != on {
                    let ev = if on { poller::READABLE } else { 0 };
                    if self
                        .poller
                        .modify(fd.as_raw_fd(), T_LISTENER | lid as u64, ev)
                        .is_ok()
                    {
                        l.armed = on;
                    }
                }
            }
        }
    }

    /// Hands connections of listener `lid` to its workers until either no
    /// worker has room or nothing is waiting. `rr`, `least` and `hash`
    /// accept here; `reuseport` only hands out what was drained from a slot
    /// socket that closed (round robin); `none` never dispatches.
    ///
    /// Every policy only hands a connection to a worker with room in its
    /// window, and nothing is accepted while no worker has room (the
    /// listener is disarmed until an ack opens a window). Weighted `rr` and
    /// `hash` wait for the worker they chose when its window is full, until
    /// it has been full for [`Config::patience`](super::Config::patience)
    /// (an ack or that deadline dispatches again); after that they take the
    /// next choice with room, so no connection waits long behind a stuck
    /// worker while another is free.
    pub(super) fn dispatch(&mut self, lid: u32) {
        let window = self.config.window;
        let patience = self.config.patience;
        loop {
            let Some(l) = self.listeners.get_mut(&lid) else {
                return;
            };
            l.wait_until = None;
            let accepts = l.policy.primary_accepts();
            if l.policy == Policy::Shared || (!accepts && l.pending.is_empty()) {
                return;
            }
            let n = l.workers.len();
            let workers = &self.workers;
            let info = |pos: usize| -> Option<policy::Slot> {
                let w = workers.get(&l.workers[pos])?;
                (w.connected && w.inflight.len() < window).then(|| policy::Slot {
                    slot: w.slot,
                    open: w.open.saturating_add(w.inflight.len() as u32),
                })
            };
            let Some(first) = policy::pick_rr(n, l.next, info) else {
                self.set_armed(lid, false);
                return;
            };
            let conn = match l.pending.pop_front() {
                Some(p) => p,
                None => {
                    if self.accept_backoff.is_some() {
                        return;
                    }
                    let Some(fd) = l.fd.as_ref() else {
                        return;
                    };
                    match listener::accept(fd) {
                        Ok(Some(fd)) => {
                            self.counters.accepted += 1;
                            l.accepted += 1;
                            if let Some(o) = l.offload.as_mut() {
                                o.accepted();
                            }
                            Pending::new(fd)
                        }
                        Ok(None) => {
                            self.set_armed(lid, true);
                            return;
                        }
                        Err(e) => {
                            let transient = matches!(
                                e.raw_os_error(),
                                Some(libc::EMFILE)
                                    | Some(libc::ENFILE)
                                    | Some(libc::ENOBUFS)
                                    | Some(libc::ENOMEM)
                            );
                            self.events.push(Event::Error {
                                worker: 0,
                                message: format!("accept failed on {}: {e}", l.key),
                            });
                            if transient {
                                self.accept_backoff =
                                    Some(Instant::now() + Duration::from_millis(100));
                            }
                            self.set_armed(lid, false);
                            return;
                        }
                    }
                }
            };
            // A connection some workers refused goes to one that did not.
            let refused = &conn.refused;
            let info = |pos: usize| -> Option<policy::Slot> {
                if refused.contains(&l.workers[pos]) {
                    return None;
                }
                info(pos)
            };
            // Any connected worker, room or not: what weighted rr and hash
            // would choose without the window.
            let connected = |pos: usize| -> Option<policy::Slot> {
                let wid = l.workers[pos];
                let w = workers.get(&wid)?;
                (w.connected && !refused.contains(&wid)).then_some(policy::Slot {
                    slot: w.slot,
                    open: 0,
                })
            };
            let first = if refused.is_empty() {
                first
            } else if let Some(pos) = policy::pick_rr(n, l.next, info) {
                pos
            } else if (0..n).any(|pos| connected(pos).is_some()) {
                // Only full workers have not refused it: it waits for one
                // of them at the head of the queue.
                l.pending.push_front(conn);
                self.set_armed(lid, false);
                return;
            } else {
                // Every worker left refused it (or is gone).
                self.counters.closed += 1;
                continue;
            };
            // A full worker is waited for while its window filled up less
            // than `patience` ago: until when.
            let wait_for = |pos: usize| -> Option<Instant> {
                let until = workers.get(&l.workers[pos])?.full_since? + patience;
                (Instant::now() < until).then_some(until)
            };
            let weighted = l.policy == Policy::RoundRobin
                && l.workers
                    .iter()
                    .any(|w| workers.get(w).is_some_and(|w| w.weight != 1));
            let smooth = |room: bool| -> Vec<(usize, u32, i64)> {
                (0..n)
                    .filter(|&pos| {
                        if room {
                            info(pos).is_some()
                        } else {
                            connected(pos).is_some()
                        }
                    })
                    .map(|pos| {
                        let wid = l.workers[pos];
                        let weight = workers.get(&wid).map_or(1, |w| w.weight);
                        (pos, weight, l.current.get(&wid).copied().unwrap_or(0))
                    })
                    .collect()
            };
            let mut wait = None;
            let mut weights = None;
            let pos = match l.policy {
                Policy::Least => policy::pick_least(n, l.next, info),
                // Sticky by peer address; a unix peer has none: round robin.
                Policy::Hash => listener::peer_ip(&conn.fd).and_then(|ip| {
                    let key = policy::hash_ip(ip);
                    let slot_at = |pos: usize| workers.get(&l.workers[pos]).map_or(0, |w| w.slot);
                    // The workers that refused it are out of the ranking.
                    match policy::pick_hash(n, key, slot_at, connected) {
                        Some(home) if info(home).is_some() => Some(home),
                        home => match home.and_then(wait_for) {
                            Some(until) => {
                                wait = Some(until);
                                None
                            }
                            None => policy::pick_hash(n, key, slot_at, info),
                        },
                    }
                }),
                // Weighted round robin once any worker's weight is not 1.
                Policy::RoundRobin if weighted => {
                    let mut all = smooth(false);
                    match policy::pick_smooth(&mut all) {
                        Some(won) if info(won).is_some() => {
                            weights = Some(all);
                            Some(won)
                        }
                        won => match won.and_then(wait_for) {
                            Some(until) => {
                                wait = Some(until);
                                None
                            }
                            None => {
                                let mut cands = smooth(true);
                                let won = policy::pick_smooth(&mut cands);
                                weights = Some(cands);
                                won
                            }
                        },
                    }
                }
                _ => None,
            };
            if let Some(until) = wait {
                // Back to the head of the queue; nothing more is accepted
                // until an ack of that worker or `until`.
                l.pending.push_front(conn);
                l.wait_until = Some(until);
                self.set_armed(lid, false);
                return;
            }
            for (pos, _, cur) in weights.unwrap_or_default() {
                l.current.insert(l.workers[pos], cur);
            }
            let pos = pos.unwrap_or(first);
            let wid = l.workers[pos];
            l.next = (pos + 1) % n;
            let cid = self.next_conn;
            self.next_conn += 1;
            let w = self.workers.get_mut(&wid).expect("chosen worker exists");
            match w.channel.send_conn(cid, lid, conn.fd.clone()) {
                Ok(_) => {
                    // Counted once, at its first offer (not after a refusal).
                    let first_offer = conn.refused.is_empty();
                    w.inflight.insert(
                        cid,
                        InFlight {
                            fd: conn.fd,
                            listener: lid,
                            refused: conn.refused,
                        },
                    );
                    if w.inflight.len() >= window && w.full_since.is_none() {
                        w.full_since = Some(Instant::now());
                    }
                    if first_offer {
                        self.sup_connection(wid);
                    }
                }
                Err(_) => {
                    if let Some(l) = self.listeners.get_mut(&lid) {
                        l.pending.push_front(conn);
                    }
                    self.worker_gone(wid, None);
                }
            }
        }
    }

    /// A batch of acks from worker `id`, and maybe its load report (`least`).
    pub(super) fn acks(&mut self, id: u32, acks: &[(u64, bool)], load: Option<u32>) {
        let mut touched: Vec<u32> = Vec::new();
        let mut refusals: Vec<InFlight> = Vec::new();
        let window = self.config.window;
        {
            let Some(w) = self.workers.get_mut(&id) else {
                return;
            };
            if let Some(open) = load {
                w.open = open;
            }
            for &(cid, accepted) in acks {
                let Some(c) = w.inflight.remove(&cid) else {
                    continue;
                };
                if !touched.contains(&c.listener) {
                    touched.push(c.listener);
                }
                if accepted {
                    self.counters.acknowledged += 1;
                    continue; // our reference drops: the worker owns the connection now
                }
                refusals.push(c);
            }
            if w.inflight.len() < window {
                w.full_since = None;
            }
            for lid in &w.listening {
                if !touched.contains(lid) {
                    touched.push(*lid);
                }
            }
        }
        for c in refusals {
            let mut refused = c.refused;
            refused.push(id);
            self.requeue(c.listener, c.fd, refused);
        }
        for lid in touched {
            self.dispatch(lid);
        }
    }

    /// Queues a connection that the workers in `refused` would not take
    /// for another worker of listener `lid`, if one is connected; otherwise
    /// (every worker refused it, or the listener is gone) it closes here.
    /// True when it was queued (the caller dispatches).
    fn requeue(&mut self, lid: u32, fd: Arc<OwnedFd>, refused: Vec<u32>) -> bool {
        let workers = &self.workers;
        let other = |l: &Listener| {
            l.workers
                .iter()
                .any(|wid| !refused.contains(wid) && workers.get(wid).is_some_and(|w| w.connected))
        };
        match self.listeners.get_mut(&lid) {
            Some(l) if l.policy != Policy::Shared && other(l) => {
                self.counters.redispatched += 1;
                l.pending.push_back(Pending { fd, refused });
                true
            }
            _ => {
                self.counters.closed += 1;
                false
            }
        }
    }

    /// Worker `id` hands back a connection of listener `lid` that it took
    /// but will not serve, having read nothing from it (its server is
    /// closing; `lib/worker.js`): it goes to another worker of the listener,
    /// as a refused one does, and closes when no other worker is on it.
    ///
    /// `acknowledged`: the worker had taken it from the primary (it is not
    /// taken any more); otherwise it took it from an offloaded listener's
    /// shared socket itself, and the primary accepts it now, as it accepts
    /// what a closing slot socket drained. Either way, once nothing is held,
    /// `accepted == acknowledged + closed` still holds.
    pub(super) fn hand_back(&mut self, id: u32, lid: u32, fd: OwnedFd, acknowledged: bool) {
        let raw = fd.as_raw_fd();
        let stream = crate::sys::is_stream(raw).unwrap_or(false);
        if !stream || crate::sys::is_listening(raw).unwrap_or(true) {
            // Not something a worker's server took from a listener.
            self.worker_gone(
                id,
                Some(format!(
                    "worker {id}: a HandBack frame must carry an accepted connection (a stream socket, not a listening one); channel closed"
                )),
            );
            return;
        }
        if acknowledged {
            self.counters.acknowledged = self.counters.acknowledged.saturating_sub(1);
        } else {
            self.counters.accepted += 1;
            if let Some(l) = self.listeners.get_mut(&lid) {
                l.accepted += 1;
            }
        }
        // With nobody else to take it, it closes, as the worker's server
        // would have closed it.
        if self.requeue(lid, Arc::new(fd), vec![id]) {
            self.dispatch(lid);
        }
    }
}
