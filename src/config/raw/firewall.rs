//! `[firewall]`: the adaptive firewall and its per-offence ban rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The adaptive firewall: offences in sluice's own events become bans.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFirewall {
    /// Ban at all. Default true (the listener refuses banned clients).
    pub enabled: Option<bool>,
    /// Decide and log bans, enforce nothing. Default false.
    pub dry_run: Option<bool>,
    /// Networks never banned (loopback, policy.allowlist and a literal
    /// next-hop address are added). Default empty.
    pub allowlist: Option<Vec<String>>,
    /// Where bans go besides the listener: "none", "nft" or "ipset"
    /// (iptables + ipset). Default "none".
    pub exporter: Option<String>,
    /// The ipsets are "<ipset_name>_v4" and "_v6". Default "sluice".
    pub ipset_name: Option<String>,
    /// The nftables table sluice owns (inet family). Default "sluice".
    pub nft_table: Option<String>,
    /// The TCP ports the kernel exporter's rules drop for a banned
    /// address, e.g. [25, 465, 587]; empty = all its traffic (every
    /// protocol and port, SSH too). Default [].
    pub ports: Option<Vec<i64>>,
    /// How often changes are pushed to the exporter. Default "50ms".
    pub flush_interval: Option<String>,
    /// Active bans across restarts. Default "bans.json" in spool.dir.
    pub store: Option<String>,
    /// The unix socket `sluice bans` talks to (mode 0600). Default
    /// "control.sock" in spool.dir.
    pub control_socket: Option<String>,
    /// Export the banned networks (one CIDR per line) to this file, and the
    /// bans as JSON to the same name plus ".json". Default none.
    pub file: Option<String>,
    /// How long past bans count for escalation. Default "24h".
    pub memory: Option<String>,
    /// Longest escalated ban. Default "7d".
    pub max_ban: Option<String>,
    /// Banned hosts in one /24 (/64) that become one prefix ban; 0 = off.
    /// Default 0.
    pub aggregate: Option<u32>,
    /// Per offence (unknown_user, dnsbl, virus, spam, pregreet, protocol,
    /// rate_limit): `{ count = N, window = "5m", ban = "1h" }`.
    pub rules: Option<BTreeMap<String, RawBanRule>>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBanRule {
    /// Offences within `window` that earn a ban. Default: the offence's own.
    pub count: Option<u32>,
    /// Default: the offence's own (e.g. "5m" for unknown_user).
    pub window: Option<String>,
    /// The first ban's length. Default: the offence's own.
    pub ban: Option<String>,
}
