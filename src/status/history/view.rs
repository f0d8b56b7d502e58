//! What the status page shows: the JSON of `/api/status`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::quarantine::QuarantineStats;
use crate::status::health::Readiness;

#[derive(Debug, Clone, Serialize)]
pub struct TopNetwork {
    pub net: String,
    pub bans: usize,
    pub until: u64,
}

/// How the top banned networks are grouped: /`v4` and /`v6`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Grouping {
    pub v4: u8,
    pub v6: u8,
}

/// A next hop on the status page.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NextHopView {
    /// "default", a `[relay.routes]` domain pattern, "bounce" or "mx".
    pub route: String,
    pub next_hop: String,
    /// Whether its last attempt or probe reached it; `None`: not tried yet.
    pub up: Option<bool>,
    /// Messages in the delivery queue with a recipient on this route.
    pub queued: usize,
    /// Its last reply to a delivery ("250 2.0.0 Ok", or why the attempt
    /// failed).
    pub last_reply: Option<String>,
    /// Unix seconds of `last_reply`.
    pub last_reply_at: Option<u64>,
}

/// A clamd endpoint on the status page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClamdView {
    pub endpoint: String,
    /// Whether it answered its last check or scan.
    pub up: bool,
    /// Scans running on it now.
    pub in_flight: i64,
    /// Scans in the last minute, and their latency.
    pub scans: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
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
    /// Spam actions per second by action (deliver, tag, quarantine,
    /// tempfail, reject); actions not taken in the window are left out.
    pub spam_actions: BTreeMap<String, Vec<u64>>,
    /// Messages put in the quarantine per second.
    pub quarantined: Vec<u64>,
    /// What the quarantine holds (sampled every few seconds).
    pub quarantine: Option<QuarantineStats>,
    pub scan_latency_ms: Vec<Option<f64>>,
    /// Accepted messages waiting for their deferred virus scan.
    pub scan_backlog: Vec<i64>,
    /// Admission control accepts first and scans from the spool now.
    pub scan_deferring: bool,
    pub clamd: Vec<ClamdView>,
    pub next_hops: Vec<NextHopView>,
    pub queue: Vec<i64>,
    pub bans: Vec<i64>,
    pub sessions: Vec<i64>,
    pub top_networks: Vec<TopNetwork>,
    pub top_networks_grouping: Grouping,
    pub ready: Readiness,
}
