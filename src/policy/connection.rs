//! The accept seam: [`ConnectionFilter`]s the listener asks, in order,
//! before a session starts (bans, the allowlist, connection rate and
//! concurrency; a PROXY-protocol front later). Each answer is synchronous
//! and O(1): nothing here may wait.

use std::net::IpAddr;

use super::Refusal;
use super::limits::{Limits, SessionSlot};
use crate::events::{Limit, Reason};
use crate::proto::Reply;

/// What one filter says about a new connection.
pub enum Admit {
    /// No objection: ask the next filter.
    Next,
    /// Admitted, and no further filter is asked (the allowlist).
    Trusted,
    /// No objection, with a slot held for the life of the session.
    Hold(SessionSlot),
    Refuse(Refusal),
}

pub trait ConnectionFilter: Send + Sync {
    /// `ip` is the client as the listener normalised it.
    fn admit(&self, ip: IpAddr) -> Admit;
}

/// The filters in order: the first refusal wins; `Trusted` ends the
/// questions; the slots of a refused client are released at once.
pub fn admit_all(filters: &[std::sync::Arc<dyn ConnectionFilter>], ip: IpAddr) -> Result<Vec<SessionSlot>, Refusal> {
    let mut slots = Vec::new();
    for f in filters {
        match f.admit(ip) {
            Admit::Next => {}
            Admit::Trusted => break,
            Admit::Hold(s) => slots.push(s),
            Admit::Refuse(r) => return Err(r),
        }
    }
    Ok(slots)
}

/// `policy.allowlist`: trusted networks skip the limits (not the bans:
/// put this after the ban filter).
pub struct Allowlist(pub Vec<ipnet::IpNet>);

impl ConnectionFilter for Allowlist {
    fn admit(&self, ip: IpAddr) -> Admit {
        if self.0.iter().any(|n| n.contains(&ip)) {
            Admit::Trusted
        } else {
            Admit::Next
        }
    }
}

/// Per-client connection rate, then concurrency (`[limits]`).
pub struct ConnectionLimits {
    pub limits: std::sync::Arc<Limits>,
    /// `limits.per_ip_connection_rate`, for the evidence.
    pub rate: u32,
}

impl ConnectionFilter for ConnectionLimits {
    fn admit(&self, ip: IpAddr) -> Admit {
        let limits = &self.limits;
        if !limits.connections.hit_local(ip, tokio::time::Instant::now()) {
            let evidence = format!("connection rate of {ip} over {}/min", self.rate);
            let reason = Reason::RateLimit {
                limit: Limit::Connections,
            };
            return Admit::Refuse(Refusal::new(Reply::CLIENT_CONNECTION_RATE, reason, evidence));
        }
        if limits.per_ip_connections == 0 {
            // Unlimited: no per-client bookkeeping on the accept path.
            return Admit::Next;
        }
        match limits.concurrency.acquire(ip, limits.per_ip_connections) {
            Some(slot) => Admit::Hold(slot),
            None => {
                let evidence = format!("{ip} already has {} sessions", limits.per_ip_connections);
                let reason = Reason::RateLimit {
                    limit: Limit::Concurrency,
                };
                Admit::Refuse(Refusal::new(Reply::CLIENT_CONCURRENCY, reason, evidence))
            }
        }
    }
}
