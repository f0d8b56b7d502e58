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
//!   zone, Date vs. Received skew, MIME structure, charsets, transfer encodings, attachments), `rc:` Received
//!   chain structure (protocol, HELO shape, reverse DNS, IP class and domains, never raw addresses);
//! - `u:` URL schemes, hosts and domains, `up:` URL path pieces, `tag:` HTML tag names.
//!
//! Tokens never contain control characters (in particular no tabs or newlines), so they can be stored one per line.

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
/// At most this many bytes of decoded body text are tokenized per part.
const MAX_PART_TEXT: usize = 256 * 1024;
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
    let raw = skip_mbox_from(raw);
    match MessageParser::default().parse(raw) {
        Some(message) => message_tokens(&message),
        None => with_sink(|sink| {
            let text = String::from_utf8_lossy(raw);
            let text = truncate(&text, MAX_PART_TEXT);
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
    with_sink(|sink| walk(message, sink, 0))
}

thread_local! {
    /// The [`Sink`] of this thread, reused from message to message so that its table and scratch buffers are
    /// allocated once rather than per message.
    static SINK: RefCell<Sink> = RefCell::new(Sink::default());
}

/// Run `fill` on an empty sink and return the tokens it collected.
fn with_sink(fill: impl FnOnce(&mut Sink)) -> Vec<String> {
    SINK.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sink) => {
            sink.reset();
            fill(&mut sink);
            // A vector of exactly the tokens; the sink keeps its own (large) one for the next message.
            sink.out.drain(..).collect()
        }
        // Not reached (tokenizing does not re-enter itself), but a fresh sink is always correct.
        Err(_) => {
            let mut sink = Sink::default();
            fill(&mut sink);
            sink.out
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

/// Number of slots of [`Sink`]'s table: a power of two, more than twice [`MAX_TOKENS`], so the table never
/// needs to grow and stays sparse (short probe sequences).
const SLOTS: usize = 8192;
const _: () = assert!(SLOTS.is_power_of_two() && SLOTS > 2 * MAX_TOKENS);

/// Collects unique tokens up to [`MAX_TOKENS`].
///
/// Tokens are built in a reused scratch buffer ([`Sink::push_with`]) and only copied into an owned `String` the
/// first time they are seen, so a repeated token costs no allocation. Deduplication uses an open-addressing hash
/// table of indices into `out` (linear probing, [`SLOTS`] slots): each token is stored once, in `out`.
struct Sink {
    out: Vec<String>,
    /// Hash of each token of `out`, at the same index (compared before the strings).
    hashes: Vec<u64>,
    /// `index + 1` of a token of `out`, or 0 for an empty slot; [`SLOTS`] of them.
    slots: Vec<u32>,
    /// Per-process random seed of [`token_hash`].
    seed: u64,
    /// Scratch buffer the next token is built in.
    buf: String,
    /// Scratch buffer for skip tokens.
    skip: String,
    /// Scratch buffers of [`text_tokens`].
    words: WordBufs,
    /// Scratch buffer for the lowercased text of [`url_tokens`].
    url_lower: String,
    /// Scratch buffer for the text of an HTML part.
    html_text: String,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            out: Vec::with_capacity(512),
            hashes: Vec::with_capacity(512),
            slots: vec![0; SLOTS],
            seed: FastState::default().hash_one(0x70c3_u64),
            buf: String::with_capacity(64),
            skip: String::with_capacity(64),
            words: WordBufs::default(),
            url_lower: String::new(),
            html_text: String::new(),
        }
    }
}

impl Sink {
    /// Empty the sink for the next message (keeping its allocations, unless a huge message made them large).
    fn reset(&mut self) {
        self.out.clear();
        self.hashes.clear();
        self.slots.fill(0);
        for text in [&mut self.url_lower, &mut self.html_text] {
            if text.capacity() > 64 * 1024 {
                *text = String::new();
            }
        }
    }

    fn full(&self) -> bool {
        self.out.len() >= MAX_TOKENS
    }

    /// Add a token; over-long tokens become skip tokens.
    fn push(&mut self, token: &str) {
        if self.full() || token.is_empty() {
            return;
        }
        match clean(token) {
            Cow::Borrowed(token) => self.push_clean(token),
            Cow::Owned(token) => self.push_clean(&token),
        }
    }

    /// [`Sink::push`] of a token known to hold no control characters (nothing to clean).
    fn push_clean(&mut self, token: &str) {
        if self.full() || token.is_empty() {
            return;
        }
        if token.len() > MAX_TOKEN_LEN {
            let mut skip = std::mem::take(&mut self.skip);
            skip.clear();
            skip.push_str("sk:");
            skip.extend(token.chars().take(8));
            skip.push(':');
            push_decimal(&mut skip, bucket_len(token.len()));
            self.insert(&skip);
            self.skip = skip;
        } else {
            self.insert(token);
        }
    }

    /// Add a derived token (pair, shape); over-long ones are dropped.
    fn push_short(&mut self, token: &str) {
        if self.full() || token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return;
        }
        match clean(token) {
            Cow::Borrowed(token) => self.insert(token),
            Cow::Owned(token) => self.insert(&token),
        }
    }

    /// [`Sink::push_short`] of a token known to hold no control characters.
    fn push_short_clean(&mut self, token: &str) {
        if self.full() || token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return;
        }
        self.insert(token);
    }

    /// [`Sink::push`] of the token `build` writes into the (cleared) scratch buffer. Nothing is built once the
    /// sink is full.
    fn push_with(&mut self, build: impl FnOnce(&mut String)) {
        self.build(build, Sink::push);
    }

    /// [`Sink::push_short`] of the token `build` writes into the (cleared) scratch buffer.
    fn push_short_with(&mut self, build: impl FnOnce(&mut String)) {
        self.build(build, Sink::push_short);
    }

    /// [`Sink::push`] of `prefix + rest`.
    fn push2(&mut self, prefix: &str, rest: &str) {
        self.push_with(|b| {
            b.push_str(prefix);
            b.push_str(rest);
        });
    }

    /// [`Sink::push_short`] of `prefix + rest`.
    fn push_short2(&mut self, prefix: &str, rest: &str) {
        self.push_short_with(|b| {
            b.push_str(prefix);
            b.push_str(rest);
        });
    }

    /// [`Sink::push_clean`] of `prefix + rest`, for words: alphanumerics and joiners are never control characters
    /// (and neither are their lowercase forms), so cleaning would not change them.
    fn push_word(&mut self, prefix: &str, rest: &str) {
        self.build(
            |b| {
                b.push_str(prefix);
                b.push_str(rest);
            },
            Sink::push_clean,
        );
    }

    fn build(&mut self, build: impl FnOnce(&mut String), add: fn(&mut Sink, &str)) {
        if self.full() {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        build(&mut buf);
        add(self, &buf);
        self.buf = buf;
    }

    fn insert(&mut self, token: &str) {
        let hash = token_hash(self.seed, token.as_bytes());
        let mut pos = hash as usize & (SLOTS - 1);
        loop {
            match self.slots[pos] {
                0 => break,
                slot => {
                    let index = slot as usize - 1;
                    if self.hashes[index] == hash && self.out[index] == token {
                        return;
                    }
                }
            }
            pos = (pos + 1) & (SLOTS - 1);
        }
        // First sight: the only allocation of this token.
        self.slots[pos] = self.out.len() as u32 + 1;
        self.out.push(token.to_string());
        self.hashes.push(hash);
    }
}

/// Hash of a token for [`Sink`]'s table: multiply-rotate over 8-byte words, as FxHash and the classifier's
/// `FastHasher`, but reading the last (partial) word with overlapping loads instead of copying it into a
/// zero-padded buffer, and finishing with one folded 128-bit multiply. Keyed with a per-process random seed.
fn token_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        u64::from_le_bytes(w)
    };
    let half = |b: &[u8]| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[..4]);
        u64::from(u32::from_le_bytes(w))
    };
    let len = bytes.len();
    let mut h = seed ^ (len as u64).wrapping_mul(K);
    let mut rest = bytes;
    while rest.len() > 8 {
        h = (h.rotate_left(26) ^ word(rest)).wrapping_mul(K);
        rest = &rest[8..];
    }
    // The last 1..=8 bytes (the tail of a longer token may overlap the previous word: the length is hashed).
    let tail = if len >= 8 {
        word(&bytes[len - 8..])
    } else if len >= 4 {
        half(bytes) | half(&bytes[len - 4..]) << 32
    } else if len > 0 {
        u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16
    } else {
        0
    };
    let full = u128::from((h.rotate_left(26) ^ tail).wrapping_mul(K)) * u128::from(K);
    (full as u64) ^ ((full >> 64) as u64)
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

fn walk(message: &Message<'_>, sink: &mut Sink, depth: usize) {
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
                let text = truncate(text, MAX_PART_TEXT);
                count_chars(text, &mut total_chars, &mut non_ascii);
                text_tokens(text, "", sink);
                url_tokens(text, sink);
            }
            PartType::Html(html) => {
                let html = truncate(html, MAX_PART_TEXT);
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
                    walk(inner, sink, depth + 1);
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
    let (ascii, lead) = bytes.iter().fold((0usize, 0usize), |(ascii, lead), &b| {
        (
            ascii + usize::from(b < 0x80 && !matches!(b, b'\t'..=b'\r' | b' ')),
            lead + usize::from(b >= 0xc0),
        )
    });
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

/// The raw text of a header value of the message (unfolded, trimmed), if it is valid UTF-8.
fn raw_value<'a>(message: &'a Message<'_>, header: &mail_parser::Header<'_>) -> Option<&'a str> {
    let bytes = message
        .raw_message
        .get(header.offset_start as usize..header.offset_end as usize)?;
    std::str::from_utf8(bytes).ok().map(str::trim)
}

/// The raw text of the first header `name` (case-insensitive).
fn raw_header<'a>(message: &'a Message<'_>, name: &str) -> Option<&'a str> {
    message
        .root_part()
        .headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .and_then(|h| raw_value(message, h))
}

/// Whether the header `name` is one of [`IGNORED_HEADERS`] (compared ASCII-case-insensitively; the patterns are
/// lowercase ASCII).
fn is_ignored_header(name: &str) -> bool {
    let name = name.as_bytes();
    let Some(first) = name.first().map(u8::to_ascii_lowercase) else {
        return false;
    };
    // Cheap first-byte filter before the full comparison (no pattern is empty).
    IGNORED_HEADERS
        .iter()
        .filter(|pat| pat.as_bytes()[0] == first)
        .any(|pat| match pat.strip_suffix('*') {
            Some(prefix) => name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()),
            None => name.eq_ignore_ascii_case(pat.as_bytes()),
        })
}

fn header_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) {
    if let Some(subject) = message.subject() {
        text_tokens(subject, "s:", sink);
        if let Some(raw) = raw_header(message, "Subject") {
            encoded_word_tokens(raw, "s:enc:", sink);
        }
    } else if depth == 0 {
        sink.push("h:nosubject");
    }
    let from_domain = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.trim().trim_end_matches('.').to_ascii_lowercase());
    let from_reg = from_domain.as_deref().and_then(registrable).map(str::to_string);
    if let Some(from) = message.from() {
        address_tokens(from, "f:", sink, true);
        if let Some(first) = from.first() {
            if first.name().is_none() {
                sink.push("f:noname");
            }
            if let Some((local, _)) = first.address().and_then(|a| a.rsplit_once('@')) {
                sink.push_short_with(|b| {
                    b.push_str("f:lp:");
                    shape_into(b, local, 12);
                });
            }
        }
    } else if depth == 0 {
        sink.push("h:nofrom");
    }
    if let Some(reply_to) = message.reply_to() {
        address_tokens(reply_to, "r:", sink, true);
        let rt_reg = reply_to
            .first()
            .and_then(|a| a.address())
            .and_then(|a| a.rsplit_once('@'))
            .map(|(_, d)| d.trim().trim_end_matches('.').to_ascii_lowercase());
        let same = rt_reg.as_deref().and_then(registrable) == from_reg.as_deref();
        sink.push(if same { "r:same" } else { "r:differs" });
    }
    if let Some(to) = message.to() {
        address_tokens(to, "to:", sink, true);
        sink.push2("h:nto:", bucket_count(to.iter().count()));
    } else if depth == 0 {
        sink.push("h:noto");
    }
    if let Some(cc) = message.cc() {
        address_tokens(cc, "cc:", sink, false);
        sink.push2("h:ncc:", bucket_count(cc.iter().count()));
    }
    if depth > 0 {
        return;
    }
    for header in message.headers() {
        let name = header.name();
        if name.len() > 30 {
            sink.push("hn:long");
            continue;
        }
        if !is_ignored_header(name) {
            sink.push_with(|b| {
                b.push_str("hn:");
                push_ascii_lower(b, name);
            });
        }
    }
    for (tag, header) in [("xm", "X-Mailer"), ("xm", "User-Agent"), ("xo", "X-MimeOLE")] {
        if let Some(value) = raw_header(message, header) {
            mailer_tokens(value, tag, sink);
        }
    }
    for (tag, header) in [
        ("pri", "X-Priority"),
        ("prec", "Precedence"),
        ("imp", "Importance"),
        ("msp", "X-MSMail-Priority"),
    ] {
        if let Some(value) = raw_header(message, header)
            && let Some(word) = value.split(|c: char| !c.is_alphanumeric()).find(|w| !w.is_empty())
        {
            sink.push_short_with(|b| {
                b.push_str("h:");
                b.push_str(tag);
                b.push(':');
                push_ascii_lower(b, word);
            });
        }
    }
    if let Some(org) = raw_header(message, "Organization") {
        for w in org
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= MIN_WORD_LEN)
            .take(8)
        {
            sink.push2("org:", &w.to_lowercase());
        }
    }
    if let Some(rp) = message.return_address()
        && let Some((_, domain)) = rp.rsplit_once('@')
    {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(reg) = registrable(&domain) {
            sink.push2("rp:", reg);
            sink.push(if Some(reg) == from_reg.as_deref() {
                "rp:same"
            } else {
                "rp:differs"
            });
        }
    }
    match raw_header(message, "Message-ID") {
        Some(id) => {
            let id = id.trim_start_matches('<').trim_end_matches('>');
            match id.rsplit_once('@') {
                Some((local, domain)) => {
                    sink.push_short_with(|b| {
                        b.push_str("h:mid:");
                        shape_into(b, local, 20);
                    });
                    let domain = domain.trim().to_ascii_lowercase();
                    let same = registrable(&domain).is_some() && registrable(&domain) == from_reg.as_deref();
                    sink.push(if same { "h:mid:dom:same" } else { "h:mid:dom:differs" });
                    if !domain.contains('.') {
                        sink.push("h:mid:dom:nodot");
                    }
                }
                None => sink.push("h:mid:noat"),
            }
        }
        None => sink.push("h:nomsgid"),
    }
    let received: Vec<&mail_parser::Header<'_>> = message
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("Received"))
        .collect();
    let n = received.len();
    sink.push(match n {
        0 => "h:rcvd:0",
        1 => "h:rcvd:1",
        2 => "h:rcvd:2",
        3 => "h:rcvd:3",
        4 => "h:rcvd:4",
        5..=6 => "h:rcvd:5-6",
        7..=9 => "h:rcvd:7-9",
        _ => "h:rcvd:10+",
    });
    let mut received_time = None;
    for header in received.iter().take(MAX_RECEIVED) {
        if let Some(r) = header.value().as_received() {
            received_tokens(r, sink);
            if received_time.is_none()
                && let Some(date) = &r.date
                && date.is_valid()
            {
                received_time = Some(date.to_timestamp());
            }
        }
    }
    match raw_header(message, "Date") {
        Some(raw) => {
            sink.push_short_with(|b| {
                b.push_str("h:date:");
                shape_into(b, raw, 30);
            });
            match message.date().filter(|d| d.is_valid()) {
                Some(date) => {
                    let sign = if date.tz_before_gmt { '-' } else { '+' };
                    sink.push(&format!("h:tz:{sign}{:02}{:02}", date.tz_hour, date.tz_minute));
                    if let Some(received) = received_time {
                        sink.push2("h:dskew:", skew_bucket(date.to_timestamp() - received));
                    }
                }
                None => sink.push("h:date:bad"),
            }
        }
        None => sink.push("h:nodate"),
    }
}

/// Bucket of `date - received` in seconds.
fn skew_bucket(diff: i64) -> &'static str {
    let a = diff.unsigned_abs();
    let future = diff > 0;
    match (a, future) {
        (0..=600, _) => "10m",
        (601..=7200, false) => "-2h",
        (601..=7200, true) => "+2h",
        (7201..=129_600, false) => "-36h",
        (7201..=129_600, true) => "+36h",
        (_, false) => "-far",
        (_, true) => "+far",
    }
}

/// `h:xm:` words of a mailer header value and one token of its overall shape.
fn mailer_tokens(value: &str, tag: &str, sink: &mut Sink) {
    let mut words = 0;
    for w in value.split(|c: char| !c.is_alphabetic()).filter(|w| w.len() >= 2) {
        sink.push_with(|b| {
            b.push_str("h:");
            b.push_str(tag);
            b.push(':');
            push_lowercase(b, w);
        });
        words += 1;
        if words >= 6 {
            break;
        }
    }
    sink.push_short_with(|b| {
        b.push_str("h:");
        b.push_str(tag);
        b.push_str("v:");
        shape_into(b, value, 30);
    });
}

/// `prefix + charset + ":" + encoding` for each RFC 2047 encoded word in a raw header value.
fn encoded_word_tokens(raw: &str, prefix: &str, sink: &mut Sink) {
    for piece in raw.split("=?").skip(1).take(5) {
        let mut fields = piece.splitn(3, '?');
        if let (Some(charset), Some(enc)) = (fields.next(), fields.next()) {
            sink.push_short_with(|b| {
                b.push_str(prefix);
                push_ascii_lower(b, charset);
                b.push(':');
                push_ascii_lower(b, enc);
            });
        }
    }
}

/// Structure tokens of one Received header: protocol, HELO shape, reverse DNS, IP class and domains.
fn received_tokens(r: &mail_parser::Received<'_>, sink: &mut Sink) {
    if let Some(with) = &r.with {
        sink.push_with(|b| {
            b.push_str("rc:with:");
            let start = b.len();
            // Display of the protocol (at most a few letters); lowercased in place.
            let _ = write!(b, "{with}");
            b[start..].make_ascii_lowercase();
        });
    }
    if r.tls_version.is_some() || r.tls_cipher.is_some() {
        sink.push("rc:tls");
    }
    let rdns = r
        .from_iprev
        .as_deref()
        .map(|s| s.trim().trim_end_matches('.').to_ascii_lowercase());
    match &r.from {
        Some(Host::Name(name)) => {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let helo = if name.parse::<IpAddr>().is_ok() {
                "ip"
            } else if !name.contains('.') {
                "bare"
            } else if rdns.as_deref() == Some(name.as_str()) {
                "same"
            } else {
                "fqdn"
            };
            sink.push2("rc:helo:", helo);
            if helo == "fqdn" || helo == "same" {
                host_tokens(&name, "rc:dom:", sink);
            }
        }
        Some(Host::IpAddr(_)) => sink.push("rc:helo:literal"),
        None => sink.push("rc:nofrom"),
    }
    match rdns.as_deref() {
        Some("unknown") | Some("") => sink.push("rc:rdns:unknown"),
        Some(name) if name.parse::<IpAddr>().is_err() && name.contains('.') => {
            host_tokens(name, "rc:dom:", sink);
            if name.bytes().filter(u8::is_ascii_digit).count() >= 4 {
                sink.push("rc:rdns:dynamic");
            }
        }
        Some(_) => sink.push("rc:rdns:odd"),
        // An address without a name: "from pc (unknown [192.0.2.1])" or "from pc ([192.0.2.1])".
        None if r.from_ip.is_some() => sink.push("rc:rdns:unknown"),
        None => {}
    }
    if let Some(ip) = r.from_ip {
        sink.push2("rc:ip:", ip_class(ip));
    }
    if let Some(Host::Name(by)) = &r.by {
        let by = by.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(reg) = registrable(&by) {
            sink.push2("rc:by:", reg);
        }
    }
}

fn ip_class(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_private() || v4.is_link_local() => "private",
        IpAddr::V4(_) => "public4",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => "mapped",
        IpAddr::V6(_) => "public6",
    }
}

/// `prefix + host` and `prefix + registrable domain` of a host name.
fn host_tokens(host: &str, prefix: &str, sink: &mut Sink) {
    sink.push2(prefix, host);
    if let Some(reg) = registrable(host)
        && reg != host
    {
        sink.push2(prefix, reg);
    }
}

/// MIME structure: content types of all parts, transfer encodings, charsets, boundary shape, part count.
fn mime_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) {
    if depth == 0 {
        match message.root_part().content_type() {
            Some(ct) => sink.push2("h:ct:", &content_type_name(ct)),
            None => sink.push("h:ct:none"),
        }
        if raw_header(message, "MIME-Version").is_none() {
            sink.push("h:nomimever");
        }
        sink.push2("h:nparts:", bucket_count(message.parts.len()));
    }
    let mut structure = String::new();
    for part in &message.parts {
        if sink.full() {
            break;
        }
        let ct = part.content_type();
        let name = ct.map_or_else(|| "none".to_string(), content_type_name);
        if let Some(ct) = ct {
            if let Some(charset) = ct.attribute("charset") {
                sink.push_short_with(|b| {
                    b.push_str("h:cs:");
                    push_ascii_lower(b, charset.trim());
                });
            }
            if let Some(boundary) = ct.attribute("boundary") {
                sink.push_short_with(|b| {
                    b.push_str("h:bnd:");
                    shape_into(b, boundary, 30);
                });
            }
        }
        if part.is_encoding_problem {
            sink.push("h:encproblem");
        }
        if structure.len() < 64 {
            if !structure.is_empty() {
                structure.push(',');
            }
            structure.push_str(&short_type(&name));
        }
    }
    if depth == 0 && message.parts.len() > 1 {
        sink.push_short2("h:mime:", &structure);
    }
}

/// "type/subtype", lowercased.
fn content_type_name(ct: &mail_parser::ContentType<'_>) -> String {
    format!(
        "{}/{}",
        ct.ctype().to_ascii_lowercase(),
        ct.subtype().unwrap_or("").to_ascii_lowercase()
    )
}

/// Short form of a content type name for the structure token.
fn short_type(name: &str) -> String {
    match name {
        "text/plain" => "tp".to_string(),
        "text/html" => "th".to_string(),
        "none" => "n".to_string(),
        _ => {
            let (t, s) = name.split_once('/').unwrap_or((name, ""));
            let mut out: String = t.chars().take(1).collect();
            out.extend(s.chars().take(3));
            out
        }
    }
}

fn attachment_tokens(part: &MessagePart<'_>, sink: &mut Sink) {
    if let Some(ct) = part.content_type() {
        sink.push_short2("h:att:", &content_type_name(ct));
    }
    if let Some(name) = part.attachment_name()
        && let Some((_, ext)) = name.rsplit_once('.')
        && (1..=5).contains(&ext.len())
    {
        sink.push_short_with(|b| {
            b.push_str("h:attx:");
            push_ascii_lower(b, ext);
        });
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

fn address_tokens(address: &Address<'_>, prefix: &str, sink: &mut Sink, names: bool) {
    for addr in address.iter().take(20) {
        if names && let Some(name) = addr.name() {
            text_tokens(name, prefix, sink);
        }
        if let Some(email) = addr.address()
            && let Some((_, domain)) = email.rsplit_once('@')
        {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if !domain.is_empty() {
                host_tokens(&domain, prefix, sink);
            }
        }
    }
}

/// The registrable domain of a host name: its last two labels, or three when the second-level label looks like
/// a country's public suffix ("example.co.uk", "example.com.au"). None for names without a dot.
fn registrable(host: &str) -> Option<&str> {
    let last_dot = host.rfind('.')?;
    let tld = &host[last_dot + 1..];
    let Some(second_dot) = host[..last_dot].rfind('.') else {
        return Some(host);
    };
    let second = &host[second_dot + 1..last_dot];
    let cc_suffix = tld.len() == 2
        && (second.len() <= 2 || matches!(second, "com" | "net" | "org" | "gov" | "edu" | "ltd" | "plc" | "nic"));
    if cc_suffix {
        Some(
            host[..second_dot]
                .rfind('.')
                .map_or(host, |third_dot| &host[third_dot + 1..]),
        )
    } else {
        Some(&host[second_dot + 1..])
    }
}

/// Reused buffers of [`text_tokens`].
#[derive(Default)]
struct WordBufs {
    word: String,
    lower: String,
    norm: String,
    prev: String,
}

/// The character starting at byte offset `i` of `text` (a character boundary) and its length in bytes.
#[inline]
fn char_at(text: &str, i: usize) -> Option<(char, usize)> {
    let b = *text.as_bytes().get(i)?;
    if b.is_ascii() {
        Some((char::from(b), 1))
    } else {
        let c = text[i..].chars().next()?;
        Some((c, c.len_utf8()))
    }
}

/// Emit word tokens, word-pair tokens and punctuation-run tokens of `text` with `prefix`.
///
/// Walks `text` by byte offset, decoding characters on the fly (ASCII directly), rather than collecting it into a
/// `Vec<char>`; the character before a joiner is the last one taken into the word.
fn text_tokens(text: &str, prefix: &str, sink: &mut Sink) {
    let WordBufs {
        mut word,
        mut lower,
        mut norm,
        mut prev,
    } = std::mem::take(&mut sink.words);
    let bytes = text.as_bytes();
    let mut i = 0;
    // Whether `prev` holds the previous word (normalised) for pair tokens; cleared at paragraph breaks.
    let mut has_prev = false;
    let mut newlines = 0;
    while !sink.full() {
        // Fast path: skip ASCII separators (bytes that start neither a word nor a punctuation run).
        while let Some(&b) = bytes.get(i)
            && b.is_ascii()
            && !b.is_ascii_alphanumeric()
            && !matches!(b, b'!' | b'$' | b'?' | b'*' | b'%')
        {
            newlines += usize::from(b == b'\n');
            i += 1;
        }
        let Some((c, len)) = char_at(text, i) else {
            break;
        };
        if c.is_alphanumeric() || (c == '$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            if newlines >= 2 {
                has_prev = false;
            }
            newlines = 0;
            // A word starts here; internal ' - . , join alphanumerics ("don't", "e-mail", "1,000", "3.5").
            // The word is the text from `start` to `i`, except that a typographic apostrophe becomes '\''.
            let start = i;
            let mut apostrophe = false;
            let mut nchars = 1;
            let mut last = c;
            i += len;
            loop {
                // Fast path: a run of ASCII letters and digits.
                let run = bytes[i..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
                if run > 0 {
                    i += run;
                    nchars += run;
                    last = char::from(bytes[i - 1]);
                }
                let Some((c, len)) = char_at(text, i) else {
                    break;
                };
                if c.is_alphanumeric() {
                    // Nothing more to check.
                } else if matches!(c, '\'' | '-' | '.' | ',' | '\u{2019}')
                    && last.is_alphanumeric()
                    && let Some((next, _)) = char_at(text, i + len)
                    && next.is_alphanumeric()
                    && !(c == ',' && !(last.is_ascii_digit() && next.is_ascii_digit()))
                {
                    apostrophe |= c == '\u{2019}';
                } else {
                    break;
                }
                nchars += 1;
                last = c;
                i += len;
            }
            if nchars < MIN_WORD_LEN {
                // Too short: no tokens, and the previous word stays the pair partner.
                continue;
            }
            let word = if apostrophe {
                word.clear();
                word.extend(text[start..i].chars().map(|c| if c == '\u{2019}' { '\'' } else { c }));
                word.as_str()
            } else {
                &text[start..i]
            };
            push_lowercase_into(&mut lower, word);
            // A trailing '!' stays attached as a separate signal ("free!").
            if bytes.get(i) == Some(&b'!') {
                sink.build(
                    |b| {
                        b.push_str(prefix);
                        b.push_str(&lower);
                        b.push('!');
                    },
                    Sink::push_clean,
                );
            }
            emit_word(word, &lower, nchars, prefix, sink, &mut norm);
            if has_prev {
                sink.build(
                    |b| {
                        b.push_str(prefix);
                        b.push_str(&prev);
                        b.push(' ');
                        b.push_str(&norm);
                    },
                    Sink::push_short_clean,
                );
            }
            std::mem::swap(&mut prev, &mut norm);
            has_prev = true;
        } else if matches!(c, '!' | '$' | '?' | '*' | '%') {
            // `c` is ASCII: compare bytes.
            let byte = bytes[i];
            let mut run = 0;
            while bytes.get(i) == Some(&byte) {
                run += 1;
                i += 1;
            }
            if run >= 3 {
                sink.push_with(|b| {
                    b.push_str(prefix);
                    b.push_str("p:");
                    b.extend([c, c, c]);
                });
            }
        } else {
            if c == '\n' {
                newlines += 1;
            }
            i += len;
        }
    }
    sink.words = WordBufs {
        word,
        lower,
        norm,
        prev,
    };
}

/// `out` set to `word.to_lowercase()`.
fn push_lowercase_into(out: &mut String, word: &str) {
    out.clear();
    push_lowercase(out, word);
}

/// Append `s.to_lowercase()` to `out` without allocating. Per character this is `char::to_lowercase`, except for
/// capital sigma, whose lowercase form depends on its position in the word (final 'ς'): that rare case is left to
/// `str::to_lowercase`.
fn push_lowercase(out: &mut String, s: &str) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
    } else if s.contains('\u{3a3}') {
        out.push_str(&s.to_lowercase());
    } else {
        for c in s.chars() {
            out.extend(c.to_lowercase());
        }
    }
}

/// Emit the tokens of one word of at least [`MIN_WORD_LEN`] characters (`n`), given its lowercase form; sets
/// `norm` to its normalised form (for pairs).
fn emit_word(word: &str, lower: &str, n: usize, prefix: &str, sink: &mut Sink, norm: &mut String) {
    norm.clear();
    let digits = lower.bytes().filter(u8::is_ascii_digit).count();
    if digits > 0 {
        let body = lower.strip_prefix('$').unwrap_or(lower);
        if body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b','))
        {
            // Numbers: short plain numbers stay as they are, others are reduced to their shape.
            if digits <= 4 && body.bytes().all(|b| b.is_ascii_digit()) {
                norm.push_str(lower);
            } else {
                if lower.starts_with('$') {
                    norm.push('$');
                }
                norm.push_str("num:");
                number_shape_into(norm, body);
            }
            sink.push_word(prefix, norm);
            return;
        }
        if n >= 8 && digits >= 3 {
            // Ids, tracking codes and other letter/digit mixes.
            norm.push_str("mix:");
            push_decimal(norm, bucket_len(n).max(1));
            sink.push_word(prefix, norm);
            return;
        }
    }
    sink.push_word(prefix, lower);
    // Words in capitals keep their case as a signal of their own.
    if is_capitals(word) {
        sink.push_word(prefix, word);
    }
    norm.push_str(lower);
}

/// No lowercase letter and at least two uppercase ones.
fn is_capitals(word: &str) -> bool {
    if word.is_ascii() {
        !word.bytes().any(|b| b.is_ascii_lowercase()) && word.bytes().filter(u8::is_ascii_uppercase).count() >= 2
    } else {
        word.chars().all(|c| !c.is_lowercase()) && word.chars().filter(|c| c.is_uppercase()).count() >= 2
    }
}

/// Shape of a number: digit runs replaced by their length (capped at 9), separators kept ("555-123-4567" ->
/// "3-3-4", "1,000.00" -> "1,3.2").
#[cfg(test)]
fn number_shape(s: &str) -> String {
    let mut out = String::new();
    number_shape_into(&mut out, s);
    out
}

/// [`number_shape`] appended to `out`.
fn number_shape_into(out: &mut String, s: &str) {
    let mut run = 0usize;
    for b in s.bytes().take(32) {
        if b.is_ascii_digit() {
            run += 1;
        } else {
            if run > 0 {
                out.push(char::from(b'0' + run.min(9) as u8));
            }
            run = 0;
            out.push(char::from(b));
        }
    }
    if run > 0 {
        out.push(char::from(b'0' + run.min(9) as u8));
    }
}

/// Emit URL tokens for URLs (http, https, www.) found in `text`: `u:` scheme, host and registrable domain
/// (`u:ip` for numeric hosts), `u:port`, `u:userinfo`, `u:pct` for percent-encoding, and `up:` path pieces.
fn url_tokens(text: &str, sink: &mut Sink) {
    let mut lower = std::mem::take(&mut sink.url_lower);
    lower.clear();
    lower.push_str(text);
    lower.make_ascii_lowercase();
    lowercase_url_tokens(&lower, sink);
    sink.url_lower = lower;
}

/// [`url_tokens`] of the ASCII-lowercased text.
fn lowercase_url_tokens(lower: &str, sink: &mut Sink) {
    let bytes = lower.as_bytes();
    let mut i = 0;
    let mut count = 0;
    while i < bytes.len() && count < MAX_URLS && !sink.full() {
        let Some(pos) = memchr_any(&bytes[i..]) else {
            break;
        };
        i += pos;
        let rest = &bytes[i..];
        let (skip, scheme) = if rest.starts_with(b"http://") {
            (7, "u:http")
        } else if rest.starts_with(b"https://") {
            (8, "u:https")
        } else if rest.starts_with(b"www.") && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            (0, "u:bare")
        } else if rest.starts_with(b"mailto:") {
            sink.push("u:mailto");
            i += 7;
            continue;
        } else {
            i += 1;
            continue;
        };
        let start = i + skip;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'.' | b'-' | b'@' | b'%' | b':' | b'_'))
        {
            end += 1;
        }
        let authority = &lower[start..end];
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((_, h)) => (true, h),
            None => (false, authority),
        };
        let (host, port) = match host_port.split_once(':') {
            Some((h, p)) => (h, !p.is_empty()),
            None => (host_port, false),
        };
        let host = host.trim_matches(|c| c == '.' || c == '-');
        if !host.is_empty() {
            count += 1;
            sink.push(scheme);
            if userinfo {
                sink.push("u:userinfo");
            }
            if port {
                sink.push("u:port");
            }
            if host.contains('%') {
                sink.push("u:pct");
            }
            if host
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            {
                sink.push("u:ip");
            } else if host.contains('.') {
                host_tokens(host, "u:", sink);
            }
            // Path pieces.
            let mut path_end = end;
            while path_end < bytes.len()
                && path_end - end < 512
                && !bytes[path_end].is_ascii_whitespace()
                && !matches!(bytes[path_end], b'"' | b'\'' | b'<' | b'>' | b')')
            {
                path_end += 1;
            }
            // The 512-byte cap may stop inside a character.
            while !lower.is_char_boundary(path_end) {
                path_end -= 1;
            }
            let path = &lower[end.min(path_end)..path_end];
            if path.contains('%') {
                sink.push("u:pct");
            }
            if path.contains('?') {
                sink.push("u:query");
            }
            for piece in path
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|p| p.len() >= 2)
                .take(MAX_URL_PIECES)
            {
                if piece.bytes().all(|b| b.is_ascii_digit()) {
                    sink.push_with(|b| {
                        b.push_str("up:num:");
                        push_decimal(b, piece.len().min(9));
                    });
                } else if piece.len() > 20
                    || (piece.len() >= 8 && piece.bytes().filter(u8::is_ascii_digit).count() >= 3)
                {
                    sink.push_with(|b| {
                        b.push_str("up:mix:");
                        push_decimal(b, bucket_len(piece.len()).max(1));
                    });
                } else {
                    sink.push2("up:", piece);
                }
            }
            end = path_end;
        }
        i = end.max(i + 1);
    }
}

/// Position of the first byte that may start a URL ('h', 'w' or 'm').
fn memchr_any(bytes: &[u8]) -> Option<usize> {
    memchr::memchr3(b'h', b'w', b'm', bytes)
}

/// Reduce HTML to text: strip tags and comments, drop script/style content, decode entities.
/// Tag names are emitted as `tag:name` tokens.
fn html_to_text(html: &str, out: &mut String, sink: &mut Sink) {
    let mut rest = html;
    let mut ntags = 0usize;
    while let Some(lt) = rest.find('<') {
        decode_entities(&rest[..lt], out);
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = match rest.find("-->") {
                Some(end) => &rest[end + 3..],
                None => "",
            };
            sink.push("tag:comment");
            out.push(' ');
            continue;
        }
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[..end];
        rest = &rest[end..];
        let body = tag.trim_start_matches('<');
        let closing = body.starts_with('/');
        let body = body.trim_start_matches('/');
        let name_len = body.bytes().take_while(|b| b.is_ascii_alphanumeric()).count();
        // ASCII alphanumerics only, so any cut is on a character boundary.
        let name = &body[..name_len.min(12)];
        if !name.is_empty() {
            ntags += 1;
            if ntags <= 2000 {
                sink.push_with(|b| {
                    b.push_str("tag:");
                    push_ascii_lower(b, name);
                });
            }
        }
        let close = if closing {
            None
        } else if name.eq_ignore_ascii_case("script") {
            Some("</script")
        } else if name.eq_ignore_ascii_case("style") {
            Some("</style")
        } else {
            None
        };
        if let Some(close) = close {
            rest = match find_ignore_ascii_case(rest, close) {
                Some(pos) => &rest[pos..],
                None => "",
            };
        }
        out.push(' ');
    }
    decode_entities(rest, out);
}

/// Byte offset of the first ASCII-case-insensitive occurrence of the ASCII string `needle` in `hay`.
fn find_ignore_ascii_case(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    if n.is_empty() {
        return Some(0);
    }
    // Candidates start with the needle's first byte (exactly, unless it is a letter).
    let hay = hay.as_bytes();
    let first = n[0];
    let matches = |pos: usize| hay.get(pos..pos + n.len()).is_some_and(|w| w.eq_ignore_ascii_case(n));
    if first.is_ascii_alphabetic() {
        memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), hay).find(|&pos| matches(pos))
    } else {
        memchr::memchr_iter(first, hay).find(|&pos| matches(pos))
    }
}

/// Named character references decoded besides numeric ones.
const ENTITIES: &[(&str, char)] = &[
    ("nbsp", ' '),
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("copy", '©'),
    ("reg", '®'),
    ("trade", '™'),
    ("euro", '€'),
    ("pound", '£'),
    ("cent", '¢'),
    ("yen", '¥'),
    ("middot", '·'),
    ("bull", '•'),
    ("hellip", '…'),
    ("ndash", '–'),
    ("mdash", '—'),
    ("lsquo", '\''),
    ("rsquo", '\''),
    ("ldquo", '"'),
    ("rdquo", '"'),
    ("laquo", '«'),
    ("raquo", '»'),
    ("shy", '\u{ad}'),
    ("eacute", 'é'),
    ("egrave", 'è'),
    ("aacute", 'á'),
    ("agrave", 'à'),
    ("iacute", 'í'),
    ("oacute", 'ó'),
    ("uacute", 'ú'),
    ("ntilde", 'ñ'),
    ("ccedil", 'ç'),
    ("auml", 'ä'),
    ("ouml", 'ö'),
    ("uuml", 'ü'),
    ("szlig", 'ß'),
];

fn decode_entities(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let semi = rest.bytes().take(12).skip(1).position(|b| b == b';').map(|p| p + 1);
        let Some(semi) = semi else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
            u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
        } else if let Some(dec) = entity.strip_prefix('#') {
            dec.parse::<u32>().ok().and_then(char::from_u32)
        } else {
            ENTITIES
                .iter()
                .find(|(name, _)| *name == entity)
                .or_else(|| ENTITIES.iter().find(|(name, _)| name.eq_ignore_ascii_case(entity)))
                .map(|&(_, c)| c)
        };
        match decoded {
            Some(c) => {
                out.push(if c == '\u{a0}' { ' ' } else { c });
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests;
