//! Behind a load balancer: sluice nodes behind a real HAProxy in TCP mode
//! (`send-proxy-v2`, `option httpchk GET /healthz`), as the README's
//! "Behind a load balancer" section sets it up.

use std::time::Duration;

use serde_json::Value;

use crate::util::process::{Proc, free_port};
use crate::util::services::{Balanced, HAProxy};
use crate::util::{Client, Sink, base_toml, test_message};

/// The event log's events, once `done` says all expected are there (it is
/// written every 100 ms).
async fn events_when(path: &std::path::Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let events: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if done(&events) {
            return events;
        }
        assert!(tokio::time::Instant::now() < deadline, "events so far:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_every_event_names_the_client_from_the_proxy_header() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (plain, proxied, metrics) = (free_port(), free_port(), free_port());
    let toml = base_toml(&sink.next_hop())
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!(
                "listen = [\"127.0.0.1:{plain}\", {{ address = \"127.0.0.1:{proxied}\", proxy_protocol = true }}]\n\
                 proxy_from = [\"127.0.0.1\"]\nproxy_timeout = \"1s\""
            ),
        )
        .replace(
            "[metrics]\nlisten = \"127.0.0.1:0\"",
            &format!("[metrics]\nlisten = \"127.0.0.1:{metrics}\""),
        )
        + "[log]\nevents = \"events.jsonl\"\n";
    let _sluice = Proc::start_toml(dir.path(), plain, &toml);
    // The start-up probe's session on the plain listener (from 127.0.0.1)
    // is not what this test looks at.
    let log = dir.path().join("events.jsonl");
    let before = events_when(&log, |e| named(e, "session_closed").len() == 1).await.len();
    // s0 is the node; s1's health port has nothing behind it.
    let servers = [
        Balanced {
            smtp: proxied,
            health: metrics,
        },
        Balanced {
            smtp: proxied,
            health: free_port(),
        },
    ];
    let haproxy = tokio::task::spawn_blocking(move || HAProxy::start(&servers))
        .await
        .unwrap();
    let h = &haproxy;
    // `option httpchk GET /healthz` against the metrics listener.
    h.wait_state("s0", "UP", Duration::from_secs(10));
    h.wait_state("s1", "DOWN", Duration::from_secs(10));

    // A client at 127.0.0.2 sends a message through HAProxy (127.0.0.1).
    let mut c = Client::connect_from("127.0.0.2", h.addr()).await;
    c.expect("220 mx.test.example").await;
    let ehlo = c.cmd("EHLO client.example", "250").await;
    assert!(ehlo.contains("Hello client.example [127.0.0.2]"), "{ehlo}");
    c.envelope("a@client.example", &["user@example.com"]).await;
    assert!(c.data(&test_message("behind-haproxy")).await.starts_with("250"));
    c.cmd("QUIT", "221").await;
    let got = sink.wait_for(1).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(
        text.starts_with("Received: from client.example ([127.0.0.2])"),
        "{text}"
    );

    // The same client straight to the PROXY listener: not a balancer.
    let proxied_addr = format!("127.0.0.1:{proxied}").parse().unwrap();
    let mut direct = Client::connect_from("127.0.0.2", proxied_addr).await;
    direct.expect("554 5.7.1").await;
    direct.expect_closed().await;
    // From the balancer's address but without a header: cut off after
    // server.proxy_timeout.
    let mut headerless = Client::connect(proxied_addr).await;
    headerless.expect("421 4.7.0").await;

    let events = events_when(&log, |e| {
        let e = &e[before..];
        !named(e, "session_closed").is_empty() && named(e, "connect_rejected").len() >= 2
    })
    .await
    .split_off(before);
    // Every event about a client names 127.0.0.2 (the PROXY header's), the
    // one exception being the balancer's own headerless connection.
    let with_ip: Vec<&Value> = events.iter().filter(|e| e.get("ip").is_some()).collect();
    for e in ["session_opened", "message_accepted", "session_closed"] {
        assert_eq!(named(&events, e).len(), 1, "{e}: {events:#?}");
    }
    let (balancer, clients): (Vec<&Value>, Vec<&Value>) = with_ip.iter().partition(|e| e["ip"] == "127.0.0.1");
    assert!(clients.iter().all(|e| e["ip"] == "127.0.0.2"), "{clients:#?}");
    assert_eq!(
        balancer.len(),
        1,
        "only the headerless connection is HAProxy's own: {balancer:#?}"
    );
    assert_eq!(balancer[0]["event"], "connect_rejected");
    assert_eq!(balancer[0]["reason"]["kind"], "proxy_protocol", "{:#}", balancer[0]);
    assert!(
        balancer[0]["evidence"]
            .as_str()
            .unwrap()
            .starts_with("no PROXY header within"),
        "{:#}",
        balancer[0]
    );
    let direct_refused = named(&events, "connect_rejected")
        .into_iter()
        .find(|e| e["ip"] == "127.0.0.2")
        .expect("the direct connection is refused");
    assert_eq!(direct_refused["evidence"], "127.0.0.2 is not in server.proxy_from");
    assert!(direct_refused["reply"].as_str().unwrap().starts_with("554 5.7.1"));
}
