//! End of DATA, after the virus checks: the spam score and its action.

use std::borrow::Cow;
use std::sync::Arc;

use super::super::session::{Session, Transaction};
use crate::events::Event;
use crate::proto::Reply;
use crate::spam::auth::{AuthContext, strip_forged_results};
use crate::spam::filter::{Action, SpamFilter, prefix_subject, spam_headers};

/// What the spam step decided for a message that goes on.
pub(in crate::smtp) enum SpamOutcome {
    /// Spool and deliver (possibly with added headers).
    Deliver,
    /// Accepted into the quarantine: 250, not delivered.
    Quarantined,
}

impl Session {
    /// Scores the message and applies the strictest action of its
    /// recipients' domains. Rewrites `tx.body` when headers are added:
    /// our Authentication-Results and X-Spam-* lines go on top (above our
    /// Received), forged Authentication-Results claiming our name are
    /// removed, the rest stays byte for byte.
    pub(in crate::smtp) async fn spam_step(
        &mut self,
        spam: &Arc<SpamFilter>,
        tx: &mut Transaction,
    ) -> Result<SpamOutcome, Reply> {
        let mail_from = tx.mail_from.as_ref().map(|m| m.to_string()).unwrap_or_default();
        let helo = self.helo.clone().unwrap_or_default();
        let ctx = AuthContext {
            // An IPv4 client on a dual-stack socket: SPF wants the IPv4 address.
            ip: self.peer.ip().to_canonical(),
            helo: &helo,
            mail_from: &mail_from,
        };
        let scored = spam.score(&tx.body[tx.trace_len..], Some(&ctx)).await;
        let (action, th) = spam
            .cfg
            .decide(scored.score, tx.rcpts.iter().map(|r| r.addr.domain.as_str()));
        self.shared.events.emit(Event::SpamScored {
            session: self.id,
            ip: self.peer.ip(),
            id: tx.id.clone(),
            score: scored.score,
            action: action.as_str(),
            rules: scored.rule_names(),
            bayes: scored.bayes,
        });
        match action {
            Action::Reject => {
                return Err(Reply::owned(
                    550,
                    "5.7.1",
                    format!("Message rejected as spam (score {:.1})", scored.score),
                ));
            }
            Action::Tempfail => {
                return Err(Reply::new(451, "4.7.1", "Message looks like spam, try again later"));
            }
            _ => {}
        }
        // The new top of the message.
        let mut top = String::new();
        if let Some(a) = &scored.auth {
            top.push_str(&a.header);
        }
        top.push_str(&spam_headers(&scored, action, th));
        let mut rest = Cow::Borrowed(&tx.body[tx.trace_len..]);
        if let Some(id) = spam.authserv_id()
            && let Cow::Owned(stripped) = strip_forged_results(&tx.body[tx.trace_len..], id)
        {
            rest = Cow::Owned(stripped);
        }
        if action >= Action::Tag
            && let Some(prefix) = &th.subject_prefix
        {
            rest = Cow::Owned(prefix_subject(&rest, prefix));
        }
        if !top.is_empty() || matches!(rest, Cow::Owned(_)) {
            let mut body = Vec::with_capacity(top.len() + tx.body.len() + 64);
            body.extend_from_slice(top.as_bytes());
            body.extend_from_slice(&tx.body[..tx.trace_len]);
            body.extend_from_slice(&rest);
            tx.trace_len += top.len();
            tx.body = body;
        }
        Ok(if action == Action::Quarantine {
            SpamOutcome::Quarantined
        } else {
            SpamOutcome::Deliver
        })
    }
}

impl Session {
    /// Puts a message the spam policy quarantines on disk (fsynced), then
    /// 250: the client sees an accepted message, nothing is delivered.
    pub(in crate::smtp) async fn quarantine_spam(
        &mut self,
        envelope: crate::mail::envelope::Envelope,
        body: Vec<u8>,
        scan_mode: crate::scan::admission::Mode,
    ) -> Reply {
        let q = self.shared.quarantine.clone();
        let id = envelope.id.clone();
        let (rcpts, size) = (envelope.rcpts.len(), body.len());
        let put = tokio::task::spawn_blocking(move || q.put(&envelope, "spam", &body)).await;
        match put {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.shared.events.emit(Event::Warning {
                    component: "quarantine",
                    message: format!("{id}: {e}"),
                });
                return Reply::SPOOL_FAILED;
            }
            Err(e) => {
                self.shared.events.emit(Event::Warning {
                    component: "quarantine",
                    message: format!("{id}: {e}"),
                });
                return Reply::SPOOL_FAILED;
            }
        }
        self.messages += 1;
        let ip = self.peer.ip();
        self.shared.events.emit(Event::Quarantined {
            ip,
            id: id.clone(),
            reason: "spam".to_string(),
        });
        self.shared.events.emit(Event::MessageAccepted {
            session: self.id,
            ip,
            id: id.clone(),
            size,
            rcpts,
            scan: scan_mode.as_str(),
        });
        Reply::owned(250, "2.0.0", format!("Ok: queued as {id}"))
    }
}
