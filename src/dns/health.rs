//! Whether the resolver itself is failing, judged over a sliding window
//! from every DNS answer sluice waits for: its own queries (DNS lists, HELO,
//! reverse DNS), each message's authentication (by sender domain), and a
//! probe of the root (`. NS`, which any working resolver answers from its
//! cache) sent while failures are being seen. A query that timed out or
//! failed (SERVFAIL, refused, network errors) counts against the resolver;
//! a negative answer (NXDOMAIN, no records) is an answer.
//!
//! Each outcome is counted under a key (the sender domain, the list's zone,
//! "." for the probe), and the resolver is failing only when the failures
//! come from at least two keys: one sender domain whose servers are dead
//! cannot trip it (its own timeouts are the per-message budget's business),
//! but a dead resolver fails the root probe too. It is healthy again when
//! the failure rate falls below half the threshold, or at once when three
//! probes in a row are answered.
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

/// Distinct failing keys remembered per bucket (enough to tell one from
/// several).
const KEYS_PER_BUCKET: usize = 4;

/// Answered probes in a row that end a failing state.
const PROBES_TO_RECOVER: u32 = 3;

/// The key of the root probe.
pub const PROBE_KEY: &str = ".";

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    /// Which slot of time this bucket counts (elapsed / bucket width).
    slot: u64,
    answered: u32,
    failed: u32,
    /// Hashes of the keys that failed in this bucket (0: empty).
    failed_keys: [u64; KEYS_PER_BUCKET],
}

impl Bucket {
    fn note_key(&mut self, key: u64) {
        if self.failed_keys.contains(&key) {
            return;
        }
        if let Some(free) = self.failed_keys.iter_mut().find(|k| **k == 0) {
            *free = key;
        }
    }
}

fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.to_ascii_lowercase().hash(&mut h);
    h.finish().max(1)
}

/// The key a queried name counts under: its last two labels (the zone of
/// a DNS list, a registered domain, "in-addr.arpa" for reverse lookups).
pub fn key_of(name: &str) -> &str {
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return PROBE_KEY;
    }
    match name.rmatch_indices('.').nth(1) {
        Some((i, _)) => &name[i + 1..],
        None => name,
    }
}

/// Told when the state changes (the wiring emits an event).
pub type Observer = Box<dyn Fn(Transition) + Send + Sync>;

/// The health view, shared by every resolver user.
pub struct Health {
    cfg: HealthConfig,
    start: Instant,
    buckets: Mutex<[Bucket; BUCKETS as usize]>,
    failing: AtomicBool,
    /// Root probes answered in a row.
    probe_streak: std::sync::atomic::AtomicU32,
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
            probe_streak: std::sync::atomic::AtomicU32::new(0),
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

    /// Whether failures were seen in the window (then the root is probed).
    pub fn troubled(&self) -> bool {
        let slot = self.slot(Instant::now());
        let b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        b.iter()
            .any(|x| slot.saturating_sub(x.slot) < u64::from(BUCKETS) && x.failed > 0)
    }

    fn slot(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.width().as_nanos()) as u64
    }

    /// Counts one query under `key` (see [`key_of`]); returns the
    /// transition when the state changed (after telling the observer).
    pub fn record(&self, key: &str, outcome: QueryOutcome) -> Option<Transition> {
        if let Some(m) = &self.metrics {
            let label = match outcome {
                QueryOutcome::Answered => "answered",
                QueryOutcome::Timeout => "timeout",
                QueryOutcome::Failed => "failed",
            };
            m.dns_queries.with_label_values(&[label]).inc();
        }
        let t = self.record_at(Instant::now(), key, outcome)?;
        if let Some(o) = &self.observer {
            o(t);
        }
        Some(t)
    }

    fn record_at(&self, now: Instant, key: &str, outcome: QueryOutcome) -> Option<Transition> {
        let slot = self.slot(now);
        let probe = key == PROBE_KEY;
        if probe {
            if outcome == QueryOutcome::Answered {
                let streak = self.probe_streak.fetch_add(1, Ordering::Relaxed) + 1;
                if streak >= PROBES_TO_RECOVER && self.failing() {
                    return Some(self.recover());
                }
            } else {
                self.probe_streak.store(0, Ordering::Relaxed);
            }
        }
        let (answered, failed, keys) = {
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
                QueryOutcome::Timeout | QueryOutcome::Failed => {
                    cur.failed += 1;
                    cur.note_key(key_hash(key));
                }
            }
            let live = || b.iter().filter(|x| slot.saturating_sub(x.slot) < u64::from(BUCKETS));
            let (a, f) = live().fold((0u32, 0u32), |(a, f), x| (a + x.answered, f + x.failed));
            let mut keys: Vec<u64> = live().flat_map(|x| x.failed_keys).filter(|k| *k != 0).collect();
            keys.sort_unstable();
            keys.dedup();
            (a, f, keys.len())
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
            ratio >= self.cfg.failing_ratio && keys >= 2
        };
        if now_failing == was {
            return None;
        }
        if !now_failing {
            return Some(self.recover());
        }
        self.failing.store(true, Ordering::Relaxed);
        Some(Transition {
            failing: true,
            ratio,
            queries,
        })
    }

    /// Healthy again: the window starts afresh.
    fn recover(&self) -> Transition {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (answered, failed) = b.iter().fold((0u32, 0u32), |(a, f), x| (a + x.answered, f + x.failed));
        *b = [Bucket::default(); BUCKETS as usize];
        self.failing.store(false, Ordering::Relaxed);
        self.probe_streak.store(0, Ordering::Relaxed);
        let queries = answered + failed;
        Transition {
            failing: false,
            ratio: if queries == 0 {
                0.0
            } else {
                f64::from(failed) / f64::from(queries)
            },
            queries,
        }
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

    use QueryOutcome::{Answered, Timeout};

    #[test]
    fn keys_are_zones_and_domains() {
        assert_eq!(key_of("2.0.0.127.zen.example.org."), "example.org");
        assert_eq!(key_of("_dmarc.sender.example"), "sender.example");
        assert_eq!(key_of("4.3.2.1.in-addr.arpa"), "in-addr.arpa");
        assert_eq!((key_of("."), key_of("localhost")), (".", "localhost"));
    }

    #[test]
    fn a_few_lost_queries_are_not_a_failing_resolver() {
        let h = health();
        let t = h.start;
        for i in 0..100 {
            let (key, o) = if i % 10 == 0 {
                (".", Timeout)
            } else {
                ("sender.example", Answered)
            };
            assert_eq!(h.record_at(t, key, o), None);
        }
        assert!(!h.failing());
    }

    #[test]
    fn one_dead_sender_domain_cannot_trip_it() {
        let h = health();
        let t = h.start;
        for _ in 0..50 {
            assert_eq!(h.record_at(t, "dead.example", Timeout), None);
        }
        assert!(!h.failing(), "all failures under one key");
        // The root probe answers: still one failing key.
        assert_eq!(h.record_at(t, ".", Answered), None);
        assert!(!h.failing());
    }

    #[test]
    fn a_black_holed_resolver_fails_then_recovers_when_probes_are_answered() {
        let h = health();
        let t = h.start + Duration::from_secs(1);
        for _ in 0..9 {
            assert_eq!(
                h.record_at(t, "sender.example", Timeout),
                None,
                "too few queries, one key"
            );
        }
        let turned = h.record_at(t, ".", Timeout).expect("turns failing: two keys");
        assert!(turned.failing && turned.queries == 10);
        assert!(h.failing());
        // Two answered probes are not enough; the third ends it at once.
        assert_eq!(h.record_at(t, ".", Answered), None);
        assert_eq!(h.record_at(t, ".", Answered), None);
        let back = h.record_at(t, ".", Answered).expect("recovers");
        assert!(!back.failing);
        assert!(!h.failing());
        // The window started afresh: a few new failures say nothing.
        for _ in 0..5 {
            assert_eq!(h.record_at(t, "sender.example", Timeout), None);
        }
    }

    #[test]
    fn recovers_as_answers_come_back_and_old_failures_leave_the_window() {
        let h = health();
        let t = h.start;
        for k in ["a.example", "b.example"].iter().cycle().take(20) {
            h.record_at(t, k, Timeout);
        }
        assert!(h.failing());
        let later = t + Duration::from_secs(61);
        let back = (0..10).find_map(|_| h.record_at(later, "a.example", Answered));
        assert!(back.is_some_and(|b| !b.failing), "{back:?}");
    }
}
