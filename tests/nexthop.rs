//! Next-hop client conformance: `NextHopTransport` against a scripted SMTP /
//! LMTP server. Each test reads like the transcript the server sees; the
//! server records, per connection, every command line received in command
//! mode, every body (dot-unstuffed), whether the client closed the
//! connection, and every pipelining violation (bytes of the next command
//! sent before the previous reply was written where RFC 2920 forbids it).
//!
//! Strict readings chosen where a behaviour could be argued either way:
//! - A transaction in which no recipient was accepted must never produce a
//!   body or a lone `.`: if the server answers 354 anyway, the client closes
//!   the connection without sending anything more (anything sent after 354
//!   would be message content, so not even QUIT).
//! - A reply the client did not expect (503 bad sequence, 354 with nothing
//!   to send, 421) means the connection is confused: every recipient without
//!   a final answer is Temporary, never Permanent or Delivered.
//! - After a transaction that did not end with an end-of-data reply (all
//!   RCPTs refused, DATA refused) the client sends RSET before the next MAIL.
//! - A connection that dropped after the final `.` with no reply means "not
//!   known to be delivered": Temporary, and the body is not re-sent within
//!   the same attempt (a silent re-send could report Delivered for mail the
//!   server may already hold).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice::config::{Config, Relay};
use sluice::delivery::client::RcptStatus;
use sluice::delivery::{NextHopTransport, Transport};
use sluice::mail::envelope::Envelope;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::util::{TABLE, TIMEOUT, test_message};

// === the scripted next hop ===

/// How the server presents itself and writes its replies.
#[derive(Debug, Clone, Copy)]
struct Opts {
    /// Advertise PIPELINING in the EHLO/LHLO reply.
    pipelining: bool,
    /// Speak LMTP: expect LHLO, answer one reply per recipient after DATA.
    lmtp: bool,
    /// Write every reply in two halves, each after half of this delay.
    delay: Option<Duration>,
    /// Turn every single-line reply into a two-line one.
    multiline: bool,
}

const SMTP: Opts = Opts {
    pipelining: true,
    lmtp: false,
    delay: None,
    multiline: false,
};
const SMTP_NO_PIPELINING: Opts = Opts {
    pipelining: false,
    ..SMTP
};
const LMTP: Opts = Opts { lmtp: true, ..SMTP };

/// The pseudo-command for the end of data (after the `.` line).
const END: &str = "<end of data>";

/// One command as the script sees it. `verb` is uppercased; the end of
/// data is the pseudo-command [`END`]. `arg` is the path of MAIL/RCPT.
struct Cmd {
    verb: String,
    arg: String,
}

/// The server's view of the connection when the command arrived.
#[derive(Debug, Default)]
struct Conn {
    /// Connection number, from 0 in accept order.
    n: usize,
    /// MAIL commands received on this connection so far (this one included).
    txn: usize,
    /// A MAIL was accepted and the transaction is open.
    mail: bool,
    /// Recipients accepted in the open transaction.
    rcpts: Vec<String>,
}

impl Conn {
    /// The first transaction on the first connection.
    fn first(&self) -> bool {
        self.n == 0 && self.txn == 1
    }
}

enum Act {
    /// Reply (lines separated by CRLF; several replies for LMTP end of data).
    Reply(String),
    /// Close the connection now without answering.
    Close,
    /// Never answer again; read until the client closes.
    Hang,
}

fn reply(s: &str) -> Act {
    Act::Reply(s.to_string())
}

/// Overrides for some commands; `None` means the default behaviour.
type Script = Arc<dyn Fn(&Cmd, &Conn) -> Option<Act> + Send + Sync>;

#[derive(Debug, Clone)]
struct Body {
    /// Recipients accepted by the server when the body arrived.
    rcpts: Vec<String>,
    /// Dot-unstuffed content, without the final `.` line.
    data: Vec<u8>,
    /// Ended with `.`; false: the connection closed mid-body.
    complete: bool,
}

#[derive(Debug, Clone, Default)]
struct ConnLog {
    cmds: Vec<String>,
    bodies: Vec<Body>,
    violations: Vec<String>,
    /// The client closed the connection (EOF seen by the server).
    client_closed: bool,
}

impl ConnLog {
    /// Command verbs, without the session framing (EHLO/LHLO/QUIT).
    fn verbs(&self) -> Vec<String> {
        self.cmds
            .iter()
            .map(|c| c.split(' ').next().unwrap_or("").to_ascii_uppercase())
            .filter(|v| !matches!(v.as_str(), "EHLO" | "LHLO" | "QUIT"))
            .collect()
    }
}

type Log = Arc<Mutex<Vec<ConnLog>>>;

struct Hop {
    port: u16,
    opts: Opts,
    log: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hop {
    async fn start(opts: Opts, script: impl Fn(&Cmd, &Conn) -> Option<Act> + Send + Sync + 'static) -> Hop {
        Hop::start_on(0, opts, script).await
    }

    /// On loopback port `port` (0: any).
    async fn start_on(
        port: u16,
        opts: Opts,
        script: impl Fn(&Cmd, &Conn) -> Option<Act> + Send + Sync + 'static,
    ) -> Hop {
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let log: Log = Arc::default();
        let script: Script = Arc::new(script);
        let lg = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let n = {
                    let mut lg = lg.lock().unwrap();
                    lg.push(ConnLog::default());
                    lg.len() - 1
                };
                let (lg, script) = (lg.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = session(s, n, opts, script, lg).await;
                });
            }
        });
        Hop { port, opts, log, task }
    }

    fn next_hop(&self) -> String {
        let scheme = if self.opts.lmtp { "lmtp" } else { "smtp" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn conns(&self) -> Vec<ConnLog> {
        self.log.lock().unwrap().clone()
    }

    fn conn(&self, n: usize) -> ConnLog {
        self.conns()
            .get(n)
            .cloned()
            .unwrap_or_else(|| panic!("no connection {n}"))
    }

    /// Every complete body, over all connections, in order.
    fn bodies(&self) -> Vec<Body> {
        self.conns()
            .into_iter()
            .flat_map(|c| c.bodies)
            .filter(|b| b.complete)
            .collect()
    }

    /// Waits until the client closed connection `n`.
    async fn wait_client_closed(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.conn(n).client_closed {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the client kept connection {n} open: {:?}",
                self.conn(n)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_no_violations(&self) {
        for (n, c) in self.conns().iter().enumerate() {
            assert!(
                c.violations.is_empty(),
                "connection {n}: the client sent more before the reply to {:?}",
                c.violations
            );
        }
    }
}

fn record(log: &Log, n: usize, f: impl FnOnce(&mut ConnLog)) {
    f(&mut log.lock().unwrap()[n]);
}

/// True if the client already sent more bytes (checked for a moment).
async fn sent_early(io: &mut BufReader<TcpStream>) -> bool {
    if !io.buffer().is_empty() {
        return true;
    }
    matches!(
        tokio::time::timeout(Duration::from_millis(25), io.fill_buf()).await,
        Ok(Ok(b)) if !b.is_empty()
    )
}

async fn write_reply(io: &mut BufReader<TcpStream>, opts: Opts, text: &str) -> std::io::Result<()> {
    let mut lines = Vec::new();
    for l in text.split("\r\n") {
        if opts.multiline && l.as_bytes().get(3) == Some(&b' ') {
            lines.push(format!("{}-{}\r\n", &l[..3], &l[4..]));
        }
        lines.push(format!("{l}\r\n"));
    }
    let w = io.get_mut();
    match opts.delay {
        Some(d) => {
            // Split the reply over two writes so the client sees it in pieces.
            tokio::time::sleep(d / 2).await;
            w.write_all(lines[0].as_bytes()).await?;
            w.flush().await?;
            tokio::time::sleep(d / 2).await;
            w.write_all(lines[1..].concat().as_bytes()).await?;
        }
        None => w.write_all(lines.concat().as_bytes()).await?,
    }
    w.flush().await
}

fn ehlo_reply(opts: Opts) -> String {
    let mut kw = vec!["hop.test.example"];
    if opts.pipelining {
        kw.push("PIPELINING");
    }
    kw.extend(["8BITMIME", "ENHANCEDSTATUSCODES"]);
    let last = kw.len() - 1;
    kw.iter()
        .enumerate()
        .map(|(i, k)| format!("250{}{k}", if i == last { ' ' } else { '-' }))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A well-behaved server that tracks the transaction like Postfix does.
fn default_act(cmd: &Cmd, c: &Conn, opts: Opts) -> String {
    let s = match (cmd.verb.as_str(), opts.lmtp) {
        ("EHLO", false) | ("LHLO", true) => return ehlo_reply(opts),
        ("EHLO", true) => "500 5.5.1 Error: this is LMTP, say LHLO",
        ("LHLO", false) => "500 5.5.1 Error: this is SMTP, say EHLO",
        ("MAIL", _) if c.mail => "503 5.5.1 Error: nested MAIL command",
        ("MAIL", _) => "250 2.1.0 Ok",
        ("RCPT", _) if !c.mail => "503 5.5.1 Error: need MAIL command",
        ("RCPT", _) => "250 2.1.5 Ok",
        ("DATA", _) if !c.mail => "503 5.5.1 Error: need RCPT command",
        ("DATA", _) if c.rcpts.is_empty() => "554 5.5.1 Error: no valid recipients",
        ("DATA", _) => "354 End data with <CR><LF>.<CR><LF>",
        (END, true) => {
            return c
                .rcpts
                .iter()
                .map(|r| format!("250 2.0.0 <{r}> delivered"))
                .collect::<Vec<_>>()
                .join("\r\n");
        }
        (END, false) if c.rcpts.is_empty() => "554 5.5.1 Error: no valid recipients",
        (END, false) => "250 2.0.0 Ok: queued",
        ("RSET" | "NOOP", _) => "250 2.0.0 Ok",
        ("QUIT", _) => "221 2.0.0 Bye",
        _ => "502 5.5.2 Error: command not recognized",
    };
    s.to_string()
}

/// The reply to `cmd`, or `None` when the connection is to end here.
async fn answer(
    io: &mut BufReader<TcpStream>,
    cmd: &Cmd,
    c: &Conn,
    opts: Opts,
    script: &Script,
    log: &Log,
) -> std::io::Result<Option<String>> {
    match script(cmd, c) {
        None => Ok(Some(default_act(cmd, c, opts))),
        Some(Act::Reply(r)) => Ok(Some(r)),
        Some(Act::Close) => Ok(None),
        Some(Act::Hang) => {
            let mut line = String::new();
            while io.read_line(&mut line).await? > 0 {
                let l = line.trim_end().to_string();
                record(log, c.n, |g| g.cmds.push(l));
                line.clear();
            }
            record(log, c.n, |g| g.client_closed = true);
            Ok(None)
        }
    }
}

/// Reads a body up to the `.` line, dot-unstuffed.
async fn read_body(io: &mut BufReader<TcpStream>) -> std::io::Result<(Vec<u8>, bool)> {
    let mut data = Vec::new();
    loop {
        let mut l = Vec::new();
        if io.read_until(b'\n', &mut l).await? == 0 {
            return Ok((data, false));
        }
        if l == b".\r\n" {
            return Ok((data, true));
        }
        data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
    }
}

async fn session(s: TcpStream, n: usize, opts: Opts, script: Script, log: Log) -> std::io::Result<()> {
    let mut io = BufReader::new(s);
    let mut c = Conn { n, ..Conn::default() };
    if sent_early(&mut io).await {
        record(&log, n, |g| g.violations.push("(greeting)".into()));
    }
    let greeting = if opts.lmtp {
        "220 hop.test.example LMTP"
    } else {
        "220 hop.test.example ESMTP"
    };
    write_reply(&mut io, opts, greeting).await?;
    loop {
        let mut raw = Vec::new();
        if io.read_until(b'\n', &mut raw).await? == 0 {
            record(&log, n, |g| g.client_closed = true);
            return Ok(());
        }
        let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
        record(&log, n, |g| g.cmds.push(line.clone()));
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        // RFC 2920 §3.1: these end a group even with PIPELINING; without
        // it, the client waits for every reply.
        let last_in_group = matches!(verb.as_str(), "EHLO" | "LHLO" | "HELO" | "DATA" | "QUIT" | "NOOP");
        if (!opts.pipelining || last_in_group) && sent_early(&mut io).await {
            record(&log, n, |g| g.violations.push(line.clone()));
        }
        let arg = line
            .split_once(':')
            .map(|(_, a)| a.trim_start_matches('<').split('>').next().unwrap_or("").to_string())
            .unwrap_or_default();
        if verb == "MAIL" {
            c.txn += 1;
        }
        let cmd = Cmd { verb, arg };
        let Some(text) = answer(&mut io, &cmd, &c, opts, &script, &log).await? else {
            return Ok(());
        };
        write_reply(&mut io, opts, &text).await?;
        let code = text.rsplit("\r\n").next().unwrap_or("").get(..3).unwrap_or("");
        let ok = code.starts_with('2');
        match cmd.verb.as_str() {
            "EHLO" | "LHLO" | "HELO" | "RSET" if ok => {
                c.mail = false;
                c.rcpts.clear();
            }
            "MAIL" if ok => {
                c.mail = true;
                c.rcpts.clear();
            }
            "RCPT" if ok => c.rcpts.push(cmd.arg),
            "QUIT" => return Ok(()),
            "DATA" if code == "354" => {
                let (data, complete) = read_body(&mut io).await?;
                if complete || !data.is_empty() {
                    let rcpts = c.rcpts.clone();
                    record(&log, n, |g| g.bodies.push(Body { rcpts, data, complete }));
                }
                if !complete {
                    record(&log, n, |g| g.client_closed = true);
                    return Ok(());
                }
                let dot = Cmd {
                    verb: END.into(),
                    arg: String::new(),
                };
                let Some(text) = answer(&mut io, &dot, &c, opts, &script, &log).await? else {
                    return Ok(());
                };
                write_reply(&mut io, opts, &text).await?;
                c.mail = false;
                c.rcpts.clear();
            }
            _ => {}
        }
        if code == "421" {
            // Shutting down: stop writing, let the client see the reply.
            io.get_mut().shutdown().await?;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), io.read_to_end(&mut sink)).await;
            return Ok(());
        }
    }
}

// === the client side ===

/// The relay section of a config towards `next_hop`.
fn relay(next_hop: &str, command_timeout: &str) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
hostname = "mx.test.example"
[relay]
next_hop = "{next_hop}"
connect_timeout = "2s"
command_timeout = "{command_timeout}"
data_timeout = "3s"
[recipients]
domains = ["example.com"]
table = "recipients"
[spool]
dir = "spool"
[spam]
enabled = false
"#
    );
    Config::from_toml(&toml, dir.path()).expect("test config").relay
}

fn transport(hop: &Hop) -> NextHopTransport {
    NextHopTransport::new(relay(&hop.next_hop(), "3s"))
}

fn mailbox(addr: &str) -> serde_json::Value {
    let (local, domain) = addr.split_once('@').unwrap();
    json!({"local": local, "domain": domain})
}

/// An envelope from a@client.example to `rcpts` (built from JSON, as the
/// spool stores it, so new fields with defaults do not break it).
fn env(rcpts: &[&str]) -> Envelope {
    let rcpts: Vec<_> = rcpts.iter().map(|r| json!({"addr": mailbox(r)})).collect();
    serde_json::from_value(json!({
        "id": "T1",
        "received_at": 0,
        "client_ip": "192.0.2.7",
        "helo": "client.example",
        "mail_from": mailbox("a@client.example"),
        "rcpts": rcpts,
    }))
    .expect("envelope from JSON")
}

/// One attempt for every recipient of `e`.
async fn deliver(t: &NextHopTransport, e: &Envelope, body: &[u8]) -> Vec<RcptStatus> {
    let idx: Vec<usize> = (0..e.rcpts.len()).collect();
    let st = tokio::time::timeout(TIMEOUT, t.deliver(e, &idx, body))
        .await
        .expect("deliver hung");
    assert_eq!(st.len(), idx.len(), "one status per recipient: {st:?}");
    st
}

/// `Delivered 250`, `Temporary 451`, `Permanent 550`, ...
fn summary(st: &[RcptStatus]) -> Vec<String> {
    st.iter()
        .map(|s| match s {
            RcptStatus::Delivered(r) => format!("Delivered {}", r.code),
            RcptStatus::Temporary(r) => format!("Temporary {}", r.code),
            RcptStatus::Permanent(r) => format!("Permanent {}", r.code),
        })
        .collect()
}

/// Only the kind: for statuses whose code the client may make up locally.
fn kinds(st: &[RcptStatus]) -> Vec<&'static str> {
    st.iter()
        .map(|s| match s {
            RcptStatus::Delivered(_) => "Delivered",
            RcptStatus::Temporary(_) => "Temporary",
            RcptStatus::Permanent(_) => "Permanent",
        })
        .collect()
}

/// Asserts `hop` received `msg` exactly once, whole, for `rcpts`.
fn assert_arrived_once(hop: &Hop, msg: &[u8], rcpts: &[&str]) {
    let got: Vec<Body> = hop.bodies().into_iter().filter(|b| b.data == msg).collect();
    assert_eq!(
        got.len(),
        1,
        "message arrived {} times; bodies: {:?}",
        got.len(),
        hop.conns()
    );
    assert_eq!(got[0].rcpts, rcpts);
}

fn refuse_all_but_user(c: &Cmd) -> Option<Act> {
    (c.verb == "RCPT" && c.arg != "user@example.com").then(|| reply("550 5.1.1 no such user"))
}

// === the matrix ===

/// Both RCPTs refused; then a good message on the same transport.
async fn all_refused_then_good(opts: Opts) {
    let hop = Hop::start(opts, |c, _| refuse_all_but_user(c)).await;
    let t = transport(&hop);
    // C: MAIL, RCPT known, RCPT other, [DATA]   S: 250, 550, 550, [554]
    let st = deliver(
        &t,
        &env(&["known@example.com", "other@example.com"]),
        &test_message("refused"),
    )
    .await;
    assert_eq!(summary(&st), ["Permanent 550", "Permanent 550"]);
    // C: RSET, MAIL, RCPT user, DATA, body   S: 250, 250, 250, 354, 250
    let msg = test_message("good");
    let st = deliver(&t, &env(&["user@example.com"]), &msg).await;
    assert_eq!(summary(&st), ["Delivered 250"]);
    assert_eq!(
        hop.bodies().len(),
        1,
        "no body, empty or not, for the refused transaction"
    );
    assert_arrived_once(&hop, &msg, &["user@example.com"]);
    assert_eq!(hop.conns().len(), 1, "the connection is reused after RSET");
    // With PIPELINING the client sends DATA in the group and sees it refused
    // (554 no valid recipients); without, it knows there is no recipient and
    // resets instead of sending DATA.
    let expect: &[&str] = if opts.pipelining {
        &["MAIL", "RCPT", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA"]
    } else {
        &["MAIL", "RCPT", "RCPT", "RSET", "MAIL", "RCPT", "DATA"]
    };
    assert_eq!(hop.conn(0).verbs(), expect, "transcript: {:?}", hop.conn(0).cmds);
    hop.assert_no_violations();
}

#[tokio::test]
async fn all_rcpts_refused_then_good_message_on_same_connection() {
    all_refused_then_good(SMTP).await;
}

#[tokio::test]
async fn all_rcpts_refused_and_server_says_354() {
    // RFC 2920 lets a server answer 354 to DATA with no valid recipient.
    let hop = Hop::start(SMTP, |c, conn| {
        refuse_all_but_user(c).or_else(|| (c.verb == "DATA" && conn.rcpts.is_empty()).then(|| reply("354 go ahead")))
    })
    .await;
    let t = transport(&hop);
    // C: MAIL, RCPT known, RCPT other, DATA   S: 250, 550, 550, 354
    let st = deliver(
        &t,
        &env(&["known@example.com", "other@example.com"]),
        &test_message("refused"),
    )
    .await;
    assert_eq!(summary(&st), ["Permanent 550", "Permanent 550"]);
    // Nothing is sent after the 354: no body, no `.` (an empty message), not
    // even QUIT (it would be message content); the client just closes.
    hop.wait_client_closed(0).await;
    let c0 = hop.conn(0);
    assert!(
        c0.bodies.is_empty(),
        "bytes sent after 354 with no recipient: {:?}",
        c0.bodies
    );
    assert_eq!(c0.verbs(), ["MAIL", "RCPT", "RCPT", "DATA"]);
    let msg = test_message("after354");
    let st = deliver(&t, &env(&["user@example.com"]), &msg).await;
    assert_eq!(summary(&st), ["Delivered 250"]);
    assert_eq!(hop.conns().len(), 2, "the next message goes over a new connection");
    assert_eq!(hop.bodies().len(), 1);
    assert_arrived_once(&hop, &msg, &["user@example.com"]);
    hop.assert_no_violations();
}

/// RCPT user → 250, known → 550, other → 451; end of data 250.
async fn mixed_rcpts(opts: Opts) {
    let hop = Hop::start(opts, |c, _| match (c.verb.as_str(), c.arg.as_str()) {
        ("RCPT", "known@example.com") => Some(reply("550 5.1.1 no such user")),
        ("RCPT", "other@example.com") => Some(reply("451 4.2.0 mailbox busy")),
        _ => None,
    })
    .await;
    let t = transport(&hop);
    let msg = test_message("mixed");
    let st = deliver(
        &t,
        &env(&["user@example.com", "known@example.com", "other@example.com"]),
        &msg,
    )
    .await;
    assert_eq!(summary(&st), ["Delivered 250", "Permanent 550", "Temporary 451"]);
    assert_eq!(hop.bodies().len(), 1);
    assert_arrived_once(&hop, &msg, &["user@example.com"]);
    assert_eq!(hop.conn(0).verbs(), ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]);
    hop.assert_no_violations();
}

#[tokio::test]
async fn mixed_rcpt_results() {
    mixed_rcpts(SMTP).await;
}

/// DATA refused with `refusal` after accepted RCPTs; then a good message.
async fn data_refused(refusal: &'static str, expect: &str) {
    let hop = Hop::start(SMTP, move |c, conn| {
        (c.verb == "DATA" && conn.first()).then(|| reply(refusal))
    })
    .await;
    let t = transport(&hop);
    // C: MAIL, RCPT user, RCPT known, DATA   S: 250, 250, 250, <refusal>
    let st = deliver(
        &t,
        &env(&["user@example.com", "known@example.com"]),
        &test_message("refused"),
    )
    .await;
    assert_eq!(summary(&st), [expect, expect]);
    // C: RSET, MAIL, RCPT user, DATA, body   S: 250, 250, 250, 354, 250
    let msg = test_message("next");
    let st = deliver(&t, &env(&["user@example.com"]), &msg).await;
    assert_eq!(summary(&st), ["Delivered 250"]);
    assert_eq!(hop.bodies().len(), 1, "no body for the refused DATA");
    assert_arrived_once(&hop, &msg, &["user@example.com"]);
    assert_eq!(hop.conns().len(), 1, "the connection is reused after RSET");
    assert_eq!(
        hop.conn(0).verbs(),
        ["MAIL", "RCPT", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA"]
    );
    hop.assert_no_violations();
}

#[tokio::test]
async fn data_refused_5xx() {
    data_refused("554 5.7.1 no", "Permanent 554").await;
}

#[tokio::test]
async fn data_refused_4xx() {
    data_refused("451 4.3.0 later", "Temporary 451").await;
}

/// The end-of-data reply refuses the first message; the next one follows
/// on the same connection (the transaction is over: RSET is optional).
async fn end_of_data_refused(refusal: &'static str, expect: &str) {
    let hop = Hop::start(SMTP, move |c, conn| {
        (c.verb == END && conn.first()).then(|| reply(refusal))
    })
    .await;
    let t = transport(&hop);
    let first = test_message("refused-content");
    let st = deliver(&t, &env(&["user@example.com", "known@example.com"]), &first).await;
    assert_eq!(summary(&st), [expect, expect]);
    let msg = test_message("next");
    let st = deliver(&t, &env(&["user@example.com"]), &msg).await;
    assert_eq!(summary(&st), ["Delivered 250"]);
    assert_eq!(
        hop.conns().len(),
        1,
        "the connection is reused after an end-of-data reply"
    );
    assert_arrived_once(&hop, &first, &["user@example.com", "known@example.com"]);
    assert_arrived_once(&hop, &msg, &["user@example.com"]);
    let verbs: Vec<String> = hop.conn(0).verbs().into_iter().filter(|v| v != "RSET").collect();
    assert_eq!(verbs, ["MAIL", "RCPT", "RCPT", "DATA", "MAIL", "RCPT", "DATA"]);
    hop.assert_no_violations();
}

#[tokio::test]
async fn end_of_data_4xx() {
    end_of_data_refused("451 4.3.0 try later", "Temporary 451").await;
}

#[tokio::test]
async fn end_of_data_5xx() {
    end_of_data_refused("554 5.6.0 bad content", "Permanent 554").await;
}

#[tokio::test]
async fn reply_421_mid_transaction() {
    // C: MAIL, RCPT user, RCPT known, DATA   S: 250, 250, 421 (and closes)
    let hop = Hop::start(SMTP, |c, conn| {
        (conn.n == 0 && c.verb == "RCPT" && c.arg == "known@example.com").then(|| reply("421 4.3.2 shutting down"))
    })
    .await;
    let t = transport(&hop);
    let st = deliver(
        &t,
        &env(&["user@example.com", "known@example.com"]),
        &test_message("421"),
    )
    .await;
    // user was accepted but the transaction never completed: no final answer.
    assert_eq!(kinds(&st), ["Temporary", "Temporary"], "{st:?}");
    assert!(hop.bodies().is_empty());
    let msg = test_message("after421");
    let st = deliver(&t, &env(&["user@example.com", "known@example.com"]), &msg).await;
    assert_eq!(summary(&st), ["Delivered 250", "Delivered 250"]);
    assert_eq!(hop.conns().len(), 2, "a new connection after 421");
    assert_arrived_once(&hop, &msg, &["user@example.com", "known@example.com"]);
    hop.assert_no_violations();
}

#[tokio::test]
async fn sequencing_503_is_never_permanent() {
    // A server that lost track of the transaction (as Postfix does after a
    // transaction the client never reset): MAIL → 503, yet the pipelined
    // RCPTs → 250 and DATA → 354. Nothing may be delivered or bounced from
    // such a connection, and no (empty) message may be sent on it.
    let hop = Hop::start(SMTP, |c, conn| {
        if conn.n != 0 {
            return None;
        }
        match c.verb.as_str() {
            "MAIL" => Some(reply("503 5.5.1 Error: nested MAIL command")),
            "RCPT" => Some(reply("250 2.1.5 Ok")),
            "DATA" => Some(reply("354 End data with <CR><LF>.<CR><LF>")),
            _ => None,
        }
    })
    .await;
    let t = transport(&hop);
    let st = deliver(
        &t,
        &env(&["user@example.com", "known@example.com"]),
        &test_message("confused"),
    )
    .await;
    assert_eq!(kinds(&st), ["Temporary", "Temporary"], "{st:?}");
    hop.wait_client_closed(0).await;
    assert!(
        hop.conn(0).bodies.is_empty(),
        "bytes sent after 354: {:?}",
        hop.conn(0).bodies
    );
    let msg = test_message("clean");
    let st = deliver(&t, &env(&["user@example.com", "known@example.com"]), &msg).await;
    assert_eq!(summary(&st), ["Delivered 250", "Delivered 250"]);
    assert_eq!(hop.conns().len(), 2);
    assert_arrived_once(&hop, &msg, &["user@example.com", "known@example.com"]);
    hop.assert_no_violations();
}

#[tokio::test]
async fn connection_drop_after_final_dot() {
    // The server reads the whole body and the `.`, then closes unanswered:
    // on a fresh connection (conn 0, first message) and on a pooled one
    // (conn 1, second message).
    let hop = Hop::start(SMTP, |c, conn| {
        (c.verb == END && (conn.first() || (conn.n == 1 && conn.txn == 2))).then_some(Act::Close)
    })
    .await;
    let t = transport(&hop);
    let rcpts = ["user@example.com", "known@example.com"];
    let lost = test_message("lost-fresh");
    let st = deliver(&t, &env(&rcpts), &lost).await;
    assert_eq!(kinds(&st), ["Temporary", "Temporary"], "{st:?}");
    let good = test_message("good");
    assert_eq!(
        kinds(&deliver(&t, &env(&rcpts), &good).await),
        ["Delivered", "Delivered"]
    );
    assert_eq!(hop.conns().len(), 2);
    let lost2 = test_message("lost-pooled");
    let st = deliver(&t, &env(&rcpts), &lost2).await;
    assert_eq!(kinds(&st), ["Temporary", "Temporary"], "{st:?}");
    // Sent once, not silently re-sent on a new connection in the same attempt.
    assert_arrived_once(&hop, &lost2, &rcpts);
    let last = test_message("last");
    assert_eq!(
        kinds(&deliver(&t, &env(&rcpts), &last).await),
        ["Delivered", "Delivered"]
    );
    assert_eq!(hop.conns().len(), 3);
    assert_arrived_once(&hop, &lost, &rcpts);
    assert_arrived_once(&hop, &good, &rcpts);
    assert_arrived_once(&hop, &last, &rcpts);
    hop.assert_no_violations();
}

#[tokio::test]
async fn multiline_and_slow_replies() {
    // Every reply in two lines (`250-2.1.0 Ok` `250 2.1.0 Ok`), written in
    // two pieces 150 ms apart, 300 ms after the command; command_timeout 3s.
    let opts = Opts {
        delay: Some(Duration::from_millis(300)),
        multiline: true,
        ..SMTP
    };
    let hop = Hop::start(opts, |_, _| None).await;
    let t = transport(&hop);
    let msg = test_message("slow");
    let st = deliver(&t, &env(&["user@example.com", "known@example.com"]), &msg).await;
    assert_eq!(summary(&st), ["Delivered 250", "Delivered 250"]);
    assert_arrived_once(&hop, &msg, &["user@example.com", "known@example.com"]);
    let msg2 = test_message("slow2");
    assert_eq!(
        summary(&deliver(&t, &env(&["user@example.com"]), &msg2).await),
        ["Delivered 250"]
    );
    assert_arrived_once(&hop, &msg2, &["user@example.com"]);
    assert_eq!(hop.conns().len(), 1, "multi-line replies leave nothing unread");
    hop.assert_no_violations();
}

#[tokio::test]
async fn reply_timeout() {
    // RCPT is never answered on the first connection; command_timeout 1s.
    let hop = Hop::start(SMTP, |c, conn| (conn.n == 0 && c.verb == "RCPT").then_some(Act::Hang)).await;
    let t = NextHopTransport::new(relay(&hop.next_hop(), "1s"));
    let started = std::time::Instant::now();
    let st = deliver(&t, &env(&["user@example.com"]), &test_message("timeout")).await;
    assert_eq!(kinds(&st), ["Temporary"], "{st:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // A connection with a reply still outstanding cannot be reused.
    hop.wait_client_closed(0).await;
    let msg = test_message("after-timeout");
    assert_eq!(
        summary(&deliver(&t, &env(&["user@example.com"]), &msg).await),
        ["Delivered 250"]
    );
    assert_eq!(hop.conns().len(), 2);
    assert_arrived_once(&hop, &msg, &["user@example.com"]);
    hop.assert_no_violations();
}

#[tokio::test]
async fn server_without_pipelining_all_refused_then_good() {
    all_refused_then_good(SMTP_NO_PIPELINING).await;
}

#[tokio::test]
async fn server_without_pipelining_mixed() {
    mixed_rcpts(SMTP_NO_PIPELINING).await;
}

#[tokio::test]
async fn lmtp_per_recipient_replies() {
    // C: LHLO, MAIL, RCPT ×3, DATA, body   S: ..., 250 / 452 / 550 after `.`
    let hop = Hop::start(LMTP, |c, conn| {
        (c.verb == END && conn.first()).then(|| reply("250 2.0.0 ok\r\n452 4.2.2 quota\r\n550 5.1.1 gone"))
    })
    .await;
    let t = transport(&hop);
    let msg = test_message("lmtp");
    let rcpts = ["user@example.com", "known@example.com", "other@example.com"];
    let st = deliver(&t, &env(&rcpts), &msg).await;
    assert_eq!(summary(&st), ["Delivered 250", "Temporary 452", "Permanent 550"]);
    assert_arrived_once(&hop, &msg, &rcpts);
    let msg2 = test_message("lmtp2");
    assert_eq!(
        summary(&deliver(&t, &env(&["user@example.com", "known@example.com"]), &msg2).await),
        ["Delivered 250", "Delivered 250"]
    );
    assert_eq!(hop.conns().len(), 1, "all per-recipient replies were read");
    assert_arrived_once(&hop, &msg2, &["user@example.com", "known@example.com"]);
    assert!(hop.conn(0).cmds[0].starts_with("LHLO "), "{:?}", hop.conn(0).cmds);
    hop.assert_no_violations();
}

#[tokio::test]
async fn lmtp_all_refused_then_good() {
    all_refused_then_good(LMTP).await;
}

/// Issue 18: a next hop that was down and is seen up again by a health
/// probe (`/readyz`) tells the queue, and the next attempt connects at once
/// instead of failing fast as "failed recently".
#[tokio::test]
async fn a_probe_that_reaches_a_next_hop_that_was_down_reports_its_recovery() {
    let hop = Hop::start(SMTP, |_, _| None).await;
    let recovered = Arc::new(tokio::sync::Notify::new());
    let t = transport(&hop).with_recovered(recovered.clone());
    let port = hop.port;
    drop(hop);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // C: connect   S: (refused)
    let st = deliver(&t, &env(&["user@example.com"]), &test_message("down")).await;
    assert_eq!(summary(&st), ["Temporary 451"]);
    assert!(t.health(Duration::from_secs(1)).await.is_some(), "still down");
    let hop = Hop::start_on(port, SMTP, |_, _| None).await;
    // C: connect, EHLO, QUIT   S: 220, 250, 221
    assert_eq!(t.health(Duration::from_secs(1)).await, None);
    tokio::time::timeout(Duration::from_secs(1), recovered.notified())
        .await
        .expect("the recovery is reported");
    let st = deliver(&t, &env(&["user@example.com"]), &test_message("back")).await;
    assert_eq!(summary(&st), ["Delivered 250"], "no 'failed recently' hold");
    hop.assert_no_violations();
}
