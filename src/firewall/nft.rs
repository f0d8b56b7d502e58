//! The nftables exporter's batches: sluice owns one table with, per address
//! family, a set of banned hosts (`flags timeout`, a hash: adding one
//! element costs a few ms however many there are) and a set of banned
//! networks (`flags timeout, interval`; nft reads an interval set's
//! elements back to check overlaps, so one addition to a 100,000-element
//! interval set took ~1 s), and a chain that drops traffic from all four;
//! each element carries its kernel timeout, so a ban ends in the kernel
//! even if sluice is gone. The chain drops all traffic from a banned
//! address, or only TCP to `firewall.ports` when they are given. Changes are written as one `nft -f -` batch per
//! flush (one transaction), never one process per ban.
//!
//! This module builds the batch text; `firewall::service` runs `nft`.

use std::fmt::Write as _;

use ipnet::IpNet;

use super::export::{ExportError, Exporter, run_with_stdin};

pub use crate::config::firewall::NftNames;

/// Elements a host set may hold.
const HOST_SET_SIZE: u32 = 1 << 20;

/// One element to add: a network and the seconds left of its ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub net: IpNet,
    pub timeout_secs: u64,
}

impl NftNames {
    fn set_of(&self, net: &IpNet) -> &str {
        let host = net.prefix_len() == net.max_prefix_len();
        match (net, host) {
            (IpNet::V4(_), true) => &self.set_v4,
            (IpNet::V6(_), true) => &self.set_v6,
            (IpNet::V4(_), false) => &self.nets_v4,
            (IpNet::V6(_), false) => &self.nets_v6,
        }
    }

    /// The whole table, from scratch, as one transaction: the two sets and
    /// an input chain that drops every packet from a banned address (only
    /// TCP to `ports`, when there are any). Any earlier state of the table
    /// (sets flushed by hand, rules edited) is replaced: `add table` +
    /// `delete table` first, so it works whether or not the table exists.
    pub fn create(&self, ports: &[u16]) -> String {
        let t = &self.table;
        let mut out = format!("add table inet {t}\ndelete table inet {t}\nadd table inet {t}\n");
        for (set, ty) in [(&self.set_v4, "ipv4_addr"), (&self.set_v6, "ipv6_addr")] {
            let _ = writeln!(
                out,
                "add set inet {t} {set} {{ type {ty}; flags timeout; size {HOST_SET_SIZE}; }}"
            );
        }
        for (set, ty) in [(&self.nets_v4, "ipv4_addr"), (&self.nets_v6, "ipv6_addr")] {
            let _ = writeln!(out, "add set inet {t} {set} {{ type {ty}; flags timeout, interval; }}");
        }
        let _ = writeln!(
            out,
            "add chain inet {t} input {{ type filter hook input priority -10; policy accept; }}"
        );
        let dport = if ports.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!(" tcp dport {{ {} }}", list.join(", "))
        };
        for (family, set) in [
            ("ip", &self.set_v4),
            ("ip6", &self.set_v6),
            ("ip", &self.nets_v4),
            ("ip6", &self.nets_v6),
        ] {
            let _ = writeln!(out, "add rule inet {t} input {family} saddr @{set}{dport} drop");
        }
        out
    }

    /// Removes the table (sets, chain, rules): whether there was one.
    pub fn remove(&self) -> Result<bool, ExportError> {
        match run_with_stdin("nft", &["-f", "-"], &format!("delete table inet {}\n", self.table)) {
            Ok(()) => Ok(true),
            Err(e) if e.is_absent() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One transaction: deletions, then additions with their timeouts.
    /// Elements whose ban is over (timeout 0) are left out.
    pub fn batch(&self, add: &[Element], del: &[IpNet]) -> String {
        let mut out = String::new();
        let t = &self.table;
        for net in del {
            let _ = writeln!(
                out,
                "delete element inet {t} {} {{ {} }}",
                self.set_of(net),
                element(net)
            );
        }
        let mut by_set: Vec<(&str, Vec<String>)> = Vec::new();
        for e in add.iter().filter(|e| e.timeout_secs > 0) {
            let set = self.set_of(&e.net);
            let item = format!("{} timeout {}s", element(&e.net), e.timeout_secs);
            match by_set.iter_mut().find(|(s, _)| *s == set) {
                Some((_, items)) => items.push(item),
                None => by_set.push((set, vec![item])),
            }
        }
        for (set, items) in by_set {
            // Chunks keep each line reasonable for 100,000 elements.
            for chunk in items.chunks(1000) {
                let _ = writeln!(out, "add element inet {t} {set} {{ {} }}", chunk.join(", "));
            }
        }
        out
    }
}

/// How an element is written: a host set takes the bare address, an
/// interval set the prefix.
fn element(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.trunc().to_string()
    }
}

// === the exporter ===

/// `nft -f -` batches (see [`super::nft`]).
pub struct NftExporter {
    pub names: NftNames,
    /// The TCP ports dropped; empty = all traffic.
    pub ports: Vec<u16>,
}

impl NftExporter {
    fn run(&self, script: &str) -> Result<(), ExportError> {
        run_with_stdin("nft", &["-f", "-"], script)
    }
}

impl Exporter for NftExporter {
    fn name(&self) -> &'static str {
        "nft"
    }

    fn apply(&self, add: &[Element], del: &[IpNet]) -> Result<(), ExportError> {
        let batch = self.names.batch(add, del);
        if batch.is_empty() { Ok(()) } else { self.run(&batch) }
    }

    fn reconcile(&self, all: &[Element]) -> Result<(), ExportError> {
        let mut script = self.names.create(&self.ports);
        script.push_str(&self.names.batch(all, &[]));
        self.run(&script)
    }

    /// The table with its four sets and its input chain, listed without
    /// set elements or rules (`nft -t list sets; list chains`): a few
    /// milliseconds with 100,000 bans, where listing the table or the
    /// chain's rules dumps every element (0.7 s). A ruleset flush or a
    /// reload by another tool removes the table, which this sees; a rule
    /// deleted by hand inside our chain it does not.
    fn intact(&self) -> bool {
        use std::io::Write as _;
        let child = std::process::Command::new("nft")
            .args(["-t", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(mut child) = child else { return false };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"list sets inet\nlist chains inet\n");
        }
        let Ok(out) = child.wait_with_output() else {
            return false;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let n = &self.names;
        out.status.success()
            && text.contains(&format!("table inet {} {{", n.table))
            && [&n.set_v4, &n.set_v6, &n.nets_v4, &n.nets_v6]
                .iter()
                .all(|set| text.contains(&format!("set {set} {{")))
            && text.contains("chain input {")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(net: &str, timeout_secs: u64) -> Element {
        Element {
            net: net.parse().unwrap(),
            timeout_secs,
        }
    }

    #[test]
    fn create_replaces_the_table_with_sets_and_a_drop_chain() {
        let c = NftNames::default().create(&[]);
        assert!(c.starts_with("add table inet sluice\ndelete table inet sluice\nadd table inet sluice\n"));
        assert!(c.contains("add set inet sluice banned_v4 { type ipv4_addr; flags timeout; size 1048576; }"));
        assert!(c.contains("add set inet sluice banned_v6 { type ipv6_addr; flags timeout; size 1048576; }"));
        assert!(c.contains("add set inet sluice banned_nets_v4 { type ipv4_addr; flags timeout, interval; }"));
        assert!(c.contains("add set inet sluice banned_nets_v6 { type ipv6_addr; flags timeout, interval; }"));
        assert_eq!(c.matches(" drop\n").count(), 4);
        assert!(c.ends_with("add rule inet sluice input ip6 saddr @banned_nets_v6 drop\n"));
    }

    #[test]
    fn with_ports_the_chain_drops_only_tcp_to_them() {
        let c = NftNames::default().create(&[25, 465, 587]);
        assert!(c.contains("add rule inet sluice input ip saddr @banned_v4 tcp dport { 25, 465, 587 } drop\n"));
        assert!(c.contains("add rule inet sluice input ip6 saddr @banned_nets_v6 tcp dport { 25, 465, 587 } drop\n"));
        assert_eq!(c.matches(" tcp dport { 25, 465, 587 } drop\n").count(), 4);
    }

    #[test]
    fn one_batch_deletes_then_adds_with_kernel_timeouts() {
        let n = NftNames::default();
        let b = n.batch(
            &[
                el("192.0.2.7/32", 3600),
                el("2001:db8::1/128", 60),
                el("198.51.100.9/24", 10),
                el("192.0.2.8/32", 0),
            ],
            &["203.0.113.5/32".parse().unwrap()],
        );
        assert_eq!(
            b,
            "delete element inet sluice banned_v4 { 203.0.113.5 }\n\
             add element inet sluice banned_v4 { 192.0.2.7 timeout 3600s }\n\
             add element inet sluice banned_v6 { 2001:db8::1 timeout 60s }\n\
             add element inet sluice banned_nets_v4 { 198.51.100.0/24 timeout 10s }\n"
        );
        assert_eq!(n.batch(&[], &[]), "");
    }

    #[test]
    fn large_batches_are_split_into_lines_of_1000() {
        let add: Vec<Element> = (0..2500u32)
            .map(|i| Element {
                net: IpNet::from(std::net::IpAddr::from((0x0a00_0000 + i).to_be_bytes())),
                timeout_secs: 5,
            })
            .collect();
        let b = NftNames::default().batch(&add, &[]);
        assert_eq!(b.lines().count(), 3);
        assert_eq!(b.matches("timeout 5s").count(), 2500);
    }
}
