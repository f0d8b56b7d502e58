//! One settled attempt, on `QueueShared::settle` directly: the retry delay,
//! the recipients kept, bounces, expiry and double bounces.

use super::*;

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
