//! One test per fixed bug, each named by what broke and met the way a
//! client or a next hop met it: through the running relay (or the binary).
//! The `// See:` line names the commit that fixed it. Deeper coverage of
//! the same code lives elsewhere (tests/nexthop.rs for the next-hop client,
//! the unit tests of the DATA receiver and the tokenizer); these stay small
//! so that a failure here says plainly which old bug is back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::events::RcptOutcome;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::util::*;

// === a strict, scripted next hop ===

/// A message the next hop took: connection, sender, recipients, body.
#[derive(Clone)]
struct Taken {
    conn: usize,
    from: String,
    rcpts: Vec<String>,
    data: Vec<u8>,
}

impl std::fmt::Debug for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conn {} from <{}> to {:?}: {} octets",
            self.conn,
            self.from,
            self.rcpts,
            self.data.len()
        )
    }
}

#[derive(Debug, Default)]
struct HopLog {
    /// Per connection, every command line received (without CRLF).
    conns: Vec<Vec<String>>,
    taken: Vec<Taken>,
}

/// The next hop's view when a command arrives.
struct HopState {
    /// Connection number, from 0.
    conn: usize,
    /// MAIL commands accepted on this connection so far.
    txns: usize,
    from: Option<String>,
    rcpts: Vec<String>,
}

/// Overrides the reply to a command line (given its uppercased verb);
/// `None` keeps the default. An overridden command changes no state.
type Script = Arc<dyn Fn(&str, &str, &HopState) -> Option<String> + Send + Sync>;

/// An SMTP next hop as strict as Postfix: a transaction stays open after
/// its DATA is refused, so a MAIL without RSET gets `503 nested MAIL`.
/// With `xclient` it offers XCLIENT and, after one, starts over with a 220.
struct StrictHop {
    port: u16,
    log: Arc<Mutex<HopLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl StrictHop {
    async fn start(xclient: bool, script: Script) -> StrictHop {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(HopLog::default()));
        let lg = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let conn = {
                    let mut lg = lg.lock().unwrap();
                    lg.conns.push(Vec::new());
                    lg.conns.len() - 1
                };
                let (lg, script) = (lg.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = hop_session(s, conn, xclient, script, lg).await;
                });
            }
        });
        StrictHop { port, log, task }
    }

    fn next_hop(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn conns(&self) -> Vec<Vec<String>> {
        self.log.lock().unwrap().conns.clone()
    }

    fn taken(&self) -> Vec<Taken> {
        self.log.lock().unwrap().taken.clone()
    }
}

impl Drop for StrictHop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `FROM:<addr> PARAMS` → `addr`.
fn path_of(line: &str) -> String {
    let rest = line.split_once(':').map_or("", |(_, r)| r);
    rest.trim_start()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_string()
}

async fn hop_session(
    s: TcpStream,
    conn: usize,
    xclient: bool,
    script: Script,
    log: Arc<Mutex<HopLog>>,
) -> std::io::Result<()> {
    let mut io = BufReader::new(s);
    io.get_mut().write_all(b"220 hop.example ESMTP\r\n").await?;
    let mut st = HopState {
        conn,
        txns: 0,
        from: None,
        rcpts: Vec::new(),
    };
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        log.lock().unwrap().conns[conn].push(line.clone());
        let verb = line.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
        let reply = match script(&verb, &line, &st) {
            Some(r) => r,
            None => match verb.as_str() {
                "EHLO" if xclient => {
                    "250-hop.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 XCLIENT NAME ADDR PROTO HELO".into()
                }
                "EHLO" => "250-hop.example\r\n250-PIPELINING\r\n250 8BITMIME".into(),
                "MAIL" if st.from.is_some() => "503 5.5.1 Error: nested MAIL command".into(),
                "MAIL" => {
                    st.from = Some(path_of(&line));
                    st.txns += 1;
                    "250 2.1.0 Ok".into()
                }
                "RCPT" if st.from.is_none() => "503 5.5.1 Error: need MAIL command".into(),
                "RCPT" => {
                    st.rcpts.push(path_of(&line));
                    "250 2.1.5 Ok".into()
                }
                "DATA" if st.from.is_none() => "503 5.5.1 Error: need RCPT command".into(),
                "DATA" if st.rcpts.is_empty() => "554 5.5.1 Error: no valid recipients".into(),
                "DATA" => "354 End data with <CR><LF>.<CR><LF>".into(),
                "RSET" => {
                    (st.from, st.rcpts) = (None, Vec::new());
                    "250 2.0.0 Ok".into()
                }
                "XCLIENT" if xclient => {
                    (st.from, st.rcpts) = (None, Vec::new());
                    "220 hop.example ESMTP".into()
                }
                "NOOP" => "250 2.0.0 Ok".into(),
                "QUIT" => {
                    io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
                    return Ok(());
                }
                _ => "502 5.5.2 Error: command not recognized".into(),
            },
        };
        io.get_mut().write_all(format!("{reply}\r\n").as_bytes()).await?;
        if reply.starts_with("354") {
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if io.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
            }
            log.lock().unwrap().taken.push(Taken {
                conn,
                from: st.from.take().unwrap_or_default(),
                rcpts: std::mem::take(&mut st.rcpts),
                data,
            });
            io.get_mut().write_all(b"250 2.0.0 Ok: queued\r\n").await?;
        }
    }
}

/// Refuses RCPT known@example.com, as a next hop that does not know it.
fn refuse_known(verb: &str, line: &str, _: &HopState) -> Option<String> {
    (verb == "RCPT" && line.contains("<known@example.com>"))
        .then(|| "550 5.1.1 <known@example.com>: Recipient address rejected".to_string())
}

/// Sends one message from `from` to `rcpts`; asserts the 250.
async fn send(c: &mut Client, from: &str, rcpts: &[&str], msg: &[u8]) {
    c.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    for r in rcpts {
        c.cmd(&format!("RCPT TO:<{r}>"), "250").await;
    }
    let r = c.data(msg).await;
    assert!(r.starts_with("250"), "{r}");
}

/// Over one pooled connection to `hop` (which refuses known@example.com):
/// a message to that recipient alone, bounced, then one to
/// user@example.com, delivered by its first attempt. Returns the running
/// relay, the sink its bounces go to, and the second message.
async fn refused_then_accepted(hop: &StrictHop) -> (TestRelay, Sink, Vec<u8>) {
    let bounces = Sink::start().await;
    let port = bounces.port;
    let relay = TestRelay::start_with(&hop.next_hop(), |c| {
        c.relay.concurrency = 1;
        set_bounce_relay(c, port);
    })
    .await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    let first = test_message("first");
    send(&mut c, "sender@client.example", &["known@example.com"], &first).await;
    assert_eq!(
        attempt_of(&mut events, "known@example.com").await,
        (RcptOutcome::Bounced, 1)
    );
    let second = test_message("second");
    send(&mut c, "sender@client.example", &["user@example.com"], &second).await;
    assert_eq!(
        attempt_of(&mut events, "user@example.com").await,
        (RcptOutcome::Delivered, 1),
        "delivered by its first attempt: {:?}",
        hop.conns()
    );
    (relay, bounces, second)
}

// === the bugs ===

/// Issue 15: after a transaction in which the next hop refused every
/// recipient, the client sent no RSET; the next message on that connection
/// got `503 nested MAIL`, and was bounced (or, when the hop answered 354,
/// delivered empty).
#[tokio::test]
async fn a_next_hop_that_refused_every_recipient_got_no_rset_so_the_next_message_met_503_nested_mail() {
    // See: 219378c Next-hop client: RSET after a failed transaction (reuse only on 250)
    let hop = StrictHop::start(false, Arc::new(refuse_known)).await;
    // The second message goes over the same connection and arrives once
    // and whole.
    let (_relay, bounces, second) = refused_then_accepted(&hop).await;
    let conns = hop.conns();
    assert_eq!(conns.len(), 1, "one connection for both messages: {conns:?}");
    let taken = hop.taken();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(
        (taken[0].from.as_str(), &taken[0].rcpts),
        ("sender@client.example", &vec!["user@example.com".to_string()])
    );
    assert_eq!(strip_trace(&taken[0].data), &second[..]);
    let mails: Vec<usize> = (0..conns[0].len())
        .filter(|&i| conns[0][i].starts_with("MAIL"))
        .collect();
    assert!(
        conns[0][mails[0]..mails[1]].iter().any(|l| l == "RSET"),
        "RSET between the two transactions: {:?}",
        conns[0]
    );
    // Only the refused recipient was bounced.
    let dsn = bounces.wait_for(1).await;
    let text = String::from_utf8_lossy(&dsn[0].data);
    assert!(text.contains("Final-Recipient: rfc822; known@example.com"), "{text}");
}

/// A next hop may answer 354 to DATA although it accepted no recipient
/// (RFC 2920); the client then ended the "message" with a lone dot: an
/// empty message was delivered.
#[tokio::test]
async fn a_354_to_data_after_every_recipient_was_refused_got_an_empty_message() {
    // See: 219378c Next-hop client: never a body or '.' without an accepted recipient
    let hop = StrictHop::start(
        false,
        Arc::new(|verb: &str, line: &str, st: &HopState| {
            refuse_known(verb, line, st)
                .or_else(|| (verb == "DATA" && st.rcpts.is_empty()).then(|| "354 go ahead".into()))
        }),
    )
    .await;
    let (_relay, _bounces, second) = refused_then_accepted(&hop).await;
    // The hop took exactly one message: the second, whole. Nothing (not
    // even a dot) followed the 354 that had no recipient.
    let taken = hop.taken();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(
        (taken[0].conn, &taken[0].rcpts),
        (1, &vec!["user@example.com".to_string()])
    );
    assert_eq!(strip_trace(&taken[0].data), &second[..]);
    assert_eq!(
        hop.conns()[0].last().map(String::as_str),
        Some("DATA"),
        "the first connection ends at the 354"
    );
}

/// A 503 (bad sequence: the next hop and the client are out of step) was
/// taken as a verdict on the recipients, and they were bounced; it is the
/// connection that is confused, so the message is retried.
#[tokio::test]
async fn a_503_from_the_next_hop_bounced_the_recipients_instead_of_retrying() {
    // See: 219378c Next-hop client: 421/503/out-of-step replies end the connection and are never permanent
    let hop = StrictHop::start(
        false,
        Arc::new(|verb: &str, _: &str, st: &HopState| {
            (verb == "MAIL" && st.conn == 0).then(|| "503 5.5.1 Error: bad sequence of commands".into())
        }),
    )
    .await;
    let bounces = Sink::start().await;
    let port = bounces.port;
    let relay = TestRelay::start_with(&hop.next_hop(), |c| {
        c.relay.retry_initial = Duration::from_millis(200);
        set_bounce_relay(c, port);
    })
    .await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    let msg = test_message("out-of-step");
    send(&mut c, "sender@client.example", &["user@example.com"], &msg).await;
    assert_eq!(
        attempt_of(&mut events, "user@example.com").await,
        (RcptOutcome::Deferred, 1),
        "a 503 is temporary"
    );
    assert_eq!(
        attempt_of(&mut events, "user@example.com").await,
        (RcptOutcome::Delivered, 2)
    );
    let taken = hop.taken();
    assert_eq!(taken.len(), 1);
    assert_eq!(strip_trace(&taken[0].data), &msg[..]);
    let bus = relay.running().events.clone();
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(event_count(&bus, "bounce_queued"), 0, "nothing was bounced");
    assert!(bounces.messages().is_empty());
}

/// After XCLIENT the next hop starts over and the client greets it again:
/// it greeted with sluice's own name, so the next hop recorded that as the
/// client's HELO instead of the name the client gave.
#[tokio::test]
async fn after_xclient_the_next_hop_was_greeted_with_our_name_instead_of_the_clients_helo() {
    // See: 8fefe47 XCLIENT re-greets with the client's HELO
    let hop = StrictHop::start(true, Arc::new(|_: &str, _: &str, _: &HopState| None)).await;
    let relay = TestRelay::start(&hop.next_hop()).await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    send(
        &mut c,
        "a@client.example",
        &["user@example.com"],
        &test_message("xclient"),
    )
    .await;
    assert_eq!(
        attempt_of(&mut events, "user@example.com").await,
        (RcptOutcome::Delivered, 1)
    );
    let conn = &hop.conns()[0];
    let at = conn
        .iter()
        .position(|l| l.starts_with("XCLIENT "))
        .unwrap_or_else(|| panic!("no XCLIENT: {conn:?}"));
    assert!(conn[at].contains(" HELO=client.example"), "{conn:?}");
    assert_eq!(conn[0], "EHLO mx.test.example", "our own name before XCLIENT");
    assert_eq!(
        conn[at + 1],
        "EHLO client.example",
        "the client's name after it: {conn:?}"
    );
}

/// A DSN sent over a connection on which XCLIENT had named a client got no
/// XCLIENT of its own: the next hop took the bounce as coming from that
/// client.
#[tokio::test]
async fn a_dsn_on_a_reused_connection_was_attributed_to_the_previous_messages_client() {
    // See: 8fefe47 (forward.rs) mail sluice wrote itself is forwarded as localhost
    let hop = StrictHop::start(true, Arc::new(refuse_known)).await;
    let relay = TestRelay::start_with(&hop.next_hop(), |c| c.relay.concurrency = 1).await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    // A local sender: its DSN goes to the same next hop, over the same
    // (pooled) connection.
    send(
        &mut c,
        "other@example.com",
        &["user@example.com", "known@example.com"],
        &test_message("half-refused"),
    )
    .await;
    assert_eq!(
        attempt_of(&mut events, "other@example.com").await,
        (RcptOutcome::Delivered, 1),
        "the DSN to the sender"
    );
    let conns = hop.conns();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let conn = &conns[0];
    let dsn = conn
        .iter()
        .position(|l| l.starts_with("MAIL FROM:<>"))
        .unwrap_or_else(|| panic!("no DSN: {conn:?}"));
    let forwarded: Vec<&String> = conn[..dsn].iter().filter(|l| l.starts_with("XCLIENT ")).collect();
    assert_eq!(forwarded.len(), 2, "one XCLIENT per message: {conn:?}");
    assert!(forwarded[0].contains("HELO=client.example"), "{conn:?}");
    assert!(
        forwarded[1].starts_with("XCLIENT NAME=localhost "),
        "the DSN comes from this host: {conn:?}"
    );
}

/// A line over the length limit is stored as fragments; when a fragment
/// ended in CR and its LF came in the next read, the CRLF was not seen, so
/// the `.` line after it did not end DATA and the session hung.
#[tokio::test]
async fn end_of_data_was_missed_after_an_over_long_line_whose_crlf_was_split_between_reads() {
    // See: 0938146 Fix DATA framing when CRLF is split after a long-line fragment
    let sink = Sink::start().await;
    let relay = TestRelay::start(&sink.next_hop()).await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.cmd("DATA", "354").await;
    // A 9000-octet line (over the 8192 limit) ending in CR...
    let mut first = b"Subject: long line\r\n\r\n".to_vec();
    first.extend(std::iter::repeat_n(b'x', 9000));
    first.push(b'\r');
    c.send_raw(&first).await;
    // ...read by the server before its LF arrives. (The pause only makes
    // the split read happen; nothing is asserted about time.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send_raw(b"\n.\r\n").await;
    // The end of data is seen: the message is refused for its long line
    // (not left hanging until a timeout), and the session goes on.
    c.expect("552 5.3.4").await;
    c.cmd("NOOP", "250").await;
}

/// The tokenizer cut a URL's path at 512 bytes, which can fall inside a
/// multibyte character: a panic, and the session died without a reply.
#[tokio::test]
async fn spam_scoring_panicked_on_a_long_url_path_of_multibyte_characters() {
    // See: d4e10d3 fix a tokenizer panic on a URL path of multibyte characters
    use sluice::spam::{bayes, tokenize};
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    // The URL tokens are made for the classifier: it needs a model.
    let mut model = bayes::Model::new();
    for (text, spam) in [
        ("Subject: win\r\n\r\ncheap pills, click now\r\n", true),
        ("Subject: lunch\r\n\r\nsee you at noon\r\n", false),
    ] {
        model.learn(&tokenize::tokens(text.as_bytes()), spam);
    }
    let mut f = std::fs::File::create(dir.path().join("bayes.model")).unwrap();
    model.save(&mut f, 1).unwrap();
    drop(f);
    let toml = base_toml(&sink.next_hop()).replace(
        "[spam]\nenabled = false",
        "[spam]\nauth = false\nbayes_model = \"bayes.model\"",
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    // "/" then 400 two-byte characters: the 512-byte cap falls in one. As
    // quoted-printable, so the message itself is plain ASCII.
    let mut msg = b"From: a@client.example\r\nSubject: link\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
        see http://a.example/"
        .to_vec();
    for i in 0..400 {
        msg.extend_from_slice(b"=C3=A9");
        if i % 10 == 9 {
            msg.extend_from_slice(b"=\r\n");
        }
    }
    msg.extend_from_slice(b"\r\n");
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&msg).await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.wait_for(1).await;
    assert!(
        String::from_utf8_lossy(&got[0].data).contains("see http://a.example/=C3=A9"),
        "relayed as it came"
    );
}

/// `sluice scan DIR | head -1`: the pipe closes after the first line; the
/// next write failed with EPIPE (Rust ignores SIGPIPE) and println!
/// panicked.
#[test]
fn sluice_scan_panicked_when_its_output_pipe_closed() {
    // See: 077dcb3 sluice scan: a closed stdout (| head) stops the scan quietly instead of panicking in println
    let dir = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(
            dir.path().join(format!("{i:03}.eml")),
            format!("From: a@b.example\r\nSubject: m{i}\r\n\r\nhello {i}\r\n"),
        )
        .unwrap();
    }
    let cfg = dir.path().join("c.toml");
    let table = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/recipients.example");
    std::fs::write(
        &cfg,
        format!("[recipients]\ntable = \"{table}\"\n[spam]\nauth = false\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["scan", "--offline", "--config"])
        .arg(&cfg)
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.code().is_some(), "killed by a signal: {:?}", out.status);
    assert!(first.contains("000.eml: deliver"), "{first:?}");
}

/// Writes `bytes` one octet every `gap` until the server closes (or all
/// are sent); returns what the server said and how long it took.
async fn trickle(c: &mut Client, bytes: &[u8], gap: Duration) -> (String, Duration) {
    let started = std::time::Instant::now();
    let mut said = String::new();
    for b in bytes {
        c.send_raw(std::slice::from_ref(b)).await;
        // What the server wrote in the meantime, without waiting for it.
        if let Ok(r) = tokio::time::timeout(gap, c.reply()).await {
            said = r;
            break;
        }
    }
    (said, started.elapsed())
}

// See: issue 17: a trickle reset the command timeout with every byte.
#[tokio::test]
async fn a_command_line_trickled_a_byte_at_a_time_outlived_the_command_timeout() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        c.timeouts.command = Duration::from_secs(1);
        c.timeouts.idle = Duration::from_secs(1);
    })
    .await;
    let mut c = relay.client().await;
    // 40 octets at 150 ms each would take 6 s; the line must be done in 1 s.
    let line = format!("EHLO {}\r\n", "x".repeat(32));
    let (said, took) = trickle(&mut c, line.as_bytes(), Duration::from_millis(150)).await;
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
}

// See: issue 17: a body trickled at a few bytes a second held its session
// for hours.
#[tokio::test]
async fn a_body_trickled_below_the_minimum_data_rate_held_the_session() {
    let sink = Sink::start().await;
    let relay = TestRelay::start_with(&sink.next_hop(), |c| {
        c.timeouts.data = Duration::from_secs(1);
        c.timeouts.data_min_rate = 500;
    })
    .await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.cmd("DATA", "354").await;
    // 5 bytes a second, far below 500 after the 1 s grace.
    let body = vec![b'a'; 200];
    let (said, took) = trickle(&mut c, &body, Duration::from_millis(200)).await;
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    assert!(sink.messages().is_empty());
}

// See: issue 17: BODY=BINARYMIME (not advertised) got 250 and ended in a
// bounce at the next hop, to a possibly forged sender.
#[tokio::test]
async fn an_unadvertised_body_binarymime_was_accepted_and_bounced_later() {
    let sink = Sink::start().await;
    let relay = TestRelay::start(&sink.next_hop()).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    let ehlo = c.last.clone();
    assert!(!ehlo.contains("BINARYMIME"), "{ehlo}");
    c.cmd("MAIL FROM:<a@client.example> BODY=BINARYMIME", "555 5.5.4").await;
    c.cmd("MAIL FROM:<a@client.example> BODY=8BITMIME", "250").await;
}

// See: issue 17: the same mailbox in several spellings was relayed as as
// many envelope recipients, and a quoted local part got 550.
#[tokio::test]
async fn the_same_mailbox_spelled_several_ways_was_relayed_as_several_recipients() {
    let sink = Sink::start().await;
    let relay = TestRelay::start(&sink.next_hop()).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    for to in [
        "user@example.com",
        "user@EXAMPLE.com",
        "user@example.com.",
        "\"user\"@example.com",
        "\"user\"@Example.COM.",
    ] {
        c.cmd(&format!("RCPT TO:<{to}>"), "250").await;
    }
    let msg = test_message("dedupe");
    assert!(c.data(&msg).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["user@example.com"], "one recipient");
    let pending = stop_and_pending(relay).await;
    assert!(pending.is_empty());
    assert_eq!(sink.messages().len(), 1);
}

// See: issue 17: RCPT TO:<postmaster> without a domain got 501, although
// RFC 5321 §4.5.1 requires every server to accept it.
#[tokio::test]
async fn rcpt_to_postmaster_without_a_domain_was_refused() {
    let sink = Sink::start().await;
    let relay = TestRelay::start(&sink.next_hop()).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example>", "250").await;
    // The test table does not list postmaster@example.com: accepted anyway.
    c.cmd("RCPT TO:<Postmaster>", "250").await;
    assert!(c.data(&test_message("to-postmaster")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts, ["postmaster@example.com"], "the configured postmaster");
}

// See: issue 17: a full spool was refused only at the end of DATA, after
// the whole body had been sent.
#[tokio::test]
async fn a_full_spool_was_refused_only_after_the_whole_body() {
    let sink = Sink::start().await;
    // More free space than any disk has: the spool counts as full.
    let relay = TestRelay::start_with(&sink.next_hop(), |c| c.spool.min_free = u64::MAX / 4).await;
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example> SIZE=1000", "452 4.3.1").await;
    c.cmd("MAIL FROM:<a@client.example>", "452 4.3.1").await;
    // With room, the same dialogue goes on to DATA (both checks pass).
    let room = TestRelay::start_with(&sink.next_hop(), |c| c.spool.min_free = 1).await;
    let mut c = room.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.cmd("MAIL FROM:<a@client.example> SIZE=1000", "250").await;
    c.cmd("RCPT TO:<user@example.com>", "250").await;
    c.cmd("DATA", "354").await;
}

// See: issue 17: negative answers without an SOA were not cached, so every
// message from one sender domain asked the resolver again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_answers_without_an_soa_were_asked_for_again_and_again() {
    use sluice::dns::Resolver;
    let zone = corpora().join("dnsbl/bl.test.zone");
    let dns = tokio::task::spawn_blocking(move || crate::util::services::DnsServer::start(&zone))
        .await
        .unwrap();
    let server = format!("127.0.0.1:{}", dns.port).parse().unwrap();
    let inner = sluice::dns::tokio_resolver(
        Some(server),
        Duration::from_secs(2),
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .unwrap();
    let r = sluice::dns::HickoryResolver::from_resolver(inner);
    for _ in 0..5 {
        assert_eq!(
            r.lookup_a("nothere.bl.test").await,
            Err(sluice::dns::DnsError::NotFound)
        );
    }
    // dnslib answers NXDOMAIN without an SOA: asked once, then cached.
    let asked = dns
        .log()
        .lines()
        .filter(|l| l.starts_with("Request:") && l.contains("'nothere.bl.test.'"))
        .count();
    assert_eq!(asked, 1, "{}", dns.log());
}

// See: issue 17: bodies were held in memory until the end of DATA, so 200
// clients sending 5 MiB each took the relay to 1.2 GiB. Now all sessions
// hold at most `server.body_memory` and the rest waits in `spool/incoming/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_were_held_in_memory() {
    const CLIENTS: usize = 24;
    const BODY: usize = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    // 4 MiB of bodies in memory for all sessions together.
    let p = Proc::start_extra(
        dir.path(),
        free_port(),
        sink.port,
        "1s",
        "[server]\nbody_memory = 4194304\n",
    );
    let line = format!("{}\r\n", "0123456789abcdef".repeat(4));
    let body: Arc<Vec<u8>> = Arc::new(line.repeat(BODY / line.len()).into_bytes());
    let sent = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let finish = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (addr, body, sent, finish) = (p.addr, body.clone(), sent.clone(), finish.clone());
        clients.spawn(async move {
            let mut c = Client::connect(addr).await;
            c.expect("220").await;
            c.envelope("a@client.example", &["user@example.com"]).await;
            c.cmd("DATA", "354").await;
            c.send_raw(format!("Subject: big {i}\r\n\r\n").as_bytes()).await;
            c.send_raw(&body).await;
            sent.wait().await;
            finish.wait().await;
            c.send_raw(b".\r\n").await;
            c.expect("250 2.0.0").await;
            c.send("QUIT").await;
        });
    }
    sent.wait().await;
    // Every body is with the relay (and not in socket buffers) once the
    // files under incoming/ hold all but the pool and the last read of each.
    let incoming = dir.path().join("spool/incoming");
    let want = (CLIENTS * (BODY - (64 << 10)) - (4 << 20) - BODY) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let on_disk = || -> u64 {
        std::fs::read_dir(&incoming)
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    while on_disk() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {want} body octets went to spool/incoming",
            on_disk()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_mib = p.rss_kib() / 1024;
    let in_flight_mib = (CLIENTS * BODY) >> 20;
    assert!(
        rss_mib < 64,
        "{rss_mib} MiB resident with {in_flight_mib} MiB of bodies in flight"
    );
    finish.wait().await;
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    let got = sink.wait_for(CLIENTS).await;
    let mut seen = std::collections::HashSet::new();
    for m in &got {
        let text = strip_trace(&m.data);
        let i: usize = String::from_utf8_lossy(&text[..text.len().min(20)])
            .strip_prefix("Subject: big ")
            .and_then(|t| t.split('\r').next()?.parse().ok())
            .expect("the test's Subject first");
        let mut want = format!("Subject: big {i}\r\n\r\n").into_bytes();
        want.extend_from_slice(&body);
        assert!(text == want.as_slice(), "message {i} relayed byte-exact");
        seen.insert(i);
    }
    assert_eq!(seen.len(), CLIENTS);
    assert_eq!(
        std::fs::read_dir(&incoming).unwrap().count(),
        0,
        "incoming/ is empty again"
    );
}

// See: issue 17: a black-holed resolver cost every session the DNS lists'
// wait plus authentication's (7 s), and nothing noticed that the resolver
// itself was the problem. Now one budget per transaction (`dns.budget`)
// bounds both, and once the resolver is judged failing, authentication
// answers temperror at once (metric, event, /readyz).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_resolver_cost_every_message_the_lists_and_the_auth_waits() {
    let hole = tokio::task::spawn_blocking(crate::util::services::BlackHoleDns::start)
        .await
        .unwrap();
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!(
        "{}\n[dns]\nresolver = \"127.0.0.1:{}\"\ntimeout = \"3s\"\nbudget = \"1500ms\"\nhealth_min_queries = 2\n\
         [dnsbl]\nzones = [\"bl.test\"]\n",
        base_toml(&sink.next_hop()).replace("[spam]\nenabled = false", "[spam]\nauth_timeout = \"5s\""),
        hole.port
    );
    let relay = TestRelay::start_in(dir, &toml, |_| {}).await;
    let metrics = relay.running().events.metrics().clone();
    let send = |subject: &'static str| {
        let addr = relay.addr;
        async move {
            let mut c = Client::connect(addr).await;
            c.expect("220").await;
            c.cmd("EHLO client.example", "250").await;
            let started = tokio::time::Instant::now();
            c.envelope("alice@sender.example", &["user@example.com"]).await;
            let r = c.data(format!("Subject: {subject}\r\n\r\nhello\r\n").as_bytes()).await;
            assert!(r.starts_with("250"), "{r}");
            started.elapsed()
        }
    };
    // The lists and authentication share 1.5 s (they had 3 s + 5 s).
    let took = send("first").await;
    assert!(took < Duration::from_millis(2500), "MAIL to 250 took {took:?}");

    // The DNS list probes time out too: the resolver is failing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while metrics.dns_resolver_failing.get() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resolver was never judged failing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = http_get(relay.running().metrics_addr.unwrap(), "/readyz").await;
    assert!(body.contains("degraded: DNS resolver failing"), "{code} {body}");

    // Authentication no longer waits at all (the list still waits for
    // its answer within the budget, as before).
    let skipped = || metrics.auth_skipped.with_label_values(&["resolver_failing"]).get();
    let before = skipped();
    send("second").await;
    assert_eq!(skipped(), before + 1);
    let got = sink.wait_for(2).await;
    let second = got
        .iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains("Subject: second"))
        .expect("second message relayed");
    assert!(
        String::from_utf8_lossy(&second.data).contains("spf=temperror"),
        "{}",
        String::from_utf8_lossy(&second.data)
    );
}
