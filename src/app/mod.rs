//! Wiring: builds each subsystem from the [`Config`] (one builder per
//! subsystem: `delivery`, `pipeline`, `front` (checks, connection filters,
//! listeners), `status` (firewall, metrics listener)), starts their tasks,
//! and shuts them down in order.

mod core;
mod delivery;
mod front;
mod pipeline;
mod preflight;
mod status;

pub use preflight::{Preflight, preflight};

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::route::Router;
use crate::events::EventBus;
use crate::policy::recipients::Directory;
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
    log_stop: CancellationToken,
    log_task: TaskTracker,
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
        None => crate::dns::tokio_resolver(
            config.dns.resolver,
            config.dns.timeout,
            config.dns.negative_ttl,
            config.dns.min_ttl,
        )
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

/// Loads the files the configuration names ([`preflight`]), binds the
/// listeners, recovers the spool and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let pre = preflight(&config)?;
    start_with(config, pre).await
}

/// [`start`] with the files already loaded.
pub async fn start_with(config: Config, pre: Preflight) -> anyhow::Result<Running> {
    let core = core::Core::new(config);
    let Preflight { tls, recipients, spam } = pre;
    let r = recipients.clone();
    let every = core.config.recipients.reload_interval;
    core.spawn(move |stop| r.watch(every, stop));
    let sp = &core.config.spool;
    let fsync_latency = Some(core.metrics.spool_fsync.clone());
    let recovered = FsSpool::open_with(&sp.dir, sp.fsync, sp.segment_size, fsync_latency)
        .with_context(|| format!("spool.dir: cannot open {}", sp.dir.display()))?;
    let spool = recovered.spool.clone();
    let spool_dyn: Arc<dyn Spool> = spool.clone();
    let dns = core.resolver()?;
    if let Some(inner) = &dns {
        let probe = crate::dns::HickoryResolver::from_resolver(inner.clone()).with_health(core.dns_health.clone());
        core.spawn(move |stop| crate::dns::probe_while_troubled(probe, stop));
    }
    let delivery = delivery::build(&core, spool_dyn.clone(), dns.as_ref())?;
    let parts = pipeline::build(&core, spool_dyn, delivery.handle.clone(), spam, dns.clone())?;
    let firewall = status::firewall(&core);
    // Recovered mail is tried at once, not after a backoff; mail accepted
    // before its scan is scanned first.
    if !recovered.pending.is_empty() {
        tracing::info!(
            messages = recovered.pending.len(),
            "recovered undelivered messages from the spool"
        );
    }
    for s in recovered.pending {
        match &parts.deferred {
            Some(d) if s.envelope.scan_pending => d.enqueue(s),
            _ => delivery.handle.enqueue(s),
        }
    }
    let queue = delivery.handle.clone();
    delivery::start_queue(&core, delivery.queue, delivery.handle);
    let limits = front::limits(&core);
    let checks = front::checks(&core, recipients.clone(), dns, limits.clone())?;
    let filters = front::connection_filters(&core, firewall.clone(), limits);
    let shared = front::shared(&core, checks, parts.pipeline, tls, filters);
    let watched = status::Watched {
        spool: spool.clone(),
        transport: delivery.transport.clone(),
        queue,
        content: parts.content,
        deferred: parts.deferred,
        firewall,
    };
    let metrics_addr = status::listen(&core, watched)?;
    let local_addrs = front::listen(&core, shared)?;
    tracing::info!(listen = ?local_addrs, next_hop = %core.config.relay.next_hop, "sluice started");
    Ok(Running {
        local_addrs,
        metrics_addr,
        events: core.events,
        recipients,
        config: core.config,
        shutdown: core.shutdown,
        sessions: core.sessions,
        background: core.background,
        spool,
        transport: delivery.transport,
        spam: parts.spam,
        log_stop: core.log_stop,
        log_task: core.log_task,
    })
}

/// How long the event log may take to write what is left at exit.
const LOG_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

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
        // Last, the event log: what happened during the grace period is
        // written too.
        self.log_stop.cancel();
        if tokio::time::timeout(LOG_DRAIN, self.log_task.wait()).await.is_err() {
            tracing::warn!("the event log did not drain in time");
        }
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
