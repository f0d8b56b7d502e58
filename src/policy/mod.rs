//! Pre-DATA policy: checks run at each SMTP stage.
//!
//! A [`Check`] looks at one stage and returns a [`Decision`]. The
//! [`CheckChain`] runs them in order; the first reject or defer wins and is
//! reported with the name of the check that decided, so the event log,
//! metrics and the ban engine all know why.

pub mod callahead;
pub mod connection;
pub mod dnsbl;
pub mod greylist;
pub mod helo;
pub mod limits;
pub mod recipients;
pub mod stress;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

pub use crate::events::{Reason, Refusal};
use crate::proto::Mailbox;

/// The SMTP stage a check is asked about.
#[derive(Debug)]
pub enum Stage<'a> {
    Connect,
    Helo(&'a str),
    /// The sender (`None`: `<>`), and the HELO name given before it.
    MailFrom {
        from: Option<&'a Mailbox>,
        helo: Option<&'a str>,
    },
    /// One recipient, with the transaction's sender.
    RcptTo {
        rcpt: &'a Mailbox,
        from: Option<&'a Mailbox>,
    },
}

/// What a check decided. The refusal's `reason` and `evidence` are for
/// events and logs only; the client sees its `reply`.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Continue,
    /// 5xx: a verdict.
    Reject(Refusal),
    /// 4xx: try again later.
    Defer(Refusal),
}

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// What checks know about the session, and the work they started earlier
/// in it (DNS queries begun at connect, awaited at RCPT).
pub struct SessionCtx {
    pub ip: IpAddr,
    /// In `policy.allowlist`: reputation checks are skipped.
    pub allowlisted: bool,
    /// DNSBL state; a std mutex, held only to move handles in and out.
    pub reputation: Mutex<dnsbl::Reputation>,
    /// FCrDNS lookup started at connect.
    pub fcrdns: Mutex<helo::FcrdnsState>,
    /// The verified reverse-DNS name, once known.
    pub rdns: Mutex<Option<String>>,
    /// Reputation weights added by checks (HELO, FCrDNS), with evidence;
    /// the DNSBL decision adds these to its own score.
    pub score: std::sync::atomic::AtomicI32,
    pub score_notes: Mutex<Vec<String>>,
    /// When the transaction's DNS budget (`dns.budget`) runs out: set at
    /// MAIL; the DNS lists wait no longer (nor does authentication).
    pub dns_deadline: Mutex<Option<tokio::time::Instant>>,
    /// Session slots taken across the nodes (`[cluster]`), given back
    /// when the session ends.
    pub held: Mutex<Vec<limits::SharedSlot>>,
}

impl SessionCtx {
    /// `ip`: the client as the listener normalised it.
    pub fn new(ip: IpAddr, allowlist: &[ipnet::IpNet]) -> Self {
        Self {
            ip,
            allowlisted: allowlist.iter().any(|n| n.contains(&ip)),
            reputation: Mutex::new(dnsbl::Reputation::default()),
            fcrdns: Mutex::new(helo::FcrdnsState::default()),
            rdns: Mutex::new(None),
            score: std::sync::atomic::AtomicI32::new(0),
            score_notes: Mutex::new(Vec::new()),
            dns_deadline: Mutex::new(None),
            held: Mutex::new(Vec::new()),
        }
    }

    /// The DNS budget's end for the current transaction, if set.
    pub fn dns_deadline(&self) -> Option<tokio::time::Instant> {
        *self.dns_deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a transaction's DNS budget of `budget` from now.
    pub fn start_dns_budget(&self, budget: std::time::Duration) {
        *self.dns_deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now() + budget);
    }
}

/// Where a refusal by the checks was decided, for its event.
pub struct Refused {
    pub via: crate::events::Via,
    pub session: u64,
    pub ip: IpAddr,
    /// The transaction's queue id (empty before one is known).
    pub id: String,
    pub tx: crate::events::Tx,
}

impl Refused {
    /// The event for a refusal at `stage` by `check` (one kind per stage),
    /// the same whichever door the client came through.
    pub fn event(self, stage: &Stage<'_>, check: &str, refusal: Refusal) -> crate::events::Event {
        use crate::events::Event;
        let Refused {
            via,
            session,
            ip,
            id,
            tx,
        } = self;
        let Refusal {
            reply,
            reason,
            evidence,
        } = refusal;
        let evidence = format!("{check}: {evidence}");
        match stage {
            Stage::Connect => Event::ConnectRejected {
                session,
                via,
                ip,
                reason,
                reply,
                evidence,
            },
            Stage::Helo(h) => Event::HeloRejected {
                session,
                via,
                ip,
                helo: h.to_string(),
                reason,
                reply,
                evidence,
            },
            Stage::MailFrom { .. } => Event::MailRejected {
                session,
                via,
                ip,
                tx,
                reason,
                reply,
                evidence,
            },
            Stage::RcptTo { rcpt, .. } => Event::RcptRejected {
                session,
                via,
                ip,
                rcpt: rcpt.to_string(),
                id,
                tx,
                reason,
                reply,
                evidence,
            },
        }
    }
}

/// One pre-DATA check. Stages it does not care about return `Continue`.
pub trait Check: Send + Sync {
    fn name(&self) -> &'static str;
    fn check<'a>(&'a self, stage: &'a Stage<'a>, ctx: &'a SessionCtx) -> CheckFuture<'a>;
}

/// A decision plus the check that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub check: &'static str,
    pub decision: Decision,
}

/// Runs checks in order; the first non-`Continue` decision wins.
#[derive(Clone, Default)]
pub struct CheckChain {
    checks: Vec<Arc<dyn Check>>,
}

impl CheckChain {
    pub fn new(checks: Vec<Arc<dyn Check>>) -> Self {
        Self { checks }
    }

    pub async fn run(&self, stage: &Stage<'_>, ctx: &SessionCtx) -> Option<Verdict> {
        for c in &self.checks {
            let decision = c.check(stage, ctx).await;
            if decision != Decision::Continue {
                return Some(Verdict {
                    check: c.name(),
                    decision,
                });
            }
        }
        None
    }
}
