//! The counters the events drive: `EventBus::emit` calls
//! [`Metrics::observe`] synchronously, so a count is never lost to a slow
//! subscriber. Here, not in `metrics`, so the registry knows nothing of
//! events.

use super::{Event, RcptOutcome, Reason, ScanMode, SpamAction};
use crate::metrics::Metrics;

impl Metrics {
    /// The counters an event drives.
    pub fn observe(&self, e: &Event) {
        if !self.enabled {
            return;
        }
        self.events.with_label_values(&[e.name()]).inc();
        let message = |result: &str, reason: &str| self.messages.with_label_values(&[result, reason]).inc();
        let refused = |reply: &crate::proto::Reply| {
            if reply.is_temporary() { "tempfailed" } else { "rejected" }
        };
        let by_mode = |mode: &ScanMode| match mode {
            ScanMode::InSession => "rejected",
            ScanMode::None | ScanMode::Deferred => "quarantined",
        };
        match e {
            Event::SessionOpened { .. } => {
                self.connections_accepted.inc();
                self.sessions_active.inc();
            }
            Event::SessionClosed { .. } => self.sessions_active.dec(),
            Event::ConnectRejected { reason, .. } => {
                self.connections_refused.with_label_values(&[reason.label()]).inc();
                self.limit_hit(reason);
            }
            Event::MailRejected { reason, .. } | Event::HeloRejected { reason, .. } => self.limit_hit(reason),
            Event::RcptRejected { reason, reply, .. } => {
                self.recipients
                    .with_label_values(&[refused(reply), reason.label()])
                    .inc();
                if *reason == Reason::Greylist {
                    self.greylist.with_label_values(&["defer"]).inc();
                }
                self.limit_hit(reason);
            }
            Event::MessageRejected { reply, reason, .. } => message(refused(reply), reason.label()),
            Event::VirusFound { mode, .. } => message(by_mode(mode), "virus"),
            Event::ContentRejected { kind, mode, .. } => message(by_mode(mode), kind.label()),
            // Refused or quarantined like a banned part; accepted ones are
            // counted by message_accepted (and the event counter).
            Event::Unscannable { action, mode, .. } => match action {
                crate::events::UnscannableAction::Reject => message(by_mode(mode), "unscannable"),
                crate::events::UnscannableAction::Quarantine => message("quarantined", "unscannable"),
                crate::events::UnscannableAction::Accept => {}
            },
            Event::SpamScored { score, action, .. } => {
                self.spam_score.observe(*score);
                self.spam_actions.with_label_values(&[action.as_str()]).inc();
                match action {
                    SpamAction::Reject => message("rejected", "spam"),
                    SpamAction::Tempfail => message("tempfailed", "spam"),
                    // Quarantined spam got 250: counted by MessageAccepted.
                    SpamAction::Deliver | SpamAction::Tag | SpamAction::Quarantine => {}
                }
            }
            Event::ScanFailed { session, held, .. } if *session != 0 && !held => message("tempfailed", "scan_failed"),
            Event::MessageAccepted { size, scan, .. } => {
                message("accepted", "ok");
                self.message_size.observe(*size as f64);
                if *scan != ScanMode::None {
                    self.admission.with_label_values(&[scan.label()]).inc();
                }
            }
            Event::DeliveryAttempt { outcome, .. } => {
                let result = match outcome {
                    RcptOutcome::Delivered => "delivered",
                    RcptOutcome::Deferred => "deferred",
                    RcptOutcome::Bounced => "bounced",
                };
                self.delivery_attempts.with_label_values(&[result]).inc();
            }
            Event::DoubleBounce { .. } => self.double_bounces.inc(),
            Event::BanAdded { offence, .. } => self.bans_added.with_label_values(&[offence.as_str()]).inc(),
            Event::BanRemoved { .. } => self.bans_removed.inc(),
            Event::ResolverHealth { failing, .. } => self.dns_resolver_failing.set(i64::from(*failing)),
            Event::StressMode { on, .. } => self.stress_mode.set(i64::from(*on)),
            Event::ConfigReload { result, .. } => self.config_reloads.with_label_values(&[result]).inc(),
            _ => {}
        }
    }

    fn limit_hit(&self, reason: &Reason) {
        if let Reason::RateLimit { limit } = reason {
            self.limit_hits.with_label_values(&[limit.label()]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
        for fam in m.registry.gather() {
            if fam.name() != name {
                continue;
            }
            for metric in fam.get_metric() {
                let ok = labels
                    .iter()
                    .all(|(k, v)| metric.get_label().iter().any(|l| l.name() == *k && l.value() == *v));
                if ok {
                    return match fam.get_field_type() {
                        prometheus::proto::MetricType::COUNTER => metric.get_counter().get_value(),
                        _ => metric.get_gauge().get_value(),
                    };
                }
            }
        }
        f64::NAN
    }

    #[test]
    fn rcpt_rejections_count_by_result_and_reason() {
        let m = Metrics::new();
        let rej = |reason, reply| Event::RcptRejected {
            via: crate::events::Via::Smtp,
            tx: Default::default(),
            id: String::new(),
            session: 1,
            ip: "192.0.2.1".parse().unwrap(),
            rcpt: "x@y".into(),
            reason,
            reply,
            evidence: String::new(),
        };
        m.observe(&rej(Reason::UnknownUser, crate::proto::Reply::UNKNOWN_USER));
        m.observe(&rej(Reason::UnknownUser, crate::proto::Reply::UNKNOWN_USER));
        m.observe(&rej(Reason::Greylist, crate::proto::Reply::greylisted(60)));
        m.recipient_accepted();
        assert_eq!(
            value(
                &m,
                "sluice_recipients_total",
                &[("result", "rejected"), ("reason", "unknown_user")]
            ),
            2.0
        );
        assert_eq!(
            value(
                &m,
                "sluice_recipients_total",
                &[("result", "tempfailed"), ("reason", "greylist")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &m,
                "sluice_recipients_total",
                &[("result", "accepted"), ("reason", "ok")]
            ),
            1.0
        );
        assert_eq!(
            value(&m, "sluice_greylist_decisions_total", &[("decision", "defer")]),
            1.0
        );
        assert_eq!(value(&m, "sluice_events_total", &[("event", "rcpt_rejected")]), 3.0);
    }
}
