//! Queue tests.
//!
//! The decisions of one settled attempt (retry delay, bounce, expiry,
//! double bounce) are tested on `QueueShared::settle` directly: it returns
//! the retry delay, so no clock is involved and the numbers are exact. The
//! run loop is tested with a fake transport that records when each attempt
//! started, under paused time (`start_paused`): the clock jumps to the next
//! timer when everything waits, so a one-hour backoff takes no time and
//! the gaps are exact.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;
use tokio::sync::broadcast;

use super::*;
use crate::delivery::DeliverFuture;
use crate::delivery::client::HopReply;
use crate::events::{Event, RcptOutcome};
use crate::mail::date::now_secs;
use crate::mail::envelope::{Envelope, Generated};
use crate::spool::mem::MemSpool;
use crate::spool::{SpoolError, SpoolFuture, SpoolRef};

mod run;
mod settle;

#[test]
fn backoff_doubles_and_caps() {
    let (i, m) = (Duration::from_secs(60), Duration::from_secs(3600));
    let got: Vec<u64> = (1..=8).map(|a| backoff(i, m, a).as_secs()).collect();
    assert_eq!(got, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    assert_eq!(backoff(i, m, 1000).as_secs(), 3600);
}

// === fixtures ===

/// The default `[relay]` with these retry settings.
fn relay_cfg(retry_initial: Duration, retry_max: Duration) -> Relay {
    let mut cfg = crate::config::Config::from_toml("", std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("default config")
        .relay;
    cfg.retry_initial = retry_initial;
    cfg.retry_max = retry_max;
    cfg.max_queue_age = Duration::from_secs(5 * 86400);
    cfg.concurrency = 4;
    cfg
}

fn mailbox(addr: &str) -> serde_json::Value {
    let (local, domain) = addr.split_once('@').expect("an address");
    json!({"local": local, "domain": domain})
}

/// An envelope (from JSON, as the spool stores it, so that new fields with
/// defaults do not break the tests); `from: None` is the null sender.
fn envelope(id: &str, from: Option<&str>, rcpts: &[&str], received_at: u64) -> Envelope {
    let rcpts: Vec<_> = rcpts.iter().map(|r| json!({"addr": mailbox(r)})).collect();
    serde_json::from_value(json!({
        "id": id,
        "received_at": received_at,
        "client_ip": "192.0.2.7",
        "helo": "client.example",
        "mail_from": from.map(mailbox),
        "rcpts": rcpts,
    }))
    .expect("envelope from JSON")
}

const BODY: &[u8] = b"From: a@client.example\r\nSubject: queued\r\n\r\nhello\r\n";

fn delivered() -> RcptStatus {
    RcptStatus::Delivered(HopReply::local(250, "2.0.0 ok"))
}

fn deferred() -> RcptStatus {
    RcptStatus::Temporary(HopReply::local(451, "4.3.0 try later"))
}

fn refused() -> RcptStatus {
    RcptStatus::Permanent(HopReply::local(550, "5.1.1 no such user"))
}

/// A spool mark, by the record's offset in the [`MemSpool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Rcpt(u64, usize),
    Done(u64),
}

/// A [`MemSpool`] that reports every mark on a channel.
struct RecSpool {
    mem: MemSpool,
    marks: mpsc::UnboundedSender<Mark>,
}

impl RecSpool {
    fn new() -> (Arc<RecSpool>, mpsc::UnboundedReceiver<Mark>) {
        let (marks, rx) = mpsc::unbounded_channel();
        (
            Arc::new(RecSpool {
                mem: MemSpool::default(),
                marks,
            }),
            rx,
        )
    }

    /// Every stored envelope with its body, in order.
    fn stored(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.mem.stored.lock().unwrap().clone()
    }
}

impl Spool for RecSpool {
    fn store(&self, envelope: Envelope, body: Vec<u8>) -> SpoolFuture<'_> {
        self.mem.store(envelope, body)
    }

    fn mark_rcpt_done(&self, sref: SpoolRef, idx: usize) {
        let _ = self.marks.send(Mark::Rcpt(sref.offset, idx));
    }

    fn mark_done(&self, sref: SpoolRef) {
        let _ = self.marks.send(Mark::Done(sref.offset));
    }

    fn read_body(&self, sref: SpoolRef) -> Result<Vec<u8>, SpoolError> {
        self.mem.read_body(sref)
    }

    fn close(&self) {}
}

/// One delivery attempt as the fake next hop saw it.
#[derive(Debug)]
struct Attempt {
    at: Instant,
    id: String,
    /// `None`: the null sender.
    from: Option<String>,
    rcpts: Vec<String>,
}

/// The fake next hop's answer for (envelope, recipient, attempt number of
/// this message, from 1).
type Answer = Box<dyn Fn(&Envelope, &str, u32) -> RcptStatus + Send + Sync>;

/// A transport that answers from a script and reports every attempt.
struct FakeHop {
    answer: Answer,
    tries: Mutex<HashMap<String, u32>>,
    attempts: mpsc::UnboundedSender<Attempt>,
    /// What a real transport tells when its next hop is reached again.
    recovered: Arc<tokio::sync::Notify>,
}

impl FakeHop {
    fn new(
        answer: impl Fn(&Envelope, &str, u32) -> RcptStatus + Send + Sync + 'static,
    ) -> (Arc<FakeHop>, mpsc::UnboundedReceiver<Attempt>) {
        let (attempts, rx) = mpsc::unbounded_channel();
        (
            Arc::new(FakeHop {
                answer: Box::new(answer),
                tries: Mutex::new(HashMap::new()),
                attempts,
                recovered: Arc::default(),
            }),
            rx,
        )
    }
}

impl Transport for FakeHop {
    fn deliver<'a>(&'a self, env: &'a Envelope, idx: &'a [usize], _body: &'a [u8]) -> DeliverFuture<'a> {
        let at = Instant::now();
        let n = {
            let mut tries = self.tries.lock().unwrap();
            let n = tries.entry(env.id.clone()).or_default();
            *n += 1;
            *n
        };
        let rcpts: Vec<String> = idx.iter().map(|&i| env.rcpts[i].addr.to_string()).collect();
        let statuses = rcpts.iter().map(|r| (self.answer)(env, r, n)).collect();
        let _ = self.attempts.send(Attempt {
            at,
            id: env.id.clone(),
            from: env.mail_from.as_ref().map(|m| m.to_string()),
            rcpts,
        });
        Box::pin(std::future::ready(statuses))
    }

    fn recovered(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.recovered.clone())
    }
}

/// `QueueShared` over a recording spool, for `settle` alone.
struct Settle {
    shared: QueueShared,
    spool: Arc<RecSpool>,
    marks: mpsc::UnboundedReceiver<Mark>,
    /// What the queue handed back to itself (DSNs).
    queued: mpsc::UnboundedReceiver<Stored>,
    events: broadcast::Receiver<Arc<Event>>,
}

impl Settle {
    fn new(cfg: Relay) -> Settle {
        let (spool, marks) = RecSpool::new();
        let (handle, queued) = QueueHandle::detached();
        let bus = EventBus::new(1024);
        let events = bus.subscribe();
        let (transport, _) = FakeHop::new(|_, _, _| delivered());
        Settle {
            shared: QueueShared {
                budget: None,
                spool: spool.clone(),
                transport,
                cfg,
                hostname: "mx.test.example".into(),
                events: bus,
                handle,
            },
            spool,
            marks,
            queued,
            events,
        }
    }

    /// Stores `env` and returns it as a job after `attempts` attempts.
    async fn job(&self, env: Envelope, attempts: u32) -> Job {
        let stored = self.spool.store(env, BODY.to_vec()).await.expect("stored");
        Job {
            stored,
            attempts,
            last_reply: None,
        }
    }

    fn marks(&mut self) -> Vec<Mark> {
        std::iter::from_fn(|| self.marks.try_recv().ok()).collect()
    }

    fn queued(&mut self) -> Vec<Stored> {
        std::iter::from_fn(|| self.queued.try_recv().ok()).collect()
    }

    fn events(&mut self) -> Vec<Arc<Event>> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

/// The DSNs among the stored messages: (envelope, text).
fn dsns(spool: &RecSpool) -> Vec<(Envelope, String)> {
    spool
        .stored()
        .into_iter()
        .filter(|(e, _)| e.generated.is_some())
        .map(|(e, b)| (e, String::from_utf8_lossy(&b).into_owned()))
        .collect()
}
