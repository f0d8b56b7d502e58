//! The status page's data: one sample per second for the last ten
//! minutes, taken from the metrics (so the page and `/metrics` always
//! agree), plus what is sampled rather than counted: the spool, the
//! firewall's bans, the next hops (up, last reply, messages queued for
//! each) and the quarantine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use tokio_util::sync::CancellationToken;

use super::health::Readiness;
use crate::delivery::queue::QueueHandle;
use crate::delivery::queue::control::{Entry, Request, Response};
use crate::delivery::route::Routes;
use crate::firewall::service::Firewall;
use crate::metrics::Metrics;
use crate::quarantine::{Quarantine, QuarantineStats};

mod view;
pub use view::{ClamdView, Grouping, NextHopView, Status, TopNetwork};

/// Samples kept (one per second).
pub const KEEP: usize = 600;
/// Networks in the "top banned networks" table.
const TOP: usize = 10;
/// The "top banned networks" group IPv4 bans by /24 and IPv6 bans by /64
/// (wider bans count as they are).
pub const GROUP_V4: u8 = 24;
pub const GROUP_V6: u8 = 64;
/// The clamd latency figures cover this many seconds.
const SCAN_WINDOW: u64 = 60;
/// The costlier samples (the queue's list, the quarantine directory) stop
/// this long after the status page was last read.
const WATCHED_FOR: u64 = 60;

#[derive(Debug, Clone, Default)]
struct Sample {
    t: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    spam: BTreeMap<String, u64>,
    quarantined: u64,
    scan_latency_ms: Option<f64>,
    scan_backlog: i64,
    queue: i64,
    bans: i64,
    sessions: i64,
}

/// Running totals the per-second rates are differences of.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    /// Spam actions by action.
    spam: BTreeMap<String, u64>,
    /// Messages kept in the quarantine (deferred scan, spam action).
    quarantined: u64,
    scan_sum: f64,
    scan_count: u64,
}

/// One clamd endpoint's latency histogram (cumulative, as exported).
#[derive(Debug, Clone, Default, PartialEq)]
struct Hist {
    count: u64,
    sum: f64,
    /// (upper bound in seconds, cumulative count), ascending; +Inf left out.
    buckets: Vec<(f64, u64)>,
}

impl Hist {
    /// What was observed since `earlier` (the same histogram, sampled
    /// before).
    fn since(&self, earlier: Option<&Hist>) -> Hist {
        let Some(e) = earlier else { return self.clone() };
        Hist {
            count: self.count.saturating_sub(e.count),
            sum: (self.sum - e.sum).max(0.0),
            buckets: self
                .buckets
                .iter()
                .map(|(ub, c)| {
                    let before = e.buckets.iter().find(|(b, _)| b == ub).map_or(0, |(_, c)| *c);
                    (*ub, c.saturating_sub(before))
                })
                .collect(),
        }
    }

    /// The `q` quantile in seconds, interpolated within its bucket as
    /// Prometheus' `histogram_quantile` does; above the last bound, the
    /// last bound.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q * self.count as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(upper, cum) in &self.buckets {
            if cum as f64 >= rank {
                let within = (cum - below) as f64;
                let f = if within > 0.0 {
                    (rank - below as f64) / within
                } else {
                    1.0
                };
                return Some(lower + (upper - lower) * f);
            }
            (lower, below) = (upper, cum);
        }
        self.buckets.last().map(|(ub, _)| *ub)
    }
}

/// What the history watches besides the metrics.
#[derive(Default)]
pub struct Watch {
    pub firewall: Option<Arc<Firewall>>,
    /// The next hops, and the queue whose messages are counted per route.
    /// The router in use (a reload replaces it).
    pub router: Option<Arc<Routes>>,
    pub queue: Option<QueueHandle>,
    pub quarantine: Option<Arc<Quarantine>>,
}

/// Sets sampled gauges (spool backlog, deferred-scan queue) each second;
/// gets the time of the sample (Unix seconds).
pub type Sampler = Box<dyn Fn(u64) + Send + Sync>;

pub struct History {
    metrics: Arc<Metrics>,
    samplers: Vec<Sampler>,
    watch: Watch,
    hostname: String,
    state: Mutex<State>,
    /// When the page last read the history (Unix seconds): the queue is
    /// listed and the quarantine counted only while someone watches.
    read_at: AtomicU64,
}

#[derive(Default)]
struct State {
    samples: VecDeque<Sample>,
    last: Option<Totals>,
    /// Each clamd endpoint's histogram, one snapshot a second for the
    /// last `SCAN_WINDOW` seconds.
    scans: VecDeque<(u64, BTreeMap<String, Hist>)>,
    top: Vec<TopNetwork>,
    /// Messages queued per route (sampled every few seconds).
    queued: BTreeMap<String, usize>,
    quarantine: Option<QuarantineStats>,
    ready: Readiness,
}

/// Messages in `entries` with a recipient still to deliver on each route
/// (`route_of` a domain).
fn queued_by_route(entries: &[Entry], route_of: impl Fn(&str) -> String) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries {
        let mut routes: Vec<String> = e
            .rcpts
            .iter()
            .map(|r| route_of(r.rsplit_once('@').map_or("", |(_, d)| d)))
            .collect();
        routes.sort_unstable();
        routes.dedup();
        for r in routes {
            *out.entry(r).or_default() += 1;
        }
    }
    out
}

/// A metric's label value.
fn label(metric: &prometheus::proto::Metric, name: &str) -> Option<String> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value().to_string())
}

/// A counter family's values by one label.
fn by_label(fams: &[prometheus::proto::MetricFamily], name: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for metric in fams.iter().flat_map(|f| f.get_metric()) {
        if let Some(v) = label(metric, name) {
            *out.entry(v).or_default() += metric.get_counter().get_value() as u64;
        }
    }
    out
}

impl History {
    pub fn new(metrics: Arc<Metrics>, samplers: Vec<Sampler>, watch: Watch, hostname: String) -> History {
        History {
            metrics,
            samplers,
            watch,
            hostname,
            state: Mutex::new(State::default()),
            read_at: AtomicU64::new(0),
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
                if matches!(label(metric, "result").as_deref(), Some("accepted")) {
                    continue;
                }
                let reason = label(metric, "reason").unwrap_or_else(|| "other".into());
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
        for (action, n) in by_label(&m.spam_actions.collect(), "action") {
            if action == "quarantine" {
                t.quarantined += n;
            }
            t.spam.insert(action, n);
        }
        t.quarantined += m
            .messages
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|x| {
                x.get_label()
                    .iter()
                    .any(|l| l.name() == "result" && l.value() == "quarantined")
            })
            .map(|x| x.get_counter().get_value() as u64)
            .sum::<u64>();
        t
    }

    /// Each clamd endpoint's latency histogram now.
    fn scan_hists(&self) -> BTreeMap<String, Hist> {
        let mut out = BTreeMap::new();
        for fam in self.metrics.scanner_duration.collect() {
            for metric in fam.get_metric() {
                let Some(ep) = label(metric, "endpoint") else { continue };
                let h = metric.get_histogram();
                out.insert(
                    ep,
                    Hist {
                        count: h.get_sample_count(),
                        sum: h.get_sample_sum(),
                        buckets: h
                            .get_bucket()
                            .iter()
                            .map(|b| (b.upper_bound(), b.cumulative_count()))
                            .filter(|(ub, _)| ub.is_finite())
                            .collect(),
                    },
                );
            }
        }
        out
    }

    /// Each clamd endpoint: up, in flight, and its last minute's latency.
    fn clamd(&self, st: &State) -> Vec<ClamdView> {
        let m = &self.metrics;
        let gauge = |fams: &[prometheus::proto::MetricFamily]| -> BTreeMap<String, i64> {
            fams.iter()
                .flat_map(|f| f.get_metric())
                .filter_map(|x| Some((label(x, "endpoint")?, x.get_gauge().get_value() as i64)))
                .collect()
        };
        let up = gauge(&m.scanner_up.collect());
        let in_flight = gauge(&m.scanner_in_flight.collect());
        let (newest, oldest) = (st.scans.back(), st.scans.front());
        up.iter()
            .map(|(ep, up)| {
                let now = newest.and_then(|(_, h)| h.get(ep));
                let before = oldest.and_then(|(_, h)| h.get(ep)).filter(|_| st.scans.len() > 1);
                let h = now.map(|h| h.since(before)).unwrap_or_default();
                let ms = |s: Option<f64>| s.map(|s| s * 1000.0);
                ClamdView {
                    endpoint: ep.clone(),
                    up: *up == 1,
                    in_flight: in_flight.get(ep).copied().unwrap_or(0),
                    scans: h.count,
                    mean_ms: (h.count > 0).then(|| h.sum * 1000.0 / h.count as f64),
                    p50_ms: ms(h.quantile(0.5)),
                    p95_ms: ms(h.quantile(0.95)),
                }
            })
            .collect()
    }

    /// The next hops: state now, queued as last sampled.
    fn next_hops(&self, st: &State) -> Vec<NextHopView> {
        let Some(router) = &self.watch.router else {
            return Vec::new();
        };
        router
            .current()
            .hops()
            .into_iter()
            .map(|h| NextHopView {
                queued: st.queued.get(&h.route).copied().unwrap_or(0),
                route: h.route,
                next_hop: h.next_hop,
                up: h.state.up,
                last_reply: h.state.last_reply.map(|r| r.to_string()),
                last_reply_at: h.state.last_reply_at,
            })
            .collect()
    }

    /// Takes one sample at `now` (Unix seconds), after running the
    /// samplers.
    pub fn sample(&self, now: u64) {
        let m = &self.metrics;
        for s in &self.samplers {
            s(now);
        }
        let totals = self.totals();
        let hists = self.scan_hists();
        let mut st = self.state();
        let prev = st.last.clone().unwrap_or_else(|| totals.clone());
        let rejected = totals
            .rejected
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(prev.rejected.get(k).copied().unwrap_or(0))))
            .collect();
        let spam = totals
            .spam
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(prev.spam.get(k).copied().unwrap_or(0))))
            .collect();
        let scans = totals.scan_count.saturating_sub(prev.scan_count);
        let sample = Sample {
            t: now,
            accepted: totals.accepted.saturating_sub(prev.accepted),
            rejected,
            spam,
            quarantined: totals.quarantined.saturating_sub(prev.quarantined),
            scan_latency_ms: (scans > 0).then(|| (totals.scan_sum - prev.scan_sum) * 1000.0 / scans as f64),
            scan_backlog: m.scanner_queue.get(),
            queue: m.spool_messages.get(),
            bans: m.bans_active.get(),
            sessions: m.sessions_active.get(),
        };
        st.last = Some(totals);
        st.samples.push_back(sample);
        while st.samples.len() > KEEP {
            st.samples.pop_front();
        }
        st.scans.push_back((now, hists));
        while st.scans.front().is_some_and(|(t, _)| t + SCAN_WINDOW < now) {
            st.scans.pop_front();
        }
    }

    /// Recomputes the top banned networks (a /24 or /64 per entry).
    pub fn sample_bans(&self) {
        let Some(fw) = &self.watch.firewall else { return };
        let mut by_net: BTreeMap<ipnet::IpNet, (usize, u64)> = BTreeMap::new();
        for ban in fw.bans() {
            let prefix = match ban.net {
                ipnet::IpNet::V4(n) => n.prefix_len().min(GROUP_V4),
                ipnet::IpNet::V6(n) => n.prefix_len().min(GROUP_V6),
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

    /// Counts the queued messages per route (asks the queue for its
    /// list).
    pub async fn sample_queue(&self) {
        let (Some(router), Some(queue)) = (&self.watch.router, &self.watch.queue) else {
            return;
        };
        if let Response::Entries(entries) = queue.ask(Request::List).await {
            let router = router.current();
            let entries = entries.into_entries();
            self.state().queued = queued_by_route(&entries, |d| router.route_of(d));
        }
    }

    /// Counts what the quarantine holds (off the runtime's threads).
    pub async fn sample_quarantine(&self) {
        let Some(q) = self.watch.quarantine.clone() else { return };
        if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || q.stats()).await {
            self.state().quarantine = Some(stats);
        }
    }

    pub fn set_ready(&self, r: Readiness) {
        self.state().ready = r;
    }

    /// Whether the status page was read in the last `WATCHED_FOR`
    /// seconds before `now`.
    fn watched(&self, now: u64) -> bool {
        self.read_at.load(Ordering::Relaxed) + WATCHED_FOR >= now
    }

    /// The JSON the status page draws.
    pub fn status(&self) -> Status {
        self.read_at.store(crate::mail::date::now_secs(), Ordering::Relaxed);
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
        let mut spam_actions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for s in &st.samples {
            for k in s.spam.keys() {
                spam_actions.entry(k.clone()).or_default();
            }
        }
        for (k, series) in spam_actions.iter_mut() {
            *series = st.samples.iter().map(|s| s.spam.get(k).copied().unwrap_or(0)).collect();
        }
        spam_actions.retain(|_, v| v.iter().any(|x| *x > 0));
        Status {
            version: env!("CARGO_PKG_VERSION"),
            hostname: self.hostname.clone(),
            now: st.samples.back().map_or(0, |s| s.t),
            step: 1,
            t: st.samples.iter().map(|s| s.t).collect(),
            accepted: st.samples.iter().map(|s| s.accepted).collect(),
            rejected,
            spam_actions,
            quarantined: st.samples.iter().map(|s| s.quarantined).collect(),
            quarantine: st.quarantine,
            scan_latency_ms: st.samples.iter().map(|s| s.scan_latency_ms).collect(),
            scan_backlog: st.samples.iter().map(|s| s.scan_backlog).collect(),
            scan_deferring: self.metrics.scan_deferring.get() == 1,
            clamd: self.clamd(&st),
            next_hops: self.next_hops(&st),
            queue: st.samples.iter().map(|s| s.queue).collect(),
            bans: st.samples.iter().map(|s| s.bans).collect(),
            sessions: st.samples.iter().map(|s| s.sessions).collect(),
            top_networks: st.top.clone(),
            top_networks_grouping: Grouping {
                v4: GROUP_V4,
                v6: GROUP_V6,
            },
            ready: st.ready.clone(),
        }
    }

    /// Samples every second (bans every 5 s; the queue per route and the
    /// quarantine every 5 s while the page is read) until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n = 0u64;
        let mut was_watched = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            self.sample(crate::mail::date::now_secs());
            // The first read of the page is answered within 1 s, not 5.
            let watched = self.watched(crate::mail::date::now_secs());
            if n.is_multiple_of(5) || (watched && !was_watched) {
                self.sample_bans();
                if watched {
                    self.sample_queue().await;
                    self.sample_quarantine().await;
                }
            }
            was_watched = watched;
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests;
