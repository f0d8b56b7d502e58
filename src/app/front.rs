//! The front end: the pre-DATA checks, the connection filters, the
//! session context, and the listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context as _;
use tokio::sync::Semaphore;

use super::core::{Core, needs_dns};
use crate::dns::{Coalescing, HickoryResolver, NoDns, Resolver};
use crate::pipeline::Pipeline;
use crate::policy::callahead::CallAhead;
use crate::policy::connection::{Allowlist, ConnectionFilter, ConnectionLimits};
use crate::policy::dnsbl::{Dnsbl, DnsblCheck};
use crate::policy::greylist::{Greylist, GreylistCheck};
use crate::policy::helo::{Action, HeloCheck};
use crate::policy::limits::{Limits, RateCheck};
use crate::policy::recipients::{Directory, RecipientCheck};
use crate::policy::{Check, CheckChain};
use crate::smtp::session::{Front, Shared};
use crate::tls::TlsSource;

/// Pre-DATA checks, in order: reputation first (a listed client gets the
/// DNSBL reason whatever it guesses), then rates, then recipient
/// validation, greylisting last (unknown users get 550, not 451).
pub(super) fn checks(
    core: &Core,
    recipients: Arc<Directory>,
    dns: Option<hickory_resolver::TokioResolver>,
    limits: Arc<Limits>,
    first: bool,
) -> anyhow::Result<CheckChain> {
    let c = &core.config;
    let needs = needs_dns(c);
    let resolver: Arc<dyn Resolver> = match dns.filter(|_| needs) {
        Some(inner) => Arc::new(Coalescing::new(
            HickoryResolver::from_resolver(inner).with_health(core.dns_health.clone()),
        )),
        None => Arc::new(NoDns),
    };
    let mut checks: Vec<Arc<dyn Check>> = Vec::new();
    let helo = &c.helo;
    if [helo.bare_ip, helo.non_fqdn, helo.our_name, helo.fcrdns]
        .iter()
        .any(|a| *a != Action::Off)
    {
        checks.push(Arc::new(HeloCheck {
            policy: helo.clone(),
            hostname: c.server.hostname.clone(),
            our_ips: c.server.listen.iter().map(|l| l.addr.ip()).collect(),
            resolver: needs.then(|| resolver.clone()),
            timeout: c.dns.timeout,
        }));
    }
    let bl = &c.dnsbl;
    if !bl.zones.is_empty() || !bl.domain_zones.is_empty() || helo.uses_scores() {
        let dnsbl = Arc::new(Dnsbl::new(
            bl.zones.clone(),
            bl.domain_zones.clone(),
            bl.threshold,
            bl.replies.clone(),
            c.dns.timeout,
            resolver,
            core.events.clone(),
        ));
        let d = dnsbl.clone();
        let every = c.dnsbl.probe_interval;
        core.spawn(move |stop| d.watch(every, stop));
        checks.push(Arc::new(DnsblCheck { dnsbl }));
    }
    checks.push(Arc::new(RateCheck { limits }));
    let callahead = c
        .callahead
        .as_ref()
        .map(|ca| Arc::new(CallAhead::new(ca.clone(), c.relay.clone(), core.state.clone())));
    checks.push(Arc::new(RecipientCheck {
        dir: recipients,
        callahead,
    }));
    if let Some(g) = greylist(core, first)? {
        checks.push(g);
    }
    Ok(CheckChain::new(checks))
}

/// Greylisting, persisted, when on; its state is loaded by the `first`
/// generation (later ones share the state store it filled).
fn greylist(core: &Core, first: bool) -> anyhow::Result<Option<Arc<dyn Check>>> {
    let Some(gc) = &core.config.greylist else {
        return Ok(None);
    };
    let greylist = Arc::new(Greylist::new(gc.clone(), Greylist::system_clock(), core.state.clone()));
    if first {
        let loaded = greylist
            .load()
            .with_context(|| format!("greylist.state: cannot read {}", gc.state.display()))?;
        tracing::info!(triplets = loaded, "greylist state loaded");
    }
    let g = greylist.clone();
    core.spawn(move |stop| g.persist(std::time::Duration::from_secs(5), stop));
    Ok(Some(Arc::new(GreylistCheck {
        greylist,
        metrics: core.metrics.clone(),
    })))
}

/// The per-client limits, swept of clients idle for two windows once a
/// minute.
pub(super) fn limits(core: &Core) -> Arc<Limits> {
    let limits = Arc::new(Limits::new(&core.config.limits, core.state.clone()));
    let l = limits.clone();
    core.spawn(move |stop| async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => l.sweep(),
                _ = stop.cancelled() => return,
            }
        }
    });
    limits
}

/// What the listener asks before a session starts: bans, then the
/// allowlist (trusted networks skip the limits), then the limits.
pub(super) fn connection_filters(
    core: &Core,
    firewall: Option<Arc<crate::firewall::service::Firewall>>,
    limits: Arc<Limits>,
) -> Vec<Arc<dyn ConnectionFilter>> {
    let c = &core.config;
    let mut filters: Vec<Arc<dyn ConnectionFilter>> = Vec::new();
    if let Some(fw) = firewall {
        filters.push(fw);
    }
    filters.push(Arc::new(Allowlist(c.policy.allowlist.clone())));
    filters.push(Arc::new(ConnectionLimits {
        limits,
        rate: c.limits.per_ip_connection_rate,
    }));
    filters
}

/// What every generation of the front end shares: the numbering of
/// sessions and messages, and stress mode.
#[derive(Clone)]
pub(super) struct Lasting {
    session_seq: Arc<AtomicU64>,
    message_seq: Arc<AtomicU64>,
    pub stress: Arc<crate::policy::stress::Stress>,
}

impl Lasting {
    pub fn new(core: &Core) -> Lasting {
        Lasting {
            // Unique across restarts (an event log spans many): sessions
            // are numbered on from the start time in microseconds.
            session_seq: Arc::new(AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_micros() as u64),
            )),
            message_seq: Arc::new(AtomicU64::new(0)),
            stress: Arc::new(crate::policy::stress::Stress::new(core.config.stress.clone())),
        }
    }
}

/// What every session of one generation shares.
pub(super) fn shared(
    core: &Core,
    checks: CheckChain,
    pipeline: Arc<Pipeline>,
    tls: Option<Arc<TlsSource>>,
    filters: Vec<Arc<dyn ConnectionFilter>>,
    lasting: &Lasting,
) -> Arc<Shared> {
    Arc::new(Shared {
        config: core.config.clone(),
        checks,
        pipeline,
        events: core.events.clone(),
        tls,
        shutdown: core.shutdown.clone(),
        session_seq: lasting.session_seq.clone(),
        message_seq: lasting.message_seq.clone(),
        filters,
        stress: lasting.stress.clone(),
    })
}

/// Binds `server.listen` and serves; returns the bound addresses.
pub(super) fn listen(core: &Core, front: Arc<Front>) -> anyhow::Result<Vec<SocketAddr>> {
    let c = &core.config;
    raise_fd_limit(c);
    let limit = Arc::new(Semaphore::new(c.server.max_connections));
    let mut local_addrs = Vec::new();
    for listen in &c.server.listen {
        let l = crate::listener::bind(listen.addr).map_err(|e| super::bind_error("server.listen", listen.addr, &e))?;
        local_addrs.push(l.local_addr()?);
        core.sessions.spawn(crate::listener::accept_loop(
            l,
            front.clone(),
            limit.clone(),
            core.sessions.clone(),
            listen.proxy_protocol,
        ));
    }
    if c.stress.enabled {
        let (events, every) = (core.events.clone(), c.stress.check_interval);
        core.spawn(move |stop| watch_stress(front, limit, events, every, stop));
    }
    Ok(local_addrs)
}

/// Looks at the load every `every` and turns stress mode on or off (an
/// event each time, which sets `sluice_stress_mode`).
async fn watch_stress(
    front: Arc<Front>,
    limit: Arc<Semaphore>,
    events: crate::events::EventBus,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let max = front.load().config.server.max_connections;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let shared = front.load();
        let content = &shared.pipeline.content;
        let load = crate::policy::stress::Load {
            sessions: max.saturating_sub(limit.available_permits()),
            max_sessions: max,
            scanner_behind: content
                .as_ref()
                .is_some_and(|c| c.has_scanner() && c.admission.over_budget()),
            held: shared.pipeline.deferred.as_ref().map_or(0, |d| d.backlog()),
            max_held: content.as_ref().map_or(0, |c| c.cfg.max_held),
        };
        if let Some(change) = shared.stress.assess(load) {
            events.emit(crate::events::Event::StressMode {
                on: change.on,
                sessions: change.sessions,
                why: change.why,
            });
        }
    }
}

/// Each session needs a socket and each delivery a socket: make sure the
/// descriptor limit allows max_connections before we promise it.
fn raise_fd_limit(c: &crate::config::Config) {
    let want = (c.server.max_connections + c.relay.concurrency) as u64 * 2 + 256;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got < want => tracing::warn!(
            wanted = want,
            got,
            "open-file limit is below what server.max_connections needs; raise LimitNOFILE / ulimit -n"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
