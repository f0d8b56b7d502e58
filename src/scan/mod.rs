//! Content scanning: our own MIME decoding ([`mime`], [`decode`]), banned
//! attachments ([`banned`], [`sniff`]), the [`Scanner`] seam with its clamd
//! implementation ([`clamd`]), admission control ([`admission`]) and the
//! scan of held mail from the spool ([`deferred`]).
//!
//! Flow of one message ([`ContentFilter`]): while DATA arrives the raw bytes
//! stream to clamd (INSTREAM) where a connection is free; at the end the
//! message is decoded every plausible way, banned names and types are
//! checked, and the decoded parts go to clamd in one tar bundle. A virus or
//! banned part gets `554 5.7.1` in the session; a scan that could not be
//! done is never a pass. Archives are opened ([`archive`]) for the names
//! inside; what nobody can look into (encrypted, unknown format, past the
//! limits, clamd's "limits exceeded") is [`Verdict::Unscannable`], for the
//! `scan.unscannable` policy.

pub mod admission;
pub mod archive;
pub mod banned;
pub mod clamd;
pub mod decode;
pub mod deferred;
pub mod mime;
pub mod sniff;
pub mod tar;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::Semaphore;

pub use crate::config::scan::{Ambiguous, OnFailure, ScanConfig};
pub use crate::events::{Unscannable, UnscannableAction, UnscannableKind};

/// What a scanner found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    Clean,
    /// The malware name as the scanner reports it.
    Infected(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("scanner unavailable: {0}")]
    Unavailable(String),
    #[error("scan timed out")]
    Timeout,
    #[error("scanner error: {0}")]
    Failed(String),
}

pub type ScanFuture<'a> = Pin<Box<dyn Future<Output = Result<ScanOutcome, ScanError>> + Send + 'a>>;
pub type PushFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
/// Each endpoint of a scanner and whether it answered.
pub type PingFuture<'a> = Pin<Box<dyn Future<Output = Vec<(String, bool)>> + Send + 'a>>;

/// The scanning seam. A scanner never returns "clean" when it could not
/// scan: errors are errors, and the failure policy decides.
pub trait Scanner: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn scan<'a>(&'a self, message: &'a [u8]) -> ScanFuture<'a>;
    /// Starts a scan fed chunk by chunk while the message arrives, when
    /// the scanner can and has a free connection.
    fn stream(&self) -> Option<Box<dyn ScanStream>> {
        None
    }
    /// Asks each endpoint whether it answers now (for `/readyz`); each
    /// ask bounded by `within`.
    fn ping(&self, within: std::time::Duration) -> PingFuture<'_> {
        let _ = within;
        Box::pin(async { Vec::new() })
    }
}

/// A scan in progress, fed as the message arrives. Pushing waits when the
/// scanner is slower than the client (bounded buffer: backpressure).
pub trait ScanStream: Send {
    fn push<'a>(&'a mut self, chunk: &'a [u8]) -> PushFuture<'a>;
    /// No more data: the verdict on everything pushed.
    fn finish(self: Box<Self>) -> ScanFuture<'static>;
}

/// What the content checks decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Virus(String),
    Banned(String),
    Malformed(String),
    /// Nothing bad found, but not everything could be looked into: the
    /// caller applies `scan.unscannable` (`cfg.unscannable`).
    Unscannable(Unscannable),
}

/// clamd's answers that are not a virus but say it could not look into
/// everything: `Heuristics.Limits.Exceeded.*` (`AlertExceedsMax yes`) and
/// `Heuristics.Encrypted.*` (`AlertEncrypted yes`).
pub fn scanner_unscannable(name: &str) -> Option<Unscannable> {
    let kind = if name.starts_with("Heuristics.Limits.Exceeded") {
        UnscannableKind::ScannerLimits
    } else if name.starts_with("Heuristics.Encrypted") {
        UnscannableKind::Encrypted
    } else {
        return None;
    };
    Some(Unscannable {
        kind,
        what: format!("the virus scanner could not look into everything ({name})"),
    })
}

/// Messages larger than this are decoded on the blocking pool.
const INLINE_DECODE: usize = 256 * 1024;

/// The content pipeline shared by the server, the deferred scanner and
/// `sluice scan`.
pub struct ContentFilter {
    pub cfg: ScanConfig,
    scanner: Option<Arc<dyn Scanner>>,
    pub admission: admission::Admission,
    /// Bounds CPU-heavy decoding of large messages running at once.
    decode_slots: Semaphore,
    /// The most the scanner takes at once (`clamd.max_size`): unpacked
    /// archive members are added to the bundle of parts only below it.
    bundle_max: usize,
}

impl ContentFilter {
    pub fn new(cfg: ScanConfig, scanner: Option<Arc<dyn Scanner>>, scan_capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ContentFilter {
            admission: admission::Admission::new(cfg.latency_budget, scan_capacity),
            cfg,
            scanner,
            decode_slots: Semaphore::new(cores),
            bundle_max: usize::MAX,
        }
    }

    /// The filter for a configuration: `[scan]`, with clamd when
    /// `[clamd]` has endpoints (also returned, for its health loop).
    pub fn from_config(
        config: &crate::config::Config,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (ContentFilter, Option<Arc<clamd::Clamd>>) {
        let clamd = config.clamd.clone().map(|c| Arc::new(clamd::Clamd::new(c, metrics)));
        let capacity = config.clamd.as_ref().map_or(1, |c| c.max_concurrent);
        let scanner = clamd.clone().map(|c| c as Arc<dyn Scanner>);
        let mut filter = ContentFilter::new(config.scan.clone(), scanner, capacity);
        if let Some(c) = &config.clamd {
            filter.bundle_max = c.max_size;
        }
        (filter, clamd)
    }

    /// Scans that can run at once (clamd connections).
    pub fn capacity(&self) -> usize {
        self.admission.capacity()
    }

    pub fn has_scanner(&self) -> bool {
        self.scanner.is_some()
    }

    /// The scanner's endpoints and whether each answers now.
    pub async fn ping(&self, within: std::time::Duration) -> Vec<(String, bool)> {
        match &self.scanner {
            Some(s) => s.ping(within).await,
            None => Vec::new(),
        }
    }

    /// A streaming scan for a message about to arrive, if possible.
    pub fn start_stream(&self) -> Option<Box<dyn ScanStream>> {
        self.scanner.as_ref()?.stream()
    }

    /// Decodes the message and applies the local checks (banned parts,
    /// malformed MIME). Returns a refusal, or the bundle of decoded parts
    /// that still needs a virus scan. `client` (none for a file scanned by
    /// hand) picks the unscannable policy: only a "reject" for this client
    /// refuses here, before the virus scan.
    pub async fn inspect(&self, msg: &[u8], client: Option<IpAddr>) -> Result<Inspected, ScanError> {
        let limits = self.cfg.limits.clone();
        let mut archives = self.cfg.archives.clone();
        if self.scanner.is_none() {
            // Members are kept only for a scanner; without one no content
            // is scanned for viruses, a compressed RAR's no more than any.
            archives.keep_members = 0;
            archives.compressed_rar_unscannable = false;
        }
        let (analysis, listing) = if msg.len() <= INLINE_DECODE {
            let analysis = mime::analyse(msg, &limits);
            if analysis.leaves.iter().any(|l| archive::detect(&l.data).is_some()) {
                // Unpacking may take a while: on the blocking pool.
                let _slot = self.decode_slots.acquire().await.map_err(|_| ScanError::Timeout)?;
                tokio::task::spawn_blocking(move || {
                    let listing = archive::list(analysis.leaves.iter().map(|l| l.data.as_slice()), &archives);
                    (analysis, listing)
                })
                .await
                .map_err(|e| ScanError::Failed(format!("archive lister: {e}")))?
            } else {
                let listing = archive::list(analysis.leaves.iter().map(|l| l.data.as_slice()), &archives);
                (analysis, listing)
            }
        } else {
            let _slot = self.decode_slots.acquire().await.map_err(|_| ScanError::Timeout)?;
            let owned = msg.to_vec();
            tokio::task::spawn_blocking(move || {
                let analysis = mime::analyse(&owned, &limits);
                let listing = archive::list(analysis.leaves.iter().map(|l| l.data.as_slice()), &archives);
                (analysis, listing)
            })
            .await
            .map_err(|e| ScanError::Failed(format!("decoder: {e}")))?
        };
        if let Some(what) = self.cfg.banned.check(&analysis) {
            return Ok(Inspected::Refused(Verdict::Banned(what)));
        }
        if self.cfg.banned.in_archives
            && let Some(n) = listing.names.iter().find(|n| self.cfg.banned.banned_name(n))
        {
            return Ok(Inspected::Refused(Verdict::Banned(format!(
                "banned name {n:?} inside an archive"
            ))));
        }
        if let Some(what) = &analysis.over_limit {
            return Ok(Inspected::Refused(Verdict::Malformed(format!(
                "too complex to scan: {what}"
            ))));
        }
        if self.cfg.unknown_encoding == Ambiguous::Reject
            && let Some(cte) = analysis.unknown_encodings.first()
        {
            return Ok(Inspected::Refused(Verdict::Malformed(format!(
                "malformed MIME: unknown Content-Transfer-Encoding {cte:?}"
            ))));
        }
        if self.cfg.ambiguous == Ambiguous::Reject
            && let Some(what) = analysis.ambiguities.first()
        {
            return Ok(Inspected::Refused(Verdict::Malformed(format!(
                "ambiguous MIME: {what}"
            ))));
        }
        if let Some(u) = &listing.unscannable
            && self.cfg.unscannable_for(client) == UnscannableAction::Reject
        {
            return Ok(Inspected::Refused(Verdict::Unscannable(u.clone())));
        }
        let bundle = if analysis.leaves.is_empty() || self.scanner.is_none() {
            None
        } else {
            let mut tar = tar::TarBuilder::new();
            for (i, leaf) in analysis.leaves.iter().enumerate() {
                tar.add(&format!("part{i}.{}", leaf.how), &leaf.data)
                    .map_err(|e| ScanError::Failed(e.to_string()))?;
            }
            // What sluice unpacked, flat beside the parts: found even by a
            // scanner that cannot open those archives or stops at its
            // recursion limit. Never past what the scanner takes: the
            // bundle would then not be scanned at all.
            for (i, member) in listing.members.iter().enumerate() {
                if tar.finished_size_with(member.len()) > self.bundle_max {
                    continue;
                }
                tar.add(&format!("member{i}"), member)
                    .map_err(|e| ScanError::Failed(e.to_string()))?;
            }
            Some(tar.finish())
        };
        Ok(match listing.unscannable {
            Some(u) => Inspected::Unscannable(u, bundle),
            None => Inspected::Bundle(bundle),
        })
    }

    /// The virus scan of the raw message (streamed already, or sent now)
    /// and of the decoded parts, both at once.
    pub async fn virus_scan(
        &self,
        msg: &[u8],
        bundle: Option<Vec<u8>>,
        stream: Option<Box<dyn ScanStream>>,
    ) -> Result<Verdict, ScanError> {
        let Some(scanner) = &self.scanner else {
            return Ok(Verdict::Clean);
        };
        let _guard = self.admission.begin();
        let raw = async {
            if let Some(s) = stream {
                match s.finish().await {
                    Ok(v) => return Ok(v),
                    // A broken stream is retried whole, possibly elsewhere.
                    Err(e) => tracing::debug!(error = %e, "streamed scan failed; scanning again"),
                }
            }
            scanner.scan(&scan_view(msg)).await
        };
        let parts = async {
            match &bundle {
                Some(b) => scanner.scan(b).await,
                None => Ok(ScanOutcome::Clean),
            }
        };
        let (raw, parts) = tokio::join!(raw, parts);
        for r in [&raw, &parts] {
            if let Ok(ScanOutcome::Infected(name)) = r
                && scanner_unscannable(name).is_none()
            {
                return Ok(Verdict::Virus(name.clone()));
            }
        }
        let (raw, parts) = (raw?, parts?);
        for r in [raw, parts] {
            if let ScanOutcome::Infected(name) = r
                && let Some(u) = scanner_unscannable(&name)
            {
                return Ok(Verdict::Unscannable(u));
            }
        }
        Ok(Verdict::Clean)
    }

    /// The whole pipeline on a message already received.
    pub async fn check(&self, msg: &[u8], client: Option<IpAddr>) -> Result<Verdict, ScanError> {
        match self.inspect(msg, client).await? {
            Inspected::Refused(v) => Ok(v),
            Inspected::Bundle(b) => self.virus_scan(msg, b, None).await,
            Inspected::Unscannable(u, b) => Ok(match self.virus_scan(msg, b, None).await? {
                Verdict::Clean => Verdict::Unscannable(u),
                v => v,
            }),
        }
    }
}

/// The header block clamd gets for a message, and where the body starts:
/// `MIME-Version: 1.0`, then the message's own `Content-*` headers. Trace
/// and addressing headers (Received, Date, Message-ID, To, Subject) differ
/// between the copies of one outbreak mail; leaving them out makes the
/// copies identical for clamd, so its scan cache absorbs the outbreak. The
/// full headers are still decoded by us and checked by the other stages.
/// None while the end of the header section has not arrived yet, and for
/// input that does not start like a message.
pub fn scan_head(msg: &[u8]) -> Option<(Vec<u8>, usize)> {
    let first = msg.split(|&c| c == b'\n').next()?;
    let colon = memchr::memchr(b':', first)?;
    if colon == 0 || !first[..colon].iter().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    let (end, sep) = match (
        memchr::memmem::find(msg, b"\r\n\r\n"),
        memchr::memmem::find(msg, b"\n\n"),
    ) {
        (Some(a), Some(b)) if b + 1 < a => (b, 2),
        (Some(a), _) => (a, 4),
        (None, Some(b)) => (b, 2),
        (None, None) => return None,
    };
    let mut head = b"MIME-Version: 1.0\r\n".to_vec();
    let mut keep = false;
    for line in msg[..end].split_inclusive(|&c| c == b'\n') {
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            keep = line.len() > 8 && line[..8].eq_ignore_ascii_case(b"content-");
        }
        if keep {
            head.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                head.extend_from_slice(b"\r\n");
            }
        }
    }
    head.extend_from_slice(b"\r\n");
    Some((head, end + sep))
}

/// A whole message as clamd gets it (see [`scan_head`]); other input as it is.
pub fn scan_view(msg: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match scan_head(msg) {
        Some((mut head, body)) => {
            head.extend_from_slice(&msg[body..]);
            std::borrow::Cow::Owned(head)
        }
        None => std::borrow::Cow::Borrowed(msg),
    }
}

/// How much of a body a streamed scan has seen: whether the header block
/// went out, and the offset in `body` up to which octets were sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    pub head: bool,
    pub upto: usize,
}

/// Feeds a streamed scan with `body[fed.upto..]`: the header block of
/// [`scan_head`] first, then the body in batches of at least `batch`
/// octets (everything when `all`).
pub async fn feed(stream: &mut dyn ScanStream, body: &[u8], fed: &mut Fed, batch: usize, all: bool) {
    if !fed.head {
        match scan_head(body) {
            Some((head, start)) => {
                stream.push(&head).await;
                *fed = Fed {
                    head: true,
                    upto: start,
                };
            }
            None if all => {
                stream.push(&scan_view(body)).await;
                *fed = Fed {
                    head: true,
                    upto: body.len(),
                };
                return;
            }
            None => return,
        }
    }
    let pending = body.len().saturating_sub(fed.upto);
    if pending > 0 && (all || pending >= batch) {
        stream.push(&body[fed.upto..]).await;
        fed.upto = body.len();
    }
}

/// Result of the local checks.
pub enum Inspected {
    Refused(Verdict),
    /// Decoded parts to scan (a tar archive), if any.
    Bundle(Option<Vec<u8>>),
    /// As `Bundle`, but something could not be looked into and the
    /// policy (`scan.unscannable`, not "reject") decides after a clean scan.
    Unscannable(Unscannable, Option<Vec<u8>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamd_sees_mime_headers_and_body_only() {
        let a = b"Received: from x\r\n\tby y; Mon\r\nSubject: one\r\nContent-Type: multipart/mixed;\r\n boundary=b\r\n\r\nbody\r\n";
        let b = b"Received: from z\r\nSubject: two\r\nMessage-ID: <2@x>\r\nContent-Type: multipart/mixed;\r\n boundary=b\r\n\r\nbody\r\n";
        let want = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=b\r\n\r\nbody\r\n";
        assert_eq!(&*scan_view(a), want);
        assert_eq!(
            scan_view(a),
            scan_view(b),
            "two copies of one mail look the same to clamd"
        );
        // Not a message: as it is. Header section not complete: nothing yet.
        assert_eq!(&*scan_view(b"MZ\x90\0binary"), b"MZ\x90\0binary");
        assert!(scan_head(b"Subject: x\r\nContent-Type: text/plain\r\n").is_none());
        let (head, start) = scan_head(b"Subject: x\n\nbody\n").unwrap();
        assert_eq!((head.as_slice(), start), (&b"MIME-Version: 1.0\r\n\r\n"[..], 12));
    }
}
