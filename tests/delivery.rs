//! Delivery to the next hop, against the recording sink: retries, DSNs,
//! LMTP per-recipient replies, connection reuse.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::*;

#[tokio::test]
async fn connection_failure_is_retried_with_backoff() {
    // Reserve a port with nothing listening yet.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let relay = TestRelay::start(&format!("smtp://127.0.0.1:{port}")).await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("later")).await.starts_with("250"));
    // First attempt fails (nothing listens); bring the next hop up.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let sink = Sink::start_on(l, false, Arc::new(|_| None));
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
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com", "known@example.com"])
        .await;
    assert!(c.data(&test_message("partial")).await.starts_with("250"));
    let got = sink.wait_for(2).await;
    assert_eq!(got[0].rcpts, ["user@example.com"]);
    assert_eq!(
        got[1].rcpts,
        ["known@example.com"],
        "retry goes only to the deferred recipient"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
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
    let mut queued = 0;
    let rcpt = wait_event(&mut events, |e| match e {
        sluice::events::Event::BounceQueued { .. } => {
            queued += 1;
            None
        }
        sluice::events::Event::DoubleBounce { rcpt, reply, .. } => Some(format!("{rcpt}: {reply}")),
        _ => None,
    })
    .await;
    assert_eq!(rcpt, "user@example.com: 550 5.1.1 no");
    assert_eq!(queued, 0, "a bounce is never bounced");
    assert_eq!(sink.messages().len(), 0);
    assert_eq!(relay.running().events.metrics().double_bounces.get(), 1);
}

#[tokio::test]
async fn expired_mail_bounces_after_max_queue_age() {
    let sink = Sink::start_with(
        false,
        Arc::new(|r: &str| (r == "user@example.com").then(|| "451 4.2.0 full".to_string())),
    )
    .await;
    let port = sink.port;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        c.relay.max_queue_age = std::time::Duration::from_secs(2);
        set_bounce_relay(c, port);
    })
    .await;
    let mut c = relay.client().await;
    c.envelope("sender@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("expire")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert_eq!(got[0].mail_from, "");
    assert!(text.contains("Status: 5.4.7"), "{text}");
}

#[tokio::test]
async fn lmtp_reports_per_recipient() {
    let sink = Sink::start_with(true, Arc::new(|_| None)).await;
    let relay = TestRelay::start(&format!("lmtp://127.0.0.1:{}", sink.port)).await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com", "known@example.com"])
        .await;
    assert!(c.data(&test_message("lmtp")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts.len(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(sink.messages().len(), 1, "both recipients done in one transaction");
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
    wait_event(&mut events, |e| {
        matches!(e, sluice::events::Event::DoubleBounce { .. }).then_some(())
    })
    .await;
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
            sluice::events::Event::DoubleBounce { rcpt, .. } => Some(rcpt.clone()),
            _ => None,
        })
        .await;
        seen.push(r);
    }
    assert_eq!(seen, ["user@example.com", "known@example.com"]);
    let m = relay.running().events.metrics();
    assert_eq!(m.double_bounces.get(), 2);
    let spool = relay.path("spool");
    // The queue settles: no third attempt follows (a report of a report).
    let next = tokio::time::timeout(
        std::time::Duration::from_millis(1500),
        wait_event(&mut events, |e| match e {
            sluice::events::Event::BounceQueued { .. } | sluice::events::Event::DoubleBounce { .. } => Some(()),
            _ => None,
        }),
    )
    .await;
    assert!(next.is_err(), "no report of a report (spool {})", spool.display());
}
