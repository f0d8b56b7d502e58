//! Step 4 of the pipeline: the spam score and its action.

use std::borrow::Cow;
use std::sync::Arc;

use super::{Pipeline, Received};
use crate::events::{Event, Reason, Refusal};
use crate::proto::Reply;
use crate::spam::auth::{AuthContext, strip_forged_results};
use crate::spam::filter::{Action, SpamFilter, prefix_subject, spam_headers};

/// What the spam step does to a message it lets through: the fields that
/// go on top (our Authentication-Results, X-Spam-*), forged
/// Authentication-Results claiming our name to remove, a Subject prefix,
/// and whether it is quarantined. Applied to the body by the front end
/// ([`SpamMarks::apply`]), sent as header changes by the milter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpamMarks {
    /// Whole header fields, CRLF-terminated, in order.
    pub top: String,
    /// Our authserv-id: Authentication-Results claiming it are forged.
    pub authserv_id: Option<String>,
    pub subject_prefix: Option<String>,
    pub quarantine: bool,
    pub score: f64,
}

impl SpamMarks {
    /// Rewrites `body` (whose first `trace_len` octets are our trace
    /// headers): the new fields go on top (above our Received), forged
    /// Authentication-Results are removed, the rest stays byte for byte.
    pub fn apply(&self, body: &mut Vec<u8>, trace_len: &mut usize) {
        let mut rest = Cow::Borrowed(&body[*trace_len..]);
        if let Some(id) = &self.authserv_id
            && let Cow::Owned(stripped) = strip_forged_results(&body[*trace_len..], id)
        {
            rest = Cow::Owned(stripped);
        }
        if let Some(prefix) = &self.subject_prefix {
            rest = Cow::Owned(prefix_subject(&rest, prefix));
        }
        if !self.top.is_empty() || matches!(rest, Cow::Owned(_)) {
            let mut out = Vec::with_capacity(self.top.len() + body.len() + 64);
            out.extend_from_slice(self.top.as_bytes());
            out.extend_from_slice(&body[..*trace_len]);
            out.extend_from_slice(&rest);
            *trace_len += self.top.len();
            *body = out;
        }
    }
}

impl Pipeline {
    /// Scores the message and applies the strictest action of its
    /// recipients' domains: a refusal, or the marks to put on it.
    pub(super) async fn spam_step(&self, spam: &Arc<SpamFilter>, msg: &mut Received) -> Result<SpamMarks, Refusal> {
        let env = &msg.envelope;
        let mail_from = env.mail_from.as_ref().map(|m| m.to_string()).unwrap_or_default();
        let ctx = AuthContext {
            // An IPv4 client on a dual-stack socket: SPF wants the IPv4 address.
            ip: env.client_ip.to_canonical(),
            helo: &env.helo,
            mail_from: &mail_from,
            deadline: msg.dns_deadline,
        };
        let scored = spam.score(&msg.body[msg.trace_len..], Some(&ctx)).await;
        let (action, th) = spam
            .cfg
            .decide(scored.score, env.rcpts.iter().map(|r| r.addr.domain.as_str()));
        self.events.emit(Event::SpamScored {
            session: msg.session,
            ip: env.client_ip,
            id: env.id.clone(),
            tx: msg.tx(),
            score: scored.score,
            action,
            rules: scored.rule_names(),
            bayes: scored.bayes,
            ngram: scored.ngram,
        });
        let evidence = || format!("score {:.1}", scored.score);
        match action {
            Action::Reject => return Err(Refusal::new(Reply::spam(scored.score), Reason::Spam, evidence())),
            Action::Tempfail => return Err(Refusal::new(Reply::SPAM_TEMPFAIL, Reason::Spam, evidence())),
            Action::Deliver | Action::Tag | Action::Quarantine => {}
        }
        let mut top = String::new();
        if let Some(a) = &scored.auth {
            top.push_str(&a.header);
        }
        top.push_str(&spam_headers(&scored, action, th));
        Ok(SpamMarks {
            top,
            authserv_id: spam.authserv_id().map(str::to_string),
            subject_prefix: th.subject_prefix.clone().filter(|_| action >= Action::Tag),
            quarantine: action == Action::Quarantine,
            score: scored.score,
        })
    }
}
