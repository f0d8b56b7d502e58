use std::collections::HashSet;

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
