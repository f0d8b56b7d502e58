//! `[server]`, `[timeouts]` and `[tls]`: the SMTP front end's listeners,
//! limits and timeouts, and the STARTTLS certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults;
use super::raw::{RawListen, RawServer, RawStress, RawTimeouts, RawTls};
use super::{ConfigError, dur, positive, resolve};

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<Listen>,
    /// The load balancers a `proxy_protocol` listener takes connections from.
    pub proxy_from: Vec<ipnet::IpNet>,
    /// How long a load balancer has to send the PROXY header.
    pub proxy_timeout: Duration,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_command_line: usize,
    pub max_line_length: usize,
    pub max_header_size: usize,
    pub max_received_headers: usize,
    pub max_errors: u32,
    /// Octets of arriving bodies all sessions hold in memory (a pool).
    pub body_memory: usize,
    /// Memory for end-of-DATA checks, shared by all sessions.
    pub check_memory: usize,
}

/// One listening address; `proxy_protocol`: its connections come from a
/// load balancer and start with a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub proxy_protocol: bool,
}

impl From<SocketAddr> for Listen {
    /// A plain listener: clients connect to it directly.
    fn from(addr: SocketAddr) -> Listen {
        Listen {
            addr,
            proxy_protocol: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub command: Duration,
    pub idle: Duration,
    pub data: Duration,
    /// Bytes per second after `data` of grace; 0: no minimum.
    pub data_min_rate: u64,
    pub message: Duration,
    pub shutdown_grace: Duration,
}

/// `[stress]`: see `policy::stress`.
#[derive(Debug, Clone)]
pub struct Stress {
    pub enabled: bool,
    pub sessions_ratio: f64,
    pub timeout: Duration,
    pub max_errors: u32,
    pub tarpit_after_errors: u32,
    pub min_duration: Duration,
    pub check_interval: Duration,
}

pub(super) fn validate_stress(s: RawStress) -> Result<Stress, ConfigError> {
    let stress = Stress {
        enabled: s.enabled.unwrap_or(defaults::STRESS_ENABLED),
        sessions_ratio: s.sessions_ratio.unwrap_or(defaults::STRESS_SESSIONS_RATIO),
        timeout: dur("stress.timeout", s.timeout, defaults::STRESS_TIMEOUT)?,
        max_errors: s.max_errors.unwrap_or(defaults::STRESS_MAX_ERRORS),
        tarpit_after_errors: s.tarpit_after_errors.unwrap_or(defaults::STRESS_TARPIT_AFTER_ERRORS),
        min_duration: dur("stress.min_duration", s.min_duration, defaults::STRESS_MIN_DURATION)?,
        check_interval: dur(
            "stress.check_interval",
            s.check_interval,
            defaults::STRESS_CHECK_INTERVAL,
        )?,
    };
    if !(stress.sessions_ratio > 0.0 && stress.sessions_ratio <= 1.0) {
        return Err(ConfigError::new(
            "stress.sessions_ratio",
            "must be above 0 and at most 1",
        ));
    }
    if stress.max_errors == 0 {
        return Err(ConfigError::new("stress.max_errors", "must be at least 1"));
    }
    if stress.check_interval.is_zero() || stress.timeout.is_zero() {
        let key = if stress.timeout.is_zero() {
            "stress.timeout"
        } else {
            "stress.check_interval"
        };
        return Err(ConfigError::new(key, "must be above 0"));
    }
    Ok(stress)
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub(super) fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| crate::proto::address::is_valid_helo(s))
        .unwrap_or_else(|| "localhost".into())
}

pub(super) fn validate_server(s: RawServer) -> Result<Server, ConfigError> {
    let listen_raw = s.listen.unwrap_or_else(|| {
        defaults::SERVER_LISTEN
            .iter()
            .map(|s| RawListen::Address(s.to_string()))
            .collect()
    });
    if listen_raw.is_empty() {
        return Err(ConfigError::new("server.listen", "must list at least one address"));
    }
    let mut listen = Vec::new();
    for (i, l) in listen_raw.iter().enumerate() {
        let (key, a, proxy_protocol) = match l {
            RawListen::Address(a) => (format!("server.listen[{i}]"), a, false),
            RawListen::Table(t) => {
                let Some(a) = &t.address else {
                    return Err(ConfigError::new(
                        format!("server.listen[{i}].address"),
                        "missing: a listener table needs its address (\"IP:port\")",
                    ));
                };
                (
                    format!("server.listen[{i}].address"),
                    a,
                    t.proxy_protocol.unwrap_or(false),
                )
            }
        };
        let addr = a
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::new(key, format!("{a:?} is not an IP:port socket address")))?;
        listen.push(Listen { addr, proxy_protocol });
    }
    let mut proxy_from = Vec::new();
    for (i, n) in s.proxy_from.unwrap_or_default().iter().enumerate() {
        let net = n
            .parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                ConfigError::new(
                    format!("server.proxy_from[{i}]"),
                    format!("{n:?} is not an address or CIDR network"),
                )
            })?;
        proxy_from.push(net.trunc());
    }
    if proxy_from.is_empty()
        && let Some(l) = listen.iter().find(|l| l.proxy_protocol)
    {
        return Err(ConfigError::new(
            "server.proxy_from",
            format!(
                "must list the load balancers' addresses: {} has proxy_protocol = true, and only they may connect to it",
                l.addr
            ),
        ));
    }
    let proxy_timeout = dur("server.proxy_timeout", s.proxy_timeout, defaults::SERVER_PROXY_TIMEOUT)?;
    let hostname = s.hostname.unwrap_or_else(system_hostname);
    if !crate::proto::address::is_valid_helo(&hostname) {
        return Err(ConfigError::new(
            "server.hostname",
            format!("{hostname:?} is not a valid host name"),
        ));
    }
    let max_command_line = positive(
        "server.max_command_line",
        s.max_command_line,
        defaults::SERVER_MAX_COMMAND_LINE,
    )?;
    if max_command_line < 512 {
        return Err(ConfigError::new(
            "server.max_command_line",
            "must be at least 512 (RFC 5321 §4.5.3.1.4)",
        ));
    }
    let max_line_length = positive(
        "server.max_line_length",
        s.max_line_length,
        defaults::SERVER_MAX_LINE_LENGTH,
    )?;
    if max_line_length < 998 {
        return Err(ConfigError::new(
            "server.max_line_length",
            "must be at least 998 (RFC 5322 §2.1.1)",
        ));
    }
    let server = Server {
        listen,
        proxy_from,
        proxy_timeout,
        hostname: hostname.clone(),
        max_message_size: positive(
            "server.max_message_size",
            s.max_message_size,
            defaults::SERVER_MAX_MESSAGE_SIZE,
        )?,
        max_recipients: positive(
            "server.max_recipients",
            s.max_recipients,
            defaults::SERVER_MAX_RECIPIENTS,
        )?,
        max_connections: positive(
            "server.max_connections",
            s.max_connections,
            defaults::SERVER_MAX_CONNECTIONS,
        )?,
        max_command_line,
        max_line_length,
        max_header_size: positive(
            "server.max_header_size",
            s.max_header_size,
            defaults::SERVER_MAX_HEADER_SIZE,
        )?,
        max_received_headers: positive(
            "server.max_received_headers",
            s.max_received_headers,
            defaults::SERVER_MAX_RECEIVED_HEADERS,
        )?,
        max_errors: positive("server.max_errors", s.max_errors, defaults::SERVER_MAX_ERRORS)?.min(u32::MAX as usize)
            as u32,
        body_memory: positive("server.body_memory", s.body_memory, defaults::SERVER_BODY_MEMORY)?,
        check_memory: positive("server.check_memory", s.check_memory, defaults::SERVER_CHECK_MEMORY)?,
    };

    if server.check_memory < 1 << 20 {
        return Err(ConfigError::new(
            "server.check_memory",
            "must be at least 1048576 (1 MiB)",
        ));
    }
    Ok(server)
}

pub(super) fn validate_timeouts(t: RawTimeouts) -> Result<Timeouts, ConfigError> {
    let timeouts = Timeouts {
        command: dur("timeouts.command", t.command, defaults::TIMEOUTS_COMMAND)?,
        idle: dur("timeouts.idle", t.idle, defaults::TIMEOUTS_IDLE)?,
        data: dur("timeouts.data", t.data, defaults::TIMEOUTS_DATA)?,
        data_min_rate: t.data_min_rate.unwrap_or(defaults::TIMEOUTS_DATA_MIN_RATE),
        message: dur("timeouts.message", t.message, defaults::TIMEOUTS_MESSAGE)?,
        shutdown_grace: dur(
            "timeouts.shutdown_grace",
            t.shutdown_grace,
            defaults::TIMEOUTS_SHUTDOWN_GRACE,
        )?,
    };
    Ok(timeouts)
}

pub(super) fn validate_tls(raw: Option<RawTls>, base: &Path) -> Result<Option<Tls>, ConfigError> {
    let Some(t) = raw else { return Ok(None) };
    let file = |key: &str, v: Option<String>| match v {
        Some(p) if !p.is_empty() => Ok(resolve(base, &p)),
        _ => Err(ConfigError::new(
            key,
            "missing: [tls] needs both cert and key (leave out the whole [tls] table for no STARTTLS)",
        )),
    };
    Ok(Some(Tls {
        cert: file("tls.cert", t.cert)?,
        key: file("tls.key", t.key)?,
    }))
}
