//! Prometheus metrics, registered in one place ([`Metrics::new`]) and
//! passed down as a value (it rides on the [`crate::events::EventBus`]).
//!
//! Most counters are driven by the events themselves ([`Metrics::observe`],
//! called synchronously by `EventBus::emit`, so a count is never lost to a
//! slow subscriber); latencies, gauges and per-endpoint figures are set by
//! the component that measures them. Every label value comes from a
//! bounded set (verbs, reasons, configured zones and endpoints): never an
//! address or a client IP.
//!
//! - `http`: the metrics listener (`/metrics`, `/healthz`, `/readyz`, the
//!   status page `/` and its `/api/status`).
//! - `history`: one sample per second of the figures the status page draws.
//! - `health`: the readiness probes (spool, next hop, scanners).

pub mod check;
pub mod health;
pub mod history;
pub mod http;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::events::{Event, Reason};

const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const SIZES: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];
const SCORES: &[f64] = &[
    -5.0, -2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0,
];

/// Every metric sluice exports. Names and meanings: README "Metrics".
pub struct Metrics {
    /// False with `metrics.enabled = false`: nothing counts the events or
    /// the commands (the cost benchmark's baseline).
    enabled: bool,
    pub registry: Registry,
    pub connections_accepted: IntCounter,
    pub connections_refused: IntCounterVec,
    pub sessions_active: IntGauge,
    pub commands: IntCounterVec,
    pub recipients: IntCounterVec,
    pub messages: IntCounterVec,
    pub message_size: Histogram,
    pub dnsbl_queries: IntCounterVec,
    pub dnsbl_listed: IntCounterVec,
    pub dnsbl_errors: IntCounterVec,
    pub dnsbl_duration: HistogramVec,
    pub greylist: IntCounterVec,
    pub limit_hits: IntCounterVec,
    pub scanner_scans: IntCounterVec,
    pub scanner_duration: HistogramVec,
    pub scanner_in_flight: IntGaugeVec,
    pub scanner_up: IntGaugeVec,
    pub scanner_queue: IntGauge,
    pub scan_deferring: IntGauge,
    pub admission: IntCounterVec,
    pub spam_score: Histogram,
    pub spam_actions: IntCounterVec,
    pub spool_messages: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_oldest_age: IntGauge,
    pub spool_fsync: Histogram,
    pub delivery_attempts: IntCounterVec,
    pub delivery_duration: Histogram,
    pub next_hop_up: IntGauge,
    pub route_up: IntGaugeVec,
    pub route_deliveries: IntCounterVec,
    pub double_bounces: IntCounter,
    pub bans_active: IntGauge,
    pub bans_added: IntCounterVec,
    pub bans_removed: IntCounter,
    pub firewall_sync_lag: Gauge,
    pub firewall_sync_delay: Histogram,
    pub firewall_sync_errors: IntCounter,
    pub events: IntCounterVec,
    pub events_dropped: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers a collector; names are fixed and unique, so this cannot fail
/// except by a programming error caught by the first test.
fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("metric registered twice");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str| reg(&r, IntCounter::new(name, help).expect("metric options"));
        let counters = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("metric options"),
            )
        };
        let gauge = |name: &str, help: &str| reg(&r, IntGauge::new(name, help).expect("metric options"));
        let hist = |name: &str, help: &str, buckets: &[f64]| {
            reg(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("metric options"),
            )
        };
        let hists = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY.to_vec()), labels)
                    .expect("metric options"),
            )
        };
        let build = reg(
            &r,
            IntGaugeVec::new(Opts::new("sluice_build_info", "sluice build (value 1)"), &["version"])
                .expect("metric options"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let m = Metrics {
            connections_accepted: counter(
                "sluice_connections_accepted_total",
                "TCP connections that got an SMTP session",
            ),
            connections_refused: counters(
                "sluice_connections_refused_total",
                "Connections refused before the greeting, by reason",
                &["reason"],
            ),
            sessions_active: gauge("sluice_sessions_active", "SMTP sessions open now"),
            commands: counters(
                "sluice_smtp_commands_total",
                "SMTP commands by verb and reply class",
                &["verb", "class"],
            ),
            recipients: counters(
                "sluice_recipients_total",
                "RCPT TO decisions by result and reason",
                &["result", "reason"],
            ),
            messages: counters(
                "sluice_messages_total",
                "End-of-DATA decisions by result (accepted, rejected, tempfailed, quarantined) and reason",
                &["result", "reason"],
            ),
            message_size: hist("sluice_message_size_bytes", "Size of accepted messages", SIZES),
            dnsbl_queries: counters("sluice_dnsbl_queries_total", "DNS list lookups per zone", &["zone"]),
            dnsbl_listed: counters(
                "sluice_dnsbl_listed_total",
                "DNS list lookups that found the client listed",
                &["zone"],
            ),
            dnsbl_errors: counters(
                "sluice_dnsbl_errors_total",
                "DNS list lookups that failed (error or timeout)",
                &["zone", "kind"],
            ),
            dnsbl_duration: hists(
                "sluice_dnsbl_query_duration_seconds",
                "DNS list lookup latency",
                &["zone"],
            ),
            greylist: counters(
                "sluice_greylist_decisions_total",
                "Greylisting decisions (pass, defer)",
                &["decision"],
            ),
            limit_hits: counters(
                "sluice_limit_hits_total",
                "Per-client limits that refused a connection, message or recipient",
                &["limit"],
            ),
            scanner_scans: counters(
                "sluice_scanner_scans_total",
                "Virus scans per clamd endpoint and verdict (clean, virus, error)",
                &["endpoint", "verdict"],
            ),
            scanner_duration: hists(
                "sluice_scanner_duration_seconds",
                "Virus scan latency per clamd endpoint",
                &["endpoint"],
            ),
            scanner_in_flight: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("sluice_scanner_in_flight", "Virus scans running now per endpoint"),
                    &["endpoint"],
                )
                .expect("metric options"),
            ),
            scanner_up: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "sluice_scanner_up",
                        "1 if the clamd endpoint answered its last check or scan",
                    ),
                    &["endpoint"],
                )
                .expect("metric options"),
            ),
            scanner_queue: gauge(
                "sluice_scanner_queue_depth",
                "Accepted messages waiting for their deferred virus scan",
            ),
            scan_deferring: gauge(
                "sluice_scan_deferring",
                "1 while admission control accepts first and scans from the spool (scans over scan.latency_budget)",
            ),
            admission: counters(
                "sluice_scan_admission_total",
                "How accepted messages were virus-scanned (in-session, deferred)",
                &["mode"],
            ),
            spam_score: hist("sluice_spam_score", "Spam scores of scored messages", SCORES),
            spam_actions: counters(
                "sluice_spam_actions_total",
                "Spam actions (deliver, tag, quarantine, tempfail, reject)",
                &["action"],
            ),
            spool_messages: gauge("sluice_spool_messages", "Messages in the spool still to deliver"),
            spool_bytes: gauge("sluice_spool_bytes", "Bytes of the messages still to deliver"),
            spool_oldest_age: gauge(
                "sluice_spool_oldest_age_seconds",
                "Age of the oldest message still to deliver",
            ),
            spool_fsync: hist(
                "sluice_spool_fsync_duration_seconds",
                "Spool group-commit fsync latency",
                LATENCY,
            ),
            delivery_attempts: counters(
                "sluice_delivery_attempts_total",
                "Delivery attempts per recipient by result (delivered, deferred, bounced)",
                &["result"],
            ),
            delivery_duration: hist(
                "sluice_delivery_duration_seconds",
                "One delivery transaction to the next hop",
                LATENCY,
            ),
            next_hop_up: gauge("sluice_next_hop_up", "1 if the last connection to the next hop worked"),
            route_up: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "sluice_route_up",
                        "1 if the last connection of the route worked (default, a [relay.routes] domain, bounce, mx)",
                    ),
                    &["route"],
                )
                .expect("metric options"),
            ),
            route_deliveries: counters(
                "sluice_route_deliveries_total",
                "Recipient delivery results per route (delivered, deferred, bounced)",
                &["route", "result"],
            ),
            double_bounces: counter(
                "sluice_double_bounces_total",
                "DSNs that could not be delivered (never bounced again)",
            ),
            bans_active: gauge("sluice_bans_active", "Bans in force"),
            bans_added: counters("sluice_bans_added_total", "Bans added by offence", &["offence"]),
            bans_removed: counter("sluice_bans_removed_total", "Bans expired or deleted"),
            firewall_sync_lag: reg(
                &r,
                Gauge::new(
                    "sluice_firewall_sync_lag_seconds",
                    "Age of the oldest ban change not yet in the kernel (0: in sync)",
                )
                .expect("metric options"),
            ),
            firewall_sync_delay: hist(
                "sluice_firewall_sync_delay_seconds",
                "From a ban decision to its change being in the kernel (event -> kernel latency)",
                LATENCY,
            ),
            firewall_sync_errors: counter("sluice_firewall_sync_errors_total", "Firewall exporter failures"),
            events: counters("sluice_events_total", "Events emitted, by event", &["event"]),
            events_dropped: counter(
                "sluice_events_dropped_total",
                "Events the event log lost because it fell behind",
            ),
            registry: r,
            enabled: true,
        };
        m.next_hop_up.set(1);
        m
    }

    /// Metrics that nobody reads: the per-event and per-command counting is
    /// skipped.
    pub fn disabled() -> Metrics {
        Metrics {
            enabled: false,
            ..Metrics::new()
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding our own families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Counts one SMTP command's reply; `verb` as the parser names it
    /// ("EHLO"), "invalid" for a line that did not parse.
    pub fn command(&self, verb: &str, code: u16) {
        if !self.enabled {
            return;
        }
        let verb = match verb {
            "EHLO" => "ehlo",
            "HELO" => "helo",
            "MAIL" => "mail",
            "RCPT" => "rcpt",
            "DATA" => "data",
            "BDAT" => "bdat",
            "RSET" => "rset",
            "NOOP" => "noop",
            "QUIT" => "quit",
            "VRFY" => "vrfy",
            "STARTTLS" => "starttls",
            "invalid" => "invalid",
            _ => "other",
        };
        let class = match code / 100 {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.commands.with_label_values(&[verb, class]).inc();
    }

    pub fn recipient_accepted(&self) {
        if !self.enabled {
            return;
        }
        self.recipients.with_label_values(&["accepted", "ok"]).inc();
    }

    pub fn greylist_pass(&self) {
        if self.enabled {
            self.greylist.with_label_values(&["pass"]).inc();
        }
    }

    /// The counters an event drives.
    pub fn observe(&self, e: &Event) {
        if !self.enabled {
            return;
        }
        self.events.with_label_values(&[e.name()]).inc();
        let message = |result: &str, reason: &str| self.messages.with_label_values(&[result, reason]).inc();
        match e {
            Event::SessionOpened { .. } => {
                self.connections_accepted.inc();
                self.sessions_active.inc();
            }
            Event::SessionClosed { .. } => self.sessions_active.dec(),
            Event::ConnectRejected { reason, .. } => {
                self.connections_refused
                    .with_label_values(&[reason_label(reason)])
                    .inc();
                self.limit_hit(reason);
            }
            Event::MailRejected { reason, .. } | Event::HeloRejected { reason, .. } => self.limit_hit(reason),
            Event::RcptRejected { reason, reply, .. } => {
                let result = if reply.starts_with('4') {
                    "tempfailed"
                } else {
                    "rejected"
                };
                self.recipients.with_label_values(&[result, reason_label(reason)]).inc();
                if *reason == Reason::Greylist {
                    self.greylist.with_label_values(&["defer"]).inc();
                }
                self.limit_hit(reason);
            }
            Event::MessageRejected { reply, reason, .. } => message(
                if reply.starts_with('4') {
                    "tempfailed"
                } else {
                    "rejected"
                },
                reason,
            ),
            Event::VirusFound { mode, .. } => match *mode {
                "in-session" => message("rejected", "virus"),
                _ => message("quarantined", "virus"),
            },
            Event::ContentRejected { kind, mode, .. } => match *mode {
                "in-session" => message("rejected", kind),
                _ => message("quarantined", kind),
            },
            Event::SpamScored { score, action, .. } => {
                self.spam_score.observe(*score);
                self.spam_actions.with_label_values(&[action]).inc();
                match *action {
                    "reject" => message("rejected", "spam"),
                    "tempfail" => message("tempfailed", "spam"),
                    // Quarantined spam got 250: counted by MessageAccepted.
                    _ => {}
                }
            }
            Event::ScanFailed { session, held, .. } if *session != 0 && !held => message("tempfailed", "scan_failed"),
            Event::MessageAccepted { size, scan, .. } => {
                message("accepted", "ok");
                self.message_size.observe(*size as f64);
                if *scan != "none" {
                    self.admission.with_label_values(&[scan]).inc();
                }
            }
            Event::DeliveryAttempt { outcome, .. } => {
                let result = match outcome {
                    crate::events::RcptOutcome::Delivered => "delivered",
                    crate::events::RcptOutcome::Deferred => "deferred",
                    crate::events::RcptOutcome::Bounced => "bounced",
                };
                self.delivery_attempts.with_label_values(&[result]).inc();
            }
            Event::DoubleBounce { .. } => self.double_bounces.inc(),
            Event::BanAdded { offence, .. } => self.bans_added.with_label_values(&[offence]).inc(),
            Event::BanRemoved { .. } => self.bans_removed.inc(),
            _ => {}
        }
    }

    /// The spool gauges from its backlog at `now` (Unix seconds).
    pub fn set_spool(&self, b: crate::spool::fs::BacklogStats, now: u64) {
        self.spool_messages.set(b.messages as i64);
        self.spool_bytes.set(b.bytes as i64);
        self.spool_oldest_age
            .set(b.oldest.map_or(0, |o| now.saturating_sub(o)) as i64);
    }

    fn limit_hit(&self, reason: &Reason) {
        if let Reason::RateLimit { limit } = reason {
            self.limit_hits.with_label_values(&[limit]).inc();
        }
    }
}

/// The bounded label for a refusal reason.
pub fn reason_label(r: &Reason) -> &'static str {
    match r {
        Reason::UnknownUser => "unknown_user",
        Reason::RelayDenied => "relay_denied",
        Reason::Dnsbl { .. } => "dnsbl",
        Reason::Helo => "helo",
        Reason::Fcrdns => "fcrdns",
        Reason::Greylist => "greylist",
        Reason::RateLimit { .. } => "rate_limit",
        Reason::ConnectionLimit => "connection_limit",
        Reason::Banned => "banned",
        Reason::CallAheadUnavailable => "callahead_unavailable",
        Reason::CallAheadBudget => "callahead_budget",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
        for fam in m.registry.gather() {
            if fam.name() != name {
                continue;
            }
            for metric in fam.get_metric() {
                let ok = labels
                    .iter()
                    .all(|(k, v)| metric.get_label().iter().any(|l| l.name() == *k && l.value() == *v));
                if ok {
                    return match fam.get_field_type() {
                        prometheus::proto::MetricType::COUNTER => metric.get_counter().get_value(),
                        _ => metric.get_gauge().get_value(),
                    };
                }
            }
        }
        f64::NAN
    }

    #[test]
    fn rcpt_rejections_count_by_result_and_reason() {
        let m = Metrics::new();
        let rej = |reason, reply: &str| Event::RcptRejected {
            session: 1,
            ip: "192.0.2.1".parse().unwrap(),
            rcpt: "x@y".into(),
            reason,
            reply: reply.into(),
            evidence: String::new(),
        };
        m.observe(&rej(Reason::UnknownUser, "550 5.1.1 no"));
        m.observe(&rej(Reason::UnknownUser, "550 5.1.1 no"));
        m.observe(&rej(Reason::Greylist, "451 4.7.1 later"));
        m.recipient_accepted();
        assert_eq!(
            value(
                &m,
                "sluice_recipients_total",
                &[("result", "rejected"), ("reason", "unknown_user")]
            ),
            2.0
        );
        assert_eq!(
            value(
                &m,
                "sluice_recipients_total",
                &[("result", "tempfailed"), ("reason", "greylist")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &m,
                "sluice_recipients_total",
                &[("result", "accepted"), ("reason", "ok")]
            ),
            1.0
        );
        assert_eq!(
            value(&m, "sluice_greylist_decisions_total", &[("decision", "defer")]),
            1.0
        );
        assert_eq!(value(&m, "sluice_events_total", &[("event", "rcpt_rejected")]), 3.0);
    }

    #[test]
    fn render_has_build_info_and_help() {
        let text = Metrics::new().render();
        assert!(text.contains("sluice_build_info{version=\""), "{text}");
        assert!(text.contains("# HELP sluice_spool_messages"), "{text}");
    }
}
