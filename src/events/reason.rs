//! The typed vocabulary of decisions: why something was refused
//! ([`Reason`], [`Refusal`]), how a message was scanned ([`ScanMode`]), what
//! the content checks found ([`ContentKind`]). Metrics, the ban engine and
//! the event log match on these, never on text.

use serde::{Serialize, Serializer};

use crate::proto::Reply;

/// A per-client limit that was hit.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Connections,
    Concurrency,
    Messages,
    Recipients,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::Concurrency => "concurrency",
            Limit::Messages => "messages",
            Limit::Recipients => "recipients",
        }
    }
}

/// Why a client, command, recipient or message was refused: the typed
/// reason the ban engine and the metrics key on. Details go in the
/// refusal's `evidence`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reason {
    UnknownUser,
    RelayDenied,
    /// Listed in DNS lists (and/or scored by HELO/FCrDNS checks) up to the threshold.
    Dnsbl {
        zones: Vec<String>,
    },
    Helo,
    Fcrdns,
    Greylist,
    /// A per-client limit.
    RateLimit {
        limit: Limit,
    },
    /// `server.max_connections` reached.
    ConnectionLimit,
    /// The client's address is banned by the firewall.
    Banned,
    /// On a `proxy_protocol` listener: the peer is not one of
    /// `server.proxy_from`, or its PROXY header is missing or invalid.
    /// (Never an offence: the peer may be the load balancer itself.)
    ProxyProtocol,
    /// Call-ahead could not verify the recipient now.
    CallAheadUnavailable,
    /// The client used up its call-ahead probe budget.
    CallAheadBudget,
    /// The client talked before the greeting.
    Pregreet,
    /// Syntax, sequence, pipelining, limits of the command dialogue.
    Protocol,
    // --- the message, at the end of DATA ---
    /// Over `server.max_message_size`.
    Size,
    LineTooLong,
    BareNewline,
    HeaderTooLarge,
    /// Too many Received headers.
    MailLoop,
    /// Scanning is behind and the held backlog is full.
    ScanBacklog,
    /// The spool could not store it.
    Spool,
    Virus {
        name: String,
    },
    /// A banned attachment (by name, type, or inside an archive).
    BannedPart,
    /// MIME that cannot be read safely.
    Malformed,
    Spam,
    /// The virus scan could not be done.
    ScanFailed,
    /// Content nobody could look into (`scan.unscannable = "reject"`).
    Unscannable {
        unscannable: UnscannableKind,
    },
}

impl Reason {
    /// The bounded label of metrics and of `message_rejected` events.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::UnknownUser => "unknown_user",
            Reason::RelayDenied => "relay_denied",
            Reason::Dnsbl { .. } => "dnsbl",
            Reason::Helo => "helo",
            Reason::Fcrdns => "fcrdns",
            Reason::Greylist => "greylist",
            Reason::RateLimit { .. } => "rate_limit",
            Reason::ConnectionLimit => "connection_limit",
            Reason::Banned => "banned",
            Reason::ProxyProtocol => "proxy_protocol",
            Reason::CallAheadUnavailable => "callahead_unavailable",
            Reason::CallAheadBudget => "callahead_budget",
            Reason::Pregreet => "pregreet",
            Reason::Protocol => "protocol",
            Reason::Size => "size",
            Reason::LineTooLong => "line_too_long",
            Reason::BareNewline => "bare_newline",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::MailLoop => "mail_loop",
            Reason::ScanBacklog => "scan_backlog",
            Reason::Spool => "spool",
            Reason::Virus { .. } => "virus",
            Reason::BannedPart => "banned",
            Reason::Malformed => "malformed",
            Reason::Spam => "spam",
            Reason::ScanFailed => "scan_failed",
            Reason::Unscannable { .. } => "unscannable",
        }
    }
}

/// A refusal: the reply the client gets, why, and the evidence for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reply: Reply,
    pub reason: Reason,
    pub evidence: String,
}

impl Refusal {
    pub fn new(reply: Reply, reason: Reason, evidence: impl Into<String>) -> Refusal {
        Refusal {
            reply,
            reason,
            evidence: evidence.into(),
        }
    }
}

/// How a message's virus scan is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ScanMode {
    /// No scanning configured.
    None,
    /// Scanned before the reply to DATA.
    InSession,
    /// Accepted, then scanned from the spool before delivery.
    Deferred,
}

impl ScanMode {
    pub fn label(self) -> &'static str {
        match self {
            ScanMode::None => "none",
            ScanMode::InSession => "in-session",
            ScanMode::Deferred => "deferred",
        }
    }
}

/// What the content checks refused a message for (other than a virus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    /// A banned attachment.
    Banned,
    /// Malformed MIME.
    Malformed,
    /// Content nobody could look into (quarantined by `scan.unscannable`).
    Unscannable,
}

impl ContentKind {
    pub fn label(self) -> &'static str {
        match self {
            ContentKind::Banned => "banned",
            ContentKind::Malformed => "malformed",
            ContentKind::Unscannable => "unscannable",
        }
    }
}

/// Why content could not be looked into (`scan.unscannable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum UnscannableKind {
    /// An encrypted archive (zip, RAR, 7z; or clamd's Heuristics.Encrypted).
    Encrypted,
    /// An archive format neither sluice nor clamd opens, or a damaged one.
    Unknown,
    /// Past sluice's archive limits (depth, entries, unpacked size).
    PastLimits,
    /// clamd's "limits exceeded" answer (Heuristics.Limits.Exceeded.*,
    /// with `AlertExceedsMax yes`).
    ScannerLimits,
}

impl UnscannableKind {
    pub fn label(self) -> &'static str {
        match self {
            UnscannableKind::Encrypted => "encrypted",
            UnscannableKind::Unknown => "unknown_format",
            UnscannableKind::PastLimits => "past_limits",
            UnscannableKind::ScannerLimits => "scanner_limits",
        }
    }
}

/// Content that could not be looked into: why, and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unscannable {
    pub kind: UnscannableKind,
    pub what: String,
}

impl std::fmt::Display for Unscannable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unscannable: {}", self.what)
    }
}

pub use crate::config::scan::UnscannableAction;

/// A reply in the event log: its wire text on one line ("550 5.1.1 ...").
pub(super) fn reply_text<S: Serializer>(r: &Reply, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(r)
}

/// A reason as its label ("size"), as `message_rejected` always wrote it.
pub(super) fn reason_label<S: Serializer>(r: &Reason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.label())
}

/// Why a message is in the quarantine. Written (in the event log and the
/// quarantine's files) as the text sluice always wrote: "virus found: X",
/// the content check's description, or "spam".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Virus(String),
    Content(ContentKind, String),
    Spam,
    /// A text this version does not recognise (files of other versions).
    Other(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Virus(name) => write!(f, "virus found: {name}"),
            Cause::Content(_, what) | Cause::Other(what) => f.write_str(what),
            Cause::Spam => f.write_str("spam"),
        }
    }
}

impl From<&str> for Cause {
    fn from(s: &str) -> Cause {
        match s {
            "spam" => Cause::Spam,
            s => match s.strip_prefix("virus found: ") {
                Some(name) => Cause::Virus(name.to_string()),
                None => Cause::Other(s.to_string()),
            },
        }
    }
}

impl Serialize for Cause {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cause {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cause, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Cause::from(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Event, SpamAction};
    use super::*;

    fn json(e: &Event) -> String {
        serde_json::to_string(e).unwrap()
    }

    /// The event log's JSON is what it was when these were strings.
    #[test]
    fn typed_fields_keep_the_event_log_json() {
        let ip = "192.0.2.1".parse().unwrap();
        let mut e = Event::MessageRejected {
            tx: crate::events::Tx {
                helo: "mx.client.example".into(),
                from: "a@client.example".into(),
                via: crate::events::Via::Smtp,
            },
            id: "Q".into(),
            session: 3,
            ip,
            reply: Reply::SIZE_EXCEEDED,
            reason: Reason::Size,
        };
        assert_eq!(
            json(&e),
            r#"{"event":"message_rejected","session":3,"ip":"192.0.2.1","id":"Q","helo":"mx.client.example","from":"a@client.example","reply":"552 5.3.4 Message size exceeds fixed limit","reason":"size"}"#
        );
        // The same event from the milter says so; the front end's never does.
        if let Event::MessageRejected { tx, .. } = &mut e {
            tx.via = crate::events::Via::Milter;
        }
        assert!(
            json(&e).contains(r#""helo":"mx.client.example","from":"a@client.example","via":"milter","reply""#),
            "{}",
            json(&e)
        );
        let e = Event::ProtocolError {
            session: 3,
            ip,
            reply: Reply::SYNTAX_ERROR,
            evidence: "bad command".into(),
        };
        assert!(
            json(&e).ends_with(r#""reply":"500 5.5.2 Syntax error, command unrecognized","reason":"bad command"}"#)
        );
        let e = Event::VirusFound {
            tx: Default::default(),
            session: 3,
            ip,
            id: "Q".into(),
            name: "Eicar".into(),
            mode: ScanMode::InSession,
        };
        assert!(
            json(&e).ends_with(r#""name":"Eicar","mode":"in-session"}"#),
            "{}",
            json(&e)
        );
        let e = Event::SpamScored {
            tx: Default::default(),
            session: 3,
            ip,
            id: "Q".into(),
            score: 12.0,
            action: SpamAction::Reject,
            rules: String::new(),
            bayes: None,
            ngram: None,
        };
        assert!(json(&e).contains(r#""action":"reject""#), "{}", json(&e));
        let e = Event::ContentRejected {
            tx: Default::default(),
            session: 3,
            ip,
            id: "Q".into(),
            kind: ContentKind::Banned,
            what: "x.exe".into(),
            mode: ScanMode::Deferred,
        };
        assert!(
            json(&e).ends_with(r#""kind":"banned","what":"x.exe","mode":"deferred"}"#),
            "{}",
            json(&e)
        );
        let e = Event::RcptRejected {
            via: crate::events::Via::Smtp,
            tx: Default::default(),
            id: String::new(),
            session: 3,
            ip,
            rcpt: "a@b".into(),
            reason: Reason::RateLimit {
                limit: Limit::Recipients,
            },
            reply: Reply::CLIENT_RCPT_RATE,
            evidence: String::new(),
        };
        assert!(
            json(&e).contains(r#""reason":{"kind":"rate_limit","limit":"recipients"},"reply":"452 4.7.0 "#),
            "{}",
            json(&e)
        );
        let e = Event::Quarantined {
            ip,
            id: "Q".into(),
            tx: Default::default(),
            reason: Cause::Virus("Eicar".into()),
        };
        assert!(json(&e).ends_with(r#""reason":"virus found: Eicar"}"#), "{}", json(&e));
    }
}
