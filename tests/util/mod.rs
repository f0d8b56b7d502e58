//! Test harness: start sluice in-process on 127.0.0.1:0 with a real spool
//! in a temp dir, talk to it like an SMTP client, and receive what it
//! relays with a small recording sink (when a test must see the bytes).

#![allow(dead_code)]

pub mod process;
pub mod services;

pub use process::{Proc, free_port};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::app::Running;
use sluice::config::Config;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The recipient table every test relay starts with.
pub const TABLE: &str =
    "# test table\nuser@example.com OK\nknown@example.com OK\nother@example.com OK\n@catchall.example.net OK\n";

/// Runs the sluice binary: (exit code, stdout followed by stderr).
pub fn sluice_cli<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Base TOML for a test relay; `{next_hop}` is filled in.
pub fn base_toml(next_hop: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test.example"
[timeouts]
shutdown_grace = "5s"
[relay]
next_hop = "{next_hop}"
retry_initial = "1s"
retry_max = "2s"
connect_timeout = "2s"
[recipients]
domains = ["example.com", "catchall.example.net"]
table = "recipients"
[spool]
dir = "spool"
[spam]
enabled = false
[metrics]
listen = "127.0.0.1:0"
"#
    )
}

/// Sends DSNs to outside senders to smtp://127.0.0.1:`port` (instead of
/// the MX of the sender's domain): a `TestRelay::start_with` tweak.
pub fn set_bounce_relay(c: &mut Config, port: u16) {
    let mut hop = c.relay.default_hop();
    hop.next_hop = sluice::config::NextHop::Smtp {
        host: "127.0.0.1".into(),
        port,
    };
    hop.forward_client = sluice::config::ForwardClient::None;
    c.relay.bounce_next_hop = Some(hop);
}

/// Waits for the first event that `pick` accepts (panics after `TIMEOUT`).
pub async fn wait_event<T>(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<sluice::events::Event>>,
    mut pick: impl FnMut(&sluice::events::Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) => {
                if let Some(v) = pick(&e) {
                    return v;
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event bus: {e}"),
            Err(_) => panic!("no such event within {TIMEOUT:?}"),
        }
    }
}

/// The next `DeliveryAttempt` event for `rcpt`: (outcome, attempt number).
pub async fn attempt_of(
    events: &mut tokio::sync::broadcast::Receiver<Arc<sluice::events::Event>>,
    rcpt: &str,
) -> (sluice::events::RcptOutcome, u32) {
    wait_event(events, |e| match e {
        sluice::events::Event::DeliveryAttempt {
            rcpt: r,
            outcome,
            attempt,
            ..
        } if r == rcpt => Some((outcome.clone(), *attempt)),
        _ => None,
    })
    .await
}

/// Stops `relay` gracefully (in-flight attempts finish, mail accepted
/// before the stop gets its first attempt, marks are flushed) and returns
/// the ids of the messages its spool still owes a delivery. After this,
/// nothing more can reach a next hop from it: an empty list means every
/// message was settled (delivered, bounced or expired) and no retry is due.
pub async fn stop_and_pending(relay: TestRelay) -> Vec<String> {
    let dir = relay.stop().await;
    tokio::task::spawn_blocking(move || {
        let r = sluice::spool::fs::FsSpool::open(&dir.path().join("spool"), false, 64 << 20).expect("spool reopens");
        let ids = r.pending.iter().map(|s| s.envelope.id.clone()).collect();
        sluice::spool::Spool::close(&*r.spool);
        ids
    })
    .await
    .unwrap()
}

/// How many events named `name` (`Event::name`) were emitted on `bus` so
/// far; counted synchronously on emit, so none is missed (and the count
/// stays readable after the relay stopped: clone the bus first).
pub fn event_count(bus: &sluice::events::EventBus, name: &str) -> u64 {
    bus.metrics().events.with_label_values(&[name]).get()
}

/// A sluice running in this process.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    running: Option<Running>,
}

impl TestRelay {
    /// Starts with the base config towards `next_hop`.
    pub async fn start(next_hop: &str) -> TestRelay {
        Self::start_with(next_hop, |_| {}).await
    }

    /// Starts with the base config, adjusted by `tweak` before start.
    pub async fn start_with(next_hop: &str, tweak: impl FnOnce(&mut Config)) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
        Self::start_in(dir, &base_toml(next_hop), tweak).await
    }

    /// Starts from `toml` in an existing directory (spool survives restarts).
    pub async fn start_in(dir: tempfile::TempDir, toml: &str, tweak: impl FnOnce(&mut Config)) -> TestRelay {
        let mut cfg = Config::from_toml(toml, dir.path()).expect("test config");
        tweak(&mut cfg);
        let running = sluice::app::start(cfg).await.expect("sluice starts");
        TestRelay {
            addr: running.local_addrs[0],
            dir,
            running: Some(running),
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Connects and reads the greeting.
    pub async fn client(&self) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.expect("220 mx.test.example").await;
        c
    }

    /// Graceful shutdown; returns the temp dir (with the spool) for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir
    }
}

/// An SMTP client that reads like a transcript.
pub struct Client {
    io: BufReader<TcpStream>,
    pub last: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        Client {
            io: BufReader::new(s),
            last: String::new(),
        }
    }

    pub async fn connect_from(local: &str, addr: SocketAddr) -> Client {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let s = sock.connect(addr).await.expect("connect");
        Client {
            io: BufReader::new(s),
            last: String::new(),
        }
    }

    /// Sends one command line (CRLF added).
    pub async fn send(&mut self, line: &str) -> &mut Self {
        let mut b = line.as_bytes().to_vec();
        b.extend_from_slice(b"\r\n");
        self.io.get_mut().write_all(&b).await.expect("write");
        self
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self
    }

    /// Reads one (multi-line) reply; returns all its lines joined by '\n'.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, self.io.read_line(&mut line))
                .await
                .expect("reply timeout")
                .expect("read");
            assert!(n > 0, "connection closed while waiting for a reply; so far: {all:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            all.push_str(line.trim_end());
            if line.as_bytes().get(3) == Some(&b'-') {
                all.push('\n');
                continue;
            }
            self.last = all.clone();
            return all;
        }
    }

    /// Reads a reply and asserts its last line starts with `prefix`.
    pub async fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply().await;
        let last = r.rsplit('\n').next().unwrap_or("");
        assert!(last.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    /// `send` then `expect`.
    pub async fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.send(line).await;
        self.expect(prefix).await
    }

    /// EHLO and the standard envelope up to (not including) DATA.
    pub async fn envelope(&mut self, from: &str, rcpts: &[&str]) {
        self.cmd("EHLO client.example", "250").await;
        self.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
        for r in rcpts {
            self.cmd(&format!("RCPT TO:<{r}>"), "250").await;
        }
    }

    /// DATA with `body` (CRLF text, dot-stuffed here); returns the final reply.
    pub async fn data(&mut self, body: &[u8]) -> String {
        self.cmd("DATA", "354").await;
        self.send_raw(&dot_stuff(body)).await;
        self.reply().await
    }

    /// Asserts the server closes the connection (EOF) within the timeout.
    pub async fn expect_closed(&mut self) {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(TIMEOUT, self.io.read_to_end(&mut buf))
            .await
            .expect("server did not close")
            .unwrap_or(0);
        assert_eq!(
            n,
            0,
            "unexpected data before close: {:?}",
            String::from_utf8_lossy(&buf)
        );
    }
}

/// Dot-stuffs a CRLF body and appends the end-of-data marker.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut start = true;
    for &b in body {
        if start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        start = b == b'\n';
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// LF → CRLF (CRLF stays, bare CR stays bare).
pub fn to_crlf(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 20);
    for (i, &b) in msg.iter().enumerate() {
        if b == b'\n' && (i == 0 || msg[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Removes leading trace headers (`Received:`, `Return-Path:`,
/// `Delivered-To:` with their continuation lines) from a message.
pub fn strip_trace(msg: &[u8]) -> &[u8] {
    let mut pos = 0;
    loop {
        let rest = &msg[pos..];
        let is_trace = ["received:", "return-path:", "delivered-to:"]
            .iter()
            .any(|h| rest.len() >= h.len() && rest[..h.len()].eq_ignore_ascii_case(h.as_bytes()));
        if !is_trace {
            return rest;
        }
        // Skip this field and its folded continuation lines.
        let mut p = pos;
        loop {
            match rest_find_newline(msg, p) {
                Some(nl) => {
                    p = nl + 1;
                    if p < msg.len() && (msg[p] == b' ' || msg[p] == b'\t') {
                        continue;
                    }
                    break;
                }
                None => return &msg[msg.len()..],
            }
        }
        pos = p;
    }
}

/// Removes the trace fields that the hops in front of the stored copy added:
/// any leading `Return-Path:`/`Delivered-To:` fields, then exactly
/// `received` `Received:` fields (one per hop, ours included). Panics if
/// those are not there, so a hop that added nothing is noticed.
pub fn strip_hops(msg: &[u8], received: usize) -> &[u8] {
    let mut rest = msg;
    let mut seen = 0;
    loop {
        let is = |h: &str| rest.len() >= h.len() && rest[..h.len()].eq_ignore_ascii_case(h.as_bytes());
        if seen == 0 && (is("return-path:") || is("delivered-to:")) {
            rest = skip_field(rest);
        } else if seen < received && is("received:") {
            rest = skip_field(rest);
            seen += 1;
        } else {
            break;
        }
    }
    assert_eq!(seen, received, "expected {received} Received fields added by the hops");
    rest
}

/// Skips one header field and its folded continuation lines.
fn skip_field(msg: &[u8]) -> &[u8] {
    let mut p = 0;
    while let Some(nl) = rest_find_newline(msg, p) {
        p = nl + 1;
        if p < msg.len() && (msg[p] == b' ' || msg[p] == b'\t') {
            continue;
        }
        return &msg[p..];
    }
    &msg[msg.len()..]
}

/// What the relay receives for `msg` over SMTP: a message always ends in CRLF.
pub fn as_transmitted(msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    if !m.is_empty() && !m.ends_with(b"\r\n") {
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn rest_find_newline(msg: &[u8], from: usize) -> Option<usize> {
    msg[from..].iter().position(|&b| b == b'\n').map(|i| from + i)
}

/// Corpus file for relaying: drop an mbox "From " first line, then CRLF.
pub fn corpus_message(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    let raw = if raw.starts_with(b"From ") {
        match raw.iter().position(|&b| b == b'\n') {
            Some(i) => raw[i + 1..].to_vec(),
            None => Vec::new(),
        }
    } else {
        raw
    };
    to_crlf(&raw)
}

/// The shared test corpora: `$SLUICE_CORPORA`, else `../shared/corpora`
/// beside the checkout, else `/work/shared/corpora`.
pub fn corpora() -> PathBuf {
    let candidates = [
        std::env::var_os("SLUICE_CORPORA").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora")),
        Some(PathBuf::from("/work/shared/corpora")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("README.md").is_file())
        .expect("test corpora not found: set SLUICE_CORPORA")
}

// === recording sink ===

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// Body after dot-unstuffing, exactly as sent by sluice.
    pub data: Vec<u8>,
}

/// How the sink answers a RCPT: `None` accepts.
pub type RcptPolicy = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

#[derive(Default)]
struct SinkState {
    messages: Vec<Received>,
    sessions: usize,
    /// When each connection was accepted, in order.
    accepted_at: Vec<std::time::Instant>,
}

/// A minimal SMTP/LMTP server that records what it receives.
pub struct Sink {
    pub port: u16,
    state: Arc<Mutex<SinkState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        Self::start_with(false, Arc::new(|_| None)).await
    }

    /// `lmtp`: answer one reply per recipient after DATA.
    pub async fn start_with(lmtp: bool, policy: RcptPolicy) -> Sink {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(l, lmtp, policy)
    }

    pub fn start_on(l: TcpListener, lmtp: bool, policy: RcptPolicy) -> Sink {
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(SinkState::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                {
                    let mut st = st.lock().unwrap();
                    st.sessions += 1;
                    st.accepted_at.push(std::time::Instant::now());
                }
                let (st, policy) = (st.clone(), policy.clone());
                tokio::spawn(async move {
                    let _ = sink_session(s, lmtp, policy, st).await;
                });
            }
        });
        Sink { port, state, task }
    }

    pub fn next_hop(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn sessions(&self) -> usize {
        self.state.lock().unwrap().sessions
    }

    /// When each connection to the sink was accepted, in order.
    pub fn session_times(&self) -> Vec<std::time::Instant> {
        self.state.lock().unwrap().accepted_at.clone()
    }

    /// Waits until at least `n` messages arrived; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sink got {} of {n} messages",
                m.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `<addr> PARAMS` → `addr`.
fn path_arg(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_string()
}

async fn sink_session(s: TcpStream, lmtp: bool, policy: RcptPolicy, st: Arc<Mutex<SinkState>>) -> std::io::Result<()> {
    let mut io = BufReader::new(s);
    io.get_mut().write_all(b"220 sink ESMTP\r\n").await?;
    let (mut from, mut rcpts) = (String::new(), Vec::<String>::new());
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let up = line.to_ascii_uppercase();
        let reply: String = if up.starts_with("EHLO") || up.starts_with("LHLO") {
            "250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".into()
        } else if up.starts_with("MAIL FROM:") {
            from = path_arg(&line[10..]);
            rcpts.clear();
            "250 ok\r\n".into()
        } else if up.starts_with("RCPT TO:") {
            let r = path_arg(&line[8..]);
            match policy(&r) {
                Some(reply) => format!("{reply}\r\n"),
                None => {
                    rcpts.push(r);
                    "250 ok\r\n".into()
                }
            }
        } else if up.starts_with("DATA") {
            if rcpts.is_empty() {
                "554 no valid recipients\r\n".into()
            } else {
                io.get_mut().write_all(b"354 go\r\n").await?;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if io.read_until(b'\n', &mut l).await? == 0 {
                        return Ok(());
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                    data.extend_from_slice(l);
                }
                let n = rcpts.len();
                st.lock().unwrap().messages.push(Received {
                    mail_from: from.clone(),
                    rcpts: rcpts.clone(),
                    data,
                });
                if lmtp {
                    "250 2.0.0 ok\r\n".repeat(n)
                } else {
                    "250 2.0.0 queued\r\n".into()
                }
            }
        } else if up.starts_with("RSET") || up.starts_with("NOOP") {
            "250 ok\r\n".into()
        } else if up.starts_with("QUIT") {
            io.get_mut().write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "502 unknown\r\n".into()
        };
        io.get_mut().write_all(reply.as_bytes()).await?;
    }
}

/// A 4 KiB-ish plain test message with a marker.
pub fn test_message(marker: &str) -> Vec<u8> {
    let mut m = format!("From: a@client.example\r\nTo: user@example.com\r\nSubject: {marker}\r\nMessage-ID: <{marker}@client.example>\r\n\r\n")
        .into_bytes();
    m.extend_from_slice(b".leading dot line\r\n");
    for i in 0..40 {
        m.extend_from_slice(
            format!("line {i} of {marker} ................................................................\r\n")
                .as_bytes(),
        );
    }
    m
}

/// GET `path` from the status listener: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics listener");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("HTTP answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
