//! `sluice trace` against the running binary: a message greylisted, then
//! accepted, scored and delivered to a real next hop (Postfix's
//! smtp-sink), found by its queue id and by its Message-ID; a message
//! still in the queue shows what is live now.

use std::time::Duration;

use crate::util::services::SmtpSink;
use crate::util::*;

const RULES: &str = "body SCORE6 /\\bscore6\\b/\nscore SCORE6 6\n";

fn trace(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let cfg = dir.join("sluice.toml");
    sluice_cli(["trace", "-c", cfg.to_str().unwrap()].iter().chain(args))
}

/// Traces until `want` shows up (the event log is written every 100 ms,
/// delivery is asynchronous).
async fn trace_until(dir: &std::path::Path, args: &[&str], want: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = trace(dir, args);
        if code == Some(0) && out.contains(want) {
            return out;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {want:?} in:\n{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_a_greylisted_message_accepted_scored_delivered_and_what_is_still_queued() {
    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50_local.rules"), RULES).unwrap();
    let port = free_port();
    let toml = base_toml(&format!("smtp://127.0.0.1:{}", sink.port))
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace(
            "retry_initial = \"1s\"\nretry_max = \"2s\"",
            "retry_initial = \"1h\"\nretry_max = \"2h\"",
        )
        .replace(
            "[spam]\nenabled = false\n",
            "[spam]\nauth = false\nrules_dir = \"rules\"\ntag = 5.0\nreject = 10.0\n",
        )
        + "[greylist]\nenabled = true\ndelay = \"1s\"\n[log]\nevents = \"events.jsonl\"\n\
           [relay.routes.\"catchall.example.net\"]\nnext_hop = \"smtp://127.0.0.1:1\"\n";
    let p = Proc::start_toml(dir.path(), port, &toml);

    // First try: greylisted.
    let mut c = Client::connect(p.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "451 4.7.1").await;
    // (Another sender's first try, for the queued message further down.)
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<b@client.example>", "250").await;
    c.cmd("RCPT TO:<x@catchall.example.net>", "451 4.7.1").await;
    c.cmd("QUIT", "221").await;
    // The retry after the delay: accepted, scored (tagged), delivered.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut c = Client::connect(p.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    let msg = "From: a@client.example\r\nTo: user@example.com\r\nSubject: traced\r\n\
Message-ID: <traced.1@client.example>\r\n\r\nthis scores score6 points\r\n";
    c.send("DATA").await;
    c.expect("354").await;
    c.send_raw(format!("{msg}.\r\n").as_bytes()).await;
    let r = c.reply().await;
    assert!(r.starts_with("250"), "{r}");
    let id = r.rsplit(' ').next().unwrap().to_string();
    c.cmd("QUIT", "221").await;

    let out = trace_until(dir.path(), &[&id], "delivered — 250").await;
    let lines: Vec<&str> = out.lines().collect();
    let at = |what: &str| {
        lines
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in:\n{out}"))
    };
    // In order: the greylisted try, the retry's session, the score, the
    // acceptance, the delivery with the next hop's reply.
    let order = [
        at("RCPT TO <user@example.com> refused: 451 4.7.1"),
        at("connected"),
        at("spam score "),
        at(&format!(
            "{id}: accepted: HELO client.example, MAIL FROM <a@client.example>, 1 recipient(s)"
        )),
        at(&format!(
            "{id}: delivery attempt 1 to <user@example.com>: delivered — 250"
        )),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order:\n{out}");
    assert!(out.contains("greylist"), "{out}");
    assert!(
        !out.contains("b@client.example"),
        "another sender's try is not this message's: {out}"
    );
    assert!(out.contains("SCORE6") && out.contains("-> tag"), "{out}");
    // The same story by Message-ID; JSON lines for tools.
    let (code, by_mid) = trace(dir.path(), &["<traced.1@client.example>"]);
    assert_eq!((code, by_mid.as_str()), (Some(0), out.as_str()));
    let (code, json) = trace(dir.path(), &["--json", &id]);
    assert_eq!(code, Some(0));
    for l in json.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["event"].is_string(), "{l}");
    }

    // A message for a next hop that is down stays queued: the trace says
    // what is live now.
    let mut c = Client::connect(p.addr).await;
    c.expect("220").await;
    c.envelope("b@client.example", &["x@catchall.example.net"]).await;
    let r = c.data(&test_message("stuck")).await;
    assert!(r.starts_with("250"), "{r}");
    let stuck = r.rsplit(' ').next().unwrap().to_string();
    let out = trace_until(dir.path(), &[&stuck], "deferred —").await;
    assert!(
        out.contains(&format!("now  {stuck}: in the queue, deferred, 1 attempt(s)")),
        "{out}"
    );
    let (code, out) = trace(dir.path(), &["NOSUCHID"]);
    assert_eq!(code, Some(1), "nothing found is exit 1: {out}");
}
