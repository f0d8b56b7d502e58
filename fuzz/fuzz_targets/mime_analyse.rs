//! Our MIME decoder on arbitrary input: `scan::mime::analyse` must never
//! panic, must stay inside its limits, and the banned-attachment check on
//! its result must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::scan::banned::Banned;
use sluice::scan::mime::{Limits, analyse};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_depth: 4,
        max_parts: 64,
        max_decoded: 1 << 20,
    };
    let a = analyse(data, &limits);
    let decoded: usize = a.leaves.iter().map(|l| l.data.len()).sum();
    assert!(decoded <= limits.max_decoded, "{decoded} decoded octets");
    assert!(a.leaves.len() <= limits.max_parts);
    let _ = Banned::default().check(&a);
});
