//! The message as the rules see it ([`rules::View`]), built once per
//! message from mail-parser's reading (of each text part, the first
//! `spam.part_scan_size` octets): decoded headers, the text of the
//! text parts (HTML reduced to text), the text parts as they are, the URIs,
//! the raw message, and two pseudo-headers set only by sluice:
//!
//! - `Sluice-Mime`: facts about the MIME structure, e.g.
//!   `parts:3 text:1 html:1 attach:1 images:0 html-only charset:utf-8`;
//! - `Sluice-Auth`: the SPF/DKIM/DMARC results (added by the caller when
//!   the network checks ran), e.g. `spf=pass dkim=none dmarc=fail`.
//!
//! Headers of those names arriving with the message are dropped, so a
//! sender cannot claim results; fixtures (`check_fixture`) keep them, so
//! rules on them can be tested.

use std::collections::BTreeSet;

use mail_parser::{HeaderValue, Message, MessageParser, MimeHeaders, PartType};

use super::rules::View;

/// Pseudo-header with the MIME facts.
pub const MIME_HEADER: &str = "Sluice-Mime";
/// Pseudo-header with the authentication results.
pub const AUTH_HEADER: &str = "Sluice-Auth";
/// Pseudo-header fixtures use to set the classifier's probability.
pub const BAYES_HEADER: &str = "Sluice-Bayes";
/// Pseudo-header fixtures use to set the n-gram classifier's probability.
pub const NGRAM_HEADER: &str = "Sluice-Ngram";

/// At most this much decoded text (body, rawbody) and raw message (full) is
/// looked at, so a huge message costs no more than a large one (like
/// SpamAssassin's scan sizes; spam puts its pitch near the top).
pub const MAX_TEXT: usize = 128 * 1024;
/// Octets of each text part read by default (`spam.part_scan_size`).
pub const PART_SCAN: usize = crate::config::defaults::SPAM_PART_SCAN_SIZE;
/// At most this many URIs are kept.
pub const MAX_URIS: usize = 1000;
/// Nested messages are followed this deep.
const MAX_DEPTH: usize = 3;

/// An owned message view; [`MessageView::view`] lends it to the rules.
#[derive(Debug, Default, Clone)]
pub struct MessageView {
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub rawbody: String,
    pub uris: Vec<String>,
    pub full: String,
    /// The classifier's spam probability, when it had an opinion.
    pub bayes: Option<f64>,
    /// The n-gram classifier's, likewise.
    pub ngram: Option<f64>,
}

impl MessageView {
    /// Parses a raw message and builds its view. Headers named like the
    /// pseudo-headers are dropped.
    pub fn parse(raw: &[u8]) -> MessageView {
        match MessageParser::default().parse(raw) {
            Some(m) => MessageView::from_message(&m, false, PART_SCAN),
            None => MessageView::unparsed(raw),
        }
    }

    /// A view of a message mail-parser could not read: no headers, the
    /// bytes as body.
    fn unparsed(raw: &[u8]) -> MessageView {
        let text = lossy_prefix(raw, MAX_TEXT);
        let mut v = MessageView {
            uris: text_uris(&text, MAX_URIS),
            body: text.clone(),
            rawbody: text.clone(),
            full: text,
            ..Default::default()
        };
        v.headers
            .push((MIME_HEADER.to_string(), "parts:0 unparsed".to_string()));
        v
    }

    /// The view of an already parsed message. `keep_pseudo` keeps
    /// pseudo-headers written in the message (fixtures only); of each text
    /// part, the first `part_scan` octets are read.
    pub fn from_message(msg: &Message<'_>, keep_pseudo: bool, part_scan: usize) -> MessageView {
        let raw = msg.raw_message();
        let mut v = MessageView {
            full: lossy_prefix(raw, MAX_TEXT),
            ..Default::default()
        };
        let mut facts = Facts::default();
        let root_headers = msg.root_part().headers();
        for h in root_headers {
            let name = h.name.as_str();
            let pseudo = [MIME_HEADER, AUTH_HEADER, BAYES_HEADER, NGRAM_HEADER]
                .iter()
                .any(|p| p.eq_ignore_ascii_case(name));
            if pseudo && !keep_pseudo {
                continue;
            }
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            let value = header_text(&raw[start..end], &h.value);
            let probability = || value.trim().parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p));
            if pseudo && name.eq_ignore_ascii_case(BAYES_HEADER) {
                v.bayes = probability();
            }
            if pseudo && name.eq_ignore_ascii_case(NGRAM_HEADER) {
                v.ngram = probability();
            }
            v.headers.push((name.to_string(), value));
        }
        collect_parts(msg, &mut v, &mut facts, part_scan, 0);
        if !keep_pseudo || !v.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(MIME_HEADER)) {
            v.headers.push((MIME_HEADER.to_string(), facts.render()));
        }
        v
    }

    /// Adds (or replaces) a pseudo-header, e.g. [`AUTH_HEADER`].
    pub fn set_pseudo(&mut self, name: &str, value: String) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value));
    }

    pub fn view(&self) -> View<'_> {
        View {
            headers: &self.headers,
            body: &self.body,
            rawbody: &self.rawbody,
            uris: &self.uris,
            full: &self.full,
            bayes: self.bayes,
            ngram: self.ngram,
        }
    }
}

/// What `Sluice-Mime` says.
#[derive(Default)]
struct Facts {
    parts: usize,
    text: usize,
    html: usize,
    attach: usize,
    images: usize,
    charsets: BTreeSet<String>,
}

impl Facts {
    fn render(&self) -> String {
        let mut s = format!(
            "parts:{} text:{} html:{} attach:{} images:{}",
            self.parts, self.text, self.html, self.attach, self.images
        );
        if self.html > 0 && self.text == 0 {
            s.push_str(" html-only");
        }
        for c in &self.charsets {
            s.push_str(" charset:");
            s.push_str(c);
        }
        s
    }
}

fn collect_parts(msg: &Message<'_>, v: &mut MessageView, facts: &mut Facts, part_scan: usize, depth: usize) {
    for part in &msg.parts {
        let ct = part.content_type();
        let is_multipart = matches!(part.body, PartType::Multipart(_));
        if !is_multipart {
            facts.parts += 1;
        }
        let charset = ct
            .and_then(|c| c.attribute("charset"))
            .map(|c| c.trim().to_ascii_lowercase());
        match &part.body {
            PartType::Text(t) => {
                facts.text += 1;
                if let Some(c) = charset {
                    facts.charsets.insert(c);
                }
                let t = truncate(t, part_scan);
                push_text(&mut v.body, t);
                push_text(&mut v.rawbody, t);
                for u in text_uris(t, MAX_URIS) {
                    push_uri(&mut v.uris, u);
                }
            }
            PartType::Html(h) => {
                facts.html += 1;
                if let Some(c) = charset {
                    facts.charsets.insert(c);
                }
                let h = truncate(h, part_scan);
                push_text(&mut v.rawbody, h);
                let text = mail_parser::decoders::html::html_to_text(h);
                push_text(&mut v.body, truncate(&text, part_scan));
                for u in html_uris(h) {
                    push_uri(&mut v.uris, u);
                }
                for u in text_uris(&text, MAX_URIS) {
                    push_uri(&mut v.uris, u);
                }
            }
            PartType::Message(inner) => {
                facts.attach += 1;
                if depth < MAX_DEPTH {
                    collect_parts(inner, v, facts, part_scan, depth + 1);
                }
            }
            PartType::Binary(_) | PartType::InlineBinary(_) => {
                facts.attach += 1;
                if ct.is_some_and(|c| c.c_type.eq_ignore_ascii_case("image")) {
                    facts.images += 1;
                }
            }
            PartType::Multipart(_) => {}
        }
    }
}

/// A header's value for rules: mail-parser's decoded text for text
/// headers (RFC 2047 words decoded), otherwise the raw value unfolded,
/// with encoded words decoded.
fn header_text(raw: &[u8], parsed: &HeaderValue<'_>) -> String {
    match parsed {
        HeaderValue::Text(t) => t.to_string(),
        _ => {
            let mut stream = mail_parser::parsers::MessageStream::new(raw);
            match stream.parse_unstructured() {
                HeaderValue::Text(t) => t.into_owned(),
                _ => unfold(&String::from_utf8_lossy(raw)),
            }
        }
    }
}

fn unfold(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn push_text(out: &mut String, text: &str) {
    let room = MAX_TEXT.saturating_sub(out.len());
    if room == 0 {
        return;
    }
    out.push_str(truncate(text, room));
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

fn push_uri(uris: &mut Vec<String>, u: String) {
    if uris.len() < MAX_URIS && !uris.contains(&u) {
        uris.push(u);
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn lossy_prefix(raw: &[u8], max: usize) -> String {
    let cut = &raw[..raw.len().min(max)];
    // `from_utf8` validates several times faster than the lossy decoder,
    // and most mail is valid (mostly ASCII).
    match std::str::from_utf8(cut) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(cut).into_owned(),
    }
}

/// Schemes a URI in text may start with.
const SCHEMES: [&str; 4] = ["http://", "https://", "ftp://", "www."];

/// URIs written in plain text: `http://`, `https://`, `ftp://` and bare
/// `www.` hosts (given `http://`).
pub fn text_uris(text: &str, max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && out.len() < max {
        let Some(off) = bytes[i..].iter().position(|&c| matches!(c | 0x20, b'h' | b'f' | b'w')) else {
            break;
        };
        let at = i + off;
        let rest = &bytes[at..];
        let scheme = SCHEMES
            .iter()
            .find(|s| rest.len() >= s.len() && rest[..s.len()].eq_ignore_ascii_case(s.as_bytes()));
        let word_start = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        match scheme {
            Some(s) if word_start => {
                let end = rest
                    .iter()
                    .position(|&c| {
                        c.is_ascii_whitespace()
                            || matches!(c, b'<' | b'>' | b'"' | b'\'' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^')
                    })
                    .unwrap_or(rest.len());
                let found = text[at..at + end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']']);
                if found.len() > s.len() + 1 {
                    let uri = if s.starts_with('w') {
                        format!("http://{found}")
                    } else {
                        found.to_string()
                    };
                    out.push(uri);
                }
                i = at + end.max(1);
            }
            _ => i = at + 1,
        }
    }
    out
}

/// URIs in HTML attributes (`href`, `src`, `action`, `background`), with
/// entities in them decoded.
pub fn html_uris(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    for attr in ["href", "src", "action", "background"] {
        let mut from = 0;
        while let Some(pos) = lower[from..].find(attr) {
            let at = from + pos;
            from = at + attr.len();
            if at > 0 && lower.as_bytes()[at - 1].is_ascii_alphanumeric() {
                continue;
            }
            let rest = &html[from..];
            let trimmed = rest.trim_start();
            let Some(after_eq) = trimmed.strip_prefix('=') else {
                continue;
            };
            let val = after_eq.trim_start();
            let value = match val.chars().next() {
                Some(q @ ('"' | '\'')) => val[1..].split(q).next().unwrap_or(""),
                Some(_) => val.split(|c: char| c.is_whitespace() || c == '>').next().unwrap_or(""),
                None => "",
            };
            let value = value.trim();
            if value.is_empty() || value.starts_with('#') {
                continue;
            }
            let decoded = decode_entities(value);
            if out.len() < MAX_URIS && !out.contains(&decoded) {
                out.push(decoded);
            }
        }
    }
    out
}

/// The common HTML entities in an attribute value.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let semi = tail.find(';').filter(|&e| e <= 10);
        let decoded = semi.and_then(|e| {
            let ent = &tail[1..e];
            let c = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => ent.strip_prefix('#').and_then(|n| {
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(h) => u32::from_str_radix(h, 16).ok(),
                        None => n.parse().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &tail[e + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_html_parts_headers_and_facts() {
        let raw = b"From: =?utf-8?q?Caf=C3=A9?= <a@b.example>\r\n\
Subject: =?utf-8?b?SGVsbG8gd29ybGQ=?=\r\n\
Sluice-Auth: spf=pass dkim=pass dmarc=pass\r\n\
Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nSee www.example.com/x.\r\n\
--b\r\nContent-Type: text/html; charset=koi8-r\r\n\r\n\
<p style=\"display:none\">hidden</p><a href=\"http://1.2.3.4/a?b=1&amp;c=2\">Click</a>\r\n--b--\r\n";
        let v = MessageView::parse(raw);
        let h = |n: &str| {
            v.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("Subject"), Some("Hello world"));
        assert!(h("From").unwrap().contains("Café"), "{:?}", h("From"));
        assert_eq!(h(AUTH_HEADER), None, "a claimed Sluice-Auth is dropped");
        assert_eq!(
            h(MIME_HEADER),
            Some("parts:2 text:1 html:1 attach:0 images:0 charset:koi8-r charset:utf-8")
        );
        assert!(v.body.contains("See www.example.com/x."));
        assert!(v.body.contains("Click") && !v.body.contains("<a"));
        assert!(v.rawbody.contains("display:none"));
        assert_eq!(v.uris, ["http://www.example.com/x", "http://1.2.3.4/a?b=1&c=2"]);
        assert!(v.full.starts_with("From: "));
    }

    #[test]
    fn html_only_and_attachments() {
        let raw = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<img src='cid:1'>Buy\r\n\
--b\r\nContent-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\nR0lGODlhAQABAAAAACw=\r\n--b--\r\n";
        let v = MessageView::parse(raw);
        let mime = &v.headers.last().unwrap().1;
        assert_eq!(mime, "parts:2 text:0 html:1 attach:1 images:1 html-only");
        assert_eq!(v.uris, ["cid:1"]);
    }

    #[test]
    fn each_text_part_is_read_up_to_the_part_scan_size() {
        let filler = "lorem ipsum dolor sit amet\r\n".repeat(2150); // 60,200 octets
        let raw = format!(
            "Subject: x\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nTOP-PLAIN\r\n{filler}TAIL-PLAIN http://tail.example/\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<p>TOP-HTML</p>{filler}<a href=\"http://late.example/\">TAIL-HTML</a>\r\n--b--\r\n"
        );
        let parsed = MessageParser::default().parse(raw.as_bytes()).unwrap();
        let capped = MessageView::from_message(&parsed, false, PART_SCAN);
        for top in ["TOP-PLAIN", "TOP-HTML"] {
            assert!(capped.body.contains(top) && capped.rawbody.contains(top), "{top}");
        }
        for tail in ["TAIL-PLAIN", "TAIL-HTML"] {
            assert!(!capped.body.contains(tail) && !capped.rawbody.contains(tail), "{tail}");
        }
        assert!(capped.body.len() <= 2 * (PART_SCAN + 1), "{}", capped.body.len());
        assert!(capped.uris.is_empty(), "{:?}", capped.uris);
        // The second part is read from its start even though the first was long.
        let whole = MessageView::from_message(&parsed, false, 100_000);
        assert!(whole.body.contains("TAIL-PLAIN") && whole.rawbody.contains("TAIL-HTML"));
        assert_eq!(whole.uris, ["http://tail.example/", "http://late.example/"]);
    }

    #[test]
    fn uris_in_text() {
        let t = "go to HTTP://A.example/x, or https://b.example/y?z=1) and xwww.no and www.c.example";
        assert_eq!(
            text_uris(t, 10),
            ["HTTP://A.example/x", "https://b.example/y?z=1", "http://www.c.example"]
        );
        assert!(text_uris("http:// alone", 10).is_empty());
        assert_eq!(text_uris("https://a.example https://b.example", 1).len(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [
            &b""[..],
            b"\xff\xfe\0",
            b"Subject: =?x?q?=ZZ?=\r\n",
            b"a:\r\n\r\n<a href=",
            b"<a href='&#xFFFFFFFF;'>",
        ] {
            let v = MessageView::parse(raw);
            let _ = v.view();
            let _ = html_uris(&String::from_utf8_lossy(raw));
        }
        assert_eq!(
            decode_entities("a&#x41;&lt;&bogus;&#999999999;"),
            "aA<&bogus;&#999999999;"
        );
    }
}
