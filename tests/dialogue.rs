//! SMTP conversations with the real server over loopback.

use crate::util::*;

async fn relay() -> (Sink, TestRelay) {
    let sink = Sink::start().await;
    let relay = TestRelay::start(&sink.next_hop()).await;
    (sink, relay)
}

#[tokio::test]
async fn ehlo_advertises_the_extensions() {
    let (_sink, relay) = relay().await;
    let mut c = relay.client().await;
    let r = c.cmd("EHLO client.example", "250").await;
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(r.lines().any(|l| l[4..] == *ext), "{ext} missing in {r}");
    }
    assert!(!r.contains("STARTTLS"), "no STARTTLS without [tls]");
    c.cmd("QUIT", "221 2.0.0").await;
    c.expect_closed().await;
}

#[tokio::test]
async fn unknown_recipient_and_relay_denied() {
    let (_sink, relay) = relay().await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250 2.1.0").await;
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    c.cmd("RCPT TO:<user@elsewhere.example>", "554 5.7.1").await;
    c.cmd("RCPT TO:<User@Example.COM>", "250 2.1.5").await;
    c.cmd("RCPT TO:<anyone@catchall.example.net>", "250 2.1.5").await;
}

#[tokio::test]
async fn sequence_errors() {
    let (_sink, relay) = relay().await;
    let mut c = relay.client().await;
    c.cmd("MAIL FROM:<a@b.example>", "503 5.5.1").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("MAIL FROM:<a@b.example>", "250").await;
    c.cmd("MAIL FROM:<a@b.example>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("RSET", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "503 5.5.1").await;
    c.cmd("NOOP", "250").await;
    c.cmd("VRFY user", "252").await;
    c.cmd("FOO bar", "500 5.5.2").await;
    c.cmd("MAIL FROM:<a@b.example> BOGUS=1", "555 5.5.4").await;
    c.cmd("MAIL FROM:a@b.example", "501 5.1.7").await;
    c.cmd("EHLO", "501").await;
    c.cmd("STARTTLS", "502 5.5.1").await;
}

#[tokio::test]
async fn too_many_recipients_is_452() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| c.server.max_recipients = 2).await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com", "known@example.com"])
        .await;
    c.cmd("RCPT TO:<other@example.com>", "452 4.5.3").await;
    // The transaction goes on with the first two.
    let r = c.data(&test_message("two")).await;
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["user@example.com", "known@example.com"]);
}

#[tokio::test]
async fn size_limit_at_mail_and_at_end_of_data() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| c.server.max_message_size = 2000).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example> SIZE=2001", "552 5.3.4").await;
    c.cmd("MAIL FROM:<a@client.example> SIZE=1000", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    let r = c.data(&test_message("big")).await; // ~4 KiB: lied about SIZE
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // The session is still usable.
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    // Refused, never accepted: it cannot reach the next hop.
    assert_eq!(event_count(&relay.running().events, "message_accepted"), 0);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn pipelining_one_packet_gets_all_replies() {
    let (sink, relay) = relay().await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.send_raw(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<user@example.com>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<known@example.com>\r\nDATA\r\n")
        .await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("550 5.1.1").await;
    c.expect("250 2.1.5").await;
    c.expect("354").await;
    // Body, end of data and a second transaction in one packet.
    let mut pkt = dot_stuff(&test_message("first"));
    pkt.extend_from_slice(b"MAIL FROM:<b@client.example>\r\nRCPT TO:<other@example.com>\r\nDATA\r\n");
    c.send_raw(&pkt).await;
    c.expect("250 2.0.0").await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("354").await;
    c.send_raw(&dot_stuff(&test_message("second"))).await;
    c.expect("250 2.0.0").await;
    c.cmd("QUIT", "221").await;
    let got = sink.wait_for(2).await;
    let mut subjects: Vec<_> = got.iter().map(|m| (m.mail_from.clone(), m.rcpts.clone())).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            (
                "a@client.example".to_string(),
                vec!["user@example.com".to_string(), "known@example.com".to_string()]
            ),
            ("b@client.example".to_string(), vec!["other@example.com".to_string()]),
        ]
    );
}

/// SMTP smuggling: none of the end-of-data variants ends DATA; the
/// smuggled MAIL/RCPT/DATA is never executed, and the whole message is
/// refused because of its bare CR/LF.
#[tokio::test]
async fn smuggling_vectors_never_end_data() {
    let (sink, relay) = relay().await;
    let bus = relay.running().events.clone();
    let vectors = sluice::proto::receiver::SMUGGLING_VECTORS;
    for v in vectors {
        let mut c = relay.client().await;
        c.envelope("a@client.example", &["user@example.com"]).await;
        c.cmd("DATA", "354").await;
        let mut pkt = b"Subject: smuggle\r\n\r\nhello".to_vec();
        pkt.extend_from_slice(v);
        pkt.extend_from_slice(b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<known@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n");
        c.send_raw(&pkt).await;
        let r = c.reply().await;
        if v.contains(&0) {
            // NUL variants carry no bare newline: one message, with the
            // smuggled commands as its text.
            assert!(r.starts_with("250 2.0.0"), "{v:?}: {r}");
        } else {
            assert!(r.starts_with("550 5.6.0"), "{v:?}: {r}");
        }
        // Nothing else was executed: the next command gets a single reply.
        c.cmd("NOOP", "250").await;
        c.cmd("QUIT", "221").await;
    }
    // Only the two NUL-variant messages were accepted (so nothing smuggled
    // can ever be relayed), and each was relayed once, to the one real
    // recipient.
    assert_eq!(event_count(&bus, "message_accepted"), 2);
    let got = sink.wait_for(2).await;
    assert_eq!(got.len(), 2);
    for m in got {
        assert_eq!(m.mail_from, "a@client.example");
        assert_eq!(m.rcpts, ["user@example.com"]);
        assert!(!m.data.windows(3).any(|w| w == b"\n.\n"));
    }
}

#[tokio::test]
async fn bare_lf_message_is_refused_and_session_continues() {
    let (sink, relay) = relay().await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.cmd("DATA", "354").await;
    c.send_raw(b"Subject: lf\nbare lf body\r\n.\r\n").await;
    c.expect("550 5.6.0").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("ok")).await.starts_with("250"));
    assert_eq!(sink.wait_for(1).await.len(), 1);
}

#[tokio::test]
async fn line_header_and_loop_limits() {
    let (sink, relay) = relay().await;
    let bus = relay.running().events.clone();
    let mut c = relay.client().await;
    // A command line over 4096 octets.
    c.cmd(&format!("NOOP {}", "x".repeat(5000)), "500 5.5.2").await;
    c.cmd("NOOP", "250").await;
    // A body line over 8192 octets.
    c.envelope("a@client.example", &["user@example.com"]).await;
    let mut m = b"Subject: long\r\n\r\n".to_vec();
    m.extend_from_slice(&vec![b'x'; 9000]);
    m.extend_from_slice(b"\r\n");
    assert!(c.data(&m).await.starts_with("552 5.3.4"));
    // A header section over 256 KiB (many short header lines).
    c.envelope("a@client.example", &["user@example.com"]).await;
    let mut m = Vec::new();
    for i in 0..6000 {
        m.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    m.extend_from_slice(b"\r\nbody\r\n");
    assert!(c.data(&m).await.starts_with("552 5.3.4"));
    // 50 Received headers: a mail loop.
    c.envelope("a@client.example", &["user@example.com"]).await;
    let mut m = Vec::new();
    for i in 0..50 {
        m.extend_from_slice(
            format!(
                "Received: from hop{i}.example by hop{}.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
                i + 1
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(b"Subject: loop\r\n\r\nbody\r\n");
    assert!(c.data(&m).await.starts_with("554 5.4.6"));
    // Each refusal is counted before its reply is sent: three refused,
    // none accepted, so nothing can reach the next hop.
    assert_eq!(event_count(&bus, "message_rejected"), 3);
    assert_eq!(event_count(&bus, "message_accepted"), 0);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn too_many_errors_end_the_session() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| c.server.max_errors = 3).await;
    let mut c = relay.client().await;
    c.cmd("FOO", "500").await;
    c.cmd("BAR", "500").await;
    c.send("BAZ").await;
    c.expect("500").await;
    c.expect("421 4.7.0").await;
    c.expect_closed().await;
}

#[tokio::test]
async fn bdat_chunks() {
    let (sink, relay) = relay().await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let msg = test_message("bdat");
    let (a, b) = msg.split_at(100);
    c.send_raw(format!("BDAT {}\r\n", a.len()).as_bytes())
        .await
        .send_raw(a)
        .await;
    c.expect("250 2.0.0 100 octets").await;
    c.send_raw(format!("BDAT {} LAST\r\n", b.len()).as_bytes())
        .await
        .send_raw(b)
        .await;
    c.expect("250 2.0.0 Ok: queued").await;
    // BDAT 0 LAST ends a message with no more octets; pipelined MAIL..BDAT.
    let m2 = test_message("bdat2");
    let mut pkt = format!(
        "MAIL FROM:<a@client.example>\r\nRCPT TO:<known@example.com>\r\nBDAT {}\r\n",
        m2.len()
    )
    .into_bytes();
    pkt.extend_from_slice(&m2);
    pkt.extend_from_slice(b"BDAT 0 LAST\r\n");
    c.send_raw(&pkt).await;
    c.expect("250 2.1.0").await;
    c.expect("250 2.1.5").await;
    c.expect("250 2.0.0").await;
    c.expect("250 2.0.0 Ok: queued").await;
    // BDAT without a transaction: the chunk is read and discarded.
    c.send_raw(b"BDAT 5 LAST\r\nhello").await;
    c.expect("503 5.5.1").await;
    c.cmd("NOOP", "250").await;
    let got = sink.wait_for(2).await;
    let bodies: Vec<&[u8]> = got.iter().map(|m| strip_trace(&m.data)).collect();
    assert!(bodies.contains(&&msg[..]));
    assert!(bodies.contains(&&m2[..]));
}

#[tokio::test]
async fn smtputf8_addresses() {
    let (sink, relay) = relay().await;
    std::fs::write(relay.path("recipients"), format!("{TABLE}jörg@example.com OK\n")).unwrap();
    relay.running().reload().await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<jörg@client.example>", "553 5.6.7").await;
    c.cmd("MAIL FROM:<jörg@client.example> SMTPUTF8", "250").await;
    c.cmd("RCPT TO:<jörg@example.com>", "250").await;
    assert!(c.data(&test_message("utf8")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["jörg@example.com"]);
}

#[tokio::test]
async fn recipient_table_reloads_on_change_without_dropping_sessions() {
    let (_sink, relay) = relay().await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<newbie@example.com>", "550 5.1.1").await;
    // Rewrite the file; the watcher (2 s poll) picks it up.
    std::fs::write(relay.path("recipients"), format!("{TABLE}newbie@example.com OK\n")).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        c.send("RCPT TO:<newbie@example.com>").await;
        if c.reply().await.starts_with("250") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "table not reloaded");
    }
    // Same session, still working.
    c.cmd("NOOP", "250").await;
}

#[tokio::test]
async fn received_header_is_prepended_and_body_is_byte_exact() {
    let (sink, relay) = relay().await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let msg = test_message("exact");
    let r = c.data(&msg).await;
    let id = r.rsplit(' ').next().unwrap().to_string();
    let got = sink.wait_for(1).await;
    let data = &got[0].data;
    let text = String::from_utf8_lossy(data);
    assert!(
        text.starts_with("Received: from client.example ([127.0.0.1])\r\n\tby mx.test.example (sluice) with ESMTP id "),
        "{text}"
    );
    assert!(
        text.contains(&format!("id {id}\r\n\tfor <user@example.com>;")),
        "{text}"
    );
    assert_eq!(strip_trace(data), &msg[..]);
}

#[tokio::test]
async fn connection_limit_gives_421() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| c.server.max_connections = 1).await;
    let mut first = relay.client().await;
    let mut second = Client::connect(relay.addr).await;
    second.expect("421 4.7.0").await;
    second.expect_closed().await;
    first.cmd("NOOP", "250").await;
    first.cmd("QUIT", "221").await;
    first.expect_closed().await;
    // The slot is free again once the first session has ended (the server
    // side may take a moment after the close: retry a 421 until then).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut c = loop {
        let mut c = Client::connect(relay.addr).await;
        if c.reply().await.starts_with("220") {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slot never came free");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    c.cmd("NOOP", "250").await;
}

#[tokio::test]
async fn idle_and_data_timeouts_close_with_421() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        c.timeouts.idle = std::time::Duration::from_millis(500);
        c.timeouts.data = std::time::Duration::from_millis(500);
    })
    .await;
    let bus = relay.running().events.clone();
    let mut c = relay.client().await;
    c.expect("421 4.4.2").await;
    c.expect_closed().await;
    // A client that stalls in the middle of DATA gets no 250.
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.cmd("DATA", "354").await;
    c.send_raw(b"Subject: stalled\r\n\r\npart").await;
    c.expect("421 4.4.2").await;
    c.expect_closed().await;
    // The stalled message was never accepted, so it cannot be relayed.
    assert_eq!(event_count(&bus, "message_accepted"), 0);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn listens_on_ipv4_and_ipv6_at_once() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        let addrs: [std::net::SocketAddr; 2] = ["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
        c.server.listen = addrs.into_iter().map(Into::into).collect();
    })
    .await;
    let v6 = relay.running().local_addrs[1];
    assert!(v6.is_ipv6());
    let mut c = Client::connect(v6).await;
    c.expect("220").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("v6")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.starts_with("Received: from client.example ([IPv6:::1])"), "{text}");
    relay.client().await.cmd("NOOP", "250").await;
}

/// A `proxy_protocol` listener (no real balancer: the test writes the
/// headers). The per-client connection rate counts the clients the
/// headers name, not the balancer they all come through; text sent right
/// behind the header stays with the session.
#[tokio::test]
async fn proxy_protocol_listener_judges_the_client_the_header_names() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        let addrs: [std::net::SocketAddr; 2] = ["127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()];
        c.server.listen = vec![
            addrs[0].into(),
            sluice::config::Listen {
                addr: addrs[1],
                proxy_protocol: true,
            },
        ];
        c.server.proxy_from = vec!["127.0.0.1/32".parse().unwrap()];
        c.limits.per_ip_connection_rate = 2;
    })
    .await;
    let proxied = relay.running().local_addrs[1];
    let mut events = relay.running().events.subscribe();

    // Two connections from 192.0.2.7 (v1 and v2), through the balancer at 127.0.0.1.
    let mut c = Client::connect(proxied).await;
    c.send_raw(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n").await;
    c.expect("220 mx.test.example").await;
    let ehlo = c.cmd("EHLO client.example", "250").await;
    assert!(ehlo.contains("Hello client.example [192.0.2.7]"), "{ehlo}");
    c.cmd("QUIT", "221").await;
    let opened = wait_event(&mut events, |e| match e {
        sluice::events::Event::SessionOpened { ip, .. } => Some(*ip),
        _ => None,
    })
    .await;
    assert_eq!(opened.to_string(), "192.0.2.7");

    let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend([192, 0, 2, 7, 127, 0, 0, 1, 0x9c, 0x41, 0, 25]);
    let mut c = Client::connect(proxied).await;
    c.send_raw(&v2).await;
    c.expect("220 mx.test.example").await;
    c.cmd("QUIT", "221").await;

    // The third from 192.0.2.7 is over its rate...
    let mut c = Client::connect(proxied).await;
    c.send_raw(b"PROXY TCP4 192.0.2.7 127.0.0.1 40002 25\r\n").await;
    c.expect("421 4.7.0 Too many connections").await;
    let refused = wait_event(&mut events, |e| match e {
        sluice::events::Event::ConnectRejected { ip, reason, .. } => Some((*ip, reason.clone())),
        _ => None,
    })
    .await;
    assert_eq!(refused.0.to_string(), "192.0.2.7");
    assert_eq!(refused.1.label(), "rate_limit");

    // ...but another client through the same balancer is not, and what it
    // sends right behind the header (EHLO before the banner) is its own.
    let mut c = Client::connect(proxied).await;
    c.send_raw(b"PROXY TCP4 192.0.2.8 127.0.0.1 40003 25\r\nEHLO early.example\r\n")
        .await;
    c.expect("220 mx.test.example").await;
    let ehlo = c.reply().await;
    assert!(ehlo.starts_with("250") && ehlo.contains("[192.0.2.8]"), "{ehlo}");
    c.cmd("QUIT", "221").await;

    // The plain listener is not affected: a client there is who it is.
    let mut c = Client::connect(relay.addr).await;
    c.expect("220 mx.test.example").await;
    assert!(c.cmd("EHLO client.example", "250").await.contains("[127.0.0.1]"));
}
