//! No archive unopened: banned names inside every archive type, and the
//! `scan.unscannable` policy for encrypted, unknown and too large archives
//! and for clamd's "limits exceeded" answers, through the running server
//! (a real clamd where a scanner is involved). Every archive is generated
//! here, never fetched.

use sluice::scan::archive::rar_build;

#[path = "../src/scan/archive/testkit.rs"]
mod testkit;
use testkit::*;

use crate::scan::with_attachment;
use crate::util::services::Clamd;
use crate::util::*;

const EVIL: &[u8] = b"MZ\x90\0this would be a program";

async fn relay(sink: &Sink, extra: &str) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let toml = format!("{}\n{extra}\n", base_toml(&sink.next_hop()));
    TestRelay::start_in(dir, &toml, |_| {}).await
}

async fn send(relay: &TestRelay, name: &str, file: &[u8]) -> String {
    let mut c = relay.client().await;
    c.cmd("EHLO client.example", "250").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    c.data(&with_attachment(name, file)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_name_is_found_inside_every_archive_type() {
    let sink = Sink::start().await;
    // The names are a local check: no clamd needed.
    let relay = relay(&sink, "").await;
    let files: &[(&str, &[u8])] = &[("readme.txt", b"hello"), ("docs/invoice.exe", EVIL)];
    let t = tar(files);
    let mut nested = zip(files);
    for i in 0..3 {
        nested = zip(&[(&format!("level{i}.zip"), &nested)]);
    }
    let rar = |v5: bool| {
        let f = [("readme.txt", &b"hello"[..], false), ("docs/invoice.exe", EVIL, false)];
        if v5 {
            rar_build::rar5(&f, false)
        } else {
            rar_build::rar4(&f, false)
        }
    };
    let cases = [
        ("files.tar", t.clone()),
        ("files.tgz", gz(&t, None)),
        ("files.tar.bz2", bz2(&t)),
        ("files.tar.xz", xz(&t)),
        ("files.7z", sevenz(files)),
        ("files.cab", cab(files)),
        ("files.rar", rar(false)),
        ("files5.rar", rar(true)),
        ("nested.zip", nested.clone()),
        ("zip-in.7z", sevenz(&[("readme.txt", b"hello"), ("inner.zip", &nested)])),
        ("disk.iso", sluice::scan::archive::iso_build::iso(files, true)),
        (
            "zip-in.iso",
            sluice::scan::archive::iso_build::iso(&[("readme.txt", b"hello"), ("docs.zip", &zip(files))], true),
        ),
    ];
    for (name, data) in &cases {
        let r = send(&relay, name, data).await;
        assert_eq!(
            r, "554 5.7.1 Message rejected: banned name \"docs/invoice.exe\" inside an archive",
            "{name}"
        );
    }
    // Control: the same archives without the program pass.
    let clean: &[(&str, &[u8])] = &[("readme.txt", b"hello"), ("docs/invoice.pdf", b"%PDF-1.4")];
    for (name, data) in [
        ("clean.tgz", gz(&tar(clean), None)),
        ("clean.7z", sevenz(clean)),
        ("clean.zip", zip(clean)),
    ] {
        let r = send(&relay, name, &data).await;
        assert!(r.starts_with("250"), "{name}: {r}");
    }
    assert_eq!(sink.wait_for(3).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscannable_archives_are_rejected_with_the_reject_policy() {
    let sink = Sink::start().await;
    let relay = relay(
        &sink,
        "[scan]\nunscannable = \"reject\"\narchive_max_size = 1048576\narchive_max_depth = 3\n",
    )
    .await;
    let mut events = relay.running().events.subscribe();
    let mut deep = zip(&[("a.txt", b"hello")]);
    for i in 0..4 {
        deep = zip(&[(&format!("level{i}.zip"), &deep)]);
    }
    let cases = [
        (
            "secret.zip",
            encrypt_flag(zip(&[("a.txt", b"hello")])),
            "encrypted zip archive",
        ),
        ("secret.rar", rar_build::rar5(&[], true), "encrypted RAR 5 archive"),
        (
            "zeros.zip",
            zip_bomb(4 << 20),
            "more than 1048576 octets unpacked from archives",
        ),
        ("deep.zip", deep, "archives nested deeper than 3"),
        ("old.ace", ace(), "ACE archive (neither sluice nor clamd opens it)"),
    ];
    for (name, data, what) in &cases {
        let r = send(&relay, name, data).await;
        assert_eq!(
            r,
            format!("554 5.7.1 Message rejected: cannot be scanned: {what}"),
            "{name}"
        );
    }
    let e = wait_event(&mut events, |e| match e {
        sluice::events::Event::Unscannable { kind, action, .. } => Some((*kind, *action)),
        _ => None,
    })
    .await;
    assert_eq!(
        e,
        (
            sluice::events::UnscannableKind::Encrypted,
            sluice::events::UnscannableAction::Reject
        )
    );
    let m = relay.running().events.metrics().clone();
    let rejected = m.messages.with_label_values(&["rejected", "unscannable"]).get();
    assert_eq!(rejected, 5, "counted as refusals");
    assert_eq!(event_count(&relay.running().events, "unscannable"), 5);
    assert!(sink.messages().is_empty());
}

/// A real clamd with the test database, and the `[clamd]` section for it
/// (keep the first alive as long as the relay).
async fn real_clamd() -> (Clamd, String) {
    let clamd = tokio::task::spawn_blocking(|| Clamd::start(&corpora().join("clamav-db")))
        .await
        .unwrap();
    let toml = format!(
        "[clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\ntimeout = \"10s\"\n",
        clamd.port
    );
    (clamd, toml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscannable_archives_are_quarantined_by_default_with_a_real_clamd() {
    let (_clamd, clamd_toml) = real_clamd().await;
    let sink = Sink::start().await;
    let relay = relay(&sink, &clamd_toml).await;
    let mut events = relay.running().events.subscribe();
    let r = send(
        &relay,
        "secret.rar",
        &rar_build::rar4(&[("report.doc", b"x", true)], false),
    )
    .await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let id = r.rsplit(' ').next().unwrap().to_string();
    let q = sluice::quarantine::Quarantine::new(relay.path("spool/quarantine"));
    let e = q.entry(&id).expect("in the quarantine");
    assert_eq!(e.reason.to_string(), "unscannable: encrypted RAR 4 archive");
    let got = wait_event(&mut events, |e| match e {
        sluice::events::Event::Unscannable { id: i, action, .. } if *i == id => Some(*action),
        _ => None,
    })
    .await;
    assert_eq!(got, sluice::events::UnscannableAction::Quarantine);
    // An unknown format from outside: quarantined too; a virus beside an
    // unscannable archive is still refused as a virus.
    let r = send(&relay, "old.ace", &ace()).await;
    assert!(r.starts_with("250"), "{r}");
    let eicar = crate::scan::eicar();
    let secret = encrypt_flag(zip(&[("x.txt", b"x")]));
    let both = tar(&[("secret.zip", &secret), ("eicar.txt", &eicar)]);
    let r = send(&relay, "both.tar", &both).await;
    assert!(r.starts_with("554 5.7.1 Message rejected: virus found: "), "{r}");
    assert_eq!(q.list().unwrap().len(), 2);
    // A clean archive is delivered; nothing quarantined is.
    let r = send(&relay, "fine.tgz", &gz(&tar(&[("a.txt", b"hello")]), None)).await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1, "only the clean one reached the next hop");
}

/// A RAR whose files are compressed: sluice reads only its headers (no
/// unRAR), and Debian's clamd cannot open it either, so it is unscannable
/// (quarantined from outside by default), never delivered on clamd's "OK".
/// With `scan.scanner_unrar = true` (a clamd with unRAR) it is left to
/// clamd's verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_rar_nobody_unpacks_is_quarantined_unless_clamd_has_unrar() {
    let (_clamd, clamd_toml) = real_clamd().await;
    let sink = Sink::start().await;
    let packed = rar_build::rar4_compressed(&[("report.doc", b"what unRAR would unpack", false)]);
    let relay1 = relay(&sink, &clamd_toml).await;
    let r = send(&relay1, "report.rar", &packed).await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let id = r.rsplit(' ').next().unwrap().to_string();
    let q = sluice::quarantine::Quarantine::new(relay1.path("spool/quarantine"));
    let e = q.entry(&id).expect("in the quarantine");
    assert_eq!(e.reason.to_string(), "unscannable: compressed RAR 4 archive (no unRAR)");
    // The same RAR 5, and names still checked: a banned one is refused.
    let banned = rar_build::rar5_compressed(&[("invoice.exe", EVIL, false)]);
    let r = send(&relay1, "invoice.rar", &banned).await;
    assert!(r.starts_with("554 5.7.1"), "{r}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sink.messages().is_empty(), "nothing reached the next hop");

    let relay2 = relay(&sink, &format!("{clamd_toml}[scan]\nscanner_unrar = true\n")).await;
    let mut events = relay2.running().events.subscribe();
    let r = send(&relay2, "report.rar", &packed).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(sink.wait_for(1).await.len(), 1, "left to clamd, which passed it");
    let q2 = sluice::quarantine::Quarantine::new(relay2.path("spool/quarantine"));
    assert!(q2.list().unwrap().is_empty());
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(&*e, sluice::events::Event::Unscannable { .. }), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_policy_delivers_with_an_event() {
    let sink = Sink::start().await;
    let relay = relay(&sink, "[scan]\nunscannable = \"accept\"\n").await;
    let mut events = relay.running().events.subscribe();
    let r = send(&relay, "secret.zip", &encrypt_flag(zip(&[("a.txt", b"hello")]))).await;
    assert!(r.starts_with("250"), "{r}");
    let got = wait_event(&mut events, |e| match e {
        sluice::events::Event::Unscannable { kind, action, .. } => Some((*kind, *action)),
        _ => None,
    })
    .await;
    assert_eq!(
        got,
        (
            sluice::events::UnscannableKind::Encrypted,
            sluice::events::UnscannableAction::Accept
        )
    );
    assert_eq!(sink.wait_for(1).await.len(), 1);
}

/// One encrypted zip from `from`, and the action its `unscannable` event names.
async fn unscannable_from(relay: &TestRelay, from: &str) -> (String, sluice::events::UnscannableAction) {
    let mut events = relay.running().events.subscribe();
    let mut c = Client::connect_from(from, relay.addr).await;
    c.expect("220 mx.test.example").await;
    c.cmd("EHLO client.example", "250").await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c
        .data(&with_attachment(
            "secret.zip",
            &encrypt_flag(zip(&[("a.txt", b"hello")])),
        ))
        .await;
    let action = wait_event(&mut events, |e| match e {
        sluice::events::Event::Unscannable { ip, action, .. } if ip.to_string() == from => Some(*action),
        _ => None,
    })
    .await;
    (r, action)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_networks_follow_unscannable_trusted_and_outside_the_default() {
    use sluice::events::UnscannableAction::{Accept, Quarantine, Reject};
    let sink = Sink::start().await;
    // Default: the allowlist's encrypted zip is delivered, the outside's
    // is quarantined.
    let own = relay(&sink, "[policy]\nallowlist = [\"127.0.0.7/32\"]\n").await;
    let (r, action) = unscannable_from(&own, "127.0.0.7").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(action, Accept);
    assert_eq!(sink.wait_for(1).await.len(), 1, "delivered");
    let (r, action) = unscannable_from(&own, "127.0.0.8").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(action, Quarantine);
    let q = sluice::quarantine::Quarantine::new(own.path("spool/quarantine"));
    assert_eq!(q.list().unwrap().len(), 1, "the outside's is in the quarantine");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1, "and not delivered");
    // Stricter for the own networks, when a site wants it.
    let strict = relay(
        &sink,
        "[policy]\nallowlist = [\"127.0.0.7/32\"]\n[scan]\nunscannable = \"accept\"\nunscannable_trusted = \"reject\"\n",
    )
    .await;
    let (r, action) = unscannable_from(&strict, "127.0.0.7").await;
    assert_eq!(
        r,
        "554 5.7.1 Message rejected: cannot be scanned: encrypted zip archive"
    );
    assert_eq!(action, Reject);
    let (r, action) = unscannable_from(&strict, "127.0.0.8").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(action, Accept);
}

/// Two relays scanning in session with `clamd`: one that does not hand
/// clamd what it unpacked (`archive_member_scan_size = 0`), and one with
/// the default.
async fn without_and_with_members(sink: &Sink, clamd: &Clamd) -> (TestRelay, TestRelay) {
    let toml = format!(
        "[clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\ntimeout = \"10s\"\n[scan]\nlatency_budget = \"0s\"\n",
        clamd.port
    );
    let blind = relay(sink, &format!("{toml}archive_member_scan_size = 0\n")).await;
    (blind, relay(sink, &toml).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virus_deeper_than_clamd_descends_is_found_in_what_sluice_unpacked() {
    // A real clamd that stops descending into archives after 3 levels
    // (MaxRecursion; its default is 17, the idea is the same), and EICAR
    // in a zip inside three more zips.
    let clamd = tokio::task::spawn_blocking(|| Clamd::start_with(&corpora().join("clamav-db"), "MaxRecursion 3\n"))
        .await
        .unwrap();
    let mut nested = zip(&[("readme.txt", &crate::scan::eicar())]);
    for i in 0..4 {
        nested = zip(&[(&format!("level{i}.zip"), &nested)]);
    }
    let sink = Sink::start().await;
    let (blind, seeing) = without_and_with_members(&sink, &clamd).await;
    // Control: without the unpacked members, this clamd passes it.
    let r = send(&blind, "nested.zip", &nested).await;
    assert!(r.starts_with("250"), "clamd alone should not reach it: {r}");
    // With them (the default), it is refused as the virus it is.
    let r = send(&seeing, "nested.zip", &nested).await;
    assert!(r.starts_with("554 5.7.1 Message rejected: virus found: "), "{r}");
    assert!(r.contains("Eicar"), "{r}");
}

/// Methods clamd's readers do not unpack: BZip2 and Deflate in 7z (it
/// opens LZMA, LZMA2 and PPMd there), LZMA and PPMd in zip (it opens
/// deflate, Deflate64, bzip2 and xz there). The controls check it with
/// this clamd; what sluice unpacks is all it sees of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virus_in_a_method_clamd_cannot_open_is_found_in_what_sluice_unpacked() {
    use sevenz_rust2::EncoderMethod;
    use zip::CompressionMethod;
    let clamd = tokio::task::spawn_blocking(|| Clamd::start(&corpora().join("clamav-db")))
        .await
        .unwrap();
    let eicar = crate::scan::eicar();
    let files: &[(&str, &[u8])] = &[("readme.txt", b"hello"), ("test.txt", &eicar)];
    let sink = Sink::start().await;
    let (blind, seeing) = without_and_with_members(&sink, &clamd).await;
    let archives = [
        ("files.7z", "7z BZip2", sevenz_with(files, EncoderMethod::BZIP2)),
        ("files.7z", "7z Deflate", sevenz_with(files, EncoderMethod::DEFLATE)),
        ("files.zip", "zip PPMd", zip_with(files, CompressionMethod::Ppmd)),
        ("files.zip", "zip LZMA", zip_lzma("test.txt", &eicar)),
    ];
    for (name, method, archive) in archives {
        let r = send(&blind, name, &archive).await;
        assert!(
            r.starts_with("250"),
            "{method}: clamd alone should not see into it: {r}"
        );
        let r = send(&seeing, name, &archive).await;
        assert!(
            r.starts_with("554 5.7.1 Message rejected: virus found: Eicar"),
            "{method}: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virus_stored_in_a_rar_is_found_though_clamd_does_not_open_rar() {
    // Debian's clamd has no unRAR (it is non-free), so a RAR is opaque to
    // it; sluice reads the files stored uncompressed without unRAR. The
    // sample is ClamAV's test program, known to the test database by the
    // MD5 of the whole file (test.hdb): only a scanner given the file
    // itself finds it.
    let clamd = tokio::task::spawn_blocking(|| Clamd::start(&corpora().join("clamav-db")))
        .await
        .unwrap();
    let sample = std::fs::read(corpora().join("virus/clamav-testfiles/clam.exe")).unwrap();
    let sink = Sink::start().await;
    let (blind, seeing) = without_and_with_members(&sink, &clamd).await;
    for v5 in [false, true] {
        let f = [
            ("readme.txt", &b"hello"[..], false),
            ("report.dat", sample.as_slice(), false),
        ];
        let rar = if v5 {
            rar_build::rar5(&f, false)
        } else {
            rar_build::rar4(&f, false)
        };
        // Control: clamd alone passes it.
        let r = send(&blind, "files.rar", &rar).await;
        assert!(r.starts_with("250"), "v5 {v5}: clamd alone should not see into it: {r}");
        let r = send(&seeing, "files.rar", &rar).await;
        assert_eq!(
            r, "554 5.7.1 Message rejected: virus found: ClamAV-Test-File.UNOFFICIAL",
            "v5 {v5}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_networks_unscannable_archive_is_still_virus_scanned_when_outside_mail_is_rejected() {
    // "reject" for the outside is decided before the virus scan; a client
    // of the own networks, accepted, must not skip that scan with it.
    let clamd = tokio::task::spawn_blocking(|| Clamd::start(&corpora().join("clamav-db")))
        .await
        .unwrap();
    let sink = Sink::start().await;
    let toml = format!(
        "[clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\ntimeout = \"10s\"\n[policy]\nallowlist = [\"127.0.0.7/32\"]\n\
         [scan]\nlatency_budget = \"0s\"\nunscannable = \"reject\"\nunscannable_trusted = \"accept\"\n",
        clamd.port
    );
    let own = relay(&sink, &toml).await;
    let secret = encrypt_flag(zip(&[("x.txt", b"x")]));
    let both = tar(&[("secret.zip", &secret), ("eicar.txt", &crate::scan::eicar())]);
    let send_from = |from: &'static str, file: Vec<u8>| {
        let own = &own;
        async move {
            let mut c = Client::connect_from(from, own.addr).await;
            c.expect("220 mx.test.example").await;
            c.cmd("EHLO client.example", "250").await;
            c.envelope("a@client.example", &["user@example.com"]).await;
            c.data(&with_attachment("files.tar", &file)).await
        }
    };
    let r = send_from("127.0.0.7", both.clone()).await;
    assert!(r.starts_with("554 5.7.1 Message rejected: virus found: "), "{r}");
    let r = send_from("127.0.0.8", both).await;
    assert!(r.starts_with("554 5.7.1 Message rejected: "), "{r}");
    // Without a virus: the own networks' is delivered, the outside's refused.
    let r = send_from("127.0.0.7", secret.clone()).await;
    assert!(r.starts_with("250"), "{r}");
    let r = send_from("127.0.0.8", secret).await;
    assert_eq!(
        r,
        "554 5.7.1 Message rejected: cannot be scanned: encrypted zip archive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_limits_exceeded_is_unscannable_not_a_virus() {
    // clamd alerts when what it is given is past its limits
    // (AlertExceedsMax): here the message itself, over MaxFileSize. (For a
    // member of a zip past MaxFileSize, clamd 1.4 skips it silently: our own
    // archive_max_size is the bound there.)
    let clamd = tokio::task::spawn_blocking(|| {
        Clamd::start_with(
            &corpora().join("clamav-db"),
            "AlertExceedsMax yes\nMaxFileSize 1M\nMaxScanSize 2M\n",
        )
    })
    .await
    .unwrap();
    let sink = Sink::start().await;
    let toml = format!(
        "[clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\ntimeout = \"10s\"\n[scan]\nunscannable = \"reject\"\n",
        clamd.port
    );
    let relay = relay(&sink, &toml).await;
    let r = send(&relay, "big.txt", &vec![b'a'; 1536 << 10]).await;
    assert!(
        r.starts_with("554 5.7.1 Message rejected: cannot be scanned: the virus scanner could not look into everything (Heuristics.Limits.Exceeded."),
        "{r}\n{}",
        clamd.log()
    );
    // Counted as what it is, not as a virus.
    let scans = |verdict: &str| {
        let ep = format!("tcp://127.0.0.1:{}", clamd.port);
        relay
            .running()
            .events
            .metrics()
            .scanner_scans
            .with_label_values(&[ep.as_str(), verdict])
            .get()
    };
    // (The raw message and the decoded bundle are each a scan.)
    assert!(scans("unscannable") >= 1 && scans("virus") == 0);
    // Small enough for clamd: delivered.
    let r = send(&relay, "small.zip", &zip(&[("small.txt", b"hello")])).await;
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_during_an_outage_an_unscannable_archive_goes_to_the_quarantine_after_its_scan() {
    let clamd = tokio::task::spawn_blocking(|| Clamd::start(&corpora().join("clamav-db")))
        .await
        .unwrap();
    let proxy = crate::scan::Proxy::start(clamd.port).await;
    let sink = Sink::start().await;
    let toml = format!(
        "[clamd]\nendpoints = [\"tcp://127.0.0.1:{}\"]\ntimeout = \"5s\"\n\
         [scan]\non_failure = \"hold\"\nretry = \"300ms\"\n",
        proxy.port
    );
    let relay = relay(&sink, &toml).await;
    let mut events = relay.running().events.subscribe();
    proxy.set_down(true);
    let r = send(&relay, "secret.zip", &encrypt_flag(zip(&[("a.txt", b"hello")]))).await;
    assert!(r.starts_with("250"), "{r}");
    let id = r.rsplit(' ').next().unwrap().to_string();
    // Held for its scan: clamd is down, nothing is decided yet.
    let q = sluice::quarantine::Quarantine::new(relay.path("spool/quarantine"));
    assert!(q.entry(&id).is_err());
    proxy.set_down(false);
    let (mode, action) = wait_event(&mut events, |e| match e {
        sluice::events::Event::Unscannable {
            id: i, mode, action, ..
        } if *i == id => Some((*mode, *action)),
        _ => None,
    })
    .await;
    assert_eq!(
        (mode, action),
        (
            sluice::events::ScanMode::Deferred,
            sluice::events::UnscannableAction::Quarantine
        )
    );
    let deadline = std::time::Instant::now() + TIMEOUT;
    while q.entry(&id).is_err() {
        assert!(std::time::Instant::now() < deadline, "not quarantined");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        q.entry(&id).unwrap().reason.to_string(),
        "unscannable: encrypted zip archive"
    );
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert!(sink.messages().is_empty(), "never delivered");
}
