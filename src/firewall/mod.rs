//! The adaptive firewall: [`engine`] turns the offences in sluice's own
//! events into bans with windows, escalation, an allowlist and prefix
//! aggregation; [`service`] runs it on the event bus, persists the bans and
//! drives the [`export::Exporter`]s ([`nft`]: one transaction per flush
//! with kernel timeouts; [`ipset`]: iptables + ipset; [`files`]: plain
//! files); [`kernel`] removes what an exporter not in use left in the
//! kernel; [`control`] is the
//! `sluice bans` socket; [`postfix_log`] reads a Postfix mail log into the
//! same engine (`sluice bans import-postfix-log`).

pub mod cluster;
pub mod control;
pub mod engine;
pub mod export;
pub mod files;
pub mod ipset;
pub mod kernel;
pub mod nft;
pub mod postfix_log;
pub mod service;
