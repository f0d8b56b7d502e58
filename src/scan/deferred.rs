//! The scan of messages accepted before their virus scan (admission control
//! or `scan.on_failure = "hold"`). They wait in the spool; a clean verdict
//! hands them to delivery, a virus or banned part sends them to the
//! quarantine (never to the next hop), and a failed scan is retried later:
//! an unscanned message is never delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{ContentFilter, Verdict};
use crate::delivery::queue::QueueHandle;
use crate::events::{Cause, ContentKind, Event, EventBus, ScanMode, UnscannableAction};
use crate::quarantine::Quarantine;
use crate::spool::{Spool, Stored};

/// Held messages whose bodies stay in memory; beyond this the body is
/// dropped and read back from the spool when its scan comes.
const MAX_BODIES_IN_MEMORY: usize = 1000;

/// Hands accepted, unscanned messages to the deferred scanner.
#[derive(Clone)]
pub struct DeferredHandle {
    tx: mpsc::UnboundedSender<Stored>,
    backlog: Arc<AtomicUsize>,
}

impl DeferredHandle {
    pub fn enqueue(&self, mut s: Stored) {
        if self.backlog.fetch_add(1, Ordering::Relaxed) >= MAX_BODIES_IN_MEMORY {
            s.body = None;
        }
        // Closed only at shutdown; the message stays in the spool.
        let _ = self.tx.send(s);
    }

    /// Messages waiting for their deferred scan.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }
}

pub struct DeferredScanner {
    rx: mpsc::UnboundedReceiver<Stored>,
    slots: Arc<Semaphore>,
    worker: Arc<Worker>,
}

impl DeferredScanner {
    /// `filter` is the current content filter (a reload replaces it).
    pub fn new(
        filter: Arc<crate::swap::Swap<ContentFilter>>,
        spool: Arc<dyn Spool>,
        queue: QueueHandle,
        quarantine: Arc<Quarantine>,
        events: EventBus,
        concurrency: usize,
        stop: CancellationToken,
    ) -> (DeferredScanner, DeferredHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = DeferredHandle {
            tx,
            backlog: Arc::new(AtomicUsize::new(0)),
        };
        let worker = Arc::new(Worker {
            retry: filter.load().cfg.retry,
            filter,
            spool,
            queue,
            quarantine,
            events,
            handle: handle.clone(),
            stop,
        });
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        (DeferredScanner { rx, slots, worker }, handle)
    }

    /// Scans held messages, `concurrency` at a time, until stopped.
    pub async fn run(mut self) {
        let stop = self.worker.stop.clone();
        loop {
            let stored = tokio::select! {
                s = self.rx.recv() => match s { Some(s) => s, None => return },
                _ = stop.cancelled() => return,
            };
            self.worker.handle.backlog.fetch_sub(1, Ordering::Relaxed);
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                return;
            };
            let w = self.worker.clone();
            tokio::spawn(async move {
                let _permit = permit;
                w.process(stored).await;
            });
        }
    }
}

struct Worker {
    filter: Arc<crate::swap::Swap<ContentFilter>>,
    spool: Arc<dyn Spool>,
    queue: QueueHandle,
    quarantine: Arc<Quarantine>,
    events: EventBus,
    retry: Duration,
    handle: DeferredHandle,
    stop: CancellationToken,
}

impl Worker {
    async fn process(&self, stored: Stored) {
        let id = stored.envelope.id.clone();
        let ip = stored.envelope.client_ip;
        let body = match &stored.body {
            Some(b) => b.clone(),
            None => {
                let (spool, sref) = (self.spool.clone(), stored.sref);
                match tokio::task::spawn_blocking(move || spool.read_body(sref)).await {
                    Ok(Ok(b)) => Arc::new(b),
                    Ok(Err(e)) => {
                        tracing::error!(id = %id, error = %e, "held message unreadable; it stays in the spool");
                        return;
                    }
                    Err(_) => return,
                }
            }
        };
        let filter = self.filter.load();
        let verdict = filter.check(&body, Some(stored.envelope.client_ip)).await;
        let reason = match verdict {
            Ok(Verdict::Clean) => {
                tracing::debug!(id = %id, "deferred scan: clean");
                self.queue.enqueue(stored);
                return;
            }
            Err(e) => {
                self.events.emit(Event::ScanFailed {
                    session: 0,
                    ip,
                    id: id.clone(),
                    tx: crate::events::Tx::of(&stored.envelope),
                    error: format!("{e} (message held; retry in {:?})", self.retry),
                    held: true,
                });
                self.later(stored);
                return;
            }
            Ok(Verdict::Virus(name)) => {
                self.events.emit(Event::VirusFound {
                    session: 0,
                    ip,
                    id: id.clone(),
                    tx: crate::events::Tx::of(&stored.envelope),
                    name: name.clone(),
                    mode: ScanMode::Deferred,
                });
                Cause::Virus(name)
            }
            Ok(Verdict::Banned(what)) => {
                self.content_event(&stored.envelope, ContentKind::Banned, &what);
                Cause::Content(ContentKind::Banned, what)
            }
            Ok(Verdict::Malformed(what)) => {
                self.content_event(&stored.envelope, ContentKind::Malformed, &what);
                Cause::Content(ContentKind::Malformed, what)
            }
            Ok(Verdict::Unscannable(u)) => {
                // After acceptance "reject" can only mean the quarantine.
                let action = match filter.cfg.unscannable_for(Some(ip)) {
                    UnscannableAction::Accept => UnscannableAction::Accept,
                    _ => UnscannableAction::Quarantine,
                };
                self.events.emit(Event::Unscannable {
                    session: 0,
                    ip,
                    id: id.clone(),
                    tx: crate::events::Tx::of(&stored.envelope),
                    kind: u.kind,
                    what: u.what.clone(),
                    action,
                    mode: ScanMode::Deferred,
                });
                if action == UnscannableAction::Accept {
                    self.queue.enqueue(stored);
                    return;
                }
                Cause::Content(ContentKind::Unscannable, u.to_string())
            }
        };
        let (q, env, r) = (self.quarantine.clone(), stored.envelope.clone(), reason.clone());
        match tokio::task::spawn_blocking(move || q.put(&env, &r, &body)).await {
            Ok(Ok(())) => {
                self.spool.mark_done(stored.sref);
                let tx = crate::events::Tx::of(&stored.envelope);
                self.events.emit(Event::Quarantined { ip, id, tx, reason });
            }
            Ok(Err(e)) => {
                tracing::error!(id = %id, error = %e, "cannot quarantine; the message stays held");
                self.later(stored);
            }
            Err(_) => {}
        }
    }

    fn content_event(&self, env: &crate::mail::envelope::Envelope, kind: ContentKind, what: &str) {
        self.events.emit(Event::ContentRejected {
            session: 0,
            ip: env.client_ip,
            id: env.id.clone(),
            tx: crate::events::Tx::of(env),
            kind,
            what: what.to_string(),
            mode: ScanMode::Deferred,
        });
    }

    /// Tries again after `scan.retry`, unless shutting down (then the
    /// message waits in the spool for the next start).
    fn later(&self, stored: Stored) {
        let (handle, retry, stop) = (self.handle.clone(), self.retry, self.stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(retry) => handle.enqueue(stored),
                _ = stop.cancelled() => {}
            }
        });
    }
}
