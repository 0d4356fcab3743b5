//! Dispatch policies: which worker gets the next connection of a listener.
//!
//! Pure selection logic, no sockets and no napi types: the reactor describes
//! its workers through a closure and gets back the position to hand the
//! connection to. Every picker only ever returns a worker that has room in its
//! window of unacknowledged connections, so a connection never waits behind a
//! stuck worker while another one is free.
//!
//! | policy | picks |
//! | --- | --- |
//! | [`Policy::RoundRobin`] | the next worker (in listen order) with room |
//! | [`Policy::Least`] | the worker with room and the fewest open connections; ties rotate |
//! | [`Policy::Hash`] | rendezvous (highest random weight) hash of the peer address over the worker slots; the best-ranked slot with room |
//! | [`Policy::Shared`], [`Policy::ReusePort`] | nobody: workers accept themselves (the reactor only hands out connections it drained from a socket it is closing, round robin) |

use std::net::IpAddr;

/// How a listener's connections reach workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `rr`: the primary accepts, the next worker with room gets it.
    RoundRobin,
    /// `none`: the primary binds once and passes the listening socket; workers accept.
    Shared,
    /// `reuseport`: one `SO_REUSEPORT` socket per worker slot, held by the
    /// primary; each worker accepts on its slot's socket.
    ReusePort,
    /// `least`: the primary accepts, the worker with the fewest open connections gets it.
    Least,
    /// `hash`: the primary accepts, a hash of the peer address picks the worker.
    Hash,
}

impl Policy {
    /// Parses a policy name (`rr`, `none`, `reuseport`, `least`, `hash`).
    pub fn from_name(name: &str) -> Option<Policy> {
        Some(match name {
            "rr" => Policy::RoundRobin,
            "none" => Policy::Shared,
            "reuseport" => Policy::ReusePort,
            "least" => Policy::Least,
            "hash" => Policy::Hash,
            _ => return None,
        })
    }

    /// The name [`Policy::from_name`] parses.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "rr",
            Policy::Shared => "none",
            Policy::ReusePort => "reuseport",
            Policy::Least => "least",
            Policy::Hash => "hash",
        }
    }

    /// The policy a listener gets when `requested` is asked for: datagram
    /// sockets are always shared (Node's SharedHandle: there is nothing to
    /// hand out but the socket), and `reuseport` needs a TCP address and port
    /// of its own to bind per slot, so unix paths and `listen({ fd })` fall
    /// back to round robin, as it does where the kernel does not balance
    /// SO_REUSEPORT sockets (anywhere but Linux). An unknown or missing name
    /// is round robin, like Node's `NODE_CLUSTER_SCHED_POLICY`.
    pub fn for_listener(requested: Option<&str>, udp: bool, tcp_address: bool) -> Policy {
        if udp {
            return Policy::Shared;
        }
        match requested.and_then(Policy::from_name) {
            // Only Linux spreads connections over SO_REUSEPORT sockets; on
            // macOS the last socket bound would take them all.
            Some(Policy::ReusePort) if !tcp_address || !REUSEPORT_BALANCES => Policy::RoundRobin,
            Some(p) => p,
            None => Policy::RoundRobin,
        }
    }

    /// Whether the primary accepts this listener's connections itself.
    pub fn primary_accepts(self) -> bool {
        matches!(self, Policy::RoundRobin | Policy::Least | Policy::Hash)
    }

    /// Whether workers get a listening socket (and accept on it themselves).
    pub fn passes_socket(self) -> bool {
        matches!(self, Policy::Shared | Policy::ReusePort)
    }
}

/// Whether the kernel balances connections over SO_REUSEPORT sockets.
pub const REUSEPORT_BALANCES: bool = cfg!(target_os = "linux");

/// What a picker needs to know about the worker at one position of the
/// listener's worker list: `None` when it cannot take a connection now (gone,
/// or its window is full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The worker's slot (stable across restarts; what `hash` hashes over).
    pub slot: u32,
    /// Its open connections, as far as the primary knows.
    pub open: u32,
}

/// Round robin: the first position from `next` on (wrapping) with room.
pub fn pick_rr(n: usize, next: usize, info: impl Fn(usize) -> Option<Slot>) -> Option<usize> {
    (0..n)
        .map(|k| (next + k) % n)
        .find(|&pos| info(pos).is_some())
}

/// Smooth weighted round robin (nginx's algorithm): every candidate gains its
/// weight, the one with the highest current weight wins (the first on a tie)
/// and gives back the sum of the weights. With weights 5, 1, 1 the sequence is
/// a, a, b, a, c, a, a. `cands` holds (position, weight, current weight); the
/// current weights are updated in place. Returns the winning position.
pub fn pick_smooth(cands: &mut [(usize, u32, i64)]) -> Option<usize> {
    let total: i64 = cands.iter().map(|c| c.1 as i64).sum();
    let mut win: Option<usize> = None;
    for i in 0..cands.len() {
        cands[i].2 += cands[i].1 as i64;
        if win.is_none_or(|w| cands[i].2 > cands[w].2) {
            win = Some(i);
        }
    }
    let w = win?;
    cands[w].2 -= total;
    Some(cands[w].0)
}

/// Least connections: the position with room and the fewest open
/// connections; among equals the first from `next` on, so ties rotate.
pub fn pick_least(n: usize, next: usize, info: impl Fn(usize) -> Option<Slot>) -> Option<usize> {
    let mut best: Option<(u32, usize)> = None;
    for k in 0..n {
        let pos = (next + k) % n;
        if let Some(s) = info(pos) {
            if best.is_none_or(|(open, _)| s.open < open) {
                best = Some((s.open, pos));
            }
        }
    }
    best.map(|(_, pos)| pos)
}

/// Sticky by key: rendezvous hashing over the slots of every position (with
/// room or not), best score first; the best-ranked position with room wins
/// (a worker that refused the connection is left out by `info`, and it goes
/// to the next choice). With rendezvous hashing, removing a slot moves only
/// the keys that slot had; adding one moves only the keys it takes.
///
/// `slots(pos)` is the slot at `pos` whatever its room; `info(pos)` says
/// whether it has room, as for the other pickers.
pub fn pick_hash(
    n: usize,
    key: u64,
    slots: impl Fn(usize) -> u32,
    info: impl Fn(usize) -> Option<Slot>,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let mut ranked: Vec<(u64, u32, usize)> = (0..n)
        .map(|pos| {
            let slot = slots(pos);
            (score(key, slot), slot, pos)
        })
        .collect();
    // Highest score first; equal scores (the same slot twice, during a
    // reload) by slot then position, so the order is total and stable.
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .iter()
        .map(|&(_, _, pos)| pos)
        .find(|&pos| info(pos).is_some())
}

/// The rendezvous weight of `slot` for `key`.
pub fn score(key: u64, slot: u32) -> u64 {
    mix(key ^ mix(u64::from(slot).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// A stable 64-bit hash of a peer address. IPv4-mapped IPv6 addresses hash
/// like their IPv4 form, so a dual-stack listener sees one client as one key.
/// The port is left out on purpose: a client's connections share its address,
/// not its port.
pub fn hash_ip(ip: IpAddr) -> u64 {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => mix(u64::from(u32::from(v4)) | (4 << 32)),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            mix(mix(b as u64) ^ (b >> 64) as u64 ^ (6 << 56))
        }
    }
}

/// splitmix64's finalizer: a fixed, fast, well-spread mix (no random seed,
/// so a key maps to the same slot in every run of the primary).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn all(pos: usize) -> Option<Slot> {
        Some(Slot {
            slot: pos as u32,
            open: 0,
        })
    }

    #[test]
    fn names_round_trip() {
        for p in [
            Policy::RoundRobin,
            Policy::Shared,
            Policy::ReusePort,
            Policy::Least,
            Policy::Hash,
        ] {
            assert_eq!(Policy::from_name(p.name()), Some(p));
        }
        assert_eq!(Policy::from_name("bogus"), None);
    }

    #[test]
    fn listener_policy_falls_back_where_it_makes_no_sense() {
        assert_eq!(
            Policy::for_listener(Some("hash"), true, false),
            Policy::Shared
        );
        assert_eq!(
            Policy::for_listener(Some("reuseport"), false, false),
            Policy::RoundRobin
        );
        assert_eq!(
            Policy::for_listener(Some("reuseport"), false, true),
            Policy::ReusePort
        );
        assert_eq!(Policy::for_listener(None, false, true), Policy::RoundRobin);
        assert_eq!(
            Policy::for_listener(Some("x"), false, true),
            Policy::RoundRobin
        );
        assert_eq!(
            Policy::for_listener(Some("least"), false, false),
            Policy::Least
        );
    }

    #[test]
    fn rr_skips_full_workers() {
        assert_eq!(pick_rr(3, 1, all), Some(1));
        assert_eq!(
            pick_rr(3, 2, |p| if p == 2 { None } else { all(p) }),
            Some(0)
        );
        assert_eq!(pick_rr(3, 0, |_| None), None);
        assert_eq!(pick_rr(0, 0, all), None);
    }

    #[test]
    fn least_prefers_the_idle_worker_and_rotates_ties() {
        let open = [5u32, 0, 3];
        let info = |p: usize| {
            Some(Slot {
                slot: p as u32,
                open: open[p],
            })
        };
        assert_eq!(pick_least(3, 0, info), Some(1));
        // The idle one is full: next fewest.
        assert_eq!(
            pick_least(3, 0, |p| if p == 1 { None } else { info(p) }),
            Some(2)
        );
        // Ties rotate with `next`.
        assert_eq!(pick_least(3, 0, all), Some(0));
        assert_eq!(pick_least(3, 1, all), Some(1));
        assert_eq!(pick_least(3, 2, all), Some(2));
        assert_eq!(pick_least(3, 0, |_| None), None);
    }

    fn keys() -> Vec<u64> {
        (0..2000u32)
            .map(|i| hash_ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
            .collect()
    }

    #[test]
    fn hash_is_sticky_spread_and_only_moves_the_removed_slots_keys() {
        let slots4 = [1u32, 2, 3, 4];
        let pick =
            |slots: &[u32], key| pick_hash(slots.len(), key, |p| slots[p], all).map(|p| slots[p]);
        let before: Vec<u32> = keys().iter().map(|&k| pick(&slots4, k).unwrap()).collect();
        // Same inputs, same answers.
        let again: Vec<u32> = keys().iter().map(|&k| pick(&slots4, k).unwrap()).collect();
        assert_eq!(before, again);
        // Spread: every slot gets a fair share (expected 500 each).
        for s in slots4 {
            let n = before.iter().filter(|&&x| x == s).count();
            assert!((350..650).contains(&n), "slot {s}: {n}");
        }
        // Slot 3 leaves: only its keys move.
        let slots3 = [1u32, 2, 4];
        for (k, b) in keys().iter().zip(&before) {
            let a = pick(&slots3, *k).unwrap();
            if *b != 3 {
                assert_eq!(a, *b, "a key of a remaining slot moved");
            }
        }
        // Order of the worker list does not matter.
        let shuffled = [4u32, 2, 1, 3];
        for (k, b) in keys().iter().zip(&before) {
            assert_eq!(pick(&shuffled, *k).unwrap(), *b);
        }
    }

    #[test]
    fn hash_falls_back_to_the_next_ranked_slot_with_room() {
        let slots = [1u32, 2, 3];
        for &k in keys().iter().take(100) {
            let first = pick_hash(3, k, |p| slots[p], all).unwrap();
            let second = pick_hash(
                3,
                k,
                |p| slots[p],
                |p| {
                    if p == first {
                        None
                    } else {
                        all(p)
                    }
                },
            )
            .unwrap();
            assert_ne!(first, second);
        }
        assert_eq!(pick_hash(3, 1, |p| slots[p], |_| None), None);
        assert_eq!(pick_hash(0, 1, |_| 0, all), None);
    }

    #[test]
    fn mapped_v6_hashes_like_v4() {
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(
            hash_ip(IpAddr::V4(v4)),
            hash_ip(IpAddr::V6(v4.to_ipv6_mapped()))
        );
        assert_ne!(
            hash_ip(IpAddr::V4(v4)),
            hash_ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
    }

    #[test]
    fn smooth_weighted_round_robin_is_nginx_sequence() {
        let mut cands = vec![(0usize, 5u32, 0i64), (1, 1, 0), (2, 1, 0)];
        let seq: Vec<usize> = (0..7).map(|_| pick_smooth(&mut cands).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
        assert!(
            cands.iter().all(|c| c.2 == 0),
            "a full cycle returns to zero"
        );
        assert_eq!(pick_smooth(&mut []), None);
    }
}
