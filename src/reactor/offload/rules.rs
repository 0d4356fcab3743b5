//! When an exact `rr` listener starts spreading, and when a spreading one
//! goes on: the rules of the offload, as plain arithmetic over accepts,
//! times and CPU time, so that they are tested without sockets or clocks.
//!
//! An exact listener spreads on whichever comes first:
//! - a **burst**: [`SPREAD_BURST`] accepts within one [`SPREAD_WINDOW`]
//!   (5,000 a second or more);
//! - a **steady** load: half a burst in each of [`STEADY_WINDOWS`] windows
//!   in a row (2,500 a second for 150 ms); a keep-alive pool opening is one
//!   spike and stays exact;
//! - its **cost**: over a [`LOAD_PERIOD`] (250 ms) with [`LOAD_MIN`] accepts
//!   or more, the reactor thread used [`SPREAD_CPU`] of a core. The exact
//!   mode costs 5-25 µs a connection by machine (mostly the kernel's accept
//!   and fd passing), so this is the rule for slow machines and crowded ones
//!   (16 workers on 2 cores), whose rate stays under the other two. A pool
//!   opening costs that much only past a few hundred connections at once,
//!   where the burst rule says the same.
//!
//! Each rule also says the rate (connections a second) it stands for;
//! spreading goes on down to [`KEEP_SPREADING`] of it ([`keeps_spreading`]).

use std::time::{Duration, Instant};

/// Accepts within [`SPREAD_WINDOW`] that start spreading (by default;
/// `Config::offload_burst`).
pub const SPREAD_BURST: u32 = 256;
/// The window of the burst and steady rules.
pub(in crate::reactor) const SPREAD_WINDOW: Duration = Duration::from_millis(50);
/// Windows in a row with half a burst each that start spreading, at half
/// the burst's rate.
pub(in crate::reactor) const STEADY_WINDOWS: u32 = 3;
/// A spreading listener stays so while its rate is at least this share of
/// the rate that started it: a load near that rate does not switch back and
/// forth, each time with a second of exact dispatch.
pub(in crate::reactor) const KEEP_SPREADING: f64 = 0.5;
/// The cost rule's period...
pub(in crate::reactor) const LOAD_PERIOD: Duration = Duration::from_millis(250);
/// ...in which a listener accepted at least this many connections (256 a
/// second; fewer never spread by cost: low rates get the exact round robin,
/// whatever else keeps the reactor busy)...
pub(in crate::reactor) const LOAD_MIN: u32 = 64;
/// ...and the reactor thread used this share of one core (by default;
/// `Config::offload_cpu`).
pub const SPREAD_CPU: f64 = 0.03;

/// The exact mode's measurements of one listener, fed one accept at a time.
pub(in crate::reactor) struct ExactRate {
    burst: u32,
    cpu_limit: f64,
    /// The current window: started then, with this many accepts.
    start: Instant,
    count: u32,
    /// Windows in a row, just before the current one, with half a burst.
    steady: u32,
    /// The cost rule's period: started then, with this many accepts and
    /// the thread's CPU time at its start (`None`: starts at the next
    /// accept).
    load_start: Instant,
    load_count: u32,
    load_cpu: Option<Duration>,
}

impl ExactRate {
    /// Rules for a burst of `burst` and a cost of `cpu_limit` of a core.
    pub(in crate::reactor) fn new(burst: u32, cpu_limit: f64, now: Instant) -> ExactRate {
        ExactRate {
            burst: burst.max(1),
            cpu_limit,
            start: now,
            count: 0,
            steady: 0,
            load_start: now,
            load_count: 0,
            load_cpu: None,
        }
    }

    /// Every measurement starts over (exact again after spreading).
    pub(in crate::reactor) fn restart(&mut self, now: Instant) {
        *self = ExactRate::new(self.burst, self.cpu_limit, now);
    }

    /// Counts an accept at `now`. `cpu` reads the thread's CPU time; it is
    /// called at most once a [`LOAD_PERIOD`]. Returns the rate to spread at
    /// when a rule says so.
    pub(in crate::reactor) fn accept(
        &mut self,
        now: Instant,
        cpu: impl FnOnce() -> Duration,
    ) -> Option<f64> {
        let half = self.burst.div_ceil(2);
        let window = now.saturating_duration_since(self.start);
        if window > SPREAD_WINDOW {
            // A steady run goes on when the next window follows at once.
            let on = window <= 2 * SPREAD_WINDOW && self.count >= half;
            self.steady = if on { self.steady + 1 } else { 0 };
            self.start = now;
            self.count = 0;
        }
        self.count += 1;
        let mut spread = if self.count >= self.burst {
            Some(burst_rate(self.burst))
        } else if self.count >= half && self.steady + 1 >= STEADY_WINDOWS {
            Some(burst_rate(half))
        } else {
            None
        };
        self.load_count += 1;
        let elapsed = now.saturating_duration_since(self.load_start);
        if self.load_cpu.is_none() || elapsed >= LOAD_PERIOD {
            let used = cpu();
            if let Some(start) = self.load_cpu {
                let by_cost = cost_spread_rate(
                    self.load_count,
                    used.saturating_sub(start),
                    elapsed,
                    self.cpu_limit,
                );
                spread = spread.or(by_cost.map(|r| r.min(burst_rate(self.burst))));
            }
            self.load_start = now;
            self.load_count = 0;
            self.load_cpu = Some(used);
        }
        spread
    }
}

/// The rate (connections a second) of `n` accepts per [`SPREAD_WINDOW`].
fn burst_rate(n: u32) -> f64 {
    n as f64 / SPREAD_WINDOW.as_secs_f64()
}

/// The cost rule. A listener that accepted `count` connections in `elapsed`
/// while the reactor thread used `cpu` spreads when that is at least
/// [`LOAD_MIN`] connections and `limit` of a core. Returns the rate at which
/// the exact mode costs `limit`, by this period's cost per connection
/// ([`LOAD_MIN`] a [`LOAD_PERIOD`] at the least).
fn cost_spread_rate(count: u32, cpu: Duration, elapsed: Duration, limit: f64) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    if count < LOAD_MIN || secs <= 0.0 {
        return None;
    }
    let share = cpu.as_secs_f64() / secs;
    if share < limit {
        return None;
    }
    let rate = count as f64 / secs;
    let at_limit = if share > 0.0 {
        rate * limit / share
    } else {
        0.0
    };
    Some(at_limit.max(LOAD_MIN as f64 / LOAD_PERIOD.as_secs_f64()))
}

/// Whether a spreading listener that started at `spread_rate` connections a
/// second, whose workers took `took` connections in the `elapsed` since its
/// last check, goes on spreading: at [`KEEP_SPREADING`] of that rate or
/// more. Below it the listener is exact again (and measures there).
pub(in crate::reactor) fn keeps_spreading(took: u64, spread_rate: f64, elapsed: Duration) -> bool {
    took as f64 >= KEEP_SPREADING * spread_rate * elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `n` accepts evenly over `over`, from `at`, with a thread that
    /// used `cpu` per accept; the first rule's rate and when it fired.
    fn feed(
        r: &mut ExactRate,
        at: Instant,
        n: u32,
        over: Duration,
        cpu: Duration,
        used: &mut Duration,
    ) -> Option<(f64, Duration)> {
        for i in 0..n {
            let t = at + over.mul_f64(i as f64 / n as f64);
            *used += cpu;
            let now_used = *used;
            if let Some(rate) = r.accept(t, || now_used) {
                return Some((rate, t - at));
            }
        }
        None
    }

    #[test]
    fn a_burst_spreads_in_one_window() {
        let t0 = Instant::now();
        let mut r = ExactRate::new(256, SPREAD_CPU, t0);
        let mut used = Duration::ZERO;
        // 256 within 40 ms: the 256th accept.
        let (rate, when) = feed(&mut r, t0, 300, 47 * MS, Duration::ZERO, &mut used).unwrap();
        assert_eq!(rate, 5_120.0);
        assert!(when < 41 * MS, "{when:?}");
    }

    #[test]
    fn a_pool_opening_is_one_spike_and_stays_exact() {
        let t0 = Instant::now();
        let mut r = ExactRate::new(256, SPREAD_CPU, t0);
        let mut used = Duration::ZERO;
        // 250 at once, at 25 µs each, then quiet; again a second later.
        assert_eq!(
            feed(&mut r, t0, 250, 5 * MS, 25 * MS / 1000, &mut used),
            None
        );
        let t1 = t0 + Duration::from_millis(1_100);
        assert_eq!(
            feed(&mut r, t1, 250, 5 * MS, 25 * MS / 1000, &mut used),
            None
        );
        // Spikes of 200 every 60 ms: a steady load, spread in the third.
        let t2 = t1 + Duration::from_secs(3);
        let mut fired = None;
        for k in 0..4 {
            let at = t2 + 60 * MS * k + MS;
            fired = fired.or(feed(&mut r, at, 200, 5 * MS, Duration::ZERO, &mut used));
        }
        assert_eq!(fired.map(|f| f.0), Some(2_560.0));
    }

    #[test]
    fn a_steady_half_burst_spreads_after_three_windows() {
        let t0 = Instant::now();
        let mut r = ExactRate::new(256, SPREAD_CPU, t0);
        let mut used = Duration::ZERO;
        // 3,000 a second: 150 per window, never a whole burst.
        let (rate, when) = feed(
            &mut r,
            t0,
            3_000,
            Duration::from_secs(1),
            Duration::ZERO,
            &mut used,
        )
        .expect("spreads");
        assert_eq!(rate, 2_560.0);
        assert!(when > 100 * MS && when < 200 * MS, "{when:?}");

        // A gap breaks the run: 150 per window, but a window in between
        // with none.
        let mut r = ExactRate::new(256, SPREAD_CPU, t0);
        let mut fired = None;
        for k in [0u32, 1, 3, 4, 6, 7] {
            let at = t0 + 55 * MS * k;
            fired = fired.or(feed(&mut r, at, 150, 45 * MS, Duration::ZERO, &mut used));
        }
        assert_eq!(fired, None);
    }

    #[test]
    fn a_sustained_load_spreads_once_the_exact_mode_costs_its_share_of_a_core() {
        let t0 = Instant::now();
        let mut r = ExactRate::new(256, 0.03, t0);
        let mut used = Duration::ZERO;
        // 2,000 a second (under the steady rule) at 24 µs each: 4.8% of a
        // core. After a period: at 3% the exact mode would carry 1,250 a
        // second, and spreading goes on down to half that.
        let (rate, when) = feed(
            &mut r,
            t0,
            4_000,
            Duration::from_secs(2),
            24 * MS / 1000,
            &mut used,
        )
        .expect("spreads");
        assert!((rate - 1_250.0).abs() < 1.0, "{rate}");
        assert!(
            when >= LOAD_PERIOD && when < LOAD_PERIOD + 10 * MS,
            "{when:?}"
        );
        assert!(keeps_spreading(625, rate, Duration::from_secs(1)));
        assert!(!keeps_spreading(624, rate, Duration::from_secs(1)));

        // The same load at 10 µs each (2%): exact.
        let mut r = ExactRate::new(256, 0.03, t0);
        let cheap = feed(
            &mut r,
            t0,
            6_000,
            Duration::from_secs(3),
            10 * MS / 1000,
            &mut used,
        );
        assert_eq!(cheap, None);
    }

    #[test]
    fn the_cost_rule_needs_enough_connections() {
        let second = Duration::from_secs(1);
        assert!(cost_spread_rate(4_000, 96 * MS, second, 0.03).is_some());
        assert_eq!(cost_spread_rate(4_000, 29 * MS, second, 0.03), None);
        // Too few connections, whatever the reactor spent: exact.
        assert_eq!(cost_spread_rate(LOAD_MIN - 1, second, second, 0.03), None);
        // A longer period is a lower rate and a lower share.
        assert_eq!(cost_spread_rate(4_000, 96 * MS, 4 * second, 0.03), None);
        // It keeps to LOAD_MIN a period (256 a second) at the least (a limit
        // of 0 spreads any load of that rate).
        assert_eq!(
            cost_spread_rate(LOAD_MIN, Duration::ZERO, second, 0.0),
            Some(256.0)
        );
        assert_eq!(cost_spread_rate(300, 5 * MS, second, 0.0), Some(256.0));
    }

    #[test]
    fn spreading_goes_on_down_to_half_the_rate_that_started_it() {
        let second = Duration::from_secs(1);
        let burst = burst_rate(256);
        assert_eq!(burst, 5_120.0);
        assert!(keeps_spreading(5_120, burst, second));
        assert!(keeps_spreading(2_560, burst, second));
        assert!(!keeps_spreading(2_559, burst, second));
        assert!(!keeps_spreading(0, burst, second));
        // The check is a rate: a late timer asks for more.
        assert!(!keeps_spreading(2_560, burst, 2 * second));
        assert!(keeps_spreading(5_120, burst, 2 * second));
    }

    #[test]
    fn restart_forgets_every_measurement() {
        let t0 = Instant::now();
        let mut r = ExactRate::new(256, SPREAD_CPU, t0);
        let mut used = Duration::ZERO;
        assert_eq!(
            feed(&mut r, t0, 255, 10 * MS, Duration::ZERO, &mut used),
            None
        );
        r.restart(t0 + 10 * MS);
        assert_eq!(
            feed(
                &mut r,
                t0 + 11 * MS,
                255,
                10 * MS,
                Duration::ZERO,
                &mut used
            ),
            None
        );
    }
}
