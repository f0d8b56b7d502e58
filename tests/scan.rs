//! Virus scanning against a real clamd with the shared test signatures:
//! a virus gets 554 5.7.1 in the session and is never relayed; clean mail
//! passes; clamd down gives 451, never unscanned acceptance.

use crate::util::services::Clamd;
use crate::util::*;

fn eicar() -> Vec<u8> {
    std::fs::read(corpora().join("virus/eicar/eicar.com")).unwrap()
}

/// A mail carrying `file` as a base64 attachment.
fn with_attachment(name: &str, file: &[u8]) -> Vec<u8> {
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[clamd]\nendpoints = [{endpoints}]\ntimeout = \"10s\"\n",
        base_toml(&sink.next_hop())
    );
    TestRelay::start_in(dir, &toml, |_| {}).await
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
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&with_attachment("eicar.com", &eicar())).await;
    assert!(r.starts_with("554 5.7.1 Message rejected: virus found: Eicar"), "{r}");
    // The session goes on: a clean message and the GTUBE test mail pass
    // the virus stage.
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("clean")).await.starts_with("250"));
    c.envelope("a@client.example", &["user@example.com"]).await;
    let gtube = corpus_message(&corpora().join("virus/gtube/gtube.eml"));
    assert!(c.data(&gtube).await.starts_with("250"));
    let got = sink.wait_for(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 2, "the virus was never relayed");
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
            } else if name == "multiple-boundaries.eml" || name.contains("multiple-boundaries") {
                // Known ClamAV miss (corpora README); own MIME decoding is issue 5.
                eprintln!("{name}: {r}");
            } else {
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
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1);
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
            base_toml("smtp://127.0.0.1:1"),
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
    assert!(out.contains("eicar.com: FOUND Eicar"), "{out}");
    assert!(out.contains("clean_control_attachment.eml: OK"), "{out}");
    let (code, out) = run(vec![v.join("gtube/gtube.eml")]);
    assert_eq!(code, Some(0), "{out}");
    clamd.stop();
    let (code, out) = run(vec![v.join("eicar/eicar.com")]);
    assert_eq!(code, Some(75), "a scan failure is never 'clean': {out}");
}
