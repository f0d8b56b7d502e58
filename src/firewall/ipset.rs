//! The iptables + ipset exporter's scripts: two `hash:net` sets (IPv4 and
//! IPv6) with per-element timeouts (`timeout 0` on the set enables them),
//! filled through one `ipset restore` per flush, and one DROP rule per
//! family in INPUT that matches them.

use std::fmt::Write as _;

use ipnet::IpNet;

use super::export::{ExportError, Exporter, run_with_stdin, succeeds};
use super::nft::Element;

pub use crate::config::firewall::IpsetNames;

impl IpsetNames {
    fn set_of(&self, net: &IpNet) -> &str {
        match net {
            IpNet::V4(_) => &self.set_v4,
            IpNet::V6(_) => &self.set_v6,
        }
    }

    /// `ipset restore` input that creates both sets if missing and empties
    /// them: the start of a full reconcile.
    pub fn create(&self) -> String {
        format!(
            "create {v4} hash:net family inet timeout 0 maxelem 1048576 -exist\n\
             create {v6} hash:net family inet6 timeout 0 maxelem 1048576 -exist\n\
             flush {v4}\nflush {v6}\n",
            v4 = self.set_v4,
            v6 = self.set_v6
        )
    }

    /// `ipset restore` input for a change: deletions, then additions with
    /// their timeouts (`-exist`: re-adding refreshes the timeout).
    pub fn batch(&self, add: &[Element], del: &[IpNet]) -> String {
        let mut out = String::new();
        for net in del {
            let _ = writeln!(out, "del {} {} -exist", self.set_of(net), net.trunc());
        }
        for e in add.iter().filter(|e| e.timeout_secs > 0) {
            let _ = writeln!(
                out,
                "add {} {} timeout {} -exist",
                self.set_of(&e.net),
                e.net.trunc(),
                e.timeout_secs.min(2_147_483)
            );
        }
        out
    }

    /// The iptables commands (program, arguments) of the DROP rules.
    pub fn rules(&self) -> [(&'static str, Vec<String>); 2] {
        let rule = |set: &str| -> Vec<String> {
            ["INPUT", "-m", "set", "--match-set", set, "src", "-j", "DROP"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        [("iptables", rule(&self.set_v4)), ("ip6tables", rule(&self.set_v6))]
    }
}

// === the exporter ===

/// `ipset restore` scripts and iptables DROP rules (see [`super::ipset`]).
pub struct IpsetExporter {
    pub names: IpsetNames,
}

impl Exporter for IpsetExporter {
    fn apply(&self, add: &[Element], del: &[IpNet]) -> Result<(), ExportError> {
        let script = self.names.batch(add, del);
        if script.is_empty() {
            Ok(())
        } else {
            run_with_stdin("ipset", &["restore"], &script)
        }
    }

    fn reconcile(&self, all: &[Element]) -> Result<(), ExportError> {
        let mut script = self.names.create();
        script.push_str(&self.names.batch(all, &[]));
        run_with_stdin("ipset", &["restore"], &script)?;
        for (program, rule) in self.names.rules() {
            let check: Vec<String> = std::iter::once("-C".to_string()).chain(rule.iter().cloned()).collect();
            if !succeeds(program, &check) {
                let insert: Vec<String> = std::iter::once("-I".to_string()).chain(rule).collect();
                if !succeeds(program, &insert) {
                    return Err(ExportError::Rule {
                        program,
                        rule: insert.join(" "),
                    });
                }
            }
        }
        Ok(())
    }

    fn intact(&self) -> bool {
        self.names.rules().into_iter().all(|(program, rule)| {
            let check: Vec<String> = std::iter::once("-C".to_string()).chain(rule).collect();
            succeeds(program, &check)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_for_both_families() {
        let n = IpsetNames::new("sluice");
        assert!(
            n.create()
                .starts_with("create sluice_v4 hash:net family inet timeout 0 maxelem 1048576 -exist\n")
        );
        assert!(n.create().contains("create sluice_v6 hash:net family inet6"));
        let el = |s: &str, t| Element {
            net: s.parse().unwrap(),
            timeout_secs: t,
        };
        assert_eq!(
            n.batch(
                &[el("192.0.2.7/32", 60), el("2001:db8::/64", 30), el("192.0.2.8/32", 0)],
                &["198.51.100.0/24".parse().unwrap()]
            ),
            "del sluice_v4 198.51.100.0/24 -exist\n\
             add sluice_v4 192.0.2.7/32 timeout 60 -exist\n\
             add sluice_v6 2001:db8::/64 timeout 30 -exist\n"
        );
        let [(v4, a4), (v6, _)] = n.rules();
        assert_eq!((v4, v6), ("iptables", "ip6tables"));
        assert_eq!(a4.join(" "), "INPUT -m set --match-set sluice_v4 src -j DROP");
    }
}
