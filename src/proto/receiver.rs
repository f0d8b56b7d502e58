//! Sans-IO receivers: bytes in, framed items out.
//!
//! * [`LineReceiver`] frames command lines, capping their length; an
//!   oversize line is swallowed up to its newline and reported once.
//! * [`DataReceiver`] frames a DATA body: it ends only at `CRLF . CRLF`
//!   where both CRLFs are real (none of the SMTP smuggling end-of-data
//!   variants ends it), removes dot-stuffing, and checks the body.
//! * [`BdatReceiver`] takes exactly the announced number of octets.
//!
//! Each `ingest` returns how many input bytes it consumed; the caller keeps
//! the rest for the next call (pipelined commands after the body).

use memchr::{memchr, memchr2};

/// The known SMTP smuggling end-of-data variants (Hanno Böck's `smtpsmug`,
/// SEC Consult). None of them ends DATA in [`DataReceiver`]; the test suites
/// and fuzz seeds use this list.
pub const SMUGGLING_VECTORS: [&[u8]; 12] = [
    b"\n.\n",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
];

/// Result of feeding bytes to [`LineReceiver`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line without its terminator.
    Complete(&'a [u8]),
    /// A line longer than the limit was discarded up to its newline.
    TooLong,
    /// No complete line yet.
    NeedsMoreData,
}

/// Frames command lines terminated by LF (CR before it is stripped).
#[derive(Debug)]
pub struct LineReceiver {
    max_len: usize,
    /// Swallowing the remainder of an oversize line.
    swallowing: bool,
}

impl LineReceiver {
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            swallowing: false,
        }
    }

    /// Whether the rest of an oversize line is being skipped (a line is
    /// in progress although nothing of it is buffered).
    pub fn swallowing(&self) -> bool {
        self.swallowing
    }

    /// Looks for one line at the start of `buf`. Returns the item and the
    /// number of bytes consumed.
    pub fn ingest<'a>(&mut self, buf: &'a [u8]) -> (Line<'a>, usize) {
        match memchr(b'\n', buf) {
            Some(nl) => {
                if self.swallowing || nl > self.max_len {
                    self.swallowing = false;
                    return (Line::TooLong, nl + 1);
                }
                let line = &buf[..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                (Line::Complete(line), nl + 1)
            }
            None if buf.len() > self.max_len || self.swallowing => {
                self.swallowing = true;
                (Line::NeedsMoreData, buf.len())
            }
            None => (Line::NeedsMoreData, 0),
        }
    }
}

/// Limits applied to a message body while it streams in.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted, in octets (after dot-unstuffing).
    pub max_size: usize,
    /// Longest line, in octets without CRLF.
    pub max_line: usize,
}

/// What was wrong with a received body. The first problem found wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    TooBig,
    LineTooLong,
    BareNewline,
}

/// Tracks line structure over a body that arrives in pieces: bare CR or LF
/// and line length, without copying.
#[derive(Debug, Default)]
pub struct BodyChecker {
    /// The previous chunk ended in CR, so a leading LF completes a CRLF.
    pending_cr: bool,
    line_len: usize,
    pub bare: bool,
    pub longest_line: usize,
}

impl BodyChecker {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        if self.pending_cr {
            self.pending_cr = false;
            if chunk[0] == b'\n' {
                self.line_len = 0;
                chunk = &chunk[1..];
            } else {
                self.bare = true;
            }
        }
        while let Some(i) = memchr2(b'\r', b'\n', chunk) {
            self.line_len += i;
            self.longest_line = self.longest_line.max(self.line_len);
            if chunk[i] == b'\n' {
                // LF without CR before it.
                self.bare = true;
                self.line_len = 0;
                chunk = &chunk[i + 1..];
            } else if i + 1 == chunk.len() {
                self.pending_cr = true;
                return;
            } else if chunk[i + 1] == b'\n' {
                self.line_len = 0;
                chunk = &chunk[i + 2..];
            } else {
                self.bare = true;
                self.line_len += 1;
                chunk = &chunk[i + 1..];
            }
        }
        self.line_len += chunk.len();
        self.longest_line = self.longest_line.max(self.line_len);
    }

    /// Call at the end of the body: a trailing lone CR is bare.
    pub fn finish(&mut self) {
        if self.pending_cr {
            self.bare = true;
            self.pending_cr = false;
        }
    }
}

/// Progress of a [`DataReceiver`].
#[derive(Debug, PartialEq, Eq)]
pub enum DataStatus {
    NeedsMoreData,
    /// `CRLF.CRLF` seen; the body is complete.
    Done,
}

/// Receives a DATA body into `body`, unstuffing dots.
#[derive(Debug)]
pub struct DataReceiver {
    limits: BodyLimits,
    /// The last complete line ended with a real CRLF (true at the start).
    prev_crlf: bool,
    /// In the middle of a line longer than the buffer limit.
    mid_line: bool,
    /// The stored fragment of that line ended in CR (its LF may start the
    /// next read, and together they are a real CRLF).
    frag_cr: bool,
    checker: BodyChecker,
    size: usize,
    too_big: bool,
}

impl DataReceiver {
    pub fn new(limits: BodyLimits) -> Self {
        Self {
            limits,
            prev_crlf: true,
            mid_line: false,
            frag_cr: false,
            checker: BodyChecker::default(),
            size: 0,
            too_big: false,
        }
    }

    /// Total body octets seen so far (after unstuffing), including octets
    /// not stored because the size limit was passed.
    pub fn size(&self) -> usize {
        self.size
    }

    fn push(&mut self, body: &mut Vec<u8>, bytes: &[u8]) {
        self.size += bytes.len();
        self.checker.feed(bytes);
        if self.size > self.limits.max_size {
            self.too_big = true;
        }
        if !self.too_big {
            body.extend_from_slice(bytes);
        }
    }

    /// Consumes complete lines from `buf` into `body`. Returns the status and
    /// the number of bytes consumed; a partial last line is left unconsumed
    /// unless it is longer than the line limit.
    pub fn ingest(&mut self, buf: &[u8], body: &mut Vec<u8>) -> (DataStatus, usize) {
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let Some(nl) = memchr(b'\n', rest) else {
                // No complete line. Keep waiting unless the fragment is
                // already too long to be a valid line.
                if rest.len() > self.limits.max_line + 2 {
                    let chunk = if self.mid_line || !rest.starts_with(b".") {
                        rest
                    } else {
                        &rest[1..]
                    };
                    self.push(body, chunk);
                    self.mid_line = true;
                    self.frag_cr = chunk.ends_with(b"\r");
                    self.prev_crlf = false;
                    pos = buf.len();
                }
                break;
            };
            let line = &rest[..=nl];
            pos += nl + 1;
            if self.mid_line {
                self.mid_line = false;
                self.push(body, line);
                self.prev_crlf = line.ends_with(b"\r\n") || (line == b"\n" && self.frag_cr);
                continue;
            }
            if line == b".\r\n" && self.prev_crlf {
                self.checker.finish();
                return (DataStatus::Done, pos);
            }
            let content = if line.starts_with(b".") { &line[1..] } else { line };
            self.push(body, content);
            self.prev_crlf = line.ends_with(b"\r\n");
        }
        (DataStatus::NeedsMoreData, pos)
    }

    /// After [`DataStatus::Done`]: the first problem with the body, if any.
    pub fn problem(&self) -> Option<BodyProblem> {
        body_problem(self.too_big, &self.checker, self.limits)
    }
}

fn body_problem(too_big: bool, checker: &BodyChecker, limits: BodyLimits) -> Option<BodyProblem> {
    if too_big {
        Some(BodyProblem::TooBig)
    } else if checker.bare {
        Some(BodyProblem::BareNewline)
    } else if checker.longest_line > limits.max_line {
        Some(BodyProblem::LineTooLong)
    } else {
        None
    }
}

/// Receives BDAT chunks (RFC 3030): exactly `size` octets per chunk, no
/// dot-stuffing. One receiver spans all chunks of a transaction.
#[derive(Debug)]
pub struct BdatReceiver {
    limits: BodyLimits,
    checker: BodyChecker,
    size: usize,
    too_big: bool,
    /// Octets still expected for the current chunk.
    remaining: u64,
}

impl BdatReceiver {
    pub fn new(limits: BodyLimits) -> Self {
        Self {
            limits,
            checker: BodyChecker::default(),
            size: 0,
            too_big: false,
            remaining: 0,
        }
    }

    /// Starts a chunk of `size` octets.
    pub fn start_chunk(&mut self, size: u64) {
        self.remaining = size;
    }

    /// Total octets received over all chunks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Consumes up to the rest of the current chunk. Returns true once the
    /// chunk is complete, and the number of bytes consumed.
    pub fn ingest(&mut self, buf: &[u8], body: &mut Vec<u8>) -> (bool, usize) {
        let take = (self.remaining.min(buf.len() as u64)) as usize;
        let chunk = &buf[..take];
        self.remaining -= take as u64;
        self.size += take;
        self.checker.feed(chunk);
        if self.size > self.limits.max_size {
            self.too_big = true;
        }
        if !self.too_big {
            body.extend_from_slice(chunk);
        }
        (self.remaining == 0, take)
    }

    /// After the LAST chunk: the first problem with the body, if any.
    pub fn problem(&mut self) -> Option<BodyProblem> {
        self.checker.finish();
        body_problem(self.too_big, &self.checker, self.limits)
    }
}

/// Facts about the header section of a complete body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderInfo {
    /// Octets of the header section (up to and including the empty line,
    /// or the whole body if there is none).
    pub size: usize,
    /// Number of `Received:` fields (mail-loop detection).
    pub received: usize,
    /// The first `Message-ID:` field's value, trimmed (at most 256
    /// octets; lossy UTF-8), for the events and `sluice trace`.
    pub message_id: Option<String>,
}

/// Scans the header section of a CRLF body. Stops at `max_scan` octets.
pub fn scan_headers(body: &[u8], max_scan: usize) -> HeaderInfo {
    let mut info = HeaderInfo::default();
    let mut pos = 0;
    let limit = body.len().min(max_scan.saturating_add(1));
    while pos < limit {
        let line_end = memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            info.size = line_end;
            return info;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            info.received += 1;
        }
        if info.message_id.is_none() && line.len() >= 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            // The value, or (folded) the next line's.
            let mut value = &line[11..];
            if value.trim_ascii().is_empty() {
                let next_end = memchr(b'\n', &body[line_end..]).map_or(body.len(), |i| line_end + i + 1);
                let next = &body[line_end..next_end];
                if next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    value = next;
                }
            }
            let value = value.trim_ascii();
            if !value.is_empty() {
                let value = &value[..value.len().min(256)];
                info.message_id = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        pos = line_end;
    }
    info.size = pos.min(body.len()).max(limit.min(body.len()));
    info
}

#[cfg(test)]
mod tests;
