//! Recovery at start: the records of one segment that are not done yet,
//! read back together with the done marks written for them; and each
//! message once when an interrupted compaction left two copies.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::{HEADER_LEN, MAGIC, decode, seg_path};
use crate::mail::envelope::Envelope;
use crate::spool::{SpoolError, SpoolRef, Stored};

/// Reads the done marks and the records of one segment; returns the
/// messages that are not done, each with its record's checksum (a copy
/// left by an interrupted compaction has the same).
pub(super) fn recover_segment(dir: &Path, seg: u64) -> Result<Vec<(Stored, u32)>, SpoolError> {
    let marks = DoneMarks::read(dir, seg)?;
    let mut log = SegmentReader::open(dir, seg)?;
    let mut out = Vec::new();
    while let Some((sref, rec)) = log.next_record()? {
        let Some((env_json, _body)) = decode(&rec) else {
            tracing::warn!(
                segment = seg,
                offset = sref.offset,
                "spool: record fails its checksum; ignoring the rest of the segment"
            );
            break;
        };
        if marks.msgs.contains(&sref.offset) {
            continue;
        }
        if let Some(stored) = undone(sref, env_json, &marks) {
            let crc = u32::from_le_bytes(rec[rec.len() - 4..].try_into().unwrap_or_default());
            out.push((stored, crc));
        }
    }
    Ok(out)
}

/// The message of one intact record, unless it is done (every recipient
/// marked) or its envelope cannot be read (logged).
fn undone(sref: SpoolRef, env_json: &[u8], marks: &DoneMarks) -> Option<Stored> {
    let envelope: Envelope = match serde_json::from_slice(env_json) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(segment = sref.segment, offset = sref.offset, error = %e, "spool: unreadable envelope; record skipped");
            return None;
        }
    };
    let done = marks.rcpts_done(sref.offset, envelope.rcpts.len());
    if done.iter().all(|d| *d) {
        return None;
    }
    Some(Stored {
        sref,
        envelope: Arc::new(envelope),
        done,
        body: None,
    })
}

/// The done marks of one segment (its `.done` file).
#[derive(Default)]
pub(super) struct DoneMarks {
    /// Offsets of the records whose message is done.
    msgs: HashSet<u64>,
    /// The recipients done, by record offset.
    rcpts: HashMap<u64, Vec<usize>>,
}

impl DoneMarks {
    /// Reads the `.done` file of `seg`; without one, nothing is done.
    pub(super) fn read(dir: &Path, seg: u64) -> Result<Self, SpoolError> {
        let mut marks = DoneMarks::default();
        if let Ok(f) = File::open(seg_path(dir, seg, "done")) {
            for line in BufReader::new(f).lines() {
                marks.add(&line?);
            }
        }
        Ok(marks)
    }

    /// Takes one line: `D <offset>` or `R <offset> <rcpt>`.
    fn add(&mut self, line: &str) {
        let mut it = line.split(' ');
        match (it.next(), it.next().and_then(|s| s.parse().ok()), it.next()) {
            (Some("D"), Some(off), None) => {
                self.msgs.insert(off);
            }
            (Some("R"), Some(off), Some(idx)) => {
                if let Ok(i) = idx.parse() {
                    self.rcpts.entry(off).or_default().push(i);
                }
            }
            // A torn last line from a crash: ignore.
            _ => {}
        }
    }

    /// The recipients marked done of the record at `offset`.
    pub(super) fn rcpts_of(&self, offset: u64) -> impl Iterator<Item = usize> + '_ {
        self.rcpts.get(&offset).into_iter().flatten().copied()
    }

    /// Whether each of the `n` recipients of the record at `offset` is done.
    fn rcpts_done(&self, offset: u64, n: usize) -> Vec<bool> {
        let mut done = vec![false; n];
        for &i in self.rcpts.get(&offset).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(d) = done.get_mut(i) {
                *d = true;
            }
        }
        done
    }
}

/// Reads the records of a segment file in order.
struct SegmentReader {
    f: BufReader<File>,
    seg: u64,
    /// Where the next record starts.
    offset: u64,
}

impl SegmentReader {
    fn open(dir: &Path, seg: u64) -> Result<Self, SpoolError> {
        Ok(SegmentReader {
            f: BufReader::with_capacity(1 << 20, File::open(seg_path(dir, seg, "log"))?),
            seg,
            offset: 0,
        })
    }

    /// The next whole record (its length and magic checked, not its CRC)
    /// with where it is; `None` at the end of the segment, or where what
    /// follows cannot be a record (logged): recovery stops there.
    fn next_record(&mut self) -> Result<Option<(SpoolRef, Vec<u8>)>, SpoolError> {
        let (seg, offset) = (self.seg, self.offset);
        let mut hdr = [0u8; HEADER_LEN];
        match self.f.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        if &hdr[..4] != MAGIC {
            tracing::warn!(
                segment = seg,
                offset,
                "spool: bad record magic; ignoring the rest of the segment"
            );
            return Ok(None);
        }
        let env_len = u32::from_le_bytes(hdr[4..8].try_into().unwrap_or_default()) as u64;
        let body_len = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
        let total = HEADER_LEN as u64 + env_len + body_len + 4;
        if total > (1 << 34) {
            tracing::warn!(
                segment = seg,
                offset,
                "spool: implausible record length; ignoring the rest of the segment"
            );
            return Ok(None);
        }
        let mut rec = hdr.to_vec();
        rec.resize(total as usize, 0);
        if self.f.read_exact(&mut rec[HEADER_LEN..]).is_err() {
            tracing::warn!(
                segment = seg,
                offset,
                "spool: torn record at end of segment (never acknowledged)"
            );
            return Ok(None);
        }
        self.offset += total;
        let sref = SpoolRef {
            segment: seg,
            offset,
            len: total,
        };
        Ok(Some((sref, rec)))
    }
}

/// Each message once: a copy left by an interrupted compaction (same queue
/// id, length and checksum, in a later segment) wins over the original,
/// with the recipients done in either; the original is marked done.
pub(super) fn once_each(dir: &Path, found: Vec<(Stored, u32)>) -> Vec<Stored> {
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
