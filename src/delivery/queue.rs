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
use super::dsn::{self, Failure};
use crate::config::Relay;
use crate::events::{Event, EventBus, RcptOutcome, Tx};
use crate::mail::date::now_secs;
use crate::mail::envelope::{Envelope, Generated};
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

/// The diagnostic of a DSN for mail the admin returned (`sluice queue
/// bounce`).
const RETURNED: &str = "5.0.0 returned by the administrator";

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

impl QueueShared {
    /// An admin's command (`sluice queue`).
    fn command(
        self: &Arc<Self>,
        cmd: Command,
        ready: &mut Ready,
        waiting: &mut Waiting,
        active: &std::collections::HashMap<String, (control::Listed, crate::spool::SpoolRef)>,
    ) {
        let take = |ready: &mut Ready, waiting: &mut Waiting, id: &str| ready.take(id).or_else(|| waiting.take(id));
        match cmd {
            Command::List(tx) => {
                let mut out: Vec<control::Listed> = Vec::with_capacity(active.len() + ready.jobs.len() + waiting.len());
                out.extend(active.values().map(|(l, _)| l.clone()));
                out.extend(ready.jobs.iter().map(|j| j.listed(State::Ready, None)));
                waiting.entries(&mut out);
                let _ = tx.send(control::Listing::sorted(out));
            }
            Command::Flush(id, tx) => {
                self.transport.retry_now();
                let jobs = waiting.flush(id.as_deref());
                let n = jobs.len();
                for job in jobs {
                    ready.push_back(job);
                }
                self.admin("flush", id.unwrap_or_default(), n);
                let _ = tx.send(n);
            }
            Command::Hold(id, tx) => {
                let found = take(ready, waiting, &id).map(|job| waiting.hold(job)).is_some();
                self.admin("hold", id, usize::from(found));
                let _ = tx.send(found);
            }
            Command::Release(id, tx) => {
                self.transport.retry_now();
                let found = waiting.release(&id).map(|job| ready.push_back(job)).is_some();
                self.admin("release", id, usize::from(found));
                let _ = tx.send(found);
            }
            Command::Delete(id, tx) => {
                let found = match take(ready, waiting, &id) {
                    Some(job) => {
                        self.spool.mark_done(job.stored.sref);
                        true
                    }
                    None => false,
                };
                self.admin("delete", id, usize::from(found));
                let _ = tx.send(found);
            }
            Command::Show(id, tx) => {
                let found = active
                    .get(&id)
                    .cloned()
                    .map(|(l, sref)| (control::Entry::from(l), sref))
                    .or_else(|| {
                        let j = ready.jobs.iter().find(|j| j.stored.envelope.id == id)?;
                        Some((j.entry(State::Ready, None), j.stored.sref))
                    })
                    .or_else(|| waiting.find(&id));
                // The message as spooled (an admin's request: a blocking read
                // here is fine).
                let shown = found.map(|(entry, sref)| {
                    let body = self.spool.read_body(sref).unwrap_or_default();
                    (entry, body)
                });
                let _ = tx.send(shown);
            }
            Command::Bounce(id, tx) => {
                let Some(job) = take(ready, waiting, &id) else {
                    let _ = tx.send(None);
                    return;
                };
                // Reading the body and storing the DSN wait for the disk:
                // not in the queue's loop.
                let this = self.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Some(this.return_to_sender(job).await));
                });
            }
        }
    }

    /// `sluice queue bounce`: a failure DSN for every recipient still to
    /// deliver, to the sender, then the message is done. The null sender
    /// gets none (the message is just deleted). When the DSN cannot be
    /// stored, the message goes back to the queue.
    async fn return_to_sender(&self, job: Job) -> Result<control::Bounced, String> {
        let env = job.stored.envelope.clone();
        let failures: Vec<(usize, String, String)> = (0..env.rcpts.len())
            .filter(|&i| !job.stored.done[i])
            .map(|i| (i, "5.0.0".to_string(), RETURNED.to_string()))
            .collect();
        let built = match (&env.mail_from, failures.first()) {
            (Some(_), Some((first, ..))) => {
                let Some(original) = self.body(&job.stored).await else {
                    self.handle.enqueue(job.stored);
                    return Err(format!("cannot read {} from the spool; left in the queue", env.id));
                };
                let fs = dsn_failures(&env, &failures, None);
                dsn::build(
                    &env,
                    &fs,
                    &original,
                    &self.hostname,
                    format!("{}B{first}", env.id),
                    now_secs(),
                )
            }
            _ => None,
        };
        let outcome = match built {
            Some((denv, msg)) => {
                let to = denv.rcpts[0].addr.to_string();
                let dsn = denv.id.clone();
                match self.spool.store(denv, msg).await {
                    Ok(s) => {
                        self.events.emit(Event::BounceQueued {
                            id: env.id.clone(),
                            ip: env.client_ip,
                            tx: Tx::of(&env),
                            to: to.clone(),
                            rcpts: failures.len(),
                        });
                        self.handle.enqueue(s);
                        control::Bounced::Returned { to, dsn }
                    }
                    Err(e) => {
                        self.handle.enqueue(job.stored);
                        return Err(format!("cannot queue the DSN for {}: {e}; left in the queue", env.id));
                    }
                }
            }
            None if env.mail_from.is_none() => control::Bounced::NullSender,
            None => control::Bounced::NotRequested,
        };
        self.spool.mark_done(job.stored.sref);
        self.admin("bounce", env.id.clone(), 1);
        Ok(outcome)
    }

    /// An admin's command that changed something: an event (the log and
    /// `sluice trace` see it).
    fn admin(&self, action: &'static str, id: String, messages: usize) {
        if messages > 0 {
            self.events.emit(Event::QueueCommand { action, id, messages });
        }
    }

    async fn body(&self, stored: &Stored) -> Option<Arc<Vec<u8>>> {
        if let Some(b) = &stored.body {
            return Some(b.clone());
        }
        let spool = self.spool.clone();
        let sref = stored.sref;
        match tokio::task::spawn_blocking(move || spool.read_body(sref)).await {
            Ok(Ok(b)) => Some(Arc::new(b)),
            Ok(Err(e)) => {
                self.events.emit(Event::Warning {
                    component: "spool",
                    message: format!("{}: {e}", stored.envelope.id),
                });
                None
            }
            Err(_) => None,
        }
    }

    async fn attempt(&self, mut job: Job) -> (Job, Vec<(usize, RcptStatus)>) {
        job.attempts += 1;
        let idx: Vec<usize> = (0..job.stored.done.len()).filter(|&i| !job.stored.done[i]).collect();
        // A body read back from the spool takes its size of the budget
        // while it is sent: twenty deliveries of 25 MiB at once wait
        // their turn instead of taking 500 MiB.
        let _permit = match (&self.budget, &job.stored.body) {
            (Some(b), None) => b.acquire(job.stored.sref.len).await,
            (Some(b), Some(body)) if body.len() > 64 * 1024 => b.acquire(body.len() as u64).await,
            _ => None,
        };
        let Some(body) = self.body(&job.stored).await else {
            return (job, Vec::new());
        };
        let started = std::time::Instant::now();
        let statuses = self.transport.deliver(&job.stored.envelope, &idx, &body).await;
        self.events
            .metrics()
            .delivery_duration
            .observe(started.elapsed().as_secs_f64());
        // Keep the body only for the retry if it is small; otherwise re-read.
        if job.stored.body.is_some() && body.len() > 64 * 1024 {
            job.stored.body = None;
        }
        (job, idx.into_iter().zip(statuses).collect())
    }

    /// Records the results of one attempt. Returns the job and its retry
    /// delay when recipients remain.
    async fn settle(&self, mut job: Job, results: Vec<(usize, RcptStatus)>) -> Option<(Job, Duration)> {
        let env = job.stored.envelope.clone();
        let sref = job.stored.sref;
        let mut failures: Vec<(usize, String, String)> = Vec::new();
        let mut temp_last: Option<String> = None;
        for (i, st) in &results {
            let (outcome, reply) = match st {
                RcptStatus::Delivered(r) => (RcptOutcome::Delivered, r.to_string()),
                RcptStatus::Permanent(r) => {
                    failures.push((*i, r.status(), r.to_string()));
                    (RcptOutcome::Bounced, r.to_string())
                }
                RcptStatus::Temporary(r) => {
                    temp_last = Some(r.to_string());
                    (RcptOutcome::Deferred, r.to_string())
                }
            };
            self.events.emit(Event::DeliveryAttempt {
                id: env.id.clone(),
                ip: env.client_ip,
                tx: Tx::of(&env),
                rcpt: env.rcpts[*i].addr.to_string(),
                outcome,
                reply,
                attempt: job.attempts,
            });
        }
        // Expired: everything still pending bounces now.
        let age = now_secs().saturating_sub(env.received_at);
        let expired = age >= self.cfg.max_queue_age.as_secs();
        if expired {
            for (i, st) in &results {
                if let RcptStatus::Temporary(r) = st {
                    failures.push((*i, "5.4.7".into(), format!("delivery time expired; last error: {r}")));
                }
            }
        }
        if !failures.is_empty() {
            self.bounce(&job.stored, &failures).await;
        }
        for (i, st) in &results {
            if !matches!(st, RcptStatus::Temporary(_)) || expired {
                job.stored.done[*i] = true;
            }
        }
        if job.stored.done.iter().all(|d| *d) {
            self.spool.mark_done(sref);
            return None;
        }
        for (i, st) in &results {
            if !matches!(st, RcptStatus::Temporary(_)) {
                self.spool.mark_rcpt_done(sref, *i);
            }
        }
        let delay = backoff(self.cfg.retry_initial, self.cfg.retry_max, job.attempts);
        if temp_last.is_some() {
            job.last_reply = temp_last.as_deref().map(Arc::from);
        }
        tracing::debug!(id = %env.id, attempts = job.attempts, ?delay, last = ?temp_last, "deferred");
        if job.stored.body.as_ref().is_some_and(|b| b.len() > 64 * 1024) {
            job.stored.body = None;
        }
        Some((job, delay))
    }

    async fn bounce(&self, stored: &Stored, failures: &[(usize, String, String)]) {
        let env = &stored.envelope;
        if env.mail_from.is_none() {
            self.double_bounce(stored, failures).await;
            return;
        }
        let fs = dsn_failures(env, failures, Some(self.cfg.next_hop.to_string()));
        let Some(original) = self.body(stored).await else {
            return;
        };
        let id = format!("{}B{}", env.id, failures[0].0);
        let Some((denv, msg)) = dsn::build(env, &fs, &original, &self.hostname, id, now_secs()) else {
            return;
        };
        self.queue_generated(env, denv, msg, fs.len()).await;
    }

    /// A message with the null sender (a DSN, ours or one relayed in) that
    /// failed: never bounced. Logged and counted, and reported to
    /// `relay.double_bounce_to` when set (once: that report is never
    /// reported again).
    async fn double_bounce(&self, stored: &Stored, failures: &[(usize, String, String)]) {
        let env = &stored.envelope;
        for (i, _, diag) in failures {
            self.events.emit(Event::DoubleBounce {
                id: env.id.clone(),
                ip: env.client_ip,
                tx: Tx::of(env),
                rcpt: env.rcpts[*i].addr.to_string(),
                reply: diag.clone(),
            });
        }
        let Some(postmaster) = &self.cfg.double_bounce_to else {
            return;
        };
        if env.generated == Some(Generated::DoubleBounce) {
            return;
        }
        let Some(original) = self.body(stored).await else {
            return;
        };
        // A report to the postmaster as if the postmaster had sent it.
        let mut as_sent = (**env).clone();
        as_sent.mail_from = Some(postmaster.clone());
        as_sent.ret = Some("HDRS".into());
        let fs = dsn_failures(env, failures, None);
        let id = format!("{}D{}", env.id, failures[0].0);
        let Some((mut denv, msg)) = dsn::build(&as_sent, &fs, &original, &self.hostname, id, now_secs()) else {
            return;
        };
        denv.generated = Some(Generated::DoubleBounce);
        self.queue_generated(env, denv, msg, fs.len()).await;
    }

    async fn queue_generated(&self, env: &Envelope, denv: Envelope, msg: Vec<u8>, rcpts: usize) {
        let to = denv.rcpts[0].addr.to_string();
        match self.spool.store(denv, msg).await {
            Ok(s) => {
                self.events.emit(Event::BounceQueued {
                    id: env.id.clone(),
                    ip: env.client_ip,
                    tx: Tx::of(env),
                    to,
                    rcpts,
                });
                self.handle.enqueue(s);
            }
            Err(e) => self.events.emit(Event::Warning {
                component: "spool",
                message: format!("cannot queue DSN for {}: {e}", env.id),
            }),
        }
    }
}

/// The DSN's view of `failures` (recipient index, status, diagnostic) of
/// `env`; `remote` is the next hop that gave them, when there was one.
fn dsn_failures<'e>(
    env: &'e Envelope,
    failures: &[(usize, String, String)],
    remote: Option<String>,
) -> Vec<Failure<'e>> {
    failures
        .iter()
        .map(|(i, status, diag)| Failure {
            rcpt: &env.rcpts[*i],
            status: status.clone(),
            diagnostic: diag.clone(),
            remote: remote.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
