//! Tokenizer for the statistical (Bayes-style) spam classifier.
//!
//! Turns an RFC 5322 message into a deduplicated, bounded list of string tokens, in the spirit of SpamBayes and
//! SpamAssassin's Bayes tokenizer. Tokens carry a short prefix naming where they came from:
//!
//! - body words have no prefix: lowercased words, plus the case-preserved form of words in capitals (`FREE`),
//!   word pairs (`"free money"`), numbers reduced to their shape (`num:3-3-4`), long letter/digit mixes reduced
//!   to a length bucket (`mix:10`), `p:` punctuation runs, `sk:` over-long words;
//! - `s:` subject words and pairs, `f:` From, `r:` Reply-To, `to:` To, `cc:` Cc, `rp:` Return-Path,
//!   `org:` Organization;
//! - `hn:` names of the headers present (filter, mailbox and mailing-list annotations excluded, like
//!   SpamAssassin's ignored headers), `h:` header signals and shapes (mailer, Message-ID and Date shapes, time
//!   zone, Date vs. Received skew, MIME structure, charsets, transfer encodings, attachments, Content-Type
//!   parameter shapes, To vs. From domain), `ho:` header order (the first header and each pair of neighbours),
//!   `rc:` Received chain structure (protocol, HELO shape, reverse DNS, IP class and domains, never raw
//!   addresses);
//! - `u:` URL schemes, hosts and domains, `up:` URL path pieces, `tag:` HTML tag names.
//!
//! Tokens never contain control characters (in particular no tabs or newlines), so they can be stored one per line.
//!
//! Here: the entry points and the walk over the parts; `headers` (header-section tokens), `mime` (MIME structure
//! and attachments), `text` (words, URLs), `html` (HTML to text), `sink` (the deduplicating token table).

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::net::IpAddr;

use super::bayes::FastState;
use mail_parser::{Address, Host, Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// Maximum number of distinct tokens produced for one message.
pub const MAX_TOKENS: usize = 3000;
/// Tokens longer than this many bytes are replaced by a "skip" token (or dropped, for derived tokens).
pub const MAX_TOKEN_LEN: usize = 40;
/// Words shorter than this many characters are ignored.
const MIN_WORD_LEN: usize = 3;
/// Nested message/rfc822 parts are followed at most this deep.
const MAX_DEPTH: usize = 3;
/// At most this many bytes of decoded body text are tokenized per part unless the caller says otherwise
/// (`spam.part_scan_size`, as the rules; SpamAssassin's 50,000): a long part costs no more than a short one.
pub const PART_TEXT: usize = super::view::PART_SCAN;
/// At most this many Received headers (from the top) are tokenized.
const MAX_RECEIVED: usize = 8;
/// At most this many URLs are tokenized per text.
const MAX_URLS: usize = 200;
/// At most this many path pieces are tokenized per URL.
const MAX_URL_PIECES: usize = 8;

/// Headers whose presence says nothing about the message itself: annotations by filters, mailbox software and
/// mailing-list managers, and delivery details of the receiving side (after SpamAssassin's `IGNORED_HDRS`).
/// Matched against the lowercased header name; a trailing `*` matches any suffix.
const IGNORED_HEADERS: &[&str] = &[
    "x-spam*",
    "x-virus*",
    "x-antivirus*",
    "x-antispam*",
    "x-bogosity",
    "x-dspam*",
    "x-crm114*",
    "x-mailscanner*",
    "x-scanned-by",
    "x-scanner",
    "x-filtered-by",
    "x-pyzor",
    "x-dcc-*",
    "x-spamcop*",
    "x-rbl-warning",
    "x-mass-check-id",
    "x-mime-autoconverted",
    "x-converted-to-plain-text",
    "status",
    "x-status",
    "x-flags",
    "x-keywords",
    "x-uid",
    "x-uidl",
    "x-mozilla-status*",
    "x-evolution*",
    "x-gmail-labels",
    "x-imap*",
    "lines",
    "content-length",
    "replied",
    "forwarded",
    "delivered-to",
    "delivery-date",
    "envelope-to",
    "x-envelope-*",
    "x-original-to",
    "x-originalarrivaltime",
    "x-original-*",
    "original-*",
    "resent-*",
    "x-resent-*",
    "sender",
    "x-sender",
    "errors-to",
    "list-*",
    "x-list*",
    "mailing-list",
    "x-mailing-list",
    "x-mailman-version",
    "x-beenthere",
    "x-loop",
    "x-unsub*",
    "mail-followup-to",
    "x-egroups-*",
    "thread-index",
    "thread-topic",
    "content-class",
];

/// Tokens of a raw RFC 5322 message (bytes as received; may be LF or CRLF; may start with an mbox "From " line
/// which is skipped).
///
/// Deduplicated (each token counted once per message), bounded (at most [`MAX_TOKENS`] tokens; tokens longer than
/// [`MAX_TOKEN_LEN`] bytes are replaced by `"sk:" + first 8 chars + ":" + length bucket`, like SpamAssassin's skip
/// tokens).
pub fn tokens(raw: &[u8]) -> Vec<String> {
    tokens_upto(raw, PART_TEXT)
}

/// [`tokens`], reading at most `part_text` octets of each text part (`spam.part_scan_size`).
pub fn tokens_upto(raw: &[u8], part_text: usize) -> Vec<String> {
    token_list(raw, part_text).to_strings()
}

/// [`tokens_upto`] as one [`Tokens`] list (two allocations instead of one per token).
pub fn token_list(raw: &[u8], part_text: usize) -> Tokens {
    let raw = skip_mbox_from(raw);
    match MessageParser::default().parse(raw) {
        Some(message) => message_token_list(&message, part_text),
        None => with_sink(|sink| {
            let text = String::from_utf8_lossy(raw);
            let text = truncate(&text, part_text);
            text_tokens(text, "", sink);
            url_tokens(text, sink);
            sink.push("h:unparsed");
        }),
    }
}

/// Tokens of an already parsed message: the same as [`tokens`] gives for the raw bytes the message was parsed
/// from (with a leading mbox "From " line removed before parsing). Works best when the message was parsed with
/// `MessageParser::default()`; header signals are read from the raw header text where possible.
pub fn message_tokens(message: &Message<'_>) -> Vec<String> {
    message_token_list(message, PART_TEXT).to_strings()
}

/// [`message_tokens`] as one [`Tokens`] list, reading at most `part_text` octets of each text part.
pub fn message_token_list(message: &Message<'_>, part_text: usize) -> Tokens {
    with_sink(|sink| walk(message, sink, 0, part_text))
}

/// The tokens of a message, in the order they were first seen, stored one after the other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    text: String,
    /// Where each token of `text` ends.
    ends: Vec<u32>,
}

impl Tokens {
    pub fn iter(&self) -> TokensIter<'_> {
        TokensIter {
            text: &self.text,
            ends: self.ends.iter(),
            start: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each token as an owned string.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

/// The tokens of a [`Tokens`], in order.
pub struct TokensIter<'a> {
    text: &'a str,
    ends: std::slice::Iter<'a, u32>,
    start: usize,
}

impl<'a> Iterator for TokensIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let end = *self.ends.next()? as usize;
        let token = self.text.get(self.start..end).unwrap_or("");
        self.start = end;
        Some(token)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ends.size_hint()
    }
}

impl ExactSizeIterator for TokensIter<'_> {}

thread_local! {
    /// The [`Sink`] of this thread, reused from message to message so that its table and scratch buffers are
    /// allocated once rather than per message.
    static SINK: RefCell<Sink> = RefCell::new(Sink::default());
}

/// Run `fill` on an empty sink and return the tokens it collected.
fn with_sink(fill: impl FnOnce(&mut Sink)) -> Tokens {
    SINK.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sink) => {
            sink.reset();
            fill(&mut sink);
            sink.collected()
        }
        // Not reached (tokenizing does not re-enter itself), but a fresh sink is always correct.
        Err(_) => {
            let mut sink = Sink::default();
            fill(&mut sink);
            sink.collected()
        }
    })
}

/// The message without a leading mbox "From " line (files saved from mailboxes).
pub fn skip_mbox_from(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        match raw.iter().position(|&b| b == b'\n') {
            Some(pos) => &raw[pos + 1..],
            None => &[],
        }
    } else {
        raw
    }
}

/// Replace control characters by spaces.
fn clean(token: &str) -> Cow<'_, str> {
    // C0 controls and DEL are single bytes; C1 controls are encoded as 0xC2 0x80..=0x9F.
    if token.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) && token.chars().any(char::is_control) {
        Cow::Owned(token.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
    } else {
        Cow::Borrowed(token)
    }
}

/// Append the decimal digits of `n` (without going through `fmt`).
fn push_decimal(out: &mut String, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// Append `s` lowercased (ASCII letters only).
fn push_ascii_lower(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| c.to_ascii_lowercase()));
}

/// Length bucket for skip tokens.
fn bucket_len(len: usize) -> usize {
    if len >= 200 { 200 } else { len / 10 * 10 }
}

/// Small-count bucket: exact up to 4, then 5-9, 10-19, 20+.
fn bucket_count(n: usize) -> &'static str {
    match n {
        0 => "0",
        1 => "1",
        2 => "2",
        3 => "3",
        4 => "4",
        5..=9 => "5-9",
        10..=19 => "10-19",
        _ => "20+",
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn walk(message: &Message<'_>, sink: &mut Sink, depth: usize, part_text: usize) {
    header_tokens(message, sink, depth);
    mime_tokens(message, sink, depth);
    let mut total_chars = 0usize;
    let mut non_ascii = 0usize;
    for part in &message.parts {
        if sink.full() {
            break;
        }
        match &part.body {
            PartType::Text(text) => {
                let text = truncate(text, part_text);
                count_chars(text, &mut total_chars, &mut non_ascii);
                text_tokens(text, "", sink);
                url_tokens(text, sink);
            }
            PartType::Html(html) => {
                let html = truncate(html, part_text);
                url_tokens(html, sink);
                let mut text = std::mem::take(&mut sink.html_text);
                text.clear();
                html_to_text(html, &mut text, sink);
                count_chars(&text, &mut total_chars, &mut non_ascii);
                text_tokens(&text, "", sink);
                sink.html_text = text;
            }
            PartType::Binary(_) | PartType::InlineBinary(_) => attachment_tokens(part, sink),
            PartType::Message(inner) => {
                if depth < MAX_DEPTH {
                    walk(inner, sink, depth + 1, part_text);
                }
            }
            PartType::Multipart(_) => {}
        }
    }
    if depth == 0 {
        sink.push2("h:8bit:", non_ascii_bucket(total_chars, non_ascii));
        sink.push2("h:len:", log_bucket(total_chars));
    }
}

/// Count the non-whitespace characters of `text` (`total`) and the non-ASCII ones among them (`non_ascii`).
fn count_chars(text: &str, total: &mut usize, non_ascii: &mut usize) {
    // Byte-wise: every ASCII byte and every lead byte (>= 0xC0) of valid UTF-8 starts one character. ASCII
    // whitespace in the sense of `char::is_whitespace` is 9..=13 and space; the non-ASCII whitespace characters
    // (U+0085, U+00A0, U+1680, U+2000.., U+3000) start with 0xC2, 0xE1, 0xE2 or 0xE3, and only those are decoded.
    // The first pass is branch-free (vectorised); the second runs only for text with non-ASCII characters.
    let bytes = text.as_bytes();
    // Counted in blocks of 255 bytes into byte-wide counters, which the compiler turns into vector adds.
    let (mut ascii, mut lead) = (0usize, 0usize);
    for block in bytes.chunks(255) {
        let (mut a, mut l) = (0u8, 0u8);
        for &b in block {
            a += u8::from(b < 0x80 && !matches!(b, b'\t'..=b'\r' | b' '));
            l += u8::from(b >= 0xc0);
        }
        ascii += usize::from(a);
        lead += usize::from(l);
    }
    let mut non_ascii_space = 0;
    if lead > 0 {
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(b, 0xc2 | 0xe1 | 0xe2 | 0xe3)
                && text
                    .get(i..)
                    .and_then(|t| t.chars().next())
                    .is_some_and(char::is_whitespace)
            {
                non_ascii_space += 1;
            }
        }
    }
    *total += ascii + lead - non_ascii_space;
    *non_ascii += lead - non_ascii_space;
}

/// Bucket of the share of non-ASCII characters in the decoded body.
fn non_ascii_bucket(total: usize, non_ascii: usize) -> &'static str {
    if total == 0 {
        return "empty";
    }
    if non_ascii == 0 {
        return "0";
    }
    let pct = non_ascii as f64 * 100.0 / total as f64;
    if pct < 1.0 {
        "lt1"
    } else if pct < 5.0 {
        "lt5"
    } else if pct < 20.0 {
        "lt20"
    } else if pct < 50.0 {
        "lt50"
    } else {
        "ge50"
    }
}

/// Power-of-4 bucket of a size: "0", "lt16", "lt64", ... "ge64k".
fn log_bucket(n: usize) -> &'static str {
    match n {
        0 => "0",
        1..16 => "lt16",
        16..64 => "lt64",
        64..256 => "lt256",
        256..1024 => "lt1024",
        1024..4096 => "lt4096",
        4096..16384 => "lt16384",
        16384..65536 => "lt65536",
        _ => "ge65536",
    }
}

/// Shape of a string: each run of letters/digits becomes one class symbol (`9` digits, `a` lowercase, `A`
/// uppercase, `Aa` capitalised/mixed letters, `h` lowercase hex, `H` uppercase hex, `x` other letter/digit mixes,
/// `u` non-ASCII), other characters are kept (whitespace collapsed to one space). At most `max` symbols.
#[cfg(test)]
fn shape(s: &str, max: usize) -> String {
    let mut out = String::new();
    shape_into(&mut out, s, max);
    out
}

/// [`shape`] appended to `out`.
fn shape_into(out: &mut String, s: &str, max: usize) {
    let mut symbols = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if symbols >= max {
            out.push('~');
            break;
        }
        symbols += 1;
        if c.is_alphanumeric() {
            let (mut digit, mut lower, mut upper, mut other) =
                (c.is_ascii_digit(), c.is_lowercase(), c.is_uppercase(), !c.is_ascii());
            let mut hex_lower = c.is_ascii_digit() || matches!(c, 'a'..='f');
            let mut hex_upper = c.is_ascii_digit() || matches!(c, 'A'..='F');
            let mut first_upper = c.is_uppercase();
            let mut len = 1;
            while let Some(&n) = chars.peek() {
                if !n.is_alphanumeric() {
                    break;
                }
                chars.next();
                len += 1;
                digit |= n.is_ascii_digit();
                lower |= n.is_lowercase();
                upper |= n.is_uppercase();
                other |= !n.is_ascii();
                hex_lower &= n.is_ascii_digit() || matches!(n, 'a'..='f');
                hex_upper &= n.is_ascii_digit() || matches!(n, 'A'..='F');
                first_upper &= len > 1 || n.is_uppercase();
            }
            let _ = first_upper;
            let sym = if other {
                "u"
            } else if !lower && !upper {
                "9"
            } else if !digit && !upper {
                "a"
            } else if !digit && !lower {
                "A"
            } else if !digit {
                "Aa"
            } else if hex_lower && len >= 6 {
                "h"
            } else if hex_upper && len >= 6 {
                "H"
            } else {
                "x"
            };
            out.push_str(sym);
        } else if c.is_whitespace() {
            while chars.peek().is_some_and(|n| n.is_whitespace()) {
                chars.next();
            }
            out.push(' ');
        } else if c.is_control() {
            out.push('?');
        } else {
            out.push(c);
        }
    }
}

mod headers;
mod html;
mod mime;
mod sink;
mod text;
pub(crate) use headers::is_ignored_header;
use headers::*;
use html::*;
use mime::*;
use sink::*;
use text::*;

#[cfg(test)]
mod tests;
