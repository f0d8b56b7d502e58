//! Pre-DATA policy against a real DNS server (dnslib serving the shared
//! `bl.test` zone): DNSBL, RHSBL, allowlist, deadlines, zone health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::dns::HickoryResolver;
use sluice::events::EventBus;
use sluice::policy::dnsbl::{Dnsbl, Zone};

use crate::util::services::{BlackHoleDns, DnsServer};
use crate::util::*;

fn zone_file() -> std::path::PathBuf {
    corpora().join("dnsbl/bl.test.zone")
}

async fn dns() -> DnsServer {
    let zone = zone_file();
    tokio::task::spawn_blocking(move || DnsServer::start(&zone))
        .await
        .unwrap()
}

async fn relay_with_dnsbl(sink: &Sink, dns_port: u16, extra: &str) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\ntimeout = \"500ms\"\n[dnsbl]\nzones = [\"bl.test*3\"]\nthreshold = 3\n{extra}",
        base_toml(&sink.next_hop())
    );
    TestRelay::start_in(dir, &toml, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_client_is_refused_before_data_unlisted_passes() {
    let dns = dns().await;
    let sink = Sink::start().await;
    let relay = relay_with_dnsbl(&sink, dns.port, "").await;
    let mut events = relay.running().events.subscribe();

    // 127.0.0.2 is listed in bl.test.
    let mut c = Client::connect_from("127.0.0.2", relay.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    let r = c.cmd("RCPT TO:<user@example.com>", "554 5.7.1").await;
    assert!(r.contains("client [127.0.0.2] blocked using bl.test"), "{r}");
    c.cmd("DATA", "503 5.5.1").await;

    // 127.0.0.1 is not listed.
    let mut c = Client::connect_from("127.0.0.1", relay.addr).await;
    c.expect("220").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("clean")).await.starts_with("250"));

    // The refusal is an event with the evidence.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        if let sluice::events::Event::RcptRejected {
            reason,
            evidence,
            ip,
            rcpt,
            ..
        } = &*ev
        {
            assert_eq!(
                *reason,
                sluice::events::Reason::Dnsbl {
                    zones: vec!["bl.test".into()]
                }
            );
            assert_eq!(ip.to_string(), "127.0.0.2");
            assert_eq!(rcpt, "user@example.com");
            assert!(evidence.contains("bl.test=127.0.0.2(+3)"), "{evidence}");
            break;
        }
        assert!(Instant::now() < deadline, "no Rejected event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_text_can_hide_the_zone_and_allowlist_skips_dnsbl() {
    let dns = dns().await;
    let sink = Sink::start().await;
    let relay = relay_with_dnsbl(
        &sink,
        dns.port,
        "[dnsbl.replies]\n\"bl.test\" = \"Poor reputation ($client)\"\n",
    )
    .await;
    let mut c = Client::connect_from("127.0.0.2", relay.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    let r = c
        .cmd("RCPT TO:<user@example.com>", "554 5.7.1 Poor reputation (127.0.0.2)")
        .await;
    assert!(!r.contains("bl.test"));

    let relay = relay_with_dnsbl(&sink, dns.port, "[policy]\nallowlist = [\"127.0.0.2/32\"]\n").await;
    let mut c = Client::connect_from("127.0.0.2", relay.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    // Never recipient validation.
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rhsbl_lists_the_sender_domain() {
    let dns = dns().await;
    let sink = Sink::start().await;
    let relay = relay_with_dnsbl(&sink, dns.port, "domain_zones = [\"bl.test*3\"]\n").await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    // test.bl.test is listed: sender domain "test".
    c.cmd("MAIL FROM:<spammer@test>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "554 5.7.1").await;
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<someone@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_resolver_never_delays_past_the_deadline() {
    let hole = tokio::task::spawn_blocking(BlackHoleDns::start).await.unwrap();
    let sink = Sink::start().await;
    let relay = relay_with_dnsbl(&sink, hole.port, "").await;
    let mut c = Client::connect_from("127.0.0.2", relay.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    let t = Instant::now();
    // Fail open: the list could not be asked, the client is not refused.
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "RCPT waited {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_nibble_entry_and_zone_health_check_against_real_dns() {
    let dns = dns().await;
    // A second, broken copy of the zone that also lists 127.0.0.1 (and so
    // everybody): as a list that has shut down would.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.zone");
    let mut text = std::fs::read_to_string(zone_file()).unwrap();
    text.push_str("\n1.0.0.127 IN A 127.0.0.2\n2.2.0.192 IN A 127.0.0.2\n");
    std::fs::write(&broken, text).unwrap();
    let bdns = tokio::task::spawn_blocking(move || DnsServer::start(&broken))
        .await
        .unwrap();

    let make = |port: u16, zone: &str| {
        Dnsbl::new(
            vec![Zone::parse(zone).unwrap()],
            vec![],
            1,
            Default::default(),
            Duration::from_secs(2),
            Arc::new(
                HickoryResolver::new(
                    Some(format!("127.0.0.1:{port}").parse().unwrap()),
                    Duration::from_secs(2),
                )
                .unwrap(),
            ),
            EventBus::new(16),
        )
    };
    let d = make(dns.port, "bl.test*3");
    let s = d.score_ip("::ffff:7f00:2".parse().unwrap()).await;
    assert_eq!(s.total, 3, "IPv6 nibble entry: {s:?}");
    let s = d.score_ip("::ffff:7f00:1".parse().unwrap()).await;
    assert_eq!(s.total, 0);

    let b = make(bdns.port, "bl.test");
    assert!(b.listed(&b.score_ip("192.0.2.2".parse().unwrap()).await));
    b.health_check().await;
    assert!(
        !b.listed(&b.score_ip("192.0.2.2".parse().unwrap()).await),
        "broken zone must be disabled"
    );
}

async fn relay_with_limits(sink: &Sink, tweak: impl FnOnce(&mut sluice::config::Config)) -> TestRelay {
    TestRelay::start_with(&sink.next_hop(), tweak).await
}

#[tokio::test]
async fn per_ip_concurrent_sessions_and_connection_rate() {
    let sink = Sink::start().await;
    let relay = relay_with_limits(&sink, |c| c.limits.per_ip_connections = 2).await;
    let mut events = relay.running().events.subscribe();
    let _a = relay.client().await;
    let _b = relay.client().await;
    let mut c = Client::connect(relay.addr).await;
    c.expect("421 4.7.0 Too many concurrent sessions").await;
    c.expect_closed().await;
    wait_event(&mut events, |e| {
        matches!(
            e,
            sluice::events::Event::ConnectRejected {
                reason: sluice::events::Reason::RateLimit {
                    limit: sluice::events::Limit::Concurrency
                },
                ..
            }
        )
        .then_some(())
    })
    .await;
    // Another client address is not affected.
    let mut d = Client::connect_from("127.0.0.3", relay.addr).await;
    d.expect("220").await;

    let relay = relay_with_limits(&sink, |c| c.limits.per_ip_connection_rate = 3).await;
    for _ in 0..3 {
        relay.client().await.cmd("QUIT", "221").await;
    }
    let mut c = Client::connect(relay.addr).await;
    c.expect("421 4.7.0 Too many connections").await;
}

#[tokio::test]
async fn message_and_recipient_rates() {
    let sink = Sink::start().await;
    let relay = relay_with_limits(&sink, |c| {
        c.limits.per_ip_message_rate = 2;
        c.limits.per_ip_recipient_rate = 3;
    })
    .await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    c.cmd("RCPT TO:<known@example.com>", "250").await;
    c.cmd("RCPT TO:<other@example.com>", "250").await;
    // A fourth (a repeat would be the same recipient again: 250, not counted).
    c.cmd("RCPT TO:<anyone@catchall.example.net>", "452 4.7.0").await;
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "451 4.7.0").await;
}

#[tokio::test]
async fn tarpit_slows_down_errors_then_421() {
    let sink = Sink::start().await;
    let relay = relay_with_limits(&sink, |c| {
        c.limits.tarpit_after_errors = 2;
        c.limits.tarpit_delay = Duration::from_millis(200);
        c.server.max_errors = 5;
    })
    .await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    let t = Instant::now();
    c.cmd("RCPT TO:<guess1@example.com>", "550 5.1.1").await;
    c.cmd("RCPT TO:<guess2@example.com>", "550 5.1.1").await;
    assert!(t.elapsed() < Duration::from_millis(200), "no delay before the limit");
    let t = Instant::now();
    c.cmd("RCPT TO:<guess3@example.com>", "550 5.1.1").await; // +200 ms
    c.cmd("RCPT TO:<guess4@example.com>", "550 5.1.1").await; // +400 ms
    assert!(t.elapsed() >= Duration::from_millis(600), "tarpit: {:?}", t.elapsed());
    c.send("RCPT TO:<guess5@example.com>").await;
    c.expect("550 5.1.1").await;
    c.expect("421 4.7.0").await;
    c.expect_closed().await;
}

#[tokio::test]
async fn early_talker_gets_no_service_in_the_same_session() {
    let sink = Sink::start().await;
    let relay = relay_with_limits(&sink, |c| c.policy.greet_delay = Duration::from_millis(300)).await;
    let mut events = relay.running().events.subscribe();
    // Talks before the banner.
    let mut c = Client::connect(relay.addr).await;
    c.send("EHLO impatient.example").await;
    c.expect("554 5.7.1 mx.test.example ESMTP no service").await;
    c.expect("503 5.7.1").await; // the early EHLO
    c.cmd("MAIL FROM:<a@client.example>", "503 5.7.1").await;
    c.cmd("QUIT", "221").await;
    c.expect_closed().await;
    wait_event(&mut events, |e| {
        matches!(e, sluice::events::Event::Pregreet { evidence, .. } if evidence.contains("EHLO impatient.example"))
            .then_some(())
    })
    .await;
    // A patient client waits for the banner and is served.
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("patient")).await.starts_with("250"));
}

#[tokio::test]
async fn pipelining_before_the_ehlo_reply_or_after_helo_is_refused() {
    let sink = Sink::start().await;
    let relay = relay_with_limits(&sink, |_| {}).await;
    let mut c = relay.client().await;
    c.send_raw(b"EHLO bot.example\r\nMAIL FROM:<a@bot.example>\r\n").await;
    c.expect("554 5.5.1 Improper command pipelining").await;
    c.expect("503 5.7.1").await;
    c.cmd("QUIT", "221").await;

    let mut c = relay.client().await;
    c.cmd("HELO old.example", "250").await;
    c.send_raw(b"MAIL FROM:<a@old.example>\r\nRCPT TO:<user@example.com>\r\n")
        .await;
    c.expect("554 5.5.1").await;
    c.expect("503 5.7.1").await;

    // After the EHLO reply, pipelining is fine (it was offered).
    let mut c = relay.client().await;
    c.cmd("EHLO good.example", "250").await;
    c.send_raw(b"MAIL FROM:<a@good.example>\r\nRCPT TO:<user@example.com>\r\n")
        .await;
    c.expect("250").await;
    c.expect("250").await;
    // The allowlist skips this check.
    let relay = relay_with_limits(&sink, |c| c.policy.allowlist = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let mut c = relay.client().await;
    c.send_raw(b"EHLO bot.example\r\nMAIL FROM:<a@bot.example>\r\n").await;
    c.expect("250").await;
    c.expect("250").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_checks_and_fcrdns_against_real_dns() {
    // The shared zone plus reverse and forward records for FCrDNS.
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("fcrdns.zone");
    let mut text = std::fs::read_to_string(zone_file()).unwrap();
    text.push_str(
        "\n3.2.0.192.in-addr.arpa. IN PTR good.fcrdns.test.\ngood.fcrdns.test. IN A 192.0.2.3\n\
         4.2.0.192.in-addr.arpa. IN PTR liar.fcrdns.test.\nliar.fcrdns.test. IN A 198.51.100.99\n",
    );
    std::fs::write(&zone, text).unwrap();
    let dns = tokio::task::spawn_blocking(move || DnsServer::start(&zone))
        .await
        .unwrap();

    // The FCrDNS test itself, through hickory against the real server.
    let resolver = HickoryResolver::new(
        Some(format!("127.0.0.1:{}", dns.port).parse().unwrap()),
        Duration::from_secs(2),
    )
    .unwrap();
    let t = Duration::from_secs(2);
    use sluice::policy::helo::{Fcrdns, fcrdns};
    assert_eq!(
        fcrdns(&resolver, "192.0.2.3".parse().unwrap(), t).await,
        Fcrdns::Pass("good.fcrdns.test".into())
    );
    assert!(matches!(
        fcrdns(&resolver, "192.0.2.4".parse().unwrap(), t).await,
        Fcrdns::Fail(_)
    ));
    assert!(matches!(
        fcrdns(&resolver, "192.0.2.5".parse().unwrap(), t).await,
        Fcrdns::Fail(_)
    ));

    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[dns]\nresolver = \"127.0.0.1:{}\"\ntimeout = \"1s\"\n[dnsbl]\nthreshold = 3\n\
         [helo]\nfcrdns = \"reject\"\nnon_fqdn = \"reject\"\nbare_ip = \"3\"\nour_name = \"reject\"\n",
        base_toml(&sink.next_hop()),
        dns.port
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;

    // Loopback reverse names are "localhost" (RFC 6761, answered by the
    // resolver itself): 127.0.0.1 is forward-confirmed, 127.0.0.4 is not.
    let mut c = Client::connect_from("127.0.0.1", relay.addr).await;
    c.expect("220").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let mut c = Client::connect_from("127.0.0.4", relay.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "550 5.7.25").await;
    c.cmd("RCPT TO:<known@example.com>", "550 5.7.25").await;

    // HELO checks.
    let mut c = Client::connect_from("127.0.0.1", relay.addr).await;
    c.expect("220").await;
    c.cmd(
        "EHLO localhost",
        "550 5.7.1 Helo command rejected: HELO is not a fully qualified",
    )
    .await;
    c.cmd(
        "EHLO mx.test.example",
        "550 5.7.1 Helo command rejected: HELO claims to be this server",
    )
    .await;
    c.cmd("MAIL FROM:<a@client.example>", "503 5.5.1").await;
    // A bare IP only scores 3, which reaches the threshold: refused at RCPT.
    c.cmd("EHLO 192.0.2.1", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    let r = c.cmd("RCPT TO:<user@example.com>", "554 5.7.1").await;
    assert!(r.contains("poor reputation"), "{r}");
}

/// The wiring, with the real clock: the delay, the retry window and the
/// auto-allowlist are tested to the second with a fake clock in
/// src/policy/greylist.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_defers_then_passes_and_survives_restart() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[greylist]\nenabled = true\ndelay = \"1s\"\nretry_window = \"1h\"\n",
        base_toml(&sink.next_hop())
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    let r = c.cmd("RCPT TO:<user@example.com>", "451 4.7.1 Greylisted").await;
    assert!(r.contains("try again in 1 seconds"), "{r}");
    // Recipient validation comes first: an unknown user is 550, not 451.
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    // A second triplet, greylisted before the restart.
    c.cmd("RCPT TO:<known@example.com>", "451 4.7.1").await;
    // The delay is whole seconds of the wall clock: 1.1 s is always past it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    c.cmd("QUIT", "221").await;

    // Restart: the state is saved at shutdown and read back at start.
    let dir = relay.stop().await;
    assert!(dir.path().join("spool/greylist.state").is_file());
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    c.cmd("RCPT TO:<known@example.com>", "250").await;
    assert!(c.data(&test_message("greylisted-then-passed")).await.starts_with("250"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callahead_against_real_postfix_with_cache_and_budget() {
    let sink = Sink::start().await;
    let sink_port = sink.port;
    let postfix = tokio::task::spawn_blocking(move || {
        crate::util::services::Postfix::start_with_recipients(sink_port, &["valid@example.org", "user@example.com"])
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), format!("{TABLE}@example.org VERIFY\n")).unwrap();
    let toml = format!(
        "{}\n[callahead]\nenabled = true\nprobes_per_client = 3\n",
        base_toml(&format!("smtp://127.0.0.1:{}", postfix.port))
    )
    .replace(
        "domains = [\"example.com\"",
        "domains = [\"example.org\", \"example.com\"",
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<valid@example.org>", "250").await; // probe 1
    c.cmd("RCPT TO:<bogus1@example.org>", "550 5.1.1").await; // probe 2
    c.cmd("RCPT TO:<bogus1@example.org>", "550 5.1.1").await; // cache
    c.cmd("RCPT TO:<valid@example.org>", "250").await; // cache
    c.cmd("RCPT TO:<bogus2@example.org>", "550 5.1.1").await; // probe 3
    c.cmd("RCPT TO:<bogus3@example.org>", "450 4.7.1").await; // budget used up: no probe
    // Table entries still win without a probe.
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    assert!(c.data(&test_message("verified")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    assert!(got[0].rcpts.contains(&"valid@example.org".to_string()));

    // Postfix saw exactly one probe for bogus1 and none for bogus3.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = postfix.log();
        let n1 = log.matches("<bogus1@example.org>: Recipient address rejected").count();
        let n3 = log.matches("bogus3@example.org").count();
        if n1 == 1 && n3 == 0 && log.contains("<bogus2@example.org>") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "probes seen by Postfix: bogus1 {n1}, bogus3 {n3}\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_a_table_every_recipient_is_verified_at_the_next_hop() {
    let sink = Sink::start_with(
        false,
        Arc::new(|r: &str| r.starts_with("nobody").then(|| "550 5.1.1 no such user".to_string())),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("{}\n[callahead]\nenabled = true\n", base_toml(&sink.next_hop()))
        .replace("table = \"recipients\"", "table = \"\"");
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<anyone@example.com>", "250").await;
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    c.cmd("RCPT TO:<x@elsewhere.example>", "554 5.7.1").await;
    assert!(c.data(&test_message("no-table")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["anyone@example.com"]);
}

/// Stress mode: near `server.max_connections`, idle sessions are closed
/// after `stress.timeout` (not `timeouts.idle`) and a session ends at
/// `stress.max_errors`; when the load falls it turns off again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_mode_shortens_timeouts_and_error_limits_near_the_connection_limit() {
    use sluice::events::Event;
    let sink = Sink::start().await;
    let relay = relay_with_limits(&sink, |c| {
        c.server.max_connections = 10;
        c.stress.sessions_ratio = 0.5;
        c.stress.timeout = Duration::from_secs(1);
        c.stress.max_errors = 2;
        c.stress.min_duration = Duration::from_millis(200);
        c.stress.check_interval = Duration::from_millis(50);
    })
    .await;
    let metrics = relay.running().events.metrics().clone();
    let mut events = relay.running().events.subscribe();

    // Below the mark: bad commands count against the normal limit (20).
    let mut calm = relay.client().await;
    for _ in 0..3 {
        calm.cmd("BOGUS", "500").await;
    }
    calm.cmd("NOOP", "250").await;
    drop(calm);

    // Five sessions of ten: stress mode.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(relay.client().await);
    }
    let why = wait_event(&mut events, |e| match e {
        Event::StressMode { on: true, why, .. } => Some(why.clone()),
        _ => None,
    })
    .await;
    assert!(why.contains("of 10 sessions"), "{why}");
    assert_eq!(metrics.stress_mode.get(), 1);
    let started = Instant::now();
    // Two errors end a session.
    idle[1].cmd("BOGUS", "500").await;
    idle[1].send("BOGUS").await;
    idle[1].expect("500").await;
    idle[1].expect("421 4.7.0 Too many errors").await;
    // An idle session is closed after the stress timeout (1 s, not 300 s).
    idle[0].expect("421 4.4.2").await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // The load falls: off again.
    drop(idle);
    wait_event(&mut events, |e| {
        matches!(e, Event::StressMode { on: false, .. }).then_some(())
    })
    .await;
    assert_eq!(metrics.stress_mode.get(), 0);
}
