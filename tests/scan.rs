//! Virus scanning against a real clamd with the shared test signatures:
//! a virus gets 554 5.7.1 in the session and is never relayed; clean mail
//! passes; clamd down gives 451, never unscanned acceptance.

use crate::util::services::Clamd;
use crate::util::*;

pub(crate) fn eicar() -> Vec<u8> {
    std::fs::read(corpora().join("virus/eicar/eicar.com")).unwrap()
}

/// A mail carrying `file` as a base64 attachment.
pub(crate) fn with_attachment(name: &str, file: &[u8]) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut b64 = String::new();
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in file.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut m = String::new();
    let _ = write!(
        m,
        "From: a@client.example\r\nTo: user@example.com\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
    );
    for line in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).unwrap());
        m.push_str("\r\n");
    }
    m.push_str("--b1--\r\n");
    m.into_bytes()
}

async fn relay_with_clamd(sink: &Sink, endpoints: &str) -> TestRelay {
    relay_with(sink, endpoints, "", "").await
}

/// A relay with clamd at `endpoints`, extra `[clamd]` keys and a `[scan]` table.
async fn relay_with(sink: &Sink, endpoints: &str, clamd_extra: &str, scan: &str) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[clamd]\nendpoints = [{endpoints}]\ntimeout = \"10s\"\n{clamd_extra}\n[scan]\n{scan}\n",
        base_toml(&sink.next_hop())
    );
    // Also on disk, for the CLI commands.
    std::fs::write(dir.path().join("sluice.toml"), &toml).unwrap();
    TestRelay::start_in(dir, &toml, |_| {}).await
}

async fn start_clamd() -> Clamd {
    let db = corpora().join("clamav-db");
    tokio::task::spawn_blocking(move || Clamd::start(&db)).await.unwrap()
}

fn evasion(set: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(corpora().join("av-evasion/mime-is-broken").join(set))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Sends each file as one message, a session each (refusals count towards
/// the session's error limit); returns the replies.
async fn send_all(relay: &TestRelay, files: &[std::path::PathBuf]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in files {
        let mut c = relay.client().await;
        c.cmd("EHLO client.example", "250").await;
        c.cmd("MAIL FROM:<a@client.example>", "250").await;
        c.cmd("RCPT TO:<user@example.com>", "250").await;
        let r = c.data(&corpus_message(f)).await;
        out.push((f.file_name().unwrap().to_string_lossy().to_string(), r));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hide_content_evasion_is_caught_or_rejected() {
    let clamd = start_clamd().await;
    let sink = Sink::start().await;
    let files = evasion("hide-content");
    assert_eq!(files.len(), 38);
    // Default policy: every plausible reading is scanned. No banned names
    // (eicar.com inside the zip would be banned): clamd must find them all.
    let relay = relay_with(
        &sink,
        &format!("\"tcp://127.0.0.1:{}\"", clamd.port),
        "",
        "banned_extensions = []",
    )
    .await;
    let mut viruses = 0;
    for (name, r) in send_all(&relay, &files).await {
        // Refused as malformed: an unknown transfer encoding (554 5.6.0),
        // or a raw zip in the body with bare CR/LF (550 5.6.0, before any
        // scan). Everything else must be found by the scan.
        eprintln!("{name}: {r}");
        viruses += usize::from(r.starts_with("554 5.7.1 Message rejected: virus found"));
        assert!(
            r.starts_with("554 5.7.1 Message rejected: virus found")
                || r.starts_with("554 5.6.0 Message rejected: malformed MIME: unknown Content-Transfer-Encoding")
                || r.starts_with("550 5.6.0"),
            "{name}: {r}"
        );
    }
    // ClamAV alone finds 24 of the 38 (corpora README).
    assert!(viruses >= 30, "only {viruses} found by scanning");
    // "reject": ambiguous mail is refused as malformed, the rest is caught.
    let strict = relay_with(
        &sink,
        &format!("\"tcp://127.0.0.1:{}\"", clamd.port),
        "",
        "ambiguous_mime = \"reject\"\nbanned_extensions = []",
    )
    .await;
    let replies = send_all(&strict, &files).await;
    let malformed = replies.iter().filter(|(_, r)| r.starts_with("554 5.6.0")).count();
    for (name, r) in &replies {
        assert!(
            r.starts_with("554 5.7.1") || r.starts_with("554 5.6.0") || r.starts_with("550 5.6.0"),
            "{name}: {r}"
        );
        eprintln!("{name}: {r}");
    }
    assert!(malformed >= 10, "only {malformed} refused as malformed");
    // Every message was refused: none was accepted, so none can be relayed.
    for r in [&relay, &strict] {
        assert_eq!(event_count(&r.running().events, "message_accepted"), 0);
    }
    assert!(sink.messages().is_empty(), "nothing was relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_zip_names_are_caught_when_zip_is_banned() {
    let sink = Sink::start().await;
    let files = evasion("hide-filename");
    assert_eq!(files.len(), 16);
    // No clamd needed: the banned-name stage is local.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[scan]\nbanned_extensions = [\"exe\", \"zip\"]\n",
        base_toml(&sink.next_hop())
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let mut events = relay.running().events.subscribe();
    for (name, r) in send_all(&relay, &files).await {
        assert!(r.starts_with("554 5.7.1 Message rejected: banned"), "{name}: {r}");
        assert!(r.contains(".zip"), "{name}: {r}");
    }
    let e = next_event(&mut events, |e| {
        matches!(e, sluice::events::Event::ContentRejected { .. })
    })
    .await;
    assert!(
        matches!(
            &*e,
            sluice::events::Event::ContentRejected {
                kind: sluice::events::ContentKind::Banned,
                mode: sluice::events::ScanMode::InSession,
                ..
            }
        ),
        "{e:?}"
    );
    // Control: with zip allowed (the default list) the same mails pass.
    let relay = TestRelay::start_in(
        {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("recipients"), TABLE).unwrap();
            d
        },
        &base_toml(&sink.next_hop()),
        |_| {},
    )
    .await;
    for (name, r) in send_all(&relay, &files).await {
        assert!(r.starts_with("250"), "{name}: {r}");
    }
    // A banned name inside a zip archive.
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let zip = std::fs::read(corpora().join("virus/clamav-testfiles/clam.zip")).unwrap();
    let r = c.data(&with_attachment("harmless.zip", &zip)).await;
    assert!(
        r.starts_with("554 5.7.1 Message rejected: banned name \"clam.exe\" inside an archive"),
        "{r}"
    );
}

/// A TCP proxy in front of clamd that can delay replies (a slow scanner)
/// or refuse connections (a scanner outage).
pub(crate) struct Proxy {
    pub(crate) port: u16,
    delay: std::sync::Arc<std::sync::atomic::AtomicU64>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Octets clients sent through the proxy so far.
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub(crate) async fn start(target: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let delay = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (d, dn, st) = (delay.clone(), down.clone(), sent.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = l.accept().await else { return };
                if dn.load(Ordering::Relaxed) {
                    continue;
                }
                let wait = std::time::Duration::from_millis(d.load(Ordering::Relaxed));
                let st = st.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            st.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        let _ = sw.shutdown().await;
                    };
                    let back = async {
                        let mut reply = Vec::new();
                        let _ = sr.read_to_end(&mut reply).await;
                        tokio::time::sleep(wait).await;
                        let _ = cw.write_all(&reply).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, back);
                });
            }
        });
        Proxy {
            port,
            delay,
            down,
            sent,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_delay(&self, ms: u64) {
        self.delay.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<sluice::events::Event>>,
    want: impl Fn(&sluice::events::Event) -> bool,
) -> std::sync::Arc<sluice::events::Event> {
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(15), events.recv())
            .await
            .expect("event in time")
            .unwrap();
        if want(&e) {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_scanner_switches_to_accept_then_scan_and_quarantines_viruses() {
    use sluice::events::Event;
    let clamd = start_clamd().await;
    let proxy = Proxy::start(clamd.port).await;
    proxy.set_delay(1500);
    let sink = Sink::start().await;
    let relay = relay_with(
        &sink,
        &format!("\"tcp://127.0.0.1:{}\"", proxy.port),
        "max_concurrent = 1",
        "latency_budget = \"500ms\"\nretry = \"1s\"",
    )
    .await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    // While the scanner is quick (no history yet), the verdict is in session.
    c.envelope("a@client.example", &["user@example.com"]).await;
    let t = std::time::Instant::now();
    assert!(c.data(&test_message("first")).await.starts_with("250"));
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(1400),
        "scanned in session"
    );
    let e = next_event(&mut events, |e| matches!(e, Event::MessageAccepted { .. })).await;
    assert!(
        matches!(
            &*e,
            Event::MessageAccepted {
                scan: sluice::events::ScanMode::InSession,
                ..
            }
        ),
        "{e:?}"
    );
    // Now one scan takes 1.5 s, over the 500 ms budget: accept first.
    c.envelope("a@client.example", &["user@example.com"]).await;
    let t = std::time::Instant::now();
    let r = c.data(&with_attachment("sample.bin", &eicar())).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(
        t.elapsed() < std::time::Duration::from_millis(1000),
        "not scanned in session"
    );
    let id = r.rsplit(' ').next().unwrap().to_string();
    let e = next_event(&mut events, |e| matches!(e, Event::MessageAccepted { .. })).await;
    assert!(
        matches!(
            &*e,
            Event::MessageAccepted {
                scan: sluice::events::ScanMode::Deferred,
                ..
            }
        ),
        "{e:?}"
    );
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("third")).await.starts_with("250"));
    // The deferred scan finds the virus: quarantine, never the next hop.
    let e = next_event(&mut events, |e| matches!(e, Event::Quarantined { .. })).await;
    match &*e {
        Event::Quarantined { id: qid, reason, .. } => {
            assert_eq!(qid, &id);
            assert!(reason.to_string().contains("Eicar"), "{reason}");
        }
        _ => unreachable!(),
    }
    // The two clean ones are relayed (the count is checked again at the end,
    // once the relay has stopped and nothing more can arrive).
    let got = sink.wait_for(2).await;
    assert!(got.iter().all(|m| !String::from_utf8_lossy(&m.data).contains("eicar")));

    // The operator's view: list, show, release, delete.
    let cfg = relay.path("sluice.toml");
    let q = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["quarantine", "--config"])
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, out) = q(&["list"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with(&id), "{out}");
    assert!(
        out.contains("virus found: Eicar") && out.contains("<a@client.example>\tuser@example.com"),
        "{out}"
    );
    let (code, out) = q(&["show", &id]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("Reason: virus found: Eicar") && out.contains("filename=\"sample.bin\""),
        "{out}"
    );
    let (code, out) = q(&["release", &id]);
    assert_eq!(code, Some(0), "{out}");
    // The admin's release is an event like the daemon's own.
    let e = next_event(&mut events, |e| matches!(e, Event::QuarantineCommand { .. })).await;
    match &*e {
        Event::QuarantineCommand {
            action, id: rid, tx, ..
        } => {
            assert_eq!((*action, rid), (sluice::events::QuarantineAction::Release, &id));
            assert_eq!(tx.from, "a@client.example");
        }
        _ => unreachable!(),
    }
    sink.wait_for(3).await;
    assert_eq!(q(&["list"]).1, "", "released messages leave the quarantine");
    assert_eq!(q(&["delete", &id]).0, Some(1), "already gone");
    // The relay owes nothing more: the two clean messages and the released
    // one are all the sink will ever get (the relay never sent the virus).
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(sink.messages().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_policy_accepts_during_an_outage_and_delivers_after_a_clean_scan() {
    let clamd = start_clamd().await;
    let proxy = Proxy::start(clamd.port).await;
    let sink = Sink::start().await;
    let relay = relay_with(
        &sink,
        &format!("\"tcp://127.0.0.1:{}\"", proxy.port),
        "",
        "on_failure = \"hold\"\nretry = \"500ms\"",
    )
    .await;
    proxy.set_down(true);
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    let mut ids = Vec::new();
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&test_message("held")).await;
    assert!(r.starts_with("250"), "{r}");
    ids.push(r.rsplit(' ').next().unwrap().to_string());
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&with_attachment("sample.bin", &eicar())).await;
    assert!(r.starts_with("250"), "{r}");
    ids.push(r.rsplit(' ').next().unwrap().to_string());
    // Both held messages fail their scan from the spool, and again after
    // scan.retry: still nothing unscanned is delivered.
    let mut failed: std::collections::HashMap<String, usize> = Default::default();
    while ids.iter().any(|id| failed.get(id).copied().unwrap_or(0) < 2) {
        let id = next_event(&mut events, |e| {
            matches!(
                e,
                sluice::events::Event::ScanFailed {
                    session: 0,
                    held: true,
                    ..
                }
            )
        })
        .await;
        if let sluice::events::Event::ScanFailed { id, .. } = &*id {
            *failed.entry(id.clone()).or_default() += 1;
        }
    }
    assert!(sink.messages().is_empty(), "nothing unscanned is delivered");
    // Held mail survives a restart: it is scanned when sluice comes back.
    let toml = std::fs::read_to_string(relay.path("sluice.toml")).unwrap();
    let dir = relay.stop().await;
    proxy.set_down(false);
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let got = sink.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("held"));
    // The virus is scanned too, and goes to the quarantine.
    let q = sluice::quarantine::Quarantine::new(relay.path("spool/quarantine"));
    let deadline = std::time::Instant::now() + TIMEOUT;
    let held = loop {
        let held = q.list().unwrap();
        if !held.is_empty() {
            break held;
        }
        assert!(std::time::Instant::now() < deadline, "the virus was not quarantined");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].envelope.id, ids[1]);
    assert!(held[0].reason.to_string().contains("Eicar"), "{}", held[0].reason);
    // Nothing is left to deliver: the sink got the clean message only.
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(sink.messages().len(), 1, "the virus went to quarantine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_streams_to_clamd_while_data_arrives() {
    let clamd = start_clamd().await;
    let proxy = Proxy::start(clamd.port).await;
    let sink = Sink::start().await;
    let relay = relay_with(&sink, &format!("\"tcp://127.0.0.1:{}\"", proxy.port), "", "").await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.cmd("DATA", "354").await;
    let line = "x".repeat(998);
    let mut first = String::from("Subject: big\r\n\r\n");
    while first.len() < 200_000 {
        first.push_str(&line);
        first.push_str("\r\n");
    }
    c.send_raw(first.as_bytes()).await;
    // Before the end of DATA, most of the message is already at clamd.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while proxy.sent() < 150_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} octets streamed",
            proxy.sent()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The rest carries the virus: the verdict covers the whole stream.
    c.send_raw(b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n.\r\n")
        .await;
    let r = c.reply().await;
    assert!(r.starts_with("554 5.7.1 Message rejected: virus found: Eicar"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virus_is_refused_in_session_clean_mail_passes() {
    let db = corpora().join("clamav-db");
    let clamd = tokio::task::spawn_blocking(move || Clamd::start(&db)).await.unwrap();
    let sink = Sink::start().await;
    // A dead endpoint first: failover to the real one.
    let relay = relay_with_clamd(
        &sink,
        &format!(
            "\"tcp://127.0.0.1:1\", \"unix:{}\", \"tcp://127.0.0.1:{}\"",
            clamd.socket_path().display(),
            clamd.port
        ),
    )
    .await;
    let mut events = relay.running().events.subscribe();
    let bus = relay.running().events.clone();
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&with_attachment("eicar.bin", &eicar())).await;
    assert!(r.starts_with("554 5.7.1 Message rejected: virus found: Eicar"), "{r}");
    // The session goes on: a clean message and the GTUBE test mail pass
    // the virus stage.
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("clean")).await.starts_with("250"));
    c.envelope("a@client.example", &["user@example.com"]).await;
    let gtube = corpus_message(&corpora().join("virus/gtube/gtube.eml"));
    assert!(c.data(&gtube).await.starts_with("250"));
    // Two accepted, the virus refused: it can never be relayed.
    assert_eq!(event_count(&bus, "message_accepted"), 2);
    let got = sink.wait_for(2).await;
    assert_eq!(got.len(), 2, "the virus was never relayed");
    assert!(
        got.iter()
            .all(|m| !String::from_utf8_lossy(&m.data).contains("attachment"))
    );
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        if let sluice::events::Event::VirusFound { name, ip, .. } = &*e {
            assert!(name.starts_with("Eicar"), "{name}");
            assert_eq!(ip.to_string(), "127.0.0.1");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_in_the_virus_corpus_is_detected() {
    let db = corpora().join("clamav-db");
    let clamd = tokio::task::spawn_blocking(move || Clamd::start(&db)).await.unwrap();
    let sink = Sink::start().await;
    let relay = relay_with_clamd(&sink, &format!("\"tcp://127.0.0.1:{}\"", clamd.port)).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    let mut checked = 0;
    for sub in ["eicar", "clamav-testfiles", "clamav-mail-edge"] {
        let mut files: Vec<_> = std::fs::read_dir(corpora().join("virus").join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let raw = std::fs::read(&f).unwrap();
            // Mails as they are; bare files as an attachment.
            let is_mail = name.ends_with(".eml")
                || name.ends_with(".mail")
                || raw.starts_with(b"From ")
                || raw.starts_with(b"Received:")
                || raw.starts_with(b"Return-Path:");
            let msg = if is_mail {
                corpus_message(&f)
            } else {
                with_attachment(&name, &raw)
            };
            c.cmd("MAIL FROM:<a@client.example>", "250").await;
            c.cmd("RCPT TO:<user@example.com>", "250").await;
            let r = c.data(&msg).await;
            let clean_control = name.contains("clean");
            if clean_control {
                assert!(r.starts_with("250"), "{name}: {r}");
            } else {
                // Including clam.mail-multiple-boundaries.eml, a known
                // ClamAV miss that our own MIME decoding catches.
                assert!(r.starts_with("554 5.7.1") || r.starts_with("550 5.6.0"), "{name}: {r}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 14, "only {checked} samples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_down_gives_451_never_unscanned_acceptance() {
    let db = corpora().join("clamav-db");
    let mut clamd = tokio::task::spawn_blocking(move || Clamd::start(&db)).await.unwrap();
    let sink = Sink::start().await;
    let relay = relay_with_clamd(&sink, &format!("\"tcp://127.0.0.1:{}\"", clamd.port)).await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("before")).await.starts_with("250"));
    clamd.stop();
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&test_message("during-outage")).await;
    assert!(r.starts_with("451 4.7.1"), "{r}");
    // Only the message before the outage was accepted (and so relayed).
    assert_eq!(event_count(&relay.running().events, "message_accepted"), 1);
    let got = sink.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: before"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_scan_command_uses_the_configured_clamd() {
    let db = corpora().join("clamav-db");
    let mut clamd = tokio::task::spawn_blocking(move || Clamd::start(&db)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\n",
            base_toml("smtp://127.0.0.1:1").replace("[spam]\nenabled = false", "[spam]\nauth = false"),
            clamd.port
        ),
    )
    .unwrap();
    let run = |files: Vec<std::path::PathBuf>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["scan", "--config"])
            .arg(&cfg)
            .args(&files)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let v = corpora().join("virus");
    let (code, out) = run(vec![
        v.join("eicar/eicar.com"),
        v.join("eicar/clean_control_attachment.eml"),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("eicar.com: reject score=0.0 virus=Eicar"), "{out}");
    assert!(out.contains("clean_control_attachment.eml: deliver"), "{out}");
    // The same pipeline scores spam: GTUBE is refused by its rule.
    let (code, out) = run(vec![v.join("gtube/gtube.eml")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("gtube.eml: reject score=10"), "{out}");
    assert!(out.contains("+1000.0 GTUBE"), "{out}");
    clamd.stop();
    let (code, out) = run(vec![v.join("eicar/eicar.com")]);
    assert_eq!(code, Some(75), "a scan failure is never 'clean': {out}");
}

/// Spam quarantined before its virus scan (clamd down, `on_failure =
/// "hold"`) is scanned when released: a virus is not released, clean mail
/// is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_spam_quarantined_before_its_scan_scans_it_first() {
    let clamd = start_clamd().await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = |clamd_port: u16| {
        format!(
            "{}\n[clamd]\nendpoints = [\"tcp://127.0.0.1:{clamd_port}\"]\ntimeout = \"5s\"\n\
             [scan]\non_failure = \"hold\"\nbanned_extensions = []\n",
            base_toml(&sink.next_hop()).replace(
                "[spam]\nenabled = false",
                "[spam]\nauth = false\nquarantine = 5\nreject = \"off\""
            )
        )
    };
    // The server sees clamd down (port 1); the operator's CLI sees it up.
    std::fs::write(dir.path().join("cli.toml"), toml(clamd.port)).unwrap();
    let relay = TestRelay::start_in(dir, &toml(1), |_| {}).await;
    let gtube = String::from_utf8(std::fs::read(corpora().join("virus/gtube/gtube.eml")).unwrap()).unwrap();
    let gtube = gtube
        .lines()
        .find(|l| l.contains("GTUBE-STANDARD"))
        .unwrap()
        .to_string();
    let spam_with = |file: &[u8]| {
        String::from_utf8(with_attachment("sample.bin", file))
            .unwrap()
            .replace("see attached", &gtube)
            .into_bytes()
    };
    let mut ids = Vec::new();
    for body in [spam_with(&eicar()), spam_with(b"just a file\r\n")] {
        let mut c = relay.client().await;
        c.envelope("a@client.example", &["user@example.com"]).await;
        let r = c.data(&body).await;
        assert!(r.starts_with("250"), "{r}");
        ids.push(r.rsplit(' ').next().unwrap().to_string());
    }
    let q = sluice::quarantine::Quarantine::new(relay.path("spool/quarantine"));
    for id in &ids {
        let e = q.entry(id).expect("quarantined as spam");
        assert_eq!(e.reason, sluice::events::Cause::Spam);
        assert!(e.envelope.scan_pending, "quarantined before its scan");
    }
    let cli = relay.path("cli.toml");
    let release = |id: &str| sluice_cli(["quarantine", "--config", cli.to_str().unwrap(), "release", id]);
    let (code, out) = release(&ids[0]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("not released: virus found: Eicar"), "{out}");
    assert!(q.entry(&ids[0]).is_ok(), "still in the quarantine");
    let (code, out) = release(&ids[1]);
    assert_eq!(code, Some(0), "{out}");
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert!(
        String::from_utf8_lossy(&got[0].data).contains(&ids[1]),
        "the clean one was delivered"
    );
    assert!(q.entry(&ids[1]).is_err(), "released: gone from the quarantine");
}
