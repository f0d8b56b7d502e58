//! The delivery queue: takes stored messages, runs attempts with bounded
//! concurrency, retries temporary failures with exponential backoff,
//! bounces permanent failures and expired mail, and marks progress in the
//! spool so a restart resumes where this run stopped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Transport;
use super::client::RcptStatus;
use crate::config::Relay;
use crate::events::EventBus;
use crate::spool::incoming::BodyBudget;
use crate::spool::{Spool, Stored};

/// Body octets kept in memory by messages waiting for their turn; beyond
/// this, bodies are dropped and re-read from the spool when their turn
/// comes (large bodies are read back from the page cache, usually).
const READY_BODY_BYTES: usize = 16 << 20;

/// Bodies larger than this are not kept in memory between the spool and
/// their delivery (nor for a retry): they are read back when their turn
/// comes, holding their size of the body budget while they are sent.
const LARGE_BODY: usize = 1 << 20;

/// After a successful delivery, deferred mail is retried at once, at most
/// this often. (A next hop reached again after it was down, by a delivery
/// or a health probe such as `/readyz`, releases it at once too.)
const FLUSH_ON_SUCCESS_EVERY: Duration = Duration::from_secs(5);

/// Messages ready for an attempt, in order, and the body octets they hold.
#[derive(Default)]
struct Ready {
    jobs: VecDeque<Job>,
    body_bytes: usize,
}

impl Ready {
    fn push_back(&mut self, mut job: Job) {
        if let Some(b) = &job.stored.body {
            // A large body is read back from the spool when its turn comes,
            // under the body budget; only small ones wait in memory.
            if b.len() > LARGE_BODY || self.body_bytes + b.len() > READY_BODY_BYTES {
                job.stored.body = None;
            } else {
                self.body_bytes += b.len();
            }
        }
        self.jobs.push_back(job);
    }

    fn pop_front(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        self.body_bytes -= job.stored.body.as_ref().map_or(0, |b| b.len());
        Some(job)
    }

    /// Takes the message `id` out.
    fn take(&mut self, id: &str) -> Option<Job> {
        let i = self.jobs.iter().position(|j| j.stored.envelope.id == id)?;
        let job = self.jobs.remove(i)?;
        self.body_bytes -= job.stored.body.as_ref().map_or(0, |b| b.len());
        Some(job)
    }

    /// Keeps only the messages not yet tried.
    fn retain_fresh(&mut self) {
        self.jobs.retain(|j| j.attempts == 0);
        self.body_bytes = self
            .jobs
            .iter()
            .filter_map(|j| j.stored.body.as_ref())
            .map(|b| b.len())
            .sum();
    }
}

mod attempt;
mod command;
pub mod control;

use control::{Command, State, Waiting};

/// Handle to enqueue stored messages, and to ask the queue (`sluice queue`).
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Stored>,
    cmd: mpsc::UnboundedSender<Command>,
}

impl QueueHandle {
    /// A handle whose messages go to the returned receiver instead of a
    /// running queue (tests of the front end alone).
    pub fn detached() -> (QueueHandle, mpsc::UnboundedReceiver<Stored>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (cmd, _) = mpsc::unbounded_channel();
        (QueueHandle { tx, cmd }, rx)
    }

    pub fn enqueue(&self, s: Stored) {
        // Closed only at shutdown; the message stays in the spool.
        let _ = self.tx.send(s);
    }
}

struct Job {
    stored: Stored,
    attempts: u32,
    /// The next hop's last temporary reply.
    last_reply: Option<Arc<str>>,
}

impl Job {
    fn new(stored: Stored) -> Job {
        Job {
            stored,
            attempts: 0,
            last_reply: None,
        }
    }
}

/// Backoff: `initial * 2^(attempts-1)`, capped at `max`.
pub fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

pub struct Queue {
    /// Bodies read back from the spool take their size of it while they
    /// are sent (none: no limit).
    budget: Option<BodyBudget>,
    rx: mpsc::UnboundedReceiver<Stored>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    spool: Arc<dyn Spool>,
    transport: Arc<dyn Transport>,
    cfg: Relay,
    hostname: String,
    events: EventBus,
}

impl Queue {
    pub fn new(
        spool: Arc<dyn Spool>,
        transport: Arc<dyn Transport>,
        cfg: Relay,
        hostname: String,
        events: EventBus,
    ) -> (Queue, QueueHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        (
            Queue {
                budget: None,
                rx,
                cmd_rx,
                spool,
                transport,
                cfg,
                hostname,
                events,
            },
            QueueHandle { tx, cmd },
        )
    }

    /// Bodies read back from the spool for an attempt hold their size of
    /// `budget` while they are sent.
    pub fn with_body_budget(mut self, budget: BodyBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Runs until `shutdown`; then waits for in-flight attempts (the caller
    /// bounds this with the grace period). Undelivered mail stays spooled.
    pub async fn run(mut self, handle: QueueHandle, shutdown: CancellationToken) {
        let this = Arc::new(QueueShared {
            budget: self.budget.clone(),
            spool: self.spool.clone(),
            transport: self.transport.clone(),
            cfg: self.cfg.clone(),
            hostname: self.hostname.clone(),
            events: self.events.clone(),
            handle,
        });
        let mut ready = Ready::default();
        let mut waiting = Waiting::default();
        let mut active: std::collections::HashMap<String, (control::Listed, crate::spool::SpoolRef)> =
            std::collections::HashMap::new();
        let mut inflight: JoinSet<(Job, Vec<(usize, RcptStatus)>)> = JoinSet::new();
        let mut last_flush = Instant::now();
        let recovered = self.transport.recovered();
        loop {
            while inflight.len() < self.cfg.concurrency {
                let Some(job) = ready.pop_front() else { break };
                active.insert(
                    job.stored.envelope.id.clone(),
                    (job.listed(State::Active, None), job.stored.sref),
                );
                let shared = this.clone();
                inflight.spawn(async move { shared.attempt(job).await });
            }
            let next_due = waiting.next_due();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(res) = inflight.join_next(), if !inflight.is_empty() => {
                    let Ok((job, results)) = res else { continue };
                    active.remove(&job.stored.envelope.id);
                    let delivered = results.iter().any(|(_, st)| matches!(st, RcptStatus::Delivered(_)));
                    if let Some((job, delay)) = this.settle(job, results).await {
                        waiting.park(job, Instant::now() + delay);
                    }
                    // The next hop takes mail again: what waits for a
                    // retry goes now, not at its next backoff step (at
                    // most every few seconds).
                    if delivered && !waiting.is_empty() && last_flush.elapsed() >= FLUSH_ON_SUCCESS_EVERY {
                        last_flush = Instant::now();
                        for job in waiting.flush(None) {
                            ready.push_back(job);
                        }
                    }
                }
                msg = self.rx.recv() => {
                    let Some(stored) = msg else { break };
                    ready.push_back(Job::new(stored));
                }
                Some(cmd) = self.cmd_rx.recv() => {
                    this.command(cmd, &mut ready, &mut waiting, &active);
                }
                // A next hop that was down is reached again (a delivery
                // or a health probe got through): what waits goes now.
                _ = recovered_signal(&recovered) => {
                    last_flush = Instant::now();
                    for job in waiting.flush(None) {
                        ready.push_back(job);
                    }
                }
                _ = sleep_until(next_due), if next_due.is_some() => {
                    for job in waiting.take_due(Instant::now()) {
                        ready.push_back(job);
                    }
                }
            }
        }
        // Shutdown: no new retries, but mail accepted just before the stop
        // gets its first attempt, and in-flight attempts finish (the caller
        // bounds all of this with the grace period; what is left stays
        // spooled for the next start).
        while let Ok(stored) = self.rx.try_recv() {
            ready.push_back(Job::new(stored));
        }
        ready.retain_fresh();
        loop {
            while inflight.len() < self.cfg.concurrency {
                let Some(job) = ready.pop_front() else { break };
                let shared = this.clone();
                inflight.spawn(async move { shared.attempt(job).await });
            }
            let Some(res) = inflight.join_next().await else {
                break;
            };
            if let Ok((job, results)) = res {
                let _ = this.settle(job, results).await;
            }
        }
    }
}

async fn recovered_signal(n: &Option<Arc<tokio::sync::Notify>>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct QueueShared {
    budget: Option<BodyBudget>,
    spool: Arc<dyn Spool>,
    transport: Arc<dyn Transport>,
    cfg: Relay,
    hostname: String,
    events: EventBus,
    handle: QueueHandle,
}

#[cfg(test)]
mod tests;
