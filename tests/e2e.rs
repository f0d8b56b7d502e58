//! Real next hops (Postfix's smtp-sink, a real Postfix, Dovecot LMTP) and
//! a real client (swaks); the mime-torture and spamassassin corpora relayed
//! through them, byte-exact apart from trace headers.

use std::path::PathBuf;
use std::process::Command;

use crate::util::services::{Dovecot, Postfix, SmtpSink};
use crate::util::*;

/// Every corpus message to relay, in a stable order.
fn corpus_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["mime-torture", "spamassassin"] {
        let mut stack = vec![corpora().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let name = p.file_name().unwrap().to_string_lossy().to_string();
                    if !name.ends_with(".tsv") && name != "COPYING" && !name.starts_with("README") {
                        files.push(p);
                    }
                }
            }
        }
    }
    files.sort();
    assert!(files.len() >= 600, "corpora not found at {}", corpora().display());
    files
}

fn has_bare_cr_or_lf(m: &[u8]) -> bool {
    m.iter()
        .enumerate()
        .any(|(i, &b)| (b == b'\r' && m.get(i + 1) != Some(&b'\n')) || (b == b'\n' && (i == 0 || m[i - 1] != b'\r')))
}

/// Sends every corpus message (one session, one message per transaction).
/// Returns the messages that got 250; asserts every refusal is a 550 5.6.0
/// for a message that really has a bare CR.
async fn send_corpus(relay: &TestRelay, rcpt: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut accepted = Vec::new();
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    for f in corpus_files() {
        let msg = corpus_message(&f);
        c.cmd("MAIL FROM:<corpus@client.example> BODY=8BITMIME", "250").await;
        c.cmd(&format!("RCPT TO:<{rcpt}>"), "250").await;
        let r = c.data(&msg).await;
        if r.starts_with("250 ") {
            accepted.push((f, msg));
        } else {
            assert!(r.starts_with("550 5.6.0"), "{}: {r}", f.display());
            assert!(has_bare_cr_or_lf(&msg), "{} refused without a bare CR/LF", f.display());
            eprintln!("refused on purpose (bare CR): {}", f.display());
        }
    }
    c.cmd("QUIT", "221").await;
    assert!(accepted.len() >= 600, "only {} accepted", accepted.len());
    accepted
}

/// Asserts that `received` (as stored by the next hop) are exactly the
/// `sent` messages as multisets, after `unwrap` removed the hops' trace
/// fields and `normalize` applied what the next hop documentedly rewrites.
fn assert_same_messages(
    sent: &[(PathBuf, Vec<u8>)],
    received: Vec<Vec<u8>>,
    unwrap: impl Fn(&[u8]) -> &[u8],
    normalize: impl Fn(&[u8]) -> Vec<u8>,
) {
    let want: Vec<(Vec<u8>, &PathBuf)> = sent.iter().map(|(p, m)| (normalize(&as_transmitted(m)), p)).collect();
    let mut got: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for m in &received {
        *got.entry(unwrap(m)).or_default() += 1;
    }
    assert_eq!(received.len(), want.len(), "message count");
    let mut missing = Vec::new();
    for (w, path) in &want {
        match got.get_mut(&w[..]) {
            Some(n) if *n > 0 => *n -= 1,
            _ => missing.push(path.display().to_string()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} sent messages did not arrive byte-exact: {:?}",
        missing.len(),
        missing
    );
}

/// What Postfix rewrites in every message it relays, with no setting to
/// stop it: it deletes `Return-Path:` fields from the header, and removes
/// the blanks in a malformed field name before its colon (`Fro :x`).
fn postfix_normalize(msg: &[u8]) -> Vec<u8> {
    let end = memchr_find(msg, b"\r\n\r\n").map_or(msg.len(), |i| i + 2);
    let (head, body) = msg.split_at(end);
    let mut out = Vec::with_capacity(msg.len());
    let mut skipping = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let cont = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if cont && skipping {
            continue;
        }
        skipping = line.len() >= 12 && line[..12].eq_ignore_ascii_case(b"return-path:");
        if skipping {
            continue;
        }
        match line.iter().position(|&b| b == b':') {
            Some(c) if !cont && c > 0 && line[..c].iter().all(|&b| b >= b' ') && line[..c].ends_with(b" ") => {
                let name = line[..c].trim_ascii_end();
                if name.iter().all(|&b| b > b' ' && b < 127) {
                    out.extend_from_slice(name);
                    out.extend_from_slice(&line[c..]);
                } else {
                    out.extend_from_slice(line);
                }
            }
            _ => out.extend_from_slice(line),
        }
    }
    out.extend_from_slice(body);
    out
}

fn memchr_find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

async fn wait_until<F: Fn() -> bool>(what: &str, secs: u64, f: F) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timeout: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_smtp_sink_receives_everything() {
    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    let relay = TestRelay::start(&format!("smtp://127.0.0.1:{}", sink.port)).await;
    let mut c = relay.client().await;
    for i in 0..50 {
        c.envelope("a@client.example", &["user@example.com", "known@example.com"])
            .await;
        assert!(c.data(&test_message(&format!("sink{i}"))).await.starts_with("250"));
    }
    wait_until("smtp-sink counted 50 messages", 30, || sink.count() >= 50).await;
    // Stopped, the relay owes nothing more (no retry, no duplicate to come):
    // smtp-sink counted each message before it answered the final dot.
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(sink.count(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpora_through_real_postfix_byte_exact() {
    let sink = Sink::start().await;
    let port = sink.port;
    let postfix = tokio::task::spawn_blocking(move || Postfix::start(port)).await.unwrap();
    let relay = TestRelay::start(&format!("smtp://127.0.0.1:{}", postfix.port)).await;
    let sent = send_corpus(&relay, "user@example.com").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while sink.messages().len() < sent.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "postfix relayed {} of {}\n{}",
            sink.messages().len(),
            sent.len(),
            postfix.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let got: Vec<Vec<u8>> = sink.messages().into_iter().map(|m| m.data).collect();
    // Postfix's Received, then ours.
    assert_same_messages(&sent, got, |m| strip_hops(m, 2), postfix_normalize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpora_through_dovecot_lmtp_byte_exact() {
    let dovecot = tokio::task::spawn_blocking(Dovecot::start).await.unwrap();
    let relay = TestRelay::start(&format!("lmtp://127.0.0.1:{}", dovecot.port)).await;
    let sent = send_corpus(&relay, "user@example.com").await;
    let n = sent.len();
    wait_until("dovecot stored every message", 120, || {
        dovecot.messages("user@example.com").len() >= n
    })
    .await;
    // Dovecot's Return-Path, Delivered-To and Received, then ours.
    assert_same_messages(
        &sent,
        dovecot.messages("user@example.com"),
        |m| strip_hops(m, 2),
        |m| m.to_vec(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_lmtp_over_unix_socket_per_recipient() {
    let dovecot = tokio::task::spawn_blocking(Dovecot::start).await.unwrap();
    let relay = TestRelay::start(&format!("lmtp:{}", dovecot.socket_path().display())).await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com", "known@example.com"])
        .await;
    let msg = test_message("lmtp-unix");
    assert!(c.data(&msg).await.starts_with("250"));
    wait_until("both mailboxes", 30, || {
        dovecot.messages("user@example.com").len() == 1 && dovecot.messages("known@example.com").len() == 1
    })
    .await;
    for user in ["user@example.com", "known@example.com"] {
        assert_eq!(strip_hops(&dovecot.messages(user)[0], 2), &msg[..], "{user}");
    }
}

fn swaks(args: &[&str]) -> (i32, String) {
    let out = Command::new("swaks").args(args).output().expect("swaks installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_client_checks() {
    let sink = Sink::start().await;
    // With STARTTLS configured, so swaks can use it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["mx.test.example".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let toml = format!(
        "{}\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        base_toml(&sink.next_hop())
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let server = relay.addr.to_string();
    let s = server.clone();
    let results = tokio::task::spawn_blocking(move || {
        let base = ["-s", s.as_str(), "-f", "a@client.example", "--helo", "client.example"];
        let ok = swaks(&[&base[..], &["-t", "user@example.com"]].concat());
        let unknown = swaks(&[&base[..], &["-t", "nobody@example.com", "--quit-after", "RCPT"]].concat());
        let pipelined = swaks(&[&base[..], &["-t", "known@example.com", "--pipeline"]].concat());
        let tls = swaks(&[&base[..], &["-t", "other@example.com", "-tls"]].concat());
        (ok, unknown, pipelined, tls)
    })
    .await
    .unwrap();
    let (ok, unknown, pipelined, tls) = results;
    assert_eq!(ok.0, 0, "{}", ok.1);
    assert!(ok.1.contains("250 2.0.0 Ok: queued as"), "{}", ok.1);
    assert_ne!(unknown.0, 0, "{}", unknown.1);
    assert!(unknown.1.contains("550 5.1.1"), "{}", unknown.1);
    assert_eq!(pipelined.0, 0, "{}", pipelined.1);
    assert_eq!(tls.0, 0, "{}", tls.1);
    assert!(tls.1.contains("TLS started"), "{}", tls.1);
    let got = sink.wait_for(3).await;
    assert!(
        got.iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains("with ESMTPS id"))
    );
}
