//! The status page's data: one sample per second for the last ten
//! minutes, taken from the metrics (so the page and `/metrics` always
//! agree), plus the spool and firewall figures that are sampled rather
//! than counted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::health::Readiness;
use crate::firewall::service::Firewall;
use crate::metrics::Metrics;

/// Samples kept (one per second).
pub const KEEP: usize = 600;
/// Networks in the "top banned networks" table.
const TOP: usize = 10;

#[derive(Debug, Clone, Default)]
struct Sample {
    t: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    scan_latency_ms: Option<f64>,
    queue: i64,
    bans: i64,
    sessions: i64,
}

/// Running totals the per-second rates are differences of.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    scan_sum: f64,
    scan_count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopNetwork {
    pub net: String,
    pub bans: usize,
    pub until: u64,
}

/// What `/api/status` returns.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub hostname: String,
    pub now: u64,
    pub step: u64,
    pub t: Vec<u64>,
    pub accepted: Vec<u64>,
    pub rejected: BTreeMap<String, Vec<u64>>,
    pub scan_latency_ms: Vec<Option<f64>>,
    pub queue: Vec<i64>,
    pub bans: Vec<i64>,
    pub sessions: Vec<i64>,
    pub top_networks: Vec<TopNetwork>,
    pub ready: Readiness,
}

/// Sets sampled gauges (spool backlog, deferred-scan queue) each second;
/// gets the time of the sample (Unix seconds).
pub type Sampler = Box<dyn Fn(u64) + Send + Sync>;

pub struct History {
    metrics: Arc<Metrics>,
    samplers: Vec<Sampler>,
    firewall: Option<Arc<Firewall>>,
    hostname: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    samples: VecDeque<Sample>,
    last: Option<Totals>,
    top: Vec<TopNetwork>,
    ready: Readiness,
}

impl History {
    pub fn new(
        metrics: Arc<Metrics>,
        samplers: Vec<Sampler>,
        firewall: Option<Arc<Firewall>>,
        hostname: String,
    ) -> History {
        History {
            metrics,
            samplers,
            firewall,
            hostname,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn totals(&self) -> Totals {
        let m = &self.metrics;
        let mut t = Totals {
            accepted: m.messages.with_label_values(&["accepted", "ok"]).get(),
            ..Totals::default()
        };
        // Every refusal by reason: at connect, per recipient, per message.
        let families = [
            m.connections_refused.collect(),
            m.recipients.collect(),
            m.messages.collect(),
        ];
        for fam in families.iter().flatten() {
            for metric in fam.get_metric() {
                let label = |k: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == k)
                        .map(|l| l.value().to_string())
                };
                if matches!(label("result").as_deref(), Some("accepted")) {
                    continue;
                }
                let reason = label("reason").unwrap_or_else(|| "other".into());
                *t.rejected.entry(reason).or_default() += metric.get_counter().get_value() as u64;
            }
        }
        for fam in m.scanner_duration.collect() {
            for metric in fam.get_metric() {
                let h = metric.get_histogram();
                t.scan_sum += h.get_sample_sum();
                t.scan_count += h.get_sample_count();
            }
        }
        t
    }

    /// Takes one sample at `now` (Unix seconds), after running the
    /// samplers.
    pub fn sample(&self, now: u64) {
        let m = &self.metrics;
        for s in &self.samplers {
            s(now);
        }
        let totals = self.totals();
        let mut st = self.state();
        let prev = st.last.clone().unwrap_or_else(|| totals.clone());
        let rejected = totals
            .rejected
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(prev.rejected.get(k).copied().unwrap_or(0))))
            .collect();
        let scans = totals.scan_count.saturating_sub(prev.scan_count);
        let sample = Sample {
            t: now,
            accepted: totals.accepted.saturating_sub(prev.accepted),
            rejected,
            scan_latency_ms: (scans > 0).then(|| (totals.scan_sum - prev.scan_sum) * 1000.0 / scans as f64),
            queue: m.spool_messages.get(),
            bans: m.bans_active.get(),
            sessions: m.sessions_active.get(),
        };
        st.last = Some(totals);
        st.samples.push_back(sample);
        while st.samples.len() > KEEP {
            st.samples.pop_front();
        }
    }

    /// Recomputes the top banned networks (a /24 or /64 per entry).
    pub fn sample_bans(&self) {
        let Some(fw) = &self.firewall else { return };
        let mut by_net: BTreeMap<ipnet::IpNet, (usize, u64)> = BTreeMap::new();
        for ban in fw.bans() {
            let prefix = match ban.net {
                ipnet::IpNet::V4(n) => n.prefix_len().min(24),
                ipnet::IpNet::V6(n) => n.prefix_len().min(64),
            };
            let key = ipnet::IpNet::new(ban.net.addr(), prefix).map_or(ban.net, |n| n.trunc());
            let e = by_net.entry(key).or_default();
            e.0 += 1;
            e.1 = e.1.max(ban.until);
        }
        let mut top: Vec<TopNetwork> = by_net
            .into_iter()
            .map(|(net, (bans, until))| TopNetwork {
                net: net.to_string(),
                bans,
                until,
            })
            .collect();
        top.sort_by(|a, b| b.bans.cmp(&a.bans).then(a.net.cmp(&b.net)));
        top.truncate(TOP);
        self.state().top = top;
    }

    pub fn set_ready(&self, r: Readiness) {
        self.state().ready = r;
    }

    /// The JSON the status page draws.
    pub fn status(&self) -> Status {
        let st = self.state();
        let mut rejected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for s in &st.samples {
            for k in s.rejected.keys() {
                rejected.entry(k.clone()).or_default();
            }
        }
        // Reasons that never rejected anything in the window are left out.
        for (k, series) in rejected.iter_mut() {
            *series = st
                .samples
                .iter()
                .map(|s| s.rejected.get(k).copied().unwrap_or(0))
                .collect();
        }
        rejected.retain(|_, v| v.iter().any(|x| *x > 0));
        Status {
            version: env!("CARGO_PKG_VERSION"),
            hostname: self.hostname.clone(),
            now: st.samples.back().map_or(0, |s| s.t),
            step: 1,
            t: st.samples.iter().map(|s| s.t).collect(),
            accepted: st.samples.iter().map(|s| s.accepted).collect(),
            rejected,
            scan_latency_ms: st.samples.iter().map(|s| s.scan_latency_ms).collect(),
            queue: st.samples.iter().map(|s| s.queue).collect(),
            bans: st.samples.iter().map(|s| s.bans).collect(),
            sessions: st.samples.iter().map(|s| s.sessions).collect(),
            top_networks: st.top.clone(),
            ready: st.ready.clone(),
        }
    }

    /// Samples every second (bans every 5 s) until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            self.sample(crate::mail::date::now_secs());
            if n.is_multiple_of(5) {
                self.sample_bans();
            }
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Reason};

    #[test]
    fn samples_are_per_second_differences_by_reason() {
        let m = Arc::new(Metrics::new());
        let h = History::new(m.clone(), Vec::new(), None, "mx".into());
        h.sample(100);
        let rej = Event::RcptRejected {
            tx: Default::default(),
            id: String::new(),
            session: 1,
            ip: "192.0.2.9".parse().unwrap(),
            rcpt: "a@b".into(),
            reason: Reason::UnknownUser,
            reply: crate::proto::Reply::UNKNOWN_USER,
            evidence: String::new(),
        };
        for _ in 0..3 {
            m.observe(&rej);
        }
        m.messages.with_label_values(&["accepted", "ok"]).inc_by(2);
        m.scanner_duration.with_label_values(&["tcp://c"]).observe(0.010);
        m.scanner_duration.with_label_values(&["tcp://c"]).observe(0.030);
        h.sample(101);
        h.sample(102);
        let s = h.status();
        assert_eq!(s.t, [100, 101, 102]);
        assert_eq!(s.accepted, [0, 2, 0]);
        assert_eq!(s.rejected["unknown_user"], [0, 3, 0]);
        assert_eq!(s.rejected.len(), 1, "{:?}", s.rejected);
        let lat = s.scan_latency_ms[1].unwrap();
        assert!((lat - 20.0).abs() < 1e-9, "{lat}");
        assert_eq!(s.scan_latency_ms[2], None);
    }
}
