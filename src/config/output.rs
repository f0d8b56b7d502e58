//! `[spool]`, `[log]` and `[metrics]`: where mail and logs go, and the
//! metrics listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults;
use super::raw::{RawLog, RawMetrics, RawSpool};
use super::{ConfigError, dur, resolve};

#[derive(Debug, Clone)]
pub struct Spool {
    pub dir: PathBuf,
    pub fsync: bool,
    pub segment_size: u64,
    /// Bytes to keep free; 0: no check.
    pub min_free: u64,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub level: String,
    pub json: bool,
    pub events: EventSink,
}

/// Where the event log goes (`log.events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSink {
    /// Through the human log, target `sluice::event`.
    Log,
    Stdout,
    /// Appended to a file, reopened on SIGUSR1.
    File(PathBuf),
}

/// `[metrics]`: the metrics and health listener.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub listen: SocketAddr,
    pub probe_timeout: Duration,
}

pub(super) fn validate_spool(sp: RawSpool, base: &Path) -> Result<Spool, ConfigError> {
    let segment_size = sp.segment_size.unwrap_or(defaults::SPOOL_SEGMENT_SIZE);
    if segment_size < (1 << 20) {
        return Err(ConfigError::new("spool.segment_size", "must be at least 1048576"));
    }
    let spool = Spool {
        dir: resolve(base, sp.dir.as_deref().unwrap_or(defaults::SPOOL_DIR)),
        fsync: sp.fsync.unwrap_or(defaults::SPOOL_FSYNC),
        segment_size,
        min_free: sp.min_free.unwrap_or(defaults::SPOOL_MIN_FREE),
    };
    Ok(spool)
}

pub(super) fn validate_log(log: RawLog, base: &Path) -> Result<Log, ConfigError> {
    let level = log.level.unwrap_or_else(|| defaults::LOG_LEVEL.into());
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(ConfigError::new(
            "log.level",
            format!("{level:?}: expected error, warn, info, debug or trace"),
        ));
    }
    let json = match log.format.as_deref().unwrap_or(defaults::LOG_FORMAT) {
        "text" => false,
        "json" => true,
        f => {
            return Err(ConfigError::new(
                "log.format",
                format!("{f:?}: expected \"text\" or \"json\""),
            ));
        }
    };

    let events = match log.events.as_deref().unwrap_or(defaults::LOG_EVENTS) {
        "log" => EventSink::Log,
        "stdout" => EventSink::Stdout,
        "" => {
            return Err(ConfigError::new(
                "log.events",
                "empty: expected \"log\", \"stdout\" or a file path",
            ));
        }
        p => EventSink::File(resolve(base, p)),
    };
    Ok(Log { level, json, events })
}

pub(super) fn validate_metrics(raw: RawMetrics) -> Result<Option<Metrics>, ConfigError> {
    let metrics = match raw.enabled.unwrap_or(defaults::METRICS_ENABLED) {
        false => None,
        true => {
            let listen = raw.listen.as_deref().unwrap_or(defaults::METRICS_LISTEN);
            Some(Metrics {
                listen: listen.parse::<SocketAddr>().map_err(|_| {
                    ConfigError::new(
                        "metrics.listen",
                        format!("{listen:?} is not an IP:port address (e.g. \"127.0.0.1:9425\")"),
                    )
                })?,
                probe_timeout: dur(
                    "metrics.probe_timeout",
                    raw.probe_timeout,
                    defaults::METRICS_PROBE_TIMEOUT,
                )?,
            })
        }
    };
    Ok(metrics)
}
