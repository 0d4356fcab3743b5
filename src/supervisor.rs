//! Supervision policy: when a worker's slot is restarted, after how long, and
//! when it gives up. Pure logic, no I/O: the reactor asks, this decides.
//!
//! A *slot* is a place for one worker. `cluster.fork()` creates a slot; when
//! supervision is on and the worker exits, the slot gets a new worker (a new
//! worker id, the same slot id and settings).

use std::time::Duration;

use serde::Deserialize;

/// Which exits restart the slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Node's behaviour: nothing is restarted.
    #[default]
    Never,
    /// Every exit restarts, except codes listed in `stop_exit_codes`.
    Always,
    /// Exits with a non-zero code or by a signal restart.
    OnFailure,
}

/// When a new worker counts as ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    /// When one of its servers listens (Node's `'listening'`).
    #[default]
    Listening,
    /// When it says so (`cluster.worker.ready()` or `process.send('ready')`).
    Message,
}

/// Supervision settings of a slot (JSON from `cluster.settings`), in ms.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    pub restart: RestartMode,
    pub stop_exit_codes: Vec<i32>,
    /// Delay before restarting a worker that ran at least `min_uptime`.
    pub restart_delay: u64,
    /// First back-off delay after an unstable exit; doubles each time.
    pub backoff_initial: u64,
    pub backoff_max: u64,
    pub backoff_factor: f64,
    /// A worker that dies sooner than this was unstable.
    pub min_uptime: u64,
    /// Consecutive unstable exits after which the slot stops.
    pub max_restarts: u32,
    pub readiness: Readiness,
    /// 0: no limit.
    pub ready_timeout: u64,
    /// Time a retiring worker gets to finish by itself before SIGTERM.
    pub drain_timeout: u64,
    /// Time between SIGTERM and SIGKILL.
    pub kill_timeout: u64,
    /// 0: no heartbeats.
    pub heartbeat_interval: u64,
    pub heartbeat_timeout: u64,
    /// Recycle after this many connections (0: never), +/- `recycle_jitter`.
    pub max_connections: u64,
    pub recycle_jitter: f64,
    /// Recycle above this RSS in bytes (0: never).
    pub max_memory: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            restart: RestartMode::Never,
            stop_exit_codes: Vec::new(),
            restart_delay: 0,
            backoff_initial: 100,
            backoff_max: 15_000,
            backoff_factor: 2.0,
            min_uptime: 1000,
            max_restarts: 16,
            readiness: Readiness::Listening,
            ready_timeout: 30_000,
            drain_timeout: 10_000,
            kill_timeout: 5_000,
            heartbeat_interval: 0,
            heartbeat_timeout: 5_000,
            max_connections: 0,
            recycle_jitter: 0.1,
            max_memory: 0,
        }
    }
}

/// What to do after a worker of a slot exited.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing: supervision is off, or the exit was on purpose.
    Leave,
    /// Start a new worker in the slot after `after`; `unstable` counts the
    /// consecutive unstable exits so far.
    Restart { after: Duration, unstable: u32 },
    /// The slot stops: crash loop.
    Stop { reason: String },
}

/// The restart bookkeeping of one slot.
#[derive(Clone, Debug, Default)]
pub struct SlotState {
    /// Consecutive exits within `min_uptime`.
    pub unstable: u32,
    /// The slot was stopped (crash loop, scale down, shutdown).
    pub stopped: bool,
}

impl SlotState {
    /// Decides after an exit with `code`/`signal` after `uptime`. `on_purpose`:
    /// the worker was disconnected, killed or retired by the primary.
    pub fn on_exit(
        &mut self,
        cfg: &Config,
        code: Option<i32>,
        signal: Option<i32>,
        uptime: Duration,
        on_purpose: bool,
    ) -> Decision {
        if self.stopped || on_purpose || cfg.restart == RestartMode::Never {
            return Decision::Leave;
        }
        if let Some(c) = code {
            if cfg.stop_exit_codes.contains(&c) {
                return Decision::Leave;
            }
            if cfg.restart == RestartMode::OnFailure && c == 0 && signal.is_none() {
                return Decision::Leave;
            }
        }
        if uptime < Duration::from_millis(cfg.min_uptime) {
            self.unstable += 1;
        } else {
            self.unstable = 0;
        }
        if self.unstable > cfg.max_restarts {
            self.stopped = true;
            return Decision::Stop {
                reason: format!(
                    "crash loop: {} consecutive exits within minUptime ({} ms); maxRestarts is {}",
                    self.unstable, cfg.min_uptime, cfg.max_restarts
                ),
            };
        }
        let after = if self.unstable == 0 {
            Duration::from_millis(cfg.restart_delay)
        } else {
            backoff(cfg, self.unstable)
        };
        Decision::Restart {
            after,
            unstable: self.unstable,
        }
    }
}

/// The delay before the `n`-th consecutive unstable restart (n >= 1).
pub fn backoff(cfg: &Config, n: u32) -> Duration {
    let factor = if cfg.backoff_factor.is_finite() && cfg.backoff_factor >= 1.0 {
        cfg.backoff_factor
    } else {
        2.0
    };
    let ms = cfg.backoff_initial as f64 * factor.powi(n.saturating_sub(1).min(64) as i32);
    Duration::from_millis(ms.min(cfg.backoff_max as f64).max(0.0) as u64)
}

/// The connection count after which a worker is recycled: `max` moved by a
/// random fraction within +/- `jitter`, so that workers do not all recycle at
/// once. `rand` is a uniform value in [0, 1).
pub fn recycle_after(max: u64, jitter: f64, rand: f64) -> u64 {
    if max == 0 {
        return 0;
    }
    let j = jitter.clamp(0.0, 1.0);
    let delta = (max as f64) * j * (2.0 * rand - 1.0);
    ((max as f64 + delta).round() as u64).max(1)
}

/// A small xorshift generator for jitter: no dependency, seeded per process.
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: RestartMode) -> Config {
        Config {
            restart: mode,
            max_restarts: 3,
            ..Config::default()
        }
    }

    #[test]
    fn never_restarts_by_default() {
        let mut s = SlotState::default();
        let d = s.on_exit(&Config::default(), Some(1), None, Duration::ZERO, false);
        assert_eq!(d, Decision::Leave);
    }

    #[test]
    fn on_failure_leaves_clean_exits_and_stop_codes() {
        let mut c = cfg(RestartMode::OnFailure);
        c.stop_exit_codes = vec![42];
        let mut s = SlotState::default();
        let long = Duration::from_secs(5);
        assert_eq!(s.on_exit(&c, Some(0), None, long, false), Decision::Leave);
        assert_eq!(s.on_exit(&c, Some(42), None, long, false), Decision::Leave);
        assert!(matches!(
            s.on_exit(&c, None, Some(9), long, false),
            Decision::Restart { .. }
        ));
        assert_eq!(s.on_exit(&c, Some(1), None, long, true), Decision::Leave);
    }

    #[test]
    fn backoff_grows_then_crash_loop_stops_the_slot() {
        let c = cfg(RestartMode::Always);
        let mut s = SlotState::default();
        let mut delays = Vec::new();
        for _ in 0..3 {
            match s.on_exit(&c, Some(1), None, Duration::from_millis(10), false) {
                Decision::Restart { after, .. } => delays.push(after.as_millis()),
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(delays, vec![100, 200, 400]);
        assert!(matches!(
            s.on_exit(&c, Some(1), None, Duration::from_millis(10), false),
            Decision::Stop { .. }
        ));
        assert_eq!(
            s.on_exit(&c, Some(1), None, Duration::from_secs(9), false),
            Decision::Leave
        );
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let c = cfg(RestartMode::Always);
        let mut s = SlotState::default();
        s.on_exit(&c, Some(1), None, Duration::from_millis(10), false);
        s.on_exit(&c, Some(1), None, Duration::from_millis(10), false);
        let d = s.on_exit(&c, Some(1), None, Duration::from_secs(10), false);
        assert_eq!(
            d,
            Decision::Restart {
                after: Duration::ZERO,
                unstable: 0
            }
        );
    }

    #[test]
    fn backoff_is_capped() {
        let c = Config {
            backoff_max: 1000,
            ..Config::default()
        };
        assert_eq!(backoff(&c, 30), Duration::from_millis(1000));
    }

    #[test]
    fn recycle_jitter_stays_in_range_and_varies() {
        let mut j = Jitter::new(12345);
        let vals: Vec<u64> = (0..100)
            .map(|_| recycle_after(1000, 0.1, j.next_f64()))
            .collect();
        assert!(vals.iter().all(|v| (900..=1100).contains(v)));
        let distinct: std::collections::HashSet<_> = vals.iter().collect();
        assert!(distinct.len() > 10);
        assert_eq!(recycle_after(0, 0.1, 0.5), 0);
    }

    #[test]
    fn config_parses_from_js_settings() {
        let c: Config = serde_json::from_str(
            r#"{"restart":"on-failure","maxRestarts":2,"readiness":"message","readyTimeout":500}"#,
        )
        .unwrap();
        assert_eq!(c.restart, RestartMode::OnFailure);
        assert_eq!(c.max_restarts, 2);
        assert_eq!(c.readiness, Readiness::Message);
        assert_eq!(c.backoff_initial, 100);
    }
}
