//! The milter server: sluice's content checks for a Postfix that keeps
//! port 25 (`smtpd_milters = inet:127.0.0.1:8891`, issue 21).
//!
//! One task per connection (Postfix opens one per SMTP session) drives
//! [`crate::proto::milter`] over the socket: the client's address and HELO
//! name, the envelope, then the header fields and body chunks are put
//! together into the message as Postfix received it, streamed to clamd
//! while they arrive (as the front end does). At the end of the body the
//! [`Pipeline`](crate::pipeline::Pipeline) judges it with the same checks
//! as mail on sluice's own listener (form, MIME, banned parts, clamd,
//! spam rules and classifier, SPF/DKIM/DMARC), and the verdict goes back
//! into Postfix's session: a refusal as `SMFIR_REPLYCODE` (Postfix gives
//! the client sluice's 5xx or 4xx), spam to quarantine as
//! `SMFIR_QUARANTINE` (Postfix's hold queue), otherwise our
//! Authentication-Results and X-Spam-* fields as header changes. Nothing
//! is stored here: Postfix keeps the message. Events are the front end's,
//! with `"via":"milter"`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::events::{Cause, Event, Tx, Via};
use crate::mail::envelope::{Envelope, Recipient};
use crate::pipeline::{Passed, Received, STREAM_BATCH, SpamMarks, refusal_event};
use crate::proto::milter::{
    Command, Decoder, MilterError, OptNeg, Peer, Response, VERSION, action, expects_reply, negotiate, step,
};
use crate::proto::{BodyProblem, Mailbox, parse_path};
use crate::scan::{Fed, ScanStream};
use crate::smtp::session::{Front, Shared};

/// What we ask of the MTA: header changes and quarantine; no reply to the
/// stages we only listen to (one round trip per message, at its end), no
/// unknown commands, header values with their leading space as sent.
const WANT: OptNeg = OptNeg {
    version: VERSION,
    actions: action::ADD_HEADERS | action::CHANGE_HEADERS | action::QUARANTINE,
    protocol: step::NO_UNKNOWN
        | step::NR_CONNECT
        | step::NR_HELO
        | step::NR_MAIL
        | step::NR_RCPT
        | step::NR_DATA
        | step::NR_HEADER
        | step::NR_EOH
        | step::NR_BODY
        | step::HEADER_LEADING_SPACE,
};

/// How often the MTA is told we are still working on a message (it
/// restarts its `milter_content_timeout`).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Why a milter connection ended other than by QUIT.
#[derive(Debug, thiserror::Error)]
pub enum MilterFailure {
    #[error("protocol: {0}")]
    Protocol(#[from] MilterError),
    #[error("no command within {0:?}")]
    Timeout(Duration),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The milter service: the front end's current settings (a reload
/// replaces them; a message keeps the set it started with) and the wait
/// for the MTA's next command.
pub struct Milter {
    pub front: Arc<Front>,
    pub timeout: Duration,
    /// The ban list (`[firewall]`): a banned client is refused at CONNECT
    /// (Postfix then refuses its every command with sluice's reply).
    pub bans: Option<Arc<dyn crate::policy::connection::ConnectionFilter>>,
}

/// Accepts until shutdown; `limit` caps connections (`milter.max_connections`):
/// one over it is closed at once, and Postfix applies its
/// `milter_default_action` to that session.
pub async fn accept_loop(listener: TcpListener, milter: Arc<Milter>, limit: Arc<Semaphore>, tracker: TaskTracker) {
    let shutdown = milter.front.load().shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, peer)) => {
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "milter.max_connections reached; connection closed");
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let m = milter.clone();
                tracker.spawn(async move {
                    if let Err(e) = run(sock, m).await {
                        tracing::debug!(%peer, error = %e, "milter connection ended");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "milter accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One message in progress: from MAIL to the end of the body.
struct Message {
    /// The settings it started with.
    shared: Arc<Shared>,
    mail_from: Option<Mailbox>,
    rcpts: Vec<Recipient>,
    /// The message as Postfix received it: the header fields, the blank
    /// line, the body.
    body: Vec<u8>,
    /// The header fields as sent (for header changes by index).
    headers: Vec<(String, Vec<u8>)>,
    too_big: bool,
    /// The virus scan fed while the message arrives, and what it has seen.
    stream: Option<Box<dyn ScanStream>>,
    fed: Fed,
    dns_deadline: tokio::time::Instant,
}

/// One connection's state.
struct Conn {
    milter: Arc<Milter>,
    /// Numbered with the front end's sessions (events name it).
    id: u64,
    /// The negotiated protocol steps.
    protocol: u32,
    client_ip: IpAddr,
    client_name: Option<String>,
    helo: String,
    /// Postfix's queue id (macro `i`), once it has one.
    queue_id: Option<String>,
    msg: Option<Message>,
}

/// Serves one MTA connection until QUIT, the peer closes, the timeout, or
/// shutdown (between messages).
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, milter: Arc<Milter>) -> Result<(), MilterFailure> {
    let shared = milter.front.load();
    let shutdown = shared.shutdown.clone();
    let mut conn = Conn {
        id: shared.session_seq.fetch_add(1, Ordering::Relaxed),
        milter,
        protocol: 0,
        client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        client_name: None,
        helo: String::new(),
        queue_id: None,
        msg: None,
    };
    drop(shared);
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        while let Some(cmd) = decoder.next_command()? {
            match cmd {
                Command::Quit => return Ok(()),
                Command::EndOfBody(last) => {
                    if !out.is_empty() {
                        stream.write_all(&out).await?;
                        out.clear();
                    }
                    conn.body_chunk(&last).await;
                    conn.end_of_body(&mut stream).await?;
                }
                cmd => {
                    let reply = expects_reply(conn.protocol, &cmd);
                    if let Some(r) = conn.handle(cmd).await? {
                        r.encode(&mut out);
                    } else if reply {
                        Response::Continue.encode(&mut out);
                    }
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let timeout = conn.milter.timeout;
        let n = tokio::select! {
            r = tokio::time::timeout(timeout, stream.read(&mut buf)) => match r {
                Ok(r) => r?,
                Err(_) => return Err(MilterFailure::Timeout(timeout)),
            },
            // Between messages only: a message in progress finishes.
            _ = shutdown.cancelled(), if conn.msg.is_none() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        decoder.push(&buf[..n]);
    }
}

impl Conn {
    /// A command other than QUIT and the end of the body: state changes,
    /// and the reply when one is due beyond `Continue`.
    async fn handle(&mut self, cmd: Command) -> Result<Option<Response>, MilterFailure> {
        match cmd {
            Command::OptNeg(offer) => {
                let ours = negotiate(offer, WANT)?;
                self.protocol = ours.protocol;
                return Ok(Some(Response::OptNeg(ours)));
            }
            Command::Macros { pairs, .. } => {
                for (k, v) in pairs {
                    if (k == "i" || k == "{i}") && !v.is_empty() {
                        self.queue_id = Some(v);
                    }
                }
            }
            Command::Connect { hostname, peer } => {
                self.client_ip = match peer {
                    Peer::Inet { ip, .. } => ip.to_canonical(),
                    Peer::Unknown | Peer::Local(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                };
                // Postfix says "unknown", or "[ip]", when the name is not verified.
                self.client_name = Some(hostname).filter(|h| h != "unknown" && !h.starts_with('['));
                use crate::policy::connection::Admit;
                if let Some(Admit::Refuse(r)) = self.milter.bans.as_ref().map(|b| b.admit(self.client_ip)) {
                    self.milter.front.load().events.emit(Event::ConnectRejected {
                        session: self.id,
                        via: crate::events::Via::Milter,
                        ip: self.client_ip,
                        reason: r.reason,
                        reply: r.reply.clone(),
                        evidence: r.evidence,
                    });
                    return Ok(Some(Response::reply(&r.reply)));
                }
            }
            Command::Helo(h) => self.helo = h,
            Command::Mail(args) => {
                let shared = self.milter.front.load();
                let mail_from = parse_path(&args[0]).ok().and_then(|(m, _)| m);
                self.msg = Some(Message {
                    dns_deadline: tokio::time::Instant::now() + shared.config.dns.budget,
                    shared,
                    mail_from,
                    rcpts: Vec::new(),
                    body: Vec::new(),
                    headers: Vec::new(),
                    too_big: false,
                    stream: None,
                    fed: Fed::default(),
                });
            }
            Command::Rcpt(args) => {
                if let (Some(msg), Ok((Some(addr), _))) = (self.msg.as_mut(), parse_path(&args[0])) {
                    msg.rcpts.push(Recipient {
                        addr,
                        notify: None,
                        orcpt: None,
                    });
                }
            }
            Command::Data => {}
            Command::Header { name, value } => {
                let leading = self.protocol & step::HEADER_LEADING_SPACE != 0;
                let mut field = Vec::with_capacity(name.len() + value.len() + 4);
                field.extend_from_slice(name.as_bytes());
                field.push(b':');
                if !leading {
                    field.push(b' ');
                }
                crlf_into(&value, &mut field);
                field.extend_from_slice(b"\r\n");
                if let Some(msg) = self.msg.as_mut() {
                    msg.headers.push((name, value));
                }
                self.body_chunk(&field).await;
            }
            Command::EndOfHeaders => self.body_chunk(b"\r\n").await,
            Command::Body(chunk) => self.body_chunk(&chunk).await,
            Command::Abort => {
                self.msg = None;
                self.queue_id = None;
            }
            Command::QuitNewConnection => {
                self.msg = None;
                self.queue_id = None;
                self.client_name = None;
                self.helo.clear();
            }
            Command::Unknown(_) => {}
            Command::Quit | Command::EndOfBody(_) => {}
        }
        Ok(None)
    }

    /// Adds octets of the message, and feeds the streamed scan.
    async fn body_chunk(&mut self, data: &[u8]) {
        let Some(msg) = self.msg.as_mut() else { return };
        if msg.too_big || data.is_empty() {
            return;
        }
        if msg.body.len() + data.len() > msg.shared.config.server.max_message_size {
            msg.too_big = true;
            msg.stream = None;
            msg.body = Vec::new();
            return;
        }
        if msg.body.is_empty() {
            msg.stream = msg.shared.pipeline.start_stream();
        }
        msg.body.extend_from_slice(data);
        if let Some(s) = msg.stream.as_mut() {
            crate::scan::feed(s.as_mut(), &msg.body, &mut msg.fed, STREAM_BATCH, false).await;
        }
    }

    /// The end of the body: the pipeline judges, the verdict goes back
    /// (with progress reports while it takes).
    async fn end_of_body<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> Result<(), MilterFailure> {
        let Some(msg) = self.msg.take() else {
            stream.write_all(&Response::Continue.to_bytes()).await?;
            return Ok(());
        };
        let shared = msg.shared.clone();
        // Postfix's queue id (its macros for this message came before the
        // MAIL command or with any later stage), else one of ours.
        let id = self.queue_id.take().unwrap_or_else(|| shared.new_message_id());
        let envelope = Envelope {
            id: id.clone(),
            received_at: crate::mail::date::now_secs(),
            client_ip: self.client_ip,
            helo: self.helo.clone(),
            mail_from: msg.mail_from,
            body: Default::default(),
            smtputf8: false,
            ret: None,
            envid: None,
            rcpts: msg.rcpts,
            scan_pending: false,
            client_name: self.client_name.clone(),
            esmtp: true,
            generated: None,
        };
        let tx = Tx {
            via: Via::Milter,
            ..Tx::of(&envelope)
        };
        let rcpts = envelope.rcpts.len();
        let size = msg.body.len();
        let received = Received {
            session: self.id,
            envelope,
            body: msg.body,
            trace_len: 0,
            problem: msg.too_big.then_some(BodyProblem::TooBig),
            stream: msg.stream,
            streamed: msg.fed,
            dns_deadline: Some(msg.dns_deadline),
            via: Via::Milter,
        };
        let judged = shared.pipeline.judge(received);
        tokio::pin!(judged);
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let verdict = loop {
            tokio::select! {
                v = &mut judged => break v,
                _ = progress.tick() => stream.write_all(&Response::Progress.to_bytes()).await?,
            }
        };
        let mut out = Vec::new();
        match verdict {
            Ok(passed) => {
                let Passed {
                    scan,
                    message_id,
                    spam,
                    unscannable,
                } = passed;
                if let Some(u) = &unscannable {
                    Response::Quarantine(format!("sluice: {u}")).encode(&mut out);
                    shared.events.emit(Event::Quarantined {
                        ip: self.client_ip,
                        id: id.clone(),
                        tx: tx.clone(),
                        reason: Cause::Content(crate::events::ContentKind::Unscannable, u.to_string()),
                    });
                }
                if let Some(marks) = &spam {
                    for r in header_changes(marks, &msg.headers, self.protocol) {
                        r.encode(&mut out);
                    }
                    if marks.quarantine {
                        Response::Quarantine(format!("sluice: spam, score {:.1}", marks.score)).encode(&mut out);
                        shared.events.emit(Event::Quarantined {
                            ip: self.client_ip,
                            id: id.clone(),
                            tx: tx.clone(),
                            reason: Cause::Spam,
                        });
                    }
                }
                shared.events.emit(Event::MessageAccepted {
                    session: self.id,
                    ip: self.client_ip,
                    id,
                    tx,
                    size,
                    rcpts,
                    scan,
                    message_id,
                });
                Response::Continue.encode(&mut out);
            }
            Err(refusal) => {
                if let Some(e) = refusal_event(self.id, self.client_ip, id, tx, &refusal) {
                    shared.events.emit(e);
                }
                Response::reply(&refusal.reply).encode(&mut out);
            }
        }
        stream.write_all(&out).await?;
        Ok(())
    }
}

/// `value` with bare LF line ends made CRLF (folded fields as Postfix
/// sends them).
fn crlf_into(value: &[u8], out: &mut Vec<u8>) {
    let mut prev = 0u8;
    for &b in value {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
}

/// The fields of a CRLF-terminated header block: name and value (the
/// value as the milter protocol carries it: continuation lines joined by
/// LF, no leading space unless `leading_space`).
fn fields(top: &str, leading_space: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in top.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        let value = if leading_space {
            format!(" {value}")
        } else {
            value.to_string()
        };
        out.push((name.to_string(), value));
    }
    out
}

/// The spam step's marks as header changes, in order: forged
/// Authentication-Results deleted (last first, so the indexes hold), the
/// Subject prefixed, our fields inserted at the top in their order.
fn header_changes(marks: &SpamMarks, headers: &[(String, Vec<u8>)], protocol: u32) -> Vec<Response> {
    let leading_space = protocol & step::HEADER_LEADING_SPACE != 0;
    let mut out = Vec::new();
    if let Some(id) = &marks.authserv_id {
        let results: Vec<&Vec<u8>> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authentication-Results"))
            .map(|(_, v)| v)
            .collect();
        for (i, value) in results.iter().enumerate().rev() {
            let mut field = b"Authentication-Results:".to_vec();
            field.extend_from_slice(value);
            if crate::spam::auth::claims_our_name(&field, id) {
                out.push(Response::ChangeHeader {
                    index: i as u32 + 1,
                    name: "Authentication-Results".into(),
                    value: String::new(),
                });
            }
        }
    }
    if let Some(prefix) = &marks.subject_prefix {
        let subject = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("Subject"));
        let want = prefix.trim_end();
        match subject {
            Some((name, value)) => {
                let v = String::from_utf8_lossy(value);
                let bare = v.trim_start_matches(' ');
                if !bare.starts_with(want) {
                    let sep = if prefix.ends_with(' ') { "" } else { " " };
                    let lead = if leading_space { " " } else { "" };
                    out.push(Response::ChangeHeader {
                        index: 1,
                        name: name.clone(),
                        value: format!("{lead}{prefix}{sep}{bare}"),
                    });
                }
            }
            None => out.push(Response::AddHeader {
                name: "Subject".into(),
                value: if leading_space {
                    format!(" {want}")
                } else {
                    want.to_string()
                },
            }),
        }
    }
    for (name, value) in fields(&marks.top, leading_space).into_iter().rev() {
        out.push(Response::InsertHeader { index: 0, name, value });
    }
    out
}

/// Binds `milter.listen` and serves; returns the bound addresses.
pub fn listen_all(
    addrs: &[SocketAddr],
    milter: Arc<Milter>,
    max_connections: usize,
    tracker: &TaskTracker,
) -> Result<Vec<SocketAddr>, (SocketAddr, std::io::Error)> {
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut bound = Vec::new();
    for &addr in addrs {
        let l = crate::listener::bind(addr).map_err(|e| (addr, e))?;
        bound.push(l.local_addr().map_err(|e| (addr, e))?);
        tracker.spawn(accept_loop(l, milter.clone(), limit.clone(), tracker.clone()));
    }
    Ok(bound)
}

#[cfg(test)]
mod tests;
