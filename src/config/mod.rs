//! Configuration: the TOML file ([`raw::RawConfig`]) validated once into
//! typed structs ([`Config`]). Every error names the dotted key.

pub mod callahead;
pub mod clamd;
pub mod dnsbl;
pub mod firewall;
pub mod greylist;
pub mod helo;
pub mod raw;
mod relay;
pub mod scan;
pub mod spam;

pub use relay::{DomainPattern, ForwardClient, Hop, HopTls, NextHop, Relay, Route};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::RawConfig;

/// A configuration problem, with the dotted key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub timeouts: Timeouts,
    pub tls: Option<Tls>,
    pub relay: Relay,
    pub recipients: Recipients,
    pub spool: Spool,
    pub log: Log,
    pub dns: Dns,
    pub dnsbl: Dnsbl,
    pub policy: Policy,
    pub limits: Limits,
    pub helo: helo::HeloPolicy,
    /// `None` when greylisting is off.
    pub greylist: Option<greylist::GreylistConfig>,
    /// `None` when call-ahead is off.
    pub callahead: Option<callahead::CallAheadConfig>,
    /// `None` when no clamd endpoint is configured.
    pub clamd: Option<clamd::ClamdConfig>,
    pub scan: scan::ScanConfig,
    /// `None` when spam scoring is off.
    pub spam: Option<spam::SpamConfig>,
    /// `None` when the firewall is off.
    pub firewall: Option<firewall::FirewallConfig>,
    /// `None` when `metrics.enabled` is false.
    pub metrics: Option<Metrics>,
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

#[derive(Debug, Clone)]
pub struct Dns {
    pub resolver: Option<SocketAddr>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Dnsbl {
    pub zones: Vec<dnsbl::Zone>,
    pub domain_zones: Vec<dnsbl::Zone>,
    pub threshold: i32,
    pub replies: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub allowlist: Vec<ipnet::IpNet>,
    pub greet_delay: Duration,
    pub reject_early_talkers: bool,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_command_line: usize,
    pub max_line_length: usize,
    pub max_header_size: usize,
    pub max_received_headers: usize,
    pub max_errors: u32,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub command: Duration,
    pub idle: Duration,
    pub data: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Recipients {
    pub domains: Vec<String>,
    /// `None` (`table = ""`): no table; every recipient in a local domain
    /// is verified at the next hop (call-ahead).
    pub table: Option<PathBuf>,
    pub delimiter: Option<char>,
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Spool {
    pub dir: PathBuf,
    pub fsync: bool,
    pub segment_size: u64,
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

impl Config {
    /// Reads and validates a config file. Relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("(file)", format!("{}: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &base)
    }

    /// Parses and validates TOML text; relative paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("(syntax)", e.to_string().trim().to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let msg = e.inner().message().to_string();
            ConfigError::new(if key == "." { "(top level)".into() } else { key }, msg)
        })?;
        validate(raw, base)
    }

    /// The built-in default: listen 127.0.0.1:2525, next hop
    /// smtp://127.0.0.1:10025, spool under ./var, recipients from
    /// deploy/recipients.example (paths relative to the working directory).
    pub fn default_config() -> Result<Config, ConfigError> {
        validate(RawConfig::default(), Path::new(""))
    }
}

pub(super) fn dur(key: &str, v: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let s = v.as_deref().unwrap_or(default);
    let d = humantime::parse_duration(s).map_err(|e| {
        ConfigError::new(
            key,
            format!("invalid duration {s:?} ({e}); use e.g. \"30s\", \"5m\", \"1h\", \"5d\""),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(d)
}

pub(super) fn positive(key: &str, v: Option<u64>, default: u64) -> Result<usize, ConfigError> {
    let n = v.unwrap_or(default);
    if n == 0 {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    usize::try_from(n).map_err(|_| ConfigError::new(key, "too large"))
}

/// A duration where zero is allowed (it turns the feature off).
pub(super) fn dur_or_zero(key: &str, v: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    match v.as_deref().map(str::trim) {
        Some("0") => Ok(Duration::ZERO),
        Some(s) if humantime::parse_duration(s).is_ok_and(|d| d.is_zero()) => Ok(Duration::ZERO),
        _ => dur(key, v, default),
    }
}

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| crate::proto::address::is_valid_helo(s))
        .unwrap_or_else(|| "localhost".into())
}

fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
    let s = raw.server;
    let listen_raw = s.listen.unwrap_or_else(|| vec!["127.0.0.1:2525".into()]);
    if listen_raw.is_empty() {
        return Err(ConfigError::new("server.listen", "must list at least one address"));
    }
    let mut listen = Vec::new();
    for (i, a) in listen_raw.iter().enumerate() {
        listen.push(a.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                format!("server.listen[{i}]"),
                format!("{a:?} is not an IP:port socket address"),
            )
        })?);
    }
    let hostname = s.hostname.unwrap_or_else(system_hostname);
    if !crate::proto::address::is_valid_helo(&hostname) {
        return Err(ConfigError::new(
            "server.hostname",
            format!("{hostname:?} is not a valid host name"),
        ));
    }
    let max_command_line = positive("server.max_command_line", s.max_command_line, 4096)?;
    if max_command_line < 512 {
        return Err(ConfigError::new(
            "server.max_command_line",
            "must be at least 512 (RFC 5321 §4.5.3.1.4)",
        ));
    }
    let max_line_length = positive("server.max_line_length", s.max_line_length, 8192)?;
    if max_line_length < 998 {
        return Err(ConfigError::new(
            "server.max_line_length",
            "must be at least 998 (RFC 5322 §2.1.1)",
        ));
    }
    let server = Server {
        listen,
        hostname: hostname.clone(),
        max_message_size: positive("server.max_message_size", s.max_message_size, 26_214_400)?,
        max_recipients: positive("server.max_recipients", s.max_recipients, 100)?,
        max_connections: positive("server.max_connections", s.max_connections, 10_000)?,
        max_command_line,
        max_line_length,
        max_header_size: positive("server.max_header_size", s.max_header_size, 262_144)?,
        max_received_headers: positive("server.max_received_headers", s.max_received_headers, 50)?,
        max_errors: positive("server.max_errors", s.max_errors, 20)?.min(u32::MAX as usize) as u32,
    };

    let t = raw.timeouts;
    let timeouts = Timeouts {
        command: dur("timeouts.command", t.command, "300s")?,
        idle: dur("timeouts.idle", t.idle, "300s")?,
        data: dur("timeouts.data", t.data, "180s")?,
        shutdown_grace: dur("timeouts.shutdown_grace", t.shutdown_grace, "30s")?,
    };

    let tls = match raw.tls {
        None => None,
        Some(t) => {
            let tls = Tls {
                cert: resolve(base, &t.cert),
                key: resolve(base, &t.key),
            };
            Some(tls)
        }
    };

    let relay = relay::validate_relay(raw.relay, base, &hostname)?;

    let rc = raw.recipients;
    let domains_raw = rc.domains.unwrap_or_else(|| vec!["example.com".into()]);
    if domains_raw.is_empty() {
        return Err(ConfigError::new("recipients.domains", "must list at least one domain"));
    }
    let mut domains = Vec::new();
    for (i, d) in domains_raw.iter().enumerate() {
        let d = d.trim_end_matches('.').to_lowercase();
        if !crate::proto::address::is_valid_helo(&d) || d.starts_with('[') {
            return Err(ConfigError::new(
                format!("recipients.domains[{i}]"),
                format!("{d:?} is not a domain name"),
            ));
        }
        domains.push(d);
    }
    let delimiter = match rc.delimiter.as_deref() {
        None | Some("") => None,
        Some(d) if d.chars().count() == 1 && d != "@" => d.chars().next(),
        Some(d) => {
            return Err(ConfigError::new(
                "recipients.delimiter",
                format!("{d:?}: must be one character other than @"),
            ));
        }
    };
    let table = match rc.table.as_deref().unwrap_or("deploy/recipients.example") {
        "" => None,
        t => Some(resolve(base, t)),
    };
    if table.is_none() && !raw.callahead.enabled.unwrap_or(false) {
        return Err(ConfigError::new(
            "recipients.table",
            "empty means \"verify every recipient at the next hop\": set [callahead] enabled = true, or name a table",
        ));
    }
    let recipients = Recipients {
        domains,
        table,
        delimiter,
        reload_interval: dur("recipients.reload_interval", rc.reload_interval, "2s")?,
    };

    let sp = raw.spool;
    let segment_size = sp.segment_size.unwrap_or(64 << 20);
    if segment_size < (1 << 20) {
        return Err(ConfigError::new("spool.segment_size", "must be at least 1048576"));
    }
    let spool = Spool {
        dir: resolve(base, sp.dir.as_deref().unwrap_or("var/spool")),
        fsync: sp.fsync.unwrap_or(true),
        segment_size,
    };

    let level = raw.log.level.unwrap_or_else(|| "info".into());
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        return Err(ConfigError::new(
            "log.level",
            format!("{level:?}: expected error, warn, info, debug or trace"),
        ));
    }
    let json = match raw.log.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(f) => {
            return Err(ConfigError::new(
                "log.format",
                format!("{f:?}: expected \"text\" or \"json\""),
            ));
        }
    };

    let events = match raw.log.events.as_deref() {
        None | Some("log") => EventSink::Log,
        Some("stdout") => EventSink::Stdout,
        Some("") => {
            return Err(ConfigError::new(
                "log.events",
                "empty: expected \"log\", \"stdout\" or a file path",
            ));
        }
        Some(p) => EventSink::File(resolve(base, p)),
    };
    let metrics = match raw.metrics.enabled {
        Some(false) => None,
        _ => {
            let listen = raw.metrics.listen.as_deref().unwrap_or("127.0.0.1:9425");
            Some(Metrics {
                listen: listen.parse::<SocketAddr>().map_err(|_| {
                    ConfigError::new(
                        "metrics.listen",
                        format!("{listen:?} is not an IP:port address (e.g. \"127.0.0.1:9425\")"),
                    )
                })?,
                probe_timeout: dur("metrics.probe_timeout", raw.metrics.probe_timeout, "2s")?,
            })
        }
    };

    let dns = Dns {
        resolver: match raw.dns.resolver.as_deref() {
            None => None,
            Some(r) => Some(r.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "dns.resolver",
                    format!("{r:?} is not an IP:port address (e.g. \"127.0.0.1:53\")"),
                )
            })?),
        },
        timeout: dur("dns.timeout", raw.dns.timeout, "2s")?,
    };
    let rb = raw.dnsbl;
    let threshold = rb.threshold.unwrap_or(1);
    if !(1..=1000).contains(&threshold) {
        return Err(ConfigError::new("dnsbl.threshold", "must be between 1 and 1000"));
    }
    let dnsbl = Dnsbl {
        zones: dnsbl::parse_zones("dnsbl.zones", &rb.zones.unwrap_or_default())?,
        domain_zones: dnsbl::parse_zones("dnsbl.domain_zones", &rb.domain_zones.unwrap_or_default())?,
        threshold: threshold as i32,
        replies: rb
            .replies
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.trim_end_matches('.').to_ascii_lowercase(), v))
            .collect(),
    };
    for (zone, text) in &dnsbl.replies {
        if !dnsbl.zones.iter().chain(&dnsbl.domain_zones).any(|z| &z.name == zone) {
            return Err(ConfigError::new(
                format!("dnsbl.replies.{zone}"),
                "not a zone listed in dnsbl.zones",
            ));
        }
        if text.contains(['\r', '\n']) {
            return Err(ConfigError::new(format!("dnsbl.replies.{zone}"), "must be one line"));
        }
    }
    let greet_delay = match raw.policy.greet_delay.as_deref() {
        None | Some("0") | Some("0s") => Duration::ZERO,
        Some(d) => dur("policy.greet_delay", Some(d.to_string()), "0s")?,
    };
    if greet_delay > Duration::from_secs(30) {
        return Err(ConfigError::new(
            "policy.greet_delay",
            "longer than 30s makes legitimate clients give up",
        ));
    }
    let reject_early_talkers = raw.policy.reject_early_talkers.unwrap_or(true);
    let mut allowlist = Vec::new();
    for (i, n) in raw.policy.allowlist.unwrap_or_default().iter().enumerate() {
        let net = n
            .parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| ConfigError::new(format!("policy.allowlist[{i}]"), format!("{n:?} is not a CIDR network")))?;
        allowlist.push(net);
    }

    let rl = raw.limits;
    let limits = Limits {
        per_ip_connections: rl.per_ip_connections.unwrap_or(0),
        per_ip_connection_rate: rl.per_ip_connection_rate.unwrap_or(0),
        per_ip_message_rate: rl.per_ip_message_rate.unwrap_or(0),
        per_ip_recipient_rate: rl.per_ip_recipient_rate.unwrap_or(0),
        tarpit_after_errors: rl.tarpit_after_errors.unwrap_or(10),
        tarpit_delay: dur("limits.tarpit_delay", rl.tarpit_delay, "1s")?,
    };

    let action = |key: &str, v: Option<String>| -> Result<helo::Action, ConfigError> {
        helo::Action::parse(v.as_deref().unwrap_or("off")).map_err(|e| ConfigError::new(key, e))
    };
    let h = raw.helo;
    let helo = helo::HeloPolicy {
        bare_ip: action("helo.bare_ip", h.bare_ip)?,
        non_fqdn: action("helo.non_fqdn", h.non_fqdn)?,
        our_name: action("helo.our_name", h.our_name)?,
        fcrdns: action("helo.fcrdns", h.fcrdns)?,
    };

    let g = raw.greylist;
    let greylist = if g.enabled.unwrap_or(false) {
        let cfg = greylist::GreylistConfig {
            delay: dur("greylist.delay", g.delay, "300s")?,
            retry_window: dur("greylist.retry_window", g.retry_window, "2d")?,
            max_age: dur("greylist.max_age", g.max_age, "35d")?,
            auto_allowlist_after: g.auto_allowlist_after.unwrap_or(5),
            state: match g.state {
                Some(p) => resolve(base, &p),
                None => spool.dir.join("greylist.state"),
            },
        };
        if cfg.retry_window <= cfg.delay {
            return Err(ConfigError::new(
                "greylist.retry_window",
                "must be longer than greylist.delay",
            ));
        }
        Some(cfg)
    } else {
        None
    };

    let ca = raw.callahead;
    let callahead = if ca.enabled.unwrap_or(false) {
        let probes = ca.probes_per_client.unwrap_or(20);
        if probes == 0 {
            return Err(ConfigError::new(
                "callahead.probes_per_client",
                "must be greater than zero",
            ));
        }
        Some(callahead::CallAheadConfig {
            positive_ttl: dur("callahead.positive_ttl", ca.positive_ttl, "7d")?,
            negative_ttl: dur("callahead.negative_ttl", ca.negative_ttl, "3h")?,
            probes_per_client: probes,
            pool_size: positive("callahead.pool_size", ca.pool_size, 4)?,
        })
    } else {
        None
    };

    let cd = raw.clamd;
    let clamd = match cd.endpoints {
        None => None,
        Some(eps) if eps.is_empty() => None,
        Some(eps) => {
            let mut endpoints = Vec::new();
            for (i, e) in eps.iter().enumerate() {
                endpoints
                    .push(clamd::Endpoint::parse(e).map_err(|m| ConfigError::new(format!("clamd.endpoints[{i}]"), m))?);
            }
            Some(clamd::ClamdConfig {
                endpoints,
                timeout: dur("clamd.timeout", cd.timeout, "30s")?,
                max_size: positive("clamd.max_size", cd.max_size, 26_214_400)?,
                max_concurrent: positive("clamd.max_concurrent", cd.max_concurrent, 8)?,
                health_interval: dur("clamd.health_interval", cd.health_interval, "5s")?,
                stream: cd.stream.unwrap_or(true),
            })
        }
    };
    let scan = scan::validate_scan(raw.scan, base, &spool.dir)?;
    let spam = spam::validate_spam(raw.spam, base)?;
    let firewall = firewall::validate_firewall(raw.firewall, base, &spool.dir, &allowlist, &relay.next_hop)?;

    Ok(Config {
        firewall,
        spam,
        scan,
        clamd,
        callahead,
        greylist,
        helo,
        limits,
        dns,
        dnsbl,
        policy: Policy {
            allowlist,
            greet_delay,
            reject_early_talkers,
        },
        server,
        timeouts,
        tls,
        relay,
        recipients,
        spool,
        log: Log { level, json, events },
        metrics,
    })
}

#[cfg(test)]
mod tests;
