//! Tokens from text: words (with word pairs, capitals, number shapes),
//! URLs and their parts.

use super::*;

/// Reused buffers of [`text_tokens`].
#[derive(Default)]
pub(super) struct WordBufs {
    word: String,
    lower: String,
    norm: String,
    prev: String,
}

/// The character starting at byte offset `i` of `text` (a character boundary) and its length in bytes.
#[inline]
pub(super) fn char_at(text: &str, i: usize) -> Option<(char, usize)> {
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
pub(super) fn text_tokens(text: &str, prefix: &str, sink: &mut Sink) {
    let mut bufs = std::mem::take(&mut sink.words);
    let bytes = text.as_bytes();
    let mut i = 0;
    // Whether `bufs.prev` holds the previous word (normalised) for pair tokens; cleared at paragraph breaks.
    let mut has_prev = false;
    let mut newlines = 0;
    while !sink.full() {
        i = skip_separators(bytes, i, &mut newlines);
        let Some((c, len)) = char_at(text, i) else {
            break;
        };
        if c.is_alphanumeric() || (c == '$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            if newlines >= 2 {
                has_prev = false;
            }
            newlines = 0;
            let span = scan_word(text, i, c, len);
            i = span.end;
            if span.nchars < MIN_WORD_LEN {
                // Too short: no tokens, and the previous word stays the pair partner.
                continue;
            }
            bufs.emit(text, &span, prefix, has_prev, sink);
            has_prev = true;
        } else if matches!(c, '!' | '$' | '?' | '*' | '%') {
            i = punctuation_run(bytes, i, c, prefix, sink);
        } else {
            if c == '\n' {
                newlines += 1;
            }
            i += len;
        }
    }
    sink.words = bufs;
}

/// Skips the ASCII separators from `i` (bytes that start neither a word nor a punctuation run), counting the
/// newlines among them; returns where the next character to look at starts.
#[inline]
fn skip_separators(bytes: &[u8], mut i: usize, newlines: &mut usize) -> usize {
    while let Some(&b) = bytes.get(i)
        && b.is_ascii()
        && !b.is_ascii_alphanumeric()
        && !matches!(b, b'!' | b'$' | b'?' | b'*' | b'%')
    {
        *newlines += usize::from(b == b'\n');
        i += 1;
    }
    i
}

/// Where a word is in the text: `start..end`, `nchars` characters.
struct WordSpan {
    start: usize,
    end: usize,
    nchars: usize,
    /// Whether it holds a typographic apostrophe (read as '\'').
    apostrophe: bool,
}

/// The word that starts at `start` with `c` (`len` bytes). Internal ' - . , join alphanumerics ("don't",
/// "e-mail", "1,000", "3.5"), a comma only between digits.
#[inline]
fn scan_word(text: &str, start: usize, c: char, len: usize) -> WordSpan {
    let bytes = text.as_bytes();
    let mut apostrophe = false;
    let mut nchars = 1;
    let mut last = c;
    let mut i = start + len;
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
    WordSpan {
        start,
        end: i,
        nchars,
        apostrophe,
    }
}

/// A run of the punctuation character `c` (ASCII) at `i`: three or more give a `p:` token. Returns where the
/// run ends.
#[inline]
fn punctuation_run(bytes: &[u8], mut i: usize, c: char, prefix: &str, sink: &mut Sink) -> usize {
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
    i
}

impl WordBufs {
    /// Emit the tokens of the word at `span` of `text` (at least [`MIN_WORD_LEN`] characters): the word, a
    /// trailing '!' form, and the pair with the previous word when `has_prev`; it becomes the previous word.
    #[inline]
    fn emit(&mut self, text: &str, span: &WordSpan, prefix: &str, has_prev: bool, sink: &mut Sink) {
        let WordBufs {
            word,
            lower,
            norm,
            prev,
        } = self;
        // The text of the word, except that a typographic apostrophe becomes '\''.
        let word = if span.apostrophe {
            word.clear();
            word.extend(
                text[span.start..span.end]
                    .chars()
                    .map(|c| if c == '\u{2019}' { '\'' } else { c }),
            );
            word.as_str()
        } else {
            &text[span.start..span.end]
        };
        push_lowercase_into(lower, word);
        // A trailing '!' stays attached as a separate signal ("free!").
        if text.as_bytes().get(span.end) == Some(&b'!') {
            sink.build(
                |b| {
                    b.push_str(prefix);
                    b.push_str(lower);
                    b.push('!');
                },
                Sink::push_clean,
            );
        }
        emit_word(word, lower, span.nchars, prefix, sink, norm);
        // A pair longer than a token may be is dropped: not built at all.
        if has_prev && prefix.len() + prev.len() + 1 + norm.len() <= MAX_TOKEN_LEN {
            sink.build(
                |b| {
                    b.push_str(prefix);
                    b.push_str(prev);
                    b.push(' ');
                    b.push_str(norm);
                },
                Sink::push_short_clean,
            );
        }
        std::mem::swap(prev, norm);
    }
}

/// `out` set to `word.to_lowercase()`.
pub(super) fn push_lowercase_into(out: &mut String, word: &str) {
    out.clear();
    push_lowercase(out, word);
}

/// Append `s.to_lowercase()` to `out` without allocating. Per character this is `char::to_lowercase`, except for
/// capital sigma, whose lowercase form depends on its position in the word (final 'ς'): that rare case is left to
/// `str::to_lowercase`.
pub(super) fn push_lowercase(out: &mut String, s: &str) {
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
pub(super) fn emit_word(word: &str, lower: &str, n: usize, prefix: &str, sink: &mut Sink, norm: &mut String) {
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
pub(super) fn is_capitals(word: &str) -> bool {
    if word.is_ascii() {
        !word.bytes().any(|b| b.is_ascii_lowercase()) && word.bytes().filter(u8::is_ascii_uppercase).count() >= 2
    } else {
        word.chars().all(|c| !c.is_lowercase()) && word.chars().filter(|c| c.is_uppercase()).count() >= 2
    }
}

/// Shape of a number: digit runs replaced by their length (capped at 9), separators kept ("555-123-4567" ->
/// "3-3-4", "1,000.00" -> "1,3.2").
#[cfg(test)]
pub(super) fn number_shape(s: &str) -> String {
    let mut out = String::new();
    number_shape_into(&mut out, s);
    out
}

/// [`number_shape`] appended to `out`.
pub(super) fn number_shape_into(out: &mut String, s: &str) {
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
pub(super) fn url_tokens(text: &str, sink: &mut Sink) {
    let mut lower = std::mem::take(&mut sink.url_lower);
    lower.clear();
    lower.push_str(text);
    lower.make_ascii_lowercase();
    lowercase_url_tokens(&lower, sink);
    sink.url_lower = lower;
}

/// [`url_tokens`] of the ASCII-lowercased text.
pub(super) fn lowercase_url_tokens(lower: &str, sink: &mut Sink) {
    let bytes = lower.as_bytes();
    let mut i = 0;
    let mut count = 0;
    while i < bytes.len() && count < MAX_URLS && !sink.full() {
        let Some(pos) = memchr_any(&bytes[i..]) else {
            break;
        };
        i += pos;
        let (skip, scheme) = match url_start(bytes, i) {
            UrlStart::Authority(skip, scheme) => (skip, scheme),
            UrlStart::Mailto => {
                sink.push("u:mailto");
                i += 7;
                continue;
            }
            UrlStart::Nothing => {
                i += 1;
                continue;
            }
        };
        let start = i + skip;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'.' | b'-' | b'@' | b'%' | b':' | b'_'))
        {
            end += 1;
        }
        if authority_tokens(&lower[start..end], scheme, sink) {
            count += 1;
            let path_end = path_end(lower, end);
            path_tokens(&lower[end.min(path_end)..path_end], sink);
            end = path_end;
        }
        i = end.max(i + 1);
    }
}

/// What starts at a position of [`lowercase_url_tokens`]'s text.
enum UrlStart {
    /// A URL whose authority starts this many bytes on, with its scheme token.
    Authority(usize, &'static str),
    /// `mailto:`.
    Mailto,
    /// No URL.
    Nothing,
}

/// What starts at `i` of `bytes` (ASCII-lowercased): `http://`, `https://`, `www.` (not inside a word),
/// `mailto:`, or nothing.
#[inline]
fn url_start(bytes: &[u8], i: usize) -> UrlStart {
    let rest = &bytes[i..];
    if rest.starts_with(b"http://") {
        UrlStart::Authority(7, "u:http")
    } else if rest.starts_with(b"https://") {
        UrlStart::Authority(8, "u:https")
    } else if rest.starts_with(b"www.") && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
        UrlStart::Authority(0, "u:bare")
    } else if rest.starts_with(b"mailto:") {
        UrlStart::Mailto
    } else {
        UrlStart::Nothing
    }
}

/// The tokens of a URL's authority (`[userinfo@]host[:port]`), preceded by its `scheme` token; nothing, and
/// `false`, when there is no host.
fn authority_tokens(authority: &str, scheme: &'static str, sink: &mut Sink) -> bool {
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((_, h)) => (true, h),
        None => (false, authority),
    };
    let (host, port) = match host_port.split_once(':') {
        Some((h, p)) => (h, !p.is_empty()),
        None => (host_port, false),
    };
    let host = host.trim_matches(|c| c == '.' || c == '-');
    if host.is_empty() {
        return false;
    }
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
    true
}

/// Where the path of a URL whose authority ends at `end` ends: at whitespace, a quote, '<', '>' or ')', after
/// at most 512 bytes (on a character boundary).
fn path_end(lower: &str, end: usize) -> usize {
    let bytes = lower.as_bytes();
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
    path_end
}

/// The tokens of a URL's path (query included): `u:pct`, `u:query`, and `up:` its first pieces, numbers and
/// letter/digit mixes reduced to their length.
fn path_tokens(path: &str, sink: &mut Sink) {
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
        } else if piece.len() > 20 || (piece.len() >= 8 && piece.bytes().filter(u8::is_ascii_digit).count() >= 3) {
            sink.push_with(|b| {
                b.push_str("up:mix:");
                push_decimal(b, bucket_len(piece.len()).max(1));
            });
        } else {
            sink.push2("up:", piece);
        }
    }
}

/// Position of the first byte that may start a URL ('h', 'w' or 'm').
pub(super) fn memchr_any(bytes: &[u8]) -> Option<usize> {
    memchr::memchr3(b'h', b'w', b'm', bytes)
}
