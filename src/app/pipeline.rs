//! The content pipeline's parts: the content checks with clamd and the
//! deferred scanner, the spam filter with SPF/DKIM/DMARC, the quarantine.

use std::sync::Arc;

use anyhow::Context as _;

use super::core::Core;
use crate::delivery::queue::QueueHandle;
use crate::pipeline::{HeaderLimits, Pipeline};
use crate::scan::ContentFilter;
use crate::scan::deferred::{DeferredHandle, DeferredScanner};
use crate::spam::filter::SpamFilter;
use crate::spool::Spool;
use crate::spool::incoming::IncomingDir;

pub(super) struct Parts {
    pub pipeline: Arc<Pipeline>,
    pub content: Option<Arc<ContentFilter>>,
    pub deferred: Option<DeferredHandle>,
    pub spam: Option<Arc<SpamFilter>>,
}

pub(super) fn build(
    core: &Core,
    spool: Arc<dyn Spool>,
    queue: QueueHandle,
    spam: Option<SpamFilter>,
    dns: Option<hickory_resolver::TokioResolver>,
) -> anyhow::Result<Parts> {
    let c = &core.config;
    let quarantine = Arc::new(crate::quarantine::Quarantine::new(&c.scan.quarantine_dir));
    // Content checks: built when a scanner or a banned list is configured.
    let (filter, clamd) = ContentFilter::from_config(c, core.metrics.clone());
    if let Some(clamd) = clamd {
        core.spawn(|stop| clamd.health_loop(stop));
    }
    let capacity = filter.capacity();
    let content = (filter.has_scanner() || !c.scan.banned.is_empty()).then(|| Arc::new(filter));
    let deferred = content.as_ref().map(|filter| {
        let (scanner, handle) = DeferredScanner::new(
            filter.clone(),
            spool.clone(),
            queue.clone(),
            quarantine.clone(),
            core.events.clone(),
            capacity,
            core.shutdown.child_token(),
        );
        core.background.spawn(scanner.run());
        handle
    });
    let spam = spam_filter(core, spam, dns)?;
    let pipeline = Arc::new(Pipeline {
        limits: HeaderLimits {
            max_header_size: c.server.max_header_size,
            max_received_headers: c.server.max_received_headers,
        },
        min_free: c.spool.min_free,
        content: content.clone(),
        deferred: deferred.clone(),
        spam: spam.clone(),
        spool,
        check_memory: core.body_budget.clone(),
        incoming: Some(
            IncomingDir::open(&c.spool.dir, c.server.body_memory)
                .with_context(|| format!("spool.dir: cannot prepare {}/incoming", c.spool.dir.display()))?,
        ),
        queue,
        quarantine,
        events: core.events.clone(),
    });
    Ok(Parts {
        pipeline,
        content,
        deferred,
        spam,
    })
}

/// The loaded rules and model with SPF/DKIM/DMARC over the shared
/// resolver; reloaded when their files change.
fn spam_filter(
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
