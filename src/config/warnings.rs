//! Settings that are each valid but contradict one another: a spam `tag`
//! threshold at or above `reject` (nothing is ever tagged), thresholds for
//! a domain sluice does not accept mail for, a DNS-list threshold no
//! client can reach... `sluice check-config` prints them (exit 0, or 64
//! with `--strict`) and `serve` logs them at start.

use std::net::{IpAddr, SocketAddr};

use super::spam::Thresholds;
use super::{Config, NextHop};

/// A contradiction in a valid configuration, with the dotted key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct Warning {
    pub key: String,
    pub problem: String,
}

impl Warning {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Warning {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Every contradiction found, in the order of the file's sections.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut w = Vec::new();
        self.warn_proxy(&mut w);
        self.warn_next_hop_loop(&mut w);
        self.warn_retry(&mut w);
        self.warn_dnsbl(&mut w);
        self.warn_allowlist(&mut w);
        self.warn_tarpit(&mut w);
        self.warn_clamd(&mut w);
        self.warn_spam(&mut w);
        self.warn_firewall(&mut w);
        self.warn_policy_server(&mut w);
        w
    }

    /// The policy protocol has no authentication: whoever reaches the
    /// listener may ask which recipients exist and feed greylisting.
    fn warn_policy_server(&self, w: &mut Vec<Warning>) {
        let Some(p) = &self.policy_server else { return };
        for addr in p.listen.iter().filter(|a| !a.ip().is_loopback()) {
            w.push(Warning::new(
                "policy_server.listen",
                format!(
                    "{addr} is not a loopback address: the policy protocol has no authentication, so whoever \
                     reaches it may ask which recipients exist (firewall it to your Postfix hosts)"
                ),
            ));
        }
    }

    /// `firewall.ports` limits the kernel's drop; without a kernel
    /// exporter there is none.
    fn warn_firewall(&self, w: &mut Vec<Warning>) {
        if let Some(fw) = &self.firewall
            && !fw.ports.is_empty()
            && fw.kernel_exporter().is_none()
        {
            w.push(Warning::new(
                "firewall.ports",
                "limits the kernel's drop, but firewall.exporter is \"none\": sluice refuses banned clients on \
                 every listener, and nothing is dropped in the kernel",
            ));
        }
    }

    /// Load balancers listed, but no listener takes the PROXY protocol.
    fn warn_proxy(&self, w: &mut Vec<Warning>) {
        if !self.server.proxy_from.is_empty() && !self.server.listen.iter().any(|l| l.proxy_protocol) {
            w.push(Warning::new(
                "server.proxy_from",
                "no listener has proxy_protocol = true: the load balancers listed here are not used \
                 (mark one with { address = \"IP:port\", proxy_protocol = true } in server.listen)",
            ));
        }
    }

    /// The next hop is one of our own listeners: every message loops.
    fn warn_next_hop_loop(&self, w: &mut Vec<Warning>) {
        let NextHop::Smtp { host, port } = &self.relay.next_hop else {
            return;
        };
        let Ok(ip) = host.parse::<IpAddr>() else { return };
        let ours = |l: &SocketAddr| {
            l.port() == *port
                && (l.ip() == ip || (l.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        };
        if let Some(l) = self.server.listen.iter().map(|l| l.addr).find(|l| ours(l)) {
            w.push(Warning::new(
                "relay.next_hop",
                format!(
                    "{} is sluice's own listener {l} (server.listen): accepted mail would loop back to sluice",
                    self.relay.next_hop
                ),
            ));
        }
    }

    /// The first retry comes after mail is already bounced.
    fn warn_retry(&self, w: &mut Vec<Warning>) {
        let r = &self.relay;
        if r.retry_initial >= r.max_queue_age {
            w.push(Warning::new(
                "relay.max_queue_age",
                format!(
                    "{} is not longer than relay.retry_initial ({}): mail that is deferred once is bounced without a retry",
                    humantime::format_duration(r.max_queue_age),
                    humantime::format_duration(r.retry_initial)
                ),
            ));
        }
    }

    /// The lists and HELO weights together cannot reach the threshold.
    fn warn_dnsbl(&self, w: &mut Vec<Warning>) {
        let b = &self.dnsbl;
        let helo = [
            self.helo.bare_ip,
            self.helo.non_fqdn,
            self.helo.our_name,
            self.helo.fcrdns,
        ];
        let helo_weights = helo.iter().filter_map(|a| match a {
            super::helo::Action::Score(n) => Some(i64::from(*n)),
            _ => None,
        });
        let weights: Vec<i64> = b
            .zones
            .iter()
            .chain(&b.domain_zones)
            .map(|z| i64::from(z.weight))
            .chain(helo_weights)
            .collect();
        if weights.is_empty() {
            return;
        }
        let reachable: i64 = weights.iter().filter(|&&n| n > 0).sum();
        if reachable < i64::from(b.threshold) {
            w.push(Warning::new(
                "dnsbl.threshold",
                format!(
                    "{} is more than all positive weights together ({reachable}: dnsbl.zones, dnsbl.domain_zones and helo weights): no client is ever refused",
                    b.threshold
                ),
            ));
        }
    }

    /// Allowlisted clients skip greylisting and the DNS lists; an
    /// allowlist of every address turns them off.
    fn warn_allowlist(&self, w: &mut Vec<Warning>) {
        let all = |v4: bool| {
            self.policy
                .allowlist
                .iter()
                .any(|n| n.prefix_len() == 0 && matches!(n, ipnet::IpNet::V4(_)) == v4)
        };
        if !(all(true) && all(false)) {
            return;
        }
        let mut skipped = Vec::new();
        if self.greylist.is_some() {
            skipped.push("greylisting ([greylist] enabled)");
        }
        if !self.dnsbl.zones.is_empty() || !self.dnsbl.domain_zones.is_empty() {
            skipped.push("the DNS lists (dnsbl.zones)");
        }
        if !skipped.is_empty() {
            w.push(Warning::new(
                "policy.allowlist",
                format!(
                    "covers every address (0.0.0.0/0 and ::/0), so {} never {}",
                    skipped.join(" and "),
                    if skipped.len() == 1 { "applies" } else { "apply" }
                ),
            ));
        }
    }

    /// The session is closed before the tarpit would start.
    fn warn_tarpit(&self, w: &mut Vec<Warning>) {
        let after = self.limits.tarpit_after_errors;
        if after > 0 && after >= self.server.max_errors {
            w.push(Warning::new(
                "limits.tarpit_after_errors",
                format!(
                    "{after} is not below server.max_errors ({}): the session is closed before the tarpit starts",
                    self.server.max_errors
                ),
            ));
        }
    }

    /// Messages clamd refuses are accepted by SIZE, then fail the scan.
    fn warn_clamd(&self, w: &mut Vec<Warning>) {
        let Some(c) = &self.clamd else { return };
        if c.max_size < self.server.max_message_size {
            w.push(Warning::new(
                "clamd.max_size",
                format!(
                    "{} is below server.max_message_size ({}): larger messages are accepted, then their virus scan fails (scan.on_failure)",
                    c.max_size, self.server.max_message_size
                ),
            ));
        }
    }

    fn warn_spam(&self, w: &mut Vec<Warning>) {
        let Some(spam) = &self.spam else { return };
        order(w, "spam.", &spam.default);
        let mut domains: Vec<_> = spam.domains.iter().collect();
        domains.sort_by(|a, b| a.0.cmp(b.0));
        for (name, th) in domains {
            let key = format!("spam.domains.{name:?}");
            let local = self.recipients.domains.iter().any(|d| d.eq_ignore_ascii_case(name));
            if !local {
                w.push(Warning::new(
                    key.clone(),
                    format!(
                        "{name} is not in recipients.domains: its mail is refused (554 5.7.1) before any spam check, so these thresholds never apply"
                    ),
                ));
            }
            if th != &spam.default {
                order(w, &format!("{key}."), th);
            }
        }
    }
}

/// A milder action whose threshold is not below a stricter one's never
/// applies: a score that reaches it reaches the stricter one too.
fn order(w: &mut Vec<Warning>, prefix: &str, th: &Thresholds) {
    let steps = [
        ("tag", th.tag),
        ("quarantine", th.quarantine),
        ("tempfail", th.tempfail),
        ("reject", th.reject),
    ];
    for (i, (mild, at)) in steps.iter().enumerate() {
        let Some(at) = at else { continue };
        let stricter = steps[i + 1..]
            .iter()
            .filter_map(|(name, t)| t.map(|t| (name, t)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((strict, limit)) = stricter
            && *at >= limit
        {
            w.push(Warning::new(
                format!("{prefix}{mild}"),
                format!("{at} is not below {prefix}{strict} ({limit}): no message is ever given \"{mild}\""),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(toml: &str) -> Vec<String> {
        Config::from_toml(toml, std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .warnings()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_defaults_and_the_example_contradict_nothing() {
        assert_eq!(warnings(""), Vec::<String>::new());
        let example =
            Config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sluice.example.toml")).unwrap();
        assert_eq!(example.warnings(), []);
    }

    #[test]
    fn contradictions_are_named_by_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[spam]\ntag = 12\nreject = 10",
                "spam.tag: 12 is not below spam.reject (10): no message is ever given \"tag\"",
            ),
            (
                "[spam]\nquarantine = 8\ntempfail = 7",
                "spam.quarantine: 8 is not below spam.tempfail (7): no message is ever given \"quarantine\"",
            ),
            (
                "[spam.domains.\"other.example\"]\nreject = 20",
                "spam.domains.\"other.example\": other.example is not in recipients.domains: its mail is refused (554 5.7.1) before any spam check, so these thresholds never apply",
            ),
            (
                "[spam.domains.\"example.com\"]\ntag = 30",
                "spam.domains.\"example.com\".tag: 30 is not below spam.domains.\"example.com\".reject (10): no message is ever given \"tag\"",
            ),
            (
                "[dnsbl]\nzones = [\"a.example*2\", \"b.example*1\", \"wl.example*-5\"]\nthreshold = 4",
                "dnsbl.threshold: 4 is more than all positive weights together (3: dnsbl.zones, dnsbl.domain_zones and helo weights): no client is ever refused",
            ),
            (
                "[policy]\nallowlist = [\"0.0.0.0/0\", \"::/0\"]\n[greylist]\nenabled = true",
                "policy.allowlist: covers every address (0.0.0.0/0 and ::/0), so greylisting ([greylist] enabled) never applies",
            ),
            (
                "[server]\nlisten = [\"0.0.0.0:25\"]\n[relay]\nnext_hop = \"smtp://127.0.0.1:25\"",
                "relay.next_hop: smtp://127.0.0.1:25 is sluice's own listener 0.0.0.0:25 (server.listen): accepted mail would loop back to sluice",
            ),
            (
                "[relay]\nretry_initial = \"1h\"\nretry_max = \"2h\"\nmax_queue_age = \"30m\"",
                "relay.max_queue_age: 30m is not longer than relay.retry_initial (1h): mail that is deferred once is bounced without a retry",
            ),
            (
                "[limits]\ntarpit_after_errors = 20",
                "limits.tarpit_after_errors: 20 is not below server.max_errors (20): the session is closed before the tarpit starts",
            ),
            (
                "[clamd]\nendpoints = [\"tcp://127.0.0.1:3310\"]\nmax_size = 1000000",
                "clamd.max_size: 1000000 is below server.max_message_size (26214400): larger messages are accepted, then their virus scan fails (scan.on_failure)",
            ),
            (
                "[policy_server]\nlisten = [\"127.0.0.1:10023\", \"0.0.0.0:10023\"]",
                "policy_server.listen: 0.0.0.0:10023 is not a loopback address: the policy protocol has no authentication, so whoever reaches it may ask which recipients exist (firewall it to your Postfix hosts)",
            ),
            (
                "[firewall]\nports = [25]",
                "firewall.ports: limits the kernel's drop, but firewall.exporter is \"none\": sluice refuses banned clients on every listener, and nothing is dropped in the kernel",
            ),
        ];
        for (toml, want) in cases {
            assert_eq!(warnings(toml), [*want], "{toml}");
        }
        // Consistent settings: no warning.
        assert!(
            warnings("[spam]\ntag = 4\nquarantine = 8\nreject = 12\n[dnsbl]\nzones = [\"a.example*2\"]\nthreshold = 2")
                .is_empty()
        );
    }
}
