//! Delivery to the next hop, against the recording sink: retries, DSNs,
//! LMTP per-recipient replies, connection reuse. The backoff arithmetic,
//! expiry to the second and the DSN decisions are unit-tested in
//! src/delivery/queue/tests.rs; these prove them against the real spool.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice::events::{Event, RcptOutcome};

use crate::util::*;

#[tokio::test]
async fn connection_failure_is_retried_with_backoff() {
    let retry_initial = Duration::from_secs(1);
    // Reserve a port with nothing listening yet.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let relay = TestRelay::start_with(&format!("smtp://127.0.0.1:{port}"), |c| {
        c.relay.retry_initial = retry_initial;
        c.relay.retry_max = 2 * retry_initial;
    })
    .await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    // The first attempt cannot start before the message is sent.
    let sent = Instant::now();
    assert!(c.data(&test_message("later")).await.starts_with("250"));
    // First attempt fails (nothing listens); bring the next hop up at once,
    // long before the retry is due.
    let first = attempt_of(&mut events, "user@example.com").await;
    assert_eq!(first, (RcptOutcome::Deferred, 1));
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let sink = Sink::start_on(l, false, Arc::new(|_| None));
    // The second attempt delivers (no attempt in between), and it connected
    // no earlier than retry_initial after the first attempt.
    let second = attempt_of(&mut events, "user@example.com").await;
    assert_eq!(second, (RcptOutcome::Delivered, 2));
    let connected = sink.session_times()[0];
    assert!(
        connected - sent >= retry_initial,
        "retried {:?} after the message was sent, before the backoff of {retry_initial:?}",
        connected - sent
    );
    let got = sink.wait_for(1).await;
    assert_eq!(strip_trace(&got[0].data), &test_message("later")[..]);
}

#[tokio::test]
async fn temporary_rcpt_failure_retries_only_that_recipient() {
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let sink = Sink::start_with(
        false,
        Arc::new(move |rcpt: &str| {
            if rcpt == "known@example.com" && t.fetch_add(1, Ordering::SeqCst) == 0 {
                Some("451 4.3.0 try later".into())
            } else {
                None
            }
        }),
    )
    .await;
    let relay = TestRelay::start(&sink.next_hop()).await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com", "known@example.com"])
        .await;
    assert!(c.data(&test_message("partial")).await.starts_with("250"));
    assert_eq!(
        attempt_of(&mut events, "user@example.com").await,
        (RcptOutcome::Delivered, 1)
    );
    assert_eq!(
        attempt_of(&mut events, "known@example.com").await,
        (RcptOutcome::Deferred, 1)
    );
    assert_eq!(
        attempt_of(&mut events, "known@example.com").await,
        (RcptOutcome::Delivered, 2)
    );
    let got = sink.messages();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].rcpts, ["user@example.com"]);
    assert_eq!(
        got[1].rcpts,
        ["known@example.com"],
        "retry goes only to the deferred recipient"
    );
    // Nothing is owed any more: no duplicate delivery can follow.
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(sink.messages().len(), 2, "no duplicate delivery");
}

#[tokio::test]
async fn permanent_failure_sends_a_dsn_to_the_sender() {
    let sink = Sink::start_with(
        false,
        Arc::new(|rcpt: &str| (rcpt == "known@example.com").then(|| "550 5.1.1 mailbox unavailable".to_string())),
    )
    .await;
    let port = sink.port;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| set_bounce_relay(c, port)).await;
    let mut c = relay.client().await;
    c.envelope("sender@client.example", &["user@example.com", "known@example.com"])
        .await;
    assert!(c.data(&test_message("bounce-me")).await.starts_with("250"));
    let got = sink.wait_for(2).await;
    let dsn = got
        .iter()
        .find(|m| m.mail_from.is_empty())
        .expect("a DSN with the null sender");
    assert_eq!(dsn.rcpts, ["sender@client.example"]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; known@example.com"), "{text}");
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(
        text.contains("Subject: bounce-me"),
        "original headers are included: {text}"
    );
    let orig = got.iter().find(|m| !m.mail_from.is_empty()).unwrap();
    assert_eq!(orig.rcpts, ["user@example.com"]);
    // Settled: one delivery and one DSN, and nothing more to come.
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test]
async fn no_dsn_for_the_null_sender() {
    let sink = Sink::start_with(false, Arc::new(|_: &str| Some("550 5.1.1 no".to_string()))).await;
    let port = sink.port;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| set_bounce_relay(c, port)).await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.envelope("", &["user@example.com"]).await;
    assert!(c.data(&test_message("bounce")).await.starts_with("250"));
    // The refusal is a double bounce (logged and counted), and no DSN is
    // queued for it.
    let rcpt = wait_event(&mut events, |e| match e {
        Event::DoubleBounce { rcpt, reply, .. } => Some(format!("{rcpt}: {reply}")),
        _ => None,
    })
    .await;
    assert_eq!(rcpt, "user@example.com: 550 5.1.1 no");
    // Once stopped, the relay has settled everything: the counts are final.
    let bus = relay.running().events.clone();
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(event_count(&bus, "bounce_queued"), 0, "a bounce is never bounced");
    assert_eq!(bus.metrics().double_bounces.get(), 1);
    assert_eq!(sink.messages().len(), 0);
}

#[tokio::test]
async fn expired_mail_bounces_after_max_queue_age() {
    let sink = Sink::start_with(
        false,
        Arc::new(|r: &str| (r == "user@example.com").then(|| "451 4.2.0 full".to_string())),
    )
    .await;
    let port = sink.port;
    // Two seconds (ages are whole seconds): the first attempt, at once, is
    // deferred; a retry (after 1 s, then 2 s) finds the message expired.
    // (The age arithmetic is tested to the second in the queue's unit
    // tests.)
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        c.relay.max_queue_age = Duration::from_secs(2);
        set_bounce_relay(c, port);
    })
    .await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.envelope("sender@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("expire")).await.starts_with("250"));
    assert_eq!(
        attempt_of(&mut events, "user@example.com").await,
        (RcptOutcome::Deferred, 1)
    );
    let got = sink.wait_for(1).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpts, ["sender@client.example"]);
    assert!(text.contains("Status: 5.4.7"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; user@example.com"), "{text}");
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new(), "expired: done");
    assert_eq!(
        sink.messages().len(),
        1,
        "only the DSN; the message itself never went out"
    );
}

#[tokio::test]
async fn lmtp_reports_per_recipient() {
    let sink = Sink::start_with(true, Arc::new(|_| None)).await;
    let relay = TestRelay::start(&format!("lmtp://127.0.0.1:{}", sink.port)).await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com", "known@example.com"])
        .await;
    assert!(c.data(&test_message("lmtp")).await.starts_with("250"));
    // One reply per recipient after the body: both delivered by the first
    // attempt, so nothing is retried.
    assert_eq!(
        attempt_of(&mut events, "user@example.com").await,
        (RcptOutcome::Delivered, 1)
    );
    assert_eq!(
        attempt_of(&mut events, "known@example.com").await,
        (RcptOutcome::Delivered, 1)
    );
    let got = sink.messages();
    assert_eq!(got.len(), 1, "both recipients done in one transaction");
    assert_eq!(got[0].rcpts, ["user@example.com", "known@example.com"]);
}

#[tokio::test]
async fn connections_to_the_next_hop_are_reused() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| c.relay.concurrency = 1).await;
    let mut c = relay.client().await;
    for i in 0..10 {
        c.envelope("a@client.example", &["user@example.com"]).await;
        assert!(c.data(&test_message(&format!("reuse{i}"))).await.starts_with("250"));
    }
    sink.wait_for(10).await;
    assert_eq!(sink.sessions(), 1, "ten messages over one next-hop connection");
}

#[tokio::test]
async fn a_double_bounce_is_reported_to_double_bounce_to_once() {
    // The next hop refuses user@ and, the second time round, postmaster@.
    let sink = Sink::start_with(
        false,
        Arc::new(|r: &str| (r != "known@example.com").then(|| "550 5.1.1 no".to_string())),
    )
    .await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        c.relay.double_bounce_to = Some(sluice::proto::address::parse_mailbox("known@example.com").unwrap());
    })
    .await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.envelope("", &["user@example.com"]).await;
    assert!(c.data(&test_message("dsn-lost")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    assert_eq!(
        got[0].rcpts,
        ["known@example.com"],
        "the report goes to double_bounce_to"
    );
    assert_eq!(got[0].mail_from, "");
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Final-Recipient: rfc822; user@example.com"), "{text}");
    assert!(text.contains("Subject: dsn-lost"), "{text}");
    wait_event(&mut events, |e| matches!(e, Event::DoubleBounce { .. }).then_some(())).await;
    // Reported once: one report queued, delivered, and nothing more owed.
    let bus = relay.running().events.clone();
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(event_count(&bus, "bounce_queued"), 1);
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn a_double_bounce_report_that_fails_is_not_reported_again() {
    let sink = Sink::start_with(false, Arc::new(|_: &str| Some("550 5.1.1 no".to_string()))).await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        c.relay.double_bounce_to = Some(sluice::proto::address::parse_mailbox("known@example.com").unwrap());
    })
    .await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.envelope("", &["user@example.com"]).await;
    assert!(c.data(&test_message("loop")).await.starts_with("250"));
    // First the message, then the report to known@: two double bounces,
    // one report queued, and then nothing more.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = wait_event(&mut events, |e| match e {
            Event::DoubleBounce { rcpt, .. } => Some(rcpt.clone()),
            _ => None,
        })
        .await;
        seen.push(r);
    }
    assert_eq!(seen, ["user@example.com", "known@example.com"]);
    // Stopped, the relay has settled everything: no report of the report
    // was queued, and none is left in the spool to be sent later.
    let bus = relay.running().events.clone();
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(bus.metrics().double_bounces.get(), 2);
    assert_eq!(
        event_count(&bus, "bounce_queued"),
        1,
        "one report, no report of a report"
    );
    assert!(sink.messages().is_empty());
}
