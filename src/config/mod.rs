//! Configuration: the TOML file ([`raw::RawConfig`]) validated once into
//! typed structs ([`Config`]). Every error names the dotted key.

pub mod callahead;
pub mod clamd;
pub mod cluster;
pub mod defaults;
pub mod dnsbl;
pub mod effective;
pub mod firewall;
pub mod greylist;
pub mod helo;
pub mod milter;
mod output;
mod policy;
pub mod policy_server;
pub mod raw;
mod recipients;
mod relay;
pub mod restart;
pub mod scan;
mod server;
pub mod spam;
mod warnings;
mod words;

pub use dnsbl::Dnsbl;
pub use output::{EventSink, Log, Metrics, Spool};
pub use policy::{Dns, Limits, Policy};
pub use recipients::Recipients;
pub use relay::{DomainPattern, ForwardClient, Hop, HopTls, NextHop, Relay, Route};
pub use server::{Listen, Server, Stress, Timeouts, Tls};
pub use warnings::Warning;

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
    /// The nftables table and ipsets sluice owns, whether or not the
    /// firewall is on: a start removes those not in use.
    pub kernel_names: firewall::KernelNames,
    /// `None` when `metrics.enabled` is false.
    pub metrics: Option<Metrics>,
    pub stress: Stress,
    /// `None` without `[cluster]`: the state stays in this process.
    pub cluster: Option<cluster::ClusterConfig>,
    /// `None` without `[policy_server]`.
    pub policy_server: Option<policy_server::PolicyServerConfig>,
    /// `None` without `[milter]`: no milter listener.
    pub milter: Option<milter::MilterConfig>,
    /// The listeners this process runs: set by the command
    /// ([`Config::narrow`]), never by the file.
    pub role: Role,
}

/// Which listeners a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// `sluice serve`: everything the file configures.
    #[default]
    All,
    /// `sluice policy`: the policy server alone.
    Policy,
    /// `sluice milter`: the milter alone.
    Milter,
}

impl Config {
    /// Keeps the listeners of `role`: `Policy` runs the policy server
    /// alone and `Milter` the milter alone (each with its defaults when the
    /// file has no section for it), with no SMTP listener. A reload narrows
    /// the new file the same way, so the listeners it leaves out are not
    /// reported as changed.
    pub fn narrow(&mut self, role: Role) {
        self.role = role;
        match role {
            Role::All => {}
            Role::Policy => {
                self.server.listen.clear();
                self.milter = None;
                self.policy_server
                    .get_or_insert_with(policy_server::PolicyServerConfig::defaults);
            }
            Role::Milter => {
                self.server.listen.clear();
                self.policy_server = None;
                self.milter.get_or_insert_with(Default::default);
            }
        }
    }

    /// Reads and validates a config file. Relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let raw = Self::load_raw(path)?;
        Self::from_raw(raw, &base_of(path))
    }

    /// Reads a config file as written, without validating it.
    pub fn load_raw(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("(file)", format!("{}: {e}", path.display())))?;
        Self::parse_raw(&text)
    }

    /// Parses and validates TOML text; relative paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        Self::from_raw(Self::parse_raw(text)?, base)
    }

    /// Validates a configuration as written; relative paths resolve
    /// against `base`.
    pub fn from_raw(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        validate(raw, base)
    }

    /// Parses TOML text into the file as written; errors name the dotted
    /// key in the admin's words ("expected a whole number, got \"five\"").
    pub fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("(syntax)", e.to_string().trim().to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = dotted_key(e.path());
            let problem = words::admin_words(&key, e.inner().message());
            ConfigError::new(key, problem)
        })
    }

    /// The built-in default, for an installed system without a file:
    /// listen 127.0.0.1:2525, next hop smtp://127.0.0.1:10025, spool in
    /// /var/spool/sluice, recipients from /etc/sluice/recipients (relative
    /// paths resolve against [`defaults::CONFIG_DIR`], as if the file were
    /// /etc/sluice/sluice.toml).
    pub fn default_config() -> Result<Config, ConfigError> {
        validate(RawConfig::default(), Path::new(defaults::CONFIG_DIR))
    }
}

/// The directory relative paths in the file at `path` resolve against.
pub fn base_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
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

fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
    let server = server::validate_server(raw.server)?;
    let relay = relay::validate_relay(raw.relay, base, &server.hostname)?;
    let callahead_on = raw.callahead.enabled.unwrap_or(defaults::CALLAHEAD_ENABLED);
    let spool = output::validate_spool(raw.spool, base)?;
    let policy = policy::validate_policy(raw.policy)?;
    let mut scan = scan::validate_scan(raw.scan, base, &spool.dir)?;
    scan.trusted = policy.allowlist.clone();
    let (firewall, kernel_names) =
        firewall::validate_firewall(raw.firewall, base, &spool.dir, &policy.allowlist, &relay.next_hop)?;
    Ok(Config {
        timeouts: server::validate_timeouts(raw.timeouts)?,
        stress: server::validate_stress(raw.stress)?,
        tls: server::validate_tls(raw.tls, base)?,
        recipients: recipients::validate_recipients(raw.recipients, base, callahead_on)?,
        log: output::validate_log(raw.log, base)?,
        metrics: output::validate_metrics(raw.metrics)?,
        dns: policy::validate_dns(raw.dns)?,
        dnsbl: dnsbl::validate_dnsbl(raw.dnsbl)?,
        limits: policy::validate_limits(raw.limits)?,
        helo: helo::validate_helo(raw.helo)?,
        greylist: greylist::validate_greylist(raw.greylist, base, &spool.dir)?,
        callahead: callahead::validate_callahead(raw.callahead)?,
        clamd: clamd::validate_clamd(raw.clamd)?,
        scan,
        spam: spam::validate_spam(raw.spam, base)?,
        cluster: cluster::validate_cluster(raw.cluster, &server.hostname)?,
        policy_server: policy_server::validate_policy_server(raw.policy_server)?,
        milter: milter::validate_milter(raw.milter)?,
        firewall,
        kernel_names,
        policy,
        server,
        relay,
        spool,
        role: Role::All,
    })
}

/// The TOML key a deserialisation error points at, as the user would write
/// it: `relay.routes."example.com"`; a segment that is empty or not a bare
/// key is quoted, and an error about the file itself is "(top level)".
fn dotted_key(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let bare = |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                if bare(key) {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() { "(top level)".into() } else { out }
}

#[cfg(test)]
mod tests;
