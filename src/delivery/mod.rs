//! Delivery to the next hops: the [`Transport`] seam, one
//! [`NextHopTransport`] per next hop (connection pool, STARTTLS, up/down
//! state), the [`route::Router`] that picks the next hop per recipient
//! domain (routes, the default, bounces to a relay or by MX), and the
//! queue that schedules attempts, retries with backoff and bounces.

pub mod client;
pub mod dsn;
pub mod forward;
pub mod queue;
mod reply;
pub mod route;
pub mod tls;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use client::{Client, ClientError, HopReply, RcptStatus};

use crate::config::{Hop, Relay};
use crate::mail::envelope::Envelope;

pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Vec<RcptStatus>> + Send + 'a>>;
pub type HealthFuture<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

/// The delivery seam: one attempt for the recipients `idx` of `env`; a
/// status per recipient, in the order of `idx`. Never fails as a whole:
/// connection problems are temporary statuses.
pub trait Transport: Send + Sync + 'static {
    fn deliver<'a>(&'a self, env: &'a Envelope, idx: &'a [usize], body: &'a [u8]) -> DeliverFuture<'a>;

    /// Whether the next hop takes a session now (`None`), or what is
    /// wrong; each step bounded by `within`. For `/readyz`.
    fn health(&self, within: Duration) -> HealthFuture<'_> {
        let _ = within;
        Box::pin(async { None })
    }

    /// Forgets that a next hop failed recently: the next attempt connects
    /// (an admin's flush: `sluice queue flush`).
    fn retry_now(&self) {}

    /// Notified when a next hop that was unreachable is reached again (a
    /// delivery or a health probe got through): the queue then retries
    /// what it deferred at once instead of at its next backoff step.
    fn recovered(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// Per-route metrics: `sluice_route_up{route}` and
/// `sluice_route_deliveries_total{route,result}`.
struct RouteMetrics {
    up: prometheus::IntGauge,
    delivered: prometheus::IntCounter,
    deferred: prometheus::IntCounter,
    bounced: prometheus::IntCounter,
}

/// What the status page shows of a next hop: whether its last attempt (or
/// probe) reached it, and the last reply of a delivery attempt (a local
/// reply when the attempt failed before the next hop answered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopState {
    /// `None` until the first attempt or probe.
    pub up: Option<bool>,
    pub last_reply: Option<HopReply>,
    /// Unix seconds of `last_reply`.
    pub last_reply_at: Option<u64>,
}

impl HopState {
    /// Records an attempt's statuses: the first failure, else the last
    /// success, is the reply shown.
    fn record(&mut self, st: &[RcptStatus]) {
        let failed = st.iter().find(|s| !matches!(s, RcptStatus::Delivered(_)));
        if let Some(s) = failed.or(st.last()) {
            let (RcptStatus::Delivered(r) | RcptStatus::Temporary(r) | RcptStatus::Permanent(r)) = s;
            self.last_reply = Some(r.clone());
            self.last_reply_at = Some(crate::mail::date::now_secs());
        }
    }
}

/// SMTP or LMTP to one next hop, reusing idle connections.
pub struct NextHopTransport {
    cfg: Relay,
    hop: Hop,
    /// `Err`: the CA file could not be read; every attempt is deferred.
    tls: Result<tls::HopTlsConfig, String>,
    /// Idle, greeted connections. A std mutex: only pushed/popped, never
    /// held across an await.
    idle: Mutex<Vec<Client>>,
    /// Set to 1 when an attempt reached the next hop, 0 when it did not.
    up: Option<prometheus::IntGauge>,
    route: Option<RouteMetrics>,
    /// After a failed connect, attempts fail at once until then (so a dead
    /// next hop costs one connect timeout, not one per message).
    down_until: Mutex<Option<Instant>>,
    /// For the status page. A std mutex: set and copied, never held
    /// across an await.
    state: Mutex<HopState>,
    /// Whether the last attempt or probe reached the next hop.
    reached: AtomicBool,
    /// Told when it is reached again after it was not (one stored permit:
    /// the queue sees a recovery even when it was busy).
    recovered: Option<Arc<Notify>>,
}

impl NextHopTransport {
    /// The default next hop of `cfg`.
    pub fn new(cfg: Relay) -> Self {
        let hop = cfg.default_hop();
        Self::for_hop(cfg, hop)
    }

    /// The next hop `hop`, with the timeouts and limits of `cfg`.
    pub fn for_hop(cfg: Relay, hop: Hop) -> Self {
        Self {
            tls: tls::HopTlsConfig::new(&hop),
            cfg,
            hop,
            idle: Mutex::new(Vec::new()),
            up: None,
            route: None,
            down_until: Mutex::new(None),
            state: Mutex::new(HopState::default()),
            reached: AtomicBool::new(true),
            recovered: None,
        }
    }

    /// Tells `recovered` when the next hop is reached again after it was
    /// not (see [`Transport::recovered`]).
    pub fn with_recovered(mut self, recovered: Arc<Notify>) -> Self {
        self.recovered = Some(recovered);
        self
    }

    /// Reports reachability in `up` (`sluice_next_hop_up`).
    pub fn with_up_gauge(mut self, up: prometheus::IntGauge) -> Self {
        self.up = Some(up);
        self
    }

    /// Counts results and reachability under `route` (the metrics label).
    pub fn with_route_metrics(mut self, m: &crate::metrics::Metrics, route: &str) -> Self {
        let up = m.route_up.with_label_values(&[route]);
        up.set(1);
        let c = |r: &str| m.route_deliveries.with_label_values(&[route, r]);
        self.route = Some(RouteMetrics {
            up,
            delivered: c("delivered"),
            deferred: c("deferred"),
            bounced: c("bounced"),
        });
        self
    }

    pub fn hop(&self) -> &Hop {
        &self.hop
    }

    /// Up or down, and the last reply (the status page).
    pub fn state(&self) -> HopState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take_idle(&self) -> Option<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.last_used.elapsed() < self.cfg.idle_timeout {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `c` for the next message when it is in a clean state.
    fn put_idle(&self, c: Client) {
        if c.reusable() && c.sent < self.cfg.max_messages_per_connection {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.cfg.concurrency {
                idle.push(c);
            }
        }
    }

    fn down_for(&self) -> Option<Duration> {
        let d = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        d.and_then(|t| t.checked_duration_since(Instant::now()))
    }

    fn mark_down(&self) {
        let hold = self.cfg.retry_initial.min(Duration::from_secs(60));
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + hold);
    }

    /// One attempt; `Ok(None)` when the next hop is known to be down.
    async fn attempt(&self, env: &Envelope, idx: &[usize], body: &[u8]) -> Result<Vec<RcptStatus>, ClientError> {
        let tls = self.tls.as_ref().map_err(|e| ClientError::Tls(e.clone()))?;
        // A pooled connection may have been closed (or confused) while
        // idle: then one more try on a fresh connection, unless the body
        // was already sent (the message may have arrived).
        if let Some(mut c) = self.take_idle() {
            match c.send(env, idx, body).await {
                Ok(st) => {
                    self.put_idle(c);
                    return Ok(st);
                }
                Err(e) if c.body_sent() => return Err(e),
                Err(_) => {}
            }
        }
        if let Some(left) = self.down_for() {
            return Err(ClientError::Connect {
                hop: self.hop.next_hop.to_string(),
                source: std::io::Error::other(format!("next hop failed recently; next try in {}s", left.as_secs() + 1)),
            });
        }
        let mut c = match Client::connect_hop(&self.cfg, &self.hop, tls).await {
            Ok(c) => c,
            Err(e) => {
                if matches!(e, ClientError::Connect { .. }) {
                    self.mark_down();
                }
                return Err(e);
            }
        };
        let st = c.send(env, idx, body).await?;
        self.put_idle(c);
        Ok(st)
    }

    fn count(&self, reached: bool, st: &[RcptStatus]) {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.up = Some(reached);
            state.record(st);
        }
        if reached && !self.reached.swap(true, Ordering::Relaxed) {
            // Back: attempts connect again at once, and the queue retries.
            self.retry_now();
            if let Some(n) = &self.recovered {
                n.notify_one();
            }
        } else if !reached {
            self.reached.store(false, Ordering::Relaxed);
        }
        if let Some(up) = &self.up {
            up.set(i64::from(reached));
        }
        if let Some(m) = &self.route {
            m.up.set(i64::from(reached));
            for s in st {
                match s {
                    RcptStatus::Delivered(_) => m.delivered.inc(),
                    RcptStatus::Temporary(_) => m.deferred.inc(),
                    RcptStatus::Permanent(_) => m.bounced.inc(),
                }
            }
        }
    }

    /// Whether the next hop answers a greeting now (`None`) or what is
    /// wrong; connect and each reply bounded by `within`.
    pub async fn probe(&self, within: Duration) -> Option<String> {
        let tls = match &self.tls {
            Ok(t) => t,
            Err(e) => return Some(format!("next hop {}: {e}", self.hop.next_hop)),
        };
        let mut cfg = self.cfg.clone();
        cfg.connect_timeout = within;
        cfg.command_timeout = within;
        let hop = &self.hop.next_hop;
        let problem = match tokio::time::timeout(within * 2, Client::connect_hop(&cfg, &self.hop, tls)).await {
            Ok(Ok(c)) => {
                c.quit().await;
                None
            }
            Ok(Err(e)) => Some(format!("next hop {hop}: {e}")),
            Err(_) => Some(format!("next hop {hop}: no answer within {:?}", within * 2)),
        };
        self.count(problem.is_none(), &[]);
        problem
    }
}

/// The statuses of an attempt that failed as a whole.
fn all_temporary(idx: &[usize], e: &ClientError) -> Vec<RcptStatus> {
    let reply = e.as_reply();
    idx.iter().map(|_| RcptStatus::Temporary(reply.clone())).collect()
}

impl Transport for NextHopTransport {
    fn deliver<'a>(&'a self, env: &'a Envelope, idx: &'a [usize], body: &'a [u8]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let res = self.attempt(env, idx, body).await;
            let st = match &res {
                Ok(st) => st.clone(),
                Err(e) => {
                    tracing::debug!(id = %env.id, next_hop = %self.hop.next_hop, error = %e, "delivery attempt failed");
                    all_temporary(idx, e)
                }
            };
            let reached = !matches!(res, Err(ClientError::Connect { .. } | ClientError::Timeout(_)));
            self.count(reached, &st);
            st
        })
    }

    fn health(&self, within: Duration) -> HealthFuture<'_> {
        Box::pin(self.probe(within))
    }

    fn retry_now(&self) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn recovered(&self) -> Option<Arc<Notify>> {
        self.recovered.clone()
    }
}

impl Drop for NextHopTransport {
    fn drop(&mut self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl NextHopTransport {
    /// Closes idle pooled connections politely (QUIT).
    pub async fn close_idle(&self) {
        let idle: Vec<Client> = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for c in idle {
            c.quit().await;
        }
    }
}

/// A local reply (no next hop said it).
fn local(code: u16, text: impl Into<String>) -> HopReply {
    HopReply::local(code, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_state_shows_the_first_failure_else_the_last_reply() {
        let mut s = HopState::default();
        s.record(&[]);
        assert_eq!(s, HopState::default(), "a probe records no reply");
        let ok = |t: &str| RcptStatus::Delivered(HopReply::local(250, t));
        s.record(&[ok("2.0.0 one"), ok("2.0.0 two")]);
        assert_eq!(
            s.last_reply.as_ref().map(|r| r.to_string()).as_deref(),
            Some("250 2.0.0 two")
        );
        assert!(s.last_reply_at.is_some());
        s.record(&[
            ok("2.0.0 three"),
            RcptStatus::Temporary(HopReply::local(452, "4.2.2 mailbox full")),
            RcptStatus::Permanent(HopReply::local(550, "5.1.1 no such user")),
        ]);
        assert_eq!(
            s.last_reply.map(|r| r.to_string()).as_deref(),
            Some("452 4.2.2 mailbox full")
        );
    }
}
