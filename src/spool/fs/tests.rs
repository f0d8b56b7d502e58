use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::mail::envelope::Recipient;
use crate::proto::address::parse_mailbox;

fn env(id: &str, rcpts: usize) -> Envelope {
    Envelope {
        id: id.into(),
        received_at: 1,
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client.example".into(),
        mail_from: Some(parse_mailbox("a@b.example").unwrap()),
        body: Default::default(),
        smtputf8: false,
        ret: None,
        envid: None,
        scan_pending: false,
        client_name: None,
        esmtp: false,
        generated: None,
        rcpts: (0..rcpts)
            .map(|i| Recipient {
                addr: parse_mailbox(&format!("u{i}@example.com")).unwrap(),
                notify: None,
                orcpt: None,
            })
            .collect(),
    }
}

#[tokio::test]
async fn store_recover_and_mark() {
    let dir = tempfile::tempdir().unwrap();
    let r = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
    assert!(r.pending.is_empty());
    let a = r.spool.store(env("A", 2), b"body A\r\n".to_vec()).await.unwrap();
    let b = r.spool.store(env("B", 1), b"body B\r\n".to_vec()).await.unwrap();
    let c = r.spool.store(env("C", 1), b"body C\r\n".to_vec()).await.unwrap();
    assert_eq!(r.spool.read_body(b.sref).unwrap(), b"body B\r\n");
    r.spool.mark_rcpt_done(a.sref, 1);
    r.spool.mark_done(c.sref);
    r.spool.close();

    let r2 = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
    let ids: Vec<_> = r2.pending.iter().map(|s| s.envelope.id.as_str()).collect();
    assert_eq!(ids, ["A", "B"]);
    assert_eq!(r2.pending[0].done, vec![false, true]);
    assert_eq!(r2.spool.read_body(r2.pending[0].sref).unwrap(), b"body A\r\n");
    for s in &r2.pending {
        r2.spool.mark_done(s.sref);
    }
    r2.spool.close();

    // Everything done: the old segments are gone after the next start.
    let r3 = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
    assert!(r3.pending.is_empty());
    r3.spool.close();
    let logs = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(logs, 1, "only the fresh, empty segment remains");
}

#[tokio::test]
async fn torn_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let r = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
    let a = r.spool.store(env("A", 1), b"body A\r\n".to_vec()).await.unwrap();
    r.spool.close();
    // Simulate a crash mid-write: half a record after A.
    let path = seg_path(dir.path(), a.sref.segment, "log");
    let mut partial = Vec::new();
    encode(&mut partial, b"{}", b"never acknowledged");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&partial[..partial.len() / 2]).unwrap();
    drop(f);
    let r2 = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
    assert_eq!(r2.pending.len(), 1);
    assert_eq!(r2.pending[0].envelope.id, "A");
    r2.spool.close();
}

#[tokio::test]
async fn concurrent_stores_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let r = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
    let spool = r.spool.clone();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            spool.store(env(&format!("m{i}"), 1), vec![b'x'; 4096]).await.unwrap()
        }));
    }
    let mut refs = HashSet::new();
    for t in tasks {
        refs.insert(t.await.unwrap().sref);
    }
    assert_eq!(refs.len(), 200);
    // Group commit: 200 concurrent stores took far fewer flushes.
    let (records, flushes) = (
        spool.stats.records.load(Ordering::Relaxed),
        spool.stats.flushes.load(Ordering::Relaxed),
    );
    assert_eq!(records, 200);
    assert!(flushes < 100, "{flushes} flushes for 200 concurrent records");
    spool.close();
    // Rotation at 1 MiB: 200 x 4 KiB records span more than one segment.
    let r2 = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
    assert_eq!(r2.pending.len(), 200);
    r2.spool.close();
}

// === compaction ===

/// Waits (at most 5 s) until `path` is gone.
fn until_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while path.exists() {
        assert!(Instant::now() < deadline, "{} still there", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn a_mostly_done_segment_is_compacted_and_its_live_messages_keep_their_refs() {
    let dir = tempfile::tempdir().unwrap();
    // 16 KiB segments: two small messages, then 4 KiB ones until the
    // first segment is full.
    let r = FsSpool::open(dir.path(), true, 16 << 10).unwrap();
    let body = |c: u8| vec![c; 512];
    let stuck = r.spool.store(env("STUCK", 3), body(b's')).await.unwrap();
    let gone = r.spool.store(env("GONE", 1), body(b'g')).await.unwrap();
    let first = stuck.sref.segment;
    let mut others = Vec::new();
    loop {
        let s = r
            .spool
            .store(env(&format!("D{}", others.len()), 1), vec![b'd'; 4096])
            .await
            .unwrap();
        if s.sref.segment != first {
            break;
        }
        others.push(s);
    }
    assert!(others.len() >= 3, "{}", others.len());
    r.spool.mark_rcpt_done(stuck.sref, 0);

    // All but two delivered: the segment is mostly done, and goes.
    for s in &others {
        r.spool.mark_done(s.sref);
    }
    until_gone(&seg_path(dir.path(), first, "log"));
    until_gone(&seg_path(dir.path(), first, "done"));
    assert_eq!(r.spool.stats.compactions.load(Ordering::Relaxed), 1);
    // The queue still holds the old refs: reads and marks follow the copies.
    assert_eq!(r.spool.read_body(stuck.sref).unwrap(), body(b's'));
    assert_eq!(r.spool.read_body(gone.sref).unwrap(), body(b'g'));
    r.spool.mark_rcpt_done(stuck.sref, 1);
    r.spool.mark_done(gone.sref);
    r.spool.close();

    let r2 = FsSpool::open(dir.path(), true, 8 << 10).unwrap();
    let ids: Vec<_> = r2.pending.iter().map(|s| s.envelope.id.as_str()).collect();
    // The message stored after the first segment, then the copy of STUCK.
    assert_eq!(
        ids,
        [format!("D{}", others.len()).as_str(), "STUCK"],
        "each live message once; GONE done"
    );
    assert_eq!(
        r2.pending[1].done,
        [true, true, false],
        "the recipient done before the compaction came along; the one after was marked on the copy"
    );
    assert_eq!(r2.spool.read_body(r2.pending[1].sref).unwrap(), body(b's'));
    r2.spool.close();
}

#[tokio::test]
async fn a_crash_between_copy_and_unlink_recovers_each_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let r = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
    let a = r.spool.store(env("A", 2), b"body A\r\n".to_vec()).await.unwrap();
    r.spool.store(env("B", 1), b"body B\r\n".to_vec()).await.unwrap();
    r.spool.store(env("C", 1), b"body C\r\n".to_vec()).await.unwrap();
    r.spool.mark_rcpt_done(a.sref, 1);
    r.spool.close();
    let seg = a.sref.segment;

    // Steps 1 and 2 of a compaction of `seg`, then the crash (no unlink).
    let mut live: HashMap<u64, SegLive> = HashMap::new();
    for (s, _) in recover_segment(dir.path(), seg).unwrap() {
        live.entry(seg).or_default().add(s.sref);
    }
    let mut w = Writer::new(dir.path().to_path_buf(), seg + 1, true, 1 << 20, live, Arc::default()).unwrap();
    let moved = w.copy_live(seg).unwrap();
    assert_eq!(moved.len(), 3);
    drop(w);
    assert!(seg_path(dir.path(), seg, "log").exists());
    // ...and the copy's done marks were lost as well.
    std::fs::remove_file(seg_path(dir.path(), seg + 1, "done")).unwrap();

    for _ in 0..2 {
        let r2 = FsSpool::open(dir.path(), true, 1 << 20).unwrap();
        let mut ids: Vec<_> = r2.pending.iter().map(|s| s.envelope.id.clone()).collect();
        ids.sort();
        assert_eq!(ids, ["A", "B", "C"], "each message exactly once");
        assert!(r2.pending.iter().all(|s| s.sref.segment == seg + 1), "the copies win");
        let a2 = r2.pending.iter().find(|s| s.envelope.id == "A").unwrap();
        assert_eq!(a2.done, [false, true], "recipients done in either copy stay done");
        assert_eq!(r2.spool.read_body(a2.sref).unwrap(), b"body A\r\n");
        // The originals are done: their segment went at this start.
        assert!(!seg_path(dir.path(), seg, "log").exists());
        r2.spool.close();
    }
}

#[test]
fn a_record_compacted_twice_is_still_found_by_its_first_place() {
    let at = |segment, offset| SpoolRef {
        segment,
        offset,
        len: 100,
    };
    let mut moves = Moves::default();
    let first = at(1, 0);
    moves.moved(first, at(3, 500));
    assert_eq!(moves.resolve(first), at(3, 500));
    // The copy's segment is compacted in turn.
    moves.moved(at(3, 500), at(5, 0));
    assert_eq!(moves.resolve(first), at(5, 0));
    assert_eq!(moves.resolve(at(2, 0)), at(2, 0), "never moved");
    // Done: the mark goes to where it is now, and nothing is kept.
    assert_eq!(moves.done(first), at(5, 0));
    assert_eq!(moves.resolve(first), first);
    assert_eq!(moves, Moves::default());
}
