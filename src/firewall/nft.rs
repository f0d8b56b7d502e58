//! The nftables exporter's batches: sluice owns one table with two sets
//! (`flags timeout, interval`), one per address family, and a chain that
//! drops traffic from them;
//! each element carries its kernel timeout, so a ban ends in the kernel
//! even if sluice is gone. Changes are written as one `nft -f -` batch per
//! flush (one transaction), never one process per ban.
//!
//! This module builds the batch text; `firewall::service` runs `nft`.

use std::fmt::Write as _;

use ipnet::IpNet;

/// Names of what sluice owns in the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftNames {
    /// `inet` table, e.g. "sluice".
    pub table: String,
    pub set_v4: String,
    pub set_v6: String,
}

impl Default for NftNames {
    fn default() -> Self {
        NftNames {
            table: "sluice".into(),
            set_v4: "banned_v4".into(),
            set_v6: "banned_v6".into(),
        }
    }
}

/// One element to add: a network and the seconds left of its ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub net: IpNet,
    pub timeout_secs: u64,
}

impl NftNames {
    fn set_of(&self, net: &IpNet) -> &str {
        match net {
            IpNet::V4(_) => &self.set_v4,
            IpNet::V6(_) => &self.set_v6,
        }
    }

    /// The whole table, from scratch, as one transaction: the two sets and
    /// an input chain that drops every packet from a banned address. Any
    /// earlier state of the table (sets flushed by hand, rules edited) is
    /// replaced: `add table` + `delete table` first, so it works whether
    /// or not the table exists.
    pub fn create(&self) -> String {
        let t = &self.table;
        format!(
            "add table inet {t}\n\
             delete table inet {t}\n\
             add table inet {t}\n\
             add set inet {t} {v4} {{ type ipv4_addr; flags timeout, interval; }}\n\
             add set inet {t} {v6} {{ type ipv6_addr; flags timeout, interval; }}\n\
             add chain inet {t} input {{ type filter hook input priority -10; policy accept; }}\n\
             add rule inet {t} input ip saddr @{v4} drop\n\
             add rule inet {t} input ip6 saddr @{v6} drop\n",
            v4 = self.set_v4,
            v6 = self.set_v6,
        )
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
                net.trunc()
            );
        }
        for family in [true, false] {
            let items: Vec<String> = add
                .iter()
                .filter(|e| e.timeout_secs > 0 && matches!(e.net, IpNet::V4(_)) == family)
                .map(|e| format!("{} timeout {}s", e.net.trunc(), e.timeout_secs))
                .collect();
            if items.is_empty() {
                continue;
            }
            let set = if family { &self.set_v4 } else { &self.set_v6 };
            // Chunks keep each line reasonable for 100,000 elements.
            for chunk in items.chunks(1000) {
                let _ = writeln!(out, "add element inet {t} {set} {{ {} }}", chunk.join(", "));
            }
        }
        out
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
        let c = NftNames::default().create();
        assert!(c.starts_with("add table inet sluice\ndelete table inet sluice\nadd table inet sluice\n"));
        assert!(c.contains("add set inet sluice banned_v4 { type ipv4_addr; flags timeout, interval; }"));
        assert!(c.contains("add set inet sluice banned_v6 { type ipv6_addr; flags timeout, interval; }"));
        assert!(c.ends_with("add rule inet sluice input ip6 saddr @banned_v6 drop\n"));
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
            "delete element inet sluice banned_v4 { 203.0.113.5/32 }\n\
             add element inet sluice banned_v4 { 192.0.2.7/32 timeout 3600s, 198.51.100.0/24 timeout 10s }\n\
             add element inet sluice banned_v6 { 2001:db8::1/128 timeout 60s }\n"
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
