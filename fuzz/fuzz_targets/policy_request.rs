//! Postfix policy delegation requests: `sluice::proto::policy` on any
//! octets. Never panics; every frame but "needs more" consumes octets and
//! never more than it was given; the frames are the same whether the
//! octets arrive at once or in pieces (the first octet picks the piece
//! size); every request's query and every answer is safe to build, and an
//! answer is one line and an empty line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proto::Reply;
use sluice::proto::policy::{Action, Frame, Limits, RequestReceiver};

const LIMITS: Limits = Limits {
    max_size: 512,
    max_attributes: 16,
};

fn frames<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut rx = RequestReceiver::new(LIMITS);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            let (f, used) = rx.ingest(&buf);
            assert!(used <= buf.len(), "{used} of {}", buf.len());
            buf.drain(..used);
            if f == Frame::NeedsMoreData {
                break;
            }
            assert!(used > 0, "{f:?} without consuming");
            out.push(f);
        }
        assert!(buf.len() < LIMITS.max_size, "{} octets kept", buf.len());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let whole = frames(std::iter::once(rest));
    let piece = usize::from(first % 64) + 1;
    assert_eq!(frames(rest.chunks(piece)), whole, "in pieces of {piece}");
    for f in &whole {
        if let Frame::Request(attrs) = f {
            if let Ok(q) = attrs.query() {
                let text = format!("{} {}", q.helo, q.instance);
                for action in [
                    Action::Dunno,
                    Action::Reply(Reply::owned(550, "5.7.1", text.clone())),
                    Action::DeferIfPermit(Reply::owned(450, "4.7.1", text.clone())),
                    Action::Prepend(text),
                ] {
                    let wire = action.to_bytes();
                    assert!(wire.starts_with(b"action=") && wire.ends_with(b"\n\n"));
                    assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 2, "{wire:?}");
                }
            }
        }
    }
});
