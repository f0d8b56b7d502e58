//! sluice as the policy server of a real Postfix (`check_policy_service`
//! in front of smtp-sink): Postfix's replies carry sluice's decisions for
//! an unknown recipient, a DNS-listed client, a greylisted triplet and a
//! rate-limited client, and its `Received-SPF:` header; a flood of unknown
//! recipients through Postfix gets the client banned (in the ban list, and
//! in an nft set in a network namespace); with sluice stopped, Postfix's
//! default action applies and nothing hangs. The protocol itself: what
//! sluice cannot read gets DUNNO on the same connection; `sluice policy`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice::events::{Event, Reason, Via};

use crate::util::services::{DnsServer, Postfix, SmtpSink};
use crate::util::*;

/// `check_policy_service` as the README gives it.
fn policy_service(port: u16) -> String {
    format!("check_policy_service {{ inet:127.0.0.1:{port}, timeout=10s, default_action=DUNNO }}")
}

/// A sink, sluice with `[policy_server]` (and `extra` TOML), and a
/// Postfix relaying to the sink that asks sluice by `main_cf` (made from
/// the policy server's port).
struct Setup {
    sink: SmtpSink,
    postfix: Postfix,
    relay: Option<TestRelay>,
    policy: SocketAddr,
    config: std::path::PathBuf,
}

async fn setup(extra: &str, main_cf: impl FnOnce(u16) -> String) -> Setup {
    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let mut base = base_toml(&format!("smtp://127.0.0.1:{}", sink.port));
    if extra.contains("[spam]") {
        base = base.replace("[spam]\nenabled = false\n", "");
    }
    let toml = format!("{base}\n[policy_server]\nlisten = [\"127.0.0.1:0\"]\n{extra}");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, &toml).unwrap();
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let policy = relay.running().policy_addrs[0];
    let lines = main_cf(policy.port());
    let sink_port = sink.port;
    let postfix = tokio::task::spawn_blocking(move || {
        let mut pf = Postfix::start(sink_port);
        reconfigure(&mut pf, &lines);
        pf
    })
    .await
    .unwrap();
    Setup {
        sink,
        postfix,
        relay: Some(relay),
        policy,
        config,
    }
}

/// Adds `lines` to Postfix's main.cf and restarts it.
fn reconfigure(pf: &mut Postfix, lines: &str) {
    pf.stop();
    let main_cf = pf.dir().join("etc/main.cf");
    let mut text = std::fs::read_to_string(&main_cf).unwrap();
    text.push_str(lines);
    text.push('\n');
    std::fs::write(&main_cf, text).unwrap();
    // Postfix waits until main.cf is older than the current second.
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&main_cf)
        .and_then(|f| f.set_modified(old))
        .unwrap();
    pf.restart();
}

impl Setup {
    fn relay(&self) -> &TestRelay {
        self.relay.as_ref().unwrap()
    }

    fn postfix_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.postfix.port))
    }

    /// A session with Postfix from `src`, greeted and EHLO done.
    async fn client_from(&self, src: &str) -> Client {
        let mut c = Client::connect_from(src, self.postfix_addr()).await;
        c.expect("220 postfix-").await;
        c.cmd("EHLO client.example", "250").await;
        c
    }

    async fn client(&self) -> Client {
        self.client_from("127.0.0.1").await
    }
}

/// The recipient restrictions of an ordinary Postfix MX, then sluice.
fn at_rcpt(port: u16) -> String {
    format!(
        "smtpd_recipient_restrictions = reject_unauth_destination, {}",
        policy_service(port)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_refuses_an_unknown_recipient_with_sluices_reply_and_relays_the_rest() {
    let s = setup("", at_rcpt).await;
    let mut events = s.relay().running().events.subscribe();
    let mut c = s.client().await;
    c.cmd("MAIL FROM:<sender@client.example>", "250").await;
    let r = c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    assert!(r.contains("user unknown"), "{r}");
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    let r = c.data(&test_message("through postfix")).await;
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT", "221").await;

    // The refusal is the front end's event, marked as the policy server's.
    let (via, reason, rcpt) = wait_event(&mut events, |e| match e {
        Event::RcptRejected { via, reason, rcpt, .. } => Some((*via, reason.clone(), rcpt.clone())),
        _ => None,
    })
    .await;
    assert_eq!(
        (via, reason, rcpt.as_str()),
        (Via::Policy, Reason::UnknownUser, "nobody@example.com")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.sink.count() < 1 {
        assert!(Instant::now() < deadline, "{}", s.sink.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = s.postfix.log();
    assert!(
        log.contains("550 5.1.1 <nobody@example.com>: Recipient address rejected: user unknown"),
        "{log}"
    );
    // The same words in the event log line: `"via":"policy"`.
    let json = serde_json::to_string(&Event::RcptRejected {
        session: 1,
        via: Via::Policy,
        ip: "192.0.2.1".parse().unwrap(),
        rcpt: "x@example.com".into(),
        id: String::new(),
        tx: Default::default(),
        reason: Reason::UnknownUser,
        reply: sluice::proto::Reply::UNKNOWN_USER,
        evidence: String::new(),
    })
    .unwrap();
    assert!(json.contains("\"via\":\"policy\""), "{json}");
    s.relay.unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_refuses_a_dns_listed_client_in_its_client_restrictions() {
    let zone = corpora().join("dnsbl/bl.test.zone");
    let dns = tokio::task::spawn_blocking(move || DnsServer::start(&zone))
        .await
        .unwrap();
    let extra = format!(
        "[dns]\nresolver = \"127.0.0.1:{}\"\ntimeout = \"500ms\"\n[dnsbl]\nzones = [\"bl.test*3\"]\nthreshold = 3\n",
        dns.port
    );
    let s = setup(&extra, |port| {
        format!("smtpd_client_restrictions = {}", policy_service(port))
    })
    .await;

    // 127.0.0.2 is listed in bl.test.
    let mut c = s.client_from("127.0.0.2").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    let r = c.cmd("RCPT TO:<user@example.com>", "554 5.7.1").await;
    assert!(r.contains("Client host rejected"), "{r}");
    assert!(r.contains("client [127.0.0.2] blocked using bl.test"), "{r}");

    // 127.0.0.1 is not.
    let mut c = s.client().await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    let log = s.postfix.log();
    assert!(log.contains("blocked using bl.test"), "{log}");
    s.relay.unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_defers_a_new_triplet_then_accepts_it_after_the_delay() {
    let extra = "[greylist]\nenabled = true\ndelay = \"2s\"\nretry_window = \"1h\"\n";
    let s = setup(extra, at_rcpt).await;
    let mut c = s.client().await;
    c.cmd("MAIL FROM:<first@client.example>", "250").await;
    // postgrey's answer: DEFER_IF_PERMIT, Postfix's 450 with sluice's text.
    let r = c.cmd("RCPT TO:<user@example.com>", "450 4.7.1").await;
    assert!(r.contains("Greylisted, please try again in"), "{r}");
    // Too early: still deferred.
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<first@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "450 4.7.1").await;
    c.cmd("QUIT", "221").await;

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut c = s.client().await;
    c.cmd("MAIL FROM:<first@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    let r = c.data(&test_message("greylisted once")).await;
    assert!(r.starts_with("250"), "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.sink.count() < 1 {
        assert!(Instant::now() < deadline, "{}", s.sink.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.relay.unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_slows_a_client_over_its_recipient_rate() {
    let s = setup("[limits]\nper_ip_recipient_rate = 2\n", at_rcpt).await;
    let mut c = s.client().await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    c.cmd("RCPT TO:<known@example.com>", "250").await;
    let r = c.cmd("RCPT TO:<other@example.com>", "452 4.7.0").await;
    assert!(r.contains("Too many recipients from your address"), "{r}");
    s.relay.unwrap().stop().await;
}

/// With `spam.auth`, the message's first passed recipient is answered
/// `PREPEND Received-SPF: ...` (once, however many recipients follow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_adds_sluices_received_spf_header_once() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("spf.zone");
    std::fs::write(
        &zone,
        "$TTL 60\nexample.test. IN TXT \"v=spf1 ip4:127.0.0.1 -all\"\n2.0.0.127.bl.test. IN A 127.0.0.2\n",
    )
    .unwrap();
    let dns = tokio::task::spawn_blocking(move || DnsServer::start(&zone))
        .await
        .unwrap();
    let extra = format!(
        "[dns]\nresolver = \"127.0.0.1:{}\"\ntimeout = \"1s\"\n[spam]\nenabled = true\nauth = true\n",
        dns.port
    );
    let s = setup(&extra, at_rcpt).await;
    let mut c = s.client().await;
    c.cmd("MAIL FROM:<a@example.test>", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    c.cmd("RCPT TO:<known@example.com>", "250").await;
    let r = c.data(&test_message("spf")).await;
    assert!(r.starts_with("250"), "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.sink.count() < 1 {
        assert!(Instant::now() < deadline, "{}", s.sink.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let msg = String::from_utf8_lossy(&s.sink.messages()[0]).into_owned();
    assert_eq!(msg.matches("Received-SPF:").count(), 1, "{msg}");
    assert!(
        msg.contains(
            "Received-SPF: pass (mx.test.example: example.test gives pass for 127.0.0.1) client-ip=127.0.0.1; \
             envelope-from=\"a@example.test\"; helo=client.example; receiver=mx.test.example; identity=mailfrom"
        ),
        "{msg}"
    );
    s.relay.unwrap().stop().await;
}

/// Postfix trusts the test client's XCLIENT (as it would a proxy), so the
/// client it reports to sluice is not a loopback address (those are never
/// banned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_recipients_through_postfix_gets_the_client_banned() {
    let extra =
        "[firewall]\nexporter = \"none\"\n[firewall.rules.unknown_user]\ncount = 3\nwindow = \"1m\"\nban = \"1h\"\n";
    let s = setup(extra, at_rcpt).await;
    let mut events = s.relay().running().events.subscribe();
    let mut c = s.client().await;
    c.cmd("XCLIENT ADDR=192.0.2.66 NAME=[UNAVAILABLE]", "220").await;
    c.cmd("EHLO flood.example", "250").await;
    c.cmd("MAIL FROM:<a@flood.example>", "250").await;
    // The rule is 3 within a minute: the third offence bans.
    for i in 0..3 {
        c.cmd(&format!("RCPT TO:<nobody{i}@example.com>"), "550 5.1.1").await;
    }
    wait_event(&mut events, |e| match e {
        Event::BanAdded { net, .. } if net == "192.0.2.66/32" => Some(()),
        _ => None,
    })
    .await;
    // Banned: even a known recipient is refused now, with the ban's reply.
    let r = c.cmd("RCPT TO:<user@example.com>", "554 5.7.1").await;
    assert!(r.contains("Your address is banned here"), "{r}");
    // In the ban list, over the control socket.
    let cfg = s.config.to_str().unwrap().to_string();
    let (code, out) = tokio::task::spawn_blocking(move || sluice_cli(["bans", "--config", &cfg, "list"]))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("192.0.2.66/32\tunknown_user\tuntil "), "{out}");
    s.relay.unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sluice_stopped_postfix_takes_its_default_action_and_nothing_hangs() {
    let mut s = setup("", at_rcpt).await;
    // Working first: sluice's refusal.
    let mut c = s.client().await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<nobody@example.com>", "550 5.1.1").await;
    c.cmd("QUIT", "221").await;

    s.relay.take().unwrap().stop().await;
    // The port is closed: Postfix's default_action (DUNNO) applies, and
    // its own restrictions accept the recipient.
    let started = Instant::now();
    let mut c = s.client().await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    c.cmd("RCPT TO:<nobody@example.com>", "250").await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let r = c.data(&test_message("sluice away")).await;
    assert!(r.starts_with("250"), "{r}");
    let log = s.postfix.log();
    assert!(log.contains(&format!("127.0.0.1:{}", s.policy.port())), "{log}");
}

/// Sends `request` on a policy connection and reads one answer.
async fn ask(io: &mut tokio::io::BufReader<tokio::net::TcpStream>, request: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    io.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, io.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {answer:?}");
        if line == "\n" {
            return answer;
        }
        answer.push_str(&line);
    }
}

/// The protocol itself, on one persistent connection: what sluice cannot
/// read or use is answered DUNNO (and a warning), and the next request is
/// answered as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_requests_get_dunno_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[policy_server]\nlisten = [\"127.0.0.1:0\"]\nmax_request_size = 512\n",
        base_toml("smtp://127.0.0.1:1")
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let mut events = relay.running().events.subscribe();
    let sock = tokio::net::TcpStream::connect(relay.running().policy_addrs[0])
        .await
        .unwrap();
    let mut io = tokio::io::BufReader::new(sock);
    let rcpt = |to: &str| {
        format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.9\n\
             client_name=unknown\nreverse_client_name=unknown\nhelo_name=client.example\nsender=a@client.example\n\
             recipient={to}\nrecipient_count=0\nqueue_id=\ninstance=abc.1\nsize=0\nfuture_attribute=\n\n"
        )
    };
    assert_eq!(
        ask(&mut io, &rcpt("nobody@example.com")).await,
        "action=550 5.1.1 user unknown\n"
    );
    assert_eq!(ask(&mut io, &rcpt("user@example.com")).await, "action=DUNNO\n");
    // Not name=value.
    assert_eq!(ask(&mut io, "this is not a policy request\n\n").await, "action=DUNNO\n");
    let warning = wait_event(&mut events, |e| match e {
        Event::Warning {
            component: "policy_server",
            message,
        } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert!(
        warning.contains("request not understood, answered DUNNO: line without '='"),
        "{warning}"
    );
    // Too large: swallowed to its empty line.
    let big = format!("request=smtpd_access_policy\nccert_subject={}\n\n", "x".repeat(2000));
    assert_eq!(ask(&mut io, &big).await, "action=DUNNO\n");
    // A client address that is not one.
    assert_eq!(
        ask(
            &mut io,
            "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=bogus\n\n"
        )
        .await,
        "action=DUNNO\n"
    );
    // After DATA: nothing to say.
    let data = rcpt("nobody@example.com").replace("protocol_state=RCPT", "protocol_state=DATA");
    assert_eq!(ask(&mut io, &data).await, "action=DUNNO\n");
    // And the connection still answers.
    assert_eq!(
        ask(&mut io, &rcpt("nobody2@example.com")).await,
        "action=550 5.1.1 user unknown\n"
    );
    relay.stop().await;
}

/// `sluice policy`: the policy server alone, from the same file as
/// `serve` (its SMTP listener is not opened; `[policy_server]` may be
/// left out: 127.0.0.1:10023 then, here a port of the test's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_policy_serves_only_the_policy_protocol() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let (smtp, policy) = (free_port(), free_port());
    let toml = base_toml("smtp://127.0.0.1:1").replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:{smtp}\"]"),
    ) + &format!("[policy_server]\nlisten = [\"127.0.0.1:{policy}\"]\n");
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["policy", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{policy}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let sock = loop {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            break s;
        }
        assert!(Instant::now() < deadline, "sluice policy did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut io = tokio::io::BufReader::new(sock);
    let req = "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.9\n\
               helo_name=client.example\nsender=\nrecipient=nobody@example.com\ninstance=x.1\n\n";
    assert_eq!(ask(&mut io, req).await, "action=550 5.1.1 user unknown\n");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", smtp)).is_err(),
        "no SMTP listener under `sluice policy`"
    );
    // SIGTERM: it stops at once (the idle policy connection is closed).
    let ok = std::process::Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sluice policy did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

fn run(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace (and the veth pair in it) and a child process of
/// the test, removed when it ends, even by a panic.
struct NetnsWith {
    ns: String,
    child: Option<std::process::Child>,
}

impl Drop for NetnsWith {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

/// The ban reaches the kernel: `sluice policy` runs in a network namespace
/// with the nftables exporter, reached by the Postfix of the root
/// namespace over a veth pair; a flood of unknown recipients through
/// Postfix (from a client Postfix names by XCLIENT) puts the client in
/// the namespace's nft set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_postfix_puts_the_client_in_an_nft_set() {
    let id = std::process::id() % 100_000;
    let (ns, vr, vs) = (format!("slpol{id}"), format!("slpr{id}"), format!("slps{id}"));
    let net = 16 + (id % 200);
    let (root_ip, srv_ip) = (format!("10.214.{net}.1"), format!("10.214.{net}.2"));
    run(&["ip", "netns", "add", &ns]);
    let mut guard = NetnsWith {
        ns: ns.clone(),
        child: None,
    };
    run(&["ip", "link", "add", &vr, "type", "veth", "peer", "name", &vs]);
    run(&["ip", "link", "set", &vs, "netns", &ns]);
    run(&["ip", "addr", "add", &format!("{root_ip}/30"), "dev", &vr]);
    run(&["ip", "-n", &ns, "addr", "add", &format!("{srv_ip}/30"), "dev", &vs]);
    run(&["ip", "link", "set", &vr, "up"]);
    run(&["ip", "-n", &ns, "link", "set", &vs, "up"]);
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);

    let sink = tokio::task::spawn_blocking(SmtpSink::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let cfg = dir.path().join("sluice.toml");
    let toml = base_toml(&format!("smtp://127.0.0.1:{}", sink.port))
        .replace("[metrics]\nlisten = \"127.0.0.1:0\"\n", "")
        + &format!(
            "[policy_server]\nlisten = [\"{srv_ip}:10023\"]\n\
             [firewall]\nexporter = \"nft\"\nflush_interval = \"100ms\"\n\
             [firewall.rules.unknown_user]\ncount = 3\nwindow = \"1m\"\nban = \"1h\"\n\
             [metrics]\nenabled = false\n"
        );
    std::fs::write(&cfg, toml).unwrap();
    guard.child = Some(
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_sluice"), "policy", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("sluice.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let policy: SocketAddr = format!("{srv_ip}:10023").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(policy).await.is_err() {
        let log = std::fs::read_to_string(dir.path().join("sluice.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "sluice policy did not listen: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let lines = format!(
        "smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service {{ inet:{policy}, timeout=10s, default_action=DUNNO }}"
    );
    let sink_port = sink.port;
    let postfix = tokio::task::spawn_blocking(move || {
        let mut pf = Postfix::start(sink_port);
        reconfigure(&mut pf, &lines);
        pf
    })
    .await
    .unwrap();
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], postfix.port))).await;
    c.expect("220").await;
    c.cmd("XCLIENT ADDR=192.0.2.77 NAME=[UNAVAILABLE]", "220").await;
    c.cmd("EHLO flood.example", "250").await;
    c.cmd("MAIL FROM:<a@flood.example>", "250").await;
    for i in 0..3 {
        c.cmd(&format!("RCPT TO:<nobody{i}@example.com>"), "550 5.1.1").await;
    }
    let set = || {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "nft",
                "list",
                "set",
                "inet",
                "sluice",
                "banned_v4",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !set().contains("192.0.2.77") {
        let log = std::fs::read_to_string(dir.path().join("sluice.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "not in the nft set: {}\n{log}", set());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c.cmd("RCPT TO:<user@example.com>", "554 5.7.1").await;
    assert!(r.contains("Your address is banned here"), "{r}");
    drop(guard);
    drop(postfix);
}
