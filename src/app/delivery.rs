//! The delivery subsystem: the router (routes, default next hop, bounces),
//! the queue and its handle, and recovery of the spool.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::core::Core;
use crate::delivery::queue::{Queue, QueueHandle};
use crate::delivery::route::{Router, Routes};
use crate::spool::Spool;

pub(super) struct Delivery {
    pub queue: Queue,
    pub handle: QueueHandle,
}

/// Per-domain routes, the default next hop, and where DSNs to outside
/// senders go (a bounce relay, or MX lookup through `dns`).
/// `recovered`: the signal of the router it replaces (the queue waits on
/// it), if any.
pub(super) fn router(
    core: &Core,
    dns: Option<&hickory_resolver::TokioResolver>,
    recovered: Option<std::sync::Arc<tokio::sync::Notify>>,
) -> anyhow::Result<Router> {
    let signal = recovered.unwrap_or_default();
    Router::from_config_signalling(&core.config, dns, &core.metrics, signal)
        .map_err(|e| anyhow::anyhow!("dns.resolver: {e}"))
}

/// The queue over `transport` (the router in use; a reload replaces it).
pub(super) fn build(core: &Core, spool: Arc<dyn Spool>, transport: Arc<Routes>) -> Delivery {
    let c = &core.config;
    let (queue, handle) = Queue::new(
        spool,
        transport.clone(),
        c.relay.clone(),
        c.server.hostname.clone(),
        core.events.clone(),
    );
    let queue = queue.with_body_budget(core.body_budget.clone());
    Delivery { queue, handle }
}

/// Runs the queue. It stops launching attempts on shutdown but lets
/// in-flight ones finish: it watches its own token, cancelled once the
/// sessions are gone (mail accepted just before the stop is tried).
pub(super) fn start_queue(core: &Core, queue: Queue, handle: QueueHandle) {
    let queue_stop = CancellationToken::new();
    let socket = core.config.spool.dir.join("queue.sock");
    let (events, ask) = (core.events.clone(), handle.clone());
    core.spawn(move |stop| async move {
        if let Err(e) = crate::delivery::queue::control::serve(ask, &socket, stop).await {
            events.emit(crate::events::Event::Warning {
                component: "queue",
                message: format!("queue socket {}: {e}", socket.display()),
            });
        }
    });
    core.background.spawn(queue.run(handle, queue_stop.clone()));
    let (shutdown, sessions) = (core.shutdown.clone(), core.sessions.clone());
    core.background.spawn(async move {
        shutdown.cancelled().await;
        sessions.close();
        sessions.wait().await;
        queue_stop.cancel();
    });
}
