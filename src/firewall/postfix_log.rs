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
    crate::mail::date::civil_from_days(days).0
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
mod tests;
