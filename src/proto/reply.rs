//! SMTP replies as typed values.
//!
//! Handlers never write bytes: they return a [`Reply`], and the session writes
//! it in one place. Every fixed reply the server can give is a constant here,
//! so the full set of codes is reviewable in one file.

use std::borrow::Cow;
use std::fmt::Write as _;

/// One SMTP reply: basic code, optional enhanced status code (RFC 3463) and
/// one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code such as `"5.1.1"`; empty for the greeting and for
    /// replies that must not carry one (220 banner, EHLO).
    pub enhanced: &'static str,
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with a fixed text.
    pub const fn new(code: u16, enhanced: &'static str, text: &'static str) -> Reply {
        Reply {
            code,
            enhanced,
            text: Cow::Borrowed(text),
        }
    }

    /// A reply with a computed text (several lines may be separated by `\n`).
    pub fn owned(code: u16, enhanced: &'static str, text: String) -> Reply {
        Reply {
            code,
            enhanced,
            text: Cow::Owned(text),
        }
    }

    /// 2xx
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Appends the wire form (CRLF-terminated, multi-line with `-`) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        let mut s = String::with_capacity(self.text.len() + 16);
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            let _ = write!(s, "{}{}", self.code, sep);
            if !self.enhanced.is_empty() {
                s.push_str(self.enhanced);
                s.push(' ');
            }
            s.push_str(line);
            s.push_str("\r\n");
        }
        out.extend_from_slice(s.as_bytes());
    }

    /// The wire form as a new buffer (tests, logs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.enhanced.is_empty() {
            write!(f, "{} {}", self.code, self.text.replace('\n', " / "))
        } else {
            write!(f, "{} {} {}", self.code, self.enhanced, self.text.replace('\n', " / "))
        }
    }
}

// === fixed replies ===

impl Reply {
    pub const OK: Reply = Reply::new(250, "2.0.0", "OK");
    pub const SENDER_OK: Reply = Reply::new(250, "2.1.0", "Sender OK");
    pub const RCPT_OK: Reply = Reply::new(250, "2.1.5", "Recipient OK");
    pub const RESET_OK: Reply = Reply::new(250, "2.0.0", "Reset OK");
    pub const NOOP_OK: Reply = Reply::new(250, "2.0.0", "OK");
    pub const VRFY_CANNOT: Reply = Reply::new(
        252,
        "2.5.0",
        "Cannot VRFY user, but will accept message and attempt delivery",
    );
    pub const NO_SERVICE: Reply = Reply::new(503, "5.7.1", "No service for you: send QUIT");
    pub const IMPROPER_PIPELINING: Reply = Reply::new(554, "5.5.1", "Improper command pipelining, no service");
    pub const BYE: Reply = Reply::new(221, "2.0.0", "Bye");
    pub const START_DATA: Reply = Reply::new(354, "", "End data with <CR><LF>.<CR><LF>");
    pub const READY_TLS: Reply = Reply::new(220, "2.0.0", "Ready to start TLS");

    pub const SHUTTING_DOWN: Reply = Reply::new(421, "4.3.2", "Service shutting down, try again later");
    pub const TOO_MANY_CONNECTIONS: Reply = Reply::new(421, "4.7.0", "Too many connections, try again later");
    pub const TIMEOUT: Reply = Reply::new(421, "4.4.2", "Timeout, closing connection");
    pub const TOO_MANY_ERRORS: Reply = Reply::new(421, "4.7.0", "Too many errors, closing connection");
    pub const SPOOL_FAILED: Reply = Reply::new(451, "4.3.0", "Message could not be stored, try again later");
    pub const NO_STORAGE: Reply = Reply::new(452, "4.3.1", "Insufficient system storage, try again later");
    pub const TOO_MANY_RCPTS: Reply = Reply::new(452, "4.5.3", "Too many recipients");

    pub const SYNTAX_ERROR: Reply = Reply::new(500, "5.5.2", "Syntax error, command unrecognized");
    pub const LINE_TOO_LONG: Reply = Reply::new(500, "5.5.2", "Line too long");
    pub const PARAM_SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax error in parameters or arguments");
    pub const BAD_SENDER_SYNTAX: Reply = Reply::new(501, "5.1.7", "Bad sender address syntax");
    pub const BAD_RCPT_SYNTAX: Reply = Reply::new(501, "5.1.3", "Bad recipient address syntax");
    pub const HELO_SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax: EHLO hostname");
    pub const NOT_IMPLEMENTED: Reply = Reply::new(502, "5.5.1", "Command not implemented");
    pub const HELO_FIRST: Reply = Reply::new(503, "5.5.1", "Send EHLO/HELO first");
    pub const NESTED_MAIL: Reply = Reply::new(503, "5.5.1", "Sender already specified");
    pub const MAIL_FIRST: Reply = Reply::new(503, "5.5.1", "Send MAIL first");
    pub const RCPT_FIRST: Reply = Reply::new(503, "5.5.1", "Send RCPT first");
    pub const TLS_ALREADY: Reply = Reply::new(503, "5.5.1", "TLS already active");
    pub const BDAT_MIXED: Reply = Reply::new(503, "5.5.1", "DATA not allowed after BDAT");
    pub const PARAM_UNKNOWN: Reply = Reply::new(555, "5.5.4", "Unsupported MAIL/RCPT parameter");
    pub const UNKNOWN_USER: Reply = Reply::new(550, "5.1.1", "Recipient address rejected: user unknown");
    pub const RELAY_DENIED: Reply = Reply::new(554, "5.7.1", "Relay access denied");
    pub const SIZE_EXCEEDED: Reply = Reply::new(552, "5.3.4", "Message size exceeds fixed limit");
    pub const DATA_LINE_TOO_LONG: Reply = Reply::new(552, "5.3.4", "Message line exceeds fixed limit");
    pub const HEADER_TOO_LARGE: Reply = Reply::new(552, "5.3.4", "Message header exceeds fixed limit");
    pub const TOO_MANY_HOPS: Reply = Reply::new(554, "5.4.6", "Too many Received headers: mail loop detected");
    pub const BARE_NEWLINE: Reply = Reply::new(550, "5.6.0", "Message contains bare CR or LF, not accepted");
    pub const SMTPUTF8_REQUIRED: Reply = Reply::new(553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
    pub const HELP: Reply = Reply::new(214, "2.0.0", "See RFC 5321");

    // Refusals of a client before the greeting (the listener).
    pub const CLIENT_BANNED: Reply = Reply::new(554, "5.7.1", "Your address is banned here");
    /// A direct connection to a `proxy_protocol` listener.
    pub const PROXY_ONLY: Reply = Reply::new(554, "5.7.1", "This port takes connections from the load balancer only");
    /// A load balancer's connection without a valid PROXY header in time.
    pub const PROXY_HEADER: Reply = Reply::new(421, "4.7.0", "No valid PROXY protocol header, closing connection");
    pub const CLIENT_CONNECTION_RATE: Reply =
        Reply::new(421, "4.7.0", "Too many connections from your address, slow down");
    pub const CLIENT_CONCURRENCY: Reply = Reply::new(421, "4.7.0", "Too many concurrent sessions from your address");
    // Per-client limits and call-ahead at MAIL/RCPT.
    pub const CLIENT_MESSAGE_RATE: Reply = Reply::new(451, "4.7.0", "Too many messages from your address, slow down");
    pub const CLIENT_RCPT_RATE: Reply = Reply::new(452, "4.7.0", "Too many recipients from your address, slow down");
    pub const CALLAHEAD_UNAVAILABLE: Reply =
        Reply::new(450, "4.1.1", "Recipient address verification temporarily unavailable");
    pub const CALLAHEAD_BUDGET: Reply = Reply::new(450, "4.7.1", "Too many unverified recipients, try again later");
    // The end of DATA.
    pub const SCAN_BACKLOG: Reply = Reply::new(
        451,
        "4.7.1",
        "Too much mail waiting for its virus scan, try again later",
    );
    pub const SCAN_FAILED: Reply = Reply::new(451, "4.7.1", "Message could not be scanned, try again later");
    pub const SPAM_TEMPFAIL: Reply = Reply::new(451, "4.7.1", "Message looks like spam, try again later");
}

// === replies with a computed part ===

impl Reply {
    /// The 220 banner.
    pub fn greeting(host: &str) -> Reply {
        Reply::owned(220, "", format!("{host} ESMTP sluice"))
    }

    /// The 554 banner for a client that talked first (RFC 5321 §3.1).
    pub fn pregreet_banner(host: &str) -> Reply {
        Reply::owned(
            554,
            "5.7.1",
            format!("{host} ESMTP no service: you talked before the greeting"),
        )
    }

    /// The EHLO/HELO answer: `text` is the greeting line, then (EHLO) one
    /// extension per line.
    pub fn hello(text: String) -> Reply {
        Reply::owned(250, "", text)
    }

    pub fn helo_rejected(why: &str) -> Reply {
        Reply::owned(550, "5.7.1", format!("Helo command rejected: {why}"))
    }

    pub fn no_hostname(ip: std::net::IpAddr) -> Reply {
        Reply::owned(
            550,
            "5.7.25",
            format!("Client host rejected: cannot find your hostname, [{ip}]"),
        )
    }

    pub fn greylisted(secs: u64) -> Reply {
        Reply::owned(451, "4.7.1", format!("Greylisted, please try again in {secs} seconds"))
    }

    /// A client refused by DNS lists; `text` from `dnsbl.replies` or made
    /// by the caller.
    pub fn dnsbl_listed(text: String) -> Reply {
        Reply::owned(554, "5.7.1", text)
    }

    /// After each BDAT chunk but the last.
    pub fn chunk_received(octets: usize) -> Reply {
        Reply::owned(250, "2.0.0", format!("{octets} octets received"))
    }

    /// The message is on disk.
    pub fn queued(id: &str) -> Reply {
        Reply::owned(250, "2.0.0", format!("Ok: queued as {id}"))
    }

    pub fn virus(name: &str) -> Reply {
        Reply::owned(554, "5.7.1", format!("Message rejected: virus found: {name}"))
    }

    pub fn banned_part(what: &str) -> Reply {
        Reply::owned(554, "5.7.1", format!("Message rejected: {what}"))
    }

    /// Content nobody could look into, with `scan.unscannable = "reject"`.
    pub fn unscannable(what: &str) -> Reply {
        Reply::owned(554, "5.7.1", format!("Message rejected: cannot be scanned: {what}"))
    }

    pub fn malformed(what: &str) -> Reply {
        Reply::owned(554, "5.6.0", format!("Message rejected: {what}"))
    }

    pub fn spam(score: f64) -> Reply {
        Reply::owned(550, "5.7.1", format!("Message rejected as spam (score {score:.1})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_has_enhanced_code() {
        assert_eq!(
            Reply::UNKNOWN_USER.to_bytes(),
            b"550 5.1.1 Recipient address rejected: user unknown\r\n"
        );
    }

    #[test]
    fn multi_line_uses_dash_continuation() {
        let r = Reply::owned(250, "", "mx.example.org\nPIPELINING\nSIZE 10".into());
        assert_eq!(r.to_bytes(), b"250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn classes() {
        assert!(Reply::OK.is_positive());
        assert!(Reply::SHUTTING_DOWN.is_temporary());
        assert!(Reply::RELAY_DENIED.is_permanent());
        assert!(!Reply::RELAY_DENIED.is_temporary());
    }
}
