//! The archive lister on arbitrary input (`scan::archive::list_one`: zip,
//! RAR 4/5 headers, 7z, tar, gzip, bzip2, xz, cab, ISO 9660, nested): it must never
//! panic and must stay inside its limits (entries, depth, unpacked octets;
//! the fuzzer's RSS limit catches an inflated bomb).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::scan::archive::{ArchiveLimits, UnscannableKind, list_one};

fuzz_target!(|data: &[u8]| {
    let limits = ArchiveLimits {
        max_depth: 4,
        max_entries: 64,
        max_size: 1 << 20,
        keep_members: 64 << 10,
        compressed_rar_unscannable: data.len() % 2 == 1,
    };
    let l = list_one(data, &limits);
    assert!(l.names.len() <= limits.max_entries, "{} names", l.names.len());
    let kept: usize = l.members.iter().map(Vec::len).sum();
    assert!(kept as u64 <= limits.keep_members, "{kept} octets of members kept");
    assert!(l.members.iter().all(|m| !m.is_empty()));
    if l.archives == 0 {
        // Nothing opened: nothing listed, nothing past a limit.
        assert!(l.names.is_empty() || l.unscannable.is_none());
        assert!(!matches!(&l.unscannable, Some(u) if u.kind == UnscannableKind::PastLimits));
    }
});
