//! Where accepted mail goes and waits: `[relay]` (with its routes) and `[spool]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
