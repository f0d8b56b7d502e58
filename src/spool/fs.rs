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
//!
//! The writer thread is in `writer`, recovery at start in `recover`.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Spool, SpoolError, SpoolFuture, SpoolRef, Stored};
use crate::mail::envelope::Envelope;

mod backlog;
mod compact;
mod recover;
mod writer;
use backlog::Backlog;
pub use backlog::BacklogStats;
use compact::{Moves, SegLive};
use recover::{once_each, recover_segment};
use writer::Writer;

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

#[cfg(test)]
mod tests;
