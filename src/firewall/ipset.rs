//! The iptables + ipset exporter's scripts: two `hash:net` sets (IPv4 and
//! IPv6) with per-element timeouts (`timeout 0` on the set enables them),
//! filled through one `ipset restore` per flush, and one DROP rule per
//! family in INPUT that matches them (all traffic from a banned address,
//! or only TCP to `firewall.ports`).

use std::fmt::Write as _;

use ipnet::IpNet;

use super::export::{ExportError, Exporter, output, run_with_stdin, succeeds};
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

    /// The iptables commands (program, set, arguments) of the DROP rules,
    /// as `iptables -S` prints them (after `-A`): all traffic, or TCP to
    /// `ports` (multiport).
    pub fn rules(&self, ports: &[u16]) -> [(&'static str, &str, Vec<String>); 2] {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let list = list.join(",");
        let rule = |set: &str| -> Vec<String> {
            let mut r = vec!["INPUT"];
            if !ports.is_empty() {
                r.extend(["-p", "tcp", "-m", "multiport", "--dports", &list]);
            }
            r.extend(["-m", "set", "--match-set", set, "src", "-j", "DROP"]);
            r.into_iter().map(str::to_string).collect()
        };
        [
            ("iptables", &self.set_v4, rule(&self.set_v4)),
            ("ip6tables", &self.set_v6, rule(&self.set_v6)),
        ]
    }

    /// Removes every INPUT rule matching the sets, then the sets: whether
    /// there was anything. (A rule cannot name a set that does not exist:
    /// without the sets there is nothing to look for.) A program not
    /// installed has nothing of ours.
    pub fn remove(&self) -> Result<bool, ExportError> {
        let not_installed = |e: &ExportError| matches!(e, ExportError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
        let sets = match output("ipset", &["list".into(), "-n".into()]) {
            Ok(s) => s,
            Err(e) if not_installed(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        let ours: Vec<&String> = [&self.set_v4, &self.set_v6]
            .into_iter()
            .filter(|set| sets.lines().any(|l| l.trim() == set.as_str()))
            .collect();
        if ours.is_empty() {
            return Ok(false);
        }
        for (program, set, _) in self.rules(&[]) {
            let rules = match rules_with_set(program, set) {
                Ok(r) => r,
                Err(e) if not_installed(&e) => continue,
                Err(e) => return Err(e),
            };
            for rule in rules {
                delete_rule(program, rule)?;
            }
        }
        for set in ours {
            output("ipset", &["destroy".into(), set.clone()])?;
        }
        Ok(true)
    }
}

/// The INPUT rules that match `set` as source, as `iptables -S INPUT`
/// prints them, without the leading `-A`.
fn rules_with_set(program: &'static str, set: &str) -> Result<Vec<Vec<String>>, ExportError> {
    let listing = output(program, &["-S".into(), "INPUT".into()])?;
    let needle = format!(" --match-set {set} src ");
    Ok(listing
        .lines()
        .filter(|l| format!("{l} ").contains(&needle))
        .filter_map(|l| l.strip_prefix("-A "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect())
}

fn delete_rule(program: &'static str, rule: Vec<String>) -> Result<(), ExportError> {
    let args: Vec<String> = std::iter::once("-D".to_string()).chain(rule).collect();
    output(program, &args).map(drop)
}

// === the exporter ===

/// `ipset restore` scripts and iptables DROP rules (see [`super::ipset`]).
pub struct IpsetExporter {
    pub names: IpsetNames,
    /// The TCP ports dropped; empty = all traffic.
    pub ports: Vec<u16>,
}

impl Exporter for IpsetExporter {
    fn name(&self) -> &'static str {
        "ipset"
    }

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
        if let Err(e) = run_with_stdin("ipset", &["restore"], &script) {
            if !e.to_string().contains("set with the same name already exists") {
                return Err(e);
            }
            // Made with other parameters (by hand, by an older sluice):
            // replaced, with the rules on them.
            self.names.remove()?;
            run_with_stdin("ipset", &["restore"], &script)?;
        }
        // Our rule once, first in INPUT; any other rule on our sets (other
        // ports, from an earlier configuration) goes.
        for (program, set, rule) in self.names.rules(&self.ports) {
            let mut present = false;
            for old in rules_with_set(program, set)? {
                if old == rule && !present {
                    present = true;
                } else {
                    delete_rule(program, old)?;
                }
            }
            if !present {
                let insert: Vec<String> = std::iter::once("-I".to_string()).chain(rule).collect();
                output(program, &insert)?;
            }
        }
        Ok(())
    }

    fn intact(&self) -> bool {
        self.names.rules(&self.ports).into_iter().all(|(program, _, rule)| {
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
        let [(v4, s4, a4), (v6, s6, _)] = n.rules(&[]);
        assert_eq!((v4, s4, v6, s6), ("iptables", "sluice_v4", "ip6tables", "sluice_v6"));
        assert_eq!(a4.join(" "), "INPUT -m set --match-set sluice_v4 src -j DROP");
        let [_, (_, _, a6)] = n.rules(&[25, 465, 587]);
        assert_eq!(
            a6.join(" "),
            "INPUT -p tcp -m multiport --dports 25,465,587 -m set --match-set sluice_v6 src -j DROP"
        );
    }
}
