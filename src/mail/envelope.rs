//! The envelope: everything about a message that is not its content. It is
//! what the spool stores beside the body and what delivery reads.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::proto::{Body, Mailbox};

/// One accepted recipient with its DSN parameters (RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub addr: Mailbox,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Queue id, also in the Received header and every log line.
    pub id: String,
    /// Seconds since the Unix epoch when the message was accepted.
    pub received_at: u64,
    pub client_ip: IpAddr,
    pub helo: String,
    /// `None` is the null reverse-path `<>` (bounces): never bounced again.
    pub mail_from: Option<Mailbox>,
    #[serde(default)]
    pub body: Body,
    #[serde(default)]
    pub smtputf8: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    pub rcpts: Vec<Recipient>,
    /// Accepted before its virus scan (admission control, or a scanner
    /// failure with `scan.on_failure = "hold"`): it is scanned from the
    /// spool and delivered only when clean.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scan_pending: bool,
    /// The client's host name, when its PTR record was verified (FCrDNS);
    /// passed on with XCLIENT/XFORWARD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The client said EHLO (ESMTP) rather than HELO.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub esmtp: bool,
    /// Made by sluice itself (a DSN), not received from a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<Generated>,
}

/// Mail sluice wrote itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generated {
    /// A delivery status notification to the sender.
    Dsn,
    /// A DSN that could not be delivered, sent on to
    /// `relay.double_bounce_to`: never sent anywhere again.
    DoubleBounce,
}

impl Envelope {
    pub fn sender_display(&self) -> String {
        self.mail_from.as_ref().map(|m| m.to_string()).unwrap_or_default()
    }
}
