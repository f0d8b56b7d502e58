//! Lenient decoders for mail transfer encodings, built for virus scanning.
//!
//! A broken or ambiguous encoding (base64 with padding or junk in odd places,
//! quoted-printable with invalid escapes, uuencode without `begin`, ...) is
//! read differently by different mail clients, and an attacker uses that to
//! hide an attachment from the scanner while some client still decodes it.
//! The policy here is "every plausible reading": for an ambiguous body each
//! distinct decoding a real client might produce is returned, and the caller
//! scans all of them. Every decoder is linear in its input, never panics on
//! any input, and stops at `max_out` output bytes per reading (`truncated`).

/// Result of a decode: bytes and whether `max_out` cut it short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub data: Vec<u8>,
    pub truncated: bool,
}

/// Output buffer bounded by `.1` bytes.
struct Out(Decoded, usize);

impl Out {
    fn new(max: usize, hint: usize) -> Self {
        let data = Vec::with_capacity(max.min(hint));
        Out(Decoded { data, truncated: false }, max)
    }

    /// Appends `b`; false (and marks `truncated`) when the limit is reached.
    fn push(&mut self, b: u8) -> bool {
        let room = self.0.data.len() < self.1;
        if room {
            self.0.data.push(b);
        }
        self.0.truncated |= !room;
        room
    }
}

const B64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HQX_ALPHABET: &[u8; 64] = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr";
const NO: u8 = 0xFF;

const fn reverse(alpha: &[u8; 64]) -> [u8; 256] {
    let mut t = [NO; 256];
    let mut i = 0;
    while i < 64 {
        t[alpha[i] as usize] = i as u8;
        i += 1;
    }
    t
}

static B64_REV: [u8; 256] = reverse(B64_ALPHABET);
static HQX_REV: [u8; 256] = reverse(HQX_ALPHABET);

fn val(table: &[u8; 256], c: u8) -> Option<u8> {
    let v = table[usize::from(c)];
    (v != NO).then_some(v)
}

fn b64_val(c: u8) -> Option<u8> {
    val(&B64_REV, c)
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Lines split at CRLF, lone LF and lone CR (line ends not included).
fn lines(input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = input;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|b| b"\r\n".contains(b)).unwrap_or(rest.len());
        let (line, tail) = rest.split_at_checked(end)?;
        let skip = match tail {
            [b'\r', b'\n', ..] => 2,
            [] => 0,
            _ => 1,
        };
        rest = tail.get(skip..).unwrap_or_default();
        Some(line)
    })
}

/// Keeps the first of equal readings (merging `truncated`) and drops empty
/// readings when a non-empty one exists, so the result is never empty.
fn dedup(all: impl IntoIterator<Item = Decoded>) -> Vec<Decoded> {
    let mut res: Vec<Decoded> = Vec::new();
    for d in all {
        match res.iter_mut().find(|p| p.data == d.data) {
            Some(p) => p.truncated |= d.truncated,
            None => res.push(d),
        }
    }
    if res.iter().any(|d| !d.data.is_empty()) {
        res.retain(|d| !d.data.is_empty());
    }
    res
}

// ---------------------------------------------------------------- base64

/// True when `input` is canonical base64: after removing ASCII whitespace
/// (space, tab, CR, LF) only alphabet chars remain, with at most two '='
/// and only at the very end, and the length is a multiple of 4.
pub fn is_canonical_base64(input: &[u8]) -> bool {
    let (mut n, mut pad) = (0usize, 0usize);
    for &c in input.iter().filter(|&&c| !is_ws(c)) {
        n += 1;
        if c == b'=' {
            pad += 1;
        } else if pad > 0 || b64_val(c).is_none() {
            return false;
        }
    }
    pad <= 2 && n.is_multiple_of(4)
}

/// Heuristic: the text is mostly base64 (e.g. >= 90 % of non-whitespace
/// bytes are in the base64 alphabet or '=', at least 16 of them, few
/// spaces inside lines). Used on parts with unknown/missing encoding.
///
/// "Few" is at most one space/tab inside a line per 10 non-whitespace bytes
/// (prose has about one per 5).
pub fn looks_like_base64(input: &[u8]) -> bool {
    // Judged on the start of the text: a reader decides from the start too.
    let input = &input[..input.len().min(SAMPLE)];
    let (mut n, mut good, mut inner_ws) = (0usize, 0usize, 0usize);
    for line in lines(input) {
        for &c in line.trim_ascii() {
            if c == b' ' || c == b'\t' {
                inner_ws += 1;
            } else if !c.is_ascii_whitespace() {
                n += 1;
                if c == b'=' || b64_val(c).is_some() {
                    good += 1;
                }
            }
        }
    }
    n >= 16 && good * 10 >= n * 9 && inner_ws * 10 <= n
}

/// How much of a text the `looks_like_*` guesses read when there is no
/// marker to search for.
const SAMPLE: usize = 8192;

/// A group of up to four 6-bit values.
#[derive(Default)]
struct Group {
    acc: u32,
    n: u8,
}

impl Group {
    /// Adds a value; a full group gives three bytes. False when `out` is full.
    fn push(&mut self, v: u8, out: &mut Out) -> bool {
        self.acc = (self.acc << 6) | u32::from(v);
        self.n += 1;
        if self.n < 4 {
            return true;
        }
        let [_, a, b, c] = self.acc.to_be_bytes();
        *self = Group::default();
        out.push(a) && out.push(b) && out.push(c)
    }

    /// Decodes an incomplete group as far as it gives whole bytes; clears it.
    fn flush(&mut self, out: &mut Out) -> bool {
        let ok = match self.n {
            2 => out.push((self.acc >> 4) as u8),
            3 => out.push((self.acc >> 10) as u8) && out.push((self.acc >> 2) as u8),
            _ => true,
        };
        *self = Group::default();
        ok
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum B64 {
    /// Every alphabet char in order, everything else ignored.
    Stream,
    /// Tokens split at whitespace and '=' runs, each decoded on its own.
    Tokens,
    /// Whitespace skipped; stops at the first other non-alphabet char or '='.
    Strict,
    /// Like `Tokens` but split only at line ends and '=' (spaces are junk).
    Lines,
}

fn b64_decode(input: &[u8], max_out: usize, mode: B64) -> Decoded {
    let mut out = Out::new(max_out, input.len() / 4 * 3 + 3);
    let mut g = Group::default();
    let mut ok = true;
    for &c in input {
        ok = match (b64_val(c), mode, c) {
            (Some(v), ..) => g.push(v, &mut out),
            (None, B64::Strict, b' ' | b'\t' | b'\r' | b'\n') => true,
            (None, B64::Strict, _) => break,
            (None, B64::Tokens | B64::Lines, b'=') => g.flush(&mut out),
            (None, B64::Tokens | B64::Lines, b'\r' | b'\n') | (None, B64::Tokens, b' ' | b'\t') => {
                g = Group::default();
                true
            }
            _ => true,
        };
        if !ok {
            break;
        }
    }
    if ok && matches!(mode, B64::Stream | B64::Strict) {
        g.flush(&mut out);
    }
    out.0
}

/// All distinct plausible base64 readings (deduplicated, at most 4; empty
/// readings only when nothing else decodes). Canonical input whose
/// whitespace-separated pieces all have a multiple of 4 chars (what every
/// encoder writes) gives exactly one reading, the standard decode: every
/// reader agrees on it. Otherwise (e.g. `QUJDXX` on an even number of lines
/// is canonical by count but not per line), in this order:
///  A "stream": every alphabet char in order, everything else (incl. '=')
///    ignored; a trailing incomplete group decoded as far as it gives bytes.
///  B "chunks": tokens split at whitespace/line ends and at runs of '=',
///    each decoded on its own: full quads decoded, a trailing incomplete
///    group only when '=' follows it (`UEsDXX` lines give the `UEsD` quad, a
///    lone `AB` junk line gives nothing). Other junk inside a token is skipped.
///  C "strict-stop": whitespace skipped, stops at the first other invalid
///    char or at padding (what a strict decoder returns up to its error).
///  D "line chunks": like B, but only line ends and '=' split tokens (for
///    whitespace inside lines combined with junk at line ends).
///
/// Only the standard alphabet (`+/`) is used; URL-safe `-_` count as junk.
pub fn base64_readings(input: &[u8], max_out: usize) -> Vec<Decoded> {
    if is_canonical_base64(input) && input.split(|&c| is_ws(c)).all(|t| t.len().is_multiple_of(4)) {
        return vec![b64_decode(input, max_out, B64::Stream)];
    }
    dedup([B64::Stream, B64::Tokens, B64::Strict, B64::Lines].map(|m| b64_decode(input, max_out, m)))
}

// ------------------------------------------------------ quoted-printable

fn hex_val(c: u8, any_case: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' if any_case => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Length of a soft break after an '=' (blanks, then a line end or the end
/// of input), not counting the '='; None when `rest` does not start one.
fn soft_break(rest: &[u8]) -> Option<usize> {
    let ws = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    match rest.get(ws..)? {
        [] | [b'\n', ..] => Some((ws + 1).min(rest.len())),
        [b'\r', b'\n', ..] => Some(ws + 2),
        [b'\r', ..] => Some(ws + 1),
        _ => None,
    }
}

/// True when the text contains quoted-printable escapes (=XX hex, any case)
/// or soft line breaks ('=' before a line end, blanks allowed in between).
pub fn looks_like_qp(input: &[u8]) -> bool {
    let mut rest = input;
    while let Some(p) = rest.iter().position(|&b| b == b'=') {
        rest = rest.get(p + 1..).unwrap_or_default();
        let hex = matches!(rest, [h, l, ..] if hex_val(*h, true).is_some() && hex_val(*l, true).is_some());
        let soft = matches!(rest.iter().find(|&&b| b != b' ' && b != b'\t'), Some(b'\r' | b'\n'));
        if hex || soft {
            return true;
        }
    }
    false
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Qp {
    Lenient,
    StrictUpper,
    DropInvalid,
    /// Only uppercase escapes are valid; any other `=XX` is dropped.
    StrictUpperDrop,
}

/// `lf`: hard line breaks (CRLF in the text) come out as a bare LF, as a
/// Unix mail client writes them.
fn qp_decode(input: &[u8], max_out: usize, mode: Qp, lf: bool) -> Decoded {
    let mut out = Out::new(max_out, input.len());
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        i += 1;
        if lf && c == b'\r' && input.get(i) == Some(&b'\n') {
            continue;
        }
        if c != b'=' {
            if !out.push(c) {
                break;
            }
            continue;
        }
        let rest = input.get(i..).unwrap_or_default();
        if let Some(n) = soft_break(rest) {
            i += n;
            continue;
        }
        let any = !matches!(mode, Qp::StrictUpper | Qp::StrictUpperDrop);
        if let [h, l, ..] = rest
            && let (Some(h), Some(l)) = (hex_val(*h, any), hex_val(*l, any))
        {
            i += 2;
            if !out.push((h << 4) | l) {
                break;
            }
        } else if matches!(mode, Qp::DropInvalid | Qp::StrictUpperDrop) {
            i += rest.iter().take(2).take_while(|&&b| b != b'\r' && b != b'\n').count();
        } else if !out.push(b'=') {
            break;
        }
    }
    out.0
}

/// True when some `=` is neither an uppercase `=XX` escape nor a soft line
/// break: readers disagree on such text.
pub fn qp_has_invalid_escapes(input: &[u8]) -> bool {
    let mut rest = input;
    while let Some(p) = memchr::memchr(b'=', rest) {
        rest = rest.get(p + 1..).unwrap_or_default();
        let upper = matches!(rest, [h, l, ..] if hex_val(*h, false).is_some() && hex_val(*l, false).is_some());
        if !upper && soft_break(rest).is_none() {
            return true;
        }
    }
    false
}

/// All distinct plausible quoted-printable readings (deduplicated, at most 8):
///  1 lenient: `=` + two hex digits of ANY case decoded; `=` at line end
///    (blanks allowed before the line end; also at the end of input) is a
///    soft break and removed; any other `=` kept literally.
///  2 strict-upper: only uppercase hex escapes decoded, others kept literally.
///  3 drop-invalid: like 1, but an `=` followed by anything that is not two
///    hex digits and not a line end is dropped together with the next two
///    chars (when present and not line ends).
///  4 strict-upper-drop: like 3, but only uppercase escapes are valid, so
///    `=0a` is dropped.
///
/// When the text has CRLF line ends, each again with hard line breaks
/// written as a bare LF (how a Unix client stores the decoded part).
///
/// CRLF, lone LF and lone CR are line ends; hard line breaks are kept as the
/// original bytes.
pub fn qp_readings(input: &[u8], max_out: usize) -> Vec<Decoded> {
    let modes = [Qp::Lenient, Qp::StrictUpper, Qp::DropInvalid, Qp::StrictUpperDrop];
    let mut all: Vec<Decoded> = modes.iter().map(|&m| qp_decode(input, max_out, m, false)).collect();
    if memchr::memmem::find(input, b"\r\n").is_some() {
        all.extend(modes.iter().map(|&m| qp_decode(input, max_out, m, true)));
    }
    dedup(all)
}

// -------------------------------------------------------------- uuencode

fn uu_val(c: u8) -> Option<u8> {
    (0x20..=0x60).contains(&c).then(|| (c - 0x20) & 0x3f)
}

/// A uuencode data line: its byte count (1..=45) and the chars after the
/// length char, all in the uu range as far as the count needs. `strict`
/// also wants the length to fit (no missing chars, at most 2 extra);
/// otherwise missing trailing chars and any trailing junk are accepted.
fn uu_line(line: &[u8], strict: bool) -> Option<(usize, &[u8])> {
    let (&c, body) = line.split_first()?;
    let n = usize::from(uu_val(c)?);
    let full = n.div_ceil(3) * 4;
    let fits = if strict {
        ((n * 4).div_ceil(3)..=full + 2).contains(&body.len())
    } else {
        body.len() >= 2
    };
    let ok = (1..=45).contains(&n) && fits && body.iter().take(full).all(|&b| uu_val(b).is_some());
    ok.then_some((n, body))
}

/// `begin NNN name`: 1 to 4 octal digits, then a blank.
fn is_begin(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"begin ") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| (b'0'..=b'7').contains(*b)).count();
    (1..=4).contains(&digits) && matches!(rest.get(digits), Some(b' ' | b'\t'))
}

/// True when a `begin NNN name` line exists, or the text has at least two
/// consecutive lines that are valid uuencode lines (length char 1..=45 and
/// the line length fits it, e.g. 'M' lines of length 61).
pub fn looks_like_uu(input: &[u8]) -> bool {
    // A `begin` line anywhere (text, then an uuencoded file, is classic).
    let begin = memchr::memmem::find_iter(input, b"begin ").any(|p| {
        (p == 0 || matches!(input.get(p - 1), Some(b'\n' | b'\r'))) && lines(&input[p..]).next().is_some_and(is_begin)
    });
    if begin {
        return true;
    }
    // Bare uu lines: judged on the start of the text.
    let mut prev = false;
    for line in lines(&input[..input.len().min(SAMPLE)]) {
        let ok = uu_line(line, true).is_some();
        if ok && prev {
            return true;
        }
        prev = ok;
    }
    false
}

/// Decodes uuencode. Starts after a `begin ` line if there is one, else at
/// the first valid uu line; stops at `end`, at a line whose length char is
/// '`' or ' ' (zero length), or at the end of input. Lines that are not uu
/// lines are skipped. Missing trailing chars count as 0, trailing junk is
/// ignored. None when nothing decodes.
pub fn uudecode(input: &[u8], max_out: usize) -> Option<Decoded> {
    let mut it = lines(input);
    let mut first = None;
    if lines(input).any(is_begin) {
        it.by_ref().find(|l| is_begin(l));
    } else {
        first = Some(it.by_ref().find(|l| uu_line(l, true).is_some())?);
    }
    let mut out = Out::new(max_out, input.len());
    for line in first.into_iter().chain(it) {
        if line.trim_ascii_end() == b"end" || matches!(line.first(), Some(b' ' | b'`')) {
            break;
        }
        let Some((n, body)) = uu_line(line, false) else {
            continue;
        };
        // whole groups (missing chars are 0), cut to the line's byte count
        let (mut bytes, mut g) = (Out::new(n, n), Group::default());
        let vals = body.iter().map(|&b| uu_val(b).unwrap_or(0)).chain(std::iter::repeat(0));
        for v in vals.take(n.div_ceil(3) * 4) {
            g.push(v, &mut bytes);
        }
        if !bytes.0.data.into_iter().all(|b| out.push(b)) {
            break;
        }
    }
    (!out.0.data.is_empty() || out.0.truncated).then_some(out.0)
}

// ---------------------------------------------------------------- BinHex

const HQX_MARKER: &[u8] = b"(This file must be converted with BinHex";

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    memchr::memchr_iter(first, hay).find(|&p| {
        hay.get(p..p + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// True when the text contains "(This file must be converted with BinHex"
/// (ASCII case ignored).
pub fn looks_like_binhex(input: &[u8]) -> bool {
    find_ci(input, HQX_MARKER).is_some()
}

fn be(s: &mut impl Iterator<Item = u8>, n: usize) -> Option<u32> {
    (0..n).try_fold(0u32, |v, _| Some((v << 8) | u32::from(s.next()?)))
}

fn copy(s: &mut impl Iterator<Item = u8>, len: u32, out: &mut Out) -> Option<()> {
    (0..len).all(|_| s.next().is_some_and(|b| out.push(b))).then_some(())
}

/// Header, then data fork, CRC, resource fork. None where the stream ends.
fn hqx_forks(s: &mut impl Iterator<Item = u8>, out: &mut Out) -> Option<()> {
    // name, version, type, creator, flags
    let skip = usize::from(s.next()?) + 11;
    (s.by_ref().take(skip).count() == skip).then_some(())?;
    let dlen = be(s, 4)?;
    let rlen = be(s, 4)?;
    be(s, 2)?;
    copy(s, dlen, out)?;
    be(s, 2)?;
    copy(s, rlen, out)
}

/// Decodes BinHex 4.0: the text between the first ':' after the marker line
/// (without a marker: the first ':' at a line start) and the next ':' (or
/// the end of input). Whitespace and other non-alphabet chars are skipped;
/// then RLE, then the header; CRCs are not checked. Returns the data fork
/// followed by the resource fork, also when cut short (partial data is still
/// scannable). None if there is no ':' section.
pub fn binhex_decode(input: &[u8], max_out: usize) -> Option<Decoded> {
    let start = match find_ci(input, HQX_MARKER) {
        Some(m) => {
            let tail = input.get(m..)?;
            let eol = m + tail.iter().position(|&b| b == b'\n' || b == b'\r')?;
            eol + input.get(eol..)?.iter().position(|&b| b == b':')?
        }
        None => (0..input.len())
            .find(|&i| input.get(i) == Some(&b':') && (i == 0 || matches!(input.get(i - 1), Some(b'\n' | b'\r'))))?,
    };
    let body = input.get(start + 1..)?;
    let body = body.split(|&b| b == b':').next().unwrap_or_default();
    // 6-bit chars to bytes (bounded by the input size), then RLE expansion:
    // `0x90 n` repeats the previous byte n-1 more times, `0x90 0` is 0x90.
    let (mut bytes, mut g) = (Out::new(usize::MAX, body.len()), Group::default());
    for v in body.iter().filter_map(|&c| val(&HQX_REV, c)) {
        g.push(v, &mut bytes);
    }
    g.flush(&mut bytes);
    let (mut raw, mut prev, mut repeat) = (bytes.0.data.into_iter(), 0u8, 0u8);
    let mut stream = std::iter::from_fn(move || {
        loop {
            if repeat > 0 {
                repeat -= 1;
                return Some(prev);
            }
            match raw.next()? {
                0x90 => match raw.next()? {
                    0 => (prev, repeat) = (0x90, 1),
                    n => repeat = n - 1,
                },
                b => (prev, repeat) = (b, 1),
            }
        }
    });
    let mut out = Out::new(max_out, body.len());
    let _ = hqx_forks(&mut stream, &mut out);
    Some(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Vec<u8> {
        (0..300u32).map(|i| (i * 7 + i / 13) as u8).collect()
    }

    /// 6-bit encoder: 4 chars per 3 bytes; after the last data char the
    /// group is filled with `pad` (or left short when None).
    fn enc6(data: &[u8], alpha: &dyn Fn(u8) -> char, pad: Option<char>) -> String {
        let mut s = String::new();
        for ch in data.chunks(3) {
            let v = (0..3).fold(0u32, |a, i| a << 8 | u32::from(ch.get(i).copied().unwrap_or(0)));
            for i in 0..4 {
                let c = (i < (ch.len() * 8).div_ceil(6)).then(|| alpha((v >> (18 - 6 * i) & 63) as u8));
                s.extend(c.or(pad));
            }
        }
        s
    }

    fn b64(data: &[u8]) -> String {
        enc6(data, &|x| B64_ALPHABET[usize::from(x)] as char, Some('='))
    }

    fn uu(data: &[u8]) -> String {
        let alpha = |x: u8| if x == 0 { '`' } else { char::from(x + 0x20) };
        let line = |l: &[u8]| format!("{}{}\n", char::from(l.len() as u8 + 0x20), enc6(l, &alpha, Some('`')));
        data.chunks(45).map(line).collect()
    }

    /// Inserts `ins` after every `n` chars.
    fn every(s: &str, n: usize, ins: &str) -> String {
        let piece = |(i, c): (usize, char)| if i % n == n - 1 { format!("{c}{ins}") } else { c.into() };
        s.chars().enumerate().map(piece).collect()
    }

    fn has(readings: &[Decoded], want: &[u8]) -> bool {
        readings.iter().any(|r| r.data == want)
    }

    fn dec(data: &[u8], truncated: bool) -> Decoded {
        Decoded {
            data: data.to_vec(),
            truncated,
        }
    }

    #[test]
    fn canonical_base64_gives_one_reading() {
        let p = payload();
        for data in [&p[..], &p[..299], &p[..298], b"".as_slice(), b"M".as_slice()] {
            let text = every(&b64(data), 76, "\r\n");
            assert!(is_canonical_base64(text.as_bytes()));
            assert_eq!(base64_readings(text.as_bytes(), 1 << 20), [dec(data, false)]);
        }
        for bad in [&b"QQ=A"[..], b"Q===", b"QUJ", b"QU%D", b"===="] {
            assert!(!is_canonical_base64(bad));
        }
    }

    #[test]
    fn base64_tricks_yield_the_payload() {
        let (p, enc) = (payload(), b64(&payload()));
        let tricks = [
            every(&every(&enc, 4, "="), 75, "\n"),
            every(&enc, 4, "=\n"),
            every(&enc, 72, "XX\n"),
            every(&enc, 72, "XX\r\n") + "XX",
            format!("AB\n\n{}", every(&enc, 76, "\n")),
            every(&every(&enc, 7, "\n"), 5, "\r\n"),
            every(&every(&enc, 5, " "), 70, "\n"),
            every(&every(&enc, 5, " "), 72, "Q\n"),
            every(&every(&enc, 3, "%"), 76, "\r\n"),
            every(&enc, 76, "!\r"),
        ];
        for t in &tricks {
            let r = base64_readings(t.as_bytes(), 1 << 20);
            assert!(has(&r, &p) && r.len() <= 4, "no reading gives the payload for {t:?}");
        }
        assert!(is_canonical_base64(every(&enc, 76, "\r").as_bytes()));
    }

    #[test]
    fn base64_reading_kinds() {
        let r = base64_readings(b"QUJD%REVG", 100);
        assert!(has(&r, b"ABCDEF") && has(&r, b"ABC"));
        let r = base64_readings(b"QQ==QUI=", 100);
        assert!(has(&r, b"AAB") && has(&r, b"A"));
        // canonical by count (12 chars), yet a per-line reader sees junk
        let r = base64_readings(b"QUJDXX\nREVGXX\n", 100);
        assert!(is_canonical_base64(b"QUJDXX\nREVGXX\n") && has(&r, b"ABCDEF"));
        assert_eq!(base64_readings(b"QUJD\nREVG\r\nRw==", 100).len(), 1);
        assert_eq!(base64_readings(b"%%%", 10), [dec(b"", false)]);
    }

    #[test]
    fn base64_truncation() {
        let (p, text) = (payload(), b64(&payload()));
        assert_eq!(base64_readings(text.as_bytes(), 10), [dec(&p[..10], true)]);
        assert_eq!(base64_readings(text.as_bytes(), 300), [dec(&p, false)]);
        let r = base64_readings(format!("{text}%").as_bytes(), 7);
        assert!(r.iter().all(|d| d.data.len() <= 7 && d.truncated));
    }

    #[test]
    fn base64_detection() {
        assert!(looks_like_base64(every(&b64(&payload()), 76, "\n").as_bytes()));
        assert!(looks_like_base64(b"UEsD=BBQA=AgAI=AAAA="));
        assert!(!looks_like_base64(b"Hello world, this is an ordinary text message.\n"));
        assert!(!looks_like_base64(b"QUJD"));
    }

    #[test]
    fn qp_readings_cover_variants() {
        // Lowercase escapes dropped, uppercase decoded.
        assert!(qp_readings(b"=0a=41=\n=0a=42", 100).contains(&dec(b"AB", false)));
        let r = qp_readings(b"=0a=41=\n", 100);
        assert!(r.len() == 3 && has(&r, b"\nA") && has(&r, b"=0aA") && has(&r, b"A"));
        let r = qp_readings(b"a=Hhb", 100);
        assert!(r.len() == 2 && has(&r, b"a=Hhb") && has(&r, b"ab"));
        let r = qp_readings(b"x=4", 100);
        assert!(has(&r, b"x=4") && has(&r, b"x"));
        let r = qp_readings(b"a=G\r\nb", 100);
        assert!(has(&r, b"a=G\r\nb") && has(&r, b"a\r\nb"));
        let r = qp_readings(b"ab= \t\rcd=\r\nef=\ngh\r\nij\rk\n=", 100);
        assert_eq!(
            r,
            [dec(b"abcdefgh\r\nij\rk\n", false), dec(b"abcdefgh\nij\rk\n", false)],
            "as sent, and with hard breaks as LF"
        );
        assert_eq!(qp_readings(b"=3D=E9", 100).len(), 1);
        assert_eq!(qp_readings(b"", 100), [dec(b"", false)]);
        assert_eq!(qp_readings(b"=41=42=43", 2), [dec(b"AB", true)]);
    }

    #[test]
    fn qp_detection() {
        assert!(looks_like_qp(b"caf=e9") && looks_like_qp(b"long line= \r\nnext"));
        assert!(!looks_like_qp(b"a = b, c=d") && !looks_like_qp(b"ends with ="));
    }

    #[test]
    fn uudecode_with_and_without_begin() {
        let (p, body) = (payload(), uu(&payload()));
        let full = format!("Hi, see attached.\n\nbegin 644 x.zip\n{body}`\nend\ntrailer M text\n");
        assert!(looks_like_uu(full.as_bytes()) && looks_like_uu(body.as_bytes()));
        let crlf = format!("text\r\n{}", body.replace('\n', "\r\n"));
        for text in [&full, &body, &crlf] {
            assert_eq!(uudecode(text.as_bytes(), 1 << 20), Some(dec(&p, false)));
        }
        assert_eq!(uudecode(body.as_bytes(), 50), Some(dec(&p[..50], true)));
        assert!(uudecode(b"Hello world\nnothing here\n", 100).is_none());
        assert!(!looks_like_uu(b"Hello world\nnothing here\n"));
    }

    #[test]
    fn uudecode_tolerates_missing_and_junk() {
        let data = [1u8, 2, 3, 9, 0, 0, 0, 0, 0];
        let (short, xyz) = (uu(&data), uu(b"xyz"));
        let (short, xyz) = (short.trim_end().trim_end_matches('`'), xyz.trim_end());
        let text = format!("begin 600 a\n{short}\nnot uu\n{xyz}XYZ\n`\nend\n");
        let want = [&data[..], b"xyz"].concat();
        assert_eq!(uudecode(text.as_bytes(), 100), Some(dec(&want, false)));
    }

    fn hqx_header(name: &[u8], dlen: u32, rlen: u32) -> Vec<u8> {
        let lens = [dlen.to_be_bytes(), rlen.to_be_bytes()].concat();
        [&[name.len() as u8], name, b"\0TEXTttxt\0\0", &lens, &[0x12, 0x34]].concat()
    }

    fn hqx_text(raw: &[u8]) -> String {
        let lines = every(&enc6(raw, &|x| HQX_ALPHABET[usize::from(x)] as char, None), 64, "\n");
        format!("(This file must be converted with BinHex 4.0)\n\n:{lines}:\n")
    }

    #[test]
    fn binhex_round_trip() {
        assert_eq!(reverse(HQX_ALPHABET).iter().filter(|&&v| v != NO).count(), 64);
        let p = payload();
        let mut raw = hqx_header(b"evil.exe", 300, 4);
        raw.extend(p.iter().chain(b"\xAB\xCDRSRC\0\0"));
        let escape = |&x: &u8| [x].into_iter().chain((x == 0x90).then_some(0));
        let escaped: Vec<u8> = raw.iter().flat_map(escape).collect();
        assert!(escaped.len() > raw.len());
        let text = hqx_text(&escaped);
        assert!(looks_like_binhex(text.as_bytes()) && !looks_like_binhex(b"plain text"));
        let want = Some(dec(&[&p[..], b"RSRC"].concat(), false));
        assert_eq!(binhex_decode(text.as_bytes(), 1 << 20), want);
        assert_eq!(binhex_decode(&text.as_bytes()[46..], 1 << 20), want);
        assert_eq!(binhex_decode(text.as_bytes(), 5), Some(dec(&p[..5], true)));
        let d = binhex_decode(&text.as_bytes()[..text.len() / 2], 1 << 20).unwrap();
        assert!(!d.data.is_empty() && p.starts_with(&d.data));
        assert!(binhex_decode(b"no colon section here", 100).is_none());
    }

    #[test]
    fn binhex_rle() {
        let data = [b"x".as_slice(), &[b'A'; 10], &[0x90, 0x90, 0x90], b"y"].concat();
        let enc = [b"xA".as_slice(), &[0x90, 10, 0x90, 0, 0x90, 3, 0x90, 1], b"y"].concat();
        let raw = [hqx_header(b"r", data.len() as u32, 0), enc, vec![0, 0, 0, 0]].concat();
        assert_eq!(binhex_decode(hqx_text(&raw).as_bytes(), 100), Some(dec(&data, false)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let special = b"=\r\n \tAMQ`:!%09aFbegin 644 x\nend(This file must be converted with BinHex)\x90";
        // two thirds interesting chars, one third any byte
        let pick = |r: u64| special.get((r >> 8) as usize % 120).copied().unwrap_or(r as u8);
        for _ in 0..4000 {
            let len = (next() % 300) as usize;
            let input: Vec<u8> = (0..len).map(|_| pick(next())).collect();
            let _ = [
                is_canonical_base64(&input),
                looks_like_base64(&input),
                looks_like_qp(&input),
            ];
            let _ = [looks_like_uu(&input), looks_like_binhex(&input)];
            for m in [(next() % 64) as usize, 1 << 16] {
                let b = base64_readings(&input, m);
                assert!(!b.is_empty() && b.len() <= 4 && b.iter().all(|d| d.data.len() <= m));
                let q = qp_readings(&input, m);
                assert!(!q.is_empty() && q.len() <= 8 && q.iter().all(|d| d.data.len() <= m));
                assert!(uudecode(&input, m).is_none_or(|d| d.data.len() <= m));
                assert!(binhex_decode(&input, m).is_none_or(|d| d.data.len() <= m));
            }
        }
    }
}
