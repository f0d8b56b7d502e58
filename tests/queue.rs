//! `sluice queue` against the running binary: a next hop that is down,
//! then back. Retries are an hour apart here, so only the commands (and a
//! successful delivery) can explain mail moving.

use std::time::Duration;

use crate::util::services::{Postfix, SmtpSink};
use crate::util::*;

fn queue_cli(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let cfg = dir.join("sluice.toml");
    sluice_cli(["queue", "-c", cfg.to_str().unwrap()].iter().chain(args))
}

/// The queue as `sluice queue list --json` shows it: (id, state, attempts).
fn listed(dir: &std::path::Path) -> Vec<(String, String, u64, String)> {
    let (code, out) = queue_cli(dir, &["list", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (
                v["id"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
                v["attempts"].as_u64().unwrap(),
                v["last_reply"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn send(addr: std::net::SocketAddr, subject: &str) -> String {
    send_from(addr, "a@client.example", subject).await
}

/// Sends a message from `from` (empty: the null sender) to user@example.com;
/// returns its queue id.
async fn send_from(addr: std::net::SocketAddr, from: &str, subject: &str) -> String {
    let mut c = Client::connect(addr).await;
    c.expect("220").await;
    c.envelope(from, &["user@example.com"]).await;
    let r = c.data(&test_message(subject)).await;
    assert!(r.starts_with("250"), "{r}");
    r.rsplit(' ').next().unwrap().to_string()
}

/// Waits until smtp-sink has `n` messages (Postfix relays them on its
/// own schedule); returns them.
async fn arrived(sink: &SmtpSink, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sink.count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} arrived",
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.messages()
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

/// sluice -> a real Postfix (the next hop) -> smtp-sink. Postfix is
/// stopped, mail queues up in sluice, the admin holds, shows and deletes;
/// Postfix is started again, and a flush and a release send the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_hold_delete_flush_release_against_a_real_postfix_that_is_stopped_and_started() {
    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    let sink_port = sink.port;
    let mut postfix = tokio::task::spawn_blocking(move || Postfix::start(sink_port))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start_extra(
        dir.path(),
        free_port(),
        postfix.port,
        "1h",
        "[log]\nevents = \"events.jsonl\"\n",
    );
    // Postfix up: mail goes through.
    send(p.addr, "before").await;
    assert!(arrived(&sink, 1).await[0].contains("Subject: before"));
    let mut postfix = tokio::task::spawn_blocking(move || {
        postfix.stop();
        postfix
    })
    .await
    .unwrap();

    let (a, b, c) = (
        send(p.addr, "held").await,
        send(p.addr, "deleted").await,
        send(p.addr, "flushed").await,
    );
    // All three tried once against the stopped next hop, then deferred.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = listed(dir.path());
        if q.len() == 3
            && q.iter()
                .all(|(_, state, attempts, _)| state == "deferred" && *attempts == 1)
        {
            assert!(q.iter().all(|(.., reply)| !reply.is_empty()), "{q:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{q:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queue_cli(dir.path(), &["hold", &a]).0, Some(0));
    let (code, shown) = queue_cli(dir.path(), &["show", &a]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains(&a) && shown.contains("\theld\t"), "{shown}");
    assert!(
        shown.contains("Subject: held") && shown.contains("Received: from"),
        "{shown}"
    );
    assert_eq!(queue_cli(dir.path(), &["delete", &b]).0, Some(0));
    let (code, err) = queue_cli(dir.path(), &["delete", "NOSUCHID"]);
    assert_eq!(code, Some(1), "{err}");
    let q = listed(dir.path());
    let states: Vec<(&str, &str)> = q.iter().map(|(id, s, ..)| (id.as_str(), s.as_str())).collect();
    assert_eq!(states, vec![(a.as_str(), "held"), (c.as_str(), "deferred")]);

    // Postfix is back: a flush sends the deferred message now (the retry
    // is an hour away).
    let postfix = tokio::task::spawn_blocking(move || {
        postfix.restart();
        postfix
    })
    .await
    .unwrap();
    let (code, out) = queue_cli(dir.path(), &["flush"]);
    assert_eq!((code, out.trim()), (Some(0), "1 message(s)"));
    assert!(arrived(&sink, 2).await[1].contains("Subject: flushed"));
    // The held one waits for its release, then goes at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 2, "held mail is not flushed");
    assert_eq!(queue_cli(dir.path(), &["release", &a]).0, Some(0));
    assert!(arrived(&sink, 3).await[2].contains("Subject: held"));
    assert!(listed(dir.path()).is_empty());
    assert!(
        !sink
            .messages()
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("Subject: deleted")),
        "deleted mail is never sent"
    );
    assert!(postfix.log().contains("status=sent"), "{}", postfix.log());
    // Every command that changed something is an event (the log is
    // written every 100 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for action in ["hold", "delete", "flush", "release"] {
        loop {
            let log = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
            let seen = log
                .lines()
                .any(|l| l.contains("\"queue_command\"") && l.contains(&format!("\"action\":\"{action}\"")));
            if seen {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no queue_command {action} in:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(p);
}

/// Waits until the queue holds exactly `ids`, each deferred after one
/// attempt (against the dead next hop).
async fn until_deferred(dir: &std::path::Path, ids: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = listed(dir);
        let mut got: Vec<&str> = q
            .iter()
            .filter(|(_, state, attempts, _)| state == "deferred" && *attempts == 1)
            .map(|(id, ..)| id.as_str())
            .collect();
        got.sort_unstable();
        let mut want = ids.to_vec();
        want.sort_unstable();
        if got == want && q.len() == ids.len() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{q:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the event log has a queue_command `action` for `id`.
async fn until_queue_command(dir: &std::path::Path, action: &str, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
        let seen = log.lines().any(|l| {
            l.contains("\"queue_command\"")
                && l.contains(&format!("\"action\":\"{action}\""))
                && l.contains(&format!("\"id\":\"{id}\""))
        });
        if seen {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no queue_command {action} {id} in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounce_returns_deferred_mail_to_its_sender_and_only_deletes_null_sender_mail() {
    let dir = tempfile::tempdir().unwrap();
    let hop_port = free_port();
    let p = Proc::start_extra(
        dir.path(),
        free_port(),
        hop_port,
        "1h",
        "[log]\nevents = \"events.jsonl\"\n",
    );
    // A sender of ours (its DSN goes to the same next hop), and a bounce
    // relayed in (the null sender).
    let returned = send_from(p.addr, "known@example.com", "returned").await;
    let dsn_in = send_from(p.addr, "", "a bounce relayed in").await;
    until_deferred(dir.path(), &[&returned, &dsn_in]).await;

    // sluice queue bounce ID
    let (code, out) = queue_cli(dir.path(), &["bounce", &returned]);
    let dsn = format!("{returned}B0");
    assert_eq!(
        (code, out.trim()),
        (
            Some(0),
            format!("returned to <known@example.com>: DSN queued as {dsn}; message removed").as_str()
        )
    );
    let (code, out) = queue_cli(dir.path(), &["bounce", &dsn_in]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "null sender: message deleted, no DSN (none goes to <>)")
    );
    let (code, err) = queue_cli(dir.path(), &["bounce", &dsn_in]);
    assert_eq!(code, Some(1), "already gone: {err}");
    // Only the DSN is left; it too meets the dead next hop first.
    until_deferred(dir.path(), &[&dsn]).await;

    // The next hop is back: the DSN goes, from <> to the sender.
    let sink = Sink::start_on(
        tokio::net::TcpListener::bind(("127.0.0.1", hop_port)).await.unwrap(),
        false,
        std::sync::Arc::new(|_| None),
    );
    assert_eq!(queue_cli(dir.path(), &["flush"]).0, Some(0));
    let got = sink.wait_for(1).await;
    assert_eq!(
        (got[0].mail_from.as_str(), got[0].rcpts.as_slice()),
        ("", ["known@example.com".to_string()].as_slice())
    );
    let text = String::from_utf8_lossy(&got[0].data);
    for want in [
        "Subject: Undelivered Mail Returned to Sender",
        "Final-Recipient: rfc822; user@example.com",
        "Status: 5.0.0",
        "Diagnostic-Code: smtp; 5.0.0 returned by the administrator",
        "Subject: returned",
    ] {
        assert!(text.contains(want), "no {want:?} in the DSN:\n{text}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1, "neither bounced message is delivered");
    assert!(listed(dir.path()).is_empty());
    until_queue_command(dir.path(), "bounce", &returned).await;
    until_queue_command(dir.path(), "bounce", &dsn_in).await;
    drop(p);
}

/// Issue 18: deleting spool records compacts segments. Ten messages of
/// 110 KiB fill the first 1 MiB segment; nine are deleted, and the one
/// left no longer keeps the segment: it is copied on and the segment goes.
/// The copy is what a restart finds (once) and what is delivered (once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_most_of_a_segment_compacts_it_and_the_rest_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let (port, hop_port) = (free_port(), free_port());
    let extra = "[spool]\nsegment_size = 1048576\n";
    let p = Proc::start_extra(dir.path(), port, hop_port, "1h", extra);
    let big = |subject: &str| {
        let mut m = test_message(subject);
        for _ in 0..1400 {
            m.extend_from_slice(&[b'x'; 78]);
            m.extend_from_slice(b"\r\n");
        }
        m
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        let subject = if i == 0 {
            "stuck".to_string()
        } else {
            format!("deleted {i}")
        };
        let mut c = Client::connect(p.addr).await;
        c.expect("220").await;
        c.envelope("a@client.example", &["user@example.com"]).await;
        let r = c.data(&big(&subject)).await;
        assert!(r.starts_with("250"), "{r}");
        ids.push(r.rsplit(' ').next().unwrap().to_string());
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    until_deferred(dir.path(), &refs).await;
    let first = dir.path().join("spool/seg-0000000000000001.log");
    assert!(first.exists());

    for id in &ids[1..] {
        assert_eq!(queue_cli(dir.path(), &["delete", id]).0, Some(0));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while first.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first segment is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still in the queue, and readable from its new place.
    let (code, shown) = queue_cli(dir.path(), &["show", &ids[0]]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("Subject: stuck"), "{shown}");

    // A crash, a restart: the message comes back exactly once.
    p.kill9();
    let p = Proc::start_extra(dir.path(), port, hop_port, "1h", extra);
    until_deferred(dir.path(), &[&ids[0]]).await;
    let sink = Sink::start_on(
        tokio::net::TcpListener::bind(("127.0.0.1", hop_port)).await.unwrap(),
        false,
        std::sync::Arc::new(|_| None),
    );
    assert_eq!(queue_cli(dir.path(), &["flush"]).0, Some(0));
    let got = sink.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: stuck"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1, "delivered once, nothing deleted delivered");
    drop(p);
}

/// Issue 18: deferred mail for a next hop is retried within seconds when
/// that hop is seen healthy again, here by a health probe (`/readyz`, as a
/// load balancer asks it), not at its next retry an hour later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_probe_that_sees_the_next_hop_back_sends_deferred_mail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (hop_port, metrics_port) = (free_port(), free_port());
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    let p = Proc::start_extra(dir.path(), free_port(), hop_port, "1h", &extra);
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let id = send(p.addr, "waits for the hop").await;
    until_deferred(dir.path(), &[&id]).await;
    let (code, body) = http_get(metrics, "/readyz").await;
    assert_eq!(code, 503, "the next hop is down: {body}");

    let sink = Sink::start_on(
        tokio::net::TcpListener::bind(("127.0.0.1", hop_port)).await.unwrap(),
        false,
        std::sync::Arc::new(|_| None),
    );
    // GET /readyz   ->  the probe reaches the next hop: 200, and the queue
    // retries at once (no flush, no restart).
    let (code, body) = http_get(metrics, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let got = sink.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: waits for the hop"));
    assert!(listed(dir.path()).is_empty());
    drop(p);
}
