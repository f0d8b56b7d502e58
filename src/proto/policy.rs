//! Postfix's policy delegation protocol (SMTPD_POLICY_README), sans I/O.
//!
//! A request is `name=value` lines, each ending in a newline, ended by an
//! empty line; the answer is one `action=...` line and an empty line. The
//! connection stays open for further requests. Values may be empty;
//! attributes we do not know are kept but never needed.
//!
//! [`RequestReceiver`] frames requests out of a byte buffer with a cap on
//! the request's size and its number of attributes. A request over the cap
//! is swallowed up to its empty line and reported once as
//! [`Frame::Invalid`], so the caller can answer `DUNNO` and go on: a
//! policy server must never take mail down by dropping Postfix's
//! connection. [`Attributes::query`] turns a request into the typed
//! [`Query`] the server decides on; [`Action`] is the answer, written by
//! [`Action::to_bytes`].

use std::net::IpAddr;

use super::address::{Mailbox, parse_mailbox};
use super::reply::Reply;

/// Caps on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Octets, the empty line included.
    pub max_size: usize,
    pub max_attributes: usize,
}

/// Why a request could not be used. The connection goes on either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("request larger than {0} octets")]
    TooLarge(usize),
    #[error("request with more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("line without '=': {0:?}")]
    NoEquals(String),
    #[error("attribute with an empty name")]
    EmptyName,
    #[error("empty request")]
    Empty,
    #[error("attribute {0} missing")]
    Missing(&'static str),
    #[error("attribute {name}: {value:?} {why}")]
    BadValue {
        name: &'static str,
        value: String,
        why: &'static str,
    },
}

/// What [`RequestReceiver::ingest`] found at the start of the buffer.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// No complete request yet (whatever was consumed was swallowed).
    NeedsMoreData,
    Request(Attributes),
    /// A request that cannot be used: answer `DUNNO`.
    Invalid(Problem),
}

/// Frames requests; keeps only the state of a request being swallowed.
#[derive(Debug)]
pub struct RequestReceiver {
    limits: Limits,
    /// Swallowing an oversize request up to its empty line: the problem to
    /// report, and whether the current line has had any octet yet.
    swallow: Option<(Problem, bool)>,
}

impl RequestReceiver {
    pub fn new(limits: Limits) -> Self {
        Self { limits, swallow: None }
    }

    /// Looks at `input` (unconsumed octets, oldest first); returns what it
    /// found and how many octets to consume.
    pub fn ingest(&mut self, input: &[u8]) -> (Frame, usize) {
        if self.swallow.is_some() {
            return self.swallowing(input);
        }
        let window = &input[..input.len().min(self.limits.max_size)];
        match request_end(window) {
            Some(end) => (self.parse(&input[..end]), end),
            None if input.len() >= self.limits.max_size => {
                self.swallow = Some((Problem::TooLarge(self.limits.max_size), false));
                self.swallowing(input)
            }
            None => (Frame::NeedsMoreData, 0),
        }
    }

    /// True while an oversize request is being discarded.
    pub fn is_swallowing(&self) -> bool {
        self.swallow.is_some()
    }

    fn swallowing(&mut self, input: &[u8]) -> (Frame, usize) {
        let Some((problem, mut in_line)) = self.swallow.take() else {
            return (Frame::NeedsMoreData, 0);
        };
        for (i, &b) in input.iter().enumerate() {
            match b {
                b'\n' if !in_line => return (Frame::Invalid(problem), i + 1),
                b'\n' => in_line = false,
                b'\r' => {}
                _ => in_line = true,
            }
        }
        self.swallow = Some((problem, in_line));
        (Frame::NeedsMoreData, input.len())
    }

    /// One complete request (its empty line included).
    fn parse(&self, req: &[u8]) -> Frame {
        let mut attrs = Vec::new();
        for line in req.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
                return Frame::Invalid(Problem::NoEquals(shown));
            };
            if eq == 0 {
                return Frame::Invalid(Problem::EmptyName);
            }
            if attrs.len() == self.limits.max_attributes {
                return Frame::Invalid(Problem::TooManyAttributes(self.limits.max_attributes));
            }
            let name = String::from_utf8_lossy(&line[..eq]).into_owned();
            let value = String::from_utf8_lossy(&line[eq + 1..]).into_owned();
            attrs.push((name, value));
        }
        if attrs.is_empty() {
            return Frame::Invalid(Problem::Empty);
        }
        Frame::Request(Attributes(attrs))
    }
}

/// Where the first request in `input` ends: just after the newline of its
/// empty line (a line that is empty or only `\r`).
fn request_end(input: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' {
            let line = &input[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// The attributes of one request, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes(pub Vec<(String, String)>);

impl Attributes {
    /// The first value of `name` (Postfix sends each once).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The request as the server decides on it.
    pub fn query(&self) -> Result<Query, Problem> {
        let request = self.get("request").ok_or(Problem::Missing("request"))?;
        if request != "smtpd_access_policy" {
            return Err(Problem::BadValue {
                name: "request",
                value: request.to_string(),
                why: "is not smtpd_access_policy",
            });
        }
        let state = State::parse(self.get("protocol_state").ok_or(Problem::Missing("protocol_state"))?);
        let addr = self.get("client_address").ok_or(Problem::Missing("client_address"))?;
        let client: IpAddr = addr.parse().map_err(|_| Problem::BadValue {
            name: "client_address",
            value: addr.to_string(),
            why: "is not an IP address",
        })?;
        let name = |key| {
            self.get(key)
                .filter(|v| !v.is_empty() && *v != "unknown")
                .map(str::to_string)
        };
        let sender = match self.get("sender").unwrap_or("") {
            "" => None,
            s => Some(address("sender", s)?),
        };
        let recipient = match self.get("recipient").unwrap_or("") {
            "" => None,
            r => Some(address("recipient", r)?),
        };
        Ok(Query {
            state,
            client,
            client_name: name("client_name"),
            reverse_client_name: name("reverse_client_name"),
            helo: self.get("helo_name").unwrap_or("").to_string(),
            sender,
            recipient,
            instance: self.get("instance").unwrap_or("").to_string(),
            queue_id: self.get("queue_id").unwrap_or("").to_string(),
        })
    }
}

fn address(name: &'static str, value: &str) -> Result<Mailbox, Problem> {
    parse_mailbox(value).map_err(|_| Problem::BadValue {
        name,
        value: value.chars().take(200).collect(),
        why: "is not an address",
    })
}

/// `protocol_state`: where in the SMTP session Postfix asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    EndOfMessage,
    Vrfy,
    Etrn,
    Other(String),
}

impl State {
    pub fn parse(s: &str) -> State {
        match s.to_ascii_uppercase().as_str() {
            "CONNECT" => State::Connect,
            "EHLO" | "HELO" => State::Helo,
            "MAIL" => State::Mail,
            "RCPT" => State::Rcpt,
            "DATA" => State::Data,
            "END-OF-MESSAGE" => State::EndOfMessage,
            "VRFY" => State::Vrfy,
            "ETRN" => State::Etrn,
            _ => State::Other(s.chars().take(40).collect()),
        }
    }
}

/// One request, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub state: State,
    pub client: IpAddr,
    /// The verified (forward-confirmed) client name; `None` for "unknown".
    pub client_name: Option<String>,
    /// The PTR name, unverified; `None` for "unknown".
    pub reverse_client_name: Option<String>,
    /// The HELO/EHLO name (empty before HELO).
    pub helo: String,
    /// `None`: the null sender, or before MAIL.
    pub sender: Option<Mailbox>,
    pub recipient: Option<Mailbox>,
    /// Ties the requests of one message transaction together.
    pub instance: String,
    pub queue_id: String,
}

/// The answer: an access(5) action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No opinion: Postfix goes on with its restrictions.
    Dunno,
    /// `NNN x.y.z text`: a 4xx or 5xx reply with sluice's code and text.
    Reply(Reply),
    /// A temporary refusal unless a later restriction rejects (postgrey's
    /// answer for greylisting).
    DeferIfPermit(Reply),
    /// A header to add to the message (`PREPEND`), with no opinion.
    Prepend(String),
}

impl Action {
    /// The answer's wire form: `action=...`, a newline, an empty line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::from("action=");
        match self {
            Action::Dunno => s.push_str("DUNNO"),
            Action::Reply(r) => {
                s.push_str(&r.code.to_string());
                push_text(&mut s, r);
            }
            Action::DeferIfPermit(r) => {
                s.push_str("DEFER_IF_PERMIT");
                push_text(&mut s, r);
            }
            Action::Prepend(header) => {
                s.push_str("PREPEND ");
                s.push_str(&one_line(header));
            }
        }
        s.push_str("\n\n");
        s.into_bytes()
    }
}

/// ` x.y.z text`, on one line (the lines of a multi-line reply joined).
fn push_text(s: &mut String, r: &Reply) {
    if !r.enhanced.is_empty() {
        s.push(' ');
        s.push_str(r.enhanced);
    }
    // Postfix prefixes the restriction's own words.
    let text = r.text.strip_prefix("Recipient address rejected: ").unwrap_or(&r.text);
    s.push(' ');
    s.push_str(&one_line(text));
}

/// No newline or other control character may reach the answer line.
fn one_line(text: &str) -> String {
    let joined = text.split('\n').map(str::trim_end).collect::<Vec<_>>().join("; ");
    joined.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_size: 512,
        max_attributes: 8,
    };

    fn rx() -> RequestReceiver {
        RequestReceiver::new(LIMITS)
    }

    const RCPT: &[u8] = b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
client_address=192.0.2.7\nclient_name=unknown\nreverse_client_name=mail.example.net\n\
helo_name=mail.example.net\nsender=a@example.net\n\n";

    fn full_rcpt() -> Vec<u8> {
        let mut v = RCPT[..RCPT.len() - 1].to_vec();
        v.extend_from_slice(b"recipient=u@example.org\ninstance=1a2b.5c6d.0\n\n");
        v
    }

    #[test]
    fn one_request_then_the_next_on_the_same_connection() {
        let big = Limits {
            max_size: 4096,
            max_attributes: 64,
        };
        let mut r = RequestReceiver::new(big);
        let one = full_rcpt();
        let mut input = one.clone();
        input.extend_from_slice(b"request=smtpd_access_policy\n");
        let (f, used) = r.ingest(&input);
        assert_eq!(used, one.len());
        let Frame::Request(a) = f else { panic!("{f:?}") };
        let q = a.query().unwrap();
        assert_eq!(q.state, State::Rcpt);
        assert_eq!(q.client, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(q.client_name, None, "\"unknown\" is no name");
        assert_eq!(q.reverse_client_name.as_deref(), Some("mail.example.net"));
        assert_eq!(q.sender.unwrap().to_string(), "a@example.net");
        assert_eq!(q.recipient.unwrap().to_string(), "u@example.org");
        assert_eq!(q.instance, "1a2b.5c6d.0");
        // The rest is a partial request: nothing is consumed yet.
        assert_eq!(r.ingest(&input[used..]), (Frame::NeedsMoreData, 0));
    }

    #[test]
    fn byte_by_byte_gives_the_same_request() {
        let big = Limits {
            max_size: 4096,
            max_attributes: 64,
        };
        let one = full_rcpt();
        let mut r = RequestReceiver::new(big);
        for n in 1..one.len() {
            assert_eq!(r.ingest(&one[..n]), (Frame::NeedsMoreData, 0), "at {n}");
        }
        assert!(matches!(r.ingest(&one), (Frame::Request(_), n) if n == one.len()));
    }

    #[test]
    fn empty_values_unknown_attributes_and_crlf() {
        let (f, _) = rx().ingest(b"request=smtpd_access_policy\r\nsender=\r\nfuture_thing=x=y\r\n\r\n");
        let Frame::Request(a) = f else { panic!("{f:?}") };
        assert_eq!(a.get("sender"), Some(""));
        assert_eq!(a.get("future_thing"), Some("x=y"), "only the first '=' splits");
        assert_eq!(a.query(), Err(Problem::Missing("protocol_state")));
    }

    #[test]
    fn null_sender_and_states() {
        let (f, _) = rx().ingest(
            b"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nclient_address=2001:db8::1\nsender=\n\n",
        );
        let Frame::Request(a) = f else { panic!("{f:?}") };
        let q = a.query().unwrap();
        assert_eq!((q.state, q.sender, q.recipient), (State::EndOfMessage, None, None));
        for (s, want) in [
            ("CONNECT", State::Connect),
            ("EHLO", State::Helo),
            ("HELO", State::Helo),
            ("MAIL", State::Mail),
            ("DATA", State::Data),
            ("VRFY", State::Vrfy),
            ("ETRN", State::Etrn),
            ("BDAT", State::Other("BDAT".into())),
        ] {
            assert_eq!(State::parse(s), want);
        }
    }

    #[test]
    fn unusable_requests_are_reported_and_the_stream_goes_on() {
        let cases: &[(&[u8], Problem)] = &[
            (b"\n", Problem::Empty),
            (b"no equals here\n\n", Problem::NoEquals("no equals here".into())),
            (b"=value\n\n", Problem::EmptyName),
            (
                b"a=1\nb=2\nc=3\nd=4\ne=5\nf=6\ng=7\nh=8\ni=9\n\n",
                Problem::TooManyAttributes(8),
            ),
        ];
        for (input, want) in cases {
            let mut r = rx();
            let mut buf = input.to_vec();
            buf.extend_from_slice(RCPT);
            let (f, used) = r.ingest(&buf);
            assert_eq!(f, Frame::Invalid(want.clone()), "{:?}", String::from_utf8_lossy(input));
            assert_eq!(used, input.len());
            assert!(matches!(r.ingest(&buf[used..]).0, Frame::Request(_)));
        }
        let bad = |req: &[u8]| {
            let Frame::Request(a) = rx().ingest(req).0 else {
                panic!()
            };
            a.query().unwrap_err()
        };
        assert!(matches!(
            bad(b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=nope\n\n"),
            Problem::BadValue {
                name: "client_address",
                ..
            }
        ));
        assert!(matches!(
            bad(b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nrecipient=no-at\n\n"),
            Problem::BadValue { name: "recipient", .. }
        ));
        assert!(matches!(
            bad(b"request=other\n\n"),
            Problem::BadValue { name: "request", .. }
        ));
    }

    #[test]
    fn an_oversize_request_is_swallowed_to_its_empty_line_in_pieces() {
        let mut r = rx();
        let mut big = b"request=smtpd_access_policy\nccert_subject=".to_vec();
        big.extend(std::iter::repeat_n(b'x', 2000));
        big.extend_from_slice(b"\r\nother=1\n");
        // Fed in pieces: all consumed, nothing reported until the end.
        let (f, used) = r.ingest(&big[..1000]);
        assert_eq!((f, used), (Frame::NeedsMoreData, 1000));
        assert!(r.is_swallowing());
        let (f, used) = r.ingest(&big[1000..]);
        assert_eq!((f, used), (Frame::NeedsMoreData, big.len() - 1000));
        let mut rest = b"\r\n".to_vec();
        rest.extend_from_slice(RCPT);
        let (f, used) = r.ingest(&rest);
        assert_eq!((f, used), (Frame::Invalid(Problem::TooLarge(512)), 2));
        assert!(!r.is_swallowing());
        assert!(matches!(r.ingest(&rest[used..]).0, Frame::Request(_)));
    }

    #[test]
    fn actions_on_the_wire() {
        assert_eq!(Action::Dunno.to_bytes(), b"action=DUNNO\n\n");
        assert_eq!(
            Action::Reply(Reply::UNKNOWN_USER).to_bytes(),
            b"action=550 5.1.1 user unknown\n\n"
        );
        assert_eq!(
            Action::DeferIfPermit(Reply::new(451, "4.7.1", "Greylisted,\nretry in 60s")).to_bytes(),
            b"action=DEFER_IF_PERMIT 4.7.1 Greylisted,; retry in 60s\n\n"
        );
        assert_eq!(
            Action::Prepend("Received-SPF: pass (x)\r\n\tmore".into()).to_bytes(),
            b"action=PREPEND Received-SPF: pass (x);  more\n\n"
        );
    }
}
