//! Our own MIME decoding for the virus and banned-attachment stages.
//!
//! A mail client and a virus scanner that read broken MIME differently are
//! how malware gets past filters ("MIME is broken"). So we do not trust one
//! reading of the structure. A message is decoded two ways, and everything
//! either way yields is scanned:
//!
//! * **Structural**: mail-parser's reading (boundaries as declared, nested
//!   messages, RFC 2231 / RFC 2047 names). Its decoded binary parts are one
//!   reading.
//! * **Carving**: the raw message is cut at *every* line that starts with
//!   `--` (every boundary any reader could pick starts so), whatever the
//!   Content-Type says. Each piece's own header lines, if any, are read
//!   leniently (every Content-Transfer-Encoding, every name parameter, every
//!   continuation order), and its body is decoded by every decoder that fits
//!   it: the declared one and the ones its content looks like (base64,
//!   quoted-printable, uuencode, BinHex), each with all its plausible
//!   readings ([`super::decode`]). A decoded piece that is itself a message
//!   is carved again, to a depth limit.
//!
//! Ambiguities (two boundaries, duplicate Content-Type or encoding headers,
//! non-canonical base64, unknown encodings) are listed, so the policy can
//! reject instead of scanning every reading. Limits on depth, part count and
//! decoded bytes bound time and memory; going over one is reported, never
//! silently skipped.

use std::collections::HashSet;
use std::hash::BuildHasher;

use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::decode;

mod headers;
use headers::{
    filename_candidates, looks_like_message, params, split_headers, split_params, strip_comments, trim_ascii,
};

pub use crate::config::scan::Limits;

/// One decoded piece to scan.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub data: Vec<u8>,
    /// How it was obtained, e.g. "base64", "qp", "uu", "binhex", "raw", "parser".
    pub how: &'static str,
}

/// Everything the decoder found in one message.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Distinct decoded pieces (never the raw message itself).
    pub leaves: Vec<Leaf>,
    /// Every plausible attachment name, from every reading of the headers.
    pub names: Vec<String>,
    /// What could be read more than one way, for the "reject" policy and
    /// the log.
    pub ambiguities: Vec<String>,
    /// Transfer encodings no reader agrees on (not in RFC 2045, not a
    /// uuencode variant): how the part is meant to be read is unknown.
    pub unknown_encodings: Vec<String>,
    /// Set when a limit cut the decoding short (not everything was seen).
    pub over_limit: Option<String>,
}

struct Walker<'l> {
    limits: &'l Limits,
    /// The message itself: a reading equal to it is nothing new.
    top: &'l [u8],
    /// Hashes of the readings kept.
    seen: HashSet<u64>,
    hasher: std::collections::hash_map::RandomState,
    names: HashSet<String>,
    decoded: usize,
    out: Analysis,
}

/// Decodes `msg` every plausible way.
pub fn analyse(msg: &[u8], limits: &Limits) -> Analysis {
    let mut w = Walker {
        limits,
        top: msg,
        seen: HashSet::new(),
        hasher: Default::default(),
        names: HashSet::new(),
        decoded: 0,
        out: Analysis::default(),
    };
    w.message(msg, 0);
    w.out
}

impl Walker<'_> {
    fn message(&mut self, msg: &[u8], depth: usize) {
        if depth > self.limits.max_depth {
            self.over(format!("message nesting deeper than {}", self.limits.max_depth));
            return;
        }
        let (leaves, names) = (self.out.leaves.len(), self.out.names.len());
        let pieces = self.carve(msg, depth);
        // A single text part with nothing to decode (most mail) has no
        // other reading: mail-parser is only asked about MIME structures.
        if pieces > 1 || self.out.leaves.len() > leaves || self.out.names.len() > names {
            self.structural(msg);
        }
    }

    fn over(&mut self, what: String) {
        if self.out.over_limit.is_none() {
            self.out.over_limit = Some(what);
        }
    }

    fn ambiguous(&mut self, what: String) {
        if self.out.ambiguities.len() < 32 && !self.out.ambiguities.contains(&what) {
            self.out.ambiguities.push(what);
        }
    }

    fn name(&mut self, n: String) {
        let n: String = n.chars().filter(|c| !c.is_control()).collect();
        let n = n.trim().to_string();
        if !n.is_empty() && self.names.len() < 256 && self.names.insert(n.clone()) {
            self.out.names.push(n);
        }
    }

    /// Keeps a decoded piece unless it was seen already; returns whether it
    /// is new.
    fn leaf(&mut self, data: Vec<u8>, how: &'static str) -> bool {
        // Compared, not hashed, with the message: most messages have no
        // reading at all, and hashing the whole of each cost more than the
        // rest of the walk.
        if data.is_empty() || data.as_slice() == self.top || !self.seen.insert(self.hasher.hash_one(&data)) {
            return false;
        }
        if self.out.leaves.len() >= self.limits.max_parts {
            self.over(format!("more than {} MIME parts", self.limits.max_parts));
            return false;
        }
        if self.decoded + data.len() > self.limits.max_decoded {
            self.over(format!("more than {} decoded octets", self.limits.max_decoded));
            return false;
        }
        self.decoded += data.len();
        self.out.leaves.push(Leaf { data, how });
        true
    }

    fn room(&self) -> usize {
        self.limits.max_decoded.saturating_sub(self.decoded)
    }

    /// mail-parser's reading: its decoded binary parts and its names.
    fn structural(&mut self, msg: &[u8]) {
        let Some(parsed) = MessageParser::new().with_mime_headers().parse(msg) else {
            return;
        };
        let mut stack = vec![parsed];
        let mut nested = 0;
        while let Some(m) = stack.pop() {
            for part in m.parts {
                if let Some(n) = part.attachment_name() {
                    self.name(n.to_string());
                }
                match part.body {
                    PartType::Binary(b) | PartType::InlineBinary(b)
                        if b.as_ref()
                            != msg
                                .get(part.offset_body as usize..part.offset_end as usize)
                                .unwrap_or(&[]) =>
                    {
                        self.leaf(b.into_owned(), "parser");
                    }
                    PartType::Message(inner) if nested < self.limits.max_parts => {
                        nested += 1;
                        stack.push(inner);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Cuts at every `--` line and decodes each piece every way that fits;
    /// returns the number of pieces.
    fn carve(&mut self, msg: &[u8], depth: usize) -> usize {
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        let mut pos = 0;
        while pos < msg.len() {
            let end = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i + 1);
            if msg[pos..end].starts_with(b"--") {
                pieces.push(&msg[start..pos]);
                start = end;
            }
            pos = end;
        }
        pieces.push(&msg[start..]);
        if pieces.len() > self.limits.max_parts {
            self.over(format!("more than {} MIME parts", self.limits.max_parts));
            pieces.truncate(self.limits.max_parts);
        }
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            // The first piece is the message's own header and its body (or
            // preamble); later pieces may start with part headers.
            let (headers, body) = split_headers(piece, i == 0);
            self.piece(&headers, body, depth);
        }
        n
    }

    /// Reads one carved piece: the names its headers give, what they say
    /// ambiguously, and its body decoded every way that fits; a decoded
    /// piece that is itself a message is read again.
    fn piece(&mut self, headers: &[(String, String)], body: &[u8], depth: usize) {
        let (ctes, ctypes) = encoding_headers(headers);
        let names = filename_candidates(headers);
        let named = !names.is_empty();
        for n in names {
            self.name(n);
        }
        self.note_header_ambiguities(&ctes, &ctypes);

        let trimmed = trim_ascii(body);
        if trimmed.is_empty() {
            return;
        }
        let first = self.out.leaves.len();
        self.note_unknown_encodings(&ctes);

        // Guessing the encoding from the content: where a reader might do
        // it too. Not for a text part that declares no encoding (clients
        // show it as it is; most mail), but for pieces without headers
        // (boundary tricks), attachments, and odd encodings.
        let attachment = named
            || ctypes
                .iter()
                .any(|t| !t.trim_start().starts_with("text/") && !t.trim_start().starts_with("multipart/"));
        let guess = headers.is_empty() || attachment || !ctes.is_empty();
        self.decode_body(body, trimmed, &ctes, guess);

        // A decoded piece that is itself a message is read again.
        let is_message = ctypes.iter().any(|t| t.contains("message/"));
        self.reread_messages(first..self.out.leaves.len(), is_message, depth);
    }

    /// Lists the transfer encodings that no reader agrees on.
    fn note_unknown_encodings(&mut self, ctes: &[String]) {
        for c in ctes {
            let known = matches!(
                c.as_str(),
                "7bit" | "8bit" | "binary" | "base64" | "quoted-printable" | "x-uuencode" | "uuencode" | "x-uue"
            );
            if !known && self.out.unknown_encodings.len() < 8 && !self.out.unknown_encodings.contains(c) {
                self.out.unknown_encodings.push(c.clone());
            }
        }
    }

    /// Keeps every reading of a piece's body (`trimmed` is `body` without
    /// surrounding whitespace): by each declared encoding, and by the ones
    /// its content looks like when `guess`ing is in order (uuencode and
    /// BinHex always); binary content as it is.
    fn decode_body(&mut self, body: &[u8], trimmed: &[u8], ctes: &[String], guess: bool) {
        let declared = |s: &str| ctes.iter().any(|c| c.contains(s));
        if declared("base64") || (guess && decode::looks_like_base64(trimmed)) {
            let readings = decode::base64_readings(trimmed, self.room().max(1));
            if declared("base64") && readings.len() > 1 {
                self.ambiguous("base64 body that decodes more than one way".into());
            }
            for r in readings {
                self.decoded_leaf(r, "base64");
            }
        }
        if declared("quoted") || (guess && decode::looks_like_qp(trimmed)) {
            let readings = decode::qp_readings(body, self.room().max(1));
            if declared("quoted") && decode::qp_has_invalid_escapes(body) {
                self.ambiguous("quoted-printable body with invalid escapes".into());
            }
            for r in readings {
                self.decoded_leaf(r, "qp");
            }
        }
        if (declared("uu") || decode::looks_like_uu(trimmed))
            && let Some(r) = decode::uudecode(body, self.room().max(1))
        {
            self.decoded_leaf(r, "uu");
        }
        if (declared("binhex") || decode::looks_like_binhex(trimmed))
            && let Some(r) = decode::binhex_decode(body, self.room().max(1))
        {
            self.decoded_leaf(r, "binhex");
        }
        // Undecoded binary content (8bit/binary parts): kept so the banned
        // type check and the scanner see it as a file of its own.
        if super::sniff::sniff(trimmed).is_some_and(|k| !matches!(k, "html" | "sh" | "rtf")) {
            self.leaf(trimmed.to_vec(), "raw");
        }
    }

    /// Reads again, as messages, the leaves at `leaves` that are one (all
    /// of them when the piece was declared `message/...`).
    fn reread_messages(&mut self, leaves: std::ops::Range<usize>, is_message: bool, depth: usize) {
        for i in leaves {
            let data = std::mem::take(&mut self.out.leaves[i].data);
            if is_message || looks_like_message(&data) {
                self.message(&data, depth + 1);
            }
            self.out.leaves[i].data = data;
        }
    }

    fn decoded_leaf(&mut self, d: decode::Decoded, how: &'static str) {
        if d.truncated {
            self.over(format!("more than {} decoded octets", self.limits.max_decoded));
        }
        self.leaf(d.data, how);
    }

    fn note_header_ambiguities(&mut self, ctes: &[String], ctypes: &[String]) {
        if ctes.len() > 1 && ctes.iter().any(|c| c != &ctes[0]) {
            self.ambiguous(format!(
                "conflicting Content-Transfer-Encoding headers: {}",
                ctes.join(", ")
            ));
        }
        if ctypes.len() > 1 {
            self.ambiguous("more than one Content-Type header in a part".into());
        }
        for t in ctypes {
            let params = params(t);
            let boundaries = params.iter().filter(|p| p.base == "boundary").count();
            if boundaries > 1 {
                self.ambiguous("more than one boundary parameter".into());
            }
            if params
                .iter()
                .any(|p| p.base == "boundary" && (p.index.is_some() || p.extended))
            {
                self.ambiguous("boundary given in RFC 2231 form".into());
            }
            // Readers that honour quotes and readers that do not see
            // different boundaries: `foo="x;boundary=y"`.
            let quoted: Vec<&str> = split_params(t, true)
                .into_iter()
                .filter_map(|p| {
                    p.split_once('=')
                        .filter(|(k, _)| k.trim() == "boundary")
                        .map(|(_, v)| v)
                })
                .collect();
            let unquoted = split_params(t, false)
                .into_iter()
                .filter(|p| p.split_once('=').is_some_and(|(k, _)| k.trim() == "boundary"))
                .count();
            if unquoted != quoted.len() {
                self.ambiguous("boundary= hidden inside another parameter".into());
            }
            if quoted.iter().any(|v| !v.trim().starts_with('"') && v.contains('=')) {
                self.ambiguous("boundary value with an unquoted '='".into());
            }
        }
    }
}

/// The Content-Transfer-Encoding values (comments and quotes stripped) and
/// the Content-Type values of a piece's headers, in lower case.
fn encoding_headers(headers: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let mut ctes: Vec<String> = Vec::new();
    let mut ctypes: Vec<String> = Vec::new();
    for (name, value) in headers {
        match name.as_str() {
            "content-transfer-encoding" => {
                ctes.push(strip_comments(value).trim().trim_matches('"').to_ascii_lowercase())
            }
            "content-type" => ctypes.push(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    (ctes, ctypes)
}

#[cfg(test)]
mod tests;
