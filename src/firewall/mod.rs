//! The adaptive firewall (issue 7, being built): [`engine`] turns the
//! offences in sluice's own events into bans with windows, escalation,
//! an allowlist and prefix aggregation; [`nft`] writes the nftables
//! batches (one transaction per flush, kernel timeouts). Not wired yet: the
//! store, running the exporters (nftables, iptables+ipset, file), the
//! listener's own refusal and the `sluice bans` control socket come next.

pub mod control;
pub mod engine;
pub mod ipset;
pub mod nft;
pub mod service;
