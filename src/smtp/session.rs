//! One client session: the read → process → reply loop over any stream.
//!
//! The session owns the SMTP state (HELO name, transaction, receiver mode)
//! independently of the stream, so STARTTLS can hand the same session a
//! TLS stream (`run` returns the plaintext stream, the caller wraps it and
//! calls `run` again). Handlers (one per verb) live in `handlers.rs` and
//! return [`Reply`] values; this file writes them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use crate::config::Config;
use crate::events::{Disconnect, Event, EventBus};
use crate::mail::envelope::Recipient;
use crate::policy::{CheckChain, SessionCtx, Stage};
use crate::proto::{
    BdatReceiver, BodyLimits, Command, DataReceiver, DataStatus, Line, LineReceiver, MailParams, Mailbox, Reply,
};
use crate::scan::Fed;
use crate::spool::incoming::BodyBuf;
use crate::tls::TlsSource;

/// Everything sessions share. Built once by `app.rs`.
pub struct Shared {
    pub config: Arc<Config>,
    pub checks: CheckChain,
    /// The end of DATA: checks, spool, queue.
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    pub events: EventBus,
    pub tls: Option<Arc<TlsSource>>,
    /// Cancelled on SIGTERM/SIGINT: sessions answer 421 at the next command.
    pub shutdown: CancellationToken,
    /// Shared by every generation of settings (ids never repeat).
    pub session_seq: Arc<AtomicU64>,
    pub message_seq: Arc<AtomicU64>,
    /// What the listener asks before a session starts (bans, allowlist,
    /// connection rate and concurrency), in order.
    pub filters: Vec<Arc<dyn crate::policy::connection::ConnectionFilter>>,
    /// Stress mode: shorter timeouts, fewer errors, earlier tarpit.
    pub stress: Arc<crate::policy::stress::Stress>,
}

impl Shared {
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_size: self.config.server.max_message_size,
            max_line: self.config.server.max_line_length,
        }
    }

    /// A new queue id: microseconds since the epoch plus a sequence number.
    pub fn new_message_id(&self) -> String {
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let seq = self.message_seq.fetch_add(1, Ordering::Relaxed) & 0xfff;
        format!("{us:X}{seq:03X}")
    }
}

/// An open mail transaction (after MAIL FROM).
pub(super) struct Transaction {
    pub id: String,
    pub mail_from: Option<Mailbox>,
    pub params: MailParams,
    pub rcpts: Vec<Recipient>,
    /// The body as it will be spooled: our Received header, then the
    /// client's octets (beyond `server.body_memory`, in a file).
    pub body: BodyBuf,
    /// Length of the Received header at the start of `body`.
    pub trace_len: usize,
    /// BDAT state, once the first BDAT arrived.
    pub bdat: Option<BdatReceiver>,
    /// Virus scan fed while the body arrives, if one could be started.
    pub stream: Option<Box<dyn crate::scan::ScanStream>>,
    /// What `stream` has seen of `body.mem`.
    pub streamed: Fed,
}

/// What the receiver is doing with incoming bytes.
pub(super) enum Mode {
    Command,
    Data(DataReceiver),
    /// Reading a BDAT chunk; `last` ends the message; `refuse` holds the
    /// reply for a chunk that is read only to be discarded (`discard`
    /// octets still to skip).
    Bdat {
        last: bool,
        refuse: Option<Reply>,
        discard: u64,
    },
}

/// Result of processing one item of buffered input.
pub(super) enum Step {
    NeedMore,
    Continue,
    Close(Disconnect),
    StartTls,
}

/// The current settings of the front end; a reload puts a new [`Shared`]
/// in place, and each session takes it between transactions.
pub type Front = crate::swap::Swap<Shared>;

pub struct Session {
    /// The settings this session works with now: taken from `front` when
    /// no transaction is open, so a message sees one set from MAIL to the
    /// end of DATA.
    pub(super) shared: Arc<Shared>,
    front: Option<Arc<Front>>,
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    pub(super) helo: Option<String>,
    pub(super) esmtp: bool,
    pub(super) tls: bool,
    pub(super) tx: Option<Transaction>,
    pub(super) mode: Mode,
    pub(super) lines: LineReceiver,
    pub(super) errors: u32,
    pub(super) messages: u32,
    /// What pre-DATA checks know about this session.
    pub(super) ctx: SessionCtx,
    /// Refused (early talker, improper pipelining): only QUIT is served.
    pub(super) no_service: bool,
    /// When the partial command line now buffered began.
    line_started: Option<tokio::time::Instant>,
    /// When the message's first octet (after DATA, or of the first BDAT
    /// chunk) came, and how many octets have come since.
    body_started: Option<tokio::time::Instant>,
    body_octets: u64,
    /// Stress mode's changes.
    stress: tokio::sync::watch::Receiver<bool>,
}

/// What `run` ended with.
pub enum Outcome<S> {
    /// The client asked for STARTTLS; here is the stream to wrap.
    StartTls(S),
    Closed(Disconnect),
}

impl Session {
    pub fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        let id = shared.session_seq.fetch_add(1, Ordering::Relaxed);
        let max_line = shared.config.server.max_command_line;
        let ctx = SessionCtx::new(peer.ip(), &shared.config.policy.allowlist);
        Self {
            ctx,
            no_service: false,
            line_started: None,
            body_started: None,
            body_octets: 0,
            stress: shared.stress.subscribe(),
            shared,
            front: None,
            id,
            peer,
            helo: None,
            esmtp: false,
            tls: false,
            tx: None,
            mode: Mode::Command,
            lines: LineReceiver::new(max_line),
            errors: 0,
            messages: 0,
        }
    }

    /// Follows reloads: the settings are taken from `front` between
    /// transactions.
    pub fn with_front(mut self, front: Arc<Front>) -> Self {
        self.front = Some(front);
        self
    }

    /// The settings in use now.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Takes the current settings when no transaction is open.
    fn follow_reload(&mut self) {
        if self.tx.is_some() || !matches!(self.mode, Mode::Command) {
            return;
        }
        if let Some(front) = &self.front {
            let cur = front.load();
            if !Arc::ptr_eq(&cur, &self.shared) {
                self.shared = cur;
            }
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// After the TLS handshake: forget everything learned in plaintext
    /// (RFC 3207 §4.2); the client must EHLO again.
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.mode = Mode::Command;
    }

    /// When the next read must have come: the idle, command or data
    /// timeout from now, but no later than what a trickle may stretch it
    /// to: a command line completes within `timeouts.command` of its first
    /// octet; a message keeps `timeouts.data_min_rate` after
    /// `timeouts.data` of grace and ends within `timeouts.message`.
    fn read_deadline(&mut self, conn_pending: bool) -> tokio::time::Instant {
        let t = &self.shared.config.timeouts;
        let now = tokio::time::Instant::now();
        let in_body = matches!(self.mode, Mode::Data(_) | Mode::Bdat { .. });
        let partial = !in_body && (conn_pending || self.lines.swallowing());
        if !partial {
            self.line_started = None;
        }
        if self.tx.as_ref().is_none_or(|tx| tx.body.is_empty()) {
            self.body_started = None;
        }
        let stress = &self.shared.stress;
        let idle = stress.timeout(match self.mode {
            Mode::Data(_) | Mode::Bdat { .. } => t.data,
            Mode::Command if self.tx.is_some() => t.command,
            Mode::Command => t.idle,
        });
        let mut deadline = now + idle;
        if partial {
            let started = *self.line_started.get_or_insert(now);
            deadline = deadline.min(started + stress.timeout(t.command));
        }
        if let Some(started) = self.body_started {
            deadline = deadline.min(started + t.message);
            if t.data_min_rate > 0 {
                let earned = Duration::from_secs_f64(self.body_octets as f64 / t.data_min_rate as f64);
                deadline = deadline.min(started + stress.timeout(t.data) + earned);
            }
        }
        deadline
    }

    /// Counts octets read for the message's rate (from its first octet).
    fn note_read(&mut self, n: usize) {
        if matches!(self.mode, Mode::Data(_) | Mode::Bdat { .. }) || self.body_started.is_some() {
            self.body_started.get_or_insert_with(tokio::time::Instant::now);
            self.body_octets += n as u64;
        }
    }

    /// Runs the session over `stream` until it ends or asks for STARTTLS.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: S, greet: bool) -> Outcome<S> {
        let mut conn = Connection::new(stream);
        if greet {
            // Connect-stage checks start their work (DNSBL queries) without
            // delaying the banner; one may refuse the client outright.
            if let Some(reply) = self.run_checks(Stage::Connect).await {
                conn.push(&reply);
                let _ = conn.flush().await;
                conn.shutdown().await;
                return Outcome::Closed(Disconnect::Refused(reply));
            }
            let host = self.shared.config.server.hostname.clone();
            let banner = match self.pregreet(&mut conn).await {
                Ok(None) => Reply::greeting(&host),
                // RFC 5321 §3.1: a 554 banner, then 503 to everything but QUIT.
                Ok(Some(why)) => {
                    self.refuse_service(true, why);
                    Reply::pregreet_banner(&host)
                }
                Err(d) => return Outcome::Closed(d),
            };
            conn.push(&banner);
        }
        loop {
            // Process everything already buffered (pipelining).
            loop {
                let step = self.step(&mut conn).await;
                match step {
                    Step::NeedMore => break,
                    Step::Continue => {}
                    Step::Close(d) => {
                        let _ = conn.flush().await;
                        conn.shutdown().await;
                        return Outcome::Closed(d);
                    }
                    Step::StartTls => {
                        if let Err(e) = conn.flush().await {
                            return Outcome::Closed(Disconnect::Io(e.to_string()));
                        }
                        // Never execute plaintext pipelined after STARTTLS.
                        let dropped = conn.discard_input();
                        if dropped > 0 {
                            tracing::debug!(
                                session = self.id,
                                dropped,
                                "discarded plaintext pipelined after STARTTLS"
                            );
                        }
                        return Outcome::StartTls(conn.into_inner());
                    }
                }
            }
            let at_boundary = matches!(self.mode, Mode::Command);
            if at_boundary && self.shared.shutdown.is_cancelled() {
                conn.push(&Reply::SHUTTING_DOWN);
                let _ = conn.flush().await;
                return Outcome::Closed(Disconnect::Shutdown);
            }
            if let Err(e) = conn.flush().await {
                return Outcome::Closed(Disconnect::Io(e.to_string()));
            }
            let deadline = self.read_deadline(!conn.input().is_empty());
            let bulk = !at_boundary;
            conn.small_reads = self.tx.as_ref().is_some_and(|tx| tx.body.spilled_len() > 0);
            let shutdown = self.shared.shutdown.clone();
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, conn.read_more(bulk)) => r,
                _ = shutdown.cancelled(), if at_boundary => continue,
                // Stress mode changed: the deadline follows it.
                _ = self.stress.changed() => continue,
            };
            match read {
                Err(_) => {
                    conn.push(&Reply::TIMEOUT);
                    let _ = conn.flush().await;
                    return Outcome::Closed(Disconnect::Timeout);
                }
                Ok(Ok(0)) => return Outcome::Closed(Disconnect::PeerClosed),
                Ok(Ok(n)) => self.note_read(n),
                Ok(Err(e)) => return Outcome::Closed(Disconnect::Io(e.to_string())),
            }
        }
    }

    /// Processes one item of buffered input.
    async fn step<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Connection<S>) -> Step {
        // A BDAT chunk may be complete with no input left (BDAT 0 LAST).
        if conn.input().is_empty() && !matches!(self.mode, Mode::Bdat { .. }) {
            return Step::NeedMore;
        }
        self.follow_reload();
        match &self.mode {
            Mode::Command => self.command_step(conn).await,
            Mode::Data(_) => self.data_step(conn).await,
            Mode::Bdat { .. } => self.bdat_step(conn).await,
        }
    }

    /// One command line, if complete: parsed, checked against the
    /// pipelining rules, handled, answered.
    async fn command_step<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Connection<S>) -> Step {
        let (line, used) = self.lines.ingest(conn.input());
        let parsed = match line {
            Line::NeedsMoreData => {
                conn.consume(used);
                return Step::NeedMore;
            }
            Line::TooLong => Err((Reply::LINE_TOO_LONG, "command line too long".to_string())),
            Line::Complete(l) => crate::proto::parse(l).map_err(|e| (e.reply(), e.to_string())),
        };
        conn.consume(used);
        // Pipelining is allowed only after an EHLO reply offered it.
        let more = !conn.input().is_empty();
        let verb = parsed.as_ref().map_or("invalid", |c| c.verb());
        let (reply, step) = match parsed {
            Ok(cmd) if self.no_service && cmd != Command::Quit => {
                self.discard_bdat(&cmd);
                (Some(Reply::NO_SERVICE), Step::Continue)
            }
            Ok(cmd) if more && self.improper_pipelining(&cmd) => {
                self.discard_bdat(&cmd);
                let why = format!("pipelined after {} without PIPELINING", cmd.verb());
                self.refuse_service(false, why);
                (Some(Reply::IMPROPER_PIPELINING), Step::Continue)
            }
            Ok(cmd) => self.dispatch(cmd).await,
            Err((reply, reason)) => {
                self.protocol_error(&reply, reason);
                (Some(reply), Step::Continue)
            }
        };
        if let Some(r) = &reply {
            self.shared.events.metrics().command(verb, r.code);
        }
        match reply {
            Some(reply) => self.reply(conn, reply, step).await,
            None => step,
        }
    }

    /// Message text after DATA, up to the final dot.
    async fn data_step<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Connection<S>) -> Step {
        let (Mode::Data(rx), Some(tx)) = (&mut self.mode, self.tx.as_mut()) else {
            self.mode = Mode::Command;
            return Step::Continue;
        };
        let (status, used) = rx.ingest(conn.input(), &mut tx.body.mem);
        conn.consume(used);
        self.feed_stream(false).await;
        self.spill_body().await;
        match status {
            DataStatus::NeedsMoreData => Step::NeedMore,
            DataStatus::Done => {
                let Mode::Data(rx) = std::mem::replace(&mut self.mode, Mode::Command) else {
                    unreachable!("mode checked above")
                };
                let reply = self.finish_message(rx.problem()).await;
                self.reply(conn, reply, Step::Continue).await
            }
        }
    }

    /// The octets of a BDAT chunk (or of one that is refused and skipped).
    async fn bdat_step<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Connection<S>) -> Step {
        let Mode::Bdat { last, refuse, discard } = &mut self.mode else {
            return Step::Continue;
        };
        let last = *last;
        let complete = if refuse.is_some() {
            let take = (*discard).min(conn.input().len() as u64);
            *discard -= take;
            conn.consume(take as usize);
            *discard == 0
        } else {
            let Some(rx) = self
                .tx
                .as_mut()
                .and_then(|tx| tx.bdat.as_mut().map(|rx| (rx, &mut tx.body.mem)))
            else {
                self.mode = Mode::Command;
                return Step::Continue;
            };
            let (complete, used) = rx.0.ingest(conn.input(), rx.1);
            conn.consume(used);
            self.feed_stream(false).await;
            self.spill_body().await;
            complete
        };
        if !complete {
            return Step::NeedMore;
        }
        let Mode::Bdat { refuse, .. } = std::mem::replace(&mut self.mode, Mode::Command) else {
            unreachable!("mode checked above")
        };
        let reply = self.bdat_chunk_done(last, refuse).await;
        self.shared.events.metrics().command("BDAT", reply.code);
        self.reply(conn, reply, Step::Continue).await
    }

    /// Early-talker test: with `policy.greet_delay`, waits that long for
    /// silence before the banner; input that is already there counts too.
    /// Returns the evidence if the client talked first.
    async fn pregreet<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
    ) -> Result<Option<String>, Disconnect> {
        let policy = &self.shared.config.policy;
        if !policy.reject_early_talkers || self.ctx.allowlisted || policy.greet_delay.is_zero() {
            return Ok(None);
        }
        match tokio::time::timeout(policy.greet_delay, conn.read_more(false)).await {
            Err(_) => Ok(None),
            Ok(Ok(0)) => Err(Disconnect::PeerClosed),
            Ok(Ok(_)) => {
                let head = String::from_utf8_lossy(&conn.input()[..conn.input().len().min(40)]).into_owned();
                Ok(Some(format!("talked before the greeting: {head:?}")))
            }
            Ok(Err(e)) => Err(Disconnect::Io(e.to_string())),
        }
    }

    /// From now on the client gets no service (503 to everything but QUIT);
    /// reported as a pregreet refusal.
    pub(super) fn refuse_service(&mut self, pregreet: bool, evidence: String) {
        self.no_service = true;
        let (session, ip) = (self.id, self.peer.ip());
        self.shared.events.emit(if pregreet {
            Event::Pregreet { session, ip, evidence }
        } else {
            Event::ProtocolError {
                session,
                ip,
                reply: Reply::IMPROPER_PIPELINING,
                evidence,
            }
        });
    }

    /// Queues a reply, counting errors; too many errors end the session.
    /// After `limits.tarpit_after_errors` errors, each further error reply
    /// waits `tarpit_delay` times the number of errors over the limit
    /// (at most ten times), so dictionary attacks slow to a crawl; at
    /// `server.max_errors` the session ends with 421.
    async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Connection<S>,
        reply: Reply,
        step: Step,
    ) -> Step {
        if reply.is_permanent() {
            self.errors += 1;
            let limits = &self.shared.config.limits;
            let stress = &self.shared.stress;
            if self.errors >= stress.max_errors(self.shared.config.server.max_errors) {
                conn.push(&reply);
                conn.push(&Reply::TOO_MANY_ERRORS);
                return Step::Close(Disconnect::TooManyErrors);
            }
            let tarpit_after = stress.tarpit_after(limits.tarpit_after_errors);
            if tarpit_after != 0 && self.errors > tarpit_after && !self.ctx.allowlisted {
                let over = (self.errors - tarpit_after).min(10);
                let _ = conn.flush().await;
                tokio::time::sleep(limits.tarpit_delay * over).await;
            }
        }
        conn.push(&reply);
        step
    }

    /// True if input after `cmd` arrived before its reply could have been
    /// read, while PIPELINING is not in effect: after EHLO/HELO itself, or
    /// anywhere in a HELO session.
    fn improper_pipelining(&self, cmd: &Command) -> bool {
        if !self.shared.config.policy.reject_early_talkers || self.ctx.allowlisted {
            return false;
        }
        match cmd {
            Command::Ehlo(_) | Command::Helo(_) => true,
            // BDAT octets legitimately follow the command.
            Command::Bdat { .. } | Command::Quit => false,
            _ => self.helo.is_some() && !self.esmtp,
        }
    }

    /// A refused BDAT's octets still follow it: skip them.
    fn discard_bdat(&mut self, cmd: &Command) {
        if let Command::Bdat { size, last } = cmd {
            self.mode = Mode::Bdat {
                last: *last,
                refuse: Some(Reply::NO_SERVICE),
                discard: *size,
            };
        }
    }

    async fn dispatch(&mut self, cmd: Command) -> (Option<Reply>, Step) {
        if let Command::Bdat { size, last } = cmd {
            self.handle_bdat(size, last);
            return (None, Step::Continue);
        }
        let (reply, step) = match cmd {
            Command::Ehlo(host) => (self.handle_ehlo(host, true).await, Step::Continue),
            Command::Helo(host) => (self.handle_ehlo(host, false).await, Step::Continue),
            Command::Mail { from, params } => (self.handle_mail(from, params).await, Step::Continue),
            Command::Rcpt { to, params } => (self.handle_rcpt(to, params).await, Step::Continue),
            Command::RcptPostmaster { params } => {
                let to = self.shared.config.recipients.postmaster.clone();
                (self.handle_rcpt(to, params).await, Step::Continue)
            }
            Command::Data => (self.handle_data(), Step::Continue),
            Command::Bdat { .. } => unreachable!("handled above"),
            Command::Rset => (self.handle_rset(), Step::Continue),
            Command::Noop => (Reply::NOOP_OK, Step::Continue),
            Command::Quit => (Reply::BYE, Step::Close(Disconnect::Quit)),
            Command::Vrfy => (Reply::VRFY_CANNOT, Step::Continue),
            Command::Expn => (Reply::NOT_IMPLEMENTED, Step::Continue),
            Command::Help => (Reply::HELP, Step::Continue),
            Command::StartTls => self.handle_starttls(),
        };
        (Some(reply), step)
    }

    pub(super) fn protocol_error(&self, reply: &Reply, evidence: impl Into<String>) {
        self.shared.events.emit(Event::ProtocolError {
            session: self.id,
            ip: self.peer.ip(),
            reply: reply.clone(),
            evidence: evidence.into(),
        });
    }
}

#[cfg(test)]
mod tests;
