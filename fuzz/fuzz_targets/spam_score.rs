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
        // A tiny model, so both classifiers' paths run too.
        let mut model = sluice::spam::bayes::Model::new();
        let mut batch = Vec::new();
        for i in 0..12 {
            let spam = format!("Subject: buy now {i}\r\n\r\nFREE money, click here http://x{i}.example/\r\n");
            let ham = format!("Subject: meeting {i}\r\n\r\nSee you at the meeting on Tuesday, {i}.\r\n");
            for (raw, is_spam) in [(spam, true), (ham, false)] {
                sluice::spam::learn_message(&mut model, raw.as_bytes(), is_spam, false, 50_000, &mut batch);
            }
        }
        assert!(sluice::spam::finish_batch(&mut model, &batch, false));
        filter.set_model(Some(model));
        filter
    })
}

fuzz_target!(|data: &[u8]| {
    let scored = filter().score_offline(data);
    assert!(scored.score.is_finite(), "{}", scored.score);
    for p in [scored.bayes, scored.ngram].into_iter().flatten() {
        assert!((0.0..=1.0).contains(&p), "{p}");
    }
    assert!(
        scored.skipped || scored.ngram.is_some(),
        "the n-gram classifier always has an opinion once trained"
    );
});
