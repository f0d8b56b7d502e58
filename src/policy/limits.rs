//! Per-client limits: concurrent sessions, and rates of connections,
//! messages and recipients per IP (IPv6 clients by /64, since one host
//! owns a whole /64). The counts live in the [`StateStore`] (sliding
//! windows; see `state::MemoryStore`).
//!
//! The listener asks the connection rate and the concurrent sessions
//! synchronously before the greeting, so it counts them per node (the
//! store's `local()` part), whatever the store. With `[cluster]` the
//! sessions are counted once more across the nodes at the connect stage
//! ([`RateCheck`], before the greeting, within `cluster.timeout`); the
//! connection rate stays per node. The message and recipient rates (MAIL,
//! RCPT) are asked in the session, where a shared store answers: they
//! hold across the nodes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Check, CheckFuture, Decision, Refusal, SessionCtx, Stage};
use crate::proto::Reply;
use crate::state::{Rate, SharedSlotId, StateStore};

/// The key a client is counted under: the IPv4 address, or the IPv6 /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
    }
}

/// Events per client over a sliding window, counted in the state store.
pub struct RateCounter {
    store: Arc<dyn StateStore>,
    rate: Rate,
    window: Duration,
    /// Zero: unlimited (nothing is counted).
    pub limit: u32,
}

impl RateCounter {
    pub fn new(store: Arc<dyn StateStore>, rate: Rate, limit: u32, window: Duration) -> Self {
        Self {
            store,
            rate,
            window,
            limit,
        }
    }

    /// Counts one event for `ip`; false if that goes over the limit (the
    /// event is still counted, so a client hammering on stays refused).
    pub async fn hit(&self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        self.store
            .hit(self.rate, client_key(ip), 1, self.limit, self.window, now)
            .await
    }

    /// [`hit`](Self::hit) in this node's store only, answered at once (the
    /// listener's connection filters).
    pub fn hit_local(&self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        self.store
            .local()
            .hit(self.rate, client_key(ip), 1, self.limit, self.window, now)
    }

    /// Drops clients idle for two windows (call now and then).
    pub fn sweep(&self, now: Instant) {
        self.store.local().sweep(self.rate, self.window, now);
    }
}

/// Concurrent sessions per client, counted in the state store.
pub struct ConcurrencyCounter {
    store: Arc<dyn StateStore>,
}

impl ConcurrencyCounter {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self { store }
    }

    /// Takes a slot for `ip` if fewer than `limit` are held on this node
    /// (0 = unlimited).
    pub fn acquire(&self, ip: IpAddr, limit: u32) -> Option<SessionSlot> {
        let key = client_key(ip);
        self.store.local().acquire(key, limit).then(|| SessionSlot {
            store: self.store.clone(),
            key,
        })
    }
}

impl ConcurrencyCounter {
    /// Whether sessions are also counted across the nodes.
    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// Takes a slot for `ip` in the count across the nodes (`[cluster]`)
    /// if fewer than `limit` are held there.
    pub async fn acquire_shared(&self, ip: IpAddr, limit: u32) -> Option<SharedSlot> {
        let key = client_key(ip);
        let id = self.store.acquire_shared(key, limit).await?;
        Some(SharedSlot {
            store: self.store.clone(),
            key,
            id: Some(id),
        })
    }
}

/// A session slot across the nodes; given back on drop.
pub struct SharedSlot {
    store: Arc<dyn StateStore>,
    key: IpAddr,
    id: Option<SharedSlotId>,
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.store.release_shared(self.key, id);
        }
    }
}

/// Held for the life of a session; frees its slot on drop.
pub struct SessionSlot {
    store: Arc<dyn StateStore>,
    key: IpAddr,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.store.local().release(self.key);
    }
}

/// All per-client limits, shared by the listener (connections) and the
/// session checks (messages, recipients).
pub struct Limits {
    pub per_ip_connections: u32,
    pub concurrency: ConcurrencyCounter,
    pub connections: RateCounter,
    pub messages: RateCounter,
    pub recipients: RateCounter,
}

impl Limits {
    pub fn new(cfg: &crate::config::Limits, store: Arc<dyn StateStore>) -> Self {
        let minute = Duration::from_secs(60);
        let rate = |r, limit| RateCounter::new(store.clone(), r, limit, minute);
        Self {
            per_ip_connections: cfg.per_ip_connections,
            concurrency: ConcurrencyCounter::new(store.clone()),
            connections: rate(Rate::Connections, cfg.per_ip_connection_rate),
            messages: rate(Rate::Messages, cfg.per_ip_message_rate),
            recipients: rate(Rate::Recipients, cfg.per_ip_recipient_rate),
        }
    }

    pub fn sweep(&self) {
        let now = Instant::now();
        self.connections.sweep(now);
        self.messages.sweep(now);
        self.recipients.sweep(now);
    }
}

/// Message and recipient rates as a pre-DATA check (MAIL and RCPT).
pub struct RateCheck {
    pub limits: Arc<Limits>,
}

impl Check for RateCheck {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    fn check<'a>(&'a self, stage: &'a Stage<'a>, ctx: &'a SessionCtx) -> CheckFuture<'a> {
        Box::pin(self.decide(stage, ctx))
    }
}

impl RateCheck {
    async fn decide(&self, stage: &Stage<'_>, ctx: &SessionCtx) -> Decision {
        let now = Instant::now();
        if ctx.allowlisted {
            return Decision::Continue;
        }
        match stage {
            // With `[cluster]`: the sessions across the nodes (the
            // listener counted this node's before the greeting).
            Stage::Connect if self.limits.per_ip_connections > 0 && self.limits.concurrency.is_shared() => {
                let limit = self.limits.per_ip_connections;
                match self.limits.concurrency.acquire_shared(ctx.ip, limit).await {
                    Some(slot) => {
                        ctx.held.lock().unwrap_or_else(|p| p.into_inner()).push(slot);
                        Decision::Continue
                    }
                    None => Decision::Defer(Refusal::new(
                        Reply::CLIENT_CONCURRENCY,
                        super::Reason::RateLimit {
                            limit: crate::events::Limit::Concurrency,
                        },
                        format!("{} already has {limit} sessions across the nodes", ctx.ip),
                    )),
                }
            }
            Stage::MailFrom { .. } if !self.limits.messages.hit(ctx.ip, now).await => Decision::Defer(Refusal::new(
                Reply::CLIENT_MESSAGE_RATE,
                super::Reason::RateLimit {
                    limit: crate::events::Limit::Messages,
                },
                format!(
                    "message rate of {} over {} per minute",
                    ctx.ip, self.limits.messages.limit
                ),
            )),
            Stage::RcptTo { .. } if !self.limits.recipients.hit(ctx.ip, now).await => Decision::Defer(Refusal::new(
                Reply::CLIENT_RCPT_RATE,
                super::Reason::RateLimit {
                    limit: crate::events::Limit::Recipients,
                },
                format!(
                    "recipient rate of {} over {} per minute",
                    ctx.ip, self.limits.recipients.limit
                ),
            )),
            _ => Decision::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn counter(limit: u32) -> (RateCounter, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::default());
        let r = RateCounter::new(store.clone(), Rate::Messages, limit, Duration::from_secs(60));
        (r, store)
    }

    #[test]
    fn sliding_window_rate() {
        let (r, store) = counter(10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(r.hit_local(ip, t0));
        }
        assert!(!r.hit_local(ip, t0), "11th in the same minute");
        // Other clients are not affected.
        assert!(r.hit_local("192.0.2.2".parse().unwrap(), t0));
        // Half way through the next window the previous one (11 events)
        // still weighs half: 5.5 + 4 fits under 10, a fifth does not.
        let t1 = t0 + Duration::from_secs(90);
        for _ in 0..4 {
            assert!(r.hit_local(ip, t1));
        }
        assert!(!r.hit_local(ip, t1));
        // Two idle windows later: a fresh start.
        assert!(r.hit_local(ip, t0 + Duration::from_secs(300)));
        r.sweep(t0 + Duration::from_secs(1000));
        assert_eq!(store.clients(Rate::Messages), 0);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let (r, _) = counter(1);
        let t0 = Instant::now();
        assert!(r.hit_local("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(!r.hit_local("2001:db8:1:2:ffff::9".parse().unwrap(), t0), "same /64");
        assert!(r.hit_local("2001:db8:1:3::1".parse().unwrap(), t0), "other /64");
    }

    #[test]
    fn concurrency_slots_are_released() {
        let c = ConcurrencyCounter::new(Arc::new(MemoryStore::default()));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = c.acquire(ip, 2).unwrap();
        let _b = c.acquire(ip, 2).unwrap();
        assert!(c.acquire(ip, 2).is_none());
        drop(a);
        assert!(c.acquire(ip, 2).is_some());
        assert!(c.acquire(ip, 0).is_some(), "0 = unlimited");
    }

    #[tokio::test]
    async fn session_rates_go_through_the_async_seam() {
        let (r, store) = counter(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(r.hit(ip, t0).await);
        assert!(r.hit(ip, t0).await);
        assert!(!r.hit(ip, t0).await, "third over a limit of 2");
        assert_eq!(store.clients(Rate::Messages), 1);
    }

    #[test]
    fn unlimited_by_default() {
        let (r, store) = counter(0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..10_000).all(|_| r.hit_local(ip, Instant::now())));
        assert_eq!(store.clients(Rate::Messages), 0);
    }
}
