//! A reload that reloads, against the running binary: `sluice reload` and
//! SIGHUP re-read sluice.toml while sessions are open; the sessions
//! survive, and their next message sees the new values.

use std::time::Duration;

use crate::util::services::{DnsServer, SmtpSink};
use crate::util::*;

const RULES: &str = "body SCORE6 /\\bscore6\\b/\nscore SCORE6 6\n";

/// The base config with spam scoring (our rule above only), the real DNS
/// server as resolver, `reject` as the spam reject threshold and `zones`
/// as the DNS lists.
fn config(next_hop: u16, port: u16, metrics: u16, dns: u16, reject: &str, zones: &str) -> String {
    base_toml(&format!("smtp://127.0.0.1:{next_hop}"))
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{metrics}\""))
        .replace(
            "[spam]\nenabled = false\n",
            &format!("[spam]\nauth = false\nrules_dir = \"rules\"\ntag = 5.0\nreject = {reject}\n"),
        )
        + &format!(
            "[dns]\nresolver = \"127.0.0.1:{dns}\"\ntimeout = \"500ms\"\n[dnsbl]\nzones = {zones}\nthreshold = 3\n"
        )
}

fn spam_message(subject: &str) -> Vec<u8> {
    format!(
        "From: a@client.example\r\nTo: user@example.com\r\nSubject: {subject}\r\n\
Message-ID: <{subject}@client.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n\
this scores score6 points\r\n"
    )
    .into_bytes()
}

async fn session(from: &str, addr: std::net::SocketAddr) -> Client {
    let mut c = Client::connect_from(from, addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c
}

fn reload(dir: &std::path::Path) -> (Option<i32>, String) {
    let cfg = dir.join("sluice.toml");
    sluice_cli(["-c", cfg.to_str().unwrap(), "reload"])
}

async fn reloads(metrics: std::net::SocketAddr, result: &str) -> f64 {
    let (_, scrape) = http_get(metrics, "/metrics").await;
    let key = format!("sluice_config_reloads_total{{result=\"{result}\"}} ");
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_new_threshold_and_dns_list_to_open_sessions_and_a_bad_file_changes_nothing() {
    let zone = corpora().join("dnsbl/bl.test.zone");
    let dns = tokio::task::spawn_blocking(move || DnsServer::start(&zone))
        .await
        .unwrap();
    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50_local.rules"), RULES).unwrap();
    let (port, mport) = (free_port(), free_port());
    let cfg = |reject: &str, zones: &str| config(sink.port, port, mport, dns.port, reject, zones);
    let p = Proc::start_toml(dir.path(), port, &cfg("10.0", "[]"));
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();

    // Before: 6 points is below reject 10; 127.0.0.2 is not checked.
    let mut a = session("127.0.0.1", p.addr).await;
    a.envelope("a@client.example", &["user@example.com"]).await;
    let r = a.data(&spam_message("before")).await;
    assert!(r.starts_with("250"), "{r}");
    let mut b = session("127.0.0.2", p.addr).await;
    b.cmd("MAIL FROM:<b@client.example>", "250").await;
    b.cmd("RCPT TO:<user@example.com>", "250").await;
    b.cmd("RSET", "250").await;

    // Reload with reject at 5.5 and bl.test as a list, both sessions open.
    std::fs::write(dir.path().join("sluice.toml"), cfg("5.5", "[\"bl.test*3\"]")).unwrap();
    let (code, out) = reload(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration reloaded"), "{out}");
    assert!(!out.contains("restart"), "nothing restart-only changed: {out}");

    // The same sessions, their next transaction: the new values.
    a.envelope("a@client.example", &["user@example.com"]).await;
    let r = a.data(&spam_message("after")).await;
    assert!(r.starts_with("550 5.7.1"), "the new reject threshold applies: {r}");
    b.cmd("MAIL FROM:<b@client.example>", "250").await;
    let r = b.cmd("RCPT TO:<user@example.com>", "554 5.7.1").await;
    assert!(r.contains("bl.test"), "the new DNS list applies: {r}");
    b.cmd("RSET", "250").await;
    a.cmd("NOOP", "250").await;
    assert_eq!(reloads(metrics, "applied").await, 1.0);

    // A file that fails validation changes nothing, and says which key:
    // `sluice reload` refuses it before asking (exit 64), SIGHUP logs it
    // and counts it.
    std::fs::write(
        dir.path().join("sluice.toml"),
        cfg("10.0", "[]").replace("[timeouts]\n", "[timeouts]\ncommand = \"five\"\n"),
    )
    .unwrap();
    let (code, out) = reload(dir.path());
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("timeouts.command"), "names the failing key: {out}");
    p.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reloads(metrics, "failed").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP did not try to reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.envelope("a@client.example", &["user@example.com"]).await;
    let r = a.data(&spam_message("still")).await;
    assert!(r.starts_with("550 5.7.1"), "the running settings stay: {r}");
    assert_eq!(reloads(metrics, "applied").await, 1.0);

    // A restart-only change is named and keeps its running value; the rest
    // applies (reject back to 10, no DNS list).
    let moved = free_port();
    std::fs::write(
        dir.path().join("sluice.toml"),
        cfg("10.0", "[]").replace(&format!("127.0.0.1:{port}\"]"), &format!("127.0.0.1:{moved}\"]")),
    )
    .unwrap();
    let (code, out) = reload(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("need a restart") && out.contains("server.listen"), "{out}");
    a.envelope("a@client.example", &["user@example.com"]).await;
    let r = a.data(&spam_message("later")).await;
    assert!(r.starts_with("250"), "reject 10 again: {r}");
    b.cmd("MAIL FROM:<b@client.example>", "250").await;
    b.cmd("RCPT TO:<user@example.com>", "250").await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", moved)).is_err(),
        "server.listen keeps its running value until a restart"
    );
    let _ = session("127.0.0.1", p.addr).await;
    assert_eq!(reloads(metrics, "applied").await, 2.0);
}
