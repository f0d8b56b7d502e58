//! The Postfix log reader of `sluice bans import-postfix-log` on arbitrary
//! text: `Parser::line` must never panic, whatever "now" and UTC offset it
//! runs with; an offence has a plausible time and short evidence, and
//! `parse_all` finds the same offences, sorted by time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::firewall::postfix_log::{Parser, parse_all};

/// 9999-12-31T23:59:59Z plus two days (time zones, leap second).
const LATEST: u64 = 253_402_300_799 + 2 * 86_400;
/// 2026-11-24T01:02:03Z.
const NOW: u64 = 1_795_521_600;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // "now" and the offset also come from the input (text seeds still work).
    let mut head = [0u8; 12];
    let n = data.len().min(12);
    head[..n].copy_from_slice(&data[..n]);
    let fuzz_now = u64::from_le_bytes(head[..8].try_into().unwrap());
    let fuzz_offset = i32::from_le_bytes(head[8..].try_into().unwrap());
    let parsers = [
        Parser::new(NOW),
        Parser::new(0).with_utc_offset(-86_400),
        Parser::new(u64::MAX).with_utc_offset(i32::MAX),
        Parser::new(fuzz_now).with_utc_offset(fuzz_offset),
    ];
    for mut p in parsers {
        for line in text.lines() {
            if let Some(o) = p.line(line) {
                assert!(o.at <= LATEST, "time {} from {line:?}", o.at);
                assert!(o.evidence.len() <= 160, "evidence {:?}", o.evidence);
                assert!(o.evidence.contains(": "), "evidence {:?}", o.evidence);
            }
        }
    }
    let mut p = Parser::new(NOW);
    let mut want: Vec<_> = text.lines().filter_map(|l| p.line(l)).collect();
    want.sort_by_key(|o| o.at);
    let (got, read) = parse_all(text.lines().map(str::to_string), NOW);
    assert_eq!(read, text.lines().count());
    assert_eq!(got, want);
});
