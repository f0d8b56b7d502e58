//! One handler per SMTP verb. Each returns the [`Reply`] to send; none
//! writes to the socket.

use std::fmt::Write as _;

use super::session::{Mode, Session, Step, Transaction};
use crate::events::{Event, Refusal, Tx, Via};
use crate::mail::date::{now_secs, rfc5322_date};
use crate::mail::envelope::{Envelope, Recipient};
use crate::pipeline::{Arrived, Outcome, STREAM_BATCH};
use crate::policy::{Decision, Stage};
use crate::proto::{BdatReceiver, BodyProblem, DataReceiver, MailParams, Mailbox, RcptParams, Reply};
use crate::scan::Fed;
use crate::spool::incoming::BodyBuf;

impl Session {
    // === EHLO / HELO ===

    pub(super) async fn handle_ehlo(&mut self, host: String, esmtp: bool) -> Reply {
        if let Some(r) = self.run_checks(Stage::Helo(&host)).await {
            return r;
        }
        self.tx = None;
        self.esmtp = esmtp;
        let cfg = &self.shared.config.server;
        let greeting = format!("{} Hello {} [{}]", cfg.hostname, host, self.peer.ip());
        self.helo = Some(host);
        if !esmtp {
            return Reply::hello(greeting);
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
        Reply::hello(text)
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
        if !self.shared.pipeline.room_for(params.size.unwrap_or(0)) {
            return Reply::NO_STORAGE;
        }
        let helo = self.helo.clone();
        let stage = Stage::MailFrom {
            from: from.as_ref(),
            helo: helo.as_deref(),
        };
        self.ctx.start_dns_budget(self.shared.config.dns.budget);
        if let Some(r) = self.run_checks(stage).await {
            return r;
        }
        self.tx = Some(Transaction {
            id: self.shared.new_message_id(),
            mail_from: from,
            params,
            rcpts: Vec::new(),
            body: BodyBuf::default(),
            trace_len: 0,
            bdat: None,
            stream: None,
            streamed: Fed::default(),
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
        // The same mailbox again (the domain is compared without case or
        // trailing dot, a quoted local part by its content): one recipient.
        if tx.rcpts.iter().any(|r| r.addr == to) {
            return Reply::RCPT_OK;
        }
        let from = tx.mail_from.clone();
        let stage = Stage::RcptTo {
            rcpt: &to,
            from: from.as_ref(),
        };
        if let Some(r) = self.run_checks(stage).await {
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
        if !self.shared.pipeline.room_for(0) {
            return Reply::NO_STORAGE;
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
        let first = self.tx.as_ref().is_some_and(|t| t.bdat.is_none());
        let mut refuse = self.check_ready_for_body();
        if refuse.is_none() && first && !self.shared.pipeline.room_for(0) {
            refuse = Some(Reply::NO_STORAGE);
        }
        if refuse.is_none() {
            let limits = self.shared.body_limits();
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
            Reply::chunk_received(n)
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
        let stream = self.shared.pipeline.start_stream();
        if let Some(tx) = self.tx.as_mut() {
            tx.body = BodyBuf::with_head(header.as_bytes());
            tx.trace_len = header.len();
            tx.stream = stream;
            tx.streamed = Fed::default();
        }
    }

    /// After a read: the body's octets stay in memory while the pool has
    /// room (`server.body_memory`), else they go to its file; the streamed
    /// scan gets them first (a scan that has not yet seen the whole header
    /// block is given up, and the message is scanned whole at the end).
    pub(super) async fn spill_body(&mut self) {
        let Some(dir) = self.shared.pipeline.incoming.as_ref() else {
            return;
        };
        let Some(tx) = self.tx.as_mut() else { return };
        if tx.body.keep(dir) {
            return;
        }
        if let Some(stream) = tx.stream.as_mut() {
            if tx.streamed.head {
                crate::scan::feed(stream.as_mut(), &tx.body.mem, &mut tx.streamed, STREAM_BATCH, true).await;
            } else {
                tx.stream = None;
            }
        }
        tx.body.spill(dir);
        tx.streamed.upto = 0;
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
        crate::scan::feed(stream.as_mut(), &body.mem, streamed, STREAM_BATCH, all).await;
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

    /// End of DATA / BDAT LAST: the pipeline checks the message and
    /// stores it durably; 250 only then.
    pub(super) async fn finish_message(&mut self, problem: Option<BodyProblem>) -> Reply {
        let Some(tx) = self.tx.take() else {
            return Reply::MAIL_FIRST;
        };
        let id = tx.id.clone();
        let tx_info = self.tx_info(tx.mail_from.as_ref());
        let envelope = Envelope {
            id: tx.id,
            received_at: now_secs(),
            client_ip: self.peer.ip(),
            helo: self.helo.clone().unwrap_or_default(),
            mail_from: tx.mail_from,
            body: tx.params.body,
            smtputf8: tx.params.smtputf8,
            ret: tx.params.ret,
            envid: tx.params.envid,
            rcpts: tx.rcpts,
            scan_pending: false,
            client_name: self.ctx.rdns.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            esmtp: self.esmtp,
            generated: None,
        };
        let received = Arrived {
            session: self.id,
            envelope,
            body: tx.body,
            trace_len: tx.trace_len,
            problem,
            stream: tx.stream,
            streamed: tx.streamed,
            dns_deadline: self.ctx.dns_deadline(),
        };
        match self.shared.pipeline.process(received).await {
            Outcome::Accepted {
                scan,
                size,
                rcpts,
                message_id,
            } => {
                self.messages += 1;
                self.shared.events.emit(Event::MessageAccepted {
                    session: self.id,
                    ip: self.peer.ip(),
                    id: id.clone(),
                    tx: tx_info,
                    size,
                    rcpts,
                    scan,
                    message_id,
                });
                Reply::queued(&id)
            }
            Outcome::Refused(r) => self.refuse_message(&id, tx_info, r),
        }
    }

    /// The one place a refused message is reported: the event its reason
    /// calls for, and the reply.
    fn refuse_message(&self, id: &str, tx: Tx, r: Refusal) -> Reply {
        if let Some(e) = crate::pipeline::refusal_event(self.id, self.peer.ip(), id.to_string(), tx, &r) {
            self.shared.events.emit(e);
        }
        r.reply
    }

    /// The HELO name and sender for a message event.
    fn tx_info(&self, from: Option<&Mailbox>) -> Tx {
        Tx {
            helo: self.helo.clone().unwrap_or_default(),
            from: from.map(|m| m.to_string()).unwrap_or_default(),
            via: crate::events::Via::Smtp,
        }
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
        let refusal = match verdict.decision {
            Decision::Continue => return None,
            Decision::Reject(r) | Decision::Defer(r) => r,
        };
        let reply = refusal.reply.clone();
        let tx = self.tx_info(match &stage {
            Stage::MailFrom { from, .. } => *from,
            _ => self.tx.as_ref().and_then(|t| t.mail_from.as_ref()),
        });
        let id = self.tx.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        let at = crate::policy::Refused {
            via: Via::Smtp,
            session: self.id,
            ip: self.peer.ip(),
            id,
            tx,
        };
        self.shared.events.emit(at.event(&stage, verdict.check, refusal));
        Some(reply)
    }
}
