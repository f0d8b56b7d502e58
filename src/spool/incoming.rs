//! Message bodies while they arrive: in memory while there is room, the
//! rest in a file under the spool directory's `incoming/`.
//!
//! All sessions together hold at most `server.body_memory` octets of
//! arriving bodies in memory (each may always keep a small floor, 8 KiB).
//! A body that grows past its floor when the pool is full goes to its own
//! file ([`BodyBuf::keep`] after each read), and from then on only the
//! latest read is in memory. So twenty clients sending 1 MiB each never
//! touch the disk twice, and a thousand sending 25 MiB each cost the pool
//! plus a thousand small buffers. At the end of DATA the pipeline takes
//! the body ([`BodyBuf::load`], from its file if it has one) under its own
//! budget, checks it, and stores it in the spool proper.
//! A file here is never accepted mail (the client has no 250 yet): it is
//! removed when its body is dropped, and the directory is emptied when
//! sluice starts.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What each session may keep in memory whatever the pool holds.
pub const SESSION_FLOOR: usize = 8 * 1024;

/// The octets of arriving bodies held in memory by all sessions.
#[derive(Debug)]
struct Pool {
    limit: usize,
    held: AtomicUsize,
}

impl Pool {
    fn try_take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                h.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

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

/// Where bodies go when memory is full, and the pool of memory.
#[derive(Debug)]
pub struct IncomingDir {
    dir: PathBuf,
    pool: Arc<Pool>,
    /// What each session may keep whatever the pool holds.
    floor: usize,
    seq: AtomicU64,
}

impl IncomingDir {
    /// `<spool>/incoming`, created and emptied of what an earlier run
    /// left; `pool` octets of arriving bodies may be held in memory.
    pub fn open(spool_dir: &Path, pool: usize) -> io::Result<Self> {
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
            pool: Arc::new(Pool {
                limit: pool,
                held: AtomicUsize::new(0),
            }),
            floor: SESSION_FLOOR,
            seq: AtomicU64::new(0),
        })
    }

    /// Another floor per session (tests).
    pub fn with_floor(mut self, floor: usize) -> Self {
        self.floor = floor;
        self
    }

    /// Octets of arriving bodies in memory now (beyond the floors).
    pub fn held(&self) -> usize {
        self.pool.held.load(Ordering::Acquire)
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

/// Runs a short file operation from async code, in place: appending a few
/// dozen KiB to a file or reading one back goes to the page cache in
/// microseconds, and doing it here costs no thread hop, no second buffer
/// and no extra thread (a thousand sessions handing writes to blocking
/// threads grew a hundred threads, each with its own malloc arena and
/// stack, which is the memory this module exists to save).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    f()
}

impl Drop for Spilled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A message body as it arrives. Receivers append to [`BodyBuf::mem`];
/// the session asks [`BodyBuf::keep`] after each read.
#[derive(Debug, Default)]
pub struct BodyBuf {
    /// The octets not yet written to the file (all of them, for a small
    /// body).
    pub mem: Vec<u8>,
    spilled: Option<Spilled>,
    /// The first write error; the body is then incomplete and refused at
    /// the end (451), and nothing more is written.
    failed: Option<io::Error>,
    /// Octets of `mem` counted in the pool, and the pool.
    counted: usize,
    pool: Option<Arc<Pool>>,
}

impl Drop for BodyBuf {
    fn drop(&mut self) {
        self.uncount();
    }
}

impl BodyBuf {
    /// A body that starts with `head` (our trace header).
    pub fn with_head(head: &[u8]) -> Self {
        let mut mem = Vec::with_capacity(head.len() + 8192);
        mem.extend_from_slice(head);
        Self {
            mem,
            spilled: None,
            failed: None,
            counted: 0,
            pool: None,
        }
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

    fn uncount(&mut self) {
        if let Some(p) = &self.pool {
            p.release(self.counted);
        }
        self.counted = 0;
    }

    /// After a read: whether the octets in memory may stay there: within
    /// the floor, or while the pool has room for them (they are counted).
    /// When not, the caller [`spill`](Self::spill)s them.
    pub fn keep(&mut self, dir: &IncomingDir) -> bool {
        let len = self.mem.len();
        if len <= dir.floor {
            // Before a file: a small body; after: the latest reads.
            return true;
        }
        if self.spilled.is_some() {
            return false;
        }
        let growth = len.saturating_sub(self.counted);
        if !dir.pool.try_take(growth) {
            return false;
        }
        self.counted = len;
        self.pool.get_or_insert_with(|| dir.pool.clone());
        true
    }

    /// [`keep`](Self::keep), else [`spill`](Self::spill); whether it spilled.
    #[cfg(test)]
    fn settle(&mut self, dir: &IncomingDir) -> bool {
        let spill = !self.keep(dir);
        if spill {
            self.spill(dir);
        }
        spill
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
        self.uncount();
        // What a session keeps between reads: the floor, not the largest
        // body or read it ever had.
        if self.mem.capacity() > dir.floor {
            self.mem.shrink_to(dir.floor);
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
        // From here the body is the pipeline's (and its budget's).
        self.uncount();
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
        let dir = IncomingDir::open(tmp.path(), 0).unwrap().with_floor(4096);
        let mut small = BodyBuf::with_head(b"Received: x\r\n");
        assert!(!small.settle(&dir));
        assert_eq!(small.load().unwrap(), b"Received: x\r\n");

        let mut big = BodyBuf::with_head(b"H\r\n");
        let mut expect = b"H\r\n".to_vec();
        for i in 0..100u32 {
            let line = format!("line {i:05} {}\r\n", "x".repeat(90));
            big.mem.extend_from_slice(line.as_bytes());
            expect.extend_from_slice(line.as_bytes());
            big.settle(&dir);
            assert!(big.mem.len() <= 4096, "memory holds only the unspilled tail");
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
    async fn bodies_stay_in_memory_while_the_pool_has_room_and_give_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = IncomingDir::open(tmp.path(), 100_000).unwrap().with_floor(1000);
        let mut a = BodyBuf::with_head(&[b'a'; 60_000]);
        assert!(!a.settle(&dir), "room in the pool");
        assert_eq!(dir.held(), 60_000);
        let mut b = BodyBuf::with_head(&[b'b'; 60_000]);
        assert!(b.settle(&dir), "the pool is full: to a file");
        assert_eq!((dir.held(), b.mem.len()), (60_000, 0));
        b.mem.extend_from_slice(&[b'b'; 500]);
        assert!(!b.settle(&dir), "after a spill, reads up to the floor stay");
        let body = a.load().unwrap();
        assert_eq!((body.len(), dir.held()), (60_000, 0), "taken by the pipeline");
        drop(b);
        let mut c = BodyBuf::with_head(&[b'c'; 90_000]);
        assert!(!c.settle(&dir));
        drop(c);
        assert_eq!(dir.held(), 0, "a dropped body gives its share back");
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
