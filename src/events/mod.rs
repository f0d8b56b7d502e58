//! Every decision sluice makes is an [`Event`] with a reason. The log, the
//! metrics and (later) the ban engine all read the same events from the
//! [`EventBus`]. `log` writes them out (the event log).

mod count;
pub mod log;
mod reason;

pub use reason::{
    Cause, ContentKind, Limit, Reason, Refusal, ScanMode, Unscannable, UnscannableAction, UnscannableKind,
};

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::firewall::Offence;
pub use crate::config::spam::Action as SpamAction;
use crate::metrics::Metrics;
use crate::proto::Reply;

/// Why a client session ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Disconnect {
    Quit,
    PeerClosed,
    Timeout,
    TooManyErrors,
    /// Refused before the greeting (connection limit).
    Refused(#[serde(serialize_with = "reason::reply_text")] Reply),
    Shutdown,
    TlsFailed(String),
    Io(String),
}

/// Outcome of one recipient at the next hop.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RcptOutcome {
    Delivered,
    Deferred,
    Bounced,
}

/// What an admin did to a quarantined message.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineAction {
    Release,
    Delete,
}

/// What an admin did outside the daemon (the CLI), sent to it to be an
/// event like any other (`sluice quarantine`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum AdminRecord {
    Quarantine {
        action: QuarantineAction,
        id: String,
        ip: IpAddr,
        helo: String,
        from: String,
        reason: String,
    },
}

impl AdminRecord {
    pub fn event(self) -> Event {
        match self {
            AdminRecord::Quarantine {
                action,
                id,
                ip,
                helo,
                from,
                reason,
            } => Event::QuarantineCommand {
                action,
                id,
                ip,
                tx: Tx {
                    helo,
                    from,
                    via: Via::Smtp,
                },
                reason,
            },
        }
    }
}

/// The transaction a message event belongs to, as an admin greps for it:
/// the HELO name and the sender (`""` for `<>`). In the event log these
/// are top-level keys, `helo` and `from`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Tx {
    pub helo: String,
    pub from: String,
    /// How the message reached sluice; in the event log only when it is
    /// not sluice's own SMTP listener (`"via":"milter"`).
    #[serde(skip_serializing_if = "Via::is_smtp")]
    pub via: Via,
}

impl Tx {
    pub fn of(envelope: &crate::mail::envelope::Envelope) -> Tx {
        Tx {
            helo: envelope.helo.clone(),
            from: envelope.mail_from.as_ref().map(|m| m.to_string()).unwrap_or_default(),
            via: Via::Smtp,
        }
    }
}

/// Which of sluice's doors a decision came through: its own SMTP
/// listener, Postfix's policy delegation (`[policy_server]`), or Postfix's
/// milter (`[milter]`). In the event log `"via"` is written only when it
/// is not the SMTP listener (on the refusal events of the policy server,
/// in the transaction of the milter's).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    #[default]
    Smtp,
    Policy,
    Milter,
}

impl Via {
    pub fn is_smtp(&self) -> bool {
        *self == Via::Smtp
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    SessionOpened {
        session: u64,
        ip: IpAddr,
    },
    SessionClosed {
        session: u64,
        ip: IpAddr,
        reason: Disconnect,
        messages: u32,
    },
    /// The client was refused at connect (limits, a check at connect).
    ConnectRejected {
        session: u64,
        #[serde(default, skip_serializing_if = "Via::is_smtp")]
        via: Via,
        ip: IpAddr,
        reason: Reason,
        #[serde(serialize_with = "reason::reply_text")]
        reply: Reply,
        evidence: String,
    },
    /// HELO/EHLO refused (HELO checks).
    HeloRejected {
        session: u64,
        #[serde(default, skip_serializing_if = "Via::is_smtp")]
        via: Via,
        ip: IpAddr,
        helo: String,
        reason: Reason,
        #[serde(serialize_with = "reason::reply_text")]
        reply: Reply,
        evidence: String,
    },
    /// MAIL FROM refused or deferred (rate limits).
    MailRejected {
        session: u64,
        #[serde(default, skip_serializing_if = "Via::is_smtp")]
        via: Via,
        ip: IpAddr,
        #[serde(flatten)]
        tx: Tx,
        reason: Reason,
        #[serde(serialize_with = "reason::reply_text")]
        reply: Reply,
        evidence: String,
    },
    /// RCPT TO refused or deferred: unknown user, DNSBL, greylisting, ...
    RcptRejected {
        session: u64,
        #[serde(default, skip_serializing_if = "Via::is_smtp")]
        via: Via,
        ip: IpAddr,
        rcpt: String,
        /// The transaction's queue id.
        id: String,
        #[serde(flatten)]
        tx: Tx,
        reason: Reason,
        #[serde(serialize_with = "reason::reply_text")]
        reply: Reply,
        evidence: String,
    },
    /// The client talked before the greeting: no service for it.
    Pregreet {
        session: u64,
        ip: IpAddr,
        evidence: String,
    },
    /// The client broke the protocol (syntax, sequence, bare newline, limits).
    ProtocolError {
        session: u64,
        ip: IpAddr,
        #[serde(serialize_with = "reason::reply_text")]
        reply: Reply,
        /// What the client did (the key is "reason" in the event log).
        #[serde(rename = "reason")]
        evidence: String,
    },
    /// A message was refused at end of DATA for its form or for load:
    /// `reason` is one of "size", "line_too_long", "bare_newline",
    /// "header_too_large", "mail_loop", "scan_backlog", "spool".
    MessageRejected {
        session: u64,
        ip: IpAddr,
        id: String,
        #[serde(flatten)]
        tx: Tx,
        #[serde(serialize_with = "reason::reply_text")]
        reply: Reply,
        #[serde(serialize_with = "reason::reason_label")]
        reason: Reason,
    },
    /// A virus was found: at the end of DATA (mode "in-session", the
    /// message got 554 5.7.1) or by the scan of an accepted message
    /// (mode "deferred", it went to quarantine).
    VirusFound {
        session: u64,
        ip: IpAddr,
        id: String,
        #[serde(flatten)]
        tx: Tx,
        name: String,
        mode: ScanMode,
    },
    /// A banned attachment or malformed MIME ("banned", "malformed").
    ContentRejected {
        session: u64,
        ip: IpAddr,
        id: String,
        #[serde(flatten)]
        tx: Tx,
        kind: ContentKind,
        what: String,
        mode: ScanMode,
    },
    /// Content nobody could look into (an encrypted or unknown archive,
    /// one past the limits) and what `scan.unscannable` did with it.
    Unscannable {
        session: u64,
        ip: IpAddr,
        id: String,
        #[serde(flatten)]
        tx: Tx,
        kind: UnscannableKind,
        what: String,
        action: UnscannableAction,
        mode: ScanMode,
    },
    /// The spam score of a message and the action taken ("deliver",
    /// "tag", "quarantine", "tempfail", "reject"); `rules` are the rule
    /// names that hit, comma separated; `bayes` and `ngram` are the two
    /// classifiers' spam probabilities where they voted.
    SpamScored {
        session: u64,
        ip: IpAddr,
        id: String,
        #[serde(flatten)]
        tx: Tx,
        score: f64,
        action: SpamAction,
        rules: String,
        bayes: Option<f64>,
        ngram: Option<f64>,
    },
    /// The firewall banned a network (in dry run: would have).
    BanAdded {
        net: String,
        offence: Offence,
        /// Seconds since the Unix epoch.
        until: u64,
        strike: u32,
        rule: String,
        dry_run: bool,
        /// The node that decided it, when another node of the cluster
        /// did (applied here from the ban stream).
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// A ban ran out, or an admin lifted it (`by` "expiry", "admin", or
    /// "cluster": lifted on another node).
    BanRemoved {
        net: String,
        by: &'static str,
    },
    /// An accepted message was refused by its deferred scan and kept in
    /// the quarantine instead of being delivered.
    Quarantined {
        ip: IpAddr,
        id: String,
        #[serde(flatten)]
        tx: Tx,
        reason: Cause,
    },
    /// The message could not be scanned: it got 451 4.7.1, or (`held`)
    /// it was accepted and kept for a later scan.
    ScanFailed {
        session: u64,
        ip: IpAddr,
        id: String,
        #[serde(flatten)]
        tx: Tx,
        error: String,
        held: bool,
    },
    /// A message is durably spooled and got 250.
    MessageAccepted {
        session: u64,
        ip: IpAddr,
        id: String,
        #[serde(flatten)]
        tx: Tx,
        size: usize,
        rcpts: usize,
        /// How its virus scan is done.
        scan: ScanMode,
        /// Its Message-ID field (`sluice trace` finds it by this too).
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// One delivery attempt to the next hop finished.
    DeliveryAttempt {
        id: String,
        ip: IpAddr,
        #[serde(flatten)]
        tx: Tx,
        rcpt: String,
        outcome: RcptOutcome,
        reply: String,
        attempt: u32,
    },
    /// A DSN was queued for the sender.
    BounceQueued {
        id: String,
        ip: IpAddr,
        #[serde(flatten)]
        tx: Tx,
        to: String,
        rcpts: usize,
    },
    /// A message with the null sender (a DSN) could not be delivered to
    /// `rcpt`: it is not bounced again.
    DoubleBounce {
        id: String,
        ip: IpAddr,
        #[serde(flatten)]
        tx: Tx,
        rcpt: String,
        reply: String,
    },
    /// An admin's `sluice queue` command changed a message: "flush",
    /// "hold", "release" or "delete" (`id` is empty for a flush of all).
    QueueCommand {
        action: &'static str,
        id: String,
        /// Messages it applied to.
        messages: usize,
    },
    /// An admin released (delivered) or deleted a quarantined message
    /// (`sluice quarantine release|delete`).
    QuarantineCommand {
        action: QuarantineAction,
        id: String,
        ip: IpAddr,
        #[serde(flatten)]
        tx: Tx,
        /// Why it was quarantined.
        reason: String,
    },
    /// `sluice reload` or SIGHUP re-read the configuration: `result` is
    /// "applied" or "failed" (`error` names the failing key; nothing
    /// changed); `restart_needed` lists changed settings that keep their
    /// running value until a restart.
    ConfigReload {
        result: &'static str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        restart_needed: Vec<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The resolver turned failing (too many of sluice's own queries
    /// timed out or failed in the window) or healthy again.
    ResolverHealth {
        failing: bool,
        /// Share of failed queries in the window.
        ratio: f64,
        queries: u32,
    },
    /// Stress mode turned on or off (see `listener::stress`).
    StressMode {
        on: bool,
        /// Sessions open when it changed.
        sessions: usize,
        why: String,
    },
    /// A TLS certificate or recipient table reload, a spool problem, ...
    Warning {
        component: &'static str,
        message: String,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::SessionOpened { .. } => "session_opened",
            Event::SessionClosed { .. } => "session_closed",
            Event::ConnectRejected { .. } => "connect_rejected",
            Event::HeloRejected { .. } => "helo_rejected",
            Event::MailRejected { .. } => "mail_rejected",
            Event::RcptRejected { .. } => "rcpt_rejected",
            Event::Pregreet { .. } => "pregreet",
            Event::ProtocolError { .. } => "protocol_error",
            Event::MessageRejected { .. } => "message_rejected",
            Event::MessageAccepted { .. } => "message_accepted",
            Event::VirusFound { .. } => "virus_found",
            Event::ContentRejected { .. } => "content_rejected",
            Event::Unscannable { .. } => "unscannable",
            Event::Quarantined { .. } => "quarantined",
            Event::SpamScored { .. } => "spam_scored",
            Event::BanAdded { .. } => "ban_added",
            Event::BanRemoved { .. } => "ban_removed",
            Event::ScanFailed { .. } => "scan_failed",
            Event::DeliveryAttempt { .. } => "delivery_attempt",
            Event::BounceQueued { .. } => "bounce_queued",
            Event::DoubleBounce { .. } => "double_bounce",
            Event::QueueCommand { .. } => "queue_command",
            Event::ConfigReload { .. } => "config_reload",
            Event::QuarantineCommand { .. } => "quarantine_command",
            Event::ResolverHealth { .. } => "resolver_health",
            Event::StressMode { .. } => "stress_mode",
            Event::Warning { .. } => "warning",
        }
    }
}

/// Broadcast bus. Emitting never blocks: a slow subscriber loses events
/// (counted in `lagged`), sessions never wait for it. The metrics are
/// updated synchronously on emit, so no count is lost.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    lagged: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl EventBus {
    /// A bus with metrics of its own (tests, tools).
    pub fn new(capacity: usize) -> Self {
        Self::with_metrics(capacity, Arc::new(Metrics::new()))
    }

    pub fn with_metrics(capacity: usize, metrics: Arc<Metrics>) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self {
            tx,
            lagged: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    /// The metrics every component updates (one registry per server).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn emit(&self, e: Event) {
        self.metrics.observe(&e);
        // No subscriber is not an error.
        let _ = self.tx.send(Arc::new(e));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    pub(crate) fn note_lagged(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
        self.metrics.events_dropped.inc_by(n);
    }
}
