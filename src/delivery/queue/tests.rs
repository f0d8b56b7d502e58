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
use crate::mail::envelope::Generated;
use crate::spool::mem::MemSpool;
use crate::spool::{SpoolError, SpoolFuture, SpoolRef};

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

// === one settled attempt ===

#[tokio::test]
async fn a_temporary_failure_is_retried_after_retry_initial_then_doubling_up_to_retry_max() {
    let (initial, max) = (Duration::from_secs(60), Duration::from_secs(480));
    let mut s = Settle::new(relay_cfg(initial, max));
    let mut job = s
        .job(
            envelope("T1", Some("a@client.example"), &["user@example.com"], now_secs()),
            0,
        )
        .await;
    let mut delays = Vec::new();
    for attempt in 1..=6 {
        job.attempts = attempt;
        let (back, delay) = s
            .shared
            .settle(job, vec![(0, deferred())])
            .await
            .expect("a deferred recipient is kept for a retry");
        job = back;
        delays.push(delay.as_secs());
        assert_eq!(job.stored.done, [false]);
        match &*s.events().pop().expect("an event per recipient") {
            Event::DeliveryAttempt {
                outcome: RcptOutcome::Deferred,
                attempt: a,
                rcpt,
                ..
            } => assert_eq!((*a, rcpt.as_str()), (attempt, "user@example.com")),
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(delays, [60, 120, 240, 480, 480, 480]);
    assert_eq!(s.marks(), [], "nothing is finished");
    assert!(dsns(&s.spool).is_empty(), "no DSN for a deferral");
}

#[tokio::test]
async fn only_the_deferred_recipient_is_kept_for_the_retry() {
    let mut s = Settle::new(relay_cfg(Duration::from_secs(60), Duration::from_secs(3600)));
    let job = s
        .job(
            envelope(
                "T2",
                Some("a@client.example"),
                &["user@example.com", "known@example.com"],
                now_secs(),
            ),
            1,
        )
        .await;
    let off = job.stored.sref.offset;
    let (job, delay) = s
        .shared
        .settle(job, vec![(0, delivered()), (1, deferred())])
        .await
        .expect("known@ is deferred");
    assert_eq!(delay, Duration::from_secs(60));
    assert_eq!(job.stored.done, [true, false]);
    assert_eq!(s.marks(), [Mark::Rcpt(off, 0)], "user@ is marked done in the spool");
}

#[tokio::test]
async fn a_permanent_failure_queues_one_dsn_naming_only_the_refused_recipient() {
    let mut s = Settle::new(relay_cfg(Duration::from_secs(60), Duration::from_secs(3600)));
    let job = s
        .job(
            envelope(
                "T3",
                Some("sender@client.example"),
                &["user@example.com", "known@example.com"],
                now_secs(),
            ),
            1,
        )
        .await;
    let off = job.stored.sref.offset;
    let retry = s.shared.settle(job, vec![(0, delivered()), (1, refused())]).await;
    assert!(retry.is_none(), "both recipients are finished");
    assert_eq!(s.marks(), [Mark::Done(off)]);
    let dsns = dsns(&s.spool);
    assert_eq!(dsns.len(), 1, "one DSN");
    let (env, text) = &dsns[0];
    assert_eq!(env.mail_from, None, "a DSN has the null sender");
    assert_eq!(env.generated, Some(Generated::Dsn));
    let to: Vec<String> = env.rcpts.iter().map(|r| r.addr.to_string()).collect();
    assert_eq!(to, ["sender@client.example"]);
    assert!(text.contains("Final-Recipient: rfc822; known@example.com"), "{text}");
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(!text.contains("Final-Recipient: rfc822; user@example.com"), "{text}");
    let queued = s.queued();
    assert_eq!(queued.len(), 1, "the DSN is queued for delivery");
    assert_eq!(queued[0].envelope.id, env.id);
    let bounced: Vec<_> = s
        .events()
        .into_iter()
        .filter_map(|e| match &*e {
            Event::BounceQueued { id, to, rcpts, .. } => Some((id.clone(), to.clone(), *rcpts)),
            _ => None,
        })
        .collect();
    assert_eq!(bounced, [("T3".to_string(), "sender@client.example".to_string(), 1)]);
}

#[tokio::test]
async fn an_expired_message_bounces_with_5_4_7_instead_of_another_retry() {
    let mut cfg = relay_cfg(Duration::from_secs(60), Duration::from_secs(3600));
    cfg.max_queue_age = Duration::from_secs(3600);
    let mut s = Settle::new(cfg);
    // Ten seconds short of the maximum age: deferred as usual.
    let young = s
        .job(
            envelope(
                "Y1",
                Some("sender@client.example"),
                &["user@example.com"],
                now_secs() - 3590,
            ),
            3,
        )
        .await;
    let (_, delay) = s
        .shared
        .settle(young, vec![(0, deferred())])
        .await
        .expect("not expired yet");
    assert_eq!(delay, Duration::from_secs(240));
    assert!(dsns(&s.spool).is_empty());
    // At the maximum age: the temporary failure is final.
    let old = s
        .job(
            envelope(
                "E1",
                Some("sender@client.example"),
                &["user@example.com"],
                now_secs() - 3600,
            ),
            3,
        )
        .await;
    let off = old.stored.sref.offset;
    assert!(s.shared.settle(old, vec![(0, deferred())]).await.is_none(), "no retry");
    assert_eq!(s.marks(), [Mark::Done(off)]);
    let dsns = dsns(&s.spool);
    assert_eq!(dsns.len(), 1);
    let (env, text) = &dsns[0];
    assert_eq!(env.mail_from, None);
    assert_eq!(env.rcpts[0].addr.to_string(), "sender@client.example");
    assert!(text.contains("Status: 5.4.7"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; user@example.com"), "{text}");
    assert!(text.contains("451 4.3.0 try later"), "the last error is named: {text}");
    assert_eq!(s.queued().len(), 1);
}

#[tokio::test]
async fn no_dsn_for_the_null_sender() {
    let mut s = Settle::new(relay_cfg(Duration::from_secs(60), Duration::from_secs(3600)));
    let job = s.job(envelope("N1", None, &["user@example.com"], now_secs()), 1).await;
    let off = job.stored.sref.offset;
    assert!(s.shared.settle(job, vec![(0, refused())]).await.is_none());
    assert_eq!(s.marks(), [Mark::Done(off)]);
    assert_eq!(s.spool.stored().len(), 1, "nothing new in the spool");
    assert!(s.queued().is_empty(), "nothing queued");
    let names: Vec<&str> = s.events().iter().map(|e| e.name()).collect();
    assert_eq!(names, ["delivery_attempt", "double_bounce"]);
    assert_eq!(s.shared.events.metrics().double_bounces.get(), 1);
}

#[tokio::test]
async fn a_double_bounce_is_reported_to_double_bounce_to_once_never_a_report_of_the_report() {
    let mut cfg = relay_cfg(Duration::from_secs(60), Duration::from_secs(3600));
    cfg.double_bounce_to = Some(crate::proto::address::parse_mailbox("postmaster@example.com").unwrap());
    let mut s = Settle::new(cfg);
    let job = s.job(envelope("N2", None, &["user@example.com"], now_secs()), 1).await;
    assert!(s.shared.settle(job, vec![(0, refused())]).await.is_none());
    let queued = s.queued();
    assert_eq!(queued.len(), 1, "one report");
    let report = queued[0].clone();
    assert_eq!(report.envelope.generated, Some(Generated::DoubleBounce));
    assert_eq!(report.envelope.mail_from, None);
    assert_eq!(report.envelope.rcpts[0].addr.to_string(), "postmaster@example.com");
    // The report fails too: counted, never reported again.
    let job = Job {
        stored: report,
        attempts: 1,
        last_reply: None,
    };
    assert!(s.shared.settle(job, vec![(0, refused())]).await.is_none());
    assert!(s.queued().is_empty(), "no report of the report");
    assert_eq!(s.spool.stored().len(), 2, "the message and one report");
    assert_eq!(s.shared.events.metrics().double_bounces.get(), 2);
}

// === the run loop ===

/// A running queue over a recording spool and `hop`.
struct LiveQueue {
    spool: Arc<RecSpool>,
    marks: mpsc::UnboundedReceiver<Mark>,
    handle: QueueHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LiveQueue {
    fn start(cfg: Relay, hop: Arc<FakeHop>) -> LiveQueue {
        let (spool, marks) = RecSpool::new();
        let (queue, handle) = Queue::new(spool.clone(), hop, cfg, "mx.test.example".into(), EventBus::new(1024));
        let stop = CancellationToken::new();
        let task = tokio::spawn(queue.run(handle.clone(), stop.clone()));
        LiveQueue {
            spool,
            marks,
            handle,
            stop,
            task,
        }
    }

    /// Stores `env` and hands it to the queue; returns its spool offset.
    async fn enqueue(&self, env: Envelope) -> u64 {
        let stored = self.spool.store(env, BODY.to_vec()).await.expect("stored");
        let off = stored.sref.offset;
        self.handle.enqueue(stored);
        off
    }

    /// Waits for the spool marks until `offset` is marked done (a day of
    /// paused time at most: longer than any backoff here).
    async fn until_done(&mut self, offset: u64) -> Vec<Mark> {
        let mut seen = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(86_400), self.marks.recv())
                .await
                .expect("marked done in time")
                .expect("queue running");
            seen.push(m);
            if m == Mark::Done(offset) {
                return seen;
            }
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("queue stops")
            .expect("queue task");
    }
}

/// Every attempt reported so far.
fn attempts(rx: &mut mpsc::UnboundedReceiver<Attempt>) -> Vec<Attempt> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test(start_paused = true)]
async fn run_waits_the_backoff_before_each_retry_and_stops_after_delivery() {
    let (initial, max) = (Duration::from_secs(60), Duration::from_secs(200));
    // Deferred three times, delivered on the fourth attempt.
    let (hop, mut seen) = FakeHop::new(|_, _, n| if n < 4 { deferred() } else { delivered() });
    let mut q = LiveQueue::start(relay_cfg(initial, max), hop);
    let off = q
        .enqueue(envelope(
            "R1",
            Some("a@client.example"),
            &["user@example.com"],
            now_secs(),
        ))
        .await;
    let marks = q.until_done(off).await;
    assert_eq!(marks, [Mark::Done(off)]);
    // Marked done: the job is gone, so these are all the attempts there are.
    let tries = attempts(&mut seen);
    assert_eq!(tries.len(), 4, "{tries:?}");
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1].at - w[0].at).collect();
    // initial, doubled, then capped at retry_max (200 s, not 240 s).
    assert_eq!(gaps, [initial, initial * 2, max], "the backoff, exactly");
    q.stop().await;
}

#[tokio::test(start_paused = true)]
async fn run_retries_only_the_deferred_recipient() {
    let (hop, mut seen) = FakeHop::new(|_, rcpt, n| {
        if rcpt == "known@example.com" && n == 1 {
            deferred()
        } else {
            delivered()
        }
    });
    let mut q = LiveQueue::start(relay_cfg(Duration::from_secs(60), Duration::from_secs(3600)), hop);
    let off = q
        .enqueue(envelope(
            "R2",
            Some("a@client.example"),
            &["user@example.com", "known@example.com"],
            now_secs(),
        ))
        .await;
    let marks = q.until_done(off).await;
    assert_eq!(marks, [Mark::Rcpt(off, 0), Mark::Done(off)]);
    let rcpts: Vec<Vec<String>> = attempts(&mut seen).into_iter().map(|a| a.rcpts).collect();
    assert_eq!(
        rcpts,
        [
            vec!["user@example.com".to_string(), "known@example.com".to_string()],
            vec!["known@example.com".to_string()],
        ],
        "the retry goes to known@ alone"
    );
    q.stop().await;
}

#[tokio::test(start_paused = true)]
async fn run_delivers_the_dsn_it_queues_for_a_permanent_failure() {
    let (hop, mut seen) = FakeHop::new(|env, _, _| {
        if env.mail_from.is_some() {
            refused()
        } else {
            delivered()
        }
    });
    let mut q = LiveQueue::start(relay_cfg(Duration::from_secs(60), Duration::from_secs(3600)), hop);
    let off = q
        .enqueue(envelope(
            "R3",
            Some("sender@client.example"),
            &["user@example.com"],
            now_secs(),
        ))
        .await;
    assert_eq!(q.until_done(off).await, [Mark::Done(off)]);
    // The DSN is the next record in the spool; it is delivered at once.
    let dsn_off = off + 1;
    assert_eq!(q.until_done(dsn_off).await, [Mark::Done(dsn_off)]);
    let tries: Vec<(String, Option<String>, Vec<String>)> = attempts(&mut seen)
        .into_iter()
        .map(|a| (a.id, a.from, a.rcpts))
        .collect();
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[0].0, "R3");
    assert_eq!(
        (&tries[1].1, &tries[1].2),
        (&None, &vec!["sender@client.example".to_string()]),
        "the DSN, from <> to the sender: {tries:?}"
    );
    q.stop().await;
}

// === sluice queue bounce ===

/// A next hop that defers every message but the DSNs (from <>), which it
/// takes.
fn defers_all_but_dsns() -> (Arc<FakeHop>, mpsc::UnboundedReceiver<Attempt>) {
    FakeHop::new(|env, _, _| {
        if env.mail_from.is_some() {
            deferred()
        } else {
            delivered()
        }
    })
}

#[tokio::test(start_paused = true)]
async fn bounce_returns_deferred_mail_to_its_sender_with_a_5_0_0_dsn_then_removes_it() {
    let (hop, mut seen) = defers_all_but_dsns();
    let mut q = LiveQueue::start(relay_cfg(Duration::from_secs(3600), Duration::from_secs(3600)), hop);
    let off = q
        .enqueue(envelope(
            "B1",
            Some("sender@client.example"),
            &["user@example.com", "other@example.com"],
            now_secs(),
        ))
        .await;
    // Tried once and deferred for an hour.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(attempts(&mut seen).len(), 1);

    // sluice queue bounce B1
    let resp = q.handle.ask(control::Request::Bounce { id: "B1".into() }).await;
    let control::Response::Bounced(b) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!(
        b,
        control::Bounced::Returned {
            to: "sender@client.example".into(),
            dsn: "B1B0".into()
        }
    );
    assert_eq!(q.until_done(off).await, [Mark::Done(off)]);
    // The DSN is delivered at once, from <> to the sender, naming both
    // recipients as returned by the administrator.
    let dsn_off = off + 1;
    assert_eq!(q.until_done(dsn_off).await, [Mark::Done(dsn_off)]);
    let tries = attempts(&mut seen);
    assert_eq!(tries.len(), 1, "the original is never tried again: {tries:?}");
    assert_eq!(
        (tries[0].id.as_str(), &tries[0].from, &tries[0].rcpts),
        ("B1B0", &None, &vec!["sender@client.example".to_string()])
    );
    let (denv, text) = dsns(&q.spool).pop().expect("a DSN");
    assert_eq!(denv.generated, Some(Generated::Dsn));
    assert!(text.contains("Final-Recipient: rfc822; user@example.com"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; other@example.com"), "{text}");
    assert!(text.contains("Status: 5.0.0"), "{text}");
    assert!(
        text.contains("Diagnostic-Code: smtp; 5.0.0 returned by the administrator"),
        "{text}"
    );
    // Gone from the queue: a second bounce finds nothing.
    let again = q.handle.ask(control::Request::Bounce { id: "B1".into() }).await;
    assert!(matches!(again, control::Response::Error(_)), "{again:?}");
    q.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bounce_of_null_sender_mail_deletes_it_without_a_dsn() {
    // Everything is deferred, DSNs included.
    let (hop, mut seen) = FakeHop::new(|_, _, _| deferred());
    let mut q = LiveQueue::start(relay_cfg(Duration::from_secs(3600), Duration::from_secs(3600)), hop);
    let off = q.enqueue(envelope("B2", None, &["user@example.com"], now_secs())).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resp = q.handle.ask(control::Request::Bounce { id: "B2".into() }).await;
    assert!(
        matches!(resp, control::Response::Bounced(control::Bounced::NullSender)),
        "{resp:?}"
    );
    assert_eq!(q.until_done(off).await, [Mark::Done(off)]);
    assert!(dsns(&q.spool).is_empty(), "no DSN to <>");
    assert_eq!(q.spool.stored().len(), 1, "nothing else stored");
    assert_eq!(attempts(&mut seen).len(), 1);
    q.stop().await;
}

// === a next hop seen healthy again ===

#[tokio::test(start_paused = true)]
async fn deferred_mail_is_retried_at_once_when_the_next_hop_is_seen_up_again() {
    let (hop, mut seen) = FakeHop::new(|_, _, n| if n == 1 { deferred() } else { delivered() });
    let mut q = LiveQueue::start(
        relay_cfg(Duration::from_secs(3600), Duration::from_secs(3600)),
        hop.clone(),
    );
    let off = q
        .enqueue(envelope(
            "H1",
            Some("a@client.example"),
            &["user@example.com"],
            now_secs(),
        ))
        .await;
    // Deferred for an hour; ten seconds later a probe gets through.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let first = attempts(&mut seen);
    assert_eq!(first.len(), 1);
    hop.recovered.notify_one();
    assert_eq!(q.until_done(off).await, [Mark::Done(off)]);
    let tries = attempts(&mut seen);
    assert_eq!(tries.len(), 1, "{tries:?}");
    assert_eq!(
        tries[0].at - first[0].at,
        Duration::from_secs(10),
        "retried when the hop came back, not an hour later"
    );
    q.stop().await;
}

// === sluice queue list ===

#[tokio::test]
async fn a_listed_message_is_written_exactly_as_its_entry_reads() {
    let s = Settle::new(relay_cfg(Duration::from_secs(60), Duration::from_secs(3600)));
    let mut job = s
        .job(
            envelope(
                "L1",
                Some("a@client.example"),
                &["user@example.com", "known@example.com"],
                1_700_000_000,
            ),
            2,
        )
        .await;
    job.stored.done[0] = true;
    job.last_reply = Some(Arc::from("451 4.3.0 \"try\" later\tplease"));
    let null = s
        .job(envelope("L2", None, &["user@example.com"], 1_700_000_001), 1)
        .await;
    for (job, state, next) in [
        (&job, State::Deferred, Some(Instant::now() + Duration::from_secs(90))),
        (&null, State::Held, None),
    ] {
        let listed = job.listed(state, next);
        let written = serde_json::to_string(&listed).unwrap();
        let entry: control::Entry = serde_json::from_str(&written).unwrap();
        assert_eq!(entry, control::Entry::from(listed), "{written}");
    }
    let entry = job.entry(State::Deferred, None);
    assert_eq!(
        (entry.from.as_str(), entry.rcpts.as_slice(), entry.last_reply.as_deref()),
        (
            "a@client.example",
            ["known@example.com".to_string()].as_slice(),
            Some("451 4.3.0 \"try\" later\tplease")
        ),
        "only the recipient still to deliver"
    );
    assert_eq!(null.entry(State::Held, None).from, "", "the null sender");
}
