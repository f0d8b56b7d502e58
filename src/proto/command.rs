//! SMTP command parser: one CRLF-stripped line in, one [`Command`] out.
//!
//! Pure function, no I/O; fuzzed by `fuzz/fuzz_targets/smtp_command.rs`.

use super::address::{AddressError, Mailbox, is_valid_helo, parse_path};
use super::reply::Reply;

/// `BODY=` parameter of MAIL (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

impl Body {
    pub fn as_param(self) -> Option<&'static str> {
        match self {
            Body::SevenBit => None,
            Body::EightBitMime => Some("8BITMIME"),
            Body::BinaryMime => Some("BINARYMIME"),
        }
    }
}

/// Parameters of MAIL FROM that sluice understands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
    /// DSN `RET=FULL|HDRS` and `ENVID=` are accepted and kept for the next hop.
    pub ret: Option<String>,
    pub envid: Option<String>,
}

/// Parameters of RCPT TO that sluice understands (DSN, RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

/// One parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: Option<Mailbox>,
        params: MailParams,
    },
    Rcpt {
        to: Mailbox,
        params: RcptParams,
    },
    /// `RCPT TO:<postmaster>` without a domain, which every server must
    /// accept (RFC 5321 §4.5.1): the session routes it to its postmaster.
    RcptPostmaster {
        params: RcptParams,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
}

impl Command {
    /// Short verb name for logs and metrics.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } | Command::RcptPostmaster { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy => "VRFY",
            Command::Expn => "EXPN",
            Command::Help => "HELP",
            Command::StartTls => "STARTTLS",
        }
    }
}

/// Why a command line was refused. Each maps to exactly one reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unrecognized command")]
    Unknown,
    #[error("syntax error in arguments")]
    Syntax,
    #[error("bad HELO/EHLO argument")]
    Helo,
    #[error("bad sender address: {0}")]
    Sender(AddressError),
    #[error("bad recipient address: {0}")]
    Recipient(AddressError),
    #[error("unsupported parameter")]
    UnknownParam,
    #[error("line is not valid UTF-8")]
    Encoding,
}

impl ParseError {
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::Unknown => Reply::SYNTAX_ERROR,
            ParseError::Syntax | ParseError::Encoding => Reply::PARAM_SYNTAX,
            ParseError::Helo => Reply::HELO_SYNTAX,
            ParseError::Sender(_) => Reply::BAD_SENDER_SYNTAX,
            ParseError::Recipient(_) => Reply::BAD_RCPT_SYNTAX,
            ParseError::UnknownParam => Reply::PARAM_UNKNOWN,
        }
    }
}

/// Parses one command line (without the trailing CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Encoding)?;
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, arg) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_start_matches(' ')),
        None => (line, ""),
    };
    if verb.len() > 8 {
        return Err(ParseError::Unknown);
    }
    let mut up = [0u8; 8];
    for (d, s) in up.iter_mut().zip(verb.bytes()) {
        *d = s.to_ascii_uppercase();
    }
    let verb = &up[..verb.len()];
    match verb {
        b"EHLO" | b"HELO" => {
            let host = arg.split(' ').next().unwrap_or("");
            if !is_valid_helo(host) {
                return Err(ParseError::Helo);
            }
            Ok(if verb == b"EHLO" {
                Command::Ehlo(host.to_string())
            } else {
                Command::Helo(host.to_string())
            })
        }
        b"MAIL" => parse_mail(arg),
        b"RCPT" => parse_rcpt(arg),
        b"DATA" => no_arg(arg, Command::Data),
        b"BDAT" => parse_bdat(arg),
        b"RSET" => no_arg(arg, Command::Rset),
        b"NOOP" => Ok(Command::Noop),
        b"QUIT" => no_arg(arg, Command::Quit),
        b"VRFY" => Ok(Command::Vrfy),
        b"EXPN" => Ok(Command::Expn),
        b"HELP" => Ok(Command::Help),
        b"STARTTLS" => no_arg(arg, Command::StartTls),
        _ => Err(ParseError::Unknown),
    }
}

fn no_arg(arg: &str, c: Command) -> Result<Command, ParseError> {
    if arg.is_empty() { Ok(c) } else { Err(ParseError::Syntax) }
}

/// Strips a case-insensitive `prefix` ("FROM:" / "TO:").
fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Splits ESMTP parameters `KEY[=VALUE]` separated by spaces.
fn params(rest: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    rest.split(' ').filter(|p| !p.is_empty()).map(|p| match p.find('=') {
        Some(i) => (&p[..i], Some(&p[i + 1..])),
        None => (p, None),
    })
}

fn parse_mail(arg: &str) -> Result<Command, ParseError> {
    let rest = strip_ci(arg, "FROM:").ok_or(ParseError::Syntax)?;
    let (from, rest) = parse_path(rest).map_err(ParseError::Sender)?;
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(ParseError::Syntax);
    }
    let mut p = MailParams::default();
    for (k, v) in params(rest) {
        match (k.to_ascii_uppercase().as_str(), v) {
            ("SIZE", Some(v)) => p.size = Some(v.parse().map_err(|_| ParseError::Syntax)?),
            ("BODY", Some(v)) => {
                p.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    // Not advertised (it needs BINARYMIME, RFC 3030): a
                    // 250 here would end in a bounce at the next hop.
                    "BINARYMIME" => return Err(ParseError::UnknownParam),
                    _ => return Err(ParseError::Syntax),
                }
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS") => {
                p.ret = Some(v.to_ascii_uppercase())
            }
            ("ENVID", Some(v)) if !v.is_empty() && v.len() <= 100 => p.envid = Some(v.to_string()),
            // RFC 4954 AUTH= on MAIL from an unauthenticated client: ignored.
            ("AUTH", Some(_)) => {}
            _ => return Err(ParseError::UnknownParam),
        }
    }
    Ok(Command::Mail { from, params: p })
}

fn parse_rcpt(arg: &str) -> Result<Command, ParseError> {
    let rest = strip_ci(arg, "TO:").ok_or(ParseError::Syntax)?;
    let postmaster = rest
        .trim_start_matches(' ')
        .get(..12)
        .is_some_and(|p| p.eq_ignore_ascii_case("<postmaster>"));
    let (to, rest) = if postmaster {
        (None, &rest.trim_start_matches(' ')[12..])
    } else {
        let (to, rest) = parse_path(rest).map_err(ParseError::Recipient)?;
        (Some(to.ok_or(ParseError::Recipient(AddressError::NoDomain))?), rest)
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(ParseError::Syntax);
    }
    let mut p = RcptParams::default();
    for (k, v) in params(rest) {
        match (k.to_ascii_uppercase().as_str(), v) {
            ("NOTIFY", Some(v)) if !v.is_empty() => p.notify = Some(v.to_ascii_uppercase()),
            ("ORCPT", Some(v)) if !v.is_empty() => p.orcpt = Some(v.to_string()),
            _ => return Err(ParseError::UnknownParam),
        }
    }
    Ok(match to {
        Some(to) => Command::Rcpt { to, params: p },
        None => Command::RcptPostmaster { params: p },
    })
}

fn parse_bdat(arg: &str) -> Result<Command, ParseError> {
    let mut it = arg.split(' ').filter(|s| !s.is_empty());
    let size = it
        .next()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 19)
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::Syntax)?;
    let last = match it.next() {
        None => false,
        Some(s) if s.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::Syntax),
    };
    if it.next().is_some() {
        return Err(ParseError::Syntax);
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Command {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }
    fn err(s: &str) -> ParseError {
        parse(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn simple_verbs() {
        let table: &[(&str, Command)] = &[
            ("DATA", Command::Data),
            ("data", Command::Data),
            ("RSET", Command::Rset),
            ("NOOP", Command::Noop),
            ("NOOP anything", Command::Noop),
            ("QUIT", Command::Quit),
            ("QUIT  ", Command::Quit),
            ("STARTTLS", Command::StartTls),
            ("VRFY postmaster", Command::Vrfy),
            ("EXPN list", Command::Expn),
            ("HELP", Command::Help),
            ("EHLO client.example", Command::Ehlo("client.example".into())),
            ("helo [192.0.2.1]", Command::Helo("[192.0.2.1]".into())),
            ("BDAT 100", Command::Bdat { size: 100, last: false }),
            ("BDAT 0 LAST", Command::Bdat { size: 0, last: true }),
            ("bdat 7 last", Command::Bdat { size: 7, last: true }),
        ];
        for (line, want) in table {
            assert_eq!(&ok(line), want, "{line}");
        }
    }

    #[test]
    fn errors() {
        let table: &[(&str, ParseError)] = &[
            ("", ParseError::Unknown),
            ("FOO", ParseError::Unknown),
            ("VERYLONGVERB x", ParseError::Unknown),
            ("DATA x", ParseError::Syntax),
            ("EHLO", ParseError::Helo),
            ("EHLO bad..name", ParseError::Helo),
            ("MAIL <a@b>", ParseError::Syntax),
            ("MAIL FROM:a@b", ParseError::Sender(AddressError::NotBracketed)),
            ("MAIL FROM:<a@b> FOO=1", ParseError::UnknownParam),
            ("MAIL FROM:<a@b> SIZE=x", ParseError::Syntax),
            ("MAIL FROM:<a@b> BODY=9BIT", ParseError::Syntax),
            ("MAIL FROM:<a@b>SIZE=1", ParseError::Syntax),
            ("RCPT TO:<>", ParseError::Recipient(AddressError::NoDomain)),
            ("RCPT TO:<x>", ParseError::Recipient(AddressError::NoDomain)),
            ("RCPT TO:<a@b> BOGUS", ParseError::UnknownParam),
            ("BDAT", ParseError::Syntax),
            ("BDAT -1", ParseError::Syntax),
            ("BDAT 1 NOTLAST", ParseError::Syntax),
            ("BDAT 99999999999999999999999", ParseError::Syntax),
        ];
        for (line, want) in table {
            assert_eq!(&err(line), want, "{line}");
        }
        assert_eq!(parse(b"MAIL FROM:<\xff@b>").unwrap_err(), ParseError::Encoding);
    }

    #[test]
    fn mail_params() {
        match ok("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=hdrs ENVID=x1") {
            Command::Mail { from, params } => {
                assert_eq!(from.unwrap().to_string(), "a@b.example");
                assert_eq!(params.size, Some(1000));
                assert_eq!(params.body, Body::EightBitMime);
                assert!(params.smtputf8);
                assert_eq!(params.ret.as_deref(), Some("HDRS"));
                assert_eq!(params.envid.as_deref(), Some("x1"));
            }
            c => panic!("{c:?}"),
        }
        // Null sender and a space after the colon (common in the wild).
        assert_eq!(
            ok("mail from: <>"),
            Command::Mail {
                from: None,
                params: MailParams::default()
            }
        );
    }

    #[test]
    fn rcpt_params() {
        match ok("RCPT TO:<u@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;u@example.com") {
            Command::Rcpt { to, params } => {
                assert_eq!(to.to_string(), "u@example.com");
                assert_eq!(params.notify.as_deref(), Some("FAILURE,DELAY"));
                assert_eq!(params.orcpt.as_deref(), Some("rfc822;u@example.com"));
            }
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn every_error_has_a_5xx_reply() {
        for e in [
            ParseError::Unknown,
            ParseError::Syntax,
            ParseError::Helo,
            ParseError::Sender(AddressError::BadChar),
            ParseError::Recipient(AddressError::BadChar),
            ParseError::UnknownParam,
            ParseError::Encoding,
        ] {
            assert!(e.reply().is_permanent(), "{e}");
        }
    }
}
