//! The firewall service and the status listener (metrics, readiness, the
//! status page and its history).

use std::net::SocketAddr;
use std::sync::Arc;

use super::core::Core;
use crate::delivery::Transport;
use crate::delivery::queue::QueueHandle;
use crate::delivery::route::Routes;
use crate::firewall::service::Firewall;
use crate::scan::ContentFilter;
use crate::scan::deferred::DeferredHandle;
use crate::spool::fs::FsSpool;
use crate::status::history::{History, Sampler, Watch};
use crate::swap::Swap;

/// The firewall reads the events; the listener asks it first. Its control
/// socket serves `sluice bans`. What an exporter not in use (or the
/// firewall, when off) left in the kernel is removed first.
pub(super) fn firewall(core: &Core) -> Option<Arc<Firewall>> {
    let (names, in_use) = (
        core.config.kernel_names.clone(),
        core.config.firewall.as_ref().and_then(|f| f.kernel_exporter()),
    );
    tokio::task::spawn_blocking(move || crate::firewall::kernel::remove_unused(&names, in_use));
    let cfg = core.config.firewall.clone()?;
    let fw = Arc::new(Firewall::new(cfg, core.events.clone(), core.state.clone()));
    let run = fw.clone();
    core.spawn(move |stop| run.run(stop));
    // `[cluster]`: bans decided here go to the other nodes, and theirs
    // come here, through the ban stream.
    if let Some(cc) = core.config.cluster.clone() {
        let outbox = Arc::new(crate::firewall::cluster::Outbox::new(10_000, core.metrics.clone()));
        fw.publish_to(outbox.clone());
        let bus = fw.clone();
        core.spawn(move |stop| crate::firewall::cluster::run(bus, cc, outbox, stop));
    }
    let (control, path, events) = (fw.clone(), fw.cfg.control_socket.clone(), core.events.clone());
    core.spawn(move |stop| async move {
        if let Err(e) = crate::firewall::control::serve(control, &path, stop).await {
            events.emit(crate::events::Event::Warning {
                component: "firewall",
                message: format!("control socket {}: {e}", path.display()),
            });
        }
    });
    Some(fw)
}

/// What the status listener watches.
pub(super) struct Watched {
    pub spool: Arc<FsSpool>,
    pub transport: Arc<Routes>,
    /// Asked for its messages, counted per next hop.
    pub queue: QueueHandle,
    pub content: Option<Arc<Swap<ContentFilter>>>,
    pub deferred: Option<DeferredHandle>,
    pub firewall: Option<Arc<Firewall>>,
}

/// The metrics listener (`[metrics]`), when on: its bound address.
pub(super) fn listen(core: &Core, w: Watched) -> anyhow::Result<Option<SocketAddr>> {
    let Some(mc) = &core.config.metrics else {
        return Ok(None);
    };
    let watch = Watch {
        firewall: w.firewall.clone(),
        router: Some(w.transport.clone()),
        queue: Some(w.queue.clone()),
        quarantine: Some(Arc::new(crate::quarantine::Quarantine::new(
            &core.config.scan.quarantine_dir,
        ))),
    };
    let history = Arc::new(History::new(
        core.metrics.clone(),
        samplers(core, &w),
        watch,
        core.config.server.hostname.clone(),
    ));
    let h = history.clone();
    core.spawn(move |stop| h.run(stop));
    let health = Arc::new(crate::status::health::Health {
        spool_dir: core.config.spool.dir.clone(),
        transport: w.transport as Arc<dyn Transport>,
        content: w.content,
        dns: Some(core.dns_health.clone()),
        firewall: w.firewall.clone(),
        timeout: mc.probe_timeout,
    });
    let l = crate::status::http::bind(mc.listen).map_err(|e| super::bind_error("metrics.listen", mc.listen, &e))?;
    let addr = l.local_addr()?;
    let endpoints = Arc::new(crate::status::http::Endpoints::new(
        core.metrics.clone(),
        history,
        health,
    ));
    core.spawn(move |stop| crate::status::http::serve(l, endpoints, stop));
    tracing::info!(listen = %addr, "metrics listener started");
    Ok(Some(addr))
}

/// The gauges sampled each second: the spool backlog, and the deferred
/// scans' backlog and admission state.
fn samplers(core: &Core, w: &Watched) -> Vec<Sampler> {
    let mut samplers: Vec<Sampler> = Vec::new();
    let (m, spool) = (core.metrics.clone(), w.spool.clone());
    samplers.push(Box::new(move |now| {
        let b = spool.backlog();
        m.set_spool(b.messages as u64, b.bytes, b.oldest, now)
    }));
    if let (Some(d), Some(content)) = (w.deferred.clone(), w.content.clone()) {
        let m = core.metrics.clone();
        samplers.push(Box::new(move |_| {
            m.scanner_queue.set(d.backlog() as i64);
            m.scan_deferring.set(i64::from(content.load().admission.over_budget()));
        }));
    }
    samplers
}
