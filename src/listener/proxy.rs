//! A listener behind a load balancer (`proxy_protocol = true`): reading
//! the PROXY header within `server.proxy_timeout`, and the stream that
//! gives the session the octets that came after it.
//!
//! The header is read in the connection's own task, never in the accept
//! loop, so a slow balancer cannot hold up other clients' accepts.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::proto::proxy::{self, ProxyError, Source};

/// Why a load balancer's connection gave no client.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Connected and closed without a word: a balancer's TCP health
    /// check. Not worth an event.
    #[error("closed before sending anything")]
    Silent,
    #[error("closed in the middle of the PROXY header")]
    Closed,
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Invalid(#[from] ProxyError),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Reads the PROXY header (v1 or v2) that must open the connection, within
/// `within`; returns who it names and the octets read after it.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> Result<(Source, Vec<u8>), HeaderError> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        loop {
            if let Some(h) = proxy::parse(&buf)? {
                buf.drain(..h.len);
                return Ok((h.source, buf));
            }
            buf.reserve(256);
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(if buf.is_empty() {
                    HeaderError::Silent
                } else {
                    HeaderError::Closed
                });
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Err(HeaderError::Timeout(within)))
}

/// A stream that first gives back octets already read from it (what came
/// after the PROXY header), then reads on. Writes go straight through.
#[derive(Debug)]
pub struct Rewind<S> {
    early: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(early: Vec<u8>, inner: S) -> Self {
        Rewind { early, pos: 0, inner }
    }

    /// A stream with nothing to give back.
    pub fn plain(inner: S) -> Self {
        Rewind::new(Vec::new(), inner)
    }
}

// === impl Rewind ===

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.early.len() {
            let n = (this.early.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.early[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.early.len() {
                this.early = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncWriteExt, duplex};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// A balancer that sends `parts` one after the other.
    async fn from_balancer(parts: &[&[u8]]) -> Result<(Source, Vec<u8>), HeaderError> {
        let (mut ours, mut theirs) = duplex(1024);
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for p in parts {
                theirs.write_all(&p).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let got = read_header(&mut ours, SECOND).await;
        writer.await.unwrap();
        got
    }

    #[tokio::test]
    async fn a_header_in_pieces_names_the_client_and_keeps_what_follows() {
        let (source, early) = from_balancer(&[b"PROXY TCP4 192.0.2.7 ", b"198.51.100.1 51000 25\r", b"\nEHLO x\r\n"])
            .await
            .unwrap();
        assert_eq!(source, Source::Client("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(early, b"EHLO x\r\n");
    }

    #[tokio::test]
    async fn garbage_is_refused_without_waiting_for_the_deadline() {
        let got = from_balancer(&[b"EHLO client.example\r\n"]).await;
        assert!(matches!(got, Err(HeaderError::Invalid(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_silent_close_is_a_health_check_and_a_cut_header_is_not() {
        assert!(matches!(from_balancer(&[]).await, Err(HeaderError::Silent)));
        assert!(matches!(
            from_balancer(&[b"PROXY TCP4 "]).await,
            Err(HeaderError::Closed)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_balancer_that_says_nothing_is_cut_off_at_the_deadline() {
        let (mut ours, _theirs) = duplex(64);
        let started = tokio::time::Instant::now();
        let got = read_header(&mut ours, 3 * SECOND).await;
        assert!(
            matches!(got, Err(HeaderError::Timeout(d)) if d == 3 * SECOND),
            "{got:?}"
        );
        assert_eq!(started.elapsed(), 3 * SECOND);
    }

    #[tokio::test]
    async fn rewind_gives_back_the_early_octets_then_reads_on_and_writes_through() {
        let (ours, mut theirs) = duplex(64);
        let mut s = Rewind::new(b"EHLO x\r\n".to_vec(), ours);
        theirs.write_all(b"QUIT\r\n").await.unwrap();
        let mut got = vec![0; 14];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"EHLO x\r\nQUIT\r\n");
        s.write_all(b"221 2.0.0 Bye\r\n").await.unwrap();
        let mut reply = vec![0; 15];
        theirs.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, b"221 2.0.0 Bye\r\n");
    }
}
