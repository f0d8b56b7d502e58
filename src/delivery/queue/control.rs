//! `sluice queue`: what the running queue holds, and the admin's commands,
//! as Postfix's `postqueue -p`/`-f` and `postsuper -h`/`-H`/`-d`: list,
//! flush (retry now), hold, release, delete, and bounce (return to the
//! sender with a DSN, as `postsuper -d` after a bounce). Served on a unix socket,
//! `<spool.dir>/queue.sock` (the wire is [`crate::control`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Job, QueueHandle};

/// Where a message is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a free delivery slot.
    Ready,
    /// Being delivered now.
    Active,
    /// Waiting for its next attempt after a temporary failure.
    Deferred,
    /// Held by the admin: not tried until released.
    Held,
}

/// One message as `sluice queue list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub id: String,
    /// Unix seconds.
    pub received_at: u64,
    /// Octets in the spool record.
    pub size: u64,
    pub from: String,
    /// Recipients still to deliver.
    pub rcpts: Vec<String>,
    pub attempts: u32,
    pub state: State,
    /// Unix seconds of the next attempt, when deferred.
    pub next_attempt: Option<u64>,
    /// The next hop's last temporary reply.
    pub last_reply: Option<String>,
}

impl Job {
    pub(super) fn entry(&self, state: State, next: Option<Instant>) -> Entry {
        self.listed(state, next).into()
    }

    /// The message as listed: shares the envelope and the last reply, so a
    /// listing of 100,000 messages costs the queue's loop no copies of
    /// their strings (they are written straight into the answer, off the
    /// loop).
    pub(super) fn listed(&self, state: State, next: Option<Instant>) -> Listed {
        Listed {
            envelope: self.stored.envelope.clone(),
            done: self.stored.done.clone(),
            size: self.stored.sref.len,
            attempts: self.attempts,
            state,
            next_attempt: next
                .map(|t| crate::mail::date::now_secs() + t.saturating_duration_since(Instant::now()).as_secs()),
            last_reply: self.last_reply.clone(),
        }
    }
}

/// One message as listed, before it is written: serialises exactly as its
/// [`Entry`].
#[derive(Debug, Clone)]
pub struct Listed {
    envelope: std::sync::Arc<crate::mail::envelope::Envelope>,
    done: Vec<bool>,
    size: u64,
    attempts: u32,
    state: State,
    next_attempt: Option<u64>,
    last_reply: Option<std::sync::Arc<str>>,
}

impl Listed {
    /// The order of `sluice queue list`: oldest first.
    fn key(&self) -> (u64, &str) {
        (self.envelope.received_at, &self.envelope.id)
    }

    fn pending(&self) -> impl Iterator<Item = &crate::proto::Mailbox> {
        self.envelope
            .rcpts
            .iter()
            .zip(&self.done)
            .filter(|(_, done)| !**done)
            .map(|(r, _)| &r.addr)
    }
}

impl From<Listed> for Entry {
    fn from(l: Listed) -> Entry {
        let env = &l.envelope;
        Entry {
            id: env.id.clone(),
            received_at: env.received_at,
            size: l.size,
            from: env.mail_from.as_ref().map(|m| m.to_string()).unwrap_or_default(),
            rcpts: l.pending().map(|a| a.to_string()).collect(),
            attempts: l.attempts,
            state: l.state,
            next_attempt: l.next_attempt,
            last_reply: l.last_reply.as_deref().map(str::to_string),
        }
    }
}

impl Serialize for Listed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        struct Rcpts<'a>(&'a Listed);
        impl Serialize for Rcpts<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.pending().map(Display))
            }
        }
        /// A value written through its `Display`, without a `String`.
        struct Display<T>(T);
        impl<T: std::fmt::Display> Serialize for Display<T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }
        let env = &self.envelope;
        let mut st = s.serialize_struct("Entry", 9)?;
        st.serialize_field("id", &env.id)?;
        st.serialize_field("received_at", &env.received_at)?;
        st.serialize_field("size", &self.size)?;
        match &env.mail_from {
            Some(m) => st.serialize_field("from", &Display(m))?,
            None => st.serialize_field("from", "")?,
        }
        st.serialize_field("rcpts", &Rcpts(self))?;
        st.serialize_field("attempts", &self.attempts)?;
        st.serialize_field("state", &self.state)?;
        st.serialize_field("next_attempt", &self.next_attempt)?;
        st.serialize_field("last_reply", &self.last_reply.as_deref())?;
        st.end()
    }
}

/// The answer to `list`: the daemon writes [`Listed`] messages, the CLI
/// reads [`Entry`]s; the same JSON.
#[derive(Debug)]
pub enum Listing {
    Listed(Vec<Listed>),
    Entries(Vec<Entry>),
}

impl Listing {
    /// Oldest first (by arrival, then id).
    pub(super) fn sorted(mut listed: Vec<Listed>) -> Listing {
        listed.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        Listing::Listed(listed)
    }

    pub fn into_entries(self) -> Vec<Entry> {
        match self {
            Listing::Listed(l) => l.into_iter().map(Entry::from).collect(),
            Listing::Entries(e) => e,
        }
    }
}

impl Serialize for Listing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Listing::Listed(l) => l.serialize(s),
            Listing::Entries(e) => e.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Entry>::deserialize(d).map(Listing::Entries)
    }
}

/// An admin's command to the running queue, with where to answer.
#[derive(Debug)]
pub enum Command {
    List(oneshot::Sender<Listing>),
    /// Retry now: one message, or every deferred one; answers how many.
    Flush(Option<String>, oneshot::Sender<usize>),
    Hold(String, oneshot::Sender<bool>),
    Release(String, oneshot::Sender<bool>),
    /// Removed from the queue and the spool, without a DSN.
    Delete(String, oneshot::Sender<bool>),
    /// The entry and the message as spooled.
    Show(String, oneshot::Sender<Option<(Entry, Vec<u8>)>>),
    /// Returned to the sender with a DSN, then removed; `None`: no such
    /// message waiting.
    Bounce(String, oneshot::Sender<Option<Result<Bounced, String>>>),
}

/// What `sluice queue bounce` did with the message (it is gone from the
/// queue in every case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bounced {
    /// A failure DSN to `to`, queued as `dsn`.
    Returned { to: String, dsn: String },
    /// The null sender (a DSN itself): deleted, since no DSN goes to <>.
    NullSender,
    /// Every recipient asked for no failure notice (NOTIFY): deleted.
    NotRequested,
}

/// Messages waiting for a later attempt, and the held ones.
#[derive(Default)]
pub(super) struct Waiting {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    parked: HashMap<u64, (Instant, Job)>,
    held: Vec<Job>,
    seq: u64,
}

impl Waiting {
    pub(super) fn park(&mut self, job: Job, at: Instant) {
        self.seq += 1;
        self.due.push(Reverse((at, self.seq)));
        self.parked.insert(self.seq, (at, job));
    }

    /// When the next parked message is due.
    pub(super) fn next_due(&mut self) -> Option<Instant> {
        // Entries of flushed or deleted messages are skipped.
        while let Some(Reverse((t, seq))) = self.due.peek().copied() {
            if self.parked.contains_key(&seq) {
                return Some(t);
            }
            self.due.pop();
        }
        None
    }

    /// The parked messages due by `now`.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Job> {
        let mut out = Vec::new();
        while let Some(Reverse((t, seq))) = self.due.peek().copied() {
            if t > now {
                break;
            }
            self.due.pop();
            if let Some((_, job)) = self.parked.remove(&seq) {
                out.push(job);
            }
        }
        out
    }

    /// Parked messages (all, or the one with `id`) taken out to be tried now.
    pub(super) fn flush(&mut self, id: Option<&str>) -> Vec<Job> {
        let keys: Vec<u64> = self
            .parked
            .iter()
            .filter(|(_, (_, j))| id.is_none_or(|id| j.stored.envelope.id == id))
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.parked.remove(&k))
            .map(|(_, j)| j)
            .collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    /// Parked and held messages.
    pub(super) fn len(&self) -> usize {
        self.parked.len() + self.held.len()
    }

    /// Takes a parked or held message out.
    pub(super) fn take(&mut self, id: &str) -> Option<Job> {
        if let Some(i) = self.held.iter().position(|j| j.stored.envelope.id == id) {
            return Some(self.held.remove(i));
        }
        self.flush(Some(id)).pop()
    }

    pub(super) fn hold(&mut self, job: Job) {
        self.held.push(job);
    }

    pub(super) fn release(&mut self, id: &str) -> Option<Job> {
        let i = self.held.iter().position(|j| j.stored.envelope.id == id)?;
        Some(self.held.remove(i))
    }

    /// A parked or held message's entry and where it is stored.
    pub(super) fn find(&self, id: &str) -> Option<(Entry, crate::spool::SpoolRef)> {
        if let Some((at, j)) = self.parked.values().find(|(_, j)| j.stored.envelope.id == id) {
            return Some((j.entry(State::Deferred, Some(*at)), j.stored.sref));
        }
        let j = self.held.iter().find(|j| j.stored.envelope.id == id)?;
        Some((j.entry(State::Held, None), j.stored.sref))
    }

    pub(super) fn entries(&self, out: &mut Vec<Listed>) {
        for (at, job) in self.parked.values() {
            out.push(job.listed(State::Deferred, Some(*at)));
        }
        for job in &self.held {
            out.push(job.listed(State::Held, None));
        }
    }
}

/// A request on the socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    List,
    Flush { id: Option<String> },
    Hold { id: String },
    Release { id: String },
    Delete { id: String },
    Show { id: String },
    Bounce { id: String },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Entries(Listing),
    /// Messages the command applied to.
    Done(usize),
    /// `show`: the entry and the message as spooled (lossy UTF-8).
    Message {
        entry: Entry,
        message: String,
    },
    /// `bounce`: what became of the message.
    Bounced(Bounced),
    Error(String),
}

impl QueueHandle {
    /// Asks the running queue; `None` when it is gone.
    pub async fn ask(&self, req: Request) -> Response {
        fn flag(b: Option<bool>) -> Response {
            match b {
                Some(true) => Response::Done(1),
                Some(false) => Response::Error("no such message in the queue (delivered, or in delivery now?)".into()),
                None => Response::Error("the queue is shutting down".into()),
            }
        }
        match req {
            Request::List => {
                let (tx, rx) = oneshot::channel();
                let _ = self.cmd.send(Command::List(tx));
                rx.await.map_or_else(
                    |_| Response::Error("the queue is shutting down".into()),
                    Response::Entries,
                )
            }
            Request::Flush { id } => {
                let (tx, rx) = oneshot::channel();
                let _ = self.cmd.send(Command::Flush(id, tx));
                rx.await
                    .map_or_else(|_| Response::Error("the queue is shutting down".into()), Response::Done)
            }
            Request::Hold { id } => {
                let (tx, rx) = oneshot::channel();
                let _ = self.cmd.send(Command::Hold(id, tx));
                flag(rx.await.ok())
            }
            Request::Release { id } => {
                let (tx, rx) = oneshot::channel();
                let _ = self.cmd.send(Command::Release(id, tx));
                flag(rx.await.ok())
            }
            Request::Delete { id } => {
                let (tx, rx) = oneshot::channel();
                let _ = self.cmd.send(Command::Delete(id, tx));
                flag(rx.await.ok())
            }
            Request::Show { id } => {
                let (tx, rx) = oneshot::channel();
                let _ = self.cmd.send(Command::Show(id, tx));
                match rx.await {
                    Ok(Some((entry, body))) => Response::Message {
                        entry,
                        message: String::from_utf8_lossy(&body).into_owned(),
                    },
                    Ok(None) => flag(Some(false)),
                    Err(_) => flag(None),
                }
            }
            Request::Bounce { id } => {
                let (tx, rx) = oneshot::channel();
                let _ = self.cmd.send(Command::Bounce(id, tx));
                match rx.await {
                    Ok(Some(Ok(b))) => Response::Bounced(b),
                    Ok(Some(Err(e))) => Response::Error(e),
                    Ok(None) => flag(Some(false)),
                    Err(_) => flag(None),
                }
            }
        }
    }
}

/// Serves the queue socket until `stop` (see [`crate::control`]).
pub async fn serve(handle: QueueHandle, path: &Path, stop: CancellationToken) -> std::io::Result<()> {
    crate::control::serve(path, stop, Response::Error, move |req| {
        let handle = handle.clone();
        async move { handle.ask(req).await }
    })
    .await
}

/// Sends one request to the socket at `path` (the CLI's side).
pub async fn request(path: &Path, req: &Request) -> std::io::Result<Response> {
    crate::control::request(path, req).await
}
