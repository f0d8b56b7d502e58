//! Compaction: a segment whose records are mostly done is rewritten, its
//! live records copied to the end of the segment being written, so one
//! stuck message no longer pins a whole segment on disk.
//!
//! The steps, in this order, each durable before the next:
//!
//! 1. the live records are appended, byte for byte, to the current segment
//!    (and `fdatasync`ed, whatever `spool.fsync` says);
//! 2. their recipients already done are marked again at the new offsets
//!    (and the done marks synced);
//! 3. the old `.log` is unlinked (and the directory synced), then its
//!    `.done`.
//!
//! A crash before 3 leaves each message twice, byte-identical: recovery
//! keeps the newest copy of each (same queue id, length and checksum) with
//! the recipients done in either, and drops the other, so every message
//! comes back exactly once. A crash before 1 completes leaves a torn tail
//! that was never relied on (the originals are still there).
//!
//! The queue keeps the place where it first saw a message ([`SpoolRef`]);
//! [`Moves`] maps that to where the record is now, for reads and marks.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;

use super::recover::DoneMarks;
use super::{Writer, decode, fsync_dir, seg_path};
use crate::spool::{SpoolError, SpoolRef};

/// A segment is compacted once its live records are at most a quarter of
/// it...
const LIVE_AT_MOST: u64 = 4;
/// ...and at least this much of it is done (or half a segment, when
/// segments are smaller): small left-overs are not worth a copy.
const MIN_DEAD: u64 = 1 << 20;

/// The records not yet done in one segment.
#[derive(Debug, Default)]
pub(super) struct SegLive {
    /// Offset -> record length.
    pub(super) records: HashMap<u64, u64>,
    /// Their octets.
    pub(super) bytes: u64,
    /// The segment's length, once it is no longer written.
    pub(super) size: u64,
}

impl SegLive {
    pub(super) fn add(&mut self, sref: SpoolRef) {
        if self.records.insert(sref.offset, sref.len).is_none() {
            self.bytes += sref.len;
        }
    }

    /// Whether the record was live.
    pub(super) fn remove(&mut self, offset: u64) -> bool {
        match self.records.remove(&offset) {
            Some(len) => {
                self.bytes -= len;
                true
            }
            None => false,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Worth compacting, for segments of `segment_size`?
    pub(super) fn mostly_dead(&self, segment_size: u64) -> bool {
        let dead = self.size.saturating_sub(self.bytes);
        self.bytes * LIVE_AT_MOST <= self.size && dead >= MIN_DEAD.min(segment_size / 2).max(1)
    }
}

/// Where compacted records went: keyed by the place the queue knows
/// (where the record was first written), the place it is now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Moves {
    now_at: HashMap<(u64, u64), SpoolRef>,
    /// Where the record at a place was first written.
    first_at: HashMap<(u64, u64), (u64, u64)>,
}

fn key(r: SpoolRef) -> (u64, u64) {
    (r.segment, r.offset)
}

impl Moves {
    /// Where the record the queue knows as `sref` is now.
    pub(super) fn resolve(&self, sref: SpoolRef) -> SpoolRef {
        if self.now_at.is_empty() {
            return sref;
        }
        self.now_at.get(&key(sref)).copied().unwrap_or(sref)
    }

    /// The record now at `from` was copied to `to`.
    pub(super) fn moved(&mut self, from: SpoolRef, to: SpoolRef) {
        let first = self.first_at.remove(&key(from)).unwrap_or(key(from));
        self.now_at.insert(first, to);
        self.first_at.insert(key(to), first);
    }

    /// The message the queue knows as `sref` is done: where it is now.
    pub(super) fn done(&mut self, sref: SpoolRef) -> SpoolRef {
        match self.now_at.remove(&key(sref)) {
            Some(now) => {
                self.first_at.remove(&key(now));
                now
            }
            None => sref,
        }
    }
}

impl Writer {
    /// Compacts `seg` if it is mostly done (see the module docs).
    pub(super) fn maybe_compact(&mut self, seg: u64) {
        let due = seg != self.seg && self.live.get(&seg).is_some_and(|l| l.mostly_dead(self.segment_size));
        if !due {
            return;
        }
        match self.copy_live(seg) {
            Ok(moved) => {
                self.retire(seg, &moved);
                tracing::info!(segment = seg, records = moved.len(), "spool: segment compacted");
            }
            Err(e) => tracing::error!(segment = seg, error = %e, "spool: compaction failed; the segment stays"),
        }
        if self.log_len >= self.segment_size {
            self.rotate();
        }
    }

    /// Steps 1 and 2: copies the live records of `seg` to the current
    /// segment with their recipients done, durably. Returns (old place,
    /// new place) of each; `seg` itself is untouched.
    pub(super) fn copy_live(&mut self, seg: u64) -> Result<Vec<(SpoolRef, SpoolRef)>, SpoolError> {
        let mut recs: Vec<(u64, u64)> = self
            .live
            .get(&seg)
            .map(|l| l.records.iter().map(|(o, l)| (*o, *l)).collect())
            .unwrap_or_default();
        recs.sort_unstable();
        let marks = DoneMarks::read(&self.dir, seg)?;
        let old = File::open(seg_path(&self.dir, seg, "log"))?;
        let mut out = Vec::with_capacity(recs.iter().map(|(_, l)| *l as usize).sum());
        let mut moved = Vec::with_capacity(recs.len());
        for (offset, len) in recs {
            let start = out.len();
            out.resize(start + len as usize, 0);
            old.read_exact_at(&mut out[start..], offset)?;
            if decode(&out[start..]).is_none() {
                return Err(SpoolError::Corrupt { segment: seg, offset });
            }
            let from = SpoolRef {
                segment: seg,
                offset,
                len,
            };
            let to = SpoolRef {
                segment: self.seg,
                offset: self.log_len + start as u64,
                len,
            };
            moved.push((from, to));
        }
        let written = (|| {
            self.log.write_all(&out)?;
            self.log.sync_data()
        })();
        if let Err(e) = written {
            // The segment may now end in a partial copy: continue in a new
            // one (the originals are intact).
            self.rotate();
            return Err(e.into());
        }
        self.log_len += out.len() as u64;
        let live = self.live.entry(self.seg).or_default();
        for (_, to) in &moved {
            live.add(*to);
        }
        for (from, to) in &moved {
            for idx in marks.rcpts_of(from.offset) {
                self.mark(*to, &format!("R {} {idx}\n", to.offset));
            }
        }
        if let Some(f) = self.marks.get_mut(&self.seg) {
            f.flush()?;
            f.sync_data()?;
        }
        Ok(moved)
    }

    /// Step 3: the queue's places now lead to the copies, and `seg` goes.
    pub(super) fn retire(&mut self, seg: u64, moved: &[(SpoolRef, SpoolRef)]) {
        self.stats
            .compactions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            // Readers resolve and open under this lock: each opens either
            // the old file (still readable once unlinked) or the copy.
            let mut moves = self.moves.lock().unwrap_or_else(|p| p.into_inner());
            for (from, to) in moved {
                moves.moved(*from, *to);
            }
            let _ = std::fs::remove_file(seg_path(&self.dir, seg, "log"));
        }
        if let Err(e) = fsync_dir(&self.dir) {
            tracing::warn!(error = %e, "spool: cannot sync the directory after compaction");
        }
        self.live.remove(&seg);
        self.marks.remove(&seg);
        let _ = std::fs::remove_file(seg_path(&self.dir, seg, "done"));
    }
}
