//! HTML reduced to text for the word tokens: tags and comments stripped
//! (tag names are tokens of their own), script and style content dropped,
//! character references decoded.

use super::*;

/// Reduce HTML to text: strip tags and comments, drop script/style content, decode entities.
/// Tag names are emitted as `tag:name` tokens.
pub(super) fn html_to_text(html: &str, out: &mut String, sink: &mut Sink) {
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
pub(super) fn find_ignore_ascii_case(hay: &str, needle: &str) -> Option<usize> {
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
pub(super) const ENTITIES: &[(&str, char)] = &[
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

pub(super) fn decode_entities(text: &str, out: &mut String) {
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
