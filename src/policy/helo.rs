//! HELO/EHLO name checks and forward-confirmed reverse DNS (FCrDNS) of the
//! client. Each is off, a reject, or a weight added to the client's
//! reputation score (decided with the DNSBL score against
//! `dnsbl.threshold` at RCPT).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Check, CheckFuture, Decision, Refusal, SessionCtx, Stage};
use crate::dns::{DnsError, Resolver};
use crate::proto::Reply;

pub use crate::config::helo::{Action, HeloPolicy};

/// Result of the FCrDNS test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fcrdns {
    /// A PTR name that resolves back to the client.
    Pass(String),
    Fail(String),
    /// DNS trouble: no verdict (fail open).
    Unknown(String),
}

/// Forward-confirmed reverse DNS: PTR names of `ip` (at most 5), and an
/// A/AAAA lookup of each that must contain `ip`.
pub async fn fcrdns(resolver: &dyn Resolver, ip: IpAddr, timeout: Duration) -> Fcrdns {
    let names = match tokio::time::timeout(timeout, resolver.lookup_ptr(ip)).await {
        Err(_) => return Fcrdns::Unknown("PTR lookup timed out".into()),
        Ok(Err(DnsError::NotFound)) => return Fcrdns::Fail(format!("{ip} has no PTR record")),
        Ok(Err(e)) => return Fcrdns::Unknown(format!("PTR lookup: {e}")),
        Ok(Ok(n)) => n,
    };
    for name in names.iter().take(5) {
        let found = match ip {
            IpAddr::V4(v4) => tokio::time::timeout(timeout, resolver.lookup_a(name))
                .await
                .map(|r| r.map(|a| a.contains(&v4))),
            IpAddr::V6(v6) => tokio::time::timeout(timeout, resolver.lookup_aaaa(name))
                .await
                .map(|r| r.map(|a| a.contains(&v6))),
        };
        if let Ok(Ok(true)) = found {
            return Fcrdns::Pass(name.clone());
        }
    }
    Fcrdns::Fail(format!("PTR {names:?} of {ip} does not resolve back to it"))
}

pub struct HeloCheck {
    pub policy: HeloPolicy,
    pub hostname: String,
    pub our_ips: Vec<IpAddr>,
    pub resolver: Option<Arc<dyn Resolver>>,
    pub timeout: Duration,
}

impl HeloCheck {
    fn helo_problems(&self, helo: &str) -> Vec<(Action, &'static str)> {
        let lower = helo.to_ascii_lowercase();
        let literal = lower
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_start_matches("ipv6:");
        let mut out = Vec::new();
        if !helo.starts_with('[') && helo.parse::<IpAddr>().is_ok() {
            out.push((self.policy.bare_ip, "HELO is a bare IP address"));
        }
        if !helo.starts_with('[') && !helo.contains('.') {
            out.push((self.policy.non_fqdn, "HELO is not a fully qualified domain name"));
        }
        let ours = lower == self.hostname.to_ascii_lowercase()
            || literal
                .parse::<IpAddr>()
                .is_ok_and(|ip| self.our_ips.contains(&ip) && !ip.is_unspecified());
        if ours {
            out.push((self.policy.our_name, "HELO claims to be this server"));
        }
        out.into_iter().filter(|(a, _)| *a != Action::Off).collect()
    }
}

impl Check for HeloCheck {
    fn name(&self) -> &'static str {
        "helo"
    }

    fn check<'a>(&'a self, stage: &'a Stage<'a>, ctx: &'a SessionCtx) -> CheckFuture<'a> {
        Box::pin(async move {
            if ctx.allowlisted {
                return Decision::Continue;
            }
            match stage {
                Stage::Connect => {
                    let mut st = ctx.fcrdns.lock().unwrap_or_else(|p| p.into_inner());
                    // Already known (the policy server is told the names
                    // Postfix found): no lookup of our own.
                    if let (Some(r), true, FcrdnsState::NotStarted) =
                        (&self.resolver, self.policy.fcrdns != Action::Off, &*st)
                    {
                        let (r, ip, t) = (r.clone(), ctx.ip, self.timeout);
                        let task = tokio::spawn(async move { fcrdns(&*r, ip, t).await });
                        *st = FcrdnsState::Pending(task);
                    }
                }
                Stage::Helo(helo) => {
                    for (action, why) in self.helo_problems(helo) {
                        match action {
                            Action::Reject => {
                                return Decision::Reject(Refusal::new(
                                    Reply::helo_rejected(why),
                                    super::Reason::Helo,
                                    format!("{why}: {helo:?}"),
                                ));
                            }
                            Action::Score(w) => ctx.add_score(w, format!("helo {why}")),
                            Action::Off => {}
                        }
                    }
                }
                Stage::RcptTo { .. } => {
                    let pending = {
                        let mut st = ctx.fcrdns.lock().unwrap_or_else(|p| p.into_inner());
                        match std::mem::replace(&mut *st, FcrdnsState::Done) {
                            FcrdnsState::Pending(t) => Some(t),
                            other => {
                                *st = other;
                                None
                            }
                        }
                    };
                    if let Some(task) = pending {
                        match task.await.unwrap_or(Fcrdns::Unknown("lookup task failed".into())) {
                            Fcrdns::Fail(why) => match self.policy.fcrdns {
                                Action::Reject => {
                                    let reply = Reply::no_hostname(ctx.ip);
                                    *ctx.fcrdns.lock().unwrap_or_else(|p| p.into_inner()) =
                                        FcrdnsState::Refused(reply.clone(), why.clone());
                                    return Decision::Reject(Refusal::new(reply, super::Reason::Fcrdns, why));
                                }
                                Action::Score(w) => ctx.add_score(w, format!("fcrdns: {why}")),
                                Action::Off => {}
                            },
                            Fcrdns::Pass(name) => {
                                *ctx.rdns.lock().unwrap_or_else(|p| p.into_inner()) = Some(name);
                            }
                            Fcrdns::Unknown(_) => {}
                        }
                    }
                    if let FcrdnsState::Refused(reply, why) = &*ctx.fcrdns.lock().unwrap_or_else(|p| p.into_inner()) {
                        return Decision::Reject(Refusal::new(reply.clone(), super::Reason::Fcrdns, why.clone()));
                    }
                }
                _ => {}
            }
            Decision::Continue
        })
    }
}

/// FCrDNS progress in a session.
#[derive(Default)]
pub enum FcrdnsState {
    #[default]
    NotStarted,
    Pending(tokio::task::JoinHandle<Fcrdns>),
    Done,
    Refused(Reply, String),
}

impl SessionCtx {
    /// Adds a reputation weight with its evidence.
    pub fn add_score(&self, weight: i32, why: String) {
        self.score.fetch_add(weight, Ordering::Relaxed);
        self.score_notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{why} ({weight:+})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::FakeResolver;

    fn check(policy: HeloPolicy) -> HeloCheck {
        HeloCheck {
            policy,
            hostname: "mx.example.org".into(),
            our_ips: vec!["192.0.2.25".parse().unwrap()],
            resolver: None,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn actions_parse() {
        assert_eq!(Action::parse("off"), Ok(Action::Off));
        assert_eq!(Action::parse("Reject"), Ok(Action::Reject));
        assert_eq!(Action::parse("+2"), Ok(Action::Score(2)));
        assert_eq!(Action::parse("-1"), Ok(Action::Score(-1)));
        assert!(Action::parse("maybe").is_err());
    }

    #[test]
    fn helo_problems() {
        let all = HeloPolicy {
            bare_ip: Action::Reject,
            non_fqdn: Action::Score(1),
            our_name: Action::Reject,
            fcrdns: Action::Off,
        };
        let c = check(all);
        let whys = |h: &str| c.helo_problems(h).into_iter().map(|(_, w)| w).collect::<Vec<_>>();
        assert_eq!(whys("client.example"), Vec::<&str>::new());
        assert_eq!(whys("[192.0.2.1]"), Vec::<&str>::new());
        assert_eq!(whys("192.0.2.1"), ["HELO is a bare IP address"]);
        assert_eq!(whys("localhost"), ["HELO is not a fully qualified domain name"]);
        assert_eq!(whys("MX.Example.org"), ["HELO claims to be this server"]);
        assert_eq!(whys("[192.0.2.25]"), ["HELO claims to be this server"]);
        // Off means off.
        let c = check(HeloPolicy::default());
        assert!(c.helo_problems("localhost").is_empty());
    }

    #[tokio::test]
    async fn fcrdns_pass_fail_unknown() {
        let mut f = FakeResolver::default();
        let ok: IpAddr = "192.0.2.1".parse().unwrap();
        let liar: IpAddr = "192.0.2.2".parse().unwrap();
        f.ptr.insert(ok, vec!["mail.client.example".into()]);
        f.a.insert("mail.client.example".into(), vec!["192.0.2.1".parse().unwrap()]);
        f.ptr.insert(liar, vec!["mail.bank.example".into()]);
        f.a.insert("mail.bank.example".into(), vec!["198.51.100.7".parse().unwrap()]);
        let t = Duration::from_millis(200);
        assert_eq!(fcrdns(&f, ok, t).await, Fcrdns::Pass("mail.client.example".into()));
        assert!(matches!(fcrdns(&f, liar, t).await, Fcrdns::Fail(_)));
        assert!(matches!(
            fcrdns(&f, "192.0.2.3".parse().unwrap(), t).await,
            Fcrdns::Fail(_)
        ));
    }
}
