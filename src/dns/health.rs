//! Whether the resolver itself is failing, judged from all of sluice's own
//! queries (DNS lists, HELO, reverse DNS) over a sliding window: the share
//! that timed out or failed (SERVFAIL, refused, network errors). A negative
//! answer (NXDOMAIN, no records) is an answer. One sender domain whose
//! servers are dead cannot trip it: authentication's queries do not count,
//! and its own timeouts are the per-message budget's business.
//!
//! While the resolver is failing, SPF/DKIM/DMARC answer `temperror` at once
//! instead of each message waiting for its deadline (`spam::auth`); the
//! state is the `sluice_dns_resolver_failing` gauge and a line of `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// Buckets the window is cut into.
const BUCKETS: u32 = 12;

/// The outcome of one query, as the health view counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Records, or a negative answer.
    Answered,
    Timeout,
    /// SERVFAIL, REFUSED, a network error.
    Failed,
}

/// The thresholds (`[dns]` health_window, health_min_queries,
/// health_failing_ratio).
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    pub window: Duration,
    /// Fewer queries than this in the window say nothing.
    pub min_queries: u32,
    /// Share of failed queries at which the resolver is failing; it is
    /// healthy again below half of it.
    pub failing_ratio: f64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    /// Which slot of time this bucket counts (elapsed / bucket width).
    slot: u64,
    answered: u32,
    failed: u32,
}

/// Told when the state changes (the wiring emits an event).
pub type Observer = Box<dyn Fn(Transition) + Send + Sync>;

/// The health view, shared by every resolver user.
pub struct Health {
    cfg: HealthConfig,
    start: Instant,
    buckets: Mutex<[Bucket; BUCKETS as usize]>,
    failing: AtomicBool,
    metrics: Option<Arc<Metrics>>,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("cfg", &self.cfg)
            .field("failing", &self.failing())
            .finish()
    }
}

/// A change of state: what the caller reports (event, gauge).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub failing: bool,
    /// Share of failed queries in the window when it changed.
    pub ratio: f64,
    pub queries: u32,
}

impl Health {
    pub fn new(cfg: HealthConfig) -> Self {
        Self {
            cfg,
            start: Instant::now(),
            buckets: Mutex::new([Bucket::default(); BUCKETS as usize]),
            failing: AtomicBool::new(false),
            metrics: None,
            observer: None,
        }
    }

    /// Counts queries into `sluice_dns_queries_total`, and tells `observer`
    /// when the state changes.
    pub fn observed(mut self, metrics: Arc<Metrics>, observer: Observer) -> Self {
        self.metrics = Some(metrics);
        self.observer = Some(observer);
        self
    }

    /// Whether the resolver is failing now.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    fn width(&self) -> Duration {
        (self.cfg.window / BUCKETS).max(Duration::from_millis(1))
    }

    /// Counts one query; returns the transition when the state changed
    /// (after telling the observer).
    pub fn record(&self, outcome: QueryOutcome) -> Option<Transition> {
        if let Some(m) = &self.metrics {
            let label = match outcome {
                QueryOutcome::Answered => "answered",
                QueryOutcome::Timeout => "timeout",
                QueryOutcome::Failed => "failed",
            };
            m.dns_queries.with_label_values(&[label]).inc();
        }
        let t = self.record_at(Instant::now(), outcome)?;
        if let Some(o) = &self.observer {
            o(t);
        }
        Some(t)
    }

    fn record_at(&self, now: Instant, outcome: QueryOutcome) -> Option<Transition> {
        let slot = (now.saturating_duration_since(self.start).as_nanos() / self.width().as_nanos()) as u64;
        let (answered, failed) = {
            let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let cur = &mut b[(slot % u64::from(BUCKETS)) as usize];
            if cur.slot != slot {
                *cur = Bucket {
                    slot,
                    ..Bucket::default()
                };
            }
            match outcome {
                QueryOutcome::Answered => cur.answered += 1,
                QueryOutcome::Timeout | QueryOutcome::Failed => cur.failed += 1,
            }
            b.iter()
                .filter(|x| slot.saturating_sub(x.slot) < u64::from(BUCKETS))
                .fold((0u32, 0u32), |(a, f), x| (a + x.answered, f + x.failed))
        };
        let queries = answered + failed;
        if queries < self.cfg.min_queries {
            return None;
        }
        let ratio = f64::from(failed) / f64::from(queries);
        let was = self.failing();
        let now_failing = if was {
            ratio >= self.cfg.failing_ratio / 2.0
        } else {
            ratio >= self.cfg.failing_ratio
        };
        if now_failing == was {
            return None;
        }
        self.failing.store(now_failing, Ordering::Relaxed);
        Some(Transition {
            failing: now_failing,
            ratio,
            queries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(HealthConfig {
            window: Duration::from_secs(60),
            min_queries: 10,
            failing_ratio: 0.5,
        })
    }

    #[test]
    fn a_few_lost_queries_are_not_a_failing_resolver() {
        let h = health();
        let t = h.start;
        for i in 0..100 {
            let o = if i % 10 == 0 {
                QueryOutcome::Timeout
            } else {
                QueryOutcome::Answered
            };
            assert_eq!(h.record_at(t, o), None);
        }
        assert!(!h.failing());
    }

    #[test]
    fn a_black_holed_resolver_fails_then_recovers_as_answers_come_back() {
        let h = health();
        let t = h.start + Duration::from_secs(1);
        for _ in 0..9 {
            assert_eq!(h.record_at(t, QueryOutcome::Timeout), None, "too few queries to judge");
        }
        let turned = h.record_at(t, QueryOutcome::Timeout).expect("turns failing");
        assert!(turned.failing && turned.queries == 10);
        assert!(h.failing());
        // Answers again: still failing while a quarter or more failed...
        for _ in 0..20 {
            assert_eq!(h.record_at(t, QueryOutcome::Answered), None);
        }
        // ...healthy below it.
        let back = (0..20)
            .find_map(|_| h.record_at(t, QueryOutcome::Answered))
            .expect("recovers");
        assert!(!back.failing && back.ratio < 0.25);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let h = health();
        let t = h.start;
        for _ in 0..20 {
            h.record_at(t, QueryOutcome::Failed);
        }
        assert!(h.failing());
        let later = t + Duration::from_secs(61);
        let back = (0..10).find_map(|_| h.record_at(later, QueryOutcome::Answered));
        assert!(back.is_some_and(|b| !b.failing && b.queries == 10), "{back:?}");
    }
}
