//! The spam rules parser and compiler on an arbitrary rules file:
//! `RuleSet::compile` must give a rule set or an error that points at a line
//! of the file, never panic; a compiled set is evaluated on a message made
//! of the same text (so its patterns and metas run too), and the outcome must
//! be consistent: hits sorted, no `__` sub-rules, score the sum of the hits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::spam::rules::{RuleSet, View};

const FILE: &str = "fuzz.rules";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let lines = text.lines().count();
    let set = match RuleSet::compile(&[(FILE.to_string(), text.clone())]) {
        Ok(set) => set,
        Err(e) => {
            assert_eq!(e.file, FILE);
            assert!((1..=lines.max(1)).contains(&e.line), "{e} (file has {lines} lines)");
            assert!(!e.what.is_empty());
            assert!(!e.what.contains('\n'), "multi-line error: {e}");
            return;
        }
    };
    let _ = (set.len(), set.is_empty());
    let first = text.lines().next().unwrap_or("").to_string();
    let headers = [
        ("Subject".to_string(), first.clone()),
        ("From".to_string(), text.clone()),
    ];
    let uris = [first];
    let view = View {
        headers: &headers,
        body: &text,
        rawbody: &text,
        uris: &uris,
        full: &text,
        bayes: Some(data.len() as f64 / (data.len() as f64 + 1.0)),
        ngram: Some(1.0 / (data.len() as f64 + 1.0)),
    };
    let out = set.evaluate(&view);
    assert!(!out.score.is_nan());
    assert!(out.hits.windows(2).all(|w| w[0].name <= w[1].name), "{:?}", out.hits);
    assert!(out.hits.iter().all(|h| !h.name.starts_with("__")));
    let sum: f64 = out.hits.iter().map(|h| h.score).sum();
    assert!(sum == out.score || (sum.is_infinite() && out.score.is_infinite()));
});
