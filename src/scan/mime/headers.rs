//! Reading header blocks leniently: unfolding, parameters split the ways
//! readers disagree on, and every plausible attachment name (RFC 2231
//! continuations in any order, extended values, RFC 2047 encoded words).

use super::super::decode;

pub(super) fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// A message (or part) read as a header block: unfolded lowercased names
/// with their values. `top` pieces always start with headers; other pieces
/// only when their first line looks like one.
pub(super) fn split_headers(piece: &[u8], top: bool) -> (Vec<(String, String)>, &[u8]) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    let mut first = true;
    while pos < piece.len() {
        let end = memchr::memchr(b'\n', &piece[pos..]).map_or(piece.len(), |i| pos + i + 1);
        let line = &piece[pos..end];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            return (headers, &piece[end..]);
        }
        if matches!(content[0], b' ' | b'\t') && !headers.is_empty() {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(String::from_utf8_lossy(content).trim());
            }
        } else if let Some(colon) = header_colon(content) {
            let name = String::from_utf8_lossy(&content[..colon]).trim().to_ascii_lowercase();
            let value = String::from_utf8_lossy(&content[colon + 1..]).trim().to_string();
            headers.push((name, value));
        } else if first && !top {
            return (Vec::new(), piece);
        } else {
            // Not a header line: the header block ended without a blank line.
            return (headers, &piece[pos..]);
        }
        first = false;
        pos = end;
        if headers.len() > 200 {
            break;
        }
    }
    (headers, &piece[pos.min(piece.len())..])
}

/// The colon of a header line (`name:` with a printable name, blanks
/// before the colon tolerated as many readers do).
pub(super) fn header_colon(line: &[u8]) -> Option<usize> {
    let colon = memchr::memchr(b':', line)?;
    let name = line[..colon].trim_ascii_end();
    (!name.is_empty() && name.iter().all(|&c| c.is_ascii_graphic() && c != b':')).then_some(colon)
}

pub(super) fn looks_like_message(data: &[u8]) -> bool {
    let head = &data[..data.len().min(4096)];
    let first = head.split(|&c| c == b'\n').next().unwrap_or(&[]);
    header_colon(first).is_some()
        && memchr::memmem::find(&head.to_ascii_lowercase(), b"content-").is_some()
        && (memchr::memmem::find(head, b"\n\n").is_some() || memchr::memmem::find(head, b"\r\n\r\n").is_some())
}

/// Removes RFC 5322 comments `( ... )` (not inside quotes).
pub(super) fn strip_comments(s: &str) -> String {
    let (mut out, mut depth, mut quoted) = (String::with_capacity(s.len()), 0usize, false);
    for c in s.chars() {
        match c {
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// One `key=value` parameter, read leniently.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Param {
    /// Lowercased name without comments or the RFC 2231 `*N*` suffix.
    pub(super) base: String,
    /// RFC 2231 continuation index.
    pub(super) index: Option<u32>,
    /// RFC 2231 extended (percent-encoded, charset'lang') value.
    pub(super) extended: bool,
    pub(super) value: String,
}

/// Parameters of a header value, split at `;` both respecting quotes and
/// ignoring them (readers disagree), so `name="a;.exe"` yields `a;.exe`
/// and also the pieces around the `;`.
pub(super) fn params(value: &str) -> Vec<Param> {
    let mut out = Vec::new();
    for respect_quotes in [true, false] {
        for piece in split_params(value, respect_quotes) {
            let Some((k, v)) = piece.split_once('=') else { continue };
            let key: String = strip_comments(k)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            let (base, index, extended) = match key.split_once('*') {
                None => (key.clone(), None, false),
                Some((b, rest)) => {
                    let extended = rest.ends_with('*') || rest.is_empty();
                    let index = rest.trim_end_matches('*').parse::<u32>().ok();
                    (b.to_string(), index, extended)
                }
            };
            let v = v.trim();
            let v = v.strip_prefix('"').map_or(v, |s| s.strip_suffix('"').unwrap_or(s));
            let p = Param {
                base,
                index,
                extended,
                value: v.replace("\\\"", "\"").replace("\\\\", "\\"),
            };
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

pub(super) fn split_params(value: &str, respect_quotes: bool) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if respect_quotes => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// Every plausible file name of a part: plain `name`/`filename` values,
/// RFC 2231 extended values, and continuations joined in index order and in
/// order of appearance, across Content-Type and Content-Disposition (and
/// repeated headers), with RFC 2047 encoded words decoded.
pub(super) fn filename_candidates(headers: &[(String, String)]) -> Vec<String> {
    let mut all: Vec<Param> = Vec::new();
    for (name, value) in headers {
        if name.starts_with("content-") {
            all.extend(
                params(value)
                    .into_iter()
                    .filter(|p| p.base == "name" || p.base == "filename"),
            );
        }
    }
    let mut out: Vec<String> = Vec::new();
    let decode_piece = |p: &Param, first: bool| -> Vec<u8> {
        if !p.extended {
            return p.value.as_bytes().to_vec();
        }
        let v = p.value.as_str();
        // charset'lang'value on the first (or only) piece.
        let v = if first || p.index.is_none() {
            v.splitn(3, '\'').nth(2).unwrap_or(v)
        } else {
            v
        };
        percent_decode(v)
    };
    let charset = |p: &Param| -> String {
        if p.extended && p.value.matches('\'').count() >= 2 {
            p.value.split('\'').next().unwrap_or("").to_ascii_lowercase()
        } else {
            String::new()
        }
    };
    for p in &all {
        let bytes = decode_piece(p, true);
        out.extend(text_readings(&bytes, &charset(p)));
    }
    for group in [vec!["name"], vec!["filename"], vec!["name", "filename"]] {
        let pieces: Vec<&Param> = all
            .iter()
            .filter(|p| p.index.is_some() && group.contains(&p.base.as_str()))
            .collect();
        if pieces.is_empty() {
            continue;
        }
        let cs = pieces
            .iter()
            .map(|p| charset(p))
            .find(|c| !c.is_empty())
            .unwrap_or_default();
        let mut sorted = pieces.clone();
        sorted.sort_by_key(|p| p.index);
        for order in [pieces, sorted] {
            let mut joined = Vec::new();
            for (i, p) in order.iter().enumerate() {
                joined.extend(decode_piece(p, i == 0 || p.index == Some(0)));
            }
            out.extend(text_readings(&joined, &cs));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A name's bytes read as text: UTF-8 (lossy), UTF-16 when the charset says
/// so or NULs suggest it, NULs dropped, RFC 2047 encoded words decoded.
fn text_readings(bytes: &[u8], charset: &str) -> Vec<String> {
    let mut out = vec![String::from_utf8_lossy(bytes).into_owned()];
    if charset.starts_with("utf-16") || bytes.contains(&0) {
        let be = charset.ends_with("be");
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| {
                let (a, b) = (c[0], c.get(1).copied().unwrap_or(0));
                if be {
                    u16::from_be_bytes([a, b])
                } else {
                    u16::from_le_bytes([a, b])
                }
            })
            .collect();
        out.push(String::from_utf16_lossy(&units));
        out.push(String::from_utf8_lossy(&bytes.iter().copied().filter(|&c| c != 0).collect::<Vec<_>>()).into_owned());
    }
    let decoded: Vec<String> = out
        .iter()
        .filter(|s| s.contains("=?"))
        .map(|s| decode_encoded_words(s))
        .collect();
    out.extend(decoded);
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex(c: &u8) -> Option<u8> {
    (*c as char).to_digit(16).map(|d| d as u8)
}

/// RFC 2047 `=?charset?B|Q?text?=` words, decoded as UTF-8 (lossy) or
/// Latin-1 when the charset says so; anything else is kept as it is.
fn decode_encoded_words(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("=?") {
        out.push_str(&rest[..start]);
        let word = &rest[start + 2..];
        let parts: Vec<&str> = word.splitn(3, '?').collect();
        let decoded = (parts.len() == 3)
            .then(|| {
                let (charset, enc, tail) = (parts[0], parts[1], parts[2]);
                let end = tail.find("?=")?;
                let text = &tail[..end];
                let bytes = match enc {
                    "b" | "B" => decode::base64_readings(text.as_bytes(), 4096).into_iter().next()?.data,
                    "q" | "Q" => {
                        decode::qp_readings(text.replace('_', " ").as_bytes(), 4096)
                            .into_iter()
                            .next()?
                            .data
                    }
                    _ => return None,
                };
                let text = if charset.to_ascii_lowercase().starts_with("iso-8859-1") {
                    bytes.iter().map(|&c| c as char).collect()
                } else {
                    String::from_utf8_lossy(&bytes).into_owned()
                };
                let consumed = start + 2 + charset.len() + enc.len() + 2 + end + 2;
                Some((text, consumed))
            })
            .flatten();
        match decoded {
            Some((text, consumed)) => {
                out.push_str(&text);
                rest = &rest[consumed..];
                // Whitespace between adjacent encoded words is dropped.
                if rest.trim_start().starts_with("=?") {
                    rest = rest.trim_start();
                }
            }
            None => {
                out.push_str("=?");
                rest = &rest[start + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}
