//! `[milter]` behind a real Postfix (issue 21): a private Postfix with
//! `smtpd_milters = inet:127.0.0.1:PORT` relays to a recording sink, and
//! sluice judges each message over the milter protocol with its content
//! checks against a real clamd and a real DNS server (SPF). Postfix's own
//! replies carry sluice's verdicts; stopped, sluice is skipped by Postfix's
//! `milter_default_action` and nothing hangs.

use std::time::Duration;

use sluice::events::{Event, Via};

use crate::scan::{eicar, with_attachment};
use crate::util::services::{Clamd, DnsServer, Postfix};
use crate::util::*;

/// SPF for example.test permits 127.0.0.1 (the clients below); the last
/// name is the one `DnsServer::start` asks to see that it is up.
const ZONE: &str = "$TTL 60\n\
    example.test. IN TXT \"v=spf1 ip4:127.0.0.1 -all\"\n\
    2.0.0.127.bl.test. IN A 127.0.0.2\n";

/// GTUBE, the spam test string every filter scores as spam.
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

struct Setup {
    sluice: TestRelay,
    postfix: Postfix,
    sink: Sink,
    _clamd: Clamd,
    _dns: DnsServer,
    _zone: tempfile::TempDir,
}

/// sluice with `[milter]` (clamd, spam scoring with SPF over the test
/// zone, `spam` appended to `[spam]`), then a Postfix asking it, relaying
/// to a recording sink; `default_action` is Postfix's
/// `milter_default_action`.
async fn setup(spam: &str, default_action: &str) -> Setup {
    let zone = tempfile::tempdir().unwrap();
    let path = zone.path().join("milter.zone");
    std::fs::write(&path, ZONE).unwrap();
    let dns = tokio::task::spawn_blocking(move || DnsServer::start(&path))
        .await
        .unwrap();
    let db = corpora().join("clamav-db");
    let clamd = tokio::task::spawn_blocking(move || Clamd::start(&db)).await.unwrap();
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[dns]\nresolver = \"127.0.0.1:{}\"\ntimeout = \"2s\"\n\
         [clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\ntimeout = \"10s\"\n\
         [milter]\nlisten = [\"127.0.0.1:0\"]\n",
        base_toml(&sink.next_hop()).replace(
            "[spam]\nenabled = false",
            &format!("[spam]\nauth_timeout = \"3s\"\n{spam}")
        ),
        dns.port,
        clamd.port,
    );
    let sluice = TestRelay::start_in(dir, &toml, |_| {}).await;
    let milter = sluice.running().milter_addrs[0];
    let main = format!(
        "smtpd_milters = inet:{milter}\n\
         milter_protocol = 6\n\
         milter_default_action = {default_action}\n\
         milter_connect_timeout = 5s\n"
    );
    let port = sink.port;
    let postfix = tokio::task::spawn_blocking(move || Postfix::start_with_main(port, &main))
        .await
        .unwrap();
    Setup {
        sluice,
        postfix,
        sink,
        _clamd: clamd,
        _dns: dns,
        _zone: zone,
    }
}

/// A session with Postfix up to the end of DATA; returns Postfix's reply.
async fn send_via_postfix(postfix: &Postfix, body: &[u8]) -> String {
    let mut c = Client::connect(([127, 0, 0, 1], postfix.port).into()).await;
    c.expect("220").await;
    c.cmd("EHLO mail.example.test", "250").await;
    c.envelope("alice@example.test", &["user@example.com"]).await;
    c.data(body).await
}

fn message(subject: &str, text: &str) -> Vec<u8> {
    format!(
        "From: alice@example.test\r\nTo: user@example.com\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.test>\r\n\r\n{text}\r\n"
    )
    .into_bytes()
}

/// The milter events of one kind (with `"via":"milter"`).
fn via_milter(e: &Event) -> bool {
    let tx = match e {
        Event::VirusFound { tx, .. }
        | Event::SpamScored { tx, .. }
        | Event::MessageAccepted { tx, .. }
        | Event::Quarantined { tx, .. } => tx,
        _ => return false,
    };
    tx.via == Via::Milter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_rejects_eicar_and_gtube_with_sluices_reply_and_tags_clean_mail() {
    // Everything at or above -100 is tagged: clean mail gets X-Spam-*.
    let s = setup("tag = -100.0\n", "tempfail").await;
    let mut events = s.sluice.running().events.subscribe();

    let r = send_via_postfix(&s.postfix, &with_attachment("eicar.com.txt", &eicar())).await;
    assert!(
        r.starts_with("554 5.7.1 Message rejected: virus found: "),
        "{r}\n{}",
        s.postfix.log()
    );
    let (name, id) = wait_event(&mut events, |e| match e {
        Event::VirusFound { name, tx, ip, id, .. } if tx.via == Via::Milter => Some(((name.clone(), *ip), id.clone())),
        _ => None,
    })
    .await;
    assert!(name.0.contains("Eicar"), "{name:?}");
    assert_eq!(name.1.to_string(), "127.0.0.1", "the client's address from Postfix");
    // The event names the message by Postfix's queue id.
    let log = s.postfix.log();
    assert!(
        log.contains(&format!("{id}: milter-reject: END-OF-MESSAGE")),
        "{id} not in\n{log}"
    );
    let json = serde_json::to_string(&Event::VirusFound {
        session: 1,
        ip: name.1,
        id: "Q".into(),
        tx: sluice::events::Tx {
            helo: "h".into(),
            from: "f".into(),
            via: Via::Milter,
        },
        name: name.0,
        mode: sluice::events::ScanMode::InSession,
    })
    .unwrap();
    assert!(json.contains(r#""via":"milter""#), "{json}");

    let r = send_via_postfix(&s.postfix, &message("gtube", GTUBE)).await;
    assert!(r.starts_with("550 5.7.1 Message rejected as spam"), "{r}");

    let clean = message("hello", "Hello Bob, see you at lunch.");
    let r = send_via_postfix(&s.postfix, &clean).await;
    assert!(r.starts_with("250"), "{r}\n{}", s.postfix.log());
    let got = s.sink.wait_for(1).await;
    assert_eq!(got.len(), 1, "only the clean message reaches the sink");
    let text = String::from_utf8_lossy(&got[0].data).to_string();
    assert!(
        text.contains("Authentication-Results: mx.test.example;\r\n\tspf=pass smtp.mailfrom=alice@example.test"),
        "{text}"
    );
    assert!(text.contains("\r\nX-Spam-Score: "), "{text}");
    assert!(text.contains("\r\nX-Spam-Status: Yes, score="), "{text}");
    // Our fields sit above the message's own; its body is unchanged.
    let ours = text.find("Authentication-Results:").unwrap();
    assert!(ours < text.find("From: alice@example.test").unwrap(), "{text}");
    assert!(text.ends_with("\r\n\r\nHello Bob, see you at lunch.\r\n"), "{text}");
    wait_event(&mut events, |e| {
        matches!(e, Event::MessageAccepted { tx, .. } if tx.via == Via::Milter).then_some(())
    })
    .await;
    // The front end's counters count milter mail too.
    assert!(event_count(&s.sluice.running().events, "virus_found") >= 1);
    drop(s.sluice.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spam_to_quarantine_goes_to_postfixs_hold_queue() {
    let s = setup("quarantine = 5.0\nreject = \"off\"\n", "tempfail").await;
    let mut events = s.sluice.running().events.subscribe();
    let r = send_via_postfix(&s.postfix, &message("held", GTUBE)).await;
    assert!(r.starts_with("250"), "{r}\n{}", s.postfix.log());
    wait_event(&mut events, |e| {
        (matches!(e, Event::Quarantined { .. }) && via_milter(e)).then_some(())
    })
    .await;
    let hold = s.postfix.dir().join("spool/hold");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&hold).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing in {}:\n{}",
            hold.display(),
            s.postfix.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.sink.messages().is_empty(), "a held message is not delivered");
    drop(s.sluice.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_stopped_postfix_applies_its_default_action_without_hanging() {
    let s = setup("", "accept").await;
    let Setup {
        sluice, postfix, sink, ..
    } = s;
    // Working first, so the milter was really in the path.
    let r = send_via_postfix(&postfix, &message("before", "one")).await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("Authentication-Results: mx.test.example;"));
    drop(sluice.stop().await);
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        send_via_postfix(&postfix, &with_attachment("eicar.com.txt", &eicar())),
    )
    .await
    .expect("Postfix answers without sluice");
    assert!(r.starts_with("250"), "milter_default_action = accept: {r}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    let got = sink.wait_for(2).await;
    assert!(
        !String::from_utf8_lossy(&got[1].data).contains("Authentication-Results: mx.test.example;"),
        "not judged by sluice"
    );
}

// === the protocol itself, without Postfix ===

/// An MTA's side of a milter connection, read like a transcript.
struct Mta {
    io: tokio::net::TcpStream,
}

impl Mta {
    async fn connect(addr: std::net::SocketAddr) -> Mta {
        Mta {
            io: tokio::net::TcpStream::connect(addr).await.unwrap(),
        }
    }

    async fn send(&mut self, code: u8, payload: &[u8]) -> &mut Self {
        use tokio::io::AsyncWriteExt;
        self.io
            .write_all(&sluice::proto::milter::frame(code, payload))
            .await
            .unwrap();
        self
    }

    /// The next response (within 10 s).
    async fn response(&mut self) -> Response {
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut len = [0u8; 4];
            self.io.read_exact(&mut len).await.unwrap();
            let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
            self.io.read_exact(&mut frame).await.unwrap();
            parse_response(frame[0], &frame[1..]).unwrap()
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a response in time")
    }

    async fn expect(&mut self, want: Response) {
        assert_eq!(self.response().await, want);
    }

    /// The server closed the connection (within 10 s).
    async fn expect_closed(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut b))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "connection still open");
    }
}

use sluice::proto::milter::{OptNeg, Response, parse_response};

fn optneg(version: u32, actions: u32, protocol: u32) -> Vec<u8> {
    [version, actions, protocol]
        .iter()
        .flat_map(|n| n.to_be_bytes())
        .collect()
}

/// An MTA that offers no "no reply" steps gets a reply to every stage;
/// one connection carries several messages (an aborted one between); the
/// verdict and the header changes come at the end of the body; QUIT and
/// malformed input close the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_milter_dialogue_message_by_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    // One spam reject is enough for a ban (dry run: the event only).
    let toml = format!(
        "{}\n[milter]\nlisten = [\"127.0.0.1:0\"]\n[firewall]\ndry_run = true\n\
         [firewall.rules.spam]\ncount = 1\nwindow = \"1m\"\nban = \"1h\"\n",
        base_toml("smtp://127.0.0.1:1").replace("[spam]\nenabled = false", "[spam]\nauth = false\ntag = -100.0")
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let addr = relay.running().milter_addrs[0];
    let mut events = relay.running().events.subscribe();

    let mut m = Mta::connect(addr).await;
    m.send(b'O', &optneg(6, 0x1ff, 0)).await;
    m.expect(Response::OptNeg(OptNeg {
        version: 6,
        actions: 0x31,
        protocol: 0,
    }))
    .await;
    m.send(b'D', b"Cj\0mx.example.com\0").await;
    m.send(b'C', b"mail.client.example\x004\x04\x00198.51.100.7\0").await;
    m.expect(Response::Continue).await;
    m.send(b'H', b"mail.client.example\0")
        .await
        .expect(Response::Continue)
        .await;
    for (code, payload) in [
        (b'M', &b"<a@client.example>\0"[..]),
        (b'R', b"<user@example.com>\0"),
        (b'L', b"Subject\0spam\0"),
        (b'N', b""),
        (b'B', format!("{GTUBE}\r\n").as_bytes()),
    ] {
        m.send(code, payload).await.expect(Response::Continue).await;
    }
    m.send(b'D', b"Ei\0ABC123\0").await;
    m.send(b'E', b"").await;
    let Response::ReplyCode(r) = m.response().await else {
        panic!("not a reply code")
    };
    assert!(r.starts_with("550 5.7.1 Message rejected as spam"), "{r}");
    let (id, ip, via) = wait_event(&mut events, |e| match e {
        Event::SpamScored { id, ip, tx, .. } => Some((id.clone(), *ip, tx.via)),
        _ => None,
    })
    .await;
    assert_eq!(
        (id.as_str(), ip.to_string().as_str(), via),
        ("ABC123", "198.51.100.7", Via::Milter)
    );
    // The client Postfix named is an offender for the ban engine.
    let net = wait_event(&mut events, |e| match e {
        Event::BanAdded { net, .. } => Some(net.clone()),
        _ => None,
    })
    .await;
    assert_eq!(net, "198.51.100.7/32");

    // Aborted halfway: no reply, nothing judged.
    m.send(b'M', b"<b@client.example>\0")
        .await
        .expect(Response::Continue)
        .await;
    m.send(b'A', b"").await;
    // The next message on the same connection.
    m.send(b'M', b"<c@client.example>\0")
        .await
        .expect(Response::Continue)
        .await;
    m.send(b'R', b"<user@example.com>\0")
        .await
        .expect(Response::Continue)
        .await;
    m.send(b'L', b"Subject\0hello\0").await.expect(Response::Continue).await;
    m.send(b'N', b"").await.expect(Response::Continue).await;
    m.send(b'B', b"Hello Bob.\r\n").await.expect(Response::Continue).await;
    m.send(b'E', b"").await;
    let Response::InsertHeader { index: 0, name, .. } = m.response().await else {
        panic!("a header on top first")
    };
    assert_eq!(name, "X-Spam-Status");
    let Response::InsertHeader { index: 0, name, value } = m.response().await else {
        panic!("then the score")
    };
    assert_eq!(name, "X-Spam-Score");
    assert!(value.parse::<f64>().is_ok(), "{value:?}");
    m.expect(Response::Continue).await;
    let from = wait_event(&mut events, |e| match e {
        Event::MessageAccepted { tx, .. } if tx.via == Via::Milter => Some(tx.from.clone()),
        _ => None,
    })
    .await;
    assert_eq!(from, "c@client.example", "the aborted message was never judged");
    m.send(b'Q', b"").await;
    m.expect_closed().await;

    // Not the milter protocol: closed, nothing else.
    let mut m = Mta::connect(addr).await;
    use tokio::io::AsyncWriteExt;
    m.io.write_all(&[0, 0, 0, 0]).await.unwrap();
    m.expect_closed().await;
    // A frame over the limit is refused before it is read.
    let mut m = Mta::connect(addr).await;
    m.io.write_all(&[0x7f, 0xff, 0xff, 0xff, b'B']).await.unwrap();
    m.expect_closed().await;
    drop(relay.stop().await);
}

/// A client banned for what it sent through Postfix is refused at the
/// milter's CONNECT (Postfix then refuses its every command with sluice's
/// reply), as sluice's own listener refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_client_is_refused_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[milter]\nlisten = [\"127.0.0.1:0\"]\n[firewall]\n\
         [firewall.rules.spam]\ncount = 1\nwindow = \"1m\"\nban = \"1h\"\n",
        base_toml("smtp://127.0.0.1:1").replace("[spam]\nenabled = false", "[spam]\nauth = false")
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let addr = relay.running().milter_addrs[0];
    let mut events = relay.running().events.subscribe();
    let mut m = Mta::connect(addr).await;
    m.send(b'O', &optneg(6, 0x1ff, 0)).await;
    assert!(matches!(m.response().await, Response::OptNeg(_)));
    m.send(b'C', b"mail.client.example\x004\x04\x00198.51.100.8\0")
        .await
        .expect(Response::Continue)
        .await;
    for (code, payload) in [
        (b'H', &b"mail.client.example\0"[..]),
        (b'M', b"<a@client.example>\0"),
        (b'R', b"<user@example.com>\0"),
        (b'L', b"Subject\0spam\0"),
        (b'N', b""),
        (b'B', format!("{GTUBE}\r\n").as_bytes()),
    ] {
        m.send(code, payload).await.expect(Response::Continue).await;
    }
    m.send(b'E', b"").await;
    assert!(matches!(m.response().await, Response::ReplyCode(r) if r.starts_with("550 5.7.1")));
    wait_event(&mut events, |e| match e {
        Event::BanAdded { net, .. } if net == "198.51.100.8/32" => Some(()),
        _ => None,
    })
    .await;

    let mut m = Mta::connect(addr).await;
    m.send(b'O', &optneg(6, 0x1ff, 0)).await;
    assert!(matches!(m.response().await, Response::OptNeg(_)));
    m.send(b'C', b"mail.client.example\x004\x04\x00198.51.100.8\0").await;
    let Response::ReplyCode(r) = m.response().await else {
        panic!("not a reply code")
    };
    assert!(r.starts_with("554 5.7.1 Your address is banned here"), "{r}");
    let via = wait_event(&mut events, |e| match e {
        Event::ConnectRejected { ip, via, .. } if ip.to_string() == "198.51.100.8" => Some(*via),
        _ => None,
    })
    .await;
    assert_eq!(via, Via::Milter);
    // Another client is not.
    let mut m = Mta::connect(addr).await;
    m.send(b'O', &optneg(6, 0x1ff, 0)).await;
    assert!(matches!(m.response().await, Response::OptNeg(_)));
    m.send(b'C', b"other.example\x004\x04\x00198.51.100.9\0")
        .await
        .expect(Response::Continue)
        .await;
    drop(relay.stop().await);
}

/// `sluice milter`: the milter answers on `milter.listen`, and the SMTP
/// listener of `server.listen` is not opened; SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_milter_serves_only_the_milter() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, milter) = (free_port(), free_port());
    let toml = format!(
        "{}\n[milter]\nlisten = [\"127.0.0.1:{milter}\"]\n",
        base_toml("smtp://127.0.0.1:9").replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"127.0.0.1:{smtp}\"]")
        )
    );
    std::fs::write(dir.path().join("sluice.toml"), toml).unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("milter")
        .arg("--config")
        .arg(dir.path().join("sluice.toml"))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], milter).into();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut m = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(io) => break Mta { io },
            Err(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("sluice milter does not listen on {addr}: {e}"),
        }
    };
    m.send(b'O', &optneg(6, 0x1ff, 0x1fffff)).await;
    let Response::OptNeg(o) = m.response().await else {
        panic!("no OPTNEG reply")
    };
    assert_eq!(o.version, 6);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", smtp)).is_err(),
        "no SMTP listener"
    );
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "sluice milter did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}
