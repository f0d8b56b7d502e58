//! clamd over INSTREAM (TCP or unix socket) with clamav-client: several
//! endpoints tried in turn starting from a rotating one (load spread and
//! failover), a bound on concurrent scans, a per-scan deadline and a size
//! limit. clamd error replies ("INSTREAM size limit exceeded. ERROR") are
//! errors, never "clean".

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{ScanError, ScanFuture, ScanOutcome, Scanner};

/// One clamd address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    /// `tcp://host:port` or `unix:/path`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(a) = s.strip_prefix("tcp://") {
            if a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return Err(format!("{s:?}: expected tcp://host:port"));
            }
            Ok(Endpoint::Tcp(a.to_string()))
        } else if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(format!("{s:?}: expected unix:/path/to/socket"));
            }
            Ok(Endpoint::Unix(PathBuf::from(p)))
        } else {
            Err(format!("{s:?}: expected tcp://host:port or unix:/path"))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClamdConfig {
    pub endpoints: Vec<Endpoint>,
    pub timeout: Duration,
    /// Larger messages are not sent (clamd would refuse them): an error.
    pub max_size: usize,
    pub max_concurrent: usize,
}

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

pub struct Clamd {
    cfg: ClamdConfig,
    /// Bounds concurrent scans (one clamd connection each).
    slots: Semaphore,
    next: AtomicUsize,
}

impl Clamd {
    pub fn new(cfg: ClamdConfig) -> Self {
        let slots = Semaphore::new(cfg.max_concurrent);
        Self {
            cfg,
            slots,
            next: AtomicUsize::new(0),
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

impl Scanner for Clamd {
    fn name(&self) -> &'static str {
        "clamd"
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
            let n = self.cfg.endpoints.len();
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let deadline = tokio::time::Instant::now() + self.cfg.timeout;
            let mut last = ScanError::Unavailable("no clamd endpoint".into());
            // Failover: an endpoint that cannot be reached or answers with
            // an error is skipped; a verdict (clean or infected) is final.
            for i in 0..n {
                let ep = &self.cfg.endpoints[(start + i) % n];
                match tokio::time::timeout_at(deadline, self.scan_at(ep, message)).await {
                    Err(_) => return Err(ScanError::Timeout),
                    Ok(Ok(outcome)) => return Ok(outcome),
                    Ok(Err(e)) => {
                        tracing::warn!(endpoint = %ep, error = %e, "clamd scan failed; trying the next endpoint");
                        last = e;
                    }
                }
            }
            Err(last)
        })
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
