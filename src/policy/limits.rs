//! Per-client limits: concurrent sessions, and rates of connections,
//! messages and recipients per IP (IPv6 clients by /64, since one host
//! owns a whole /64). Counters are sliding windows approximated from the
//! current and previous fixed window, as in Cloudflare's and pingora's
//! estimators: O(1) memory per client, no timestamps per event.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::{Check, CheckFuture, Decision, Refusal, SessionCtx, Stage};
use crate::proto::Reply;

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

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    current: u32,
    previous: u32,
}

/// Events per client over a sliding window.
pub struct RateCounter {
    window: Duration,
    limit: u32,
    /// Sharded map: sessions on all worker threads update it without a
    /// global lock.
    counts: DashMap<IpAddr, Window>,
}

impl RateCounter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            window,
            limit,
            counts: DashMap::new(),
        }
    }

    /// Counts one event for `ip`; false if that goes over the limit (the
    /// event is still counted, so a client hammering on stays refused).
    pub fn hit(&self, ip: IpAddr, now: Instant) -> bool {
        self.hit_n(ip, 1, now)
    }

    pub fn hit_n(&self, ip: IpAddr, n: u32, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut w = self.counts.entry(client_key(ip)).or_insert(Window {
            start: now,
            current: 0,
            previous: 0,
        });
        let elapsed = now.saturating_duration_since(w.start);
        if elapsed >= self.window * 2 {
            *w = Window {
                start: now,
                current: 0,
                previous: 0,
            };
        } else if elapsed >= self.window {
            *w = Window {
                start: w.start + self.window,
                current: 0,
                previous: w.current,
            };
        }
        w.current = w.current.saturating_add(n);
        let into = now.saturating_duration_since(w.start).as_secs_f64() / self.window.as_secs_f64();
        let estimate = f64::from(w.previous) * (1.0 - into).max(0.0) + f64::from(w.current);
        estimate <= f64::from(self.limit)
    }

    /// Drops clients idle for two windows (call now and then).
    pub fn sweep(&self, now: Instant) {
        self.counts
            .retain(|_, w| now.saturating_duration_since(w.start) < self.window * 2);
    }

    pub fn clients(&self) -> usize {
        self.counts.len()
    }
}

/// Concurrent sessions per client.
#[derive(Default)]
pub struct ConcurrencyCounter {
    counts: DashMap<IpAddr, u32>,
}

impl ConcurrencyCounter {
    /// Takes a slot for `ip` if fewer than `limit` are held (0 = unlimited).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<SessionSlot> {
        let key = client_key(ip);
        let mut n = self.counts.entry(key).or_insert(0);
        if limit != 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(SessionSlot {
            counter: self.clone(),
            key,
        })
    }
}

/// Held for the life of a session; frees its slot on drop.
pub struct SessionSlot {
    counter: Arc<ConcurrencyCounter>,
    key: IpAddr,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.counter.counts.remove_if_mut(&self.key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// All per-client limits, shared by the listener (connections) and the
/// session checks (messages, recipients).
pub struct Limits {
    pub per_ip_connections: u32,
    pub concurrency: Arc<ConcurrencyCounter>,
    pub connections: RateCounter,
    pub messages: RateCounter,
    pub recipients: RateCounter,
}

impl Limits {
    pub fn new(cfg: &crate::config::Limits) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            per_ip_connections: cfg.per_ip_connections,
            concurrency: Arc::new(ConcurrencyCounter::default()),
            connections: RateCounter::new(cfg.per_ip_connection_rate, minute),
            messages: RateCounter::new(cfg.per_ip_message_rate, minute),
            recipients: RateCounter::new(cfg.per_ip_recipient_rate, minute),
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
        let now = Instant::now();
        let d = if ctx.allowlisted {
            Decision::Continue
        } else {
            match stage {
                Stage::MailFrom(_) if !self.limits.messages.hit(ctx.ip, now) => Decision::Defer(Refusal::new(
                    Reply::CLIENT_MESSAGE_RATE,
                    super::Reason::RateLimit {
                        limit: crate::events::Limit::Messages,
                    },
                    format!(
                        "message rate of {} over {} per minute",
                        ctx.ip, self.limits.messages.limit
                    ),
                )),
                Stage::RcptTo(_) if !self.limits.recipients.hit(ctx.ip, now) => Decision::Defer(Refusal::new(
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
        };
        Box::pin(std::future::ready(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_rate() {
        let r = RateCounter::new(10, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(r.hit(ip, t0));
        }
        assert!(!r.hit(ip, t0), "11th in the same minute");
        // Other clients are not affected.
        assert!(r.hit("192.0.2.2".parse().unwrap(), t0));
        // Half way through the next window the previous one (11 events)
        // still weighs half: 5.5 + 4 fits under 10, a fifth does not.
        let t1 = t0 + Duration::from_secs(90);
        for _ in 0..4 {
            assert!(r.hit(ip, t1));
        }
        assert!(!r.hit(ip, t1));
        // Two idle windows later: a fresh start.
        assert!(r.hit(ip, t0 + Duration::from_secs(300)));
        r.sweep(t0 + Duration::from_secs(1000));
        assert_eq!(r.clients(), 0);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let r = RateCounter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(r.hit("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(!r.hit("2001:db8:1:2:ffff::9".parse().unwrap(), t0), "same /64");
        assert!(r.hit("2001:db8:1:3::1".parse().unwrap(), t0), "other /64");
    }

    #[test]
    fn concurrency_slots_are_released() {
        let c = Arc::new(ConcurrencyCounter::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = c.acquire(ip, 2).unwrap();
        let _b = c.acquire(ip, 2).unwrap();
        assert!(c.acquire(ip, 2).is_none());
        drop(a);
        assert!(c.acquire(ip, 2).is_some());
        assert!(c.acquire(ip, 0).is_some(), "0 = unlimited");
    }

    #[test]
    fn unlimited_by_default() {
        let r = RateCounter::new(0, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..10_000).all(|_| r.hit(ip, Instant::now())));
        assert_eq!(r.clients(), 0);
    }
}
