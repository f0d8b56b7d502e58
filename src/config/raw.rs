//! `RawConfig`: the TOML file as written, field by field, with defaults.
//!
//! Every field is documented with its default; `deploy/sluice.example.toml`
//! mirrors this file. Unknown keys are refused (`deny_unknown_fields`).
//! Turning this into the typed [`super::Config`] happens in `validate()`.
//! The sections' structs live in the submodules, by subject, and are
//! re-exported here.

use serde::{Deserialize, Serialize};

mod content;
mod firewall;
mod integration;
mod policy;
mod relay;
mod server;

pub use content::{RawClamd, RawScan, RawSpam, RawSpamDomain, RawThreshold};
pub use firewall::{RawBanRule, RawFirewall};
pub use integration::{RawCluster, RawMilter, RawPolicyServer};
pub use policy::{RawCallAhead, RawDns, RawDnsbl, RawGreylist, RawHelo, RawLimits, RawPolicy, RawRecipients};
pub use relay::{RawRelay, RawRoute, RawRouteTable, RawSpool};
pub use server::{RawListen, RawListenTable, RawLog, RawMetrics, RawServer, RawStress, RawTimeouts, RawTls};

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
