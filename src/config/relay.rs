//! `[relay]`: where accepted mail goes. The default next hop, per-domain
//! routes (`[relay.routes]`, like Postfix's `transport_maps`), STARTTLS and
//! client forwarding per hop, and where DSNs go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults;
use super::raw::{RawRelay, RawRoute};
use super::{ConfigError, dur, positive, resolve};

/// Where accepted mail is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    Smtp { host: String, port: u16 },
    LmtpTcp { host: String, port: u16 },
    LmtpUnix { path: PathBuf },
}

impl NextHop {
    pub fn is_lmtp(&self) -> bool {
        !matches!(self, NextHop::Smtp { .. })
    }

    /// The host name or address (`None` for a unix socket).
    pub fn host(&self) -> Option<&str> {
        match self {
            NextHop::Smtp { host, .. } | NextHop::LmtpTcp { host, .. } => Some(host),
            NextHop::LmtpUnix { .. } => None,
        }
    }
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextHop::Smtp { host, port } => write!(f, "smtp://{host}:{port}"),
            NextHop::LmtpTcp { host, port } => write!(f, "lmtp://{host}:{port}"),
            NextHop::LmtpUnix { path } => write!(f, "lmtp:{}", path.display()),
        }
    }
}

/// STARTTLS towards a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopTls {
    /// Never (plain text; the default, as Postfix's `smtp_tls_security_level`).
    None,
    /// When the next hop offers STARTTLS; any certificate; plain text when
    /// the handshake fails (Postfix `may`).
    Opportunistic,
    /// STARTTLS or no delivery; the certificate must verify for the next
    /// hop's host name (Postfix `secure`).
    Required,
}

/// How the real client is passed to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardClient {
    /// XFORWARD when offered (it changes no policy), else XCLIENT.
    Auto,
    Xforward,
    Xclient,
    None,
}

/// One next hop with its connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub next_hop: NextHop,
    pub tls: HopTls,
    /// CA certificates for `HopTls::Required`.
    pub ca_file: PathBuf,
    pub forward_client: ForwardClient,
}

/// Which recipient domains a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// This domain only.
    Exact(String),
    /// Any subdomain of this one (`*.example.org`), not the domain itself.
    Subdomains(String),
}

impl DomainPattern {
    /// Whether `domain` (lowercase, no trailing dot) matches.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Exact(d) => domain == d,
            DomainPattern::Subdomains(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }

    /// More specific patterns first: exact, then longer suffixes.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            DomainPattern::Exact(d) => (0, std::cmp::Reverse(d.len())),
            DomainPattern::Subdomains(d) => (1, std::cmp::Reverse(d.len())),
        }
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

/// `[relay.routes]` entry: recipients of `domains` go to `hop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub domains: DomainPattern,
    pub hop: Hop,
}

#[derive(Debug, Clone)]
pub struct Relay {
    /// The default next hop (recipients of our domains without a route).
    pub next_hop: NextHop,
    pub tls: HopTls,
    pub ca_file: PathBuf,
    pub forward_client: ForwardClient,
    /// Most specific first.
    pub routes: Vec<Route>,
    /// DSNs to senders outside our domains and routes; `None`: MX lookup.
    pub bounce_next_hop: Option<Hop>,
    pub mx_port: u16,
    pub double_bounce_to: Option<crate::proto::Mailbox>,
    pub helo_name: String,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_queue_age: Duration,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_messages_per_connection: usize,
}

impl Relay {
    /// The default next hop with its settings.
    pub fn default_hop(&self) -> Hop {
        Hop {
            next_hop: self.next_hop.clone(),
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            forward_client: self.forward_client,
        }
    }
}

pub(super) fn parse_next_hop(key: &str, s: &str, base: &Path) -> Result<NextHop, ConfigError> {
    let host_port = |rest: &str| -> Result<(String, u16), ConfigError> {
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::new(key, format!("{s:?}: missing :port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| ConfigError::new(key, format!("{s:?}: invalid port {port:?}")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(ConfigError::new(key, format!("{s:?}: missing host")));
        }
        Ok((host.to_string(), port))
    };
    if let Some(rest) = s.strip_prefix("smtp://") {
        let (host, port) = host_port(rest)?;
        Ok(NextHop::Smtp { host, port })
    } else if let Some(rest) = s.strip_prefix("lmtp://") {
        let (host, port) = host_port(rest)?;
        Ok(NextHop::LmtpTcp { host, port })
    } else if let Some(path) = s.strip_prefix("lmtp:").or_else(|| s.strip_prefix("unix:")) {
        if path.is_empty() {
            return Err(ConfigError::new(key, "lmtp: needs a socket path"));
        }
        Ok(NextHop::LmtpUnix {
            path: resolve(base, path),
        })
    } else {
        Err(ConfigError::new(
            key,
            format!("{s:?}: expected smtp://host:port, lmtp://host:port or lmtp:/path/to/socket"),
        ))
    }
}

fn parse_tls(key: &str, v: &str) -> Result<HopTls, ConfigError> {
    match v {
        "none" => Ok(HopTls::None),
        "opportunistic" => Ok(HopTls::Opportunistic),
        "required" => Ok(HopTls::Required),
        o => Err(ConfigError::new(
            key,
            format!("{o:?}: expected \"none\", \"opportunistic\" or \"required\""),
        )),
    }
}

fn parse_forward(key: &str, v: &str) -> Result<ForwardClient, ConfigError> {
    match v {
        "auto" => Ok(ForwardClient::Auto),
        "xforward" => Ok(ForwardClient::Xforward),
        "xclient" => Ok(ForwardClient::Xclient),
        "none" => Ok(ForwardClient::None),
        o => Err(ConfigError::new(
            key,
            format!("{o:?}: expected \"auto\", \"xforward\", \"xclient\" or \"none\""),
        )),
    }
}

fn parse_pattern(key: &str, d: &str) -> Result<DomainPattern, ConfigError> {
    let lower = d.trim_end_matches('.').to_ascii_lowercase();
    let (pattern, name) = match lower.strip_prefix("*.") {
        Some(rest) => (DomainPattern::Subdomains(rest.to_string()), rest.to_string()),
        None => (DomainPattern::Exact(lower.clone()), lower),
    };
    if !crate::proto::address::is_valid_helo(&name) || name.starts_with('[') {
        return Err(ConfigError::new(
            key,
            format!("{d:?} is not a domain name (or *.domain)"),
        ));
    }
    Ok(pattern)
}

pub(super) fn validate_relay(r: RawRelay, base: &Path, hostname: &str) -> Result<Relay, ConfigError> {
    let next_hop = parse_next_hop(
        "relay.next_hop",
        r.next_hop.as_deref().unwrap_or(defaults::RELAY_NEXT_HOP),
        base,
    )?;
    let retry_initial = dur("relay.retry_initial", r.retry_initial, defaults::RELAY_RETRY_INITIAL)?;
    let retry_max = dur("relay.retry_max", r.retry_max, defaults::RELAY_RETRY_MAX)?;
    if retry_max < retry_initial {
        return Err(ConfigError::new(
            "relay.retry_max",
            "must not be shorter than relay.retry_initial",
        ));
    }
    let helo_name = helo_name(r.helo_name, hostname)?;
    // What every route inherits.
    let default = Hop {
        next_hop,
        tls: parse_tls("relay.tls", r.tls.as_deref().unwrap_or(defaults::RELAY_TLS))?,
        ca_file: resolve(base, r.tls_ca_file.as_deref().unwrap_or(defaults::RELAY_TLS_CA_FILE)),
        forward_client: parse_forward(
            "relay.forward_client",
            r.forward_client.as_deref().unwrap_or(defaults::RELAY_FORWARD_CLIENT),
        )?,
    };
    let routes = parse_routes(r.routes, base, &default)?;
    let bounce_next_hop = match r.bounce_next_hop.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Hop {
            next_hop: parse_next_hop("relay.bounce_next_hop", s, base)?,
            forward_client: ForwardClient::None,
            ..default.clone()
        }),
    };
    let mx_port = r.mx_port.unwrap_or(defaults::RELAY_MX_PORT);
    if mx_port == 0 {
        return Err(ConfigError::new("relay.mx_port", "must be greater than zero"));
    }
    let Hop {
        next_hop,
        tls,
        ca_file,
        forward_client,
    } = default;
    Ok(Relay {
        next_hop,
        tls,
        ca_file,
        forward_client,
        routes,
        bounce_next_hop,
        mx_port,
        double_bounce_to: double_bounce_to(r.double_bounce_to.as_deref())?,
        helo_name,
        retry_initial,
        retry_max,
        max_queue_age: dur("relay.max_queue_age", r.max_queue_age, defaults::RELAY_MAX_QUEUE_AGE)?,
        concurrency: positive("relay.concurrency", r.concurrency, defaults::RELAY_CONCURRENCY)?,
        connect_timeout: dur(
            "relay.connect_timeout",
            r.connect_timeout,
            defaults::RELAY_CONNECT_TIMEOUT,
        )?,
        command_timeout: dur(
            "relay.command_timeout",
            r.command_timeout,
            defaults::RELAY_COMMAND_TIMEOUT,
        )?,
        data_timeout: dur("relay.data_timeout", r.data_timeout, defaults::RELAY_DATA_TIMEOUT)?,
        idle_timeout: dur("relay.idle_timeout", r.idle_timeout, defaults::RELAY_IDLE_TIMEOUT)?,
        max_messages_per_connection: positive(
            "relay.max_messages_per_connection",
            r.max_messages_per_connection,
            defaults::RELAY_MAX_MESSAGES_PER_CONNECTION,
        )?,
    })
}

/// `[relay.routes]`, most specific first; what a route leaves out comes
/// from `default`.
fn parse_routes(raw: BTreeMap<String, RawRoute>, base: &Path, default: &Hop) -> Result<Vec<Route>, ConfigError> {
    let mut routes = Vec::new();
    for (domain, raw) in raw {
        let key = format!("relay.routes.\"{domain}\"");
        let domains = parse_pattern(&key, &domain)?;
        let hop = match raw {
            RawRoute::Url(url) => Hop {
                next_hop: parse_next_hop(&key, &url, base)?,
                ..default.clone()
            },
            RawRoute::Table(t) => Hop {
                next_hop: match t.next_hop.as_deref() {
                    Some(url) => parse_next_hop(&format!("{key}.next_hop"), url, base)?,
                    None => {
                        return Err(ConfigError::new(
                            format!("{key}.next_hop"),
                            "missing: a route needs a next hop, e.g. \"smtp://10.0.0.1:25\"",
                        ));
                    }
                },
                tls: match t.tls.as_deref() {
                    Some(v) => parse_tls(&format!("{key}.tls"), v)?,
                    None => default.tls,
                },
                ca_file: t
                    .tls_ca_file
                    .as_deref()
                    .map_or_else(|| default.ca_file.clone(), |f| resolve(base, f)),
                forward_client: match t.forward_client.as_deref() {
                    Some(v) => parse_forward(&format!("{key}.forward_client"), v)?,
                    None => default.forward_client,
                },
            },
        };
        routes.push(Route { domains, hop });
    }
    routes.sort_by_key(|r| r.domains.rank());
    Ok(routes)
}

/// `relay.helo_name`, by default `server.hostname`.
fn helo_name(v: Option<String>, hostname: &str) -> Result<String, ConfigError> {
    let name = v.unwrap_or_else(|| hostname.to_string());
    if !crate::proto::address::is_valid_helo(&name) {
        return Err(ConfigError::new(
            "relay.helo_name",
            format!("{name:?} is not a valid host name"),
        ));
    }
    Ok(name)
}

fn double_bounce_to(v: Option<&str>) -> Result<Option<crate::proto::Mailbox>, ConfigError> {
    match v {
        None | Some("") => Ok(None),
        Some(a) => crate::proto::address::parse_mailbox(a).map(Some).map_err(|_| {
            ConfigError::new(
                "relay.double_bounce_to",
                format!("{a:?} is not a mail address (user@domain)"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns() {
        let sub = DomainPattern::Subdomains("example.org".into());
        assert!(sub.matches("a.example.org"));
        assert!(sub.matches("b.a.example.org"));
        assert!(!sub.matches("example.org"));
        assert!(!sub.matches("badexample.org"));
        let exact = DomainPattern::Exact("example.org".into());
        assert!(exact.matches("example.org"));
        assert!(!exact.matches("a.example.org"));
        assert!(exact.rank() < sub.rank());
        assert!(
            DomainPattern::Subdomains("a.example.org".into()).rank() < sub.rank(),
            "longer suffix first"
        );
    }
}
