//! Tokenizer for the statistical (Bayes-style) spam classifier.
//!
//! Turns a raw RFC 5322 message into a deduplicated, bounded list of string tokens. Tokens carry a short prefix
//! naming where they came from (`s:` subject, `f:` From, `r:` Reply-To, `to:` To, `h:` header signals, `u:` URL
//! hosts, `tag:` HTML tag names, `p:` punctuation runs, `sk:` over-long words); plain body words have no prefix.
//! Tokens never contain control characters (in particular no tabs or newlines), so they can be stored one per line.

use std::collections::HashSet;

use mail_parser::{Address, Message, MessageParser, MimeHeaders, PartType};

/// Maximum number of distinct tokens produced for one message.
pub const MAX_TOKENS: usize = 3000;
/// Tokens longer than this many bytes are replaced by a "skip" token.
pub const MAX_TOKEN_LEN: usize = 40;
/// Words shorter than this many characters are ignored.
const MIN_WORD_LEN: usize = 3;
/// Nested message/rfc822 parts are followed at most this deep.
const MAX_DEPTH: usize = 3;
/// At most this many bytes of decoded body text are tokenized per part.
const MAX_PART_TEXT: usize = 256 * 1024;

/// Tokens of a raw RFC 5322 message (bytes as received; may be LF or CRLF; may start with an mbox "From " line
/// which is skipped).
///
/// Deduplicated (each token counted once per message), bounded (at most [`MAX_TOKENS`] tokens; tokens longer than
/// [`MAX_TOKEN_LEN`] bytes are replaced by `"sk:" + first 8 chars + ":" + length bucket`, like SpamAssassin's skip
/// tokens).
pub fn tokens(raw: &[u8]) -> Vec<String> {
    let raw = skip_mbox_from(raw);
    let mut sink = Sink::default();
    match MessageParser::default().parse(raw) {
        Some(message) => message_tokens(&message, &mut sink, 0),
        None => {
            let text = String::from_utf8_lossy(raw);
            text_tokens(truncate(&text, MAX_PART_TEXT), "", &mut sink);
            url_tokens(truncate(&text, MAX_PART_TEXT), &mut sink);
            sink.push("h:unparsed".to_string());
        }
    }
    sink.out
}

/// Skip a leading mbox "From " separator line.
fn skip_mbox_from(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        match raw.iter().position(|&b| b == b'\n') {
            Some(pos) => &raw[pos + 1..],
            None => &[],
        }
    } else {
        raw
    }
}

/// Collects unique tokens up to [`MAX_TOKENS`].
#[derive(Default)]
struct Sink {
    seen: HashSet<String>,
    out: Vec<String>,
}

impl Sink {
    fn full(&self) -> bool {
        self.out.len() >= MAX_TOKENS
    }

    fn push(&mut self, token: String) {
        if self.full() || token.is_empty() {
            return;
        }
        let token = if token.chars().any(char::is_control) {
            token.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
        } else {
            token
        };
        let token = if token.len() > MAX_TOKEN_LEN {
            let head: String = token.chars().take(8).collect();
            format!("sk:{head}:{}", bucket_len(token.len()))
        } else {
            token
        };
        if !self.seen.contains(&token) {
            self.seen.insert(token.clone());
            self.out.push(token);
        }
    }
}

/// Length bucket for skip tokens.
fn bucket_len(len: usize) -> usize {
    if len >= 200 { 200 } else { len / 10 * 10 }
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

fn message_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) {
    header_tokens(message, sink, depth);
    let mut total_chars = 0usize;
    let mut non_ascii = 0usize;
    for part in &message.parts {
        if sink.full() {
            break;
        }
        if let Some(charset) = part.content_type().and_then(|ct| ct.attribute("charset")) {
            sink.push(format!("h:cs:{}", charset.trim().to_ascii_lowercase()));
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
                let text = html_to_text(html, sink);
                count_chars(&text, &mut total_chars, &mut non_ascii);
                text_tokens(&text, "", sink);
            }
            PartType::Binary(_) | PartType::InlineBinary(_) => {
                if let Some(ct) = part.content_type() {
                    let sub = ct.subtype().unwrap_or("");
                    sink.push(format!(
                        "h:att:{}/{}",
                        ct.ctype().to_ascii_lowercase(),
                        sub.to_ascii_lowercase()
                    ));
                }
            }
            PartType::Message(inner) => {
                if depth < MAX_DEPTH {
                    message_tokens(inner, sink, depth + 1);
                }
            }
            PartType::Multipart(_) => {}
        }
    }
    if depth == 0 {
        sink.push(format!("h:8bit:{}", non_ascii_bucket(total_chars, non_ascii)));
    }
}

fn count_chars(text: &str, total: &mut usize, non_ascii: &mut usize) {
    for c in text.chars() {
        if !c.is_whitespace() {
            *total += 1;
            if !c.is_ascii() {
                *non_ascii += 1;
            }
        }
    }
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

fn header_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) {
    if let Some(subject) = message.subject() {
        text_tokens(subject, "s:", sink);
    } else if depth == 0 {
        sink.push("h:nosubject".to_string());
    }
    if let Some(from) = message.from() {
        address_tokens(from, "f:", sink);
    }
    if let Some(reply_to) = message.reply_to() {
        address_tokens(reply_to, "r:", sink);
    }
    if let Some(to) = message.to() {
        address_tokens(to, "to:", sink);
    }
    if depth > 0 {
        return;
    }
    for (name, header) in [("xm", "X-Mailer"), ("ua", "User-Agent")] {
        if let Some(value) = message.header(header).and_then(|v| v.as_text())
            && let Some(word) = value.split_whitespace().next()
        {
            let word: String = word.chars().filter(|c| !matches!(c, '(' | ')' | ';' | ',')).collect();
            sink.push(format!("h:{name}:{}", word.to_ascii_lowercase()));
        }
    }
    match message.root_part().content_type() {
        Some(ct) => {
            let sub = ct.subtype().unwrap_or("");
            sink.push(format!(
                "h:ct:{}/{}",
                ct.ctype().to_ascii_lowercase(),
                sub.to_ascii_lowercase()
            ));
        }
        None => sink.push("h:ct:none".to_string()),
    }
    let received = message.header_values("Received").count();
    let bucket = match received {
        0..=4 => received.to_string(),
        5..=6 => "5-6".to_string(),
        7..=9 => "7-9".to_string(),
        _ => "10+".to_string(),
    };
    sink.push(format!("h:rcvd:{bucket}"));
    if message.message_id().is_none() {
        sink.push("h:nomsgid".to_string());
    }
    if message.date().is_none() {
        sink.push("h:nodate".to_string());
    }
    if message.to().is_none() {
        sink.push("h:noto".to_string());
    }
}

fn address_tokens(address: &Address<'_>, prefix: &str, sink: &mut Sink) {
    for addr in address.iter().take(20) {
        if let Some(name) = addr.name() {
            text_tokens(name, prefix, sink);
        }
        if let Some(email) = addr.address()
            && let Some((_, domain)) = email.rsplit_once('@')
        {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if !domain.is_empty() {
                sink.push(format!("{prefix}{domain}"));
                if let Some(reg) = registrable(&domain)
                    && reg != domain
                {
                    sink.push(format!("{prefix}{reg}"));
                }
            }
        }
    }
}

/// The last two labels of a host name ("registrable-ish" domain), if it has at least two labels.
fn registrable(host: &str) -> Option<&str> {
    let mut dots = host.rmatch_indices('.');
    dots.next()?;
    match dots.next() {
        Some((pos, _)) => Some(&host[pos + 1..]),
        None => Some(host),
    }
}

/// Emit word tokens (and punctuation-run tokens) of `text` with `prefix`.
fn text_tokens(text: &str, prefix: &str, sink: &mut Sink) {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut word = String::new();
    while i < chars.len() && !sink.full() {
        let c = chars[i];
        if c.is_alphanumeric() || (c == '$' && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())) {
            // A word starts here; internal ' - . , join alphanumerics ("don't", "e-mail", "1,000", "3.5").
            word.clear();
            let start = i;
            word.push(c);
            i += 1;
            while i < chars.len() {
                let c = chars[i];
                if c.is_alphanumeric() {
                    word.push(c);
                    i += 1;
                } else if matches!(c, '\'' | '-' | '.' | ',' | '\u{2019}')
                    && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric())
                    && chars.get(i - 1).is_some_and(|p| p.is_alphanumeric())
                    && !(c == ',' && !(chars[i - 1].is_ascii_digit() && chars[i + 1].is_ascii_digit()))
                {
                    word.push(if c == '\u{2019}' { '\'' } else { c });
                    i += 1;
                } else {
                    break;
                }
            }
            // A trailing '!' stays attached as a separate signal ("free!").
            if chars.get(i) == Some(&'!') && i - start >= MIN_WORD_LEN {
                sink.push(format!("{prefix}{}!", word.to_lowercase()));
            }
            emit_word(&word, prefix, sink);
        } else if matches!(c, '!' | '$' | '?' | '*' | '%') {
            let mut run = 0;
            while i < chars.len() && chars[i] == c {
                run += 1;
                i += 1;
            }
            if run >= 3 {
                sink.push(format!("{prefix}p:{}", c.to_string().repeat(3)));
            }
        } else {
            i += 1;
        }
    }
}

fn emit_word(word: &str, prefix: &str, sink: &mut Sink) {
    let n = word.chars().count();
    if n < MIN_WORD_LEN {
        return;
    }
    let lower = word.to_lowercase();
    // Long digit strings (phone numbers, ids) are reduced to their shape.
    if lower.len() > 6
        && lower
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | ','))
    {
        sink.push(format!("{prefix}num:{}", bucket_len(lower.len()).max(1)));
        return;
    }
    sink.push(format!("{prefix}{lower}"));
    // Words in capitals are a weak signal of their own.
    if n >= 4 && word.chars().all(|c| !c.is_lowercase()) && word.chars().any(char::is_uppercase) {
        sink.push(format!("{prefix}caps:{lower}"));
    }
}

/// Emit `u:host` and `u:registrable` tokens for URLs (http, https, www.) found in `text`.
fn url_tokens(text: &str, sink: &mut Sink) {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut i = 0;
    let mut count = 0;
    while i < bytes.len() && count < 200 && !sink.full() {
        let rest = &bytes[i..];
        let skip = if rest.starts_with(b"http://") {
            7
        } else if rest.starts_with(b"https://") {
            8
        } else if rest.starts_with(b"www.") && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            0
        } else {
            i += 1;
            continue;
        };
        let start = i + skip;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'.' | b'-' | b'@')) {
            end += 1;
        }
        // Skip userinfo ("http://user@host").
        let host_all = &lower[start..end];
        let host = host_all
            .rsplit('@')
            .next()
            .unwrap_or("")
            .trim_matches(|c| c == '.' || c == '-');
        if !host.is_empty() {
            count += 1;
            if host
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            {
                sink.push("u:ip".to_string());
            } else if host.contains('.') {
                sink.push(format!("u:{host}"));
                if let Some(reg) = registrable(host)
                    && reg != host
                {
                    sink.push(format!("u:{reg}"));
                }
            }
        }
        i = end.max(i + 1);
    }
}

/// Reduce HTML to text: strip tags and comments, drop script/style content, decode a few entities.
/// Tag names are emitted as `tag:name` tokens.
fn html_to_text(html: &str, sink: &mut Sink) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        decode_entities(&rest[..lt], &mut out);
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = match rest.find("-->") {
                Some(end) => &rest[end + 3..],
                None => "",
            };
            out.push(' ');
            continue;
        }
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[..end];
        rest = &rest[end..];
        let name: String = tag
            .trim_start_matches('<')
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect::<String>()
            .to_ascii_lowercase();
        if !name.is_empty() {
            sink.push(format!("tag:{name}"));
        }
        if (name == "script" || name == "style") && !tag.starts_with("</") {
            let close = format!("</{name}");
            rest = match find_ignore_ascii_case(rest, &close) {
                Some(pos) => &rest[pos..],
                None => "",
            };
        }
        out.push(' ');
    }
    decode_entities(rest, &mut out);
    out
}

/// Byte offset of the first ASCII-case-insensitive occurrence of the ASCII string `needle` in `hay`.
fn find_ignore_ascii_case(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    if n.is_empty() {
        return Some(0);
    }
    hay.as_bytes().windows(n.len()).position(|w| w.eq_ignore_ascii_case(n))
}

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
        let decoded = match entity.to_ascii_lowercase().as_str() {
            "nbsp" => Some(' '),
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
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
mod tests {
    use super::*;

    fn has(tokens: &[String], t: &str) -> bool {
        tokens.iter().any(|x| x == t)
    }

    #[test]
    fn plain_message() {
        let raw = b"From sender@example.org Mon Jan  1 00:00:00 2024\n\
From: \"Alice Smith\" <alice@mail.example.org>\n\
To: bob@example.net\n\
Subject: Meeting agenda for Tuesday\n\
X-Mailer: Frobnicator 2.1 (build 7)\n\
Received: from a by b\n\
Received: from c by d\n\
Message-ID: <1@example.org>\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\n\
\n\
Hi Bob, don't forget the meeting. It costs $100 and it's FREE!!! at the office.\n\
See http://www.Example.com/path and 555-123-4567.\n";
        let t = tokens(raw);
        for want in [
            "s:meeting",
            "s:agenda",
            "s:tuesday",
            "f:alice",
            "f:smith",
            "f:mail.example.org",
            "f:example.org",
            "to:example.net",
            "h:xm:frobnicator",
            "h:ct:none",
            "h:rcvd:2",
            "don't",
            "$100",
            "free",
            "free!",
            "caps:free",
            "p:!!!",
            "meeting",
            "office",
            "u:www.example.com",
            "u:example.com",
            "num:10",
            "h:8bit:0",
        ] {
            assert!(has(&t, want), "missing {want} in {t:?}");
        }
        // The mbox separator line is not a header.
        assert!(!has(&t, "sender"));
        // Short words are dropped.
        assert!(!has(&t, "hi"));
        // No duplicates.
        let set: HashSet<&String> = t.iter().collect();
        assert_eq!(set.len(), t.len());
    }

    #[test]
    fn crlf_and_reply_to() {
        let raw = b"From: x@a.example\r\nReply-To: Claims Dept <claims@payout.example.biz>\r\nSubject: Winner\r\n\r\nclaim your prize\r\n";
        let t = tokens(raw);
        for want in [
            "r:claims",
            "r:dept",
            "r:payout.example.biz",
            "r:example.biz",
            "s:winner",
            "claim",
            "prize",
        ] {
            assert!(has(&t, want), "missing {want} in {t:?}");
        }
    }

    #[test]
    fn html_message() {
        let raw = b"From: a@b.example\nSubject: offer\nContent-Type: text/html; charset=\"windows-1252\"\n\n\
<html><head><style>.x { color: red }</style><script>var hidden = 1;</script></head>\
<body><p>Cheap&nbsp;pills &amp; <b>watches</b></p><!-- comment secret -->\
<a href=\"http://click.Tracker.example.info/x?y=1\">here</a><img src=\"https://203.0.113.9/p.gif\"></body></html>\n";
        let t = tokens(raw);
        for want in [
            "h:ct:text/html",
            "h:cs:windows-1252",
            "cheap",
            "pills",
            "watches",
            "here",
            "tag:a",
            "tag:img",
            "tag:b",
            "u:click.tracker.example.info",
            "u:example.info",
            "u:ip",
        ] {
            assert!(has(&t, want), "missing {want} in {t:?}");
        }
        for bad in ["html", "body", "href", "color", "hidden", "secret", "nbsp"] {
            assert!(!has(&t, bad), "unexpected {bad} in {t:?}");
        }
    }

    #[test]
    fn base64_part() {
        // "Unbelievable mortgage rates today" base64 encoded.
        let raw = b"From: a@b.example\nSubject: hi\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"XX\"\n\n\
--XX\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n\
VW5iZWxpZXZhYmxlIG1vcnRnYWdlIHJhdGVzIHRvZGF5\n--XX--\n";
        let t = tokens(raw);
        for want in [
            "unbelievable",
            "mortgage",
            "rates",
            "today",
            "h:ct:multipart/alternative",
            "h:cs:utf-8",
        ] {
            assert!(has(&t, want), "missing {want} in {t:?}");
        }
        assert!(!has(&t, "vw5izwxpzxzhymxlig1vcnrnywdlihjhdgvzihrvzgf5"));
    }

    #[test]
    fn long_tokens_are_skipped_and_bounded() {
        let mut body = String::from("Subject: x\n\n");
        body.push_str(&"a".repeat(100));
        body.push('\n');
        for i in 0..10_000 {
            body.push_str(&format!("word{i}x "));
        }
        let t = tokens(body.as_bytes());
        assert!(has(&t, "sk:aaaaaaaa:100"), "{:?}", &t[..10]);
        assert_eq!(t.len(), MAX_TOKENS);
        assert!(t.iter().all(|x| x.len() <= MAX_TOKEN_LEN));
    }

    #[test]
    fn non_ascii_bucket_and_no_control_chars() {
        let raw = "Subject: привет\nContent-Type: text/plain; charset=utf-8\n\nпривет мир, купите сейчас\tTab\n";
        let t = tokens(raw.as_bytes());
        assert!(has(&t, "s:привет"));
        assert!(has(&t, "купите"));
        assert!(has(&t, "h:8bit:ge50"));
        assert!(t.iter().all(|x| !x.contains(['\t', '\n', '\r'])));
    }

    #[test]
    fn empty_and_garbage() {
        assert!(tokens(b"").len() <= MAX_TOKENS);
        let _ = tokens(b"From ");
        let _ = tokens(b"\xff\xfe\x00\x01<<<&#xffffffff;&#99999999999;");
        let _ = tokens(b"Content-Type: text/html\n\n<a href=\"http://@@@..\">&#x;&;&#;<script");
    }

    #[test]
    fn pathological_inputs_are_fast() {
        let start = std::time::Instant::now();
        for unit in ["<script>", "&", "&#", "<!--", "http://", "www.a", "!", "a'", "<"] {
            let mut raw = String::from("Content-Type: text/html\n\n");
            raw.push_str(&unit.repeat(200_000 / unit.len()));
            let _ = tokens(raw.as_bytes());
            let _ = tokens(&raw.as_bytes()[24..]);
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn fuzz_never_panics() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pieces: [&[u8]; 16] = [
            b"From: ",
            b"Subject: ",
            b"Content-Type: text/html; charset=",
            b"Content-Type: multipart/mixed; boundary=b\n",
            b"--b\n",
            b"Content-Transfer-Encoding: base64\n",
            b"Content-Transfer-Encoding: quoted-printable\n",
            b"\n",
            b"\r\n",
            b"<a href=\"http://",
            b"&#x",
            b"=?utf-8?B?",
            b"\xc3\xa9\xff",
            b"www.",
            b"!!!$$$",
            b"Content-Type: message/rfc822\n\n",
        ];
        for _ in 0..4000 {
            let len = (next() % 400) as usize;
            let mut buf = Vec::with_capacity(len);
            while buf.len() < len {
                let r = next();
                if r % 4 == 0 {
                    buf.extend_from_slice(pieces[(r >> 8) as usize % pieces.len()]);
                } else {
                    buf.push((r >> 16) as u8);
                }
            }
            let t = tokens(&buf);
            assert!(t.len() <= MAX_TOKENS);
            assert!(
                t.iter()
                    .all(|x| !x.is_empty() && x.len() <= MAX_TOKEN_LEN && !x.contains(['\t', '\n']))
            );
        }
    }
}
