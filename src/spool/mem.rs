//! In-memory spool for tests and benchmarks: the same seam, no durability.
//! `fail` makes every store fail, to test that no 250 is given then.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Spool, SpoolError, SpoolFuture, SpoolRef, Stored};
use crate::mail::envelope::Envelope;

#[derive(Default)]
pub struct MemSpool {
    /// Every stored message, in order; a std mutex, never held across an await.
    pub stored: Mutex<Vec<(Envelope, Vec<u8>)>>,
    pub fail: AtomicBool,
    next: AtomicU64,
}

impl Spool for MemSpool {
    fn store(&self, envelope: Envelope, body: Vec<u8>) -> SpoolFuture<'_> {
        let res = if self.fail.load(Ordering::Relaxed) {
            Err(SpoolError::Io(std::io::Error::other("injected spool failure")))
        } else {
            let offset = self.next.fetch_add(1, Ordering::Relaxed);
            let sref = SpoolRef {
                segment: 0,
                offset,
                len: body.len() as u64,
            };
            self.stored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((envelope.clone(), body.clone()));
            Ok(Stored {
                sref,
                done: vec![false; envelope.rcpts.len()],
                envelope: std::sync::Arc::new(envelope),
                body: Some(std::sync::Arc::new(body)),
            })
        };
        Box::pin(std::future::ready(res))
    }

    fn mark_rcpt_done(&self, _: SpoolRef, _: usize) {}

    fn mark_done(&self, _: SpoolRef) {}

    fn read_body(&self, sref: SpoolRef) -> Result<Vec<u8>, SpoolError> {
        let stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        stored
            .get(sref.offset as usize)
            .map(|(_, b)| b.clone())
            .ok_or(SpoolError::Corrupt {
                segment: sref.segment,
                offset: sref.offset,
            })
    }

    fn close(&self) {}
}
