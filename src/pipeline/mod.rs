//! The content pipeline at the end of DATA, apart from the SMTP session:
//! the session frames the message and asks; this module decides and
//! stores; the session replies.
//!
//! In order: problems found while receiving, the header section's limits
//! and loop detection, the content checks (MIME, banned parts, the virus
//! scan in session or deferred by admission control), the spam score and
//! its action, then the spool (or the quarantine), and the hand-over to
//! delivery or to the deferred scan. The result is an [`Outcome`]: accepted
//! (250 only now: the message is on disk) or a typed [`Refusal`].

mod spam;

pub use spam::SpamMarks;

use std::net::IpAddr;
use std::sync::Arc;

use crate::delivery::queue::QueueHandle;
use crate::events::{
    Cause, ContentKind, Event, EventBus, Reason, Refusal, ScanMode, Tx, Unscannable, UnscannableAction, Via,
};
use crate::mail::envelope::Envelope;
use crate::proto::{BodyProblem, HeaderInfo, Reply, scan_headers};
use crate::quarantine::Quarantine;
use crate::scan::deferred::DeferredHandle;
use crate::scan::{ContentFilter, Fed, Inspected, OnFailure, ScanStream, Verdict};
use crate::spam::filter::SpamFilter;
use crate::spool::Spool;
use crate::spool::incoming::{BodyBudget, BodyBuf, IncomingDir};

/// Octets collected before they are fed to a streamed scan.
pub const STREAM_BATCH: usize = 32 * 1024;

/// A message as the session hands it over at the end of DATA: its body
/// may be partly in a file (see [`crate::spool::incoming`]).
pub struct Arrived {
    pub session: u64,
    pub envelope: Envelope,
    pub body: BodyBuf,
    /// Length of the trace headers at the start of `body`.
    pub trace_len: usize,
    pub problem: Option<BodyProblem>,
    /// The virus scan fed while the body arrived, and what it has seen of
    /// the octets still in memory (`body.mem`).
    pub stream: Option<Box<dyn ScanStream>>,
    pub streamed: Fed,
    /// When the transaction's DNS budget runs out (`dns.budget`).
    pub dns_deadline: Option<tokio::time::Instant>,
}

/// A message with its whole body in memory, as the checks see it.
pub struct Received {
    /// The session that received it (0 for none), for the events.
    pub session: u64,
    pub envelope: Envelope,
    /// The body as it will be spooled: our Received header, then the
    /// client's octets.
    pub body: Vec<u8>,
    /// Length of the trace headers at the start of `body`.
    pub trace_len: usize,
    /// What the receiver found wrong (size, lines, bare newlines).
    pub problem: Option<BodyProblem>,
    /// The virus scan fed while the body arrived, if one was started, and
    /// how much of `body` it has seen.
    pub stream: Option<Box<dyn ScanStream>>,
    pub streamed: Fed,
    /// When the transaction's DNS budget runs out: authentication ends
    /// then at the latest.
    pub dns_deadline: Option<tokio::time::Instant>,
    /// How it came: a message from the milter is Postfix's to keep, so it
    /// is never accepted unscanned (no deferred scan).
    pub via: Via,
}

impl Received {
    /// The transaction, as message events name it.
    pub fn tx(&self) -> Tx {
        Tx {
            via: self.via,
            ..Tx::of(&self.envelope)
        }
    }
}

/// The refusal for what the receiver found wrong.
fn body_problem(p: BodyProblem) -> Refusal {
    let (reply, reason) = match p {
        BodyProblem::TooBig => (Reply::SIZE_EXCEEDED, Reason::Size),
        BodyProblem::LineTooLong => (Reply::DATA_LINE_TOO_LONG, Reason::LineTooLong),
        BodyProblem::BareNewline => (Reply::BARE_NEWLINE, Reason::BareNewline),
    };
    Refusal::new(reply, reason, "")
}

/// What the checks made of a message they let through.
#[derive(Debug)]
pub struct Passed {
    pub scan: ScanMode,
    /// Its Message-ID field, if it has one.
    pub message_id: Option<String>,
    /// The spam step's header changes and quarantine (none when spam
    /// scoring is off).
    pub spam: Option<SpamMarks>,
    /// An archive nobody can look into, with `scan.unscannable =
    /// "quarantine"`: the message goes to the quarantine (no spam step).
    pub unscannable: Option<Unscannable>,
}

/// The event a refused message calls for (none for spam: the
/// `spam_scored` event already says it), for the front end and the milter
/// alike.
pub fn refusal_event(session: u64, ip: IpAddr, id: String, tx: Tx, r: &Refusal) -> Option<Event> {
    let Refusal {
        reply,
        reason,
        evidence,
    } = r;
    let evidence = evidence.clone();
    Some(match reason {
        Reason::Virus { name } => Event::VirusFound {
            session,
            ip,
            id,
            tx,
            name: name.clone(),
            mode: ScanMode::InSession,
        },
        Reason::BannedPart | Reason::Malformed => Event::ContentRejected {
            session,
            ip,
            id,
            tx,
            kind: if *reason == Reason::BannedPart {
                ContentKind::Banned
            } else {
                ContentKind::Malformed
            },
            what: evidence,
            mode: ScanMode::InSession,
        },
        Reason::Unscannable { unscannable } => Event::Unscannable {
            session,
            ip,
            id,
            tx,
            kind: *unscannable,
            what: evidence,
            action: crate::events::UnscannableAction::Reject,
            mode: ScanMode::InSession,
        },
        Reason::ScanFailed => Event::ScanFailed {
            session,
            ip,
            id,
            tx,
            error: evidence,
            held: false,
        },
        Reason::Spam => return None,
        reason => Event::MessageRejected {
            session,
            ip,
            id,
            tx,
            reply: reply.clone(),
            reason: reason.clone(),
        },
    })
}

/// What became of a message.
#[derive(Debug)]
pub enum Outcome {
    /// Stored durably (spool, or quarantine for spam): the client gets 250.
    Accepted {
        scan: ScanMode,
        size: usize,
        rcpts: usize,
        /// Its Message-ID field, if it has one.
        message_id: Option<String>,
    },
    Refused(Refusal),
}

/// Header-section limits of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    pub max_header_size: usize,
    pub max_received_headers: usize,
}

/// The pipeline's parts (built once by `app`).
pub struct Pipeline {
    pub limits: HeaderLimits,
    /// Free bytes the spool must keep (`spool.min_free`); 0: no check.
    pub min_free: u64,
    /// Content checks (MIME decoding, banned attachments, virus scan), if
    /// any are configured.
    pub content: Option<Arc<ContentFilter>>,
    /// Where messages accepted before their scan go (admission control).
    pub deferred: Option<DeferredHandle>,
    /// Spam scoring, unless `spam.enabled = false`.
    pub spam: Option<Arc<SpamFilter>>,
    pub spool: Arc<dyn Spool>,
    /// The memory budget for whole bodies (`server.check_memory`),
    /// shared with delivery.
    pub check_memory: BodyBudget,
    /// Where bodies larger than `server.body_memory` go while they arrive
    /// (none: they stay in memory, as with the in-memory spool of tests).
    pub incoming: Option<Arc<IncomingDir>>,
    pub queue: QueueHandle,
    /// Where quarantined spam goes.
    pub quarantine: Arc<Quarantine>,
    pub events: EventBus,
}

impl Pipeline {
    /// A virus scan to feed while the body arrives, when the scanner is
    /// keeping up.
    pub fn start_stream(&self) -> Option<Box<dyn ScanStream>> {
        self.content
            .as_ref()
            .filter(|c| c.has_scanner() && !c.admission.over_budget())
            .and_then(|c| c.start_stream())
    }

    /// Whether the spool has room for a message of `size` bytes (one and a
    /// half times, as Postfix asks) above `spool.min_free`, checked at MAIL
    /// and at DATA so a full disk is refused before the body is sent.
    pub fn room_for(&self, size: u64) -> bool {
        if self.min_free == 0 {
            return true;
        }
        match self.spool.free_space() {
            Some(free) => free >= self.min_free.saturating_add(size.saturating_mul(3) / 2),
            None => true,
        }
    }

    /// Decides about a message that has just arrived, and stores it when
    /// it is accepted. Its body is read into memory (from its file, if it
    /// went to one) once the memory budget has room for it.
    pub async fn process(&self, msg: Arrived) -> Outcome {
        if let Some(p) = msg.problem {
            return Outcome::Refused(body_problem(p));
        }
        // Twice its size: the body, and what decoding and scoring make of it.
        let _permit = self.check_memory.acquire(msg.body.len().saturating_mul(2)).await;
        let spilled = msg.body.spilled_len() as usize;
        let body = match msg.body.load() {
            Ok(b) => b,
            Err(e) => {
                self.events.emit(Event::Warning {
                    component: "spool",
                    message: format!("{}: incoming body: {e}", msg.envelope.id),
                });
                return Outcome::Refused(Refusal::new(Reply::SPOOL_FAILED, Reason::Spool, e.to_string()));
            }
        };
        let streamed = Fed {
            head: msg.streamed.head,
            upto: msg.streamed.upto + spilled,
        };
        self.check(Received {
            session: msg.session,
            envelope: msg.envelope,
            body,
            trace_len: msg.trace_len,
            problem: None,
            stream: msg.stream,
            streamed,
            dns_deadline: msg.dns_deadline,
            via: Via::Smtp,
        })
        .await
    }

    /// Decides about a message another MTA holds (the milter), under the
    /// memory budget: a refusal, or what to change in its header section.
    /// Nothing is stored.
    pub async fn judge(&self, mut msg: Received) -> Result<Passed, Refusal> {
        let _permit = self
            .check_memory
            .acquire((msg.body.len() as u64).saturating_mul(2))
            .await;
        self.checks(&mut msg).await
    }

    /// Steps 1 to 4: form, content, spam. An unscannable archive is said
    /// here (an event) whatever the policy; one to quarantine skips the
    /// spam step.
    async fn checks(&self, msg: &mut Received) -> Result<Passed, Refusal> {
        let message_id = self.form(msg)?.message_id;
        let (scan, unscannable) = self.content_step(msg).await?;
        msg.envelope.scan_pending = scan == ScanMode::Deferred;
        // Accepted for a deferred scan: that scan says it (once).
        let unscannable = unscannable.filter(|(_, a)| !(scan == ScanMode::Deferred && *a == UnscannableAction::Accept));
        if let Some((u, action)) = &unscannable {
            self.events.emit(Event::Unscannable {
                session: msg.session,
                ip: msg.envelope.client_ip,
                id: msg.envelope.id.clone(),
                tx: Tx {
                    via: msg.via,
                    ..Tx::of(&msg.envelope)
                },
                kind: u.kind,
                what: u.what.clone(),
                action: *action,
                mode: scan,
            });
        }
        let unscannable = unscannable
            .filter(|(_, a)| *a == UnscannableAction::Quarantine)
            .map(|(u, _)| u);
        let spam = match &self.spam {
            Some(spam) if unscannable.is_none() => Some(self.spam_step(spam, msg).await?),
            _ => None,
        };
        Ok(Passed {
            scan,
            message_id,
            spam,
            unscannable,
        })
    }

    /// Decides about `msg`, and stores it when it is accepted.
    pub async fn check(&self, mut msg: Received) -> Outcome {
        let Passed {
            scan,
            message_id,
            spam,
            unscannable,
        } = match self.checks(&mut msg).await {
            Ok(p) => p,
            Err(r) => return Outcome::Refused(r),
        };
        let quarantine = match (&unscannable, &spam) {
            (Some(u), _) => Some(Cause::Content(ContentKind::Unscannable, u.to_string())),
            (None, Some(m)) if m.quarantine => Some(Cause::Spam),
            _ => None,
        };
        if let Some(marks) = &spam {
            marks.apply(&mut msg.body, &mut msg.trace_len);
        }
        let rcpts = msg.envelope.rcpts.len();
        let size = msg.body.len() - msg.trace_len;
        let stored = match quarantine {
            Some(cause) => self.quarantine(msg, cause).await,
            None => self.store(msg, scan).await,
        };
        match stored {
            Ok(()) => Outcome::Accepted {
                scan,
                size,
                rcpts,
                message_id,
            },
            Err(r) => Outcome::Refused(r),
        }
    }

    /// Steps 1 and 2: what the receiver found, the header section's size
    /// and the Received count (a loop).
    fn form(&self, msg: &Received) -> Result<HeaderInfo, Refusal> {
        if let Some(p) = msg.problem {
            return Err(body_problem(p));
        }
        let info = scan_headers(&msg.body[msg.trace_len..], self.limits.max_header_size);
        if info.size > self.limits.max_header_size {
            let evidence = format!("header section of {} octets or more", info.size);
            return Err(Refusal::new(Reply::HEADER_TOO_LARGE, Reason::HeaderTooLarge, evidence));
        }
        if info.received >= self.limits.max_received_headers {
            let evidence = format!("{} Received headers", info.received);
            return Err(Refusal::new(Reply::TOO_MANY_HOPS, Reason::MailLoop, evidence));
        }
        Ok(info)
    }

    /// Step 3: the content checks. A virus or banned part is refused here,
    /// in the session (no bounce); a scan that could not be done is never
    /// a pass: 451, or held unscanned in the spool when so configured.
    /// What nobody could look into comes back with the policy's action
    /// when that is not "reject".
    async fn content_step(
        &self,
        msg: &mut Received,
    ) -> Result<(ScanMode, Option<(Unscannable, UnscannableAction)>), Refusal> {
        let Some(content) = self.content.clone() else {
            return Ok((ScanMode::None, None));
        };
        let mut mode = ScanMode::None;
        let stream = msg.stream.take();
        let (inspected, mut found) = match content.inspect(&msg.body, Some(msg.envelope.client_ip)).await {
            Ok(Inspected::Unscannable(u, bundle)) => (Ok(Inspected::Bundle(bundle)), Some(u)),
            other => (other, None),
        };
        let verdict = match inspected {
            Err(e) => Err(e),
            Ok(Inspected::Refused(v)) => Ok(v),
            Ok(Inspected::Unscannable(u, _)) => Ok(Verdict::Unscannable(u)),
            Ok(Inspected::Bundle(_)) if !content.has_scanner() => Ok(Verdict::Clean),
            Ok(Inspected::Bundle(_)) if content.admission.over_budget() && self.held_full(&content) => {
                // Scanning is behind and the held backlog is full: the
                // client waits, memory and disk do not grow.
                let evidence = format!("{} messages held for their scan", content.cfg.max_held);
                return Err(Refusal::new(Reply::SCAN_BACKLOG, Reason::ScanBacklog, evidence));
            }
            Ok(Inspected::Bundle(bundle)) => {
                // Mail from the milter stays Postfix's: scanned now or not taken.
                mode = match msg.via {
                    Via::Smtp | Via::Policy => content.admission.choose(),
                    Via::Milter => ScanMode::InSession,
                };
                if mode == ScanMode::Deferred {
                    Ok(Verdict::Clean)
                } else {
                    let stream = match stream {
                        Some(mut s) => {
                            crate::scan::feed(s.as_mut(), &msg.body, &mut msg.streamed, STREAM_BATCH, true).await;
                            Some(s)
                        }
                        None => None,
                    };
                    content.virus_scan(&msg.body, bundle, stream).await
                }
            }
        };
        let verdict = match verdict {
            Ok(Verdict::Clean) => match found.take() {
                Some(u) => Ok(Verdict::Unscannable(u)),
                None => Ok(Verdict::Clean),
            },
            v => v,
        };
        match verdict {
            Ok(Verdict::Clean) => Ok((mode, None)),
            Ok(Verdict::Unscannable(u)) => match content.cfg.unscannable_for(Some(msg.envelope.client_ip)) {
                UnscannableAction::Reject => Err(Refusal::new(
                    Reply::unscannable(&u.what),
                    Reason::Unscannable { unscannable: u.kind },
                    u.what,
                )),
                action => Ok((mode, Some((u, action)))),
            },
            Ok(Verdict::Virus(name)) => Err(Refusal::new(
                Reply::virus(&name),
                Reason::Virus { name: name.clone() },
                name,
            )),
            Ok(Verdict::Banned(what)) => Err(Refusal::new(Reply::banned_part(&what), Reason::BannedPart, what)),
            Ok(Verdict::Malformed(what)) => Err(Refusal::new(Reply::malformed(&what), Reason::Malformed, what)),
            Err(e) => {
                let hold =
                    content.cfg.on_failure == OnFailure::Hold && msg.via == Via::Smtp && !self.held_full(&content);
                if !hold {
                    return Err(Refusal::new(Reply::SCAN_FAILED, Reason::ScanFailed, e.to_string()));
                }
                self.events.emit(Event::ScanFailed {
                    session: msg.session,
                    ip: msg.envelope.client_ip,
                    id: msg.envelope.id.clone(),
                    tx: msg.tx(),
                    error: format!("{e} (accepted and held)"),
                    held: true,
                });
                Ok((ScanMode::Deferred, None))
            }
        }
    }

    /// The held backlog (deferred scans) is at `scan.max_held`.
    fn held_full(&self, content: &ContentFilter) -> bool {
        self.deferred
            .as_ref()
            .is_some_and(|d| d.backlog() >= content.cfg.max_held)
    }

    /// Step 5: the spool (250 only after the disk says so), then delivery
    /// or the deferred scan.
    async fn store(&self, msg: Received, scan: ScanMode) -> Result<(), Refusal> {
        let id = msg.envelope.id.clone();
        let stored = match self.spool.store(msg.envelope, msg.body).await {
            Ok(s) => s,
            Err(e) => {
                self.events.emit(Event::Warning {
                    component: "spool",
                    message: format!("{id}: {e}"),
                });
                return Err(Refusal::new(Reply::SPOOL_FAILED, Reason::Spool, e.to_string()));
            }
        };
        match (&self.deferred, scan) {
            (Some(d), ScanMode::Deferred) => d.enqueue(stored),
            _ => self.queue.enqueue(stored),
        }
        Ok(())
    }

    /// Puts a message the spam or the unscannable policy quarantines on
    /// disk (fsynced): the client sees an accepted message, nothing is
    /// delivered.
    async fn quarantine(&self, msg: Received, cause: Cause) -> Result<(), Refusal> {
        let q = self.quarantine.clone();
        let (ip, id, tx) = (msg.envelope.client_ip, msg.envelope.id.clone(), msg.tx());
        let Received { envelope, body, .. } = msg;
        let reason = cause.clone();
        let put = tokio::task::spawn_blocking(move || q.put(&envelope, &reason, &body)).await;
        let problem = match put {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(p) = problem {
            self.events.emit(Event::Warning {
                component: "quarantine",
                message: format!("{id}: {p}"),
            });
            return Err(Refusal::new(Reply::SPOOL_FAILED, Reason::Spool, p));
        }
        self.events.emit(Event::Quarantined {
            ip,
            id,
            tx,
            reason: cause,
        });
        Ok(())
    }
}
