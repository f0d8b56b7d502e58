//! The content pipeline's parts: the content checks with clamd and the
//! deferred scanner, the spam filter with SPF/DKIM/DMARC, the quarantine.
//!
//! [`Held`] is built once (the quarantine, the deferred scanner and its
//! backlog, the incoming directory); [`content`], [`spam_filter`] and
//! [`pipeline`] are built again by each reload.

use std::sync::Arc;

use anyhow::Context as _;

use super::core::Core;
use crate::delivery::queue::QueueHandle;
use crate::pipeline::{HeaderLimits, Pipeline};
use crate::quarantine::Quarantine;
use crate::scan::ContentFilter;
use crate::scan::deferred::{DeferredHandle, DeferredScanner};
use crate::spam::filter::SpamFilter;
use crate::spool::Spool;
use crate::spool::incoming::IncomingDir;
use crate::swap::Swap;

/// The parts a reload keeps.
#[derive(Clone)]
pub(super) struct Held {
    pub spool: Arc<dyn Spool>,
    pub queue: QueueHandle,
    pub quarantine: Arc<Quarantine>,
    pub incoming: Arc<IncomingDir>,
    /// The content filter in use (a reload replaces it), when content
    /// checks are on.
    pub content: Option<Arc<Swap<ContentFilter>>>,
    pub deferred: Option<DeferredHandle>,
}

/// The content checks of `core.config` (their clamd health loop on the
/// core's scope): `None` when neither a scanner nor a banned list is
/// configured, unless `always`.
pub(super) fn content(core: &Core, always: bool) -> Option<Arc<ContentFilter>> {
    let c = &core.config;
    let (filter, clamd) = ContentFilter::from_config(c, core.metrics.clone());
    if !(always || filter.has_scanner() || !c.scan.banned.is_empty()) {
        return None;
    }
    if let Some(clamd) = clamd {
        core.spawn(|stop| clamd.health_loop(stop));
    }
    Some(Arc::new(filter))
}

/// The quarantine, the incoming directory, and the deferred scanner over
/// `content` (when content checks are on).
pub(super) fn held(
    core: &Core,
    spool: Arc<dyn Spool>,
    queue: QueueHandle,
    content: Option<Arc<ContentFilter>>,
) -> anyhow::Result<Held> {
    let c = &core.config;
    let quarantine = Arc::new(Quarantine::new(&c.scan.quarantine_dir));
    let content = content.map(|f| Arc::new(Swap::new(f)));
    let deferred = content.as_ref().map(|filter| {
        let (scanner, handle) = DeferredScanner::new(
            filter.clone(),
            spool.clone(),
            queue.clone(),
            quarantine.clone(),
            core.events.clone(),
            filter.load().capacity(),
            core.shutdown.child_token(),
        );
        core.background.spawn(scanner.run());
        handle
    });
    let incoming = IncomingDir::open(&c.spool.dir, c.server.body_memory)
        .with_context(|| format!("spool.dir: cannot prepare {}/incoming", c.spool.dir.display()))?;
    Ok(Held {
        spool,
        queue,
        quarantine,
        incoming: Arc::new(incoming),
        content,
        deferred,
    })
}

/// The end of DATA for one generation of the configuration.
pub(super) fn pipeline(
    core: &Core,
    held: &Held,
    content: Option<Arc<ContentFilter>>,
    spam: Option<Arc<SpamFilter>>,
) -> Arc<Pipeline> {
    let c = &core.config;
    Arc::new(Pipeline {
        limits: HeaderLimits {
            max_header_size: c.server.max_header_size,
            max_received_headers: c.server.max_received_headers,
        },
        min_free: c.spool.min_free,
        content,
        deferred: held.deferred.clone(),
        spam,
        spool: held.spool.clone(),
        check_memory: core.body_budget.clone(),
        incoming: Some(held.incoming.clone()),
        queue: held.queue.clone(),
        quarantine: held.quarantine.clone(),
        events: core.events.clone(),
    })
}

/// The loaded rules and model with SPF/DKIM/DMARC over the shared
/// resolver; reloaded when their files change.
pub(super) fn spam_filter(
    core: &Core,
    loaded: Option<SpamFilter>,
    dns: Option<hickory_resolver::TokioResolver>,
) -> anyhow::Result<Option<Arc<SpamFilter>>> {
    let Some(f) = loaded else {
        return Ok(None);
    };
    let filter = Arc::new(match super::authenticator(&core.config, false, dns)? {
        Some(auth) => f.with_auth(auth.with_health(core.dns_health.clone(), core.metrics.clone())),
        None => f,
    });
    let events = core.events.clone();
    let watched = filter.clone();
    core.spawn(move |stop| {
        watched.watch(stop, move |message| {
            events.emit(crate::events::Event::Warning {
                component: "spam",
                message,
            })
        })
    });
    Ok(Some(filter))
}
