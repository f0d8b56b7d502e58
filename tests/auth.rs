//! SPF, DKIM and DMARC end to end against a real DNS server (dnslib serving
//! a zone written here): keys are generated per run, messages are signed
//! with mail-auth's signer, and the checks go through hickory over loopback.
//! Client addresses such as 192.0.2.1 are only SPF inputs; nothing is sent
//! to them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use sluice::spam::auth::{AuthContext, AuthOutcome, Authenticator, strip_forged_results, tokio_resolver};

use crate::util::services::{BlackHoleDns, DnsServer};

const AUTHSERV_ID: &str = "mx.test.example";
const LISTED_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const UNLISTED_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// A freshly generated Ed25519 signing key (PKCS#8; the key type is not
/// Clone and the signer takes it by value) and its DKIM TXT record.
struct Key {
    pkcs8: Vec<u8>,
    record: String,
}

impl Key {
    fn generate() -> Key {
        let pkcs8 = Ed25519Key::generate_pkcs8().expect("generate an Ed25519 key");
        let key = Ed25519Key::from_pkcs8_der(&pkcs8).expect("load the Ed25519 key");
        let record = format!("v=DKIM1; k=ed25519; p={}", base64(&key.public_key()));
        Key { pkcs8, record }
    }

    /// `msg` with a DKIM-Signature by `domain`, selector `sel`, prepended.
    fn sign(&self, domain: &str, msg: &str) -> String {
        let key = Ed25519Key::from_pkcs8_der(&self.pkcs8).expect("load the Ed25519 key");
        let sig = DkimSigner::from_key(key)
            .domain(domain)
            .selector("sel")
            .headers(["From", "To", "Subject", "Date", "Message-ID"])
            .sign(msg.as_bytes())
            .expect("sign");
        format!("{}{msg}", sig.to_header())
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                char::from(A[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// The test zone: example.test (SPF for 127.0.0.1 only, a DKIM key, DMARC
/// p=reject), forged.test (its own key and SPF, no DMARC), and the name
/// DnsServer::start asks to see that the server is up.
fn zone(example: &Key, forged: &Key) -> String {
    format!(
        "$TTL 60\n\
         example.test. IN TXT \"v=spf1 ip4:127.0.0.1 -all\"\n\
         sel._domainkey.example.test. IN TXT \"{}\"\n\
         _dmarc.example.test. IN TXT \"v=DMARC1; p=reject\"\n\
         forged.test. IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n\
         sel._domainkey.forged.test. IN TXT \"{}\"\n\
         2.0.0.127.bl.test. IN A 127.0.0.2\n",
        example.record, forged.record
    )
}

struct Fixture {
    dns: DnsServer,
    example: Key,
    forged: Key,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let example = Key::generate();
    let forged = Key::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.zone");
    std::fs::write(&path, zone(&example, &forged)).unwrap();
    let dns = tokio::task::spawn_blocking(move || DnsServer::start(Path::new(&path)))
        .await
        .unwrap();
    Fixture {
        dns,
        example,
        forged,
        _dir: dir,
    }
}

fn authenticator(port: u16, overall: Duration) -> Authenticator {
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let resolver = tokio_resolver(
        Some(server),
        Duration::from_secs(2),
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .expect("resolver");
    Authenticator::new(resolver, AUTHSERV_ID.to_string(), overall)
}

fn message(from: &str, body: &str) -> String {
    format!(
        "From: Alice <{from}>\r\n\
         To: bob@example.com\r\n\
         Subject: authentication test\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <auth-test@example.test>\r\n\
         \r\n\
         {body}"
    )
}

async fn check(auth: &Authenticator, ip: IpAddr, helo: &str, mail_from: &str, raw: &str) -> AuthOutcome {
    let parsed = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .expect("parse");
    let ctx = AuthContext {
        ip,
        helo,
        mail_from,
        deadline: None,
    };
    auth.check(&ctx, &parsed, raw.as_bytes()).await
}

/// The header is well formed: our id first, CRLF lines within 78
/// characters, continuation lines indented, one final CRLF.
fn assert_header_shape(o: &AuthOutcome) {
    let h = &o.header;
    assert!(h.starts_with(&format!("Authentication-Results: {AUTHSERV_ID};")), "{h}");
    assert!(h.ends_with("\r\n") && !h.ends_with("\r\n\r\n"), "{h:?}");
    let lines: Vec<&str> = h.trim_end_matches("\r\n").split("\r\n").collect();
    for (i, line) in lines.iter().enumerate() {
        assert!(line.len() <= 78, "line {i} is {} long: {line:?}", line.len());
        assert!(!line.contains('\n') && !line.contains('\r'), "{h:?}");
        if i > 0 {
            assert!(line.starts_with('\t'), "continuation line without WSP: {line:?}");
        }
    }
    // Once unfolded, each method appears with the result the fields report.
    let unfolded = h.replace("\r\n\t", " ");
    for (method, result) in [("spf", o.spf), ("dmarc", o.dmarc)] {
        assert!(unfolded.contains(&format!("{method}={result}")), "{unfolded}");
    }
    assert!(unfolded.contains(&format!("dkim={}", o.dkim)), "{unfolded}");
}

fn unfolded(o: &AuthOutcome) -> String {
    o.header.replace("\r\n\t", " ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_signed_mail_from_permitted_ip_passes_all_three() {
    let f = fixture().await;
    let auth = authenticator(f.dns.port, Duration::from_secs(5));
    let raw = f
        .example
        .sign("example.test", &message("alice@example.test", "Hello Bob.\r\n"));

    let o = check(&auth, LISTED_IP, "mail.example.test", "alice@example.test", &raw).await;
    assert_eq!(
        (o.spf, o.dkim, o.dmarc, o.dmarc_policy),
        ("pass", "pass", "pass", Some("reject")),
        "{}",
        o.header
    );
    assert_eq!(o.summary(), "spf=pass dkim=pass dmarc=pass dmarc-policy=reject");
    assert_header_shape(&o);
    let h = unfolded(&o);
    assert!(h.contains("spf=pass smtp.mailfrom=alice@example.test;"), "{h}");
    assert!(
        h.contains("dkim=pass header.d=example.test header.s=sel header.b="),
        "{h}"
    );
    assert!(
        h.contains("dmarc=pass header.from=example.test policy.dmarc=reject\r\n"),
        "{h}"
    );
    // The lookups really went to our server.
    let log = f.dns.log();
    for name in ["example.test", "sel._domainkey.example.test", "_dmarc.example.test"] {
        assert!(log.contains(&format!("{name}.")), "{name} not asked:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_altered_body_from_unlisted_ip_fails_all_three() {
    let f = fixture().await;
    let auth = authenticator(f.dns.port, Duration::from_secs(5));
    let signed = f
        .example
        .sign("example.test", &message("alice@example.test", "Pay invoice 1.\r\n"));
    let altered = signed.replace("Pay invoice 1.", "Pay invoice 2.");
    assert_ne!(signed, altered);

    let o = check(&auth, UNLISTED_IP, "mail.example.test", "alice@example.test", &altered).await;
    assert_eq!(
        (o.spf, o.dkim, o.dmarc, o.dmarc_policy),
        ("fail", "fail", "fail", Some("reject")),
        "{}",
        o.header
    );
    assert_eq!(o.summary(), "spf=fail dkim=fail dmarc=fail dmarc-policy=reject");
    assert_header_shape(&o);
    let h = unfolded(&o);
    assert!(
        h.contains("dkim=fail (body hash did not verify) header.d=example.test"),
        "{h}"
    );

    // The same altered message from the permitted IP: DKIM still fails, but
    // DMARC passes through the aligned SPF pass.
    let o = check(&auth, LISTED_IP, "mail.example.test", "alice@example.test", &altered).await;
    assert_eq!((o.spf, o.dkim, o.dmarc), ("pass", "fail", "pass"), "{}", o.header);

    // And the intact message from the unlisted IP: SPF fails, DKIM passes
    // and carries DMARC.
    let o = check(&auth, UNLISTED_IP, "mail.example.test", "alice@example.test", &signed).await;
    assert_eq!((o.spf, o.dkim, o.dmarc), ("fail", "pass", "pass"), "{}", o.header);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_domain_without_records_is_none() {
    let f = fixture().await;
    let auth = authenticator(f.dns.port, Duration::from_secs(5));
    let raw = message("carol@nothing.test", "Hi.\r\n");

    let o = check(&auth, LISTED_IP, "mail.nothing.test", "carol@nothing.test", &raw).await;
    assert_eq!(
        (o.spf, o.dkim, o.dmarc, o.dmarc_policy),
        ("none", "none", "none", None),
        "{}",
        o.header
    );
    assert_eq!(o.summary(), "spf=none dkim=none dmarc=none");
    assert_header_shape(&o);
    let h = unfolded(&o);
    assert!(h.contains("spf=none smtp.mailfrom=carol@nothing.test;"), "{h}");
    assert!(h.contains("dkim=none;"), "{h}");
    assert!(h.contains("dmarc=none header.from=nothing.test\r\n"), "{h}");
    assert!(f.dns.log().contains("nothing.test"), "nothing.test was not asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_null_sender_uses_helo_identity() {
    let f = fixture().await;
    let auth = authenticator(f.dns.port, Duration::from_secs(5));
    let raw = message("alice@example.test", "A bounce.\r\n");

    // HELO example.test is permitted for 127.0.0.1 and aligns with From.
    let o = check(&auth, LISTED_IP, "example.test", "", &raw).await;
    assert_eq!((o.spf, o.dkim, o.dmarc), ("pass", "none", "pass"), "{}", o.header);
    assert!(
        unfolded(&o).contains("spf=pass smtp.helo=example.test;"),
        "{}",
        o.header
    );

    // From elsewhere: SPF fails on the HELO identity, nothing else passes.
    let o = check(&auth, UNLISTED_IP, "example.test", "", &raw).await;
    assert_eq!((o.spf, o.dkim, o.dmarc), ("fail", "none", "fail"), "{}", o.header);
    assert_eq!(o.dmarc_policy, Some("reject"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_valid_signature_of_another_domain_does_not_align() {
    let f = fixture().await;
    let auth = authenticator(f.dns.port, Duration::from_secs(5));
    // From example.test, signed (validly) by forged.test, sent from
    // forged.test's permitted range with a forged.test envelope.
    let raw = f
        .forged
        .sign("forged.test", &message("ceo@example.test", "Wire the money.\r\n"));

    let o = check(&auth, UNLISTED_IP, "mx.forged.test", "bounce@forged.test", &raw).await;
    assert_eq!(
        (o.spf, o.dkim, o.dmarc, o.dmarc_policy),
        ("pass", "pass", "fail", Some("reject")),
        "{}",
        o.header
    );
    assert!(unfolded(&o).contains("dkim=pass header.d=forged.test"), "{}", o.header);

    // A signature claiming example.test made with forged.test's key fails.
    let raw = f
        .forged
        .sign("example.test", &message("ceo@example.test", "Wire it.\r\n"));
    let o = check(&auth, UNLISTED_IP, "mx.forged.test", "bounce@forged.test", &raw).await;
    assert_eq!((o.dkim, o.dmarc), ("fail", "fail"), "{}", o.header);
    assert!(
        unfolded(&o).contains("dkim=fail (signature did not verify)"),
        "{}",
        o.header
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_deadline_turns_pending_results_into_temperror() {
    // A server that never answers: every lookup is still pending when the
    // overall timeout (300 ms, well below the 2 s per-query one) expires.
    let hole = BlackHoleDns::start();
    let auth = authenticator(hole.port, Duration::from_millis(300));
    let key = Key::generate();
    let raw = key.sign("example.test", &message("alice@example.test", "Hello.\r\n"));

    let started = Instant::now();
    let o = check(&auth, LISTED_IP, "mail.example.test", "alice@example.test", &raw).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "returned after {took:?}");
    assert!(took < Duration::from_secs(2), "the deadline did not hold: {took:?}");
    assert_eq!(
        (o.spf, o.dkim, o.dmarc, o.dmarc_policy),
        ("temperror", "temperror", "temperror", None),
        "{}",
        o.header
    );
    assert_header_shape(&o);
    assert!(unfolded(&o).contains("spf=temperror (timeout)"), "{}", o.header);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_forged_results_are_stripped_before_ours_is_added() {
    let f = fixture().await;
    let auth = authenticator(f.dns.port, Duration::from_secs(5));
    let inner = message("alice@example.test", "Hello.\r\n");
    let raw = format!(
        "Authentication-Results: MX.TEST.EXAMPLE;\r\n\tspf=pass; dkim=pass; dmarc=pass\r\n\
         Authentication-Results: upstream.example; spf=pass\r\n{inner}"
    );
    let stripped = strip_forged_results(raw.as_bytes(), AUTHSERV_ID);
    let stripped = std::str::from_utf8(&stripped).unwrap().to_string();
    assert_eq!(
        stripped,
        format!("Authentication-Results: upstream.example; spf=pass\r\n{inner}")
    );
    // Unsigned, from an address SPF does not permit: the forged claims
    // are gone and ours says what really happened.
    let o = check(&auth, UNLISTED_IP, "mail.example.test", "alice@example.test", &stripped).await;
    assert_eq!((o.spf, o.dkim, o.dmarc), ("fail", "none", "fail"), "{}", o.header);
    let out = format!("{}{stripped}", o.header);
    assert_eq!(
        out.matches(&format!("Authentication-Results: {AUTHSERV_ID};")).count(),
        1
    );
}

#[test]
fn auth_check_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let auth = authenticator(9, Duration::from_millis(1));
        let raw = b"From: a@b.example\r\n\r\nx\r\n";
        let parsed = mail_parser::MessageParser::default().parse(&raw[..]).unwrap();
        let ctx = AuthContext {
            ip: LISTED_IP,
            helo: "h",
            mail_from: "",
            deadline: None,
        };
        let fut = auth.check(&ctx, &parsed, raw);
        assert_send(&fut);
        drop(fut);
    });
}

/// Through the server: a signed message from the permitted address gets our
/// Authentication-Results on top (pass, pass, pass), a forged one claiming
/// our name is gone, and the rest arrives byte for byte. The same message
/// with its body changed, from an address SPF does not permit, fails all
/// three, and the failure reaches the rules (SpamScored names a DMARC rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_results_through_the_relay() {
    use crate::util::{Client, Sink, TABLE, TestRelay, base_toml, strip_trace};
    let fx = fixture().await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[dns]\nresolver = \"127.0.0.1:{}\"\ntimeout = \"2s\"\n",
        base_toml(&sink.next_hop()).replace("[spam]\nenabled = false", "[spam]\nauth_timeout = \"3s\""),
        fx.dns.port
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let mut events = relay.running().events.subscribe();

    let signed = fx
        .example
        .sign("example.test", &message("alice@example.test", "Hello Bob.\r\n"));
    let forged = format!("Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d=example.test\r\n");
    let mut c = relay.client().await;
    c.cmd("EHLO mail.example.test", "250").await;
    c.envelope("alice@example.test", &["user@example.com"]).await;
    let r = c.data(format!("{forged}{signed}").as_bytes()).await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.wait_for(1).await;
    let text = String::from_utf8_lossy(&got[0].data).to_string();
    let ours = format!(
        "Authentication-Results: {AUTHSERV_ID};\r\n\tspf=pass smtp.mailfrom=alice@example.test;\r\n\tdkim=pass header.d=example.test"
    );
    assert!(text.starts_with(&ours), "{text}");
    assert!(text.contains("dmarc=pass header.from=example.test"), "{text}");
    assert_eq!(
        text.matches("Authentication-Results:").count(),
        1,
        "the forged one is gone: {text}"
    );
    let received = text.find("Received: from ").unwrap();
    assert_eq!(strip_trace(&got[0].data[received..]), signed.as_bytes());

    // Body changed, sent from 127.0.0.2 (not in example.test's SPF).
    let tampered = signed.replace("Hello Bob.", "Hello Bob, wire the money.");
    let mut c = Client::connect_from("127.0.0.2", relay.addr).await;
    c.expect("220").await;
    c.cmd("EHLO mail.example.test", "250").await;
    c.envelope("alice@example.test", &["user@example.com"]).await;
    let r = c.data(tampered.as_bytes()).await;
    let rules = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("SpamScored")
            .unwrap();
        if let sluice::events::Event::SpamScored { rules, ip, .. } = &*e
            && ip.to_string() == "127.0.0.2"
        {
            break rules.clone();
        }
    };
    assert!(rules.split(',').any(|r| r.contains("DMARC")), "{rules} ({r})");
    if r.starts_with("250") {
        let got = sink.wait_for(2).await;
        let text = String::from_utf8_lossy(&got[1].data).to_string();
        assert!(
            text.contains("spf=fail") && text.contains("dkim=fail") && text.contains("dmarc=fail"),
            "{text}"
        );
    }
}
