//! Wiring: builds every component from the [`Config`], starts the tasks,
//! and shuts them down in order.

mod preflight;

pub use preflight::{Preflight, preflight};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::queue::Queue;
use crate::delivery::route::Router;
use crate::dns::{HickoryResolver, NoDns, Resolver};
use crate::events::EventBus;
use crate::policy::callahead::CallAhead;
use crate::policy::connection::{Allowlist, ConnectionFilter, ConnectionLimits};
use crate::policy::dnsbl::{Dnsbl, DnsblCheck};
use crate::policy::greylist::{Greylist, GreylistCheck};
use crate::policy::helo::{Action, HeloCheck};
use crate::policy::limits::{Limits, RateCheck};
use crate::policy::recipients::{Directory, RecipientCheck};
use crate::policy::{Check, CheckChain};
use crate::smtp::session::Shared;
use crate::spool::Spool;
use crate::spool::fs::FsSpool;

/// A running sluice: its listening addresses and the handles to stop it.
pub struct Running {
    pub local_addrs: Vec<SocketAddr>,
    /// Where `/metrics`, `/readyz` and the status page are served.
    pub metrics_addr: Option<SocketAddr>,
    pub events: EventBus,
    pub recipients: Arc<Directory>,
    config: Arc<Config>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    background: TaskTracker,
    spool: Arc<FsSpool>,
    transport: Arc<Router>,
    spam: Option<Arc<crate::spam::filter::SpamFilter>>,
}

/// SPF/DKIM/DMARC for the spam filter (`None` when `spam.auth` is off or
/// `offline`), over `shared` (the server's resolver, whose cache the DNS
/// lists use too) or a resolver built from `[dns]`.
fn authenticator(
    config: &Config,
    offline: bool,
    shared: Option<hickory_resolver::TokioResolver>,
) -> anyhow::Result<Option<crate::spam::auth::Authenticator>> {
    let Some(cfg) = config.spam.as_ref().filter(|c| c.auth && !offline) else {
        return Ok(None);
    };
    let resolver = match shared {
        Some(r) => r,
        None => crate::dns::tokio_resolver(config.dns.resolver, config.dns.timeout)
            .context("dns.resolver: cannot build the DNS resolver")?,
    };
    Ok(Some(crate::spam::auth::Authenticator::new(
        resolver,
        config.server.hostname.clone(),
        cfg.auth_timeout,
    )))
}

/// The spam filter of a configuration (`None` when `spam.enabled` is
/// false): rules, model, and SPF/DKIM/DMARC unless `offline`.
pub fn spam_filter(
    config: &Config,
    offline: bool,
    shared: Option<hickory_resolver::TokioResolver>,
) -> anyhow::Result<Option<Arc<crate::spam::filter::SpamFilter>>> {
    let Some(cfg) = &config.spam else {
        return Ok(None);
    };
    let auth = authenticator(config, offline, shared)?;
    let filter = crate::spam::filter::SpamFilter::new(cfg.clone(), auth).context("spam rules or model")?;
    Ok(Some(Arc::new(filter)))
}

/// What the listener asks before a session starts: bans, then the
/// allowlist (trusted networks skip the limits), then the limits.
fn connection_filters(
    config: &Config,
    firewall: Option<Arc<crate::firewall::service::Firewall>>,
    limits: Arc<Limits>,
) -> Vec<Arc<dyn ConnectionFilter>> {
    let mut filters: Vec<Arc<dyn ConnectionFilter>> = Vec::new();
    if let Some(fw) = firewall {
        filters.push(fw);
    }
    filters.push(Arc::new(Allowlist(config.policy.allowlist.clone())));
    filters.push(Arc::new(ConnectionLimits {
        limits,
        rate: config.limits.per_ip_connection_rate,
    }));
    filters
}

/// Loads the files the configuration names ([`preflight`]), binds the
/// listeners, recovers the spool and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let pre = preflight(&config)?;
    start_with(config, pre).await
}

/// [`start`] with the files already loaded.
pub async fn start_with(config: Config, pre: Preflight) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(match config.metrics {
        Some(_) => crate::metrics::Metrics::new(),
        None => crate::metrics::Metrics::disabled(),
    });
    let events = EventBus::with_metrics(64 * 1024, metrics.clone());
    let background = TaskTracker::new();
    let sessions = TaskTracker::new();

    background.spawn(crate::events::log::run(
        events.clone(),
        config.log.events.clone(),
        shutdown.child_token(),
    ));

    let Preflight {
        tls,
        recipients,
        spam: loaded_spam,
    } = pre;
    background.spawn(
        recipients
            .clone()
            .watch(config.recipients.reload_interval, shutdown.child_token()),
    );

    let sp = &config.spool;
    let recovered = FsSpool::open(&sp.dir, sp.fsync, sp.segment_size)
        .with_context(|| format!("spool.dir: cannot open {}", sp.dir.display()))?;
    let spool = recovered.spool.clone();
    let _ = spool.stats.fsync_latency.set(metrics.spool_fsync.clone());
    if !recovered.pending.is_empty() {
        tracing::info!(
            messages = recovered.pending.len(),
            "recovered undelivered messages from the spool"
        );
    }

    let spool_dyn: Arc<dyn Spool> = spool.clone();
    let quarantine = Arc::new(crate::quarantine::Quarantine::new(&config.scan.quarantine_dir));
    // One resolver (and one answer cache) for the DNS lists, the HELO
    // checks and SPF/DKIM/DMARC.
    let bl = &config.dnsbl;
    let helo = &config.helo;
    let needs_dns = !bl.zones.is_empty() || !bl.domain_zones.is_empty() || helo.fcrdns != Action::Off;
    let spam_dns = config.spam.as_ref().is_some_and(|s| s.auth);
    let dns = if needs_dns || spam_dns {
        Some(
            crate::dns::tokio_resolver(config.dns.resolver, config.dns.timeout)
                .map_err(|e| anyhow::anyhow!("dns.resolver: {e}"))?,
        )
    } else {
        None
    };
    // Per-domain routes, the default next hop, and where DSNs to outside
    // senders go (a bounce relay, or MX lookup through the same resolver).
    let transport = Arc::new(
        Router::from_config(&config, dns.as_ref(), &metrics).map_err(|e| anyhow::anyhow!("dns.resolver: {e}"))?,
    );
    let (queue, handle) = Queue::new(
        spool_dyn.clone(),
        transport.clone(),
        config.relay.clone(),
        config.server.hostname.clone(),
        events.clone(),
    );
    let spam = match loaded_spam {
        Some(f) => Some(Arc::new(match authenticator(&config, false, dns.clone())? {
            Some(auth) => f.with_auth(auth),
            None => f,
        })),
        None => None,
    };
    if let Some(filter) = &spam {
        let ev = events.clone();
        background.spawn(filter.clone().watch(shutdown.child_token(), move |message| {
            ev.emit(crate::events::Event::Warning {
                component: "spam",
                message,
            })
        }));
    }
    // The firewall reads the same events; the listener asks it first.
    let firewall = config.firewall.clone().map(|cfg| {
        let fw = Arc::new(crate::firewall::service::Firewall::new(cfg, events.clone()));
        background.spawn(fw.clone().run(shutdown.child_token()));
        let (control, path, token, ev) = (
            fw.clone(),
            fw.cfg.control_socket.clone(),
            shutdown.child_token(),
            events.clone(),
        );
        background.spawn(async move {
            if let Err(e) = crate::firewall::control::serve(control, &path, token).await {
                ev.emit(crate::events::Event::Warning {
                    component: "firewall",
                    message: format!("control socket {}: {e}", path.display()),
                });
            }
        });
        fw
    });
    // Content checks: built when a scanner or a banned list is configured.
    let (filter, clamd) = crate::scan::ContentFilter::from_config(&config, metrics.clone());
    if let Some(clamd) = &clamd {
        background.spawn(clamd.clone().health_loop(shutdown.child_token()));
    }
    let capacity = filter.capacity();
    let content = (filter.has_scanner() || !config.scan.banned.is_empty()).then(|| Arc::new(filter));
    let deferred = content.as_ref().map(|filter| {
        let (scanner, handle) = crate::scan::deferred::DeferredScanner::new(
            filter.clone(),
            spool_dyn.clone(),
            handle.clone(),
            quarantine.clone(),
            events.clone(),
            capacity,
            shutdown.child_token(),
        );
        background.spawn(scanner.run());
        handle
    });

    // Recovered mail is tried at once, not after a backoff; mail accepted
    // before its scan is scanned first.
    for s in recovered.pending {
        match &deferred {
            Some(d) if s.envelope.scan_pending => d.enqueue(s),
            _ => handle.enqueue(s),
        }
    }
    // The queue stops launching attempts on shutdown but lets in-flight
    // ones finish: it watches its own token, cancelled after the listeners.
    let queue_stop = CancellationToken::new();
    background.spawn(queue.run(handle.clone(), queue_stop.clone()));
    {
        let shutdown = shutdown.clone();
        let sessions = sessions.clone();
        background.spawn(async move {
            shutdown.cancelled().await;
            sessions.close();
            sessions.wait().await;
            queue_stop.cancel();
        });
    }

    // Pre-DATA checks, in order: reputation first (a listed client gets the
    // DNSBL reason whatever it guesses), then recipient validation.
    let mut checks: Vec<Arc<dyn Check>> = Vec::new();
    let resolver: Arc<dyn Resolver> = match dns.filter(|_| needs_dns) {
        Some(inner) => Arc::new(HickoryResolver::from_resolver(inner)),
        None => Arc::new(NoDns),
    };
    if [helo.bare_ip, helo.non_fqdn, helo.our_name, helo.fcrdns]
        .iter()
        .any(|a| *a != Action::Off)
    {
        checks.push(Arc::new(HeloCheck {
            policy: helo.clone(),
            hostname: config.server.hostname.clone(),
            our_ips: config.server.listen.iter().map(|a| a.ip()).collect(),
            resolver: needs_dns.then(|| resolver.clone()),
            timeout: config.dns.timeout,
        }));
    }
    if !bl.zones.is_empty() || !bl.domain_zones.is_empty() || helo.uses_scores() {
        let dnsbl = Arc::new(Dnsbl::new(
            bl.zones.clone(),
            bl.domain_zones.clone(),
            bl.threshold,
            bl.replies.clone(),
            config.dns.timeout,
            resolver.clone(),
            events.clone(),
        ));
        {
            let d = dnsbl.clone();
            background.spawn(async move { d.health_check().await });
        }
        checks.push(Arc::new(DnsblCheck { dnsbl }));
    }
    let limits = Arc::new(Limits::new(&config.limits));
    checks.push(Arc::new(RateCheck { limits: limits.clone() }));
    let callahead = config
        .callahead
        .as_ref()
        .map(|c| Arc::new(CallAhead::new(c.clone(), config.relay.clone())));
    checks.push(Arc::new(RecipientCheck {
        dir: recipients.clone(),
        callahead,
    }));
    // Greylisting last: unknown users get 550, not 451.
    if let Some(gc) = &config.greylist {
        let greylist = Arc::new(Greylist::new(gc.clone(), Greylist::system_clock()));
        let loaded = greylist
            .load()
            .with_context(|| format!("greylist.state: cannot read {}", gc.state.display()))?;
        tracing::info!(triplets = loaded, "greylist state loaded");
        background.spawn(
            greylist
                .clone()
                .persist(std::time::Duration::from_secs(5), shutdown.child_token()),
        );
        checks.push(Arc::new(GreylistCheck {
            greylist,
            metrics: metrics.clone(),
        }));
    }
    {
        // Forget clients idle for two windows, once a minute.
        let (limits, stop) = (limits.clone(), shutdown.child_token());
        background.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => limits.sweep(),
                    _ = stop.cancelled() => return,
                }
            }
        });
    }

    let pipeline = Arc::new(crate::pipeline::Pipeline {
        limits: crate::pipeline::HeaderLimits {
            max_header_size: config.server.max_header_size,
            max_received_headers: config.server.max_received_headers,
        },
        content: content.clone(),
        deferred: deferred.clone(),
        spam: spam.clone(),
        spool: spool_dyn,
        queue: handle,
        quarantine,
        events: events.clone(),
    });
    let shared = Arc::new(Shared {
        config: config.clone(),
        checks: CheckChain::new(checks),
        pipeline,
        events: events.clone(),
        tls,
        shutdown: shutdown.clone(),
        session_seq: AtomicU64::new(1),
        message_seq: AtomicU64::new(0),
        filters: connection_filters(&config, firewall.clone(), limits),
    });

    // Each session needs a socket and each delivery a socket: make sure
    // the descriptor limit allows max_connections before we promise it.
    let want = (config.server.max_connections + config.relay.concurrency) as u64 * 2 + 256;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got < want => tracing::warn!(
            wanted = want,
            got,
            "open-file limit is below what server.max_connections needs; raise LimitNOFILE / ulimit -n"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let metrics_addr = match &config.metrics {
        Some(mc) => {
            let mut samplers: Vec<crate::status::history::Sampler> = Vec::new();
            {
                let (m, spool) = (metrics.clone(), spool.clone());
                samplers.push(Box::new(move |now| {
                    let b = spool.backlog();
                    m.set_spool(b.messages as u64, b.bytes, b.oldest, now)
                }));
            }
            let health_content = content.clone();
            if let (Some(d), Some(content)) = (deferred, content) {
                let m = metrics.clone();
                samplers.push(Box::new(move |_| {
                    m.scanner_queue.set(d.backlog() as i64);
                    m.scan_deferring.set(i64::from(content.admission.over_budget()));
                }));
            }
            let history = Arc::new(crate::status::history::History::new(
                metrics.clone(),
                samplers,
                firewall.clone(),
                config.server.hostname.clone(),
            ));
            background.spawn(history.clone().run(shutdown.child_token()));
            let health = Arc::new(crate::status::health::Health {
                spool_dir: config.spool.dir.clone(),
                transport: transport.clone(),
                content: health_content,
                timeout: mc.probe_timeout,
            });
            let l = crate::status::http::bind(mc.listen)
                .with_context(|| format!("metrics.listen: cannot bind {}", mc.listen))?;
            let addr = l.local_addr()?;
            let endpoints = Arc::new(crate::status::http::Endpoints::new(metrics.clone(), history, health));
            background.spawn(crate::status::http::serve(l, endpoints, shutdown.child_token()));
            tracing::info!(listen = %addr, "metrics listener started");
            Some(addr)
        }
        None => None,
    };
    let limit = Arc::new(Semaphore::new(config.server.max_connections));
    let mut local_addrs = Vec::new();
    for addr in &config.server.listen {
        let l = crate::listener::bind(*addr).with_context(|| format!("server.listen: cannot bind {addr}"))?;
        local_addrs.push(l.local_addr()?);
        sessions.spawn(crate::listener::accept_loop(
            l,
            shared.clone(),
            limit.clone(),
            sessions.clone(),
        ));
    }
    tracing::info!(listen = ?local_addrs, next_hop = %config.relay.next_hop, "sluice started");
    Ok(Running {
        local_addrs,
        metrics_addr,
        events,
        recipients,
        config,
        shutdown,
        sessions,
        background,
        spool,
        transport,
        spam,
    })
}

impl Running {
    /// Graceful shutdown: stop accepting, 421 at command boundaries, let
    /// DATA in progress and in-flight deliveries finish within
    /// `timeouts.shutdown_grace`, then flush the spool.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.shutdown.cancel();
        self.sessions.close();
        self.background.close();
        let grace = self.config.timeouts.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            self.sessions.wait().await;
            self.background.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                ?grace,
                "grace period over; exiting with work in progress (it stays spooled)"
            );
        }
        self.transport.close_idle().await;
        let spool = self.spool.clone();
        let _ = tokio::task::spawn_blocking(move || spool.close()).await;
        tracing::info!("stopped");
    }

    /// Reloads the recipient table, spam rules and model now (SIGHUP).
    /// What fails to load is reported; the running version stays.
    pub fn reload(&self) {
        if let Err(e) = self.recipients.reload(true) {
            tracing::warn!(error = %e, "recipient table reload failed; keeping the previous table")
        }
        if let Some(spam) = &self.spam
            && let Err(e) = spam.reload(true)
        {
            self.events.emit(crate::events::Event::Warning {
                component: "spam",
                message: format!("spam rules/model not reloaded, keeping the running set: {e}"),
            });
        }
    }
}
