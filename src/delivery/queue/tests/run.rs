//! The run loop under paused time: backoff waits, retries, the DSNs it
//! queues, `sluice queue bounce`, a next hop seen up again, and listing.

use super::*;

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
