//! Offences in a Postfix mail log (and postscreen's, amavis'), sans-IO:
//! `sluice bans import-postfix-log` feeds each line to [`Parser::line`] and
//! the result to [`Engine::record`](super::engine::Engine::record).
//!
//! Timestamps: classic syslog (`Nov 24 01:02:03[.frac]`: the year of "now",
//! or the one before when that is over a day ahead; the zone from
//! [`Parser::with_utc_offset`], UTC by default) or RFC 3339 (`…+01:00`,
//! `…+0100`, `…Z`). Then the host, the tag (`postfix/smtpd[123]:`; its last
//! part picks the program) and the message, matched case-insensitively:
//!
//! - smtpd `NOQUEUE|<queue id>: reject: X from host[IP]: <reply>` saying
//!   `User unknown in … table` or `Relay access denied` (unknown user),
//!   `blocked using <list>` (DNSBL, any list). Not `reject_warning:`.
//! - smtpd `lost connection|too many errors|improper command pipelining|
//!   timeout after X`, `non-SMTP command` `from host[IP]`: protocol;
//!   `<what> limit exceeded: N from host[IP]`: rate limit.
//! - postscreen `PREGREET`, `DNSBL rank N for [IP]`, and `HANGUP`, `COMMAND
//!   PIPELINING`, `NON-SMTP COMMAND`, `BARE NEWLINE`, `COMMAND TIME|COUNT|
//!   LENGTH LIMIT` (protocol). Its `reject:` lines repeat a counted `DNSBL
//!   rank`: skipped.
//! - amavis `Blocked INFECTED` (virus), `Blocked SPAM[MY]` (spam): the
//!   client is the first `[IP]` after the `{actions},`.
//!
//! Loopback clients come back too: the engine's allowlist refuses them.

use std::net::IpAddr;

use super::engine::Offence;

const DAY: i64 = 86_400;
/// 9999-12-31T23:59:59Z: later "now"s are clamped to it.
const MAX_TIME: i64 = 253_402_300_799;
/// The longest evidence kept, in bytes.
const MAX_EVIDENCE: usize = 160;
const MONTHS: &str = "janfebmaraprmayjunjulaugsepoctnovdec";

/// One offence found in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOffence {
    /// When, in seconds since the Unix epoch.
    pub at: u64,
    pub ip: IpAddr,
    pub offence: Offence,
    /// The program and what it said, short: `postfix/smtpd: User unknown in
    /// virtual mailbox table`.
    pub evidence: String,
}

/// Turns log lines into [`LogOffence`]s; see the module docs.
#[derive(Debug, Clone)]
pub struct Parser {
    /// The local year of "now", for timestamps without one.
    year: i32,
    now: i64,
    /// Seconds east of UTC of classic timestamps (and of RFC 3339 ones
    /// without an offset).
    utc_offset: i64,
}

impl Parser {
    /// A parser reading a log at `now_unix`, classic timestamps in UTC.
    pub fn new(now_unix: u64) -> Parser {
        let now = i64::try_from(now_unix).unwrap_or(MAX_TIME).min(MAX_TIME);
        Parser {
            year: 1970,
            now,
            utc_offset: 0,
        }
        .with_utc_offset(0)
    }

    /// Classic timestamps are local time `seconds` east of UTC (e.g. 3600
    /// for CET); clamped to ±1 day.
    pub fn with_utc_offset(mut self, seconds: i32) -> Parser {
        self.utc_offset = i64::from(seconds).clamp(-DAY, DAY);
        let year = year_of((self.now + self.utc_offset).div_euclid(DAY));
        self.year = i32::try_from(year).unwrap_or(1970);
        self
    }

    /// The offence one log line reports, if any.
    pub fn line(&mut self, line: &str) -> Option<LogOffence> {
        let (at, rest) = self.timestamp(line.trim_end())?;
        let (_host, rest) = token(rest)?;
        let (tag, rest) = token(rest)?;
        let tag = tag.strip_suffix(':')?;
        let program = tag.split('[').next().filter(|p| !p.is_empty())?;
        let msg = rest.strip_prefix(' ').unwrap_or(rest);
        let (ip, offence, what) = classify(program, msg)?;
        let evidence = format!("{}: {}", head(program, 40), head(what.trim_end(), MAX_EVIDENCE - 42));
        Some(LogOffence {
            at,
            ip,
            offence,
            evidence,
        })
    }

    /// The line's time and what follows it.
    fn timestamp<'a>(&self, line: &'a str) -> Option<(u64, &'a str)> {
        let (first, rest) = token(line)?;
        let (at, rest) = if first.starts_with(|c: char| c.is_ascii_digit()) {
            (rfc3339(first, self.utc_offset)?, rest)
        } else {
            let (day, rest) = token(rest)?;
            let (time, rest) = token(rest)?;
            (self.classic(first, day, time)?, rest)
        };
        Some((u64::try_from(at).ok()?, rest))
    }

    /// `Nov 24 01:02:03`: this year, or the previous one when that would be
    /// more than a day ahead of now (or is no date: Feb 29).
    fn classic(&self, month: &str, day: &str, time: &str) -> Option<i64> {
        let m = MONTHS
            .find(&month.to_ascii_lowercase())
            .filter(|i| i % 3 == 0 && month.len() == 3)?;
        let d = number(day, 1, 2)?;
        let secs = clock(time)?;
        let at = |year: i64| Some(civil(year, m as u32 / 3 + 1, d)? + secs - self.utc_offset);
        let year = i64::from(self.year);
        match at(year) {
            Some(t) if t <= self.now + DAY => Some(t),
            _ => at(year - 1),
        }
    }
}

/// Parses every line; the offences sorted by time (stable), and how many
/// lines were read.
pub fn parse_all(text_lines: impl Iterator<Item = String>, now: u64) -> (Vec<LogOffence>, usize) {
    let mut parser = Parser::new(now);
    let mut read = 0;
    let mut found = Vec::new();
    for line in text_lines {
        read += 1;
        found.extend(parser.line(&line));
    }
    found.sort_by_key(|o| o.at);
    (found, read)
}

/// The next space-separated word (leading spaces skipped) and the rest,
/// which starts at the space after it.
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    let end = s.find(' ').unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn head(s: &str, max: usize) -> &str {
    let mut n = max.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `s` as a decimal of `min..=max` ASCII digits (at most 4).
fn number(s: &str, min: usize, max: usize) -> Option<u32> {
    let ok = (min..=max).contains(&s.len()) && digits(s);
    ok.then(|| s.bytes().fold(0, |n, b| n * 10 + u32::from(b - b'0')))
}

/// `HH:MM:SS` with an optional `.fraction` (dropped): seconds of the day.
fn clock(s: &str) -> Option<i64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, "0"));
    let mut f = hms.split(':').map(|p| number(p, 2, 2));
    let (h, m, s) = (f.next()??, f.next()??, f.next()??);
    let ok = f.next().is_none() && h < 24 && m < 60 && s <= 60 && digits(frac);
    ok.then(|| i64::from(h * 3600 + m * 60 + s))
}

/// `2026-11-24T01:02:03[.fraction][Z|±HH:MM|±HHMM]`; without a zone,
/// `default_offset` (seconds east of UTC) applies.
fn rfc3339(s: &str, default_offset: i64) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let y = number(s.get(0..4)?, 4, 4)?;
    let m = number(s.get(5..7)?, 2, 2)?;
    let d = number(s.get(8..10)?, 2, 2)?;
    let rest = s.get(11..)?;
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(zone_at);
    let offset = match zone.as_bytes().first() {
        None => default_offset,
        Some(b'Z' | b'z') if zone.len() == 1 => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let hm = zone.get(1..)?;
            let (h, m) = hm.split_once(':').unwrap_or((hm.get(..2)?, hm.get(2..)?));
            let h = number(h, 2, 2).filter(|&h| h < 24)?;
            let m = number(m, 2, 2).filter(|&m| m < 60)?;
            let secs = i64::from(h * 3600 + m * 60);
            if sign == b'-' { -secs } else { secs }
        }
        Some(_) => return None,
    };
    Some(civil(i64::from(y), m, d)? + clock(time)? - offset)
}

/// Seconds from the epoch to midnight UTC of a date (days-from-civil,
/// proleptic Gregorian); `None` for no such date.
fn civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let len = match m {
        2 => 28 + u32::from(leap),
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if d == 0 || d > len {
        return None;
    }
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * DAY)
}

/// The year of a day counted from the epoch.
fn year_of(days: i64) -> i64 {
    crate::smtp::date::civil_from_days(days).0
}

/// `[1.2.3.4]`'s inside: an address, `IPv6:` prefix allowed.
fn ip(s: &str) -> Option<IpAddr> {
    let s = match s.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("ipv6:") => &s[5..],
        _ => s,
    };
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// What a message reports: the client, the offence and the words to show.
type Found<'a> = (IpAddr, Offence, &'a str);

/// A message and its ASCII-lowercased twin: the same byte offsets, so
/// patterns are found in `low` and slices taken from `raw`.
struct Msg<'a> {
    raw: &'a str,
    low: String,
}

impl Msg<'_> {
    fn find(&self, from: usize, pat: &str) -> Option<usize> {
        self.low.get(from..)?.find(pat).map(|i| i + from)
    }

    fn starts(&self, at: usize, pat: &str) -> bool {
        self.low.get(at..).is_some_and(|s| s.starts_with(pat))
    }

    /// The client `name[IP]` (or `[IP]:port`) right after the first `sep`
    /// at or after `from`: the address, where `sep` is and the offset after
    /// the `]`.
    fn client(&self, from: usize, sep: &str) -> Option<(IpAddr, usize, usize)> {
        let at = self.find(from, sep)?;
        let start = at + sep.len();
        let rest = &self.raw[start..];
        let open = rest.find('[')?;
        if rest[..open].contains(char::is_whitespace) {
            return None;
        }
        let close = open + rest[open..].find(']')?;
        Some((ip(&rest[open + 1..close])?, at, start + close + 1))
    }
}

fn classify<'a>(program: &str, msg: &'a str) -> Option<Found<'a>> {
    let program = program.to_ascii_lowercase();
    let service = program.rsplit('/').next().unwrap_or("");
    let amavis = program.contains("amavis");
    if !amavis && service != "smtpd" && service != "postscreen" {
        return None;
    }
    let m = Msg {
        raw: msg,
        low: msg.to_ascii_lowercase(),
    };
    match service {
        _ if amavis => amavis_blocked(&m),
        "smtpd" => smtpd(&m),
        _ => postscreen(&m),
    }
}

const SMTPD_PROTOCOL: [&str; 5] = [
    "lost connection after ",
    "too many errors after ",
    "improper command pipelining after ",
    "timeout after ",
    "non-smtp command from ",
];

fn smtpd<'a>(m: &Msg<'a>) -> Option<Found<'a>> {
    let b = if m.starts(0, "warning: ") { 9 } else { 0 };
    // `NOQUEUE: reject: …` or `4Xyz12AB3: reject: …`.
    if let Some(colon) = m.find(b, ": ")
        && colon > b
        && m.low[b..colon].bytes().all(|c| c.is_ascii_alphanumeric())
    {
        return m.starts(colon + 2, "reject: ").then(|| smtpd_reject(m, colon + 10))?;
    }
    if SMTPD_PROTOCOL.iter().any(|p| m.starts(b, p)) {
        let (ip, from, _) = m.client(b, " from ")?;
        return Some((ip, Offence::Protocol, &m.raw[b..from]));
    }
    let p = m.find(b, " limit exceeded: ")?;
    if !m.low[b..p].bytes().all(|c| c.is_ascii_alphabetic() || c == b' ') {
        return None;
    }
    let (ip, from, _) = m.client(p, " from ")?;
    Some((ip, Offence::RateLimit, &m.raw[b..from]))
}

/// `RCPT from host[IP]: 550 5.1.1 <a@b>: Recipient address rejected: …;
/// from=<…> to=<…> proto=ESMTP helo=<…>`, from `at` on.
fn smtpd_reject<'a>(m: &Msg<'a>, at: usize) -> Option<Found<'a>> {
    let (ip, from, end) = m.client(at, " from ")?;
    if m.low[at..from].contains(' ') {
        return None;
    }
    // The reply alone, not the envelope after it (quoted local parts can
    // say anything).
    let stop = m.find(end, "; from=<").unwrap_or(m.raw.len());
    let reply = &m.low[end..stop];
    let found = |pat: &str, offence| {
        let i = end + reply.find(pat)?;
        let len = m.low[i..stop].find([';', ',']).unwrap_or(stop - i);
        Some((ip, offence, &m.raw[i..i + len]))
    };
    found("user unknown in ", Offence::UnknownUser)
        .or_else(|| found("relay access denied", Offence::UnknownUser))
        .or_else(|| found("blocked using ", Offence::Dnsbl))
}

/// postscreen: (start of the message, what precedes the client, offence).
const POSTSCREEN: [(&str, &str, Offence); 9] = [
    ("pregreet ", " from ", Offence::Pregreet),
    ("dnsbl rank ", " for ", Offence::Dnsbl),
    ("hangup ", " from ", Offence::Protocol),
    ("command pipelining from ", " from ", Offence::Protocol),
    ("non-smtp command from ", " from ", Offence::Protocol),
    ("bare newline from ", " from ", Offence::Protocol),
    ("command time limit from ", " from ", Offence::Protocol),
    ("command count limit from ", " from ", Offence::Protocol),
    ("command length limit from ", " from ", Offence::Protocol),
];

fn postscreen<'a>(m: &Msg<'a>) -> Option<Found<'a>> {
    let &(_, sep, offence) = POSTSCREEN.iter().find(|(start, _, _)| m.starts(0, start))?;
    let (ip, at, _) = m.client(0, sep)?;
    Some((ip, offence, &m.raw[..at]))
}

/// `(01234-05) Blocked INFECTED (Eicar-Signature) {DiscardedInbound,
/// Quarantined}, [192.0.2.1]:41234 [203.0.113.9] <a@b> -> <c@d>, …`.
fn amavis_blocked<'a>(m: &Msg<'a>) -> Option<Found<'a>> {
    let b = if m.starts(0, "(") { m.find(0, ") ")? + 2 } else { 0 };
    if !m.starts(b, "blocked ") {
        return None;
    }
    let kind = b + "blocked ".len();
    let kinds = [("infected", Offence::Virus), ("spam", Offence::Spam)];
    let (_, offence) = kinds.into_iter().find(|(k, _)| m.starts(kind, k))?;
    let what_end = [m.find(kind, " {"), m.find(kind, ",")].into_iter().flatten().min()?;
    let mut at = m.find(kind, "},").map_or(what_end, |i| i + 2);
    // The first bracketed address: the client (perhaps after LOCAL,
    // ORIGINATING); a few tries past anything else in brackets.
    for _ in 0..4 {
        let open = at + m.raw[at..].find('[')?;
        let close = open + m.raw[open..].find(']')?;
        if let Some(ip) = ip(&m.raw[open + 1..close]) {
            return Some((ip, offence, &m.raw[b..what_end]));
        }
        at = close + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24T12:00:00Z.
    const NOW: u64 = 1_795_521_600;
    /// 2026-11-24T01:02:03Z: `Nov 24 01:02:03` read at [`NOW`].
    const T: u64 = 1_795_482_123;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn parse(line: &str) -> Option<LogOffence> {
        Parser::new(NOW).line(line)
    }

    /// The line is recognised with this client and offence; its evidence.
    fn found(line: &str, client: &str, offence: Offence) -> String {
        let o = parse(line).unwrap_or_else(|| panic!("not recognised: {line}"));
        assert_eq!((o.at, o.ip, o.offence), (T, ip(client), offence), "{line}");
        o.evidence
    }

    fn smtpd(msg: &str) -> String {
        format!("Nov 24 01:02:03 mx1 postfix/smtpd[4711]: {msg}")
    }

    fn postscreen(msg: &str) -> String {
        format!("Nov 24 01:02:03 mx1 postfix/postscreen[815]: {msg}")
    }

    fn amavis(msg: &str) -> String {
        format!("Nov 24 01:02:03 mx1 amavis[2302]: (02302-07) {msg}")
    }

    fn rcpt_reject(client: &str, reply: &str) -> String {
        smtpd(&format!(
            "NOQUEUE: reject: RCPT from {client}: {reply}; from=<spam@example.net> \
             to=<info@example.org> proto=ESMTP helo=<example.net>"
        ))
    }

    #[test]
    fn user_unknown_in_every_recipient_table_is_unknown_user() {
        for table in [
            "local recipient table",
            "virtual mailbox table",
            "relay recipient table",
            "virtual alias table",
        ] {
            let line = rcpt_reject(
                "unknown[192.0.2.10]",
                &format!("550 5.1.1 <info@example.org>: Recipient address rejected: User unknown in {table}"),
            );
            let evidence = found(&line, "192.0.2.10", Offence::UnknownUser);
            assert_eq!(evidence, format!("postfix/smtpd: User unknown in {table}"));
        }
    }

    #[test]
    fn relay_access_denied_is_unknown_user() {
        let line = rcpt_reject(
            "mail.example.net[198.51.100.7]",
            "554 5.7.1 <victim@example.com>: Relay access denied",
        );
        assert_eq!(
            found(&line, "198.51.100.7", Offence::UnknownUser),
            "postfix/smtpd: Relay access denied"
        );
    }

    #[test]
    fn a_reject_after_a_queue_id_counts_like_noqueue() {
        let line = smtpd(
            "4Xyz1J2Kq3z9: reject: RCPT from unknown[192.0.2.10]: 550 5.1.1 <bob@example.org>: \
             Recipient address rejected: User unknown in virtual mailbox table; from=<a@example.net> \
             to=<bob@example.org> proto=ESMTP helo=<x>",
        );
        found(&line, "192.0.2.10", Offence::UnknownUser);
    }

    #[test]
    fn a_client_blocked_using_a_dnsbl_is_dnsbl() {
        let line = rcpt_reject(
            "unknown[203.0.113.5]",
            "554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org; \
             https://www.spamhaus.org/query/ip/203.0.113.5",
        );
        assert_eq!(
            found(&line, "203.0.113.5", Offence::Dnsbl),
            "postfix/smtpd: blocked using zen.spamhaus.org"
        );
    }

    #[test]
    fn rhsbl_blocks_of_sender_and_helo_are_dnsbl() {
        for reply in [
            "554 5.7.1 <spam@bad.example>: Sender address rejected: Sender address [bad.example] \
             blocked using dbl.spamhaus.org",
            "554 5.7.1 <bad.example>: Helo command rejected: Host [bad.example] blocked using \
             dbl.spamhaus.org, see https://example.com",
        ] {
            let line = rcpt_reject("bad.example[203.0.113.6]", reply);
            let evidence = found(&line, "203.0.113.6", Offence::Dnsbl);
            assert_eq!(evidence, "postfix/smtpd: blocked using dbl.spamhaus.org");
        }
    }

    #[test]
    fn postscreen_dnsbl_rank_is_dnsbl() {
        let line = postscreen("DNSBL rank 6 for [203.0.113.5]:52311");
        assert_eq!(
            found(&line, "203.0.113.5", Offence::Dnsbl),
            "postfix/postscreen: DNSBL rank 6"
        );
    }

    #[test]
    fn postscreen_rejects_after_a_dnsbl_rank_are_not_counted_again() {
        let line = postscreen(
            "NOQUEUE: reject: RCPT from [203.0.113.5]:52311: 550 5.7.1 Service unavailable; \
             client [203.0.113.5] blocked using zen.spamhaus.org; from=<a@example.net>, \
             to=<b@example.org>, proto=ESMTP, helo=<x>",
        );
        assert_eq!(parse(&line), None);
    }

    #[test]
    fn postscreen_pregreet_is_pregreet() {
        let line = postscreen("PREGREET 11 after 0.09 from [198.51.100.23]:40123: EHLO example.net\\r\\n");
        assert_eq!(
            found(&line, "198.51.100.23", Offence::Pregreet),
            "postfix/postscreen: PREGREET 11 after 0.09"
        );
    }

    #[test]
    fn postscreen_protocol_violations_are_protocol() {
        for (msg, evidence) in [
            (
                "HANGUP after 0.71 from [198.51.100.23]:40123 in tests before SMTP handshake",
                "HANGUP after 0.71",
            ),
            (
                "COMMAND PIPELINING from [198.51.100.23]:40123 after EHLO: MAIL FROM:<a@b>\\r\\n",
                "COMMAND PIPELINING",
            ),
            (
                "NON-SMTP COMMAND from [198.51.100.23]:40123 after CONNECT: GET / HTTP/1.1",
                "NON-SMTP COMMAND",
            ),
            ("BARE NEWLINE from [198.51.100.23]:40123 after DATA", "BARE NEWLINE"),
            (
                "COMMAND TIME LIMIT from [198.51.100.23]:40123 after RCPT",
                "COMMAND TIME LIMIT",
            ),
        ] {
            let got = found(&postscreen(msg), "198.51.100.23", Offence::Protocol);
            assert_eq!(got, format!("postfix/postscreen: {evidence}"));
        }
    }

    #[test]
    fn smtpd_lost_connections_are_protocol_whatever_the_stage() {
        for stage in [
            "CONNECT",
            "EHLO",
            "HELO",
            "AUTH",
            "MAIL",
            "RCPT",
            "DATA (123 bytes)",
            "UNKNOWN",
        ] {
            let line = smtpd(&format!("lost connection after {stage} from unknown[192.0.2.99]"));
            let evidence = found(&line, "192.0.2.99", Offence::Protocol);
            assert_eq!(evidence, format!("postfix/smtpd: lost connection after {stage}"));
        }
    }

    #[test]
    fn smtpd_errors_pipelining_non_smtp_and_timeouts_are_protocol() {
        for (msg, evidence) in [
            (
                "too many errors after RCPT from unknown[192.0.2.99]",
                "too many errors after RCPT",
            ),
            (
                "improper command pipelining after CONNECT from unknown[192.0.2.99]: EHLO x\\r\\nMAIL FROM:<a@b>\\r\\n",
                "improper command pipelining after CONNECT",
            ),
            (
                "warning: non-SMTP command from unknown[192.0.2.99]: GET / HTTP/1.1",
                "non-SMTP command",
            ),
            (
                "timeout after DATA (8192 bytes) from host.example.net[192.0.2.99]",
                "timeout after DATA (8192 bytes)",
            ),
            (
                "timeout after END-OF-MESSAGE from unknown[192.0.2.99]",
                "timeout after END-OF-MESSAGE",
            ),
        ] {
            let got = found(&smtpd(msg), "192.0.2.99", Offence::Protocol);
            assert_eq!(got, format!("postfix/smtpd: {evidence}"));
        }
    }

    #[test]
    fn rate_and_concurrency_limit_warnings_are_rate_limit() {
        for what in [
            "Connection rate limit exceeded: 31",
            "Connection concurrency limit exceeded: 51",
            "Message delivery request rate limit exceeded: 101",
            "Recipient address rate limit exceeded: 501",
        ] {
            let line = smtpd(&format!("warning: {what} from unknown[192.0.2.44] for service smtp"));
            let evidence = found(&line, "192.0.2.44", Offence::RateLimit);
            assert_eq!(evidence, format!("postfix/smtpd: {what}"));
        }
    }

    #[test]
    fn amavis_blocked_infected_is_virus_from_the_client_after_the_actions() {
        let line = amavis(
            "Blocked INFECTED (Eicar-Signature) {DiscardedInbound,Quarantined}, [192.0.2.77]:41234 \
             [203.0.113.9] <a@example.net> -> <b@example.org>, quarantine: virus-AbCd, Queue-ID: 4Xyz1J, \
             Message-ID: <1@example.net>, mail_id: AbCd, Hits: -, size: 812, 233 ms",
        );
        assert_eq!(
            found(&line, "192.0.2.77", Offence::Virus),
            "amavis: Blocked INFECTED (Eicar-Signature)"
        );
    }

    #[test]
    fn amavis_blocked_spam_is_spam() {
        let line = amavis(
            "Blocked SPAM {DiscardedInbound,Quarantined}, [192.0.2.78]:50102 [192.0.2.78] \
             <a@example.net> -> <b@example.org>, Queue-ID: 4Xyz1K, mail_id: EfGh, Hits: 14.2, size: 3012",
        );
        assert_eq!(found(&line, "192.0.2.78", Offence::Spam), "amavis: Blocked SPAM");
    }

    #[test]
    fn amavis_finds_the_client_after_origin_tags_and_in_old_formats() {
        let tagged = amavis(
            "Blocked SPAM {RejectedOutbound}, ORIGINATING LOCAL [2001:db8::25]:50102 \
             <a@example.org> -> <b@example.net>, Hits: 9.1",
        );
        found(&tagged, "2001:db8::25", Offence::Spam);
        let old = amavis("Blocked INFECTED (Eicar-Test-Signature), [192.0.2.79] [192.0.2.79] <a@b> -> <c@d>");
        let evidence = found(&old, "192.0.2.79", Offence::Virus);
        assert_eq!(evidence, "amavis: Blocked INFECTED (Eicar-Test-Signature)");
    }

    #[test]
    fn ipv6_clients_parse_with_and_without_the_ipv6_prefix() {
        let plain = smtpd("lost connection after EHLO from unknown[2001:db8::1]");
        found(&plain, "2001:db8::1", Offence::Protocol);
        let tagged = smtpd("lost connection after EHLO from unknown[IPv6:2001:db8::1]");
        found(&tagged, "2001:db8::1", Offence::Protocol);
        let ps = postscreen("PREGREET 4 after 0 from [2001:db8::2]:40000: QUIT\\r\\n");
        found(&ps, "2001:db8::2", Offence::Pregreet);
        let mapped = smtpd("too many errors after RCPT from unknown[::ffff:192.0.2.3]");
        found(&mapped, "192.0.2.3", Offence::Protocol);
    }

    #[test]
    fn loopback_clients_are_returned_for_the_engine_to_refuse() {
        found(
            &smtpd("lost connection after CONNECT from localhost[127.0.0.1]"),
            "127.0.0.1",
            Offence::Protocol,
        );
    }

    #[test]
    fn ordinary_traffic_and_other_rejects_are_not_offences() {
        for line in [
            smtpd("connect from unknown[192.0.2.1]"),
            smtpd("disconnect from unknown[192.0.2.1] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4"),
            smtpd("4Xyz1J2Kq3z9: client=mail.example.net[192.0.2.1]"),
            smtpd(
                "NOQUEUE: reject_warning: RCPT from unknown[192.0.2.1]: 550 5.1.1 <x@example.org>: \
                 Recipient address rejected: User unknown in virtual mailbox table; from=<> to=<x@example.org>",
            ),
            rcpt_reject(
                "unknown[192.0.2.1]",
                "450 4.7.1 <x>: Helo command rejected: Host not found",
            ),
            // Only the reply counts, not the envelope after it.
            smtpd(
                "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 450 4.2.0 <x@example.org>: \
                 Recipient address rejected: Greylisted; from=<\"relay access denied\"@example.net>",
            ),
            smtpd("warning: hostname nope.example does not resolve to address 192.0.2.1"),
            smtpd("warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"),
            "Nov 24 01:02:03 mx1 postfix/smtp[99]: 4Xyz1J2Kq3z9: to=<b@example.org>, \
             relay=10.0.0.2[10.0.0.2]:25, delay=0.2, status=sent (250 2.0.0 Ok)"
                .into(),
            "Nov 24 01:02:03 mx1 postfix/anvil[7]: statistics: max connection rate 31/60s for \
             (smtp:192.0.2.1) at Nov 24 01:00:00"
                .into(),
            postscreen("CONNECT from [192.0.2.1]:40000 to [198.51.100.1]:25"),
            postscreen("PASS NEW [192.0.2.1]:40000"),
            postscreen("DISCONNECT [192.0.2.1]:40000"),
            amavis("Passed CLEAN {RelayedInbound}, [192.0.2.1]:40000 [192.0.2.1] <a@b> -> <c@d>, Hits: -1.2"),
            amavis("Blocked BANNED (.exe,x.exe) {DiscardedInbound}, [192.0.2.1]:40000 <a@b> -> <c@d>"),
            "Nov 24 01:02:03 mx1 sshd[12]: timeout after CONNECT from unknown[192.0.2.1]".into(),
            smtpd("lost connection after CONNECT from unknown[not-an-address]"),
            smtpd("lost connection after CONNECT from unknown"),
        ] {
            assert_eq!(parse(&line), None, "{line}");
        }
    }

    #[test]
    fn classic_timestamps_take_the_year_of_now() {
        assert_eq!(
            parse(&smtpd("too many errors after RCPT from x[192.0.2.1]"))
                .unwrap()
                .at,
            T
        );
        let zero_padded = "Nov 04 07:08:09 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
        let space_padded = "Nov  4 07:08:09 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
        assert_eq!(parse(zero_padded).unwrap().at, 1_793_776_089);
        assert_eq!(parse(space_padded).unwrap().at, 1_793_776_089);
        let fraction = "Nov 24 01:02:03.456789 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
        assert_eq!(parse(fraction).unwrap().at, T);
    }

    #[test]
    fn every_month_name_maps_to_its_month() {
        let names = [
            "Jan", "FEB", "mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mut p = Parser::new(1_798_675_200); // 2026-12-31T00:00:00Z
        for (i, name) in names.into_iter().enumerate() {
            let line = format!("{name} 15 00:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]");
            let want = civil(2026, i as u32 + 1, 15).unwrap() as u64;
            assert_eq!(p.line(&line).map(|o| o.at), Some(want), "{name}");
        }
        for bad in ["Ja", "Janu", "anf", "nfe", "xyz"] {
            let line = format!("{bad} 15 00:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]");
            assert_eq!(p.line(&line), None, "{bad}");
        }
    }

    #[test]
    fn classic_timestamps_are_shifted_by_the_configured_utc_offset() {
        let line = smtpd("timeout after DATA from x[192.0.2.1]");
        assert_eq!(Parser::new(NOW).with_utc_offset(3600).line(&line).unwrap().at, T - 3600);
        assert_eq!(
            Parser::new(NOW).with_utc_offset(-5 * 3600).line(&line).unwrap().at,
            T + 5 * 3600
        );
    }

    #[test]
    fn rfc3339_timestamps_honour_their_offset() {
        let msg = "mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
        for (stamp, at) in [
            ("2026-11-24T01:02:03.123456+01:00", T - 3600),
            ("2026-11-24T01:02:03Z", T),
            ("2026-11-24T01:02:03-05:00", T + 5 * 3600),
            ("2026-11-24T01:02:03+0100", T - 3600),
            ("2026-11-24T01:02:03", T),
        ] {
            assert_eq!(parse(&format!("{stamp} {msg}")).unwrap().at, at, "{stamp}");
        }
        let local = Parser::new(NOW)
            .with_utc_offset(7200)
            .line(&format!("2026-11-24T01:02:03 {msg}"));
        assert_eq!(local.unwrap().at, T - 7200, "no offset: the configured one");
    }

    #[test]
    fn december_31_read_on_january_1_is_last_year() {
        let now = 1_767_227_400; // 2026-01-01T00:30:00Z
        let mut p = Parser::new(now);
        let dec = p.line("Dec 31 23:59:59 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]");
        assert_eq!(dec.unwrap().at, 1_767_225_599); // 2025-12-31T23:59:59Z
        let jan = p.line("Jan  1 00:10:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]");
        assert_eq!(jan.unwrap().at, 1_767_226_200); // 2026-01-01T00:10:00Z
    }

    #[test]
    fn up_to_a_day_ahead_stays_this_year_beyond_is_last_year() {
        let within = "Nov 25 11:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
        assert_eq!(parse(within).unwrap().at, 1_795_604_400); // 2026-11-25T11:00Z
        let beyond = "Nov 25 13:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
        assert_eq!(parse(beyond).unwrap().at, 1_764_075_600); // 2025-11-25T13:00Z
    }

    #[test]
    fn february_29_falls_back_to_a_leap_year_or_is_dropped() {
        let line = "Feb 29 10:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
        // Read in January 2025: 2025 has no Feb 29, 2024 has.
        assert_eq!(Parser::new(1_736_467_200).line(line).unwrap().at, 1_709_200_800);
        // Read in March 2026: neither 2026 nor 2025 has one.
        assert_eq!(Parser::new(1_773_100_800).line(line), None);
    }

    #[test]
    fn lines_without_a_parseable_timestamp_are_none() {
        let msg = "mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
        for stamp in [
            "",
            "Foo 24 01:02:03",
            "Nov 31 01:02:03",
            "Nov 0 01:02:03",
            "Nov 24 24:00:00",
            "Nov 24 01:02",
            "Nov 24 01:02:03.",
            "2026-13-01T01:02:03Z",
            "2026-11-24 01:02:03",
            "2026-11-24T01:02:03+1:00",
            "2026-11-24T01:02:03Q",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse(&format!("{stamp} {msg}")), None, "{stamp:?}");
        }
        assert_eq!(parse("timeout after DATA from x[192.0.2.1]"), None);
    }

    #[test]
    fn days_from_civil_and_back_match_known_dates() {
        assert_eq!(civil(1970, 1, 1), Some(0));
        assert_eq!(civil(2000, 3, 1), Some(951_868_800));
        assert_eq!(civil(2024, 2, 29), Some(1_709_200_800 - 10 * 3600));
        assert_eq!(civil(2100, 2, 29), None);
        assert_eq!(civil(9999, 12, 31), Some(MAX_TIME - DAY + 1));
        for (days, year) in [(0, 1970), (-1, 1969), (11_016, 2000), (20_453, 2025), (20_454, 2026)] {
            assert_eq!(year_of(days), year, "{days}");
        }
        assert_eq!(Parser::new(u64::MAX).year, 9999);
    }

    #[test]
    fn parse_all_sorts_by_time_stably_and_counts_every_line() {
        let lines = [
            "Nov 24 01:02:05 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.5]",
            "Nov 24 01:02:03 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.3]",
            "not a log line",
            "Nov 24 01:02:05 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.6]",
            "Nov 24 01:02:04 mx1 postfix/smtpd[1]: connect from x[192.0.2.4]",
        ];
        let (found, read) = parse_all(lines.iter().map(|l| l.to_string()), NOW);
        assert_eq!(read, 5);
        let order: Vec<(u64, IpAddr)> = found.iter().map(|o| (o.at, o.ip)).collect();
        assert_eq!(
            order,
            [(T, ip("192.0.2.3")), (T + 2, ip("192.0.2.5")), (T + 2, ip("192.0.2.6"))]
        );
    }

    #[test]
    fn never_panics_on_random_truncated_mutated_or_huge_lines() {
        let samples = [
            rcpt_reject(
                "unknown[192.0.2.10]",
                "550 5.1.1 <i@example.org>: Recipient address rejected: User unknown in local recipient table",
            ),
            postscreen("DNSBL rank 6 for [2001:db8::9]:52311"),
            smtpd("warning: Connection rate limit exceeded: 31 from unknown[192.0.2.44] for service smtp"),
            amavis("Blocked INFECTED (Eicär) {Discarded}, [192.0.2.77]:41234 [203.0.113.9] <ä@b> -> <c@d>"),
            "2026-11-24T01:02:03.5+01:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]".into(),
        ];
        let mut p = Parser::new(NOW);
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for s in &samples {
            for cut in (0..=s.len()).filter(|&i| s.is_char_boundary(i)) {
                p.line(&s[..cut]);
                p.line(&s[cut..]);
            }
            for _ in 0..2000 {
                let mut bytes = s.clone().into_bytes();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = b" []:.;,{}(0123456789abcdefFROM"[(next() % 30) as usize];
                }
                p.line(&String::from_utf8_lossy(&bytes));
            }
        }
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..next() % 300).map(|_| next() as u8).collect();
            p.line(&String::from_utf8_lossy(&bytes));
        }
        let huge = "[".repeat(1 << 20);
        for prefix in [
            "Nov 24 01:02:03 mx1 postfix/smtpd[1]: lost connection after ",
            "Nov 24 01:02:03 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x",
            "Nov 24 01:02:03 mx1 amavis[1]: Blocked SPAM },",
            "Nov 24 01:02:03 mx1 postfix/postscreen[1]: PREGREET ",
        ] {
            assert_eq!(p.line(&format!("{prefix}{huge}")), None);
        }
        let long = smtpd(&format!(
            "timeout after DATA ({}) from x[192.0.2.1]",
            "é".repeat(10_000)
        ));
        let o = p.line(&long).unwrap();
        assert!(o.evidence.len() <= MAX_EVIDENCE, "{}", o.evidence.len());
    }
}
