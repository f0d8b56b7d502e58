//! `RawConfig`: the TOML file as written, field by field, with defaults.
//!
//! Every field is documented with its default; `deploy/sluice.example.toml`
//! mirrors this file. Unknown keys are refused (`deny_unknown_fields`).
//! Turning this into the typed [`super::Config`] happens in `validate()`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub relay: RawRelay,
    #[serde(default)]
    pub recipients: RawRecipients,
    #[serde(default)]
    pub spool: RawSpool,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub dnsbl: RawDnsbl,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub helo: RawHelo,
    #[serde(default)]
    pub greylist: RawGreylist,
    #[serde(default)]
    pub callahead: RawCallAhead,
    #[serde(default)]
    pub clamd: RawClamd,
    #[serde(default)]
    pub scan: RawScan,
    #[serde(default)]
    pub spam: RawSpam,
    #[serde(default)]
    pub firewall: RawFirewall,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub stress: RawStress,
    /// Shared state across nodes; absent: each node keeps its own.
    pub cluster: Option<RawCluster>,
    /// Postfix's policy delegation protocol; absent: off.
    pub policy_server: Option<RawPolicyServer>,
    /// The milter listener for Postfix; absent: off.
    pub milter: Option<RawMilter>,
}

/// `[policy_server]`: the pre-DATA checks for an existing Postfix
/// (`check_policy_service inet:127.0.0.1:10023`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyServer {
    /// Addresses to listen on; keep them private. Default ["127.0.0.1:10023"].
    pub listen: Option<Vec<String>>,
    /// A connection idle this long is closed. Default "10m".
    pub idle_timeout: Option<String>,
    /// The longest the checks take for one request, then DUNNO. Default "10s".
    pub check_timeout: Option<String>,
    /// Octets in one request; larger: DUNNO. Default 16384.
    pub max_request_size: Option<u64>,
    /// Attributes in one request; more: DUNNO. Default 100.
    pub max_attributes: Option<u64>,
}

/// `[milter]`: sluice's content checks for Postfix's `smtpd_milters`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMilter {
    /// Addresses Postfix connects to. Default ["127.0.0.1:8891"].
    pub listen: Option<Vec<String>>,
    /// The longest wait for Postfix's next command. Default "10m".
    pub timeout: Option<String>,
    /// Milter connections at once (one per Postfix SMTP session). Default 1000.
    pub max_connections: Option<u64>,
}

/// `[cluster]`: per-client state shared by several nodes in Valkey/Redis.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// The server: "redis://host:6379/0" (rediss:// for TLS is not built in).
    /// With sentinels: optional, for the database number and credentials.
    pub redis: Option<String>,
    /// Sentinel addresses ("host:26379"), instead of `redis`. Default none.
    pub sentinels: Option<Vec<String>>,
    /// The master's name in Sentinel; needed with `sentinels`.
    pub master: Option<String>,
    /// Prepended to every key. Default "sluice:".
    pub prefix: Option<String>,
    /// The longest a session waits for the store before falling back. Default "50ms".
    pub timeout: Option<String>,
    /// This node's name. Default server.hostname.
    pub node: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStress {
    /// Stress mode on when the relay nears its limits. Default true.
    pub enabled: Option<bool>,
    /// Share of `server.max_connections` open at which it turns on. Default 0.8.
    pub sessions_ratio: Option<f64>,
    /// Every timeout (idle, command, data) is at most this. Default "10s".
    pub timeout: Option<String>,
    /// `server.max_errors` under stress. Default 3.
    pub max_errors: Option<u32>,
    /// `limits.tarpit_after_errors` under stress. Default 1.
    pub tarpit_after_errors: Option<u32>,
    /// It stays on at least this long. Default "30s".
    pub min_duration: Option<String>,
    /// How often the load is looked at. Default "250ms".
    pub check_interval: Option<String>,
}

/// Content checks at the end of DATA: MIME decoding, banned attachments,
/// and what to do when scanning fails or is slow.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawScan {
    /// MIME that can be read more than one way: "scan-all" (decode and scan
    /// every plausible reading) or "reject" (554 5.6.0). Default "scan-all".
    pub ambiguous_mime: Option<String>,
    /// A part whose Content-Transfer-Encoding is not one of RFC 2045's (or
    /// a uuencode variant): "reject" (554 5.6.0) or "scan-all". Default "reject".
    pub unknown_encoding: Option<String>,
    /// Nesting of messages inside messages decoded. Default 8.
    pub max_depth: Option<u64>,
    /// Decoded parts per message. Default 1000.
    pub max_parts: Option<u64>,
    /// Decoded octets per message. Default 67108864.
    pub max_decoded_size: Option<u64>,
    /// File extensions (and sniffed types) refused as attachments, also
    /// inside zip archives. Default: executables and scripts (see README).
    pub banned_extensions: Option<Vec<String>>,
    /// Check names inside zip archives. Default true.
    pub banned_in_archives: Option<bool>,
    /// Encrypted archives, archive formats neither sluice nor clamd opens,
    /// archives past the limits below or clamd's: "accept", "quarantine"
    /// or "reject" (554 5.7.1). Default "quarantine".
    pub unscannable: Option<String>,
    /// Archives inside archives opened. Default 8.
    pub archive_max_depth: Option<u64>,
    /// Archive entries listed per message. Default 10000.
    pub archive_max_entries: Option<u64>,
    /// Octets unpacked from the archives of one message. Default 104857600.
    pub archive_max_size: Option<u64>,
    /// Scanner down or too slow: "tempfail" (451 4.7.1) or "hold" (accept,
    /// keep in the spool, deliver after a clean scan). Default "tempfail".
    pub on_failure: Option<String>,
    /// Expected scan latency above which a message is accepted first and
    /// scanned from the spool; "0s" = always in session. Default "20s".
    pub latency_budget: Option<String>,
    /// Messages waiting for a deferred scan beyond which new mail gets
    /// 451 4.7.1 while scans are over budget. Default 100000.
    pub max_held: Option<u64>,
    /// Held messages are scanned again this often. Default "1m".
    pub retry: Option<String>,
    /// Messages refused after acceptance. Default "quarantine" in spool.dir.
    pub quarantine_dir: Option<String>,
}

/// Virus scanning with clamd, at the end of DATA.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClamd {
    /// "tcp://host:port" or "unix:/path"; tried in turn (load spread,
    /// failover). Default: none (no virus scanning).
    pub endpoints: Option<Vec<String>>,
    /// Deadline for one scan, failover included. Default "30s".
    pub timeout: Option<String>,
    /// Largest message sent to clamd, octets (keep it under clamd's
    /// StreamMaxLength); larger ones count as a scan failure. Default 26214400.
    pub max_size: Option<u64>,
    /// Concurrent scans (clamd connections). Default 8.
    pub max_concurrent: Option<u64>,
    /// Endpoints are pinged this often; failing ones are tried last. Default "5s".
    pub health_interval: Option<String>,
    /// Stream the message to clamd while DATA arrives. Default true.
    pub stream: Option<bool>,
}

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
pub struct RawServer {
    /// Addresses to listen on: `"IP:port"`, or a table
    /// `{ address = "IP:port", proxy_protocol = true }` for a listener behind
    /// a load balancer that sends the PROXY protocol (v1 or v2) header.
    /// Default `["127.0.0.1:2525"]`.
    pub listen: Option<Vec<RawListen>>,
    /// Name used in the banner, the EHLO reply and Received headers.
    /// Default: the machine's host name.
    pub hostname: Option<String>,
    /// Largest message accepted, octets; advertised as SIZE. Default 26214400 (25 MiB).
    pub max_message_size: Option<u64>,
    /// Recipients per transaction; beyond this RCPT gets 452 4.5.3. Default 100.
    pub max_recipients: Option<u64>,
    /// Concurrent client sessions; beyond this a client gets 421 4.7.0. Default 10000.
    pub max_connections: Option<u64>,
    /// Longest command line, octets without CRLF. Default 4096.
    pub max_command_line: Option<u64>,
    /// Longest message line, octets without CRLF; longer gets 552 5.3.4. Default 8192.
    pub max_line_length: Option<u64>,
    /// Largest header section, octets; larger gets 552 5.3.4. Default 262144.
    pub max_header_size: Option<u64>,
    /// Received headers allowed before the message is treated as a loop
    /// (554 5.4.6). Default 50 (as Postfix's hopcount_limit).
    pub max_received_headers: Option<u64>,
    /// Protocol errors a session may make before 421 and disconnect. Default 20.
    pub max_errors: Option<u64>,
    /// Octets of arriving message bodies all sessions together hold in
    /// memory; beyond this (and an 8 KiB floor per session) a body goes to
    /// a file under the spool's `incoming/`. Default 33554432 (32 MiB).
    pub body_memory: Option<u64>,
    /// Memory for whole message bodies, in octets: a message is checked
    /// at the end of DATA once twice its size fits (one larger than half
    /// of this waits for all of it), and delivery holds a body's size while
    /// it sends one read back from the spool, so many large bodies take
    /// turns. Default 25165824 (24 MiB).
    pub check_memory: Option<u64>,
    /// The load balancers (addresses or CIDR networks) allowed to connect
    /// to a `proxy_protocol` listener; a connection from anywhere else on
    /// such a listener is refused. Default `[]`.
    pub proxy_from: Option<Vec<String>>,
    /// How long a load balancer has to send the PROXY header after it
    /// connects. Default "3s".
    pub proxy_timeout: Option<String>,
}

/// One `server.listen` entry: an address, or a table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawListen {
    Address(String),
    Table(RawListenTable),
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTable {
    /// Required: "IP:port".
    pub address: Option<String>,
    /// Connections carry a PROXY protocol header first (from
    /// `server.proxy_from` only). Default false.
    pub proxy_protocol: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// Waiting for the next command inside a transaction, and the longest
    /// a command line may take from its first octet to its end (a client
    /// trickling one byte at a time gets no more). Default "300s"
    /// (RFC 5321 §4.5.3.2.7).
    pub command: Option<String>,
    /// Waiting for the next command outside a transaction (after connect or
    /// after a finished message). Default "300s".
    pub idle: Option<String>,
    /// Waiting for the next block of DATA/BDAT octets. Default "180s".
    pub data: Option<String>,
    /// The least average rate of a message's octets, in bytes per second,
    /// after `data` of grace (Postfix's `smtpd_min_data_rate`): each octet
    /// received extends the deadline by 1/rate. 0 turns it off. Default 500.
    pub data_min_rate: Option<u64>,
    /// The longest a message (DATA, or every BDAT chunk) may take from its
    /// first octet to its last. Default "1h".
    pub message: Option<String>,
    /// After SIGTERM/SIGINT: how long sessions mid-DATA and in-flight
    /// deliveries may take to finish. Default "30s".
    pub shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain. Re-read when it changes on disk. Required
    /// when `[tls]` is present.
    pub cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Required when `[tls]` is
    /// present.
    pub key: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    /// Where accepted mail goes: `smtp://host:port`, `lmtp://host:port` or
    /// `lmtp:/path/to/socket`. Default `smtp://127.0.0.1:10025`.
    pub next_hop: Option<String>,
    /// Name sent in EHLO/LHLO to the next hop. Default: server.hostname.
    pub helo_name: Option<String>,
    /// First retry delay after a 4xx or a connection failure; doubles. Default "60s".
    pub retry_initial: Option<String>,
    /// Longest delay between tries. Default "1h".
    pub retry_max: Option<String>,
    /// Age after which undeliverable mail is bounced (DSN to the sender). Default "5d".
    pub max_queue_age: Option<String>,
    /// Concurrent deliveries (= connections) to the next hop. Default 20.
    pub concurrency: Option<u64>,
    /// TCP/unix connect timeout. Default "30s".
    pub connect_timeout: Option<String>,
    /// Timeout for each next-hop reply (greeting, EHLO, MAIL, RCPT, DATA 354). Default "300s".
    pub command_timeout: Option<String>,
    /// Timeout for the reply after the message body. Default "600s".
    pub data_timeout: Option<String>,
    /// How long an idle next-hop connection is kept for reuse. Default "10s".
    pub idle_timeout: Option<String>,
    /// Messages sent over one next-hop connection before it is closed. Default 1000.
    pub max_messages_per_connection: Option<u64>,
    /// STARTTLS to the next hop: "none", "opportunistic" (when offered, no
    /// certificate check) or "required" (certificate verified against
    /// `tls_ca_file`, name = the next hop's host). Default "none".
    pub tls: Option<String>,
    /// CA certificates (PEM) for `tls = "required"`. Default
    /// "/etc/ssl/certs/ca-certificates.crt".
    pub tls_ca_file: Option<String>,
    /// Pass the real client to the next hop: "auto" (XFORWARD when offered,
    /// else XCLIENT when offered), "xforward", "xclient" or "none".
    /// Default "auto".
    pub forward_client: Option<String>,
    /// Where DSNs to senders outside our domains and routes go, e.g. the
    /// outbound Postfix (`smtp://127.0.0.1:10587`). Default: unset, MX
    /// lookup of the sender's domain.
    pub bounce_next_hop: Option<String>,
    /// TCP port for delivery to MX hosts (bounces when `bounce_next_hop`
    /// is unset). Default 25.
    pub mx_port: Option<u16>,
    /// A DSN that cannot be delivered is never bounced; it is logged and
    /// counted, and also sent here when set (e.g. "postmaster@example.com").
    /// Default: unset.
    pub double_bounce_to: Option<String>,
    /// Per recipient domain next hops (Postfix `transport_maps`):
    /// `"example.org" = "lmtp:/run/dovecot/lmtp"` or a table
    /// `{ next_hop = "...", tls = "...", tls_ca_file = "...", forward_client = "..." }`.
    /// `"*.example.org"` matches subdomains. Default: none (all to `next_hop`).
    #[serde(default)]
    pub routes: BTreeMap<String, RawRoute>,
}

/// One `[relay.routes]` entry: a next-hop URL, or a table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawRoute {
    Url(String),
    Table(RawRouteTable),
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteTable {
    /// Required.
    pub next_hop: Option<String>,
    /// Default: `relay.tls`.
    pub tls: Option<String>,
    /// Default: `relay.tls_ca_file`.
    pub tls_ca_file: Option<String>,
    /// Default: `relay.forward_client`.
    pub forward_client: Option<String>,
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

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Spool directory. Default "/var/spool/sluice".
    pub dir: Option<String>,
    /// fsync before 250. Turning this off loses mail on power failure. Default true.
    pub fsync: Option<bool>,
    /// Size at which a spool segment file is closed and a new one started. Default 67108864.
    pub segment_size: Option<u64>,
    /// Free bytes the spool's file system must keep (Postfix's
    /// `queue_minfree`): below it, MAIL (also when SIZE would not fit one
    /// and a half times) and DATA get 452 4.3.1. 0 turns it off.
    /// Default 67108864.
    pub min_free: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// "error", "warn", "info", "debug" or "trace" (RUST_LOG overrides). Default "info".
    pub level: Option<String>,
    /// "text" or "json". Default "text".
    pub format: Option<String>,
    /// Where the event log (one JSON line per decision) goes: "log" (the
    /// human log above, target `sluice::event`), "stdout", or a file path
    /// (appended; reopened on SIGUSR1 for logrotate). Default "log".
    pub events: Option<String>,
}

/// The metrics listener: `/metrics` (Prometheus), `/healthz`, `/readyz`,
/// the status page `/` and `/api/status`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Default true.
    pub enabled: Option<bool>,
    /// Address to listen on; keep it private. Default "127.0.0.1:9425".
    pub listen: Option<String>,
    /// How long `/readyz` waits for each probe (next hop, clamd). Default "2s".
    pub probe_timeout: Option<String>,
}

/// Spam scoring: rules, the statistical classifier, SPF/DKIM/DMARC, and
/// what to do at which score.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpam {
    /// Score messages at all. Default true.
    pub enabled: Option<bool>,
    /// Load the default rules compiled into sluice. Default true.
    pub builtin_rules: Option<bool>,
    /// A directory of local `*.rules` files, loaded after the built-in
    /// ones (they can add rules and re-score built-in ones). Default none.
    pub rules_dir: Option<String>,
    /// The classifier's model written by `sluice learn`. Default none.
    pub bayes_model: Option<String>,
    /// SPF, DKIM and DMARC checks, with an Authentication-Results header.
    /// Default true.
    pub auth: Option<bool>,
    /// Time for all authentication lookups of one message. Default "5s".
    pub auth_timeout: Option<String>,
    /// Larger messages are not scored. Default 2097152.
    pub max_size: Option<u64>,
    /// Octets of each text part that body rules read (as SpamAssassin's
    /// body_part_scan_size). Default 50000.
    pub part_scan_size: Option<u64>,
    /// How often rule and model files are checked for changes. Default "5s".
    pub reload_interval: Option<String>,
    /// Score thresholds: a number, or "off". Defaults: tag 5, reject 10,
    /// quarantine and tempfail off.
    pub tag: Option<RawThreshold>,
    pub quarantine: Option<RawThreshold>,
    pub tempfail: Option<RawThreshold>,
    pub reject: Option<RawThreshold>,
    /// Put in front of the Subject of tagged mail, e.g. `"[SPAM]"`. Default none.
    pub subject_prefix: Option<String>,
    /// Per recipient domain: the same threshold keys; unset ones inherit.
    pub domains: Option<BTreeMap<String, RawSpamDomain>>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpamDomain {
    pub tag: Option<RawThreshold>,
    pub quarantine: Option<RawThreshold>,
    pub tempfail: Option<RawThreshold>,
    pub reject: Option<RawThreshold>,
    pub subject_prefix: Option<String>,
}

/// A score, or a word ("off").
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawThreshold {
    Score(f64),
    Word(String),
}

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
