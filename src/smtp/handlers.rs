//! One handler per SMTP verb. Each returns the [`Reply`] to send; none
//! writes to the socket.

use std::fmt::Write as _;

use super::session::{Mode, STREAM_BATCH, Session, Step, Transaction};
use crate::events::Event;
use crate::mail::date::{now_secs, rfc5322_date};
use crate::mail::envelope::{Envelope, Recipient};
use crate::policy::{Decision, Stage};
use crate::proto::{BdatReceiver, BodyProblem, DataReceiver, MailParams, Mailbox, RcptParams, Reply, scan_headers};
use crate::scan::admission::Mode as ScanMode;
use crate::scan::{Inspected, OnFailure, Verdict};

mod spam;

impl Session {
    // === EHLO / HELO ===

    pub(super) async fn handle_ehlo(&mut self, host: String, esmtp: bool) -> Reply {
        if let Some(r) = self.run_checks(Stage::Helo(&host)).await {
            return r;
        }
        self.tx = None;
        self.esmtp = esmtp;
        *self.ctx.helo.lock().unwrap_or_else(|p| p.into_inner()) = Some(host.clone());
        let cfg = &self.shared.config.server;
        let greeting = format!("{} Hello {} [{}]", cfg.hostname, host, self.peer.ip());
        self.helo = Some(host);
        if !esmtp {
            return Reply::owned(250, "", greeting);
        }
        let mut text = greeting;
        let _ = write!(
            text,
            "\nPIPELINING\nSIZE {}\n8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES\nCHUNKING",
            cfg.max_message_size
        );
        if self.shared.tls.is_some() && !self.tls {
            text.push_str("\nSTARTTLS");
        }
        Reply::owned(250, "", text)
    }

    // === MAIL ===

    pub(super) async fn handle_mail(&mut self, from: Option<Mailbox>, params: MailParams) -> Reply {
        if self.helo.is_none() {
            return Reply::HELO_FIRST;
        }
        if self.tx.is_some() {
            return Reply::NESTED_MAIL;
        }
        if params
            .size
            .is_some_and(|s| s > self.shared.config.server.max_message_size as u64)
        {
            return Reply::SIZE_EXCEEDED;
        }
        if from.as_ref().is_some_and(Mailbox::is_utf8) && !params.smtputf8 {
            return Reply::SMTPUTF8_REQUIRED;
        }
        if let Some(r) = self.run_checks(Stage::MailFrom(from.as_ref())).await {
            return r;
        }
        *self.ctx.mail_from.lock().unwrap_or_else(|p| p.into_inner()) = Some(from.clone());
        self.tx = Some(Transaction {
            id: self.shared.new_message_id(),
            mail_from: from,
            params,
            rcpts: Vec::new(),
            body: Vec::new(),
            trace_len: 0,
            bdat: None,
            stream: None,
            streamed: 0,
        });
        Reply::SENDER_OK
    }

    // === RCPT ===

    pub(super) async fn handle_rcpt(&mut self, to: Mailbox, params: RcptParams) -> Reply {
        let Some(tx) = &self.tx else {
            return Reply::MAIL_FIRST;
        };
        if tx.rcpts.len() >= self.shared.config.server.max_recipients {
            return Reply::TOO_MANY_RCPTS;
        }
        if to.is_utf8() && !tx.params.smtputf8 {
            return Reply::SMTPUTF8_REQUIRED;
        }
        if let Some(r) = self.run_checks(Stage::RcptTo(&to)).await {
            return r;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.rcpts.push(Recipient {
                addr: to,
                notify: params.notify,
                orcpt: params.orcpt,
            });
        }
        self.shared.events.metrics().recipient_accepted();
        Reply::RCPT_OK
    }

    // === DATA ===

    pub(super) fn handle_data(&mut self) -> Reply {
        if let Some(r) = self.check_ready_for_body() {
            return r;
        }
        let Some(tx) = self.tx.as_mut() else {
            return Reply::MAIL_FIRST;
        };
        if tx.bdat.is_some() {
            return Reply::BDAT_MIXED;
        }
        self.start_body();
        self.mode = Mode::Data(DataReceiver::new(self.shared.body_limits()));
        Reply::START_DATA
    }

    // === BDAT ===

    /// No immediate reply: `step` answers once the chunk has been read.
    pub(super) fn handle_bdat(&mut self, size: u64, last: bool) {
        // The chunk follows the command whatever we answer: read it either
        // way, and answer after it.
        let refuse = self.check_ready_for_body();
        if refuse.is_none() {
            let limits = self.shared.body_limits();
            let first = self.tx.as_ref().is_some_and(|t| t.bdat.is_none());
            if first {
                self.start_body();
            }
            if let Some(tx) = self.tx.as_mut() {
                let rx = tx.bdat.get_or_insert_with(|| BdatReceiver::new(limits));
                rx.start_chunk(size);
            }
        }
        self.mode = Mode::Bdat {
            last,
            refuse,
            discard: size,
        };
    }

    /// Called when a BDAT chunk is completely read.
    pub(super) async fn bdat_chunk_done(&mut self, last: bool, refuse: Option<Reply>) -> Reply {
        if let Some(r) = refuse {
            return r;
        }
        if last {
            let problem = self
                .tx
                .as_mut()
                .and_then(|tx| tx.bdat.as_mut())
                .and_then(|rx| rx.problem());
            self.finish_message(problem).await
        } else {
            let n = self.tx.as_ref().and_then(|t| t.bdat.as_ref()).map_or(0, |r| r.size());
            Reply::owned(250, "2.0.0", format!("{n} octets received"))
        }
    }

    fn check_ready_for_body(&self) -> Option<Reply> {
        match &self.tx {
            None if self.helo.is_none() => Some(Reply::HELO_FIRST),
            None => Some(Reply::MAIL_FIRST),
            Some(tx) if tx.rcpts.is_empty() => Some(Reply::RCPT_FIRST),
            Some(_) => None,
        }
    }

    /// Starts the spooled body with our Received header, and a streamed
    /// virus scan when the scanner is keeping up.
    fn start_body(&mut self) {
        let header = self.received_header();
        let stream = self
            .shared
            .content
            .as_ref()
            .filter(|c| c.has_scanner() && !c.admission.over_budget())
            .and_then(|c| c.start_stream());
        if let Some(tx) = self.tx.as_mut() {
            tx.body = Vec::with_capacity(header.len() + 8192);
            tx.body.extend_from_slice(header.as_bytes());
            tx.trace_len = header.len();
            tx.stream = stream;
            tx.streamed = 0;
        }
    }

    /// Feeds the body received so far to the streamed scan, in batches
    /// (all of it when `all`). Waits when the scanner is behind.
    pub(super) async fn feed_stream(&mut self, all: bool) {
        let Some(tx) = self.tx.as_mut() else { return };
        let Transaction {
            stream: Some(stream),
            body,
            streamed,
            ..
        } = tx
        else {
            return;
        };
        crate::scan::feed(stream.as_mut(), body, streamed, STREAM_BATCH, all).await;
    }

    /// `Received:` trace header (RFC 5321 §4.4, protocol names RFC 3848/6531).
    fn received_header(&self) -> String {
        let Some(tx) = &self.tx else {
            return String::new();
        };
        let ip = self.peer.ip();
        let ip_lit = match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let proto = match (tx.params.smtputf8, self.esmtp, self.tls) {
            (true, _, false) => "UTF8SMTP",
            (true, _, true) => "UTF8SMTPS",
            (false, true, false) => "ESMTP",
            (false, true, true) => "ESMTPS",
            (false, false, false) => "SMTP",
            (false, false, true) => "SMTPS",
        };
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let mut h = format!(
            "Received: from {helo} ([{ip_lit}])\r\n\tby {} (sluice) with {proto} id {}",
            self.shared.config.server.hostname, tx.id
        );
        if tx.rcpts.len() == 1 {
            let _ = write!(h, "\r\n\tfor <{}>", tx.rcpts[0].addr);
        }
        let _ = write!(h, ";\r\n\t{}\r\n", rfc5322_date(now_secs()));
        h
    }

    /// End of DATA / BDAT LAST:
    /// the body is checked, stored durably, queued, and only then 250.
    pub(super) async fn finish_message(&mut self, problem: Option<BodyProblem>) -> Reply {
        let Some(tx) = self.tx.take() else {
            return Reply::MAIL_FIRST;
        };
        let cfg = &self.shared.config.server;

        // Step 1: problems found while receiving.
        if let Some(p) = problem {
            let (reply, reason) = match p {
                BodyProblem::TooBig => (Reply::SIZE_EXCEEDED, "size"),
                BodyProblem::LineTooLong => (Reply::DATA_LINE_TOO_LONG, "line_too_long"),
                BodyProblem::BareNewline => (Reply::BARE_NEWLINE, "bare_newline"),
            };
            return self.reject_message(reply, reason);
        }

        // Step 2: header section limits and loop detection.
        let info = scan_headers(&tx.body[tx.trace_len..], cfg.max_header_size);
        if info.size > cfg.max_header_size {
            return self.reject_message(Reply::HEADER_TOO_LARGE, "header_too_large");
        }
        if info.received >= cfg.max_received_headers {
            return self.reject_message(Reply::TOO_MANY_HOPS, "mail_loop");
        }

        // Step 3: content checks. A virus or banned part is refused here, in
        // the session (no bounce); a scan that could not be done is never a
        // pass: 451, or held unscanned in the spool when so configured.
        let mut tx = tx;
        let mut scan_mode = ScanMode::None;
        if let Some(content) = self.shared.content.clone() {
            let stream = tx.stream.take();
            let verdict = match content.inspect(&tx.body).await {
                Err(e) => Err(e),
                Ok(Inspected::Refused(v)) => Ok(v),
                Ok(Inspected::Bundle(_)) if !content.has_scanner() => Ok(Verdict::Clean),
                Ok(Inspected::Bundle(_))
                    if content.admission.over_budget()
                        && self
                            .shared
                            .deferred
                            .as_ref()
                            .is_some_and(|d| d.backlog() >= content.cfg.max_held) =>
                {
                    // Scanning is behind and the held backlog is full:
                    // the client waits, memory and disk do not grow.
                    return self.reject_message(
                        Reply::new(
                            451,
                            "4.7.1",
                            "Too much mail waiting for its virus scan, try again later",
                        ),
                        "scan_backlog",
                    );
                }
                Ok(Inspected::Bundle(bundle)) => {
                    scan_mode = content.admission.choose();
                    if scan_mode == ScanMode::Deferred {
                        Ok(Verdict::Clean)
                    } else {
                        let stream = match stream {
                            Some(mut s) => {
                                crate::scan::feed(s.as_mut(), &tx.body, &mut tx.streamed, STREAM_BATCH, true).await;
                                Some(s)
                            }
                            None => None,
                        };
                        content.virus_scan(&tx.body, bundle, stream).await
                    }
                }
            };
            match verdict {
                Ok(Verdict::Clean) => {}
                Ok(v) => return self.refuse_content(&tx.id, v),
                Err(e) => {
                    let room = self
                        .shared
                        .deferred
                        .as_ref()
                        .is_some_and(|d| d.backlog() < content.cfg.max_held);
                    let hold = content.cfg.on_failure == OnFailure::Hold && room;
                    self.shared.events.emit(Event::ScanFailed {
                        session: self.id,
                        ip: self.peer.ip(),
                        id: tx.id.clone(),
                        error: if hold {
                            format!("{e} (accepted and held)")
                        } else {
                            e.to_string()
                        },
                        held: hold,
                    });
                    if !hold {
                        return Reply::new(451, "4.7.1", "Message could not be scanned, try again later");
                    }
                    scan_mode = ScanMode::Deferred;
                }
            }
        }

        // Step 4: the spam score: reject, tempfail, quarantine, or go on
        // (with headers added).
        let mut quarantined = false;
        if let Some(spam) = self.shared.spam.clone() {
            match self.spam_step(&spam, &mut tx).await {
                Err(reply) => return reply,
                Ok(spam::SpamOutcome::Quarantined) => quarantined = true,
                Ok(spam::SpamOutcome::Deliver) => {}
            }
        }

        // Step 5: store durably (or quarantine); 250 only after the disk says so.
        let envelope = Envelope {
            id: tx.id.clone(),
            received_at: now_secs(),
            client_ip: self.peer.ip(),
            helo: self.helo.clone().unwrap_or_default(),
            mail_from: tx.mail_from,
            body: tx.params.body,
            smtputf8: tx.params.smtputf8,
            ret: tx.params.ret,
            envid: tx.params.envid,
            rcpts: tx.rcpts,
            scan_pending: scan_mode == ScanMode::Deferred,
            client_name: self.ctx.rdns.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            esmtp: self.esmtp,
            generated: None,
        };
        let rcpts = envelope.rcpts.len();
        let size = tx.body.len() - tx.trace_len;
        if quarantined {
            return self.quarantine_spam(envelope, tx.body, scan_mode).await;
        }
        let stored = match self.shared.spool.store(envelope, tx.body).await {
            Ok(s) => s,
            Err(e) => {
                self.shared.events.emit(Event::Warning {
                    component: "spool",
                    message: format!("{}: {e}", tx.id),
                });
                return self.reject_message(Reply::SPOOL_FAILED, "spool");
            }
        };

        // Step 6: hand to delivery (or to the deferred scan) and tell the client.
        match (&self.shared.deferred, scan_mode) {
            (Some(d), ScanMode::Deferred) => d.enqueue(stored),
            _ => self.shared.queue.enqueue(stored),
        }
        self.messages += 1;
        self.shared.events.emit(Event::MessageAccepted {
            session: self.id,
            ip: self.peer.ip(),
            id: tx.id.clone(),
            size,
            rcpts,
            scan: scan_mode.as_str(),
        });
        Reply::owned(250, "2.0.0", format!("Ok: queued as {}", tx.id))
    }

    /// The reply and event for a message the content checks refused.
    fn refuse_content(&self, id: &str, v: Verdict) -> Reply {
        let (session, ip, id) = (self.id, self.peer.ip(), id.to_string());
        let (reply, kind, what) = match v {
            Verdict::Virus(name) => {
                let reply = Reply::owned(554, "5.7.1", format!("Message rejected: virus found: {name}"));
                self.shared.events.emit(Event::VirusFound {
                    session,
                    ip,
                    id,
                    name,
                    mode: "in-session",
                });
                return reply;
            }
            Verdict::Banned(what) => (
                Reply::owned(554, "5.7.1", format!("Message rejected: {what}")),
                "banned",
                what,
            ),
            Verdict::Malformed(what) => (
                Reply::owned(554, "5.6.0", format!("Message rejected: {what}")),
                "malformed",
                what,
            ),
            Verdict::Clean => return Reply::MAIL_FIRST,
        };
        self.shared.events.emit(Event::ContentRejected {
            session,
            ip,
            id,
            kind,
            what,
            mode: "in-session",
        });
        reply
    }

    /// `reason` is the event's code (see [`Event::MessageRejected`]).
    fn reject_message(&self, reply: Reply, reason: &'static str) -> Reply {
        self.shared.events.emit(Event::MessageRejected {
            session: self.id,
            ip: self.peer.ip(),
            reply: reply.to_string(),
            reason,
        });
        reply
    }

    // === RSET ===

    pub(super) fn handle_rset(&mut self) -> Reply {
        self.tx = None;
        Reply::RESET_OK
    }

    // === STARTTLS ===

    pub(super) fn handle_starttls(&mut self) -> (Reply, Step) {
        if self.tls {
            return (Reply::TLS_ALREADY, Step::Continue);
        }
        if self.shared.tls.is_none() {
            return (Reply::NOT_IMPLEMENTED, Step::Continue);
        }
        (Reply::READY_TLS, Step::StartTls)
    }

    // === policy ===

    /// Runs the check chain for a stage; a reject or defer becomes the reply
    /// and an event.
    pub(super) async fn run_checks(&mut self, stage: Stage<'_>) -> Option<Reply> {
        let verdict = self.shared.checks.run(&stage, &self.ctx).await?;
        let (reply, reason, evidence) = match verdict.decision {
            Decision::Continue => return None,
            Decision::Reject {
                reply,
                reason,
                evidence,
            }
            | Decision::Defer {
                reply,
                reason,
                evidence,
            } => (reply, reason, evidence),
        };
        let (session, ip, r) = (self.id, self.peer.ip(), reply.to_string());
        let evidence = format!("{}: {evidence}", verdict.check);
        self.shared.events.emit(match &stage {
            Stage::Connect => Event::ConnectRejected {
                session,
                ip,
                reason,
                reply: r,
                evidence,
            },
            Stage::Helo(h) => Event::HeloRejected {
                session,
                ip,
                helo: h.to_string(),
                reason,
                reply: r,
                evidence,
            },
            Stage::MailFrom(_) => Event::MailRejected {
                session,
                ip,
                reason,
                reply: r,
                evidence,
            },
            Stage::RcptTo(rcpt) => Event::RcptRejected {
                session,
                ip,
                rcpt: rcpt.to_string(),
                reason,
                reply: r,
                evidence,
            },
        });
        Some(reply)
    }
}
