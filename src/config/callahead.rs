//! `[callahead]`: recipient verification at the next hop.

use super::defaults;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CallAheadConfig {
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    /// Probes each client may cause per minute.
    pub probes_per_client: u32,
    /// Idle probe connections kept open.
    pub pool_size: usize,
    /// Probes in progress at once, from all clients.
    pub max_concurrent: usize,
    /// Probes per second, from all clients.
    pub max_per_second: u32,
}

/// `None` when call-ahead is off.
pub(super) fn validate_callahead(ca: super::raw::RawCallAhead) -> Result<Option<CallAheadConfig>, super::ConfigError> {
    use super::{ConfigError, dur, positive};
    let callahead = if ca.enabled.unwrap_or(defaults::CALLAHEAD_ENABLED) {
        let probes = ca.probes_per_client.unwrap_or(defaults::CALLAHEAD_PROBES_PER_CLIENT);
        if probes == 0 {
            return Err(ConfigError::new(
                "callahead.probes_per_client",
                "must be greater than zero",
            ));
        }
        Some(CallAheadConfig {
            positive_ttl: dur(
                "callahead.positive_ttl",
                ca.positive_ttl,
                defaults::CALLAHEAD_POSITIVE_TTL,
            )?,
            negative_ttl: dur(
                "callahead.negative_ttl",
                ca.negative_ttl,
                defaults::CALLAHEAD_NEGATIVE_TTL,
            )?,
            probes_per_client: probes,
            pool_size: positive("callahead.pool_size", ca.pool_size, defaults::CALLAHEAD_POOL_SIZE)?,
            max_concurrent: positive(
                "callahead.max_concurrent",
                ca.max_concurrent,
                defaults::CALLAHEAD_MAX_CONCURRENT,
            )?,
            max_per_second: match ca.max_per_second.unwrap_or(defaults::CALLAHEAD_MAX_PER_SECOND) {
                0 => {
                    return Err(ConfigError::new(
                        "callahead.max_per_second",
                        "must be greater than zero",
                    ));
                }
                n => n,
            },
        })
    } else {
        None
    };
    Ok(callahead)
}
