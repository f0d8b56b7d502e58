//! One delivery attempt and what follows from it: the body read back from
//! the spool, the results recorded in the spool (done recipients, the
//! retry delay), and the DSNs for failed recipients (bounces, double bounces).

use std::sync::Arc;
use std::time::Duration;

use super::{Job, QueueShared, backoff};
use crate::delivery::client::RcptStatus;
use crate::delivery::dsn::{self, Failure};
use crate::events::{Event, RcptOutcome, Tx};
use crate::mail::date::now_secs;
use crate::mail::envelope::{Envelope, Generated};
use crate::spool::Stored;

impl QueueShared {
    pub(super) async fn body(&self, stored: &Stored) -> Option<Arc<Vec<u8>>> {
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

    pub(super) async fn attempt(&self, mut job: Job) -> (Job, Vec<(usize, RcptStatus)>) {
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
    pub(super) async fn settle(&self, mut job: Job, results: Vec<(usize, RcptStatus)>) -> Option<(Job, Duration)> {
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
pub(super) fn dsn_failures<'e>(
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
