//! The ban engine (issue 7, being built), sans-IO: offences in, ban
//! decisions out, with the clock passed in (seconds since the Unix epoch),
//! so it is tested without sleeping and persisted as plain numbers.
//!
//! - Per offence a rule "N offences within W seconds → ban for T".
//! - Escalation: each ban of an address within the memory window (24 h by
//!   default) doubles the next one, up to a cap (fail2ban's
//!   bantime.increment).
//! - The allowlist always wins: loopback, the configured networks (trusted
//!   networks, the next hop) are never banned; such a decision is refused
//!   and reported.
//! - Optional aggregation: enough banned hosts in one /24 (IPv4) or /64
//!   (IPv6) become one prefix ban.
//! - Dry run: decisions are made and reported, nothing is enforced
//!   ([`Engine::is_banned`] says no).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::events::{Event, Reason, SpamAction};

pub use crate::config::firewall::{BanConfig, Offence, Rule};

impl Offence {
    /// The offence an event reports, with its client address; `None` for
    /// events that are not offences.
    pub fn of(event: &Event) -> Option<(IpAddr, Offence)> {
        let by_reason = |ip: &IpAddr, reason: &Reason| {
            let o = match reason {
                Reason::UnknownUser | Reason::RelayDenied => Offence::UnknownUser,
                Reason::Dnsbl { .. } => Offence::Dnsbl,
                // Out of call-ahead probes: a dictionary run, counted as
                // hitting a limit.
                Reason::RateLimit { .. } | Reason::CallAheadBudget => Offence::RateLimit,
                _ => return None,
            };
            Some((*ip, o))
        };
        match event {
            Event::RcptRejected { ip, reason, .. }
            | Event::MailRejected { ip, reason, .. }
            | Event::HeloRejected { ip, reason, .. }
            | Event::ConnectRejected { ip, reason, .. } => by_reason(ip, reason),
            Event::Pregreet { ip, .. } => Some((*ip, Offence::Pregreet)),
            Event::ProtocolError { ip, .. } => Some((*ip, Offence::Protocol)),
            Event::VirusFound { ip, .. } => Some((*ip, Offence::Virus)),
            Event::SpamScored {
                ip,
                action: SpamAction::Reject,
                ..
            } => Some((*ip, Offence::Spam)),
            _ => None,
        }
    }
}

/// One ban, with the evidence `sluice bans explain` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub net: IpNet,
    pub offence: Offence,
    pub since: u64,
    pub until: u64,
    /// The rule that fired, e.g. "10 unknown_user within 300s -> 3600s".
    pub rule: String,
    /// How many bans this address had within the memory window, this one
    /// included (1 = first).
    pub strike: u32,
    /// When the offences that fired the rule happened.
    pub evidence: Vec<u64>,
}

/// What recording an offence decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Counted; no ban (yet).
    Counted,
    /// Already banned: nothing new.
    AlreadyBanned,
    /// A new ban (in dry run: what would have been banned).
    Ban(Ban),
    /// A ban of this prefix replaced host bans inside it.
    Aggregated(Ban),
    /// The rule fired for an allowlisted address: refused.
    Allowlisted { ip: IpAddr, offence: Offence },
}

/// The engine's state; see the module docs.
pub struct Engine {
    cfg: BanConfig,
    /// Offence windows and strike history (per-client state, shared by
    /// every node when the store is).
    state: std::sync::Arc<dyn crate::state::StateStore>,
    bans: BanTable,
    /// When the offence counters and the history were last swept.
    swept_at: u64,
}

/// The bans by network, and by end time so that expiring is cheap with
/// 100,000 bans (the flush runs it 20 times a second).
#[derive(Debug, Default)]
struct BanTable {
    /// Shared, so that a snapshot for the store costs a reference count
    /// per ban, not a copy.
    map: HashMap<IpNet, std::sync::Arc<Ban>>,
    by_until: std::collections::BTreeSet<(u64, IpNet)>,
}

impl BanTable {
    fn insert(&mut self, ban: Ban) {
        if let Some(old) = self.map.get(&ban.net) {
            self.by_until.remove(&(old.until, old.net));
        }
        self.by_until.insert((ban.until, ban.net));
        self.map.insert(ban.net, std::sync::Arc::new(ban));
    }

    fn remove(&mut self, net: &IpNet) -> Option<Ban> {
        let b = self.map.remove(net)?;
        self.by_until.remove(&(b.until, b.net));
        Some(std::sync::Arc::unwrap_or_clone(b))
    }

    fn get(&self, net: &IpNet) -> Option<&Ban> {
        self.map.get(net).map(|b| &**b)
    }

    /// Removes and returns the bans over at `now`.
    fn expire(&mut self, now: u64) -> Vec<IpNet> {
        let mut gone = Vec::new();
        while let Some(&(until, net)) = self.by_until.first()
            && until <= now
        {
            self.by_until.pop_first();
            self.map.remove(&net);
            gone.push(net);
        }
        gone
    }
}

impl Engine {
    /// An engine with its own in-process state (tools, tests).
    pub fn new(cfg: BanConfig) -> Engine {
        Self::with_state(cfg, std::sync::Arc::new(crate::state::MemoryStore::default()))
    }

    pub fn with_state(cfg: BanConfig, state: std::sync::Arc<dyn crate::state::StateStore>) -> Engine {
        Engine {
            cfg,
            state,
            bans: BanTable::default(),
            swept_at: 0,
        }
    }

    /// Replaces the rules, allowlist and escalation settings.
    pub fn set_config(&mut self, cfg: BanConfig) {
        self.cfg = cfg;
    }

    /// Whether an address may never be banned.
    pub fn allowlisted(&self, ip: IpAddr) -> bool {
        allowlisted(&self.cfg, ip)
    }

    /// Records an offence at `now`; returns what it decided. The offence
    /// window is this node's ([`Firewall`](super::service::Firewall) asks
    /// the shared one: [`rule_for`](Self::rule_for), the store, then
    /// [`decide`](Self::decide)).
    pub fn record(&mut self, now: u64, ip: IpAddr, offence: Offence) -> Decision {
        let ip = ip.to_canonical();
        let rule = match self.rule_for(now, ip, offence) {
            Ok(rule) => rule,
            Err(d) => return d,
        };
        let evidence = self
            .state
            .local()
            .offence(ip, offence.as_str(), now, rule.window, rule.count);
        self.decide(now, ip, offence, rule, evidence)
    }

    /// The rule an offence by `ip` (canonical) at `now` counts under, or
    /// the decision when it counts under none (or `ip` is banned already).
    pub fn rule_for(&self, now: u64, ip: IpAddr, offence: Offence) -> Result<Rule, Decision> {
        if self.banned(ip, now).is_some() {
            return Err(Decision::AlreadyBanned);
        }
        self.cfg.rules.get(&offence).copied().ok_or(Decision::Counted)
    }

    /// The per-client state the offence windows are counted in.
    pub fn state(&self) -> std::sync::Arc<dyn crate::state::StateStore> {
        self.state.clone()
    }

    /// Decides on an offence once its window answered: `evidence`, the
    /// times when the rule fired, `None` while it has not.
    pub fn decide(
        &mut self,
        now: u64,
        ip: IpAddr,
        offence: Offence,
        rule: Rule,
        evidence: Option<Vec<u64>>,
    ) -> Decision {
        let cfg = &self.cfg;
        let Some(evidence) = evidence else {
            return Decision::Counted;
        };
        if allowlisted(cfg, ip) {
            return Decision::Allowlisted { ip, offence };
        }
        // Escalation: ×2 for each earlier ban within the memory window.
        let strike = self.state.local().strike(ip, now, cfg.memory);
        let factor = 1u64.checked_shl(strike - 1).unwrap_or(u64::MAX);
        let length = rule.ban.saturating_mul(factor).min(cfg.max_ban.max(rule.ban));
        let ban = Ban {
            net: IpNet::from(ip),
            offence,
            since: now,
            until: now.saturating_add(length),
            rule: format!(
                "{} {} within {}s -> {}s",
                rule.count,
                offence.as_str(),
                rule.window,
                rule.ban
            ),
            strike,
            evidence,
        };
        if let Some(prefix) = aggregate(&mut self.bans, &ban, cfg) {
            return Decision::Aggregated(prefix);
        }
        self.bans.insert(ban.clone());
        Decision::Ban(ban)
    }

    /// The ban that covers `ip` at `now` (host or prefix), if any; always
    /// `None` in dry run.
    pub fn is_banned(&self, ip: IpAddr, now: u64) -> Option<&Ban> {
        if self.cfg.dry_run {
            return None;
        }
        self.banned(ip.to_canonical(), now)
    }

    fn banned(&self, ip: IpAddr, now: u64) -> Option<&Ban> {
        if let Some(b) = self.bans.get(&IpNet::from(ip))
            && b.until > now
        {
            return Some(b);
        }
        let prefix_len = if ip.is_ipv4() { 24 } else { 64 };
        let prefix = IpNet::new(ip, prefix_len).ok()?.trunc();
        self.bans.get(&prefix).filter(|b| b.until > now)
    }

    /// Removes expired bans (and stale offence counters); returns the
    /// networks that are no longer banned.
    pub fn expire(&mut self, now: u64) -> Vec<IpNet> {
        let gone = self.bans.expire(now);
        // The counters and the history: at most once a second.
        if now > self.swept_at {
            self.swept_at = now;
            let cfg = &self.cfg;
            let window = |kind: &'static str| {
                cfg.rules
                    .iter()
                    .find(|(o, _)| o.as_str() == kind)
                    .map_or(0, |(_, r)| r.window)
            };
            self.state.local().sweep_offences(now, &window, cfg.memory);
        }
        gone
    }

    /// Adds a ban by hand (`sluice bans add`, or restored from the store).
    /// Refused for allowlisted addresses.
    pub fn insert(&mut self, ban: Ban) -> Result<(), Ban> {
        if self.allowlisted(ban.net.addr()) || self.cfg.allowlist.iter().any(|a| ban.net.contains(a)) {
            return Err(ban);
        }
        self.bans.insert(ban);
        Ok(())
    }

    /// A ban another node decided counts in this node's escalation
    /// history (host bans; the strike history is per address).
    pub fn remember(&self, ban: &Ban, now: u64) {
        let single = ban.net.prefix_len() == ban.net.max_prefix_len();
        if single {
            self.state
                .local()
                .remember_strike(ban.net.addr(), ban.since, now, self.cfg.memory);
        }
    }

    /// The ban on exactly `net`, if any.
    pub fn get(&self, net: IpNet) -> Option<&Ban> {
        self.bans.map.get(&net).map(|b| &**b)
    }

    /// Lifts a ban (`sluice bans del`).
    pub fn remove(&mut self, net: IpNet) -> Option<Ban> {
        self.bans.remove(&net)
    }

    /// How many bans are in force (expired ones go at the next expire).
    pub fn len(&self) -> usize {
        self.bans.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bans.map.is_empty()
    }

    /// Active bans, unsorted, shared: cheap enough to take under a lock
    /// with 100,000 bans.
    pub fn snapshot(&self) -> Vec<std::sync::Arc<Ban>> {
        self.bans.map.values().cloned().collect()
    }

    /// Active bans, sorted by network.
    pub fn bans(&self) -> Vec<&Ban> {
        let mut v: Vec<&Ban> = self.bans.map.values().map(|b| &**b).collect();
        v.sort_by_key(|b| b.net);
        v
    }
}

fn allowlisted(cfg: &BanConfig, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || cfg.allowlist.iter().any(|n| n.contains(&ip))
}

/// With aggregation on: when the new ban makes `aggregate` hosts banned in
/// its /24 (/64), they become one prefix ban (until the latest of them),
/// unless the prefix holds an allowlisted address.
fn aggregate(bans: &mut BanTable, ban: &Ban, cfg: &BanConfig) -> Option<Ban> {
    let threshold = cfg.aggregate?;
    let prefix_len = if ban.net.addr().is_ipv4() { 24 } else { 64 };
    let prefix = IpNet::new(ban.net.addr(), prefix_len).ok()?.trunc();
    if cfg.allowlist.iter().any(|a| prefix.contains(a) || a.contains(&prefix))
        || prefix.contains(&IpAddr::from([127, 0, 0, 1]))
    {
        return None;
    }
    let inside: Vec<IpNet> = bans
        .map
        .keys()
        .filter(|n| n.prefix_len() == n.max_prefix_len() && prefix.contains(*n))
        .copied()
        .collect();
    if (inside.len() as u32) + 1 < threshold {
        return None;
    }
    let mut until = ban.until;
    let mut evidence = ban.evidence.clone();
    for n in &inside {
        if let Some(b) = bans.remove(n) {
            until = until.max(b.until);
            evidence.extend(b.evidence);
        }
    }
    evidence.sort_unstable();
    let agg = Ban {
        net: prefix,
        offence: ban.offence,
        since: ban.since,
        until,
        rule: format!("{threshold} banned hosts in {prefix}"),
        strike: 1,
        evidence,
    };
    bans.insert(agg.clone());
    Some(agg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn engine(f: impl FnOnce(&mut BanConfig)) -> Engine {
        let mut cfg = BanConfig::default();
        cfg.rules.insert(
            Offence::UnknownUser,
            Rule {
                count: 3,
                window: 60,
                ban: 100,
            },
        );
        f(&mut cfg);
        Engine::new(cfg)
    }

    #[test]
    fn n_offences_within_the_window_ban_for_t() {
        let mut e = engine(|_| {});
        let a = ip("192.0.2.7");
        assert_eq!(e.record(1000, a, Offence::UnknownUser), Decision::Counted);
        assert_eq!(e.record(1030, a, Offence::UnknownUser), Decision::Counted);
        // The first one left the 60 s window: still two.
        assert_eq!(e.record(1061, a, Offence::UnknownUser), Decision::Counted);
        let Decision::Ban(b) = e.record(1070, a, Offence::UnknownUser) else {
            panic!()
        };
        assert_eq!((b.since, b.until, b.strike), (1070, 1170, 1));
        assert_eq!(b.evidence, [1030, 1061, 1070]);
        assert_eq!(b.rule, "3 unknown_user within 60s -> 100s");
        assert_eq!(
            e.is_banned(a, 1100).map(|b| b.net),
            Some("192.0.2.7/32".parse().unwrap())
        );
        assert_eq!(e.record(1100, a, Offence::UnknownUser), Decision::AlreadyBanned);
        assert!(e.is_banned(ip("192.0.2.8"), 1100).is_none());
        assert!(e.is_banned(a, 1170).is_none(), "over at its timeout");
        assert_eq!(e.expire(1170), vec!["192.0.2.7/32".parse::<IpNet>().unwrap()]);
        assert!(e.bans().is_empty());
    }

    #[test]
    fn expiry_follows_the_latest_end_of_a_replaced_ban() {
        let mut e = engine(|_| {});
        let ban = |net: &str, until| Ban {
            net: net.parse().unwrap(),
            offence: Offence::Protocol,
            since: 0,
            until,
            rule: "by hand".into(),
            strike: 1,
            evidence: Vec::new(),
        };
        e.insert(ban("192.0.2.1/32", 100)).unwrap();
        e.insert(ban("192.0.2.2/32", 50)).unwrap();
        // Replaced with a later end: the old end must not expire it.
        e.insert(ban("192.0.2.1/32", 300)).unwrap();
        assert_eq!(e.expire(100), vec!["192.0.2.2/32".parse::<IpNet>().unwrap()]);
        assert_eq!(e.len(), 1);
        assert!(e.remove("192.0.2.1/32".parse().unwrap()).is_some());
        assert!(e.expire(1000).is_empty(), "a removed ban does not expire again");
        assert!(e.is_empty());
    }

    #[test]
    fn repeat_offenders_get_doubled_bans_up_to_the_cap() {
        let mut e = engine(|c| c.max_ban = 350);
        let a = ip("2001:db8::1");
        let mut t = 0;
        let mut lengths = Vec::new();
        for _ in 0..4 {
            let d = (0..3).map(|_| e.record(t, a, Offence::UnknownUser)).last().unwrap();
            let Decision::Ban(b) = d else { panic!("{d:?}") };
            lengths.push(b.until - b.since);
            t = b.until;
        }
        assert_eq!(lengths, [100, 200, 350, 350]);
        // After the memory window (24 h) the count starts over.
        let t = t + 24 * 3600;
        e.expire(t);
        let Decision::Ban(b) = (0..3).map(|_| e.record(t, a, Offence::UnknownUser)).last().unwrap() else {
            panic!()
        };
        assert_eq!((b.until - b.since, b.strike), (100, 1));
    }

    #[test]
    fn allowlist_always_wins() {
        let mut e = engine(|c| c.allowlist = vec!["198.51.100.0/24".parse().unwrap()]);
        for a in ["198.51.100.9", "127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let d = (0..3).map(|_| e.record(5, ip(a), Offence::UnknownUser)).last().unwrap();
            assert!(matches!(d, Decision::Allowlisted { .. }), "{a}: {d:?}");
            assert!(e.is_banned(ip(a), 6).is_none());
        }
        let manual = Ban {
            net: "198.51.100.0/25".parse().unwrap(),
            offence: Offence::Spam,
            since: 0,
            until: 10,
            rule: "by hand".into(),
            strike: 1,
            evidence: vec![],
        };
        assert!(e.insert(manual).is_err(), "a ban covering the allowlist is refused");
    }

    #[test]
    fn aggregation_turns_host_bans_into_a_prefix_ban() {
        let mut e = engine(|c| c.aggregate = Some(3));
        let ban =
            |e: &mut Engine, a: &str, t: u64| (0..3).map(|_| e.record(t, ip(a), Offence::UnknownUser)).last().unwrap();
        assert!(matches!(ban(&mut e, "203.0.113.1", 10), Decision::Ban(_)));
        assert!(matches!(ban(&mut e, "203.0.113.2", 20), Decision::Ban(_)));
        let Decision::Aggregated(b) = ban(&mut e, "203.0.113.3", 30) else {
            panic!()
        };
        assert_eq!(b.net, "203.0.113.0/24".parse::<IpNet>().unwrap());
        assert_eq!(b.until, 130);
        assert_eq!(e.bans().len(), 1, "the host bans are folded in");
        assert!(e.is_banned(ip("203.0.113.200"), 50).is_some());
        assert!(e.is_banned(ip("203.0.114.1"), 50).is_none());
    }

    #[test]
    fn dry_run_decides_but_never_enforces() {
        let mut e = engine(|c| c.dry_run = true);
        let a = ip("192.0.2.50");
        let d = (0..3).map(|_| e.record(1, a, Offence::UnknownUser)).last().unwrap();
        assert!(matches!(d, Decision::Ban(_)));
        assert!(e.is_banned(a, 2).is_none());
        assert_eq!(e.bans().len(), 1, "still listed, for the log and metrics");
    }

    #[test]
    fn offences_from_events() {
        let rcpt = Event::RcptRejected {
            via: crate::events::Via::Smtp,
            tx: Default::default(),
            id: String::new(),
            session: 1,
            ip: ip("192.0.2.1"),
            rcpt: "x@example.com".into(),
            reason: Reason::UnknownUser,
            reply: crate::proto::Reply::UNKNOWN_USER,
            evidence: String::new(),
        };
        assert_eq!(Offence::of(&rcpt), Some((ip("192.0.2.1"), Offence::UnknownUser)));
        let grey = Event::RcptRejected {
            via: crate::events::Via::Smtp,
            tx: Default::default(),
            id: String::new(),
            session: 1,
            ip: ip("192.0.2.1"),
            rcpt: "x@example.com".into(),
            reason: Reason::Greylist,
            reply: crate::proto::Reply::greylisted(60),
            evidence: String::new(),
        };
        assert_eq!(Offence::of(&grey), None, "greylisting is not an offence");
        let probes = Event::RcptRejected {
            via: crate::events::Via::Smtp,
            tx: Default::default(),
            id: String::new(),
            session: 1,
            ip: ip("192.0.2.3"),
            rcpt: "x@example.com".into(),
            reason: Reason::CallAheadBudget,
            reply: crate::proto::Reply::CALLAHEAD_BUDGET,
            evidence: String::new(),
        };
        assert_eq!(
            Offence::of(&probes),
            Some((ip("192.0.2.3"), Offence::RateLimit)),
            "out of call-ahead probes: an offence"
        );
        let spam = |action| Event::SpamScored {
            tx: Default::default(),
            session: 1,
            ip: ip("192.0.2.2"),
            id: "X".into(),
            score: 12.0,
            action,
            rules: String::new(),
            bayes: None,
            ngram: None,
        };
        assert_eq!(
            Offence::of(&spam(SpamAction::Reject)),
            Some((ip("192.0.2.2"), Offence::Spam))
        );
        assert_eq!(Offence::of(&spam(SpamAction::Tag)), None);
    }
}
