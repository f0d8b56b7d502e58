//! `[dns]`, `[policy]` and `[limits]`: the resolver, the allowlist and
//! greeting policy, and the per-client limits.

use std::net::SocketAddr;
use std::time::Duration;

use super::defaults;
use super::raw::{RawDns, RawLimits, RawPolicy};
use super::{ConfigError, dur};

#[derive(Debug, Clone)]
pub struct Dns {
    pub resolver: Option<SocketAddr>,
    pub timeout: Duration,
    /// Negative answers are cached at least this long.
    pub negative_ttl: Duration,
    /// Answers are cached at least this long.
    pub min_ttl: Duration,
    /// DNS time per transaction (DNS lists and authentication together).
    pub budget: Duration,
    pub health: crate::dns::HealthConfig,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub allowlist: Vec<ipnet::IpNet>,
    pub greet_delay: Duration,
    pub reject_early_talkers: bool,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub per_ip_connections: u32,
    pub per_ip_connection_rate: u32,
    pub per_ip_message_rate: u32,
    pub per_ip_recipient_rate: u32,
    pub tarpit_after_errors: u32,
    pub tarpit_delay: Duration,
}

pub(super) fn validate_dns(raw: RawDns) -> Result<Dns, ConfigError> {
    let dns = Dns {
        resolver: match raw.resolver.as_deref() {
            None | Some("") => None,
            Some(r) => Some(r.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "dns.resolver",
                    format!("{r:?} is not an IP:port address (e.g. \"127.0.0.1:53\")"),
                )
            })?),
        },
        timeout: dur("dns.timeout", raw.timeout, defaults::DNS_TIMEOUT)?,
        negative_ttl: dur("dns.negative_ttl", raw.negative_ttl, defaults::DNS_NEGATIVE_TTL)?,
        min_ttl: match raw.min_ttl {
            Some(v) if v.trim() == "0" || v.trim() == "0s" => Duration::ZERO,
            v => dur("dns.min_ttl", v, defaults::DNS_MIN_TTL)?,
        },
        budget: dur("dns.budget", raw.budget, defaults::DNS_BUDGET)?,
        health: crate::dns::HealthConfig {
            window: dur("dns.health_window", raw.health_window, defaults::DNS_HEALTH_WINDOW)?,
            min_queries: raw
                .health_min_queries
                .unwrap_or(defaults::DNS_HEALTH_MIN_QUERIES)
                .max(1),
            failing_ratio: raw.health_failing_ratio.unwrap_or(defaults::DNS_HEALTH_FAILING_RATIO),
        },
    };
    if !(dns.health.failing_ratio > 0.0 && dns.health.failing_ratio <= 1.0) {
        return Err(ConfigError::new(
            "dns.health_failing_ratio",
            "must be above 0 and at most 1",
        ));
    }
    if dns.health.window < Duration::from_secs(1) {
        return Err(ConfigError::new("dns.health_window", "must be at least 1s"));
    }
    Ok(dns)
}

pub(super) fn validate_policy(raw: RawPolicy) -> Result<Policy, ConfigError> {
    let greet_delay = match raw.greet_delay.as_deref() {
        None | Some("0") | Some("0s") => Duration::ZERO,
        Some(d) => dur("policy.greet_delay", Some(d.to_string()), defaults::POLICY_GREET_DELAY)?,
    };
    if greet_delay > Duration::from_secs(30) {
        return Err(ConfigError::new(
            "policy.greet_delay",
            "longer than 30s makes legitimate clients give up",
        ));
    }
    let reject_early_talkers = raw
        .reject_early_talkers
        .unwrap_or(defaults::POLICY_REJECT_EARLY_TALKERS);
    let mut allowlist = Vec::new();
    for (i, n) in raw.allowlist.unwrap_or_default().iter().enumerate() {
        let net = n
            .parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| ConfigError::new(format!("policy.allowlist[{i}]"), format!("{n:?} is not a CIDR network")))?;
        allowlist.push(net);
    }
    Ok(Policy {
        allowlist,
        greet_delay,
        reject_early_talkers,
    })
}

pub(super) fn validate_limits(rl: RawLimits) -> Result<Limits, ConfigError> {
    let limits = Limits {
        per_ip_connections: rl.per_ip_connections.unwrap_or(defaults::LIMITS_PER_IP_CONNECTIONS),
        per_ip_connection_rate: rl
            .per_ip_connection_rate
            .unwrap_or(defaults::LIMITS_PER_IP_CONNECTION_RATE),
        per_ip_message_rate: rl.per_ip_message_rate.unwrap_or(defaults::LIMITS_PER_IP_MESSAGE_RATE),
        per_ip_recipient_rate: rl
            .per_ip_recipient_rate
            .unwrap_or(defaults::LIMITS_PER_IP_RECIPIENT_RATE),
        tarpit_after_errors: rl.tarpit_after_errors.unwrap_or(defaults::LIMITS_TARPIT_AFTER_ERRORS),
        tarpit_delay: dur("limits.tarpit_delay", rl.tarpit_delay, defaults::LIMITS_TARPIT_DELAY)?,
    };
    Ok(limits)
}
