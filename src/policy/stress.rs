//! Stress mode, as Postfix has it (`postscreen`/`smtpd` "stress"): when the
//! relay is close to full, each session gets less. It turns on when the
//! open sessions reach `stress.sessions_ratio` of `server.max_connections`,
//! or when the scanner falls behind (admission control is deferring scans,
//! or half of `scan.max_held` waits for a deferred scan); it turns off when
//! sessions are below three quarters of that and the scanner has caught up,
//! and not before `stress.min_duration`.
//!
//! While it is on, every timeout (idle, command, data) is at most
//! `stress.timeout`, a session ends after `stress.max_errors` errors, and the
//! tarpit starts after `stress.tarpit_after_errors`. The bots of a storm hold
//! their slots for seconds instead of minutes, and real clients still get
//! through. The state is the `stress_mode` event and `sluice_stress_mode`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Stress as StressConfig;

/// What the load looks like now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub sessions: usize,
    pub max_sessions: usize,
    /// Admission control is deferring scans: the scanner is behind.
    pub scanner_behind: bool,
    /// Messages waiting for their deferred scan, and the cap.
    pub held: usize,
    pub max_held: usize,
}

/// A change of state, with the reason (for the event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub on: bool,
    pub sessions: usize,
    pub why: String,
}

/// The stress state every session reads.
#[derive(Debug)]
pub struct Stress {
    cfg: StressConfig,
    on: AtomicBool,
    since: Mutex<Option<Instant>>,
    /// Wakes sessions waiting for input when the state changes, so their
    /// read deadline follows it.
    changed: tokio::sync::watch::Sender<bool>,
}

impl Stress {
    pub fn new(cfg: StressConfig) -> Self {
        Self {
            cfg,
            on: AtomicBool::new(false),
            since: Mutex::new(None),
            changed: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Sees every change of state (a session recomputes its deadline).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.changed.subscribe()
    }

    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// A timeout as it applies now.
    pub fn timeout(&self, normal: Duration) -> Duration {
        if self.on() {
            normal.min(self.cfg.timeout)
        } else {
            normal
        }
    }

    /// `server.max_errors` as it applies now.
    pub fn max_errors(&self, normal: u32) -> u32 {
        if self.on() {
            normal.min(self.cfg.max_errors)
        } else {
            normal
        }
    }

    /// `limits.tarpit_after_errors` as it applies now (0: no tarpit).
    pub fn tarpit_after(&self, normal: u32) -> u32 {
        match (self.on(), normal) {
            (false, n) => n,
            (true, 0) => self.cfg.tarpit_after_errors,
            (true, n) => n.min(self.cfg.tarpit_after_errors),
        }
    }

    /// Looks at the load; returns the change when the state changed.
    pub fn assess(&self, load: Load) -> Option<Change> {
        self.assess_at(Instant::now(), load)
    }

    fn assess_at(&self, now: Instant, load: Load) -> Option<Change> {
        if !self.cfg.enabled {
            return None;
        }
        let high = (load.max_sessions as f64 * self.cfg.sessions_ratio).ceil() as usize;
        let low = (high as f64 * 0.75) as usize;
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if !self.on() {
            let why = if load.sessions >= high {
                format!("{} of {} sessions open", load.sessions, load.max_sessions)
            } else if load.scanner_behind {
                "the scanner is behind (scans deferred)".to_string()
            } else if load.max_held > 0 && load.held >= load.max_held / 2 {
                format!("{} of {} messages held for their scan", load.held, load.max_held)
            } else {
                return None;
            };
            self.on.store(true, Ordering::Relaxed);
            self.changed.send_replace(true);
            *since = Some(now);
            return Some(Change {
                on: true,
                sessions: load.sessions,
                why,
            });
        }
        let calm = load.sessions < low && !load.scanner_behind && (load.max_held == 0 || load.held < load.max_held / 4);
        let held_long_enough = since.is_none_or(|s| now.saturating_duration_since(s) >= self.cfg.min_duration);
        if !(calm && held_long_enough) {
            return None;
        }
        self.on.store(false, Ordering::Relaxed);
        self.changed.send_replace(false);
        *since = None;
        Some(Change {
            on: false,
            sessions: load.sessions,
            why: format!(
                "{} of {} sessions open, the scanner keeps up",
                load.sessions, load.max_sessions
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stress() -> Stress {
        Stress::new(StressConfig {
            enabled: true,
            sessions_ratio: 0.8,
            timeout: Duration::from_secs(10),
            max_errors: 3,
            tarpit_after_errors: 1,
            min_duration: Duration::from_secs(30),
            check_interval: Duration::from_millis(250),
        })
    }

    fn sessions(n: usize) -> Load {
        Load {
            sessions: n,
            max_sessions: 100,
            ..Load::default()
        }
    }

    #[test]
    fn turns_on_near_the_connection_limit_and_off_only_well_below_it_after_the_minimum() {
        let s = stress();
        let t = Instant::now();
        assert_eq!(s.assess_at(t, sessions(79)), None);
        assert_eq!(s.timeout(Duration::from_secs(300)), Duration::from_secs(300));
        let on = s.assess_at(t, sessions(80)).expect("on at 80%");
        assert!(on.on && on.why.contains("80 of 100"), "{on:?}");
        assert_eq!(s.timeout(Duration::from_secs(300)), Duration::from_secs(10));
        assert_eq!(s.timeout(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!((s.max_errors(20), s.tarpit_after(0), s.tarpit_after(5)), (3, 1, 1));
        // Hysteresis: 70 sessions is not calm; 50 is, but only after 30 s.
        assert_eq!(s.assess_at(t + Duration::from_secs(60), sessions(70)), None);
        assert_eq!(s.assess_at(t + Duration::from_secs(10), sessions(50)), None);
        let off = s.assess_at(t + Duration::from_secs(31), sessions(50)).expect("off");
        assert!(!off.on);
        assert_eq!(s.max_errors(20), 20);
    }

    #[test]
    fn a_scanner_that_falls_behind_turns_it_on_too() {
        let s = stress();
        let load = Load {
            sessions: 3,
            max_sessions: 100,
            held: 600,
            max_held: 1000,
            ..Load::default()
        };
        assert!(s.assess(load).is_some_and(|c| c.on && c.why.contains("held")));
        let s = stress();
        let behind = Load {
            scanner_behind: true,
            ..sessions(1)
        };
        assert!(s.assess(behind).is_some_and(|c| c.on));
    }

    #[test]
    fn disabled_never_turns_on() {
        let s = Stress::new(StressConfig {
            enabled: false,
            ..stress().cfg
        });
        assert_eq!(s.assess(sessions(100)), None);
        assert!(!s.on());
    }
}
