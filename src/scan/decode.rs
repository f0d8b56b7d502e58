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

    /// Appends as much of `s` as fits; false (and marks `truncated`) when
    /// not all of it did.
    fn extend(&mut self, s: &[u8]) -> bool {
        let n = s.len().min(self.1.saturating_sub(self.0.data.len()));
        self.0.data.extend_from_slice(&s[..n]);
        let all = n == s.len();
        self.0.truncated |= !all;
        all
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
        let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
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
    // Blanks after a line's last visible char are not inside it: they are
    // counted only once another visible char follows on the same line.
    let (mut pending, mut seen) = (0usize, false);
    for &c in input {
        match c {
            b'\r' | b'\n' => (pending, seen) = (0, false),
            b' ' | b'\t' => pending += usize::from(seen),
            _ if c.is_ascii_whitespace() => {}
            _ => {
                n += 1;
                good += usize::from(c == b'=' || b64_val(c).is_some());
                inner_ws += pending;
                (pending, seen) = (0, true);
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
        let bytes = self.acc.to_be_bytes();
        *self = Group::default();
        out.extend(&bytes[1..])
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

/// The standard decode of canonical base64 whose whitespace-separated
/// pieces all have a multiple of 4 chars (what [`base64_readings`] checks
/// first): a quad at a time. The same octets as the "stream" reading.
fn b64_canonical(input: &[u8], max_out: usize) -> Decoded {
    let mut out = Out::new(max_out, input.len() / 4 * 3 + 3);
    for token in input.split(|&c| is_ws(c)) {
        for q in token.chunks_exact(4) {
            let v = |c: u8| u32::from(B64_REV[usize::from(c)] & 0x3f);
            let x = (v(q[0]) << 18 | v(q[1]) << 12 | v(q[2]) << 6 | v(q[3])).to_be_bytes();
            // Padding ('=') only ends the last quad: "xy==" is one octet, "xyz=" two.
            let n = 3 - q.iter().filter(|&&c| c == b'=').count();
            if !out.extend(&x[1..1 + n]) {
                return out.0;
            }
        }
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
        return vec![b64_canonical(input, max_out)];
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
    while i < input.len() {
        // Up to the next '=' (or CR, when CRLF becomes LF) the text is
        // itself: copied as one run.
        let rest = &input[i..];
        let run = if lf {
            memchr::memchr2(b'=', b'\r', rest)
        } else {
            memchr::memchr(b'=', rest)
        }
        .unwrap_or(rest.len());
        if !out.extend(&rest[..run]) {
            break;
        }
        i += run;
        let Some(&c) = input.get(i) else { break };
        i += 1;
        if c == b'\r' {
            // A CR of a CRLF is left out; a lone CR stays.
            if input.get(i) != Some(&b'\n') && !out.push(c) {
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
    // Where every '=' is an uppercase escape or a soft break, the four
    // readings are one: it is decoded once.
    let modes: &[Qp] = if qp_has_invalid_escapes(input) {
        &[Qp::Lenient, Qp::StrictUpper, Qp::DropInvalid, Qp::StrictUpperDrop]
    } else {
        &[Qp::Lenient]
    };
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
mod tests;
