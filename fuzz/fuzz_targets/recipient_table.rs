//! The recipient table parser (Postfix map text) on arbitrary bytes:
//! `Table::parse` must give a table or a syntax error naming the file and a
//! line, never panic. On a table, every address on a `REJECT` line must look
//! up as `Unknown` (a rejection wins over any `OK`), with or without an
//! extension delimiter, and other lookups must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::policy::recipients::{Lookup, Table, TableError};
use sluice::proto::Mailbox;

const NAME: &str = "fuzz.table";

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    let table = match Table::parse(data, NAME) {
        Ok(t) => t,
        Err(TableError::Syntax { path, line, problem }) => {
            assert_eq!(path, NAME);
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {problem}");
            return;
        }
        Err(e) => panic!("I/O error from parse: {e}"),
    };
    assert!(table.len() <= lines);
    for raw in data.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(raw);
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        if key.starts_with('#') {
            continue;
        }
        let key = key.to_lowercase();
        let Some((local, domain)) = key.trim_end_matches('.').split_once('@') else {
            continue;
        };
        let mb = Mailbox {
            local: local.to_string(),
            domain: domain.to_string(),
        };
        let plain = table.lookup(&mb, None);
        let ext = table.lookup(&mb, Some('+'));
        if value.eq_ignore_ascii_case("REJECT") {
            assert_eq!(plain, Lookup::Unknown, "{key} is on a REJECT line");
            assert_eq!(ext, Lookup::Unknown, "{key} is on a REJECT line (delimiter +)");
        }
    }
});
