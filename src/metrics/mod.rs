//! Prometheus metrics, registered in one place ([`Metrics::new`]) and
//! passed down as a value (it rides on the event bus).
//!
//! Most counters are driven by the events themselves (`events::count`,
//! called synchronously by `EventBus::emit`, so a count is never lost to a
//! slow subscriber); latencies, gauges and per-endpoint figures are set by
//! the component that measures them. Every label value comes from a
//! bounded set (verbs, reasons, configured zones and endpoints): never an
//! address or a client IP.
//!
//! The listener that serves them, the status page and the probes are in
//! the `status` module; the counting of events is in `events::count`.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

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
    pub(crate) enabled: bool,
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
    pub dnsbl_zone_enabled: IntGaugeVec,
    pub dns_queries: IntCounterVec,
    pub dns_resolver_failing: IntGauge,
    pub auth_skipped: IntCounterVec,
    pub stress_mode: IntGauge,
    pub config_reloads: IntCounterVec,
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
    /// `[cluster]`: the shared store answered the last heartbeat.
    pub cluster_up: IntGauge,
    pub cluster_nodes: IntGauge,
    pub cluster_op: HistogramVec,
    pub cluster_errors: IntCounterVec,
    pub cluster_fallbacks: IntCounterVec,
    /// The ban stream (`[cluster]`): from a ban's decision on one node to
    /// its being applied on this one.
    pub cluster_ban_propagation: Histogram,
    /// Age of the last ban stream entry read (0 while caught up).
    pub cluster_ban_stream_lag: Gauge,
    /// Ban changes published (`published`) and applied from other nodes
    /// (`applied`).
    pub cluster_bans: IntCounterVec,
    /// Local ban changes waiting for the store to publish them.
    pub cluster_ban_outbox: IntGauge,
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
            dnsbl_zone_enabled: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "sluice_dnsbl_zone_enabled",
                        "1 if the DNS list zone answered its test entries right at its last probe, 0 if disabled",
                    ),
                    &["zone"],
                )
                .expect("metric options"),
            ),
            dns_queries: counters(
                "sluice_dns_queries_total",
                "sluice's own DNS queries (lists, HELO, reverse DNS) by outcome: answered (records or a negative answer), timeout, failed",
                &["outcome"],
            ),
            dns_resolver_failing: gauge(
                "sluice_dns_resolver_failing",
                "1 while the resolver is failing (too many timeouts or failures in the window); authentication then answers temperror at once",
            ),
            auth_skipped: counters(
                "sluice_auth_skipped_total",
                "SPF/DKIM/DMARC checks answered temperror at once: the resolver was failing, or the transaction's DNS budget was spent",
                &["reason"],
            ),
            stress_mode: gauge(
                "sluice_stress_mode",
                "1 while stress mode is on (shorter timeouts, fewer errors allowed, earlier tarpit)",
            ),
            config_reloads: counters(
                "sluice_config_reloads_total",
                "Reloads of the configuration (SIGHUP, sluice reload) by result: applied, failed (the file did not validate; nothing changed)",
                &["result"],
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
                "Virus scans per clamd endpoint and verdict (clean, virus, unscannable, error)",
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
            cluster_up: gauge(
                "sluice_cluster_up",
                "1 while the shared store ([cluster]) answers; 0 while this node falls back to its own state",
            ),
            cluster_nodes: gauge(
                "sluice_cluster_nodes",
                "Nodes seen in the shared store's heartbeat (the rate limits are divided by it while the store is away)",
            ),
            cluster_op: hists(
                "sluice_cluster_op_seconds",
                "Latency of the shared store's operations, by operation",
                &["op"],
            ),
            cluster_errors: counters(
                "sluice_cluster_errors_total",
                "Shared store operations that failed or timed out, by operation",
                &["op"],
            ),
            cluster_fallbacks: counters(
                "sluice_cluster_fallbacks_total",
                "Operations answered without the shared store (greylist: failed open or closed), by operation",
                &["op"],
            ),
            cluster_ban_propagation: hist(
                "sluice_cluster_ban_propagation_seconds",
                "From a ban decided on another node to its being applied on this one",
                LATENCY,
            ),
            cluster_ban_stream_lag: reg(
                &r,
                Gauge::new(
                    "sluice_cluster_ban_stream_lag_seconds",
                    "Age of the last ban stream entry this node read (0 while caught up)",
                )
                .expect("metric options"),
            ),
            cluster_bans: counters(
                "sluice_cluster_bans_total",
                "Ban changes published to the ban stream, and applied from other nodes",
                &["dir"],
            ),
            cluster_ban_outbox: gauge(
                "sluice_cluster_ban_outbox",
                "Local ban changes waiting for the shared store to publish them",
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

    /// The spool gauges from its backlog at `now` (Unix seconds).
    /// `oldest`: when the oldest message still to deliver arrived.
    pub fn set_spool(&self, messages: u64, bytes: u64, oldest: Option<u64>, now: u64) {
        self.spool_messages.set(messages as i64);
        self.spool_bytes.set(bytes as i64);
        self.spool_oldest_age
            .set(oldest.map_or(0, |o| now.saturating_sub(o)) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_build_info_and_help() {
        let text = Metrics::new().render();
        assert!(text.contains("sluice_build_info{version=\""), "{text}");
        assert!(text.contains("# HELP sluice_spool_messages"), "{text}");
    }
}
