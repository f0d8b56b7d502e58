//! Wiring: builds each subsystem from the [`Config`] (one builder per
//! subsystem: `delivery`, `pipeline`, `front` (checks, connection filters,
//! listeners), `status` (firewall, metrics listener)), starts their tasks,
//! and shuts them down in order.

mod core;
mod daemon;
mod delivery;
mod front;
mod milter;
mod pipeline;
mod policy_server;
mod preflight;
mod reload;
mod status;

pub use daemon::{Answer as DaemonAnswer, record, request_learn, request_reload, socket_path as daemon_socket};
pub use preflight::{Preflight, preflight};
pub use reload::ReloadResult;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::route::Routes;
use crate::events::EventBus;
use crate::smtp::session::Front;
use crate::spool::Spool;
use crate::spool::fs::FsSpool;

/// A running sluice: its listening addresses and the handles to stop it.
pub struct Running {
    pub local_addrs: Vec<SocketAddr>,
    /// Where `[policy_server]` listens (empty without it).
    pub policy_addrs: Vec<SocketAddr>,
    /// Where the milter listens (`[milter]`; empty without it).
    pub milter_addrs: Vec<SocketAddr>,
    /// Where `/metrics`, `/readyz` and the status page are served.
    pub metrics_addr: Option<SocketAddr>,
    pub events: EventBus,
    config: Arc<Config>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    background: TaskTracker,
    spool: Arc<FsSpool>,
    reloader: Arc<reload::Reloader>,
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

/// Why a port below 1024 would not bind.
const LOW_PORT: &str =
    "Permission denied — ports below 1024 need CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit) or root";

/// A listener that would not bind, in the admin's words: the key, the
/// address, and what to do about the usual causes (a port below 1024
/// without the capability, a port someone else holds).
fn bind_error(key: &str, addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind;
    let port = addr.port();
    let why = match e.kind() {
        ErrorKind::PermissionDenied if port != 0 && port < 1024 => LOW_PORT.to_string(),
        ErrorKind::PermissionDenied => "Permission denied".to_string(),
        ErrorKind::AddrInUse => format!(
            "address already in use — another process listens on port {port}; \
             see `ss -ltnp 'sport = :{port}'`"
        ),
        ErrorKind::AddrNotAvailable => format!("address not available — {} is not an address of this host", addr.ip()),
        _ => e.to_string(),
    };
    anyhow::anyhow!("{key}: cannot bind {addr}: {why}")
}

/// Loads the files the configuration names ([`preflight`]), binds the
/// listeners, recovers the spool and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let pre = preflight(&config)?;
    start_with(config, pre, None).await
}

/// [`start`] with the files already loaded; `path` is the configuration
/// file a reload re-reads (`None`: a reload re-reads only the files the
/// configuration names).
pub async fn start_with(config: Config, pre: Preflight, path: Option<PathBuf>) -> anyhow::Result<Running> {
    let core = core::Core::new(config);
    let sp = &core.config.spool;
    let fsync_latency = Some(core.metrics.spool_fsync.clone());
    let recovered = FsSpool::open_with(&sp.dir, sp.fsync, sp.segment_size, fsync_latency)
        .with_context(|| format!("spool.dir: cannot open {}", sp.dir.display()))?;
    let spool = recovered.spool.clone();
    let spool_dyn: Arc<dyn Spool> = spool.clone();
    // The first generation of what a reload rebuilds; what is built once
    // (spool, queue, deferred scanner, firewall, status) lives on `core`.
    let next = core.generation(core.config.clone());
    let dns = reload::resolver(&next)?;
    let routes = Arc::new(Routes::new(delivery::router(&next, dns.as_ref(), None)?));
    let delivery = delivery::build(&core, spool_dyn.clone(), routes.clone());
    let content = pipeline::content(&next, false);
    let held = pipeline::held(&core, spool_dyn, delivery.handle.clone(), content)?;
    let firewall = status::firewall(&core);
    let lasts = reload::Lasts {
        lasting: front::Lasting::new(&core),
        core: core.clone(),
        held,
        firewall,
        routes,
    };
    let recipients = pre.recipients.clone();
    let built = reload::build(&next, &lasts, pre, true, dns)?;
    // Recovered mail is tried at once, not after a backoff; mail accepted
    // before its scan is scanned first.
    if !recovered.pending.is_empty() {
        tracing::info!(
            messages = recovered.pending.len(),
            "recovered undelivered messages from the spool"
        );
    }
    for s in recovered.pending {
        match &lasts.held.deferred {
            Some(d) if s.envelope.scan_pending => d.enqueue(s),
            _ => delivery.handle.enqueue(s),
        }
    }
    let queue = delivery.handle.clone();
    delivery::start_queue(&core, delivery.queue, delivery.handle);
    let front = Arc::new(Front::new(built.shared));
    let watched = status::Watched {
        spool: spool.clone(),
        transport: lasts.routes.clone(),
        queue,
        content: lasts.held.content.clone(),
        deferred: lasts.held.deferred.clone(),
        firewall: lasts.firewall.clone(),
    };
    let metrics_addr = status::listen(&core, watched)?;
    let local_addrs = front::listen(&core, front.clone())?;
    let policy_addrs = policy_server::listen(&core, front.clone(), lasts.firewall.clone())?;
    let milter_addrs = milter::listen(&core, front.clone(), lasts.firewall.clone().map(|f| f as _))?;
    let reloader = Arc::new(reload::Reloader {
        lasts,
        front,
        path,
        current: tokio::sync::Mutex::new(reload::Generation {
            config: core.config.clone(),
            scope: next.scope.clone(),
            recipients,
        }),
    });
    let (r, socket, events) = (reloader.clone(), daemon::socket_path(&core.config), core.events.clone());
    core.spawn(move |stop| async move {
        if let Err(e) = daemon::serve(r, socket.clone(), stop).await {
            events.emit(crate::events::Event::Warning {
                component: "control",
                message: format!("control socket {}: {e}", socket.display()),
            });
        }
    });
    tracing::info!(listen = ?local_addrs, next_hop = %core.config.relay.next_hop, "sluice started");
    Ok(Running {
        local_addrs,
        policy_addrs,
        milter_addrs,
        metrics_addr,
        events: core.events,
        config: core.config,
        shutdown: core.shutdown,
        sessions: core.sessions,
        background: core.background,
        spool,
        reloader,
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
        self.reloader.lasts.routes.close_idle().await;
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

    /// Re-reads the configuration file (SIGHUP, `sluice reload`) and
    /// applies it; see [`reload`].
    pub async fn reload(&self) -> ReloadResult {
        self.reloader.reload().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_name_the_capability_or_the_port() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let addr: SocketAddr = "0.0.0.0:25".parse().unwrap();
        assert_eq!(
            bind_error("server.listen", addr, &denied).to_string(),
            "server.listen: cannot bind 0.0.0.0:25: Permission denied — ports below 1024 need \
             CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit) or root"
        );
        let high: SocketAddr = "127.0.0.1:2525".parse().unwrap();
        assert_eq!(
            bind_error("server.listen", high, &denied).to_string(),
            "server.listen: cannot bind 127.0.0.1:2525: Permission denied"
        );
        // A port that is taken, for real.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = std::net::TcpListener::bind(addr).unwrap_err();
        let port = addr.port();
        assert_eq!(
            bind_error("metrics.listen", addr, &e).to_string(),
            format!(
                "metrics.listen: cannot bind {addr}: address already in use — another process listens on \
                 port {port}; see `ss -ltnp 'sport = :{port}'`"
            )
        );
    }
}
