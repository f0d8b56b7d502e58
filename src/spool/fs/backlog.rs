//! The messages in the spool still to deliver, kept as they are stored and
//! finished: the spool gauges (messages, bytes, oldest age) and `sluice
//! check` read it without touching the disk.

use std::collections::HashMap;

use super::SpoolRef;

/// The messages in the spool still to deliver: count, bytes, oldest.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    /// (segment, offset) -> (received_at, record length).
    by_ref: HashMap<(u64, u64), (u64, u64)>,
    /// (received_at, segment, offset): the oldest first.
    by_age: std::collections::BTreeSet<(u64, u64, u64)>,
    bytes: u64,
}

impl Backlog {
    pub(super) fn add(&mut self, sref: SpoolRef, received_at: u64) {
        if self
            .by_ref
            .insert((sref.segment, sref.offset), (received_at, sref.len))
            .is_none()
        {
            self.by_age.insert((received_at, sref.segment, sref.offset));
            self.bytes += sref.len;
        }
    }

    pub(super) fn stats(&self) -> BacklogStats {
        BacklogStats {
            messages: self.by_ref.len(),
            bytes: self.bytes,
            oldest: self.by_age.first().map(|(at, _, _)| *at),
        }
    }

    pub(super) fn remove(&mut self, sref: SpoolRef) {
        if let Some((at, len)) = self.by_ref.remove(&(sref.segment, sref.offset)) {
            self.by_age.remove(&(at, sref.segment, sref.offset));
            self.bytes -= len;
        }
    }
}

/// What [`FsSpool::backlog`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogStats {
    pub messages: usize,
    pub bytes: u64,
    /// When the oldest message still to deliver was accepted (Unix s).
    pub oldest: Option<u64>,
}
