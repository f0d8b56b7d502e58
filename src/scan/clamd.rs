//! clamd over INSTREAM (TCP or unix socket) with clamav-client: several
//! endpoints tried in turn starting from a rotating one (load spread and
//! failover), a bound on concurrent scans, a per-scan deadline and a size
//! limit, health checks (PING) that send scans to live endpoints first,
//! and INSTREAM fed while DATA arrives (streamed scans). clamd closes the
//! connection after each INSTREAM, so the "pool" is a bound on concurrent
//! connections, not a set of idle ones. clamd error replies ("INSTREAM size limit exceeded. ERROR") are
//! errors, never "clean".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

use super::{PingFuture, PushFuture, ScanError, ScanFuture, ScanOutcome, ScanStream, Scanner};

pub use crate::config::clamd::{ClamdConfig, Endpoint};

/// Parses a clamd INSTREAM reply.
pub fn parse_reply(reply: &[u8]) -> Result<ScanOutcome, ScanError> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n', '\r', ' ']);
    let body = text.strip_prefix("stream: ").unwrap_or(text);
    if body == "OK" {
        Ok(ScanOutcome::Clean)
    } else if let Some(name) = body.strip_suffix(" FOUND") {
        Ok(ScanOutcome::Infected(name.to_string()))
    } else {
        Err(ScanError::Failed(text.to_string()))
    }
}

/// Chunks buffered per streamed scan before the session waits.
const STREAM_QUEUE: usize = 8;

pub struct Clamd {
    cfg: ClamdConfig,
    /// Bounds clamd connections: end-of-DATA scans wait for one, streamed
    /// scans start only when one is free (clamd's listen queue is short:
    /// more connections than it serves would stall in SYN retries).
    slots: Arc<Semaphore>,
    next: AtomicUsize,
    healthy: Vec<AtomicBool>,
    /// Per-endpoint latency, verdicts, in-flight and up.
    metrics: Arc<Metrics>,
}

/// Records one scan of an endpoint in the metrics.
fn record(m: &Metrics, ep: &str, started: std::time::Instant, res: &Result<ScanOutcome, ScanError>) {
    m.scanner_duration
        .with_label_values(&[ep])
        .observe(started.elapsed().as_secs_f64());
    let verdict = match res {
        Ok(ScanOutcome::Clean) => "clean",
        // clamd's "could not look into everything" answers are not viruses.
        Ok(ScanOutcome::Infected(name)) if super::scanner_unscannable(name).is_some() => "unscannable",
        Ok(ScanOutcome::Infected(_)) => "virus",
        Err(_) => "error",
    };
    m.scanner_scans.with_label_values(&[ep, verdict]).inc();
}

impl Clamd {
    /// The client of `cfg`'s endpoints, reporting to `metrics`.
    pub fn new(cfg: ClamdConfig, metrics: Arc<Metrics>) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_concurrent));
        let healthy = cfg.endpoints.iter().map(|_| AtomicBool::new(true)).collect();
        for ep in &cfg.endpoints {
            metrics.scanner_up.with_label_values(&[&ep.to_string()]).set(1);
        }
        Self {
            cfg,
            slots,
            next: AtomicUsize::new(0),
            healthy,
            metrics,
        }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.cfg.endpoints
    }

    /// PINGs endpoint `i` now; records the answer as its health.
    pub async fn ping_one(&self, i: usize, within: Duration) -> bool {
        let Some(ep) = self.cfg.endpoints.get(i) else {
            return false;
        };
        let ok = tokio::time::timeout(within, ping(ep)).await.is_ok_and(|r| r);
        self.mark(i, ok);
        ok
    }

    /// Endpoint indices in the order to try them: rotating start (load
    /// spread), healthy ones first (failover), the rest after.
    fn order(&self) -> Vec<usize> {
        let n = self.cfg.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut idx: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        idx.sort_by_key(|&i| !self.healthy[i].load(Ordering::Relaxed));
        idx
    }

    fn mark(&self, i: usize, up: bool) {
        if self.healthy[i].swap(up, Ordering::Relaxed) != up {
            let ep = &self.cfg.endpoints[i];
            self.metrics
                .scanner_up
                .with_label_values(&[&ep.to_string()])
                .set(i64::from(up));
            if up {
                tracing::info!(endpoint = %ep, "clamd endpoint is up");
            } else {
                tracing::warn!(endpoint = %ep, "clamd endpoint is down");
            }
        }
    }

    /// Whether endpoint `i` answered its last health check or scan.
    pub fn is_healthy(&self, i: usize) -> bool {
        self.healthy.get(i).is_some_and(|h| h.load(Ordering::Relaxed))
    }

    /// Pings every endpoint every `health_interval` until `stop`.
    pub async fn health_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.health_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            for (i, ep) in self.cfg.endpoints.iter().enumerate() {
                let ok = tokio::time::timeout(self.cfg.health_interval.min(Duration::from_secs(5)), ping(ep))
                    .await
                    .is_ok_and(|r| r);
                self.mark(i, ok);
            }
        }
    }

    async fn scan_at(&self, ep: &Endpoint, message: &[u8]) -> Result<ScanOutcome, ScanError> {
        let res = match ep {
            Endpoint::Tcp(a) => {
                clamav_client::tokio::scan_buffer(
                    message,
                    clamav_client::tokio::Tcp {
                        host_address: a.as_str(),
                    },
                    None,
                )
                .await
            }
            Endpoint::Unix(p) => {
                clamav_client::tokio::scan_buffer(message, clamav_client::tokio::Socket { socket_path: p }, None).await
            }
        };
        match res {
            Ok(reply) => parse_reply(&reply),
            Err(e) => Err(ScanError::Unavailable(format!("{ep}: {e}"))),
        }
    }
}

async fn ping(ep: &Endpoint) -> bool {
    let reply = match ep {
        Endpoint::Tcp(a) => {
            clamav_client::tokio::ping(clamav_client::tokio::Tcp {
                host_address: a.as_str(),
            })
            .await
        }
        Endpoint::Unix(p) => clamav_client::tokio::ping(clamav_client::tokio::Socket { socket_path: p }).await,
    };
    reply.is_ok_and(|r| r == clamav_client::PONG)
}

/// INSTREAM fed from a channel by the session as DATA arrives.
async fn stream_at(ep: Endpoint, rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Result<ScanOutcome, ScanError> {
    let input = ReceiverStream::new(rx);
    let res = match &ep {
        Endpoint::Tcp(a) => {
            clamav_client::tokio::scan_stream(
                input,
                clamav_client::tokio::Tcp {
                    host_address: a.as_str(),
                },
                None,
            )
            .await
        }
        Endpoint::Unix(p) => {
            clamav_client::tokio::scan_stream(input, clamav_client::tokio::Socket { socket_path: p }, None).await
        }
    };
    match res {
        Ok(reply) => parse_reply(&reply),
        Err(e) => Err(ScanError::Unavailable(format!("{ep}: {e}"))),
    }
}

struct ClamdStream {
    tx: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    task: tokio::task::JoinHandle<Result<ScanOutcome, ScanError>>,
    sent: usize,
    max_size: usize,
    timeout: Duration,
    /// Metrics and endpoint label; the latency counted is from the end of
    /// DATA to the verdict (what the client waits for).
    probe: Option<(Arc<Metrics>, String)>,
}

impl Drop for ClamdStream {
    fn drop(&mut self) {
        // Abandoned before the end of DATA: do not scan half a message.
        if self.tx.is_some() {
            self.task.abort();
        }
    }
}

impl ScanStream for ClamdStream {
    fn push<'a>(&'a mut self, chunk: &'a [u8]) -> PushFuture<'a> {
        Box::pin(async move {
            self.sent += chunk.len();
            if self.sent > self.max_size {
                // Too big for clamd: give up streaming; finish() reports it.
                self.tx = None;
            }
            if let Some(tx) = &self.tx
                && tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err()
            {
                self.tx = None;
            }
        })
    }

    fn finish(mut self: Box<Self>) -> ScanFuture<'static> {
        Box::pin(async move {
            let complete = self.tx.take().is_some();
            if !complete {
                self.task.abort();
                return Err(ScanError::Failed("stream not complete".into()));
            }
            let started = std::time::Instant::now();
            if let Some((m, l)) = &self.probe {
                m.scanner_in_flight.with_label_values(&[l]).inc();
            }
            let res = match tokio::time::timeout(self.timeout, &mut self.task).await {
                Err(_) => {
                    self.task.abort();
                    Err(ScanError::Timeout)
                }
                Ok(Err(e)) => Err(ScanError::Failed(e.to_string())),
                Ok(Ok(r)) => r,
            };
            if let Some((m, l)) = &self.probe {
                m.scanner_in_flight.with_label_values(&[l]).dec();
                record(m, l, started, &res);
            }
            res
        })
    }
}

impl Scanner for Clamd {
    fn name(&self) -> &'static str {
        "clamd"
    }

    fn ping(&self, within: Duration) -> PingFuture<'_> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(self.cfg.endpoints.len());
            for (i, ep) in self.cfg.endpoints.iter().enumerate() {
                out.push((ep.to_string(), self.ping_one(i, within).await));
            }
            out
        })
    }

    fn scan<'a>(&'a self, message: &'a [u8]) -> ScanFuture<'a> {
        Box::pin(async move {
            if message.len() > self.cfg.max_size {
                return Err(ScanError::Failed(format!(
                    "message of {} octets is over clamd.max_size",
                    message.len()
                )));
            }
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| ScanError::Unavailable("closed".into()))?;
            let deadline = tokio::time::Instant::now() + self.cfg.timeout;
            let mut last = ScanError::Unavailable("no clamd endpoint".into());
            // Failover: an endpoint that cannot be reached or answers with
            // an error is skipped; a verdict (clean or infected) is final.
            for i in self.order() {
                let ep = &self.cfg.endpoints[i];
                let started = std::time::Instant::now();
                let (m, l) = (&self.metrics, ep.to_string());
                m.scanner_in_flight.with_label_values(&[&l]).inc();
                let res = tokio::time::timeout_at(deadline, self.scan_at(ep, message)).await;
                m.scanner_in_flight.with_label_values(&[&l]).dec();
                let r = match &res {
                    Ok(r) => r.clone(),
                    Err(_) => Err(ScanError::Timeout),
                };
                record(m, &l, started, &r);
                match res {
                    Err(_) => return Err(ScanError::Timeout),
                    Ok(Ok(outcome)) => {
                        self.mark(i, true);
                        return Ok(outcome);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(endpoint = %ep, error = %e, "clamd scan failed; trying the next endpoint");
                        if matches!(e, ScanError::Unavailable(_)) {
                            self.mark(i, false);
                        }
                        last = e;
                    }
                }
            }
            Err(last)
        })
    }

    fn stream(&self) -> Option<Box<dyn ScanStream>> {
        if !self.cfg.stream {
            return None;
        }
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let i = *self.order().first()?;
        if !self.is_healthy(i) {
            return None;
        }
        let ep = self.cfg.endpoints[i].clone();
        let probe = Some((self.metrics.clone(), ep.to_string()));
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let task = tokio::spawn(async move {
            let _permit = permit;
            stream_at(ep, rx).await
        });
        Some(Box::new(ClamdStream {
            tx: Some(tx),
            task,
            sent: 0,
            max_size: self.cfg.max_size,
            timeout: self.cfg.timeout,
            probe,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"stream: OK\0"), Ok(ScanOutcome::Clean));
        assert_eq!(
            parse_reply(b"stream: Eicar-Test-File-NDB.UNOFFICIAL FOUND\0"),
            Ok(ScanOutcome::Infected("Eicar-Test-File-NDB.UNOFFICIAL".into()))
        );
        assert!(matches!(
            parse_reply(b"INSTREAM size limit exceeded. ERROR\0"),
            Err(ScanError::Failed(_))
        ));
        assert!(matches!(parse_reply(b""), Err(ScanError::Failed(_))));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:3310"),
            Ok(Endpoint::Tcp("127.0.0.1:3310".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:/run/clamav/clamd.ctl"),
            Ok(Endpoint::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert!(Endpoint::parse("127.0.0.1:3310").is_err());
        assert!(Endpoint::parse("tcp://host").is_err());
    }
}
