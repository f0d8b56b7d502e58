//! Durable message storage.
//!
//! A message is stored once, whole (envelope + body), and only then does the
//! client get its 250. Delivery marks recipients and messages done; what is
//! not marked done is handed back by [`Spool::recover`] after a restart.

pub mod fs;
pub mod incoming;
pub mod mem;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::mail::envelope::Envelope;

/// Where a stored message lives: segment number and byte offset of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpoolRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
}

/// A message in the queue: its envelope, where it is stored, which
/// recipients are already finished, and (when fresh) its body in memory.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sref: SpoolRef,
    pub envelope: Arc<Envelope>,
    /// `done[i]` is true when recipient `i` needs no further attempt.
    pub done: Vec<bool>,
    /// The body, if still in memory; otherwise it is read from the spool.
    pub body: Option<Arc<Vec<u8>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool record at segment {segment} offset {offset} is corrupt")]
    Corrupt { segment: u64, offset: u64 },
    #[error("spool is shut down")]
    Closed,
}

pub type SpoolFuture<'a> = Pin<Box<dyn Future<Output = Result<Stored, SpoolError>> + Send + 'a>>;

/// The storage seam.
pub trait Spool: Send + Sync + 'static {
    /// Stores a message; resolves once it is durable (when configured so).
    fn store(&self, envelope: Envelope, body: Vec<u8>) -> SpoolFuture<'_>;
    /// Recipient `idx` of the message needs no further attempt.
    fn mark_rcpt_done(&self, sref: SpoolRef, idx: usize);
    /// The whole message is finished (delivered, bounced or expired).
    fn mark_done(&self, sref: SpoolRef);
    /// Reads a stored body back (blocking I/O: call from `spawn_blocking`).
    fn read_body(&self, sref: SpoolRef) -> Result<Vec<u8>, SpoolError>;
    /// Flushes pending marks and stops the writer.
    fn close(&self);
    /// Bytes free for the spool now, if the storage can say.
    fn free_space(&self) -> Option<u64> {
        None
    }
}
