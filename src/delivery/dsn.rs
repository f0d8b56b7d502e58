//! Delivery status notifications (RFC 3464) for recipients that failed
//! permanently or expired in the queue. Never generated for the null sender.

use std::fmt::Write as _;

use crate::mail::date::rfc5322_date;
use crate::mail::envelope::{Envelope, Recipient};
use crate::proto::address::parse_mailbox;

/// One failed recipient for the report.
pub struct Failure<'a> {
    pub rcpt: &'a Recipient,
    /// Enhanced status code, e.g. "5.1.1".
    pub status: String,
    /// What the next hop (or the queue) said.
    pub diagnostic: String,
    /// The next hop that answered, if any.
    pub remote: Option<String>,
}

/// Builds the DSN envelope and message for `failures` of `env`, or `None`
/// when no DSN may be sent (null sender, or NOTIFY excludes FAILURE).
pub fn build(
    env: &Envelope,
    failures: &[Failure<'_>],
    original: &[u8],
    hostname: &str,
    id: String,
    now: u64,
) -> Option<(Envelope, Vec<u8>)> {
    let sender = env.mail_from.as_ref()?;
    let failures: Vec<&Failure<'_>> = failures
        .iter()
        .filter(|f| match &f.rcpt.notify {
            Some(n) => n.split(',').any(|x| x.eq_ignore_ascii_case("FAILURE")),
            None => true,
        })
        .collect();
    if failures.is_empty() {
        return None;
    }
    let boundary = format!("{id}/{hostname}");
    let mut m = String::with_capacity(2048 + original.len().min(64 * 1024));
    human_part(&mut m, sender, &failures, hostname, &id, &boundary, now);
    status_part(&mut m, env, &failures, hostname, &boundary);
    let full = env.ret.as_deref() == Some("FULL");
    let (ctype, part) = if full {
        ("message/rfc822", original)
    } else {
        ("text/rfc822-headers", header_section(original))
    };
    let _ = write!(m, "\r\n--{boundary}\r\nContent-Type: {ctype}\r\n\r\n");
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(part);
    if !part.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Some((dsn_envelope(sender, hostname, id, now)?, bytes))
}

/// The message's header and its first part, for people.
fn human_part(
    m: &mut String,
    sender: &crate::proto::Mailbox,
    failures: &[&Failure<'_>],
    hostname: &str,
    id: &str,
    boundary: &str,
    now: u64,
) {
    let date = rfc5322_date(now);
    let _ = write!(
        m,
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{sender}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}@{hostname}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail system at host {hostname}.\r\n\
         \r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         \r\n"
    );
    for f in failures {
        let _ = write!(m, "<{}>: {}\r\n", f.rcpt.addr, one_line(&f.diagnostic));
    }
}

/// The `message/delivery-status` part (RFC 3464 §2.2, §2.3).
fn status_part(m: &mut String, env: &Envelope, failures: &[&Failure<'_>], hostname: &str, boundary: &str) {
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {hostname}\r\n\
         X-Sluice-Queue-ID: {qid}\r\n\
         Arrival-Date: {arrival}\r\n",
        qid = env.id,
        arrival = rfc5322_date(env.received_at),
    );
    if let Some(envid) = &env.envid {
        let _ = write!(m, "Original-Envelope-Id: {envid}\r\n");
    }
    for f in failures {
        let _ = write!(m, "\r\nFinal-Recipient: rfc822; {}\r\n", f.rcpt.addr);
        if let Some(o) = &f.rcpt.orcpt {
            let _ = write!(m, "Original-Recipient: {o}\r\n");
        }
        let _ = write!(m, "Action: failed\r\nStatus: {}\r\n", f.status);
        if let Some(r) = &f.remote {
            let _ = write!(m, "Remote-MTA: dns; {r}\r\n");
        }
        let _ = write!(m, "Diagnostic-Code: smtp; {}\r\n", one_line(&f.diagnostic));
    }
}

/// The DSN's envelope: from the null sender, to `sender`, made here.
fn dsn_envelope(sender: &crate::proto::Mailbox, hostname: &str, id: String, now: u64) -> Option<Envelope> {
    Some(Envelope {
        id,
        received_at: now,
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        helo: hostname.to_string(),
        mail_from: None,
        body: crate::proto::Body::EightBitMime,
        smtputf8: sender.is_utf8(),
        ret: None,
        envid: None,
        scan_pending: false,
        client_name: None,
        esmtp: true,
        generated: Some(crate::mail::envelope::Generated::Dsn),
        rcpts: vec![Recipient {
            addr: parse_mailbox(&sender.to_string()).ok()?,
            notify: None,
            orcpt: None,
        }],
    })
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The header section (up to the empty line) of a CRLF message.
fn header_section(msg: &[u8]) -> &[u8] {
    match memchr::memmem::find(msg, b"\r\n\r\n") {
        Some(i) => &msg[..i + 2],
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(notify: Option<&str>, null_sender: bool) -> Envelope {
        Envelope {
            id: "Q1".into(),
            received_at: 0,
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "c.example".into(),
            mail_from: if null_sender {
                None
            } else {
                Some(parse_mailbox("s@sender.example").unwrap())
            },
            body: Default::default(),
            smtputf8: false,
            ret: None,
            envid: Some("E1".into()),
            scan_pending: false,
            client_name: None,
            esmtp: false,
            generated: None,
            rcpts: vec![Recipient {
                addr: parse_mailbox("u@example.com").unwrap(),
                notify: notify.map(Into::into),
                orcpt: Some("rfc822;u@example.com".into()),
            }],
        }
    }

    #[test]
    fn report_has_the_rfc3464_parts() {
        let e = env(None, false);
        let f = [Failure {
            rcpt: &e.rcpts[0],
            status: "5.1.1".into(),
            diagnostic: "550 5.1.1 no such user".into(),
            remote: Some("127.0.0.1".into()),
        }];
        let (denv, msg) = build(&e, &f, b"Subject: hi\r\n\r\nbody\r\n", "mx.example", "D1".into(), 0).unwrap();
        assert_eq!(denv.mail_from, None);
        assert_eq!(denv.rcpts[0].addr.to_string(), "s@sender.example");
        let text = String::from_utf8(msg).unwrap();
        for want in [
            "Content-Type: multipart/report; report-type=delivery-status;",
            "Reporting-MTA: dns; mx.example",
            "Original-Envelope-Id: E1",
            "Final-Recipient: rfc822; u@example.com",
            "Original-Recipient: rfc822;u@example.com",
            "Action: failed",
            "Status: 5.1.1",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user",
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("body\r\n--"), "RET=HDRS by default: no body");
    }

    #[test]
    fn never_to_the_null_sender_or_against_notify() {
        let e = env(None, true);
        let f = [Failure {
            rcpt: &e.rcpts[0],
            status: "5.1.1".into(),
            diagnostic: "x".into(),
            remote: None,
        }];
        assert!(build(&e, &f, b"", "mx", "D".into(), 0).is_none());
        let e = env(Some("NEVER"), false);
        let f = [Failure {
            rcpt: &e.rcpts[0],
            status: "5.1.1".into(),
            diagnostic: "x".into(),
            remote: None,
        }];
        assert!(build(&e, &f, b"", "mx", "D".into(), 0).is_none());
    }
}
