//! Recipient call-ahead: for domains marked `@domain VERIFY` in the
//! recipient table, ask the next hop whether a recipient exists before
//! accepting it (`MAIL FROM:<>`, `RCPT TO`, `RSET` over pooled
//! connections). Answers are cached: existing recipients for days,
//! unknown ones for hours, so a dictionary attack is answered from the
//! cache. Each client may cause only so many probes per minute; beyond
//! that, uncached recipients get 450 without a probe, so an attacker can
//! never flood the next hop.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::limits::RateCounter;
use super::{Decision, Reason, Refusal};
use crate::config::{DomainPattern, Hop, Relay};
use crate::delivery::client::Client;
use crate::delivery::tls::HopTlsConfig;
use crate::mail::date::now_secs;
use crate::proto::{Mailbox, Reply};
use crate::state::{Rate, StateStore, Verified as Answer};

pub use crate::config::callahead::CallAheadConfig;

/// What the next hop said about a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Exists,
    /// With the next hop's reply, for the log.
    Unknown(String),
    /// No answer now (4xx, connection trouble): not cached.
    Unavailable(String),
    /// The client used up its probe budget.
    OverBudget,
}

/// One next hop probes go to, with its idle connections.
struct ProbeHop {
    /// `None`: the default next hop.
    domains: Option<DomainPattern>,
    hop: Hop,
    tls: HopTlsConfig,
    /// Idle, greeted probe connections; a std mutex, only pushed/popped.
    pool: Mutex<Vec<Client>>,
}

pub struct CallAhead {
    cfg: CallAheadConfig,
    relay: Relay,
    /// The routes' next hops, most specific first, then the default: a
    /// recipient is asked where its mail would go.
    hops: Vec<ProbeHop>,
    /// The answers (by address), and the probe budgets.
    store: Arc<dyn StateStore>,
    budget: RateCounter,
    /// All clients' probes per second (only probes sent are counted: a
    /// flood that is refused does not keep the door shut for everyone),
    /// and the probes in progress.
    total: Mutex<TokenBucket>,
    in_flight: tokio::sync::Semaphore,
}

/// Probes per second for everyone: `rate` tokens a second, at most `rate`
/// saved up.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes one token if there is one (0 per second: unlimited).
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl CallAhead {
    pub fn new(cfg: CallAheadConfig, relay: Relay, store: Arc<dyn StateStore>) -> Self {
        let minute = Duration::from_secs(60);
        let budget = RateCounter::new(store.clone(), Rate::Probes, cfg.probes_per_client, minute);
        let total = Mutex::new(TokenBucket::new(cfg.max_per_second));
        let in_flight = tokio::sync::Semaphore::new(cfg.max_concurrent);
        let probe_hop = |domains: Option<DomainPattern>, hop: Hop| ProbeHop {
            tls: HopTlsConfig::new(&hop).unwrap_or_else(|_| HopTlsConfig::plain()),
            domains,
            hop,
            pool: Mutex::new(Vec::new()),
        };
        let mut hops: Vec<ProbeHop> = relay
            .routes
            .iter()
            .map(|r| probe_hop(Some(r.domains.clone()), r.hop.clone()))
            .collect();
        hops.push(probe_hop(None, relay.default_hop()));
        Self {
            cfg,
            relay,
            hops,
            store,
            budget,
            total,
            in_flight,
        }
    }

    /// Keeps the next hop's answer for `key` until `expires`.
    async fn remember(&self, key: &str, exists: bool, reply: String, expires: u64) {
        self.store.remember(key, Answer { exists, reply, expires }).await;
    }

    pub async fn verify(&self, client: IpAddr, rcpt: &Mailbox) -> Verified {
        let key = rcpt.key();
        let now = now_secs();
        if let Some(v) = self.store.verified(&key, now).await {
            return if v.exists {
                Verified::Exists
            } else {
                Verified::Unknown(v.reply)
            };
        }
        let now_t = tokio::time::Instant::now();
        if !self.budget.hit(client, now_t).await {
            return Verified::OverBudget;
        }
        // The next hop is asked at a bounded rate and concurrency, whoever
        // asks: beyond, the recipient is deferred without a probe.
        let Ok(_slot) = self.in_flight.try_acquire() else {
            return Verified::Unavailable("call-ahead over callahead.max_concurrent".into());
        };
        if !self.total.lock().unwrap_or_else(|p| p.into_inner()).take(now_t) {
            return Verified::Unavailable("call-ahead over callahead.max_per_second".into());
        }
        let res = tokio::time::timeout(self.relay.command_timeout, self.probe(rcpt)).await;
        match res {
            Ok(Ok(r)) if r.is_positive() => {
                self.remember(&key, true, r.to_string(), now + self.cfg.positive_ttl.as_secs())
                    .await;
                Verified::Exists
            }
            Ok(Ok(r)) if r.is_permanent() => {
                self.remember(&key, false, r.to_string(), now + self.cfg.negative_ttl.as_secs())
                    .await;
                Verified::Unknown(r.to_string())
            }
            Ok(Ok(r)) => Verified::Unavailable(r.to_string()),
            Ok(Err(e)) => Verified::Unavailable(e.to_string()),
            Err(_) => Verified::Unavailable("call-ahead timed out".into()),
        }
    }

    async fn probe(
        &self,
        rcpt: &Mailbox,
    ) -> Result<crate::delivery::client::HopReply, crate::delivery::client::ClientError> {
        let h = self
            .hops
            .iter()
            .find(|h| h.domains.as_ref().is_none_or(|d| d.matches(&rcpt.domain)))
            .expect("the default next hop is last");
        let pooled = h.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut c) = pooled
            && c.last_used.elapsed() < self.relay.idle_timeout
            && let Ok(r) = c.probe(rcpt).await
        {
            self.put(h, c);
            return Ok(r);
        }
        let mut c = Client::connect_hop(&self.relay, &h.hop, &h.tls).await?;
        let r = c.probe(rcpt).await?;
        self.put(h, c);
        Ok(r)
    }

    fn put(&self, h: &ProbeHop, c: Client) {
        let mut pool = h.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.cfg.pool_size {
            pool.push(c);
        }
    }

    /// The RCPT decision for a `VERIFY` recipient.
    pub async fn decide(&self, client: IpAddr, rcpt: &Mailbox) -> Decision {
        match self.verify(client, rcpt).await {
            Verified::Exists => Decision::Continue,
            Verified::Unknown(reply) => Decision::Reject(Refusal::new(
                Reply::UNKNOWN_USER,
                Reason::UnknownUser,
                format!("call-ahead: next hop said {reply}"),
            )),
            Verified::Unavailable(why) => Decision::Defer(Refusal::new(
                Reply::CALLAHEAD_UNAVAILABLE,
                Reason::CallAheadUnavailable,
                format!("call-ahead for {rcpt} failed: {why}"),
            )),
            Verified::OverBudget => Decision::Defer(Refusal::new(
                Reply::CALLAHEAD_BUDGET,
                Reason::CallAheadBudget,
                format!("{client} used up its probes ({rcpt} not probed)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenBucket;
    use std::time::Duration;

    #[test]
    fn a_refused_flood_does_not_keep_the_bucket_empty() {
        let mut b = TokenBucket::new(50);
        let t = b.last;
        assert_eq!((0..100).filter(|_| b.take(t)).count(), 50, "a burst of the rate");
        // A flood of refused probes over the next half second...
        for i in 0..10_000u64 {
            let _ = b.take(t + Duration::from_micros(i * 50));
        }
        // ...does not stop the next second's probes: 50 a second again.
        let later = t + Duration::from_secs(2);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 50);
        assert!(TokenBucket::new(0).take(t), "0: unlimited");
    }
}
