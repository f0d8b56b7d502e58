//! DNSBL/DNSWL scoring of the client IP and RHSBL scoring of the HELO and
//! MAIL FROM domains, in the style of Postfix's `postscreen_dnsbl_sites`:
//!
//! ```text
//! zen.example=127.0.0.[2..11]*3      listed if an answer matches; weight 3
//! bl.test*3                          any answer in 127/8 counts; weight 3
//! list.dnswl.example=127.0.[0..255].[1..3]*-2   allowlist: negative weight
//! ```
//!
//! IP queries start at connect, concurrently, so the answers are usually in
//! by the time the client sends RCPT; RHSBL queries start at MAIL FROM. Each
//! query has a deadline (`dns.timeout`). A zone that times out or fails is
//! reported (a warning event) and counts as "not listed": the session goes
//! on (fail open), so a broken list never blocks mail. A zone that lists
//! 127.0.0.1, the RFC 5782 "never listed" test address, is disabled with a
//! loud warning. The client is refused at RCPT when the weights of the
//! zones that list it add up to `dnsbl.threshold`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::dns::{DnsError, Resolver, join_all, reverse_name};
use crate::events::{Event, EventBus};
use crate::proto::Reply;

pub use crate::config::dnsbl::{Zone, parse_zones};

/// A zone that listed the client, with the answers that counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub zone: String,
    pub weight: i32,
    pub answers: Vec<Ipv4Addr>,
}

/// The result of scoring one name against a set of zones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Score {
    pub total: i32,
    pub hits: Vec<Hit>,
    /// Zones that timed out or failed (counted as not listed).
    pub errors: Vec<(String, DnsError)>,
}

impl Score {
    fn merge(&mut self, other: Score) {
        self.total += other.total;
        self.hits.extend(other.hits);
        self.errors.extend(other.errors);
    }

    /// "bl.test=127.0.0.2(+3), dnswl.example=127.0.10.2(-2)"
    pub fn evidence(&self) -> String {
        self.hits
            .iter()
            .map(|h| {
                let a: Vec<String> = h.answers.iter().map(|a| a.to_string()).collect();
                format!("{}={}({:+})", h.zone, a.join(","), h.weight)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The configured lists, the resolver and the deadline.
pub struct Dnsbl {
    pub ip_zones: Vec<Zone>,
    pub domain_zones: Vec<Zone>,
    pub threshold: i32,
    /// Client-visible text per zone (`$client` is replaced by the IP).
    pub replies: HashMap<String, String>,
    pub timeout: Duration,
    resolver: Arc<dyn Resolver>,
    /// Set by the health check for zones that list 127.0.0.1.
    disabled: Vec<AtomicBool>,
    events: EventBus,
}

/// How soon a disabled zone is probed again (at most `probe_interval`).
const RETRY_DISABLED: Duration = Duration::from_secs(30);

impl Dnsbl {
    pub fn new(
        ip_zones: Vec<Zone>,
        domain_zones: Vec<Zone>,
        threshold: i32,
        replies: HashMap<String, String>,
        timeout: Duration,
        resolver: Arc<dyn Resolver>,
        events: EventBus,
    ) -> Self {
        let disabled = ip_zones.iter().map(|_| AtomicBool::new(false)).collect();
        for z in &ip_zones {
            let enabled = events.metrics().dnsbl_zone_enabled.with_label_values(&[&z.name]);
            enabled.set(1);
        }
        Self {
            ip_zones,
            domain_zones,
            threshold,
            replies,
            timeout,
            resolver,
            disabled,
            events,
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.ip_zones.is_empty() || !self.domain_zones.is_empty()
    }

    /// RFC 5782 §5: 127.0.0.1 must never be listed and 127.0.0.2 must be.
    /// A zone that lists the first (shut down, lists everyone) or not the
    /// second (lists nothing) is disabled until a later probe finds it
    /// answering right again.
    pub async fn health_check(&self) {
        let checks = self.ip_zones.iter().enumerate().map(|(i, z)| async move {
            // A zone that times out is disabled too: every lookup would
            // cost each session the whole DNS deadline for nothing.
            let problem = self.probe(&z.name).await;
            let was = self.disabled[i].swap(problem.is_some(), Ordering::Relaxed);
            self.events
                .metrics()
                .dnsbl_zone_enabled
                .with_label_values(&[&z.name])
                .set(i64::from(problem.is_none()));
            match (problem, was) {
                (Some(why), false) => {
                    let msg = format!("DNSBL zone {} {why}; DISABLED until it answers as it should", z.name);
                    tracing::error!("{msg}");
                    self.events.emit(Event::Warning {
                        component: "dnsbl",
                        message: msg,
                    });
                }
                (None, true) => tracing::info!(zone = %z.name, "DNSBL zone answers as it should again; re-enabled"),
                _ => {}
            }
        });
        join_all(checks).await;
    }

    /// The RFC 5782 §5 test entries of `zone`: 127.0.0.1 must not be
    /// listed, 127.0.0.2 must be.
    /// `Some(why)` when the zone is broken.
    async fn probe(&self, zone: &str) -> Option<String> {
        let ask = |ip: [u8; 4]| {
            let name = reverse_name(IpAddr::from(ip), zone);
            async move { tokio::time::timeout(self.timeout, self.resolver.lookup_a(&name)).await }
        };
        let (never, always) = tokio::join!(ask([127, 0, 0, 1]), ask([127, 0, 0, 2]));
        match (never, always) {
            (Ok(Ok(a)), _) if !a.is_empty() => Some(format!("lists 127.0.0.1 ({a:?}): it lists everyone")),
            (Err(_), _) | (_, Err(_)) => Some("does not answer in time".into()),
            (Ok(Err(e)), _) | (_, Ok(Err(e))) if e != DnsError::NotFound => Some(format!("fails: {e}")),
            (_, Ok(Err(_))) => Some("does not list its 127.0.0.2 test entry: it lists nothing".into()),
            _ => None,
        }
    }

    /// Probes every zone now and then every `every`, until `stop`: a
    /// broken zone is disabled, and enabled again once it answers right.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            self.health_check().await;
            // While a zone is off, look again sooner so that a zone that
            // only hiccupped is back within half a minute.
            let any_off = self.disabled.iter().any(|d| d.load(Ordering::Relaxed));
            let next = if any_off { every.min(RETRY_DISABLED) } else { every };
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Scores the client IP over all enabled IP zones, concurrently.
    pub async fn score_ip(&self, ip: IpAddr) -> Score {
        let names: Vec<(usize, String)> = self
            .ip_zones
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.disabled[*i].load(Ordering::Relaxed))
            .map(|(i, z)| (i, reverse_name(ip, &z.name)))
            .collect();
        self.score(names.iter().map(|(i, n)| (&self.ip_zones[*i], n.as_str())))
            .await
    }

    /// Scores domains (HELO name, sender domain) over the RHSBL zones.
    pub async fn score_domains(&self, domains: &[&str]) -> Score {
        let names: Vec<(usize, String)> = self
            .domain_zones
            .iter()
            .enumerate()
            .flat_map(|(i, z)| {
                domains
                    .iter()
                    .filter(|d| !d.is_empty() && !d.starts_with('['))
                    .map(move |d| (i, format!("{}.{}", d.trim_end_matches('.'), z.name)))
            })
            .collect();
        self.score(names.iter().map(|(i, n)| (&self.domain_zones[*i], n.as_str())))
            .await
    }

    async fn score<'a>(&'a self, queries: impl Iterator<Item = (&'a Zone, &'a str)>) -> Score {
        let m = self.events.metrics();
        let futs = queries.map(|(zone, name)| async move {
            let started = std::time::Instant::now();
            let res = tokio::time::timeout(self.timeout, self.resolver.lookup_a(name))
                .await
                .unwrap_or(Err(DnsError::Timeout));
            m.dnsbl_duration
                .with_label_values(&[&zone.name])
                .observe(started.elapsed().as_secs_f64());
            (zone, res)
        });
        let mut score = Score::default();
        for (zone, res) in join_all(futs).await {
            let z: &str = &zone.name;
            m.dnsbl_queries.with_label_values(&[z]).inc();
            match &res {
                Ok(a) if a.iter().any(|a| zone.counts(*a)) => m.dnsbl_listed.with_label_values(&[z]).inc(),
                Err(DnsError::Timeout) => m.dnsbl_errors.with_label_values(&[z, "timeout"]).inc(),
                Err(DnsError::NotFound) | Ok(_) => {}
                Err(_) => m.dnsbl_errors.with_label_values(&[z, "error"]).inc(),
            }
            match res {
                Ok(answers) => {
                    let counted: Vec<Ipv4Addr> = answers.iter().copied().filter(|a| zone.counts(*a)).collect();
                    if counted.is_empty() && answers.iter().any(|a| a.octets()[0] != 127) {
                        score.errors.push((
                            zone.name.clone(),
                            DnsError::Failed(format!("nonsense answer {answers:?}")),
                        ));
                    } else if !counted.is_empty() {
                        score.total += zone.weight;
                        score.hits.push(Hit {
                            zone: zone.name.clone(),
                            weight: zone.weight,
                            answers: counted,
                        });
                    }
                }
                Err(DnsError::NotFound) => {}
                Err(e) => score.errors.push((zone.name.clone(), e)),
            }
        }
        for (zone, e) in &score.errors {
            self.events.emit(Event::Warning {
                component: "dnsbl",
                message: format!("zone {zone}: {e}; counted as not listed"),
            });
        }
        score
    }

    /// The reply for a refused client: the text configured for the zone
    /// with the largest weight that listed it, else one naming that zone.
    pub fn reply(&self, ip: IpAddr, score: &Score) -> Reply {
        let top = score.hits.iter().filter(|h| h.weight > 0).max_by_key(|h| h.weight);
        let text = match top {
            Some(h) => match self.replies.get(&h.zone) {
                Some(t) => t.replace("$client", &ip.to_string()),
                None => format!("Service unavailable; client [{ip}] blocked using {}", h.zone),
            },
            None => format!("Service unavailable; client [{ip}] has a poor reputation"),
        };
        Reply::dnsbl_listed(text)
    }

    pub fn listed(&self, score: &Score) -> bool {
        score.total >= self.threshold
    }
}

/// Per-session DNSBL state, kept in [`super::SessionCtx`].
#[derive(Default)]
pub struct Reputation {
    /// Which lists (`Dnsbl`, by address) the client IP was scored by: after
    /// a reload the session's next RCPT asks the new lists.
    ip_by: usize,
    ip_task: Option<tokio::task::JoinHandle<Score>>,
    ip_score: Option<Score>,
    domain_task: Option<tokio::task::JoinHandle<Score>>,
    domain_score: Option<Score>,
}

/// The DNSBL as a pre-DATA check: queries the client IP at connect and the
/// HELO/sender domains at MAIL, decides at RCPT.
pub struct DnsblCheck {
    pub dnsbl: Arc<Dnsbl>,
}

impl DnsblCheck {
    async fn settle(task: Option<tokio::task::JoinHandle<Score>>) -> Score {
        match task {
            Some(t) => t.await.unwrap_or_default(),
            None => Score::default(),
        }
    }
}

impl super::Check for DnsblCheck {
    fn name(&self) -> &'static str {
        "dnsbl"
    }

    fn check<'a>(&'a self, stage: &'a super::Stage<'a>, ctx: &'a super::SessionCtx) -> super::CheckFuture<'a> {
        use super::{Decision, Stage};
        Box::pin(async move {
            if ctx.allowlisted {
                return Decision::Continue;
            }
            match stage {
                Stage::Connect if !self.dnsbl.ip_zones.is_empty() => self.start_ip(&mut reputation(ctx), ctx.ip),
                Stage::MailFrom { from, helo } if !self.dnsbl.domain_zones.is_empty() => {
                    self.start_domains(ctx, *helo, *from)
                }
                Stage::RcptTo { .. } => {
                    if let Some(r) = self.decide(ctx).await {
                        return Decision::Reject(r);
                    }
                }
                _ => {}
            }
            Decision::Continue
        })
    }
}

/// The session's DNSBL state.
fn reputation(ctx: &super::SessionCtx) -> std::sync::MutexGuard<'_, Reputation> {
    ctx.reputation.lock().unwrap_or_else(|p| p.into_inner())
}

impl DnsblCheck {
    /// Which lists these are, for [`Reputation::ip_by`].
    fn id(&self) -> usize {
        Arc::as_ptr(&self.dnsbl) as usize
    }

    /// Queries the client IP (at connect, or at the first RCPT after a
    /// reload changed the lists).
    fn start_ip(&self, r: &mut Reputation, ip: std::net::IpAddr) {
        r.ip_by = self.id();
        r.ip_score = None;
        if let Some(old) = r.ip_task.take() {
            old.abort();
        }
        if !self.dnsbl.ip_zones.is_empty() {
            let d = self.dnsbl.clone();
            r.ip_task = Some(tokio::spawn(async move { d.score_ip(ip).await }));
        }
    }

    /// At MAIL FROM: queries for the HELO and sender domains, replacing
    /// those of an earlier transaction.
    fn start_domains(&self, ctx: &super::SessionCtx, helo: Option<&str>, from: Option<&crate::proto::Mailbox>) {
        let mut domains: Vec<String> = Vec::new();
        if let Some(h) = helo {
            domains.push(h.to_ascii_lowercase());
        }
        if let Some(m) = from {
            domains.push(m.domain.clone());
        }
        let d = self.dnsbl.clone();
        let task = tokio::spawn(async move {
            let refs: Vec<&str> = domains.iter().map(String::as_str).collect();
            d.score_domains(&refs).await
        });
        let mut r = reputation(ctx);
        r.domain_score = None;
        if let Some(old) = r.domain_task.replace(task) {
            old.abort();
        }
    }

    /// At RCPT: the answers so far, plus the weights of other checks
    /// (HELO, FCrDNS), against the threshold.
    async fn decide(&self, ctx: &super::SessionCtx) -> Option<super::Refusal> {
        let (ip_task, domain_task) = {
            let mut r = reputation(ctx);
            if r.ip_by != self.id() {
                self.start_ip(&mut r, ctx.ip);
            }
            (r.ip_task.take(), r.domain_task.take())
        };
        // Within the transaction's DNS budget: what has not answered by
        // then counts as not listed.
        let deadline = ctx.dns_deadline();
        let within = |task| async move {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, Self::settle(task)).await.unwrap_or_default(),
                None => Self::settle(task).await,
            }
        };
        if ip_task.is_some() {
            let s = within(ip_task).await;
            reputation(ctx).ip_score = Some(s);
        }
        if domain_task.is_some() {
            let s = within(domain_task).await;
            reputation(ctx).domain_score = Some(s);
        }
        let mut total = Score::default();
        {
            let r = reputation(ctx);
            total.merge(r.ip_score.clone().unwrap_or_default());
            total.merge(r.domain_score.clone().unwrap_or_default());
        }
        total.total += ctx.score.load(std::sync::atomic::Ordering::Relaxed);
        if !self.dnsbl.listed(&total) {
            return None;
        }
        let mut evidence = total.evidence();
        for note in ctx.score_notes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if !evidence.is_empty() {
                evidence.push_str(", ");
            }
            evidence.push_str(note);
        }
        let zones = total
            .hits
            .iter()
            .filter(|h| h.weight > 0)
            .map(|h| h.zone.clone())
            .collect();
        Some(super::Refusal::new(
            self.dnsbl.reply(ctx.ip, &total),
            super::Reason::Dnsbl { zones },
            format!(
                "{evidence}; total {} >= threshold {}",
                total.total, self.dnsbl.threshold
            ),
        ))
    }
}

#[cfg(test)]
mod tests;
