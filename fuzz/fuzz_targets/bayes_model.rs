//! The model file reader on arbitrary input (the token counts and the
//! n-gram classifier's section): never a panic, and what it reads it
//! writes back so that it reads again the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::spam::bayes::Model;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Model::load(&mut &data[..]) else {
        return;
    };
    let mut out = Vec::new();
    model.save(&mut out, 0).expect("writing to memory");
    let again = Model::load(&mut out.as_slice()).expect("a saved model reads back");
    assert_eq!((again.nspam(), again.nham()), (model.nspam(), model.nham()));
    assert_eq!(again.ngram().counts(), model.ngram().counts());
    let probe = sluice::spam::ngram::Features::of(b"Subject: probe\r\n\r\nprobe text\r\n");
    let (a, b) = (model.ngram().classify(&probe), again.ngram().classify(&probe));
    assert!((0.0..=1.0).contains(&a) && a == b, "{a} {b}");
});
