//! Validation of `[firewall]`.

use std::path::Path;

use super::raw::RawFirewall;
use super::{ConfigError, NextHop, dur, resolve};
use crate::firewall::engine::{BanConfig, Offence, Rule};
use crate::firewall::nft::NftNames;
use crate::firewall::service::FirewallConfig;

pub(super) fn validate_firewall(
    raw: RawFirewall,
    base: &Path,
    spool_dir: &Path,
    policy_allowlist: &[ipnet::IpNet],
    next_hop: &NextHop,
) -> Result<Option<FirewallConfig>, ConfigError> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let mut bans = BanConfig::default();
    let mut allowlist = policy_allowlist.to_vec();
    for (i, n) in raw.allowlist.unwrap_or_default().iter().enumerate() {
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
    bans.allowlist = allowlist;
    bans.dry_run = raw.dry_run.unwrap_or(false);
    let secs = |d: std::time::Duration| d.as_secs().max(1);
    bans.memory = secs(dur("firewall.memory", raw.memory, "24h")?);
    bans.max_ban = secs(dur("firewall.max_ban", raw.max_ban, "7d")?);
    bans.aggregate = raw.aggregate.filter(|&n| n > 0);
    for (name, r) in raw.rules.unwrap_or_default() {
        let key = format!("firewall.rules.{name}");
        let Some(o) = Offence::ALL.iter().find(|o| o.as_str() == name) else {
            let known: Vec<&str> = Offence::ALL.iter().map(|o| o.as_str()).collect();
            return Err(ConfigError::new(
                key,
                format!("unknown offence; expected one of {}", known.join(", ")),
            ));
        };
        if r.count == 0 {
            return Err(ConfigError::new(format!("{key}.count"), "must be greater than zero"));
        }
        bans.rules.insert(
            *o,
            Rule {
                count: r.count,
                window: secs(dur(&format!("{key}.window"), Some(r.window), "")?),
                ban: secs(dur(&format!("{key}.ban"), Some(r.ban), "")?),
            },
        );
    }
    let name_ok = |key: &str, v: &str| {
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Err(ConfigError::new(key, "letters, digits and _ only"))
        } else {
            Ok(())
        }
    };
    let mut ipset = None;
    let nft = match raw.exporter.as_deref().unwrap_or("none") {
        "none" => None,
        "ipset" => {
            let base = raw.ipset_name.clone().unwrap_or_else(|| "sluice".into());
            name_ok("firewall.ipset_name", &base)?;
            ipset = Some(crate::firewall::ipset::IpsetNames::new(&base));
            None
        }
        "nft" => {
            let table = raw.nft_table.unwrap_or_else(|| "sluice".into());
            if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::new("firewall.nft_table", "letters, digits and _ only"));
            }
            Some(NftNames {
                table,
                ..NftNames::default()
            })
        }
        other => {
            return Err(ConfigError::new(
                "firewall.exporter",
                format!("{other:?}: expected \"none\", \"nft\" or \"ipset\""),
            ));
        }
    };
    Ok(Some(FirewallConfig {
        bans,
        store: match raw.store {
            Some(s) => resolve(base, &s),
            None => spool_dir.join("bans.json"),
        },
        flush_interval: dur("firewall.flush_interval", raw.flush_interval, "50ms")?,
        nft,
        ipset,
        file: raw.file.filter(|f| !f.is_empty()).map(|f| resolve(base, &f)),
        control_socket: match raw.control_socket {
            Some(s) => resolve(base, &s),
            None => spool_dir.join("control.sock"),
        },
    }))
}
