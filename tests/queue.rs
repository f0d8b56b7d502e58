//! `sluice queue` against the running binary: a next hop that is down,
//! then back. Retries are an hour apart here, so only the commands (and a
//! successful delivery) can explain mail moving.

use std::time::Duration;

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
    let mut c = Client::connect(addr).await;
    c.expect("220").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&test_message(subject)).await;
    assert!(r.starts_with("250"), "{r}");
    r.rsplit(' ').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_hold_delete_flush_release_against_a_next_hop_that_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let hop_port = free_port();
    let p = Proc::start_extra(
        dir.path(),
        free_port(),
        hop_port,
        "1h",
        "[log]\nevents = \"events.jsonl\"\n",
    );
    let (a, b, c) = (
        send(p.addr, "held").await,
        send(p.addr, "deleted").await,
        send(p.addr, "flushed").await,
    );
    // All three tried once against the dead next hop, then deferred.
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

    // The next hop is back: a flush sends the deferred message now.
    let sink = Sink::start_on(
        tokio::net::TcpListener::bind(("127.0.0.1", hop_port)).await.unwrap(),
        false,
        std::sync::Arc::new(|_| None),
    );
    let (code, out) = queue_cli(dir.path(), &["flush"]);
    assert_eq!((code, out.trim()), (Some(0), "1 message(s)"));
    let got = sink.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: flushed"));
    // The held one waits for its release, then goes at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1, "held mail is not flushed");
    assert_eq!(queue_cli(dir.path(), &["release", &a]).0, Some(0));
    let got = sink.wait_for(2).await;
    assert!(String::from_utf8_lossy(&got[1].data).contains("Subject: held"));
    assert!(listed(dir.path()).is_empty());
    assert!(
        !sink
            .messages()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.data).contains("Subject: deleted")),
        "deleted mail is never sent"
    );
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
