//! The on-disk spool: append-only segment files with group commit.
//!
//! Layout of `spool.dir`:
//!
//! ```text
//! seg-0000000000000001.log   records, appended; a new segment on each start
//! seg-0000000000000001.done  marks: "D <offset>" message done,
//!                            "R <offset> <rcpt>" one recipient done
//! ```
//!
//! A record is `magic "SLR1" | env_len u32 | body_len u64 | envelope JSON |
//! body | crc32`. All sessions hand their records to one writer thread,
//! which appends everything that is waiting with one `write` and makes it
//! durable with one `fdatasync`: many messages share one flush (group
//! commit), and the spool never scans a directory except at start. A
//! segment is deleted when every record in it is done and it is no longer
//! being written; one that is mostly done is compacted (its live records
//! copied to the current segment, see `compact`), so a message stuck in
//! the queue does not keep a whole segment on disk.
//!
//! Crash safety: a record is acknowledged only after its flush. A torn
//! record at the end of a segment (crash mid-write) fails its length or CRC
//! check and was never acknowledged, so recovery stops there. Done marks
//! are flushed at most a second late, so a crash can cause a duplicate
//! delivery, never a lost one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Spool, SpoolError, SpoolFuture, SpoolRef, Stored};
use crate::mail::envelope::Envelope;

mod backlog;
mod compact;
mod recover;
use backlog::Backlog;
pub use backlog::BacklogStats;
use compact::{Moves, SegLive};
use recover::recover_segment;

const MAGIC: &[u8; 4] = b"SLR1";
const HEADER_LEN: usize = 16;
/// How long done marks may wait before they are flushed.
const MARK_FLUSH: Duration = Duration::from_secs(1);

enum Req {
    Store {
        envelope: Box<Envelope>,
        body: Vec<u8>,
        reply: Reply,
    },
    RcptDone(SpoolRef, usize),
    Done(SpoolRef),
    Close,
}

/// Where the outcome of a [`Req::Store`] goes.
type Reply = oneshot::Sender<Result<Stored, SpoolError>>;

/// The requests to handle next: the first to arrive within [`MARK_FLUSH`]
/// (none when that passes; a closed channel reads as [`Req::Close`]), then,
/// for the group commit, everything already waiting behind it.
fn next_requests(rx: &mpsc::Receiver<Req>) -> Vec<Req> {
    let first = match rx.recv_timeout(MARK_FLUSH) {
        Ok(r) => Some(r),
        Err(mpsc::RecvTimeoutError::Timeout) => None,
        Err(mpsc::RecvTimeoutError::Disconnected) => Some(Req::Close),
    };
    let mut reqs: Vec<Req> = first.into_iter().collect();
    while reqs.len() < 4096 {
        match rx.try_recv() {
            Ok(r) => reqs.push(r),
            Err(_) => break,
        }
    }
    reqs
}

/// Counters of the writer thread (for tests, benchmarks and metrics).
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Records made durable.
    pub records: AtomicU64,
    /// Batches written (one write + one fdatasync each, when fsync is on).
    pub flushes: AtomicU64,
    /// Segments compacted (their live records copied, the segment deleted).
    pub compactions: AtomicU64,
    /// Where the writer reports each fdatasync's latency.
    pub fsync_latency: Option<prometheus::Histogram>,
}

/// File-backed spool; see the module docs for the format.
pub struct FsSpool {
    /// Shared with the writer thread, which updates it.
    pub stats: Arc<SpoolStats>,
    dir: PathBuf,
    /// A std channel: the writer is a plain thread doing blocking I/O.
    /// Guarded by a mutex only so `FsSpool` is `Sync`; sends are short.
    tx: Mutex<Option<mpsc::Sender<Req>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    backlog: Arc<Mutex<Backlog>>,
    /// Where compacted records are now (shared with the writer).
    moves: Arc<Mutex<Moves>>,
}

fn seg_path(dir: &Path, seg: u64, ext: &str) -> PathBuf {
    dir.join(format!("seg-{seg:016x}.{ext}"))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Encodes one record.
fn encode(out: &mut Vec<u8>, env_json: &[u8], body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(env_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(env_json);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[start + 4..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Result of recovering the spool at start.
pub struct Recovered {
    pub spool: Arc<FsSpool>,
    /// Messages not yet done, oldest first.
    pub pending: Vec<Stored>,
}

impl FsSpool {
    /// Opens (creating) the spool directory, recovers every undelivered
    /// message, and starts the writer thread on a fresh segment.
    pub fn open(dir: &Path, fsync: bool, segment_size: u64) -> Result<Recovered, SpoolError> {
        Self::open_with(dir, fsync, segment_size, None)
    }

    /// [`FsSpool::open`], reporting each fdatasync's latency to `fsync_latency`.
    pub fn open_with(
        dir: &Path,
        fsync: bool,
        segment_size: u64,
        fsync_latency: Option<prometheus::Histogram>,
    ) -> Result<Recovered, SpoolError> {
        std::fs::create_dir_all(dir)?;
        let mut segs: Vec<u64> = Vec::new();
        let mut marks_only: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            let Some(rest) = name.strip_prefix("seg-") else {
                continue;
            };
            let (hex, list) = match (rest.strip_suffix(".log"), rest.strip_suffix(".done")) {
                (Some(hex), _) => (hex, &mut segs),
                (_, Some(hex)) => (hex, &mut marks_only),
                _ => continue,
            };
            if let Ok(n) = u64::from_str_radix(hex, 16) {
                list.push(n);
            }
        }
        segs.sort_unstable();
        // Done marks whose segment is gone (a crash between the two
        // unlinks): they must not apply to a later segment of that number.
        for seg in marks_only.into_iter().filter(|s| segs.binary_search(s).is_err()) {
            let _ = std::fs::remove_file(seg_path(dir, seg, "done"));
        }
        let mut found = Vec::new();
        for &seg in &segs {
            found.extend(recover_segment(dir, seg)?);
        }
        let pending = once_each(dir, found);
        let mut live: HashMap<u64, SegLive> = HashMap::new();
        for s in &pending {
            live.entry(s.sref.segment).or_default().add(s.sref);
        }
        for &seg in &segs {
            match live.get_mut(&seg) {
                Some(l) => l.size = std::fs::metadata(seg_path(dir, seg, "log"))?.len(),
                None => {
                    let _ = std::fs::remove_file(seg_path(dir, seg, "log"));
                    let _ = std::fs::remove_file(seg_path(dir, seg, "done"));
                }
            }
        }
        let next_seg = segs.last().map_or(1, |s| s + 1);
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(SpoolStats {
            fsync_latency,
            ..SpoolStats::default()
        });
        let moves = Arc::new(Mutex::new(Moves::default()));
        let writer = Writer::new(dir.to_path_buf(), next_seg, fsync, segment_size, live, stats.clone())?
            .with_moves(moves.clone());
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))?;
        let mut backlog = Backlog::default();
        for s in &pending {
            backlog.add(s.sref, s.envelope.received_at);
        }
        let spool = Arc::new(FsSpool {
            stats,
            dir: dir.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            backlog: Arc::new(Mutex::new(backlog)),
            moves,
        });
        Ok(Recovered { spool, pending })
    }

    /// The messages still to deliver (for metrics and the status page).
    pub fn backlog(&self) -> BacklogStats {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner()).stats()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, req: Req) -> Result<(), SpoolError> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(req).map_err(|_| SpoolError::Closed),
            None => Err(SpoolError::Closed),
        }
    }
}

impl Spool for FsSpool {
    fn store(&self, envelope: Envelope, body: Vec<u8>) -> SpoolFuture<'_> {
        let (reply, rx) = oneshot::channel();
        let received_at = envelope.received_at;
        let sent = self.send(Req::Store {
            envelope: Box::new(envelope),
            body,
            reply,
        });
        let backlog = self.backlog.clone();
        Box::pin(async move {
            sent?;
            let stored = rx.await.map_err(|_| SpoolError::Closed)??;
            backlog
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(stored.sref, received_at);
            Ok(stored)
        })
    }

    fn mark_rcpt_done(&self, sref: SpoolRef, idx: usize) {
        let _ = self.send(Req::RcptDone(sref, idx));
    }

    fn mark_done(&self, sref: SpoolRef) {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner()).remove(sref);
        let _ = self.send(Req::Done(sref));
    }

    fn read_body(&self, sref: SpoolRef) -> Result<Vec<u8>, SpoolError> {
        // Resolved and opened under the lock: a compaction cannot unlink
        // the file in between (once open, it stays readable).
        let (sref, f) = {
            let moves = self.moves.lock().unwrap_or_else(|p| p.into_inner());
            let sref = moves.resolve(sref);
            (sref, File::open(seg_path(&self.dir, sref.segment, "log"))?)
        };
        let mut rec = vec![0u8; sref.len as usize];
        f.read_exact_at(&mut rec, sref.offset)?;
        let (env, body) = decode(&rec).ok_or(SpoolError::Corrupt {
            segment: sref.segment,
            offset: sref.offset,
        })?;
        // The body in place: no second copy of a large message.
        let (start, len) = (HEADER_LEN + env.len(), body.len());
        rec.truncate(start + len);
        rec.drain(..start);
        Ok(rec)
    }

    fn free_space(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn close(&self) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(Req::Close);
        }
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// Checks one record; returns (envelope JSON, body).
fn decode(rec: &[u8]) -> Option<(&[u8], &[u8])> {
    if rec.len() < HEADER_LEN + 4 || &rec[..4] != MAGIC {
        return None;
    }
    let env_len = u32::from_le_bytes(rec[4..8].try_into().ok()?) as usize;
    let body_len = u64::from_le_bytes(rec[8..16].try_into().ok()?) as usize;
    let end = HEADER_LEN.checked_add(env_len)?.checked_add(body_len)?;
    if rec.len() != end + 4 {
        return None;
    }
    let crc = u32::from_le_bytes(rec[end..end + 4].try_into().ok()?);
    if crc32fast::hash(&rec[4..end]) != crc {
        return None;
    }
    Some((&rec[HEADER_LEN..HEADER_LEN + env_len], &rec[HEADER_LEN + env_len..end]))
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    fsync: bool,
    segment_size: u64,
    seg: u64,
    log: File,
    log_len: u64,
    /// Done-mark files by segment, opened lazily.
    marks: HashMap<u64, File>,
    marks_dirty: bool,
    last_mark_flush: Instant,
    /// Records not yet done, per segment.
    live: HashMap<u64, SegLive>,
    /// Segments to consider for compaction after this round.
    compact_due: Vec<u64>,
    /// Where compacted records are now (shared with readers).
    moves: Arc<Mutex<Moves>>,
    /// Records of the current group commit, encoded back to back.
    batch: Vec<u8>,
    stats: Arc<SpoolStats>,
}

impl Writer {
    fn new(
        dir: PathBuf,
        seg: u64,
        fsync: bool,
        segment_size: u64,
        live: HashMap<u64, SegLive>,
        stats: Arc<SpoolStats>,
    ) -> Result<Self, SpoolError> {
        let log = Self::create_segment(&dir, seg)?;
        Ok(Self {
            dir,
            fsync,
            segment_size,
            seg,
            log,
            log_len: 0,
            marks: HashMap::new(),
            marks_dirty: false,
            last_mark_flush: Instant::now(),
            compact_due: live.keys().copied().collect(),
            live,
            moves: Arc::default(),
            batch: Vec::with_capacity(1 << 20),
            stats,
        })
    }

    /// Shares where compacted records are now with the spool's readers.
    fn with_moves(mut self, moves: Arc<Mutex<Moves>>) -> Self {
        self.moves = moves;
        self
    }

    fn create_segment(dir: &Path, seg: u64) -> Result<File, SpoolError> {
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(seg_path(dir, seg, "log"))?;
        fsync_dir(dir)?;
        Ok(f)
    }

    /// The writer's loop: takes the requests waiting (at most
    /// [`MARK_FLUSH`] apart), commits the records among them as one batch,
    /// flushes the done marks when due, and ends on [`Req::Close`].
    fn run(mut self, rx: mpsc::Receiver<Req>) {
        let mut waiting: Vec<(Reply, Stored)> = Vec::new();
        loop {
            let mut close = false;
            for req in next_requests(&rx) {
                match req {
                    Req::Store { envelope, body, reply } => {
                        if let Some(staged) = self.stage(envelope, body, reply) {
                            waiting.push(staged);
                        }
                    }
                    Req::RcptDone(sref, idx) => {
                        let sref = self.moves.lock().unwrap_or_else(|p| p.into_inner()).resolve(sref);
                        self.mark(sref, &format!("R {} {idx}\n", sref.offset));
                    }
                    Req::Done(sref) => {
                        let sref = self.moves.lock().unwrap_or_else(|p| p.into_inner()).done(sref);
                        self.mark(sref, &format!("D {}\n", sref.offset));
                        self.release(sref);
                    }
                    Req::Close => close = true,
                }
            }
            if !waiting.is_empty() {
                self.commit_waiting(&mut waiting);
            }
            self.compact_due_segments();
            if self.marks_dirty && (close || self.last_mark_flush.elapsed() >= MARK_FLUSH) {
                self.flush_marks();
            }
            if close {
                self.flush_marks();
                return;
            }
        }
    }

    /// Encodes a record into the batch; returns the reply to send once the
    /// batch is committed, with the message as stored. An envelope that
    /// cannot be serialised is answered at once.
    fn stage(&mut self, envelope: Box<Envelope>, body: Vec<u8>, reply: Reply) -> Option<(Reply, Stored)> {
        let env_json = match serde_json::to_vec(&envelope) {
            Ok(j) => j,
            Err(e) => {
                let _ = reply.send(Err(SpoolError::Io(std::io::Error::other(e))));
                return None;
            }
        };
        let start = self.batch.len() as u64;
        encode(&mut self.batch, &env_json, &body);
        let len = self.batch.len() as u64 - start;
        let sref = SpoolRef {
            segment: self.seg,
            offset: self.log_len + start,
            len,
        };
        let done = vec![false; envelope.rcpts.len()];
        let stored = Stored {
            sref,
            envelope: Arc::from(envelope),
            done,
            body: Some(Arc::new(body)),
        };
        Some((reply, stored))
    }

    /// Commits the batch (group commit) and answers every waiting store;
    /// starts a new segment after a failed write or when this one is full.
    fn commit_waiting(&mut self, waiting: &mut Vec<(Reply, Stored)>) {
        let res = self.commit_batch();
        if res.is_ok() {
            self.stats.flushes.fetch_add(1, Ordering::Relaxed);
            self.stats.records.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        }
        for (reply, stored) in waiting.drain(..) {
            let r = match &res {
                Ok(()) => {
                    self.live.entry(stored.sref.segment).or_default().add(stored.sref);
                    Ok(stored)
                }
                Err(e) => Err(SpoolError::Io(std::io::Error::new(e.kind(), e.to_string()))),
            };
            let _ = reply.send(r);
        }
        if res.is_err() {
            // The segment may now hold a partial record: continue in a new one.
            self.rotate();
        } else if self.log_len >= self.segment_size {
            self.rotate();
        }
    }

    fn commit_batch(&mut self) -> std::io::Result<()> {
        let res = (|| {
            self.log.write_all(&self.batch)?;
            if self.fsync {
                let started = Instant::now();
                self.log.sync_data()?;
                if let Some(h) = &self.stats.fsync_latency {
                    h.observe(started.elapsed().as_secs_f64());
                }
            }
            Ok(())
        })();
        if res.is_ok() {
            self.log_len += self.batch.len() as u64;
        } else if let Err(e) = &res {
            tracing::error!(error = %e, "spool write failed; messages in this batch get 451");
        }
        self.batch.clear();
        if self.batch.capacity() > (8 << 20) {
            self.batch.shrink_to(1 << 20);
        }
        res
    }

    fn rotate(&mut self) {
        let old = self.seg;
        let next = self.seg + 1;
        match Self::create_segment(&self.dir, next) {
            Ok(f) => {
                self.log = f;
                self.seg = next;
                let size = std::mem::take(&mut self.log_len);
                match self.live.get_mut(&old) {
                    Some(l) if !l.is_empty() => {
                        l.size = size;
                        self.compact_due.push(old);
                    }
                    _ => self.delete_segment(old),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool: cannot start a new segment; still writing the old one")
            }
        }
    }

    fn mark(&mut self, sref: SpoolRef, line: &str) {
        let dir = &self.dir;
        let f = match self.marks.entry(sref.segment) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(seg_path(dir, sref.segment, "done"))
                {
                    Ok(f) => v.insert(f),
                    Err(e) => {
                        tracing::error!(error = %e, "spool: cannot open done-mark file");
                        return;
                    }
                }
            }
        };
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::error!(error = %e, "spool: cannot write done mark (message may be delivered twice)");
        }
        self.marks_dirty = true;
    }

    fn flush_marks(&mut self) {
        if self.fsync {
            for f in self.marks.values() {
                let _ = f.sync_data();
            }
        }
        self.marks_dirty = false;
        self.last_mark_flush = Instant::now();
    }

    fn release(&mut self, sref: SpoolRef) {
        let seg = sref.segment;
        let Some(l) = self.live.get_mut(&seg) else {
            return;
        };
        if !l.remove(sref.offset) || seg == self.seg {
            return;
        }
        if l.is_empty() {
            self.delete_segment(seg);
        } else if l.mostly_dead(self.segment_size) && !self.compact_due.contains(&seg) {
            self.compact_due.push(seg);
        }
    }

    /// Compacts the segments that became mostly done this round.
    fn compact_due_segments(&mut self) {
        while let Some(seg) = self.compact_due.pop() {
            self.maybe_compact(seg);
        }
    }

    fn delete_segment(&mut self, seg: u64) {
        self.live.remove(&seg);
        self.marks.remove(&seg);
        let _ = std::fs::remove_file(seg_path(&self.dir, seg, "log"));
        let _ = std::fs::remove_file(seg_path(&self.dir, seg, "done"));
    }
}

/// Each message once: a copy left by an interrupted compaction (same queue
/// id, length and checksum, in a later segment) wins over the original,
/// with the recipients done in either; the original is marked done.
fn once_each(dir: &Path, found: Vec<(Stored, u32)>) -> Vec<Stored> {
    let mut newest: HashMap<(String, u64, u32), usize> = HashMap::new();
    let mut out: Vec<Option<Stored>> = Vec::with_capacity(found.len());
    for (s, crc) in found {
        let i = out.len();
        let original = newest.insert((s.envelope.id.clone(), s.sref.len, crc), i);
        out.push(Some(s));
        // Segments are read oldest first: the earlier one is the original.
        let Some(original) = original.and_then(|j| out[j].take()) else {
            continue;
        };
        let Some(copy) = out[i].as_mut() else { continue };
        let mut lines = String::new();
        for (idx, (c, o)) in copy.done.iter_mut().zip(&original.done).enumerate() {
            if *o && !*c {
                *c = true;
                lines.push_str(&format!("R {} {idx}\n", copy.sref.offset));
            }
        }
        append_marks(dir, copy.sref.segment, &lines);
        append_marks(dir, original.sref.segment, &format!("D {}\n", original.sref.offset));
        tracing::info!(id = %copy.envelope.id, "spool: an interrupted compaction left two copies; keeping one");
    }
    out.into_iter().flatten().collect()
}

/// Appends done marks to a segment's `.done` file, durably (recovery only).
fn append_marks(dir: &Path, seg: u64, lines: &str) {
    if lines.is_empty() {
        return;
    }
    let res = OpenOptions::new()
        .create(true)
        .append(true)
        .open(seg_path(dir, seg, "done"))
        .and_then(|mut f| {
            f.write_all(lines.as_bytes())?;
            f.sync_data()
        });
    if let Err(e) = res {
        tracing::error!(segment = seg, error = %e, "spool: cannot write done marks (a message may be delivered twice)");
    }
}

#[cfg(test)]
mod tests;
