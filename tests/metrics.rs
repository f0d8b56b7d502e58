//! Seeing the storm: exact counter changes in a real scrape after real
//! traffic (accepted, unknown recipient, DNSBL-listed client, virus via a
//! real clamd and a real DNS server), `promtool check metrics` on that
//! scrape, the event log (JSON lines, SIGUSR1 reopen), `/healthz`,
//! `/readyz`, `sluice check` exit codes, and the status page in headless
//! Chromium.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::util::services::{Clamd, DnsServer};
use crate::util::*;

/// GET over plain HTTP/1.0: (status code, body).
/// Every sample of a scrape: `name{labels}` -> value.
fn samples(scrape: &str) -> HashMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

struct Scrape(HashMap<String, f64>);

impl Scrape {
    async fn take(addr: SocketAddr) -> (Scrape, String) {
        let (code, body) = http_get(addr, "/metrics").await;
        assert_eq!(code, 200);
        (Scrape(samples(&body)), body)
    }

    /// The value of `name{labels}` (labels in the order Prometheus prints
    /// them: sorted), 0 when absent.
    fn v(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

fn metrics_addr(relay: &TestRelay) -> SocketAddr {
    relay.running().metrics_addr.expect("metrics listener")
}

async fn relay_with_everything(sink: &Sink, dns: &DnsServer, clamd: &Clamd, extra: &str) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[dns]\nresolver = \"127.0.0.1:{}\"\ntimeout = \"1s\"\n[dnsbl]\nzones = [\"bl.test*3\"]\nthreshold = 3\n\
         [clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\ntimeout = \"20s\"\n{extra}",
        base_toml(&sink.next_hop()),
        dns.port,
        clamd.port
    );
    TestRelay::start_in(dir, &toml, |_| {}).await
}

async fn services() -> (DnsServer, Clamd) {
    let zone = corpora().join("dnsbl/bl.test.zone");
    let db = corpora().join("clamav-db");
    let dns = tokio::task::spawn_blocking(move || DnsServer::start(&zone));
    let clamd = tokio::task::spawn_blocking(move || Clamd::start(&db));
    (dns.await.unwrap(), clamd.await.unwrap())
}

/// One of each: accepted, unknown recipient, listed client, virus.
async fn storm(relay: &TestRelay) {
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    let r = c.data(&test_message("clean one")).await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    let r = c
        .data(&crate::scan::with_attachment("sample.bin", &crate::scan::eicar()))
        .await;
    assert!(r.starts_with("554 5.7.1 Message rejected: virus found"), "{r}");
    c.cmd("QUIT", "221").await;

    // 127.0.0.2 is listed in bl.test.
    let mut c = Client::connect_from("127.0.0.2", relay.addr).await;
    c.expect("220").await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "554 5.7.1").await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_exactly_the_counters_it_should_and_promtool_accepts_the_scrape() {
    let (dns, clamd) = services().await;
    let sink = Sink::start().await;
    let relay = relay_with_everything(&sink, &dns, &clamd, "").await;
    let addr = metrics_addr(&relay);

    let (before, _) = Scrape::take(addr).await;
    storm(&relay).await;
    sink.wait_for(1).await;
    // Sessions close and the delivery is settled just after the replies.
    let mut after;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        after = Scrape::take(addr).await;
        let s = &after.0;
        if (s.v("sluice_sessions_active") == 0.0 && s.v("sluice_delivery_attempts_total{result=\"delivered\"}") >= 1.0)
            || std::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (after, text) = after;
    let delta = |k: &str| after.v(k) - before.v(k);
    let expect = [
        ("sluice_connections_accepted_total", 2.0),
        ("sluice_messages_total{reason=\"ok\",result=\"accepted\"}", 1.0),
        ("sluice_messages_total{reason=\"virus\",result=\"rejected\"}", 1.0),
        ("sluice_recipients_total{reason=\"ok\",result=\"accepted\"}", 2.0),
        (
            "sluice_recipients_total{reason=\"unknown_user\",result=\"rejected\"}",
            1.0,
        ),
        ("sluice_recipients_total{reason=\"dnsbl\",result=\"rejected\"}", 1.0),
        ("sluice_smtp_commands_total{class=\"5xx\",verb=\"rcpt\"}", 2.0),
        ("sluice_smtp_commands_total{class=\"2xx\",verb=\"ehlo\"}", 2.0),
        ("sluice_smtp_commands_total{class=\"3xx\",verb=\"data\"}", 2.0),
        ("sluice_dnsbl_listed_total{zone=\"bl.test\"}", 1.0),
        // The virus is found twice: in the raw message and in the tar of
        // its decoded parts (two scans); the plain-text message is one.
        (
            "sluice_scanner_scans_total{endpoint=\"tcp://127.0.0.1:PORT\",verdict=\"virus\"}",
            2.0,
        ),
        (
            "sluice_scanner_scans_total{endpoint=\"tcp://127.0.0.1:PORT\",verdict=\"clean\"}",
            1.0,
        ),
        ("sluice_scan_admission_total{mode=\"in-session\"}", 1.0),
        ("sluice_delivery_attempts_total{result=\"delivered\"}", 1.0),
        ("sluice_message_size_bytes_count", 1.0),
        ("sluice_events_total{event=\"virus_found\"}", 1.0),
        ("sluice_events_total{event=\"rcpt_rejected\"}", 2.0),
    ];
    let port = clamd.port.to_string();
    for (k, want) in expect {
        let k = k.replace("PORT", &port);
        assert_eq!(delta(&k), want, "{k}\n{text}");
    }
    // Each connection did at least one DNSBL query; nothing failed.
    assert!(delta("sluice_dnsbl_queries_total{zone=\"bl.test\"}") >= 2.0, "{text}");
    assert_eq!(
        after.v("sluice_dnsbl_errors_total{kind=\"timeout\",zone=\"bl.test\"}"),
        0.0
    );
    assert_eq!(after.v("sluice_sessions_active"), 0.0, "{text}");
    assert_eq!(after.v("sluice_next_hop_up"), 1.0);
    assert_eq!(
        after.v(&format!("sluice_scanner_up{{endpoint=\"tcp://127.0.0.1:{port}\"}}")),
        1.0
    );
    assert!(text.contains("sluice_build_info{version=\""), "{text}");
    assert!(after.v("sluice_spool_fsync_duration_seconds_count") >= 1.0, "{text}");
    // No per-client or per-address label anywhere.
    assert!(!text.contains("127.0.0.2") && !text.contains("example.com"), "{text}");

    // promtool (Debian's prometheus package) lints the real scrape.
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool installed (Debian package prometheus)");
    {
        use std::io::Write as _;
        p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_log_is_one_json_line_per_decision_and_reopens_on_sigusr1() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = base_toml(&sink.next_hop()).replace("[spool]", "[log]\nevents = \"events.log\"\n[spool]");
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let log = relay.path("events.log");

    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    let r = c.data(&test_message("logged")).await;
    let id = r.rsplit(' ').next().unwrap().to_string();
    sink.wait_for(1).await;

    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let lines = wait_until(|| {
        let t = read(&log);
        t.contains("\"delivery_attempt\"").then_some(t)
    })
    .await;
    let events: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    for e in &events {
        let ts = e["ts"].as_str().unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{ts}");
    }
    let find = |name: &str| events.iter().find(|e| e["event"] == name).cloned().expect(name);
    let rej = find("rcpt_rejected");
    assert_eq!(rej["ip"], "127.0.0.1");
    assert_eq!(rej["reason"]["kind"], "unknown_user");
    assert!(rej["reply"].as_str().unwrap().starts_with("550 5.1.1"));
    let acc = find("message_accepted");
    assert_eq!(acc["id"], id.as_str());
    assert_eq!(find("delivery_attempt")["outcome"], "delivered");

    // logrotate: move the file away, SIGUSR1, the next events go to a new file.
    std::fs::rename(&log, relay.path("events.log.1")).unwrap();
    let ok = Command::new("kill")
        .args(["-s", "USR1", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    // The reopen creates the file at once: then the next events go there.
    wait_until(|| log.exists().then_some(())).await;
    let mut c = relay.client().await;
    c.cmd("QUIT", "221").await;
    let fresh = wait_until(|| {
        let t = read(&log);
        t.contains("\"session_closed\"").then_some(t)
    })
    .await;
    assert!(!fresh.contains(&id), "old events in the new file: {fresh}");
    assert!(read(&relay.path("events.log.1")).contains(&id));
}

async fn wait_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sluice_check(addr: SocketAddr) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--addr", &addr.to_string(), "--timeout", "5s"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(line.lines().count(), 1, "one status line: {line}");
    (out.status.code().unwrap(), line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_and_sluice_check_follow_the_next_hop() {
    let sink = Sink::start().await;
    let relay = TestRelay::start(&sink.next_hop()).await;
    let addr = metrics_addr(&relay);

    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".to_string()));
    let (code, line) = tokio::task::spawn_blocking(move || sluice_check(addr)).await.unwrap();
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("SLUICE OK - ready; queue 0"), "{line}");
    assert!(line.contains("| queue=0;1000;10000"), "{line}");

    // The next hop goes away: not ready, naming it; CRITICAL.
    let hop = sink.next_hop().replace("smtp://", "");
    drop(sink);
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with(&format!("not ready: next hop smtp://{hop}")), "{body}");
    let (scrape, _) = Scrape::take(addr).await;
    assert_eq!(scrape.v("sluice_next_hop_up"), 0.0, "the probe sets it too");
    let (code, line) = tokio::task::spawn_blocking(move || sluice_check(addr)).await.unwrap();
    assert_eq!(code, 2, "{line}");
    assert!(line.starts_with("SLUICE CRITICAL - not ready: next hop"), "{line}");

    // sluice itself gone: UNKNOWN.
    relay.stop().await;
    let (code, line) = tokio::task::spawn_blocking(move || sluice_check(addr)).await.unwrap();
    assert_eq!(code, 3, "{line}");
    assert!(line.starts_with("SLUICE UNKNOWN - metrics listener"), "{line}");
}

/// Local spam rules for deterministic scores (`score6`: tagged, or
/// quarantined for catchall.example.net; `score12`: rejected).
const SPAM_RULES: &str = "\
body SCORE6 /\\bscore6\\b/
score SCORE6 6
body SCORE12 /\\bscore12\\b/
score SCORE12 12
";

fn spam_message(marker: &str, word: &str, to: &str) -> Vec<u8> {
    format!(
        "From: a@client.example\r\nTo: {to}\r\nSubject: {marker}\r\n\
Message-ID: <{marker}@client.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n\
Hello, this is {marker}.\r\n{word}\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_draws_the_traffic_in_headless_chromium() {
    let (dns, clamd) = services().await;
    let sink = Sink::start().await;
    // Everything, plus spam scoring, and a route to a next hop that is
    // down (nothing listens on port 1): its mail stays queued.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50_local.rules"), SPAM_RULES).unwrap();
    let toml = format!(
        "{}\n[dns]\nresolver = \"127.0.0.1:{}\"\ntimeout = \"1s\"\n[dnsbl]\nzones = [\"bl.test*3\"]\nthreshold = 3\n\
         [clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\ntimeout = \"20s\"\n\
         [spam]\nauth = false\nrules_dir = \"rules\"\n\
         [spam.domains.\"catchall.example.net\"]\nquarantine = 5\nreject = \"off\"\n\
         [relay.routes]\n\"catchall.example.net\" = \"smtp://127.0.0.1:1\"\n",
        base_toml(&sink.next_hop()).replace("[spam]\nenabled = false\n", ""),
        dns.port,
        clamd.port
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let addr = metrics_addr(&relay);
    storm(&relay).await;
    let mut c = relay.client().await;
    // Tagged, quarantined, rejected as spam, and one for the dead route.
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&spam_message("tagged", "score6", "user@example.com")).await;
    assert!(r.starts_with("250"), "{r}");
    c.envelope("a@client.example", &["x@catchall.example.net"]).await;
    let r = c
        .data(&spam_message("quarantined", "score6", "x@catchall.example.net"))
        .await;
    assert!(r.starts_with("250"), "{r}");
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&spam_message("rejected", "score12", "user@example.com")).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    c.envelope("a@client.example", &["y@catchall.example.net"]).await;
    let r = c.data(&spam_message("stuck", "hello", "y@catchall.example.net")).await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT", "221").await;
    sink.wait_for(2).await;
    let clamd_ep = format!("tcp://127.0.0.1:{}", clamd.port);

    let (code, page) = http_get(addr, "/").await;
    assert_eq!(code, 200);
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "external assets"
    );
    // The history samples once a second (the queue per route and the
    // quarantine every 5 s): wait until it has taken the traffic in (a
    // series is absent until it has a sample).
    let sum = |v: &serde_json::Value| {
        v.as_array()
            .map_or(0, |a| a.iter().map(|x| x.as_u64().unwrap()).sum::<u64>())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status) = http_get(addr, "/api/status").await;
        let st: serde_json::Value = serde_json::from_str(&status).unwrap();
        let hop = |route: &str| {
            st["next_hops"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["route"] == route)
                .cloned()
                .unwrap_or_else(|| panic!("no next hop {route}: {status}"))
        };
        let (default, stuck) = (hop("default"), hop("catchall.example.net"));
        let ep = st["clamd"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["endpoint"] == clamd_ep.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no clamd endpoint: {status}"));
        let seen = (
            sum(&st["accepted"]),
            sum(&st["rejected"]["unknown_user"]),
            sum(&st["rejected"]["virus"]),
            sum(&st["rejected"]["spam"]),
            [
                sum(&st["spam_actions"]["tag"]),
                sum(&st["spam_actions"]["quarantine"]),
                sum(&st["spam_actions"]["reject"]),
            ],
            sum(&st["quarantined"]),
            st["quarantine"]["messages"].as_u64(),
            (default["up"].as_bool(), stuck["up"].as_bool(), stuck["queued"].as_u64()),
            (
                ep["up"].as_bool(),
                ep["scans"].as_u64().unwrap_or(0) > 0,
                ep["p95_ms"].is_f64(),
            ),
        );
        let want = (
            4,
            1,
            1,
            1,
            [1, 1, 1],
            1,
            Some(1),
            (Some(true), Some(false), Some(1)),
            (Some(true), true, true),
        );
        if seen == want {
            let reply = |h: &serde_json::Value| h["last_reply"].as_str().unwrap_or("").to_string();
            assert!(reply(&default).starts_with("250 "), "{default}");
            assert!(reply(&stuck).starts_with('4'), "a temporary failure: {stuck}");
            assert_eq!(stuck["next_hop"], "smtp://127.0.0.1:1");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seen {seen:?}, want {want:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let shot = relay.path("status.png");
    let url = format!("http://{addr}/");
    let chromium = |extra: &[&str]| {
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        Command::new("chromium")
            .args(&args)
            .env("HOME", relay.path(""))
            .output()
            .expect("chromium installed")
    };
    let dom = tokio::task::block_in_place(|| chromium(&["--dump-dom"]));
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let attr = |id: &str, name: &str| -> f64 {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} missing: {dom}"));
        let tag = &dom[dom[..at].rfind('<').unwrap()..];
        let tag = &tag[..tag.find('>').unwrap()];
        let v = tag
            .split(&format!("{name}=\""))
            .nth(1)
            .unwrap_or_else(|| panic!("{name} on {id}: {tag}"));
        v[..v.find('"').unwrap()].parse().unwrap()
    };
    for g in [
        "g-traffic",
        "g-spam",
        "g-scan",
        "g-backlog",
        "g-quarantine",
        "g-queue",
        "g-bans",
    ] {
        assert!(attr(g, "data-points") > 0.0, "{g} is empty");
    }
    // The graphs show the traffic, not just a flat line.
    assert!(attr("g-traffic", "data-max") >= 1.0, "no traffic drawn");
    assert!(attr("g-spam", "data-max") >= 1.0, "no spam actions drawn");
    assert!(attr("g-quarantine", "data-max") >= 1.0, "nothing quarantined drawn");
    assert!(attr("g-scan", "data-max") > 0.0, "no scan latency drawn");
    assert_eq!(attr("quarantine-stats", "data-messages"), 1.0);
    assert!(
        dom.contains("<span id=\"deferring\" class=\"state\" hidden=\"\">"),
        "admission control is not deferring"
    );
    assert!(dom.contains("mx.test.example"), "hostname not shown");
    // The next hops: the default one up with the sink's 250, the route
    // to port 1 down with its message queued.
    let row = |key: &str| -> &str {
        let at = dom.find(key).unwrap_or_else(|| panic!("no row {key}: {dom}"));
        &dom[at..at + dom[at..].find("</tr>").unwrap()]
    };
    let default = row("<tr data-route=\"default\"");
    assert!(default.contains("data-up=\"up\""), "{default}");
    assert!(default.contains("<td class=\"reply\">250 "), "{default}");
    let stuck = row("<tr data-route=\"catchall.example.net\"");
    assert!(stuck.contains("data-up=\"down\" data-queued=\"1\""), "{stuck}");
    assert!(stuck.contains("smtp://127.0.0.1:1"), "{stuck}");
    assert!(stuck.contains("<span class=\"state down\">down</span>"), "{stuck}");
    // clamd: up, with the last minute's scans and their latency.
    let ep = row(&format!("<tr data-endpoint=\"{clamd_ep}\""));
    assert!(ep.contains("data-up=\"up\""), "{ep}");
    assert!(!ep.contains("data-scans=\"0\""), "{ep}");
    assert!(!ep.contains("<td class=\"n\">–</td>"), "latency shown: {ep}");
    // Each reject reason has its own colour, apart from accepted's.
    let traffic = &dom[dom.find("id=\"g-traffic\"").unwrap()..];
    let traffic = &traffic[..traffic.find("</section>").unwrap()];
    let color = |series: &str| -> String {
        let key = format!("data-series=\"{series}\" data-color=\"");
        let at = traffic
            .find(&key)
            .unwrap_or_else(|| panic!("{series} not in the legend: {traffic}"))
            + key.len();
        traffic[at..at + traffic[at..].find('"').unwrap()].to_string()
    };
    let colors: Vec<String> = ["accepted", "dnsbl", "spam", "unknown_user", "virus"]
        .iter()
        .map(|s| color(s))
        .collect();
    let distinct: std::collections::HashSet<&String> = colors.iter().collect();
    assert_eq!(distinct.len(), colors.len(), "{colors:?}");
    // The banned networks are labelled with their grouping.
    assert!(
        dom.contains("grouped by /<span id=\"group-v4\">24</span> (IPv4) and /<span id=\"group-v6\">64</span> (IPv6)"),
        "grouping label"
    );

    let out =
        tokio::task::block_in_place(|| chromium(&["--hide-scrollbars", &format!("--screenshot={}", shot.display())]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    // Kept for people to look at (CI artefact).
    if let Ok(dir) = std::env::var("SLUICE_ARTIFACTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("status-page.png"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_dead_scanner_and_an_unwritable_spool() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    // Nothing listens on port 1.
    let toml = format!(
        "{}\n[clamd]\nendpoints = [\"tcp://127.0.0.1:1\"]\n",
        base_toml(&sink.next_hop())
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let addr = metrics_addr(&relay);
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body, "not ready: clamd tcp://127.0.0.1:1 not answering\n");

    // The spool directory stops taking files (a read-only remount, a full
    // disk): named too. Root ignores permissions, so a file takes the
    // probe's place.
    let probe = relay.path("spool/.ready-probe");
    std::fs::create_dir_all(probe.join("x")).unwrap();
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: spool "), "{body}");
    assert!(body.contains("not writable"), "{body}");
    let (code, line) = tokio::task::spawn_blocking(move || sluice_check(addr)).await.unwrap();
    assert_eq!(code, 2, "{line}");
}
