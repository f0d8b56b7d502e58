//! Delivery to the next hop: the [`Transport`] seam, the next-hop
//! implementation with a connection pool, and the queue that schedules
//! attempts, retries with backoff and bounces.

pub mod client;
pub mod dsn;
pub mod queue;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use client::{Client, ClientError, HopReply, RcptStatus};

use crate::config::Relay;
use crate::smtp::envelope::Envelope;

pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Vec<RcptStatus>> + Send + 'a>>;

/// The delivery seam: one attempt for the recipients `idx` of `env`; a
/// status per recipient, in the order of `idx`. Never fails as a whole:
/// connection problems are temporary statuses.
pub trait Transport: Send + Sync + 'static {
    fn deliver<'a>(&'a self, env: &'a Envelope, idx: &'a [usize], body: &'a [u8]) -> DeliverFuture<'a>;
}

/// SMTP or LMTP to the configured next hop, reusing idle connections.
pub struct NextHopTransport {
    cfg: Relay,
    /// Idle, greeted connections. A std mutex: only pushed/popped, never
    /// held across an await.
    idle: Mutex<Vec<Client>>,
    /// Set to 1 when an attempt reached the next hop, 0 when it did not.
    up: Option<prometheus::IntGauge>,
}

impl NextHopTransport {
    pub fn new(cfg: Relay) -> Self {
        Self {
            cfg,
            idle: Mutex::new(Vec::new()),
            up: None,
        }
    }

    /// Reports reachability in `up` (`sluice_next_hop_up`).
    pub fn with_up_gauge(mut self, up: prometheus::IntGauge) -> Self {
        self.up = Some(up);
        self
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

    fn put_idle(&self, c: Client) {
        if c.sent < self.cfg.max_messages_per_connection {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < self.cfg.concurrency {
                idle.push(c);
            }
        }
    }

    async fn attempt(&self, env: &Envelope, idx: &[usize], body: &[u8]) -> Result<Vec<RcptStatus>, ClientError> {
        // A pooled connection may have been closed by the next hop while
        // idle; if it fails, try once more on a fresh connection.
        if let Some(mut c) = self.take_idle()
            && let Ok(st) = c.send(env, idx, body).await
        {
            self.put_idle(c);
            return Ok(st);
        }
        let mut c = Client::connect(&self.cfg).await?;
        let st = c.send(env, idx, body).await?;
        self.put_idle(c);
        Ok(st)
    }
}

impl Transport for NextHopTransport {
    fn deliver<'a>(&'a self, env: &'a Envelope, idx: &'a [usize], body: &'a [u8]) -> DeliverFuture<'a> {
        Box::pin(async move {
            let res = self.attempt(env, idx, body).await;
            if let Some(up) = &self.up {
                up.set(i64::from(res.is_ok()));
            }
            match res {
                Ok(st) => st,
                Err(ClientError::Rejected(r)) if r.is_permanent() && r.code != 554 => {
                    // Greeting/EHLO refused permanently: still a hop problem, retry.
                    idx.iter()
                        .map(|_| {
                            RcptStatus::Temporary(HopReply {
                                code: 451,
                                text: format!("4.4.0 next hop refused session: {r}"),
                            })
                        })
                        .collect()
                }
                Err(e) => {
                    let reply = HopReply {
                        code: 451,
                        text: format!("4.4.1 {e}"),
                    };
                    idx.iter().map(|_| RcptStatus::Temporary(reply.clone())).collect()
                }
            }
        })
    }
}

impl Drop for NextHopTransport {
    fn drop(&mut self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Closes idle pooled connections politely (QUIT) at shutdown.
pub async fn close_idle(t: &Arc<NextHopTransport>) {
    let idle: Vec<Client> = std::mem::take(&mut *t.idle.lock().unwrap_or_else(|p| p.into_inner()));
    for c in idle {
        c.quit().await;
    }
}
