//! Durability with the real binary: kill -9 and restart lose nothing that
//! got a 250; SIGTERM answers 421 4.3.2 at the next command and lets a
//! DATA in progress finish.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::util::*;

async fn send_one(addr: SocketAddr, marker: &str) -> String {
    let mut c = Client::connect(addr).await;
    c.expect("220").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&test_message(marker)).await;
    c.send("QUIT").await;
    r
}

fn markers(msgs: &[Received]) -> std::collections::HashSet<String> {
    msgs.iter()
        .filter_map(|m| {
            let t = String::from_utf8_lossy(&m.data);
            t.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_mail_survives_kill9_while_next_hop_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (port, hop) = (free_port(), free_port());
    // Retries are an hour apart, so only the immediate first attempt after
    // the restart can deliver within the test.
    let p = Proc::start_with(dir.path(), port, hop, "1h");
    const N: usize = 25;
    for i in 0..N {
        let r = send_one(p.addr, &format!("crash-{i}")).await;
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    p.kill9();
    // Bring the next hop up, then restart: everything arrives at once (the
    // first attempt after start does not wait for the hour-long backoff).
    let l = tokio::net::TcpListener::bind(("127.0.0.1", hop)).await.unwrap();
    let sink = Sink::start_on(l, false, Arc::new(|_| None));
    let p = Proc::start_with(dir.path(), port, hop, "1h");
    let got = sink.wait_for(N).await;
    let want: std::collections::HashSet<String> = (0..N).map(|i| format!("crash-{i}")).collect();
    assert_eq!(markers(&got), want);
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sink = Sink::start().await;
    let p = Proc::start(dir.path(), port, sink.port);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (stop, acked, addr) = (stop.clone(), acked.clone(), p.addr);
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let marker = format!("load-{w}-{i}");
                i += 1;
                // Any failure (the kill) ends this worker.
                let r = tokio::spawn({
                    let marker = marker.clone();
                    async move { send_one(addr, &marker).await }
                })
                .await;
                match r {
                    Ok(r) if r.starts_with("250 ") => acked.lock().unwrap().push(marker),
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "load ran: {} acknowledged", acked.len());
    let p = Proc::start(dir.path(), port, sink.port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = markers(&sink.messages());
        let missing: Vec<_> = acked.iter().filter(|m| !got.contains(*m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} acknowledged messages lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_421_and_lets_data_finish() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let p = Proc::start(dir.path(), free_port(), sink.port);
    // Session A idles at a command boundary; session B is mid-DATA.
    let mut a = Client::connect(p.addr).await;
    a.expect("220").await;
    a.cmd("EHLO client.example", "250").await;
    let mut b = Client::connect(p.addr).await;
    b.expect("220").await;
    b.envelope("a@client.example", &["user@example.com"]).await;
    b.cmd("DATA", "354").await;
    b.send_raw(b"Subject: in-flight\r\n\r\nfirst half\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.signal("TERM");
    // A gets 421 without sending anything, then the connection closes.
    a.expect("421 4.3.2").await;
    a.expect_closed().await;
    // B finishes its message and gets 250, then 421 at the next command.
    b.send_raw(b"second half\r\n.\r\n").await;
    b.expect("250 2.0.0").await;
    b.expect("421 4.3.2").await;
    // New connections are refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tokio::net::TcpStream::connect(p.addr).await.is_err(), "listener closed");
    let mut p = p;
    let status = tokio::task::spawn_blocking(move || {
        let s = p.child.wait().unwrap();
        std::mem::forget(p);
        s
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
    // The message accepted during shutdown was delivered before exit.
    assert_eq!(
        markers(&sink.messages()),
        ["in-flight".to_string()].into_iter().collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_recipient_table() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let p = Proc::start(dir.path(), free_port(), sink.port);
    // Polling is slow in this test's config, so only SIGHUP can explain a reload.
    let toml = std::fs::read_to_string(dir.path().join("sluice.toml")).unwrap();
    assert!(toml.contains("reload_interval = \"1h\""));
    let mut c = Client::connect(p.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<fresh@example.com>", "550 5.1.1").await;
    std::fs::write(dir.path().join("recipients"), format!("{TABLE}fresh@example.com OK\n")).unwrap();
    p.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.send("RCPT TO:<fresh@example.com>").await;
        if c.reply().await.starts_with("250") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload the table"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_only_the_paths_configured_uses_the_builtin_defaults() {
    // The built-in defaults are for an installed system: the spool in
    // /var/spool/sluice (the test names its own), the recipient table
    // "recipients" next to the config file (here: the test's directory);
    // everything else is built in: listen 127.0.0.1:2525, example.com.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/recipients.example"),
        dir.path().join("recipients"),
    )
    .unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "[spool]\ndir = \"var/spool\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let addr: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "default listen address not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Client::connect(addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    c.cmd("QUIT", "221").await;
    assert!(dir.path().join("var/spool").is_dir());
    Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Events emitted during the shutdown grace period reach the event log: a
/// message accepted just before SIGTERM leaves its acceptance and its
/// delivery in the log (it used to leave only `session_opened`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_the_grace_period_are_written_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let mut p = Proc::start_extra(
        dir.path(),
        free_port(),
        sink.port,
        "1s",
        "[log]\nevents = \"events.jsonl\"\n",
    );
    let mut c = Client::connect(p.addr).await;
    c.expect("220").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    c.cmd("DATA", "354").await;
    c.send_raw(b"Subject: last one\r\n\r\nbody\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.signal("TERM");
    c.send_raw(b".\r\n").await;
    c.expect("250 2.0.0").await;
    let status = tokio::task::spawn_blocking(move || p.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    for event in [
        "\"session_opened\"",
        "\"message_accepted\"",
        "\"delivery_attempt\"",
        "\"session_closed\"",
    ] {
        assert!(log.contains(event), "{event} missing from:\n{log}");
    }
    assert_eq!(sink.messages().len(), 1);
    // What an admin greps for is on every message event: client, HELO,
    // sender, queue id.
    for event in ["rcpt_rejected", "message_accepted"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .unwrap_or_else(|| panic!("no {event} in:\n{log}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["ip"], "127.0.0.1", "{line}");
        assert_eq!(v["from"], "a@client.example", "{line}");
        assert!(v["helo"].as_str().is_some_and(|h| !h.is_empty()), "{line}");
        assert!(v["id"].as_str().is_some_and(|id| id.len() > 8), "{line}");
    }
}
