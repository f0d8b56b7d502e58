//! Step 4 of the pipeline: the spam score and its action.

use std::borrow::Cow;
use std::sync::Arc;

use super::{Pipeline, Received};
use crate::events::{Event, Reason, Refusal};
use crate::proto::Reply;
use crate::spam::auth::{AuthContext, strip_forged_results};
use crate::spam::filter::{Action, SpamFilter, prefix_subject, spam_headers};

impl Pipeline {
    /// Scores the message and applies the strictest action of its
    /// recipients' domains: `Ok(true)` to quarantine, `Ok(false)` to go
    /// on. Rewrites the body when headers are added: our
    /// Authentication-Results and X-Spam-* lines go on top (above our
    /// Received), forged Authentication-Results claiming our name are
    /// removed, the rest stays byte for byte.
    pub(super) async fn spam_step(&self, spam: &Arc<SpamFilter>, msg: &mut Received) -> Result<bool, Refusal> {
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
            tx: crate::events::Tx::of(env),
            score: scored.score,
            action,
            rules: scored.rule_names(),
            bayes: scored.bayes,
        });
        let evidence = || format!("score {:.1}", scored.score);
        match action {
            Action::Reject => return Err(Refusal::new(Reply::spam(scored.score), Reason::Spam, evidence())),
            Action::Tempfail => return Err(Refusal::new(Reply::SPAM_TEMPFAIL, Reason::Spam, evidence())),
            Action::Deliver | Action::Tag | Action::Quarantine => {}
        }
        // The new top of the message.
        let mut top = String::new();
        if let Some(a) = &scored.auth {
            top.push_str(&a.header);
        }
        top.push_str(&spam_headers(&scored, action, th));
        let mut rest = Cow::Borrowed(&msg.body[msg.trace_len..]);
        if let Some(id) = spam.authserv_id()
            && let Cow::Owned(stripped) = strip_forged_results(&msg.body[msg.trace_len..], id)
        {
            rest = Cow::Owned(stripped);
        }
        if action >= Action::Tag
            && let Some(prefix) = &th.subject_prefix
        {
            rest = Cow::Owned(prefix_subject(&rest, prefix));
        }
        if !top.is_empty() || matches!(rest, Cow::Owned(_)) {
            let mut body = Vec::with_capacity(top.len() + msg.body.len() + 64);
            body.extend_from_slice(top.as_bytes());
            body.extend_from_slice(&msg.body[..msg.trace_len]);
            body.extend_from_slice(&rest);
            msg.trace_len += top.len();
            msg.body = body;
        }
        Ok(action == Action::Quarantine)
    }
}
