//! What sluice owns in the kernel, removed when it is not in use: the
//! nftables table of `exporter = "nft"`, the ipsets and iptables rules of
//! `exporter = "ipset"`. A start removes the ones the configuration does
//! not use (switching the exporter, or turning the firewall off, leaves
//! nothing behind); `sluice bans flush-kernel` removes them all by hand.

use super::export::ExportError;
use crate::config::firewall::{KernelExporter, KernelNames};

/// What was removed, as the admin would name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    NftTable(String),
    Ipsets(String, String),
}

impl std::fmt::Display for Removed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Removed::NftTable(t) => write!(f, "nftables table inet {t}"),
            Removed::Ipsets(v4, v6) => write!(f, "ipsets {v4}/{v6} and their iptables/ip6tables rules"),
        }
    }
}

/// Removes the nft table (unless `keep` is nft) and the ipsets with their
/// rules (unless `keep` is ipset): what was removed, and what could not be
/// (with why).
pub fn remove(names: &KernelNames, keep: Option<KernelExporter>) -> (Vec<Removed>, Vec<(KernelExporter, ExportError)>) {
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    if keep != Some(KernelExporter::Nft) {
        match names.nft.remove() {
            Ok(true) => removed.push(Removed::NftTable(names.nft.table.clone())),
            Ok(false) => {}
            Err(e) => failed.push((KernelExporter::Nft, e)),
        }
    }
    if keep != Some(KernelExporter::Ipset) {
        match names.ipset.remove() {
            Ok(true) => removed.push(Removed::Ipsets(names.ipset.set_v4.clone(), names.ipset.set_v6.clone())),
            Ok(false) => {}
            Err(e) => failed.push((KernelExporter::Ipset, e)),
        }
    }
    (removed, failed)
}

/// At start: removes what the configuration does not use, best effort.
/// Quiet when nothing is there, or when it cannot look (no
/// `CAP_NET_ADMIN`, the program not installed: a debug line); one line
/// for what it removed.
pub fn remove_unused(names: &KernelNames, in_use: Option<KernelExporter>) -> Vec<Removed> {
    let (removed, failed) = remove(names, in_use);
    for r in &removed {
        let now = in_use.map_or("none", KernelExporter::as_str);
        tracing::info!("firewall: removed {r}, left from an earlier configuration (firewall.exporter is now {now})");
    }
    for (what, e) in failed {
        tracing::debug!(exporter = what.as_str(), error = %e, "firewall: could not look for leftovers");
    }
    removed
}
