//! `[clamd]`: the virus scanner's endpoints and limits.

use super::defaults;
use std::path::PathBuf;
use std::time::Duration;

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
    /// How often each endpoint is pinged; a failing one is tried last.
    pub health_interval: Duration,
    /// Stream the message to clamd while DATA arrives.
    pub stream: bool,
}

/// `None` when no endpoint is configured.
pub(super) fn validate_clamd(cd: super::raw::RawClamd) -> Result<Option<ClamdConfig>, super::ConfigError> {
    use super::{ConfigError, dur, positive};
    let clamd = match cd.endpoints {
        None => None,
        Some(eps) if eps.is_empty() => None,
        Some(eps) => {
            let mut endpoints = Vec::new();
            for (i, e) in eps.iter().enumerate() {
                endpoints.push(Endpoint::parse(e).map_err(|m| ConfigError::new(format!("clamd.endpoints[{i}]"), m))?);
            }
            Some(ClamdConfig {
                endpoints,
                timeout: dur("clamd.timeout", cd.timeout, defaults::CLAMD_TIMEOUT)?,
                max_size: positive("clamd.max_size", cd.max_size, defaults::CLAMD_MAX_SIZE)?,
                max_concurrent: positive(
                    "clamd.max_concurrent",
                    cd.max_concurrent,
                    defaults::CLAMD_MAX_CONCURRENT,
                )?,
                health_interval: dur(
                    "clamd.health_interval",
                    cd.health_interval,
                    defaults::CLAMD_HEALTH_INTERVAL,
                )?,
                stream: cd.stream.unwrap_or(defaults::CLAMD_STREAM),
            })
        }
    };
    Ok(clamd)
}
