//! The milter protocol as an MTA sends it: `sluice::proto::milter::Decoder`
//! on any octets, fed in two pieces split anywhere. Never panics; the same
//! commands (or the same error) come out however the input is split; a
//! decoder that errs stays errored; and every response encodes to a frame
//! that reads back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proto::milter::{Command, Decoder, MilterError, Response, parse_response};

/// Every command, then the error (if any), of `pieces` fed in order.
fn decode(pieces: &[&[u8]]) -> (Vec<Command>, Option<MilterError>) {
    // A small frame limit, so the fuzzer reaches it.
    let mut d = Decoder::new(4096);
    let mut out = Vec::new();
    for p in pieces {
        d.push(p);
        loop {
            match d.next_command() {
                Ok(Some(c)) => out.push(c),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let at = usize::from(cut) * rest.len() / 256;
    let whole = decode(&[rest]);
    let split = decode(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, split, "split at {at}");
    // What we would answer with any text the input holds reads back.
    let text = String::from_utf8_lossy(rest).replace('\0', "");
    for r in [
        Response::ReplyCode(text.clone()),
        Response::Quarantine(text.clone()),
        Response::InsertHeader {
            index: u32::from(cut),
            name: "X-Fuzz".into(),
            value: text.clone(),
        },
        Response::ChangeHeader {
            index: 1,
            name: text.clone(),
            value: text,
        },
    ] {
        let wire = r.to_bytes();
        assert_eq!(parse_response(wire[4], &wire[5..]), Ok(r));
    }
});
