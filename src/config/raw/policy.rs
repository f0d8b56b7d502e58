//! The pre-DATA checks: `[policy]`, `[recipients]`, `[limits]`, `[helo]`,
//! `[dns]`, `[dnsbl]`, `[greylist]` and `[callahead]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Recipient call-ahead for domains marked `@domain VERIFY` in the table.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallAhead {
    /// Without it, VERIFY recipients are accepted unverified. Default false.
    pub enabled: Option<bool>,
    /// How long "exists" answers are cached. Default "7d".
    pub positive_ttl: Option<String>,
    /// How long "unknown" answers are cached. Default "3h".
    pub negative_ttl: Option<String>,
    /// Probes one client may cause per minute; beyond: 450 4.7.1 without a
    /// probe. Default 20.
    pub probes_per_client: Option<u32>,
    /// Idle probe connections kept open to the next hop. Default 4.
    pub pool_size: Option<u64>,
    /// Probes in progress at once, from all clients; beyond: 450 without a
    /// probe, so no attack can turn call-ahead against the next hop.
    /// Default 8.
    pub max_concurrent: Option<u64>,
    /// Probes per second from all clients; beyond: 450. Default 50.
    pub max_per_second: Option<u32>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGreylist {
    /// Greylist new (client /24 or /64, sender, recipient) triplets. Default false.
    pub enabled: Option<bool>,
    /// How long a new triplet must wait before a retry passes. Default "300s".
    pub delay: Option<String>,
    /// A retry later than this after the first attempt starts over. Default "2d".
    pub retry_window: Option<String>,
    /// A passed triplet unused this long is forgotten. Default "35d".
    pub max_age: Option<String>,
    /// Passed deliveries after which a client network skips greylisting;
    /// 0 = never. Default 5.
    pub auto_allowlist_after: Option<u32>,
    /// State file. Default "greylist.state" in spool.dir.
    pub state: Option<String>,
    /// With `[cluster]`, when the shared store does not answer in time:
    /// "open" passes the recipient (counted), "closed" defers it. Default "open".
    pub on_store_failure: Option<String>,
}

/// Each: "off", "reject" (550 at HELO; 550 5.7.25 at RCPT for fcrdns) or a
/// weight like "2" added to the client's score (see dnsbl.threshold).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHelo {
    /// HELO is a bare IP ("1.2.3.4", not "[1.2.3.4]"). Default "off".
    pub bare_ip: Option<String>,
    /// HELO has no dot ("localhost"). Default "off".
    pub non_fqdn: Option<String>,
    /// HELO claims to be us (server.hostname or a listen address). Default "off".
    pub our_name: Option<String>,
    /// Client IP without forward-confirmed reverse DNS. Default "off".
    pub fcrdns: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Concurrent sessions per client IP (IPv6: per /64); beyond: 421 4.7.0. Default 0 (unlimited).
    pub per_ip_connections: Option<u32>,
    /// New connections per client per minute; beyond: 421 4.7.0. Default 0 (unlimited).
    pub per_ip_connection_rate: Option<u32>,
    /// Messages (MAIL) per client per minute; beyond: 451 4.7.0. Default 0 (unlimited).
    pub per_ip_message_rate: Option<u32>,
    /// Recipients (RCPT) per client per minute; beyond: 452 4.7.0. Default 0 (unlimited).
    pub per_ip_recipient_rate: Option<u32>,
    /// Errors in a session after which every reply is delayed (tarpit);
    /// 0 turns the tarpit off. Default 10 (as Postfix's smtpd_soft_error_limit).
    pub tarpit_after_errors: Option<u32>,
    /// Tarpit delay per error beyond tarpit_after_errors, growing with each
    /// error up to ten times this. Default "1s".
    pub tarpit_delay: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Resolver to ask, "IP:port" (e.g. "127.0.0.1:5353"). Default: the
    /// system resolver (/etc/resolv.conf).
    pub resolver: Option<String>,
    /// Deadline for each DNS query (DNSBL, RHSBL). Default "2s".
    pub timeout: Option<String>,
    /// A negative answer (no such name or record) is cached at least this
    /// long, also when it carries no SOA to give it a TTL. Default "60s".
    pub negative_ttl: Option<String>,
    /// An answer is cached at least this long, whatever its TTL (as
    /// unbound's cache-min-ttl); "0s" keeps the servers' TTLs. Default "60s".
    pub min_ttl: Option<String>,
    /// The DNS time one transaction may spend, shared by the DNS lists
    /// (waited for at RCPT) and SPF/DKIM/DMARC (at the end of DATA);
    /// counted from the connection for the first transaction, from MAIL
    /// for the next ones. Default "5s".
    pub budget: Option<String>,
    /// The window over which the resolver's health is judged. Default "60s".
    pub health_window: Option<String>,
    /// Queries the window must hold before it judges. Default 20.
    pub health_min_queries: Option<u32>,
    /// Share of timed-out or failed queries at which the resolver is
    /// failing (healthy again below half of it). Default 0.5.
    pub health_failing_ratio: Option<f64>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsbl {
    /// Client-IP lists: "zone[=a.b.c.d][*weight]", e.g.
    /// "zen.example=127.0.0.[2..11]*3"; negative weights for allowlists.
    /// Default: none (DNSBL off).
    pub zones: Option<Vec<String>>,
    /// Domain lists (RHSBL) for the HELO name and the MAIL FROM domain,
    /// same syntax. Default: none.
    pub domain_zones: Option<Vec<String>>,
    /// How often each client-IP zone is probed with its RFC 5782 test
    /// entries; a zone that lists everything, nothing, or does not answer
    /// is disabled until it answers right again. Default "5m".
    pub probe_interval: Option<String>,
    /// Total weight at which the client is refused (554 5.7.1 at RCPT). Default 1.
    pub threshold: Option<i64>,
    /// Reply text per zone; "$client" becomes the client IP. Hides the
    /// zone name from the client. Default: "Service unavailable; client
    /// [IP] blocked using ZONE".
    pub replies: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Client networks (CIDR) that skip the reputation checks (DNSBL);
    /// never recipient validation. Default: empty (loopback included).
    pub allowlist: Option<Vec<String>>,
    /// Wait this long before the banner; a client that talks first is an
    /// early talker (pregreet) and gets no service. Default "0s" (no wait,
    /// no pregreet test; improper pipelining is still refused).
    pub greet_delay: Option<String>,
    /// Refuse service to early talkers and to clients that pipeline without
    /// PIPELINING (before EHLO's reply, or after HELO). Default true.
    pub reject_early_talkers: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecipients {
    /// Domains we accept mail for; others get 554 5.7.1. Default ["example.com"].
    pub domains: Option<Vec<String>>,
    /// Recipient table (Postfix map text format). Default "recipients",
    /// next to the configuration file (/etc/sluice/recipients).
    pub table: Option<String>,
    /// Address extension delimiter: with "+", user+tag@d matches user@d. Default "" (off).
    pub delimiter: Option<String>,
    /// How often the table file is checked for changes. Default "2s".
    pub reload_interval: Option<String>,
    /// Where `RCPT TO:<postmaster>` (no domain, RFC 5321 §4.5.1) goes.
    /// Default "postmaster@" the first of `domains`.
    pub postmaster: Option<String>,
}
