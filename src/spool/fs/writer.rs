//! The writer thread: records appended in group commits, segments
//! rotated, done marks written, and segments whose records are all done
//! deleted (compaction is in `compact`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use super::compact::{Moves, SegLive};
use super::{MARK_FLUSH, Reply, Req, SpoolStats, encode, fsync_dir, next_requests, seg_path};
use crate::mail::envelope::Envelope;
use crate::spool::{SpoolError, SpoolRef, Stored};

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    fsync: bool,
    pub(super) segment_size: u64,
    pub(super) seg: u64,
    pub(super) log: File,
    pub(super) log_len: u64,
    /// Done-mark files by segment, opened lazily.
    pub(super) marks: HashMap<u64, File>,
    marks_dirty: bool,
    last_mark_flush: Instant,
    /// Records not yet done, per segment.
    pub(super) live: HashMap<u64, SegLive>,
    /// Segments to consider for compaction after this round.
    compact_due: Vec<u64>,
    /// Where compacted records are now (shared with readers).
    pub(super) moves: Arc<Mutex<Moves>>,
    /// Records of the current group commit, encoded back to back.
    batch: Vec<u8>,
    pub(super) stats: Arc<SpoolStats>,
}

impl Writer {
    pub(super) fn new(
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
    pub(super) fn with_moves(mut self, moves: Arc<Mutex<Moves>>) -> Self {
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
    pub(super) fn run(mut self, rx: mpsc::Receiver<Req>) {
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

    pub(super) fn rotate(&mut self) {
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

    pub(super) fn mark(&mut self, sref: SpoolRef, line: &str) {
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
