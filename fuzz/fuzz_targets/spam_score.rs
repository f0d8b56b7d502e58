//! The spam score on arbitrary input: the message view (headers, decoded
//! text, HTML, URIs), the tokenizer and the built-in rules must never panic,
//! and the score must be a finite number.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice::spam::filter::{SpamConfig, SpamFilter};

fn filter() -> &'static SpamFilter {
    static FILTER: OnceLock<SpamFilter> = OnceLock::new();
    FILTER.get_or_init(|| {
        let filter = SpamFilter::new(
            SpamConfig {
                auth: false,
                ..SpamConfig::default()
            },
            None,
        )
        .expect("built-in rules compile");
        // A tiny model, so the classifier path runs too.
        let mut model = sluice::spam::bayes::Model::new();
        for i in 0..12 {
            let spam = format!("Subject: buy now {i}\r\n\r\nFREE money, click here http://x{i}.example/\r\n");
            let ham = format!("Subject: meeting {i}\r\n\r\nSee you at the meeting on Tuesday, {i}.\r\n");
            model.learn(&sluice::spam::tokenize::tokens(spam.as_bytes()), true);
            model.learn(&sluice::spam::tokenize::tokens(ham.as_bytes()), false);
        }
        filter.set_model(Some(model));
        filter
    })
}

fuzz_target!(|data: &[u8]| {
    let scored = filter().score_offline(data);
    assert!(scored.score.is_finite(), "{}", scored.score);
    if let Some(p) = scored.bayes {
        assert!((0.0..=1.0).contains(&p), "{p}");
    }
});
