//! The optional sections that tie sluice to other systems: `[cluster]`
//! (shared state), `[policy_server]` and `[milter]` (Postfix).

use serde::{Deserialize, Serialize};

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
