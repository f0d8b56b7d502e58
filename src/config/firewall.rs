//! `[firewall]`: the ban rules (offence -> window -> ban), escalation,
//! allowlist, aggregation, and where bans go (nftables, ipset, files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::defaults;
use super::raw::RawFirewall;
use super::{ConfigError, NextHop, dur, resolve};

/// What an address did that counts towards a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Offence {
    UnknownUser,
    Dnsbl,
    Virus,
    Spam,
    Pregreet,
    Protocol,
    RateLimit,
}

impl Offence {
    pub const ALL: [Offence; 7] = [
        Offence::UnknownUser,
        Offence::Dnsbl,
        Offence::Virus,
        Offence::Spam,
        Offence::Pregreet,
        Offence::Protocol,
        Offence::RateLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Offence::UnknownUser => "unknown_user",
            Offence::Dnsbl => "dnsbl",
            Offence::Virus => "virus",
            Offence::Spam => "spam",
            Offence::Pregreet => "pregreet",
            Offence::Protocol => "protocol",
            Offence::RateLimit => "rate_limit",
        }
    }
}

/// "`count` offences within `window` seconds → ban for `ban` seconds".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub count: u32,
    pub window: u64,
    pub ban: u64,
}

#[derive(Debug, Clone)]
pub struct BanConfig {
    pub rules: HashMap<Offence, Rule>,
    /// How long past bans are remembered for escalation. Default 24 h.
    pub memory: u64,
    /// Longest ban escalation may reach. Default 7 days.
    pub max_ban: u64,
    /// Never banned (loopback is always added).
    pub allowlist: Vec<IpNet>,
    /// Banned hosts in one /24 (IPv4) or /64 (IPv6) that become one prefix
    /// ban; `None` = no aggregation.
    pub aggregate: Option<u32>,
    pub dry_run: bool,
}

impl Default for BanConfig {
    fn default() -> Self {
        let r = |count, window, ban| Rule { count, window, ban };
        let rules = HashMap::from([
            // A dictionary attack: many unknown users in a few minutes.
            (Offence::UnknownUser, r(10, 300, 3600)),
            (Offence::Dnsbl, r(3, 600, 3600)),
            (Offence::Virus, r(2, 3600, 6 * 3600)),
            (Offence::Spam, r(5, 3600, 3600)),
            (Offence::Pregreet, r(1, 60, 3600)),
            (Offence::Protocol, r(20, 300, 1800)),
            (Offence::RateLimit, r(10, 300, 1800)),
        ]);
        BanConfig {
            rules,
            memory: 24 * 3600,
            max_ban: 7 * 24 * 3600,
            allowlist: Vec::new(),
            aggregate: None,
            dry_run: false,
        }
    }
}

/// Names of what sluice owns in the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftNames {
    /// `inet` table, e.g. "sluice".
    pub table: String,
    /// Banned hosts.
    pub set_v4: String,
    pub set_v6: String,
    /// Banned networks (aggregated prefixes, CIDRs added by hand).
    pub nets_v4: String,
    pub nets_v6: String,
}

impl Default for NftNames {
    fn default() -> Self {
        NftNames {
            table: "sluice".into(),
            set_v4: "banned_v4".into(),
            set_v6: "banned_v6".into(),
            nets_v4: "banned_nets_v4".into(),
            nets_v6: "banned_nets_v6".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetNames {
    pub set_v4: String,
    pub set_v6: String,
}

impl IpsetNames {
    /// Sets named `<base>_v4` and `<base>_v6`.
    pub fn new(base: &str) -> IpsetNames {
        IpsetNames {
            set_v4: format!("{base}_v4"),
            set_v6: format!("{base}_v6"),
        }
    }
}

/// Everything sluice may own in the kernel, whichever exporter is on (or
/// none): what is not in use is removed at start, and `sluice bans
/// flush-kernel` removes it all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelNames {
    pub nft: NftNames,
    pub ipset: IpsetNames,
}

/// Which kernel exporter is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelExporter {
    Nft,
    Ipset,
}

impl KernelExporter {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelExporter::Nft => "nft",
            KernelExporter::Ipset => "ipset",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FirewallConfig {
    pub bans: BanConfig,
    /// Active bans, kept across restarts.
    pub store: PathBuf,
    /// How often changes are pushed to the exporter (and expiry runs).
    pub flush_interval: Duration,
    /// The nftables names, when bans go to nftables.
    pub nft: Option<NftNames>,
    /// The ipset names, when bans go to iptables + ipset.
    pub ipset: Option<IpsetNames>,
    /// The TCP ports the kernel rules drop; empty = all traffic.
    pub ports: Vec<u16>,
    /// The control socket of `sluice bans`.
    pub control_socket: PathBuf,
    /// Export for other tools: the banned networks, one CIDR per line, at
    /// this path, and the bans as JSON at the same path plus `.json`.
    pub file: Option<PathBuf>,
}

impl FirewallConfig {
    /// The kernel exporter, if one is on.
    pub fn kernel_exporter(&self) -> Option<KernelExporter> {
        match (&self.nft, &self.ipset) {
            (Some(_), _) => Some(KernelExporter::Nft),
            (None, Some(_)) => Some(KernelExporter::Ipset),
            (None, None) => None,
        }
    }
}

/// `[firewall]`: `None` when it is off; and the kernel names in either case.
pub(super) fn validate_firewall(
    raw: RawFirewall,
    base: &Path,
    spool_dir: &Path,
    policy_allowlist: &[ipnet::IpNet],
    next_hop: &NextHop,
) -> Result<(Option<FirewallConfig>, KernelNames), ConfigError> {
    let kernel = kernel_names(&raw)?;
    if !raw.enabled.unwrap_or(defaults::FIREWALL_ENABLED) {
        return Ok((None, kernel));
    }
    let (nft, ipset) = exporter_names(&raw, &kernel)?;
    let ports = ports(raw.ports.as_deref().unwrap_or_default(), ipset.is_some())?;
    let mut bans = BanConfig {
        allowlist: allowlist(raw.allowlist.as_deref().unwrap_or_default(), policy_allowlist, next_hop)?,
        dry_run: raw.dry_run.unwrap_or(defaults::FIREWALL_DRY_RUN),
        memory: secs(dur("firewall.memory", raw.memory, defaults::FIREWALL_MEMORY)?),
        max_ban: secs(dur("firewall.max_ban", raw.max_ban, defaults::FIREWALL_MAX_BAN)?),
        aggregate: raw.aggregate.filter(|&n| n > 0),
        ..BanConfig::default()
    };
    for (name, r) in raw.rules.unwrap_or_default() {
        let (o, rule) = parse_rule(&name, r, &bans.rules)?;
        bans.rules.insert(o, rule);
    }
    let fw = FirewallConfig {
        bans,
        store: match raw.store {
            Some(s) => resolve(base, &s),
            None => spool_dir.join("bans.json"),
        },
        flush_interval: dur(
            "firewall.flush_interval",
            raw.flush_interval,
            defaults::FIREWALL_FLUSH_INTERVAL,
        )?,
        nft,
        ipset,
        ports,
        file: raw.file.filter(|f| !f.is_empty()).map(|f| resolve(base, &f)),
        control_socket: match raw.control_socket {
            Some(s) => resolve(base, &s),
            None => spool_dir.join("control.sock"),
        },
    };
    Ok((Some(fw), kernel))
}

/// `firewall.ports`: TCP ports 1-65535, each once; iptables' multiport
/// match takes at most 15.
fn ports(raw: &[i64], ipset: bool) -> Result<Vec<u16>, ConfigError> {
    let mut ports = Vec::new();
    for (i, &p) in raw.iter().enumerate() {
        let port = u16::try_from(p).ok().filter(|&p| p > 0).ok_or_else(|| {
            ConfigError::new(
                format!("firewall.ports[{i}]"),
                format!("{p} is not a TCP port (1-65535)"),
            )
        })?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    if ipset && ports.len() > 15 {
        return Err(ConfigError::new(
            "firewall.ports",
            format!(
                "{} ports: with exporter = \"ipset\" at most 15 (iptables' multiport match)",
                ports.len()
            ),
        ));
    }
    Ok(ports)
}

/// Whole seconds, at least one.
fn secs(d: std::time::Duration) -> u64 {
    d.as_secs().max(1)
}

/// `firewall.allowlist`, plus `policy.allowlist` and the next hop's
/// address: never banned.
fn allowlist(
    raw: &[String],
    policy_allowlist: &[ipnet::IpNet],
    next_hop: &NextHop,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let mut allowlist = policy_allowlist.to_vec();
    for (i, n) in raw.iter().enumerate() {
        let net = n
            .parse::<ipnet::IpNet>()
            .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                ConfigError::new(
                    format!("firewall.allowlist[{i}]"),
                    "expected a CIDR such as 192.0.2.0/24",
                )
            })?;
        allowlist.push(net);
    }
    if let NextHop::Smtp { host, .. } | NextHop::LmtpTcp { host, .. } = next_hop
        && let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>()
    {
        allowlist.push(ipnet::IpNet::from(ip));
    }
    Ok(allowlist)
}

/// `[firewall.rules.NAME]`: the offence it is for, and its rule; a key
/// left out keeps the offence's default (from `defaults`).
fn parse_rule(
    name: &str,
    r: super::raw::RawBanRule,
    defaults: &HashMap<Offence, Rule>,
) -> Result<(Offence, Rule), ConfigError> {
    let key = format!("firewall.rules.{name}");
    let Some(o) = Offence::ALL.iter().find(|o| o.as_str() == name) else {
        let known: Vec<&str> = Offence::ALL.iter().map(|o| o.as_str()).collect();
        return Err(ConfigError::new(
            key,
            format!("unknown offence; expected one of {}", known.join(", ")),
        ));
    };
    let base = defaults.get(o).cloned().unwrap_or(Rule {
        count: 1,
        window: 60,
        ban: 3600,
    });
    if r.count == Some(0) {
        return Err(ConfigError::new(format!("{key}.count"), "must be greater than zero"));
    }
    let secs_or = |field: &str, v: Option<String>, default: u64| -> Result<u64, ConfigError> {
        match v {
            Some(v) => Ok(secs(dur(&format!("{key}.{field}"), Some(v), "")?)),
            None => Ok(default),
        }
    };
    let rule = Rule {
        count: r.count.unwrap_or(base.count),
        window: secs_or("window", r.window, base.window)?,
        ban: secs_or("ban", r.ban, base.ban)?,
    };
    Ok((*o, rule))
}

/// `firewall.nft_table` and `firewall.ipset_name`: what sluice owns in the
/// kernel (checked whether or not the firewall is on, as they name what a
/// start removes when it is off).
fn kernel_names(raw: &RawFirewall) -> Result<KernelNames, ConfigError> {
    let name_ok = |key: &str, v: &str| {
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Err(ConfigError::new(key, "letters, digits and _ only"))
        } else {
            Ok(())
        }
    };
    let base = raw.ipset_name.as_deref().unwrap_or(defaults::FIREWALL_IPSET_NAME);
    name_ok("firewall.ipset_name", base)?;
    let table = raw.nft_table.as_deref().unwrap_or(defaults::FIREWALL_NFT_TABLE);
    name_ok("firewall.nft_table", table)?;
    Ok(KernelNames {
        nft: NftNames {
            table: table.to_string(),
            ..NftNames::default()
        },
        ipset: IpsetNames::new(base),
    })
}

/// `firewall.exporter` and the names of what it owns.
fn exporter_names(
    raw: &RawFirewall,
    kernel: &KernelNames,
) -> Result<(Option<NftNames>, Option<IpsetNames>), ConfigError> {
    match raw.exporter.as_deref().unwrap_or(defaults::FIREWALL_EXPORTER) {
        "none" => Ok((None, None)),
        "ipset" => Ok((None, Some(kernel.ipset.clone()))),
        "nft" => Ok((Some(kernel.nft.clone()), None)),
        other => Err(ConfigError::new(
            "firewall.exporter",
            format!("{other:?}: expected \"none\", \"nft\" or \"ipset\""),
        )),
    }
}
