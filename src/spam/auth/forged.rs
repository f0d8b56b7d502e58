//! Forged `Authentication-Results` fields: those that claim to be ours
//! arrived with the message and are removed before ours is added (RFC 8601
//! §5).

use std::borrow::Cow;

/// Removes from the header section of `msg` every `Authentication-Results`
/// field whose authserv-id is `authserv_id` (ASCII case-insensitive, CFWS
/// and a version after it ignored), as RFC 8601 §5 requires of a border
/// MTA. Every other byte, line ending (CRLF or LF) and the body stay as
/// they are; nothing to remove gives `Cow::Borrowed`.
pub fn strip_forged_results<'a>(msg: &'a [u8], authserv_id: &str) -> Cow<'a, [u8]> {
    let mut remove: Vec<(usize, usize)> = Vec::new();
    // Start of the Authentication-Results field being read, if any.
    let mut field: Option<usize> = None;
    let mut pos = 0;
    loop {
        // The end of the message reads as a blank line.
        let line_end = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..line_end];
        let blank = line.is_empty() || line == b"\n" || line == b"\r\n";
        if blank || !matches!(line.first(), Some(b' ' | b'\t')) {
            // Not a continuation line: the previous field ends here.
            if let Some(start) = field.take()
                && is_ours(&msg[start..pos], authserv_id)
            {
                remove.push((start, pos));
            }
            if blank {
                break;
            }
            if is_auth_results_name(line) {
                field = Some(pos);
            }
        }
        pos = line_end;
    }
    if remove.is_empty() {
        return Cow::Borrowed(msg);
    }
    let removed: usize = remove.iter().map(|(s, e)| e - s).sum();
    let mut out = Vec::with_capacity(msg.len() - removed);
    let mut at = 0;
    for (s, e) in remove {
        out.extend_from_slice(&msg[at..s]);
        at = e;
    }
    out.extend_from_slice(&msg[at..]);
    Cow::Owned(out)
}

/// Whether a header line starts with the field name `Authentication-Results`
/// (any case; WSP before the colon is tolerated, RFC 5322 §4.5.3).
fn is_auth_results_name(line: &[u8]) -> bool {
    const NAME: &[u8] = b"authentication-results";
    line.len() > NAME.len()
        && line[..NAME.len()].eq_ignore_ascii_case(NAME)
        && line[NAME.len()..]
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            .is_some_and(|b| *b == b':')
}

/// Whether the authserv-id of a whole `Authentication-Results` field is `id`.
pub fn is_ours(field: &[u8], id: &str) -> bool {
    let Some(colon) = memchr::memchr(b':', field) else {
        return false;
    };
    let value = &field[colon + 1..];
    let mut i = skip_cfws(value, 0);
    let found: Vec<u8> = if value.get(i) == Some(&b'"') {
        // quoted-string
        let mut s = Vec::new();
        i += 1;
        loop {
            match value.get(i) {
                None => return false, // unterminated
                Some(b'"') => break,
                Some(b'\\') => {
                    if let Some(c) = value.get(i + 1) {
                        s.push(*c);
                    }
                    i += 2;
                }
                Some(b'\r' | b'\n') => i += 1, // folding
                Some(c) => {
                    s.push(*c);
                    i += 1;
                }
            }
        }
        s
    } else {
        let start = i;
        while let Some(c) = value.get(i) {
            if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b';' | b'"') {
                break;
            }
            i += 1;
        }
        value[start..i].to_vec()
    };
    !found.is_empty() && found.eq_ignore_ascii_case(id.trim().as_bytes())
}

/// Skips whitespace (folding included) and nested comments from `i`.
fn skip_cfws(v: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(c) = v.get(i) {
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    i
}
