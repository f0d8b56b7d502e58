//! Message bodies while they arrive: the last octets in memory, the rest
//! in a file under the spool directory's `incoming/`.
//!
//! A session in DATA holds at most `server.body_memory` octets of its
//! body; beyond that [`BodyBuf::spill`] appends them to its own file. At
//! the end of DATA the pipeline reads the body back ([`BodyBuf::load`])
//! under its memory budget, checks it, and stores it in the spool proper.
//! A file here is never accepted mail (the client has no 250 yet): it is
//! removed when its body is dropped, and the directory is emptied when
//! sluice starts.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The memory whole message bodies may take at once (`server.check_memory`),
/// shared by all sessions and by delivery: the end-of-DATA checks hold a
/// message's share while they decode, score and store it, and delivery
/// while it sends a body read back from the spool. Many large messages at
/// once take turns; a message larger than the whole budget waits for all
/// of it.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    kib: std::sync::Arc<tokio::sync::Semaphore>,
    total_kib: u32,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        let total_kib = (bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        Self {
            kib: std::sync::Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits until `bytes` of the budget are free, and holds them until
    /// the permit is dropped.
    pub async fn acquire(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let want = (bytes / 1024 + 1).min(u64::from(self.total_kib)) as u32;
        self.kib.clone().acquire_many_owned(want).await.ok()
    }

    /// KiB in use now.
    pub fn in_use_kib(&self) -> u32 {
        self.total_kib - self.kib.available_permits() as u32
    }
}

/// Where bodies too large for memory go, and from what size.
#[derive(Debug)]
pub struct IncomingDir {
    dir: PathBuf,
    /// Octets held in memory before the body goes to a file.
    pub threshold: usize,
    seq: AtomicU64,
}

impl IncomingDir {
    /// `<spool>/incoming`, created and emptied of what an earlier run left.
    pub fn open(spool_dir: &Path, threshold: usize) -> io::Result<Self> {
        let dir = spool_dir.join("incoming");
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_file() {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Self {
            dir,
            threshold,
            seq: AtomicU64::new(0),
        })
    }

    fn next_path(&self) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{}-{n}", std::process::id()))
    }
}

/// The part of a body already written to its file.
#[derive(Debug)]
struct Spilled {
    file: std::fs::File,
    path: PathBuf,
    len: u64,
}

/// Runs a short file operation from async code. Writes of a few dozen KiB
/// to the page cache take microseconds: done in place, with no thread hop
/// and no second buffer (a thousand sessions each with a buffer in a
/// blocking thread's malloc arena is what this module exists to avoid).
/// On a multi-threaded runtime the worker is handed over first, so a disk
/// that stalls does not stall the other sessions.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Drop for Spilled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A message body as it arrives. Receivers append to [`BodyBuf::mem`];
/// the session calls [`BodyBuf::spill`] after each read.
#[derive(Debug, Default)]
pub struct BodyBuf {
    /// The octets not yet written to the file (all of them, for a small
    /// body).
    pub mem: Vec<u8>,
    spilled: Option<Spilled>,
    /// The first write error; the body is then incomplete and refused at
    /// the end (451), and nothing more is written.
    failed: Option<io::Error>,
}

impl BodyBuf {
    /// A body that starts with `head` (our trace header).
    pub fn with_head(head: &[u8]) -> Self {
        let mut mem = Vec::with_capacity(head.len() + 8192);
        mem.extend_from_slice(head);
        Self { mem, ..Self::default() }
    }

    /// Octets so far, in the file and in memory.
    pub fn len(&self) -> u64 {
        self.spilled_len() + self.mem.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Octets already in the file (they left memory).
    pub fn spilled_len(&self) -> u64 {
        self.spilled.as_ref().map_or(0, |s| s.len)
    }

    /// Whether the octets in memory should go to the file now.
    pub fn over(&self, dir: &IncomingDir) -> bool {
        self.mem.len() >= dir.threshold
    }

    /// Appends the octets in memory to the body's file (created on first
    /// use). After a write error the body is marked failed and the octets
    /// are dropped: memory stays bounded, and [`BodyBuf::load`] reports it.
    pub fn spill(&mut self, dir: &IncomingDir) {
        if self.mem.is_empty() {
            return;
        }
        if self.failed.is_none()
            && let Err(e) = blocking(|| self.write_out(dir))
        {
            tracing::warn!(error = %e, "writing an incoming body failed");
            self.failed = Some(e);
        }
        self.mem.clear();
        if self.mem.capacity() > 2 * dir.threshold {
            self.mem.shrink_to(dir.threshold);
        }
    }

    fn write_out(&mut self, dir: &IncomingDir) -> io::Result<()> {
        if self.spilled.is_none() {
            let path = dir.next_path();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            self.spilled = Some(Spilled { file, path, len: 0 });
        }
        let s = self.spilled.as_mut().expect("created above");
        s.file.write_all(&self.mem)?;
        s.len += self.mem.len() as u64;
        Ok(())
    }

    /// The whole body in memory (the file's octets, then the rest); the
    /// file is removed.
    pub fn load(mut self) -> io::Result<Vec<u8>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let Some(s) = self.spilled.take() else {
            return Ok(std::mem::take(&mut self.mem));
        };
        let mut body = Vec::with_capacity(s.len as usize + self.mem.len());
        blocking(|| std::fs::File::open(&s.path)?.read_to_end(&mut body))?;
        if body.len() as u64 != s.len {
            return Err(io::Error::other(format!(
                "incoming body file holds {} octets, {} were written",
                body.len(),
                s.len
            )));
        }
        body.extend_from_slice(&self.mem);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_bodies_stay_in_memory_large_ones_go_to_a_file_and_come_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = IncomingDir::open(tmp.path(), 4096).unwrap();
        let small = BodyBuf::with_head(b"Received: x\r\n");
        assert!(!small.over(&dir));
        assert_eq!(small.load().unwrap(), b"Received: x\r\n");

        let mut big = BodyBuf::with_head(b"H\r\n");
        let mut expect = b"H\r\n".to_vec();
        for i in 0..100u32 {
            let line = format!("line {i:05} {}\r\n", "x".repeat(90));
            big.mem.extend_from_slice(line.as_bytes());
            expect.extend_from_slice(line.as_bytes());
            if big.over(&dir) {
                big.spill(&dir);
                assert!(big.mem.len() < 4096, "memory holds only the unspilled tail");
            }
        }
        assert!(big.spilled_len() > 0);
        assert_eq!(big.len(), expect.len() as u64);
        let files = std::fs::read_dir(tmp.path().join("incoming")).unwrap().count();
        assert_eq!(files, 1);
        assert_eq!(big.load().unwrap(), expect);
        let files = std::fs::read_dir(tmp.path().join("incoming")).unwrap().count();
        assert_eq!(files, 0, "the file is removed once the body is loaded");
    }

    #[tokio::test]
    async fn a_dropped_body_leaves_no_file_and_a_restart_clears_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = IncomingDir::open(tmp.path(), 4096).unwrap();
        let mut b = BodyBuf::with_head(&[b'a'; 5000]);
        b.spill(&dir);
        assert_eq!(std::fs::read_dir(tmp.path().join("incoming")).unwrap().count(), 1);
        drop(b);
        assert_eq!(std::fs::read_dir(tmp.path().join("incoming")).unwrap().count(), 0);
        std::fs::write(tmp.path().join("incoming/left-over"), b"x").unwrap();
        IncomingDir::open(tmp.path(), 4096).unwrap();
        assert_eq!(std::fs::read_dir(tmp.path().join("incoming")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn the_budget_makes_large_bodies_take_turns() {
        let b = BodyBudget::new(10 << 20);
        let first = b.acquire(6 << 20).await;
        assert_eq!(b.in_use_kib(), 6 * 1024 + 1);
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), b.acquire(6 << 20)).await;
        assert!(second.is_err(), "the second waits while the first holds its share");
        drop(first);
        let huge = b.acquire(100 << 20).await;
        assert_eq!(b.in_use_kib(), 10 * 1024, "larger than the budget: all of it");
        drop(huge);
        assert_eq!(b.in_use_kib(), 0);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_at_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = IncomingDir::open(tmp.path(), 4096).unwrap();
        std::fs::remove_dir(tmp.path().join("incoming")).unwrap();
        let mut b = BodyBuf::with_head(&[b'a'; 5000]);
        b.spill(&dir);
        assert!(b.mem.is_empty(), "memory stays bounded after a failure");
        assert!(b.load().is_err());
    }
}
