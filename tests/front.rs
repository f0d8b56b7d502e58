//! sluice in front of a real Postfix and a real Dovecot whose recipient
//! lists are narrower than sluice's table (the everyday drift): valid mail
//! arrives once and whole, only the refused recipient is bounced, DSNs
//! reach the bounce relay, the real client is passed on, routes per domain,
//! STARTTLS to the next hop.

use std::collections::HashMap;
use std::sync::Arc;

use sluice::events::{Event, RcptOutcome};

use crate::util::services::{Dovecot, Postfix};
use crate::util::*;

/// Waits until `n` recipient deliveries reached a final outcome
/// (delivered or bounced, DSNs included); returns the outcomes by id.
async fn wait_final(
    events: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    n: usize,
) -> Vec<(String, String, RcptOutcome)> {
    let mut done = Vec::new();
    while done.len() < n {
        let got = wait_event(events, |e| match e {
            Event::DeliveryAttempt { id, rcpt, outcome, .. } if *outcome != RcptOutcome::Deferred => {
                Some((id.clone(), rcpt.clone(), outcome.clone()))
            }
            _ => None,
        })
        .await;
        done.push(got);
    }
    done
}

/// The subject line of a message (the test messages carry their marker there).
fn subject(msg: &[u8]) -> String {
    let text = String::from_utf8_lossy(msg);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_string()
}

/// Three rounds of: a message only to a recipient the next hop does not
/// know, a message to a valid one, a message to both.
async fn send_drift_rounds(relay: &TestRelay) -> Vec<(String, Vec<u8>)> {
    let mut sent = Vec::new();
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    for round in 0..3 {
        for (marker, rcpts) in [
            (format!("ghost-{round}"), vec!["other@example.com"]),
            (format!("good-{round}"), vec!["user@example.com"]),
            (format!("mixed-{round}"), vec!["other@example.com", "known@example.com"]),
        ] {
            let msg = test_message(&marker);
            c.envelope("sender@client.example", &rcpts).await;
            assert!(c.data(&msg).await.starts_with("250"), "{marker} accepted");
            sent.push((marker, msg));
        }
    }
    sent
}

/// The DSNs at the bounce relay: each to the sender, about `other@` only,
/// one per message that had it (ghost-N and mixed-N).
fn assert_only_the_refused_recipient_bounced(bounces: &Sink) {
    let dsns = bounces.messages();
    let mut about: Vec<String> = Vec::new();
    for d in &dsns {
        assert_eq!(d.mail_from, "", "DSNs have the null sender");
        assert_eq!(d.rcpts, ["sender@client.example"]);
        let text = String::from_utf8_lossy(&d.data);
        assert!(text.contains("Final-Recipient: rfc822; other@example.com"), "{text}");
        assert!(!text.contains("rfc822; user@example.com") && !text.contains("rfc822; known@example.com"));
        assert!(text.contains("Status: 5.1.1"), "{text}");
        let orig = text
            .lines()
            .filter_map(|l| l.strip_prefix("Subject: "))
            .next_back()
            .unwrap_or("")
            .to_string();
        about.push(orig);
    }
    about.sort();
    let mut want: Vec<String> = (0..3)
        .flat_map(|r| [format!("ghost-{r}"), format!("mixed-{r}")])
        .collect();
    want.sort();
    assert_eq!(about, want, "one DSN per message to the refused recipient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_postfix_knowing_fewer_recipients_gets_valid_mail_once_and_whole() {
    let inner = Sink::start().await; // what Postfix relays on
    let bounces = Sink::start().await;
    let inner_port = inner.port;
    let postfix = tokio::task::spawn_blocking(move || {
        Postfix::start_with_recipients(inner_port, &["user@example.com", "known@example.com"])
    })
    .await
    .unwrap();
    let bport = bounces.port;
    // One connection to Postfix, so every message follows the refused one
    // on the same connection (the case that used to lose mail).
    let relay = TestRelay::start_with(&format!("smtp://127.0.0.1:{}", postfix.port), |c| {
        c.relay.concurrency = 1;
        set_bounce_relay(c, bport);
    })
    .await;
    let mut events = relay.running().events.subscribe();
    let sent = send_drift_rounds(&relay).await;
    // 3 rounds x (ghost bounced, good delivered, mixed: 1 + 1, 2 DSNs delivered).
    let finals = wait_final(&mut events, 18).await;
    let bounced: Vec<&(String, String, RcptOutcome)> = finals.iter().filter(|f| f.2 == RcptOutcome::Bounced).collect();
    assert_eq!(bounced.len(), 6, "{finals:?}");
    assert!(bounced.iter().all(|f| f.1 == "other@example.com"), "{finals:?}");

    let got = inner.wait_for(6).await;
    assert_eq!(
        got.len(),
        6,
        "nothing else arrived: {:?}",
        got.iter().map(|m| subject(&m.data)).collect::<Vec<_>>()
    );
    let by_marker: HashMap<String, Vec<u8>> = sent.into_iter().collect();
    let mut seen = Vec::new();
    for m in &got {
        let marker = subject(&m.data);
        assert!(
            !marker.is_empty(),
            "an empty message arrived: {:?}",
            String::from_utf8_lossy(&m.data)
        );
        let want_rcpt = if marker.starts_with("good") {
            "user@example.com"
        } else {
            "known@example.com"
        };
        assert_eq!(m.rcpts, [want_rcpt], "{marker}");
        assert_eq!(
            strip_hops(&m.data, 2),
            &by_marker[&marker][..],
            "{marker} arrived whole"
        );
        seen.push(marker);
    }
    seen.sort();
    let mut want: Vec<String> = (0..3)
        .flat_map(|r| [format!("good-{r}"), format!("mixed-{r}")])
        .collect();
    want.sort();
    assert_eq!(seen, want, "each valid message exactly once");
    assert_only_the_refused_recipient_bounced(&bounces);
    let log = postfix.log();
    assert!(!log.contains("nested MAIL command"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_dovecot_knowing_fewer_users_gets_valid_mail_once_and_dsns_reach_the_bounce_relay() {
    let dovecot = tokio::task::spawn_blocking(|| Dovecot::start_with_users(&["user@example.com", "known@example.com"]))
        .await
        .unwrap();
    let bounces = Sink::start().await;
    let bport = bounces.port;
    let relay = TestRelay::start_with(&format!("lmtp://127.0.0.1:{}", dovecot.port), |c| {
        c.relay.concurrency = 1;
        set_bounce_relay(c, bport);
    })
    .await;
    let mut events = relay.running().events.subscribe();
    let sent = send_drift_rounds(&relay).await;
    wait_final(&mut events, 18).await;
    let by_marker: HashMap<String, Vec<u8>> = sent.into_iter().collect();
    for (user, prefix) in [("user@example.com", "good"), ("known@example.com", "mixed")] {
        let msgs = dovecot.messages(user);
        let mut markers: Vec<String> = msgs.iter().map(|m| subject(m)).collect();
        markers.sort();
        assert_eq!(
            markers,
            (0..3).map(|r| format!("{prefix}-{r}")).collect::<Vec<_>>(),
            "{user}"
        );
        for m in &msgs {
            let marker = subject(m);
            assert_eq!(strip_hops(m, 2), &by_marker[&marker][..], "{user}: {marker} whole");
        }
    }
    assert!(dovecot.messages("other@example.com").is_empty());
    bounces.wait_for(6).await;
    assert_only_the_refused_recipient_bounced(&bounces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_log_names_the_original_client_with_xforward_and_xclient() {
    let inner = Sink::start().await;
    let inner_port = inner.port;
    let postfix = tokio::task::spawn_blocking(move || Postfix::start(inner_port))
        .await
        .unwrap();
    for (n, (mode, client_ip)) in [
        (sluice::config::ForwardClient::Auto, "127.0.0.2"),
        (sluice::config::ForwardClient::Xclient, "127.0.0.3"),
    ]
    .into_iter()
    .enumerate()
    {
        let relay = TestRelay::start_with(&format!("smtp://127.0.0.1:{}", postfix.port), |c| {
            c.relay.forward_client = mode;
        })
        .await;
        let mut c = Client::connect_from(client_ip, relay.addr).await;
        c.expect("220").await;
        c.cmd("EHLO real-client.example", "250").await;
        c.envelope("a@client.example", &["user@example.com"]).await;
        assert!(c.data(&test_message(&format!("fwd-{n}"))).await.starts_with("250"));
        inner.wait_for(n + 1).await;
        let log = postfix.log();
        let line = log
            .lines()
            .find(|l| l.contains("postfix-sluice") && l.contains(&format!("[{client_ip}]")))
            .unwrap_or_else(|| panic!("{mode:?}: Postfix's log does not name {client_ip}:\n{log}"));
        // XFORWARD: "client=unknown[127.0.0.1], orig_queue_id=<sluice's id>,
        // orig_client=unknown[127.0.0.2]"; XCLIENT: "client=unknown[127.0.0.3]".
        let want = match mode {
            sluice::config::ForwardClient::Xclient => format!(": client=unknown[{client_ip}]"),
            _ => format!(", orig_client=unknown[{client_ip}]"),
        };
        assert!(line.ends_with(&want), "{mode:?}: {line}");
        if mode == sluice::config::ForwardClient::Auto {
            assert!(
                line.contains("orig_queue_id="),
                "sluice's queue id is passed on: {line}"
            );
        }
        relay.stop().await;
    }
    // With XCLIENT, the Received header Postfix adds names the client and
    // the HELO name it gave sluice.
    let via_xclient = String::from_utf8_lossy(&inner.messages()[1].data).into_owned();
    let first = via_xclient.lines().next().unwrap_or("");
    assert_eq!(
        first, "Received: from client.example (unknown [127.0.0.3])",
        "{via_xclient}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_lmtp_gets_the_client_by_xclient() {
    let dovecot = tokio::task::spawn_blocking(Dovecot::start).await.unwrap();
    let relay = TestRelay::start(&format!("lmtp://127.0.0.1:{}", dovecot.port)).await;
    let mut c = Client::connect_from("127.0.0.4", relay.addr).await;
    c.expect("220").await;
    c.cmd("EHLO real-client.example", "250").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("lmtp-xclient")).await.starts_with("250"));
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while dovecot.messages("user@example.com").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let m = dovecot.messages("user@example.com").remove(0);
    let text = String::from_utf8_lossy(&m);
    // Dovecot's own Received header (the first one) names the real client.
    let dovecot_received = text.split("\r\nReceived: ").nth(1).unwrap_or("");
    assert!(
        dovecot_received.starts_with("from client.example ([127.0.0.4])"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_deliver_per_domain_from_one_spooled_copy() {
    let inner = Sink::start().await;
    let inner_port = inner.port;
    let (postfix, dovecot) = tokio::task::spawn_blocking(move || (Postfix::start(inner_port), Dovecot::start()))
        .await
        .unwrap();
    let socket = dovecot.socket_path();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[relay.routes]\n\"catchall.example.net\" = \"lmtp:{}\"\n",
        base_toml(&format!("smtp://127.0.0.1:{}", postfix.port)),
        socket.display()
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com", "anyone@catchall.example.net"])
        .await;
    let msg = test_message("routes");
    assert!(c.data(&msg).await.starts_with("250"));
    let got = inner.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["user@example.com"], "Postfix gets only its domain");
    assert_eq!(strip_hops(&got[0].data, 2), &msg[..]);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while dovecot.messages("anyone@catchall.example.net").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "route to Dovecot not delivered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let lmtp = dovecot.messages("anyone@catchall.example.net");
    assert_eq!(lmtp.len(), 1);
    assert_eq!(strip_hops(&lmtp[0], 2), &msg[..]);
    let m = relay.running().events.metrics();
    let delivered = |route: &str| m.route_deliveries.with_label_values(&[route, "delivered"]).get();
    assert_eq!(delivered("default"), 1);
    assert_eq!(delivered("catchall.example.net"), 1);
    assert!(dovecot.messages("user@example.com").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_to_postfix_verifies_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let wrong_ca = dir.path().join("other.pem");
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap();
    // Postfix's processes read the files as the postfix user.
    for p in [dir.path(), cert.as_path(), key.as_path()] {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }

    let inner = Sink::start().await;
    let inner_port = inner.port;
    let (c2, k2) = (cert.clone(), key.clone());
    let postfix = tokio::task::spawn_blocking(move || Postfix::start_with(inner_port, &[], Some((&c2, &k2))))
        .await
        .unwrap();
    let hop = format!("smtp://127.0.0.1:{}", postfix.port);

    // A certificate that does not verify: nothing is sent in the clear.
    let bad = TestRelay::start_with(&hop, |c| {
        c.relay.tls = sluice::config::HopTls::Required;
        c.relay.ca_file = wrong_ca.clone();
    })
    .await;
    let mut events = bad.running().events.subscribe();
    let mut c = bad.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("tls-bad")).await.starts_with("250"));
    let reply = wait_event(&mut events, |e| match e {
        Event::DeliveryAttempt { outcome, reply, .. } => Some((outcome.clone(), reply.clone())),
        _ => None,
    })
    .await;
    assert_eq!(reply.0, RcptOutcome::Deferred, "{reply:?}");
    assert!(
        reply.1.contains("STARTTLS") && reply.1.to_lowercase().contains("certificate"),
        "{reply:?}"
    );
    bad.stop().await;
    assert!(inner.messages().is_empty(), "nothing delivered without verified TLS");

    let good = TestRelay::start_with(&hop, |c| {
        c.relay.tls = sluice::config::HopTls::Required;
        c.relay.ca_file = cert.clone();
    })
    .await;
    let mut c = good.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let msg = test_message("tls-good");
    assert!(c.data(&msg).await.starts_with("250"));
    let got = inner.wait_for(1).await;
    assert_eq!(strip_hops(&got[0].data, 2), &msg[..]);
    let log = postfix.log();
    assert!(log.contains("TLS connection established from"), "{log}");
    let received = String::from_utf8_lossy(&got[0].data);
    assert!(received.contains("with ESMTPS"), "Postfix saw TLS: {received}");
    good.stop().await;

    // Opportunistic: any certificate (here: one no CA file vouches for).
    let may = TestRelay::start_with(&hop, |c| {
        c.relay.tls = sluice::config::HopTls::Opportunistic;
        c.relay.ca_file = wrong_ca.clone();
    })
    .await;
    let mut c = may.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("tls-may")).await.starts_with("250"));
    let got = inner.wait_for(2).await;
    let received = String::from_utf8_lossy(&got[1].data);
    assert!(
        received.contains("tls-may") && received.contains("with ESMTPS"),
        "{received}"
    );
}

/// A relay whose next hop refuses `user@example.com`, with DSNs by MX
/// through the DNS server on `dns_port` and delivered on `mx_port`.
async fn relay_bouncing_by_mx(dns_port: u16, mx_port: u16, refusing: &Sink) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = base_toml(&refusing.next_hop()).replace(
        "[relay]\n",
        &format!("[relay]\nmx_port = {mx_port}\ncommand_timeout = \"2s\"\n"),
    ) + &format!("[dns]\nresolver = \"127.0.0.1:{dns_port}\"\ntimeout = \"500ms\"\n");
    TestRelay::start_in(dir, &toml, |_| {}).await
}

fn refusing_sink() -> RcptPolicy {
    Arc::new(|r: &str| (r == "user@example.com").then(|| "550 5.1.1 no such user".to_string()))
}

/// Sends a message from `sender` to the refused user@example.com.
async fn send_refused(relay: &TestRelay, sender: &str, marker: &str) {
    let mut c = relay.client().await;
    c.envelope(sender, &["user@example.com"]).await;
    assert!(c.data(&test_message(marker)).await.starts_with("250"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsns_to_outside_senders_go_to_their_mx_and_a_null_mx_is_a_double_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("mx.test.zone");
    std::fs::write(
        &zone,
        "$ORIGIN test.\n$TTL 60\n\
         @ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n\
         bounce IN MX 20 mx2.bounce\n\
         bounce IN MX 10 mx1.bounce\n\
         mx1.bounce IN A 127.0.0.9\n\
         mx2.bounce IN A 127.0.0.1\n\
         nullmx IN MX 0 .\n\
         ; what DnsServer::start asks to see that the server is up\n\
         2.0.0.127.bl IN A 127.0.0.2\n",
    )
    .unwrap();
    let dns = tokio::task::spawn_blocking(move || crate::util::services::DnsServer::start(&zone))
        .await
        .unwrap();
    let refusing = Sink::start_with(false, refusing_sink()).await;
    // The sender's MX (nothing listens on 127.0.0.9: the second MX takes it).
    let mx = Sink::start().await;
    let relay = relay_bouncing_by_mx(dns.port, mx.port, &refusing).await;
    let mut events = relay.running().events.subscribe();

    send_refused(&relay, "sender@bounce.test", "to-mx").await;
    let got = mx.wait_for(1).await;
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpts, ["sender@bounce.test"]);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Final-Recipient: rfc822; user@example.com"), "{text}");
    assert!(text.contains("Subject: to-mx"), "{text}");

    send_refused(&relay, "sender@nullmx.test", "null-mx").await;
    let why = wait_event(&mut events, |e| match e {
        Event::DoubleBounce { rcpt, reply, .. } => Some(format!("{rcpt}: {reply}")),
        _ => None,
    })
    .await;
    assert_eq!(
        why,
        "sender@nullmx.test: 550 5.1.10 nullmx.test accepts no mail (null MX)"
    );
    assert_eq!(mx.messages().len(), 1, "nothing more at the MX");
    assert_eq!(
        relay
            .running()
            .events
            .metrics()
            .route_deliveries
            .with_label_values(&["mx", "delivered"])
            .get(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsn_is_kept_for_retry_when_the_resolver_drops_queries() {
    let hole = tokio::task::spawn_blocking(crate::util::services::BlackHoleDns::start)
        .await
        .unwrap();
    let refusing = Sink::start_with(false, refusing_sink()).await;
    let relay = relay_bouncing_by_mx(hole.port, 9, &refusing).await;
    let mut events = relay.running().events.subscribe();
    send_refused(&relay, "sender@bounce.test", "dns-down").await;
    // The DSN's attempt is deferred (temporary), not bounced or dropped.
    let (rcpt, outcome, reply) = wait_event(&mut events, |e| match e {
        Event::DeliveryAttempt {
            rcpt, outcome, reply, ..
        } if rcpt == "sender@bounce.test" => Some((rcpt.clone(), outcome.clone(), reply.clone())),
        _ => None,
    })
    .await;
    assert_eq!(outcome, RcptOutcome::Deferred, "{rcpt}: {reply}");
    assert!(reply.starts_with("451 4.4.3 MX lookup of bounce.test"), "{reply}");
}
