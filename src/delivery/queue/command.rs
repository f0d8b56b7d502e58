//! The admin's commands (`sluice queue`) applied to the queue: list, show,
//! flush, hold, release, delete, and bounce (return a message to its sender).

use std::sync::Arc;

use super::attempt::dsn_failures;
use super::control::{self, Command, State, Waiting};
use super::{Job, QueueShared, Ready};
use crate::delivery::dsn;
use crate::events::{Event, Tx};
use crate::mail::date::now_secs;

/// The diagnostic of a DSN for mail the admin returned (`sluice queue
/// bounce`).
const RETURNED: &str = "5.0.0 returned by the administrator";

impl QueueShared {
    /// An admin's command (`sluice queue`).
    pub(super) fn command(
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
}
