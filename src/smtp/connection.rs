//! Buffered reads and whole-reply writes over any byte stream.
//!
//! Replies are collected in `out` while buffered (pipelined) input is
//! processed and written with one `write_all` before the next read, so a
//! pipelined group gets its replies in one segment.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::Reply;

pub struct Connection<S> {
    pub stream: S,
    buf: Vec<u8>,
    /// Start of unconsumed input in `buf`.
    pos: usize,
    out: Vec<u8>,
    /// Bulk reads stay small (the body is going to a file because memory
    /// is short: a thousand such sessions each with a 64 KiB buffer is
    /// what the body pool exists to avoid).
    pub small_reads: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            pos: 0,
            out: Vec::new(),
            small_reads: false,
        }
    }

    /// Unconsumed input.
    pub fn input(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` bytes of input as consumed.
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Drops all unconsumed input (plaintext pipelined after STARTTLS).
    pub fn discard_input(&mut self) -> usize {
        let n = self.buf.len() - self.pos;
        self.buf.clear();
        self.pos = 0;
        n
    }

    /// Reads more input; `Ok(0)` means the peer closed. `bulk` (a message
    /// body is streaming in) reads in large blocks; otherwise the buffer is
    /// kept small, so idle sessions cost little memory.
    pub async fn read_more(&mut self, bulk: bool) -> std::io::Result<usize> {
        if self.pos > 0 && (self.pos > self.buf.len() / 2 || self.buf.capacity() - self.buf.len() < 4096) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.is_empty() && !bulk && self.buf.capacity() > 64 * 1024 {
            // Back to command mode after a large body: give the buffer back.
            self.buf = Vec::new();
        }
        let want = match (bulk, self.buf.len()) {
            (true, _) if self.small_reads => 8 * 1024,
            (true, n) if n > 32 * 1024 => 64 * 1024,
            (true, _) => 16 * 1024,
            (false, _) => 1024,
        };
        // Exact, not doubling: a thousand sessions each with a buffer
        // that doubled once too often is a lot of memory.
        self.buf.reserve_exact(want);
        self.stream.read_buf(&mut self.buf).await
    }

    pub fn push(&mut self, r: &Reply) {
        r.write_to(&mut self.out);
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes all queued replies in one go.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        self.out.clear();
        if self.out.capacity() > 16 * 1024 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Closes the write side (sends TLS close_notify on a TLS stream).
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.stream.shutdown()).await;
    }

    pub fn into_inner(self) -> S {
        self.stream
    }
}
