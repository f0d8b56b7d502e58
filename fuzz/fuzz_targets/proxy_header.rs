//! The PROXY protocol header (v1 text, v2 binary) a load balancer sends
//! first: `sluice::proto::proxy::parse` on any octets. Never panics; a
//! header it accepts is no longer than the input and not empty; every
//! shorter prefix of it asks for more (so a header arriving in pieces is
//! never refused halfway); and what follows it does not change it (the
//! session's octets are not read as part of the header).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proto::proxy::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(h)) = parse(data) else { return };
    assert!(h.len > 0 && h.len <= data.len(), "{h:?} of {} octets", data.len());
    let header = &data[..h.len];
    assert_eq!(parse(header), Ok(Some(h)), "the header alone");
    // Prefixes: all of a short header, a sample of a long one.
    let step = (h.len / 256).max(1);
    for n in (0..h.len).step_by(step) {
        assert_eq!(parse(&header[..n]), Ok(None), "{n} of {} octets", h.len);
    }
});
