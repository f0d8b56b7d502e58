//! Message body framing: `DataReceiver` (DATA, dot-stuffed, ends at
//! CRLF.CRLF), `BdatReceiver` (BDAT, counted chunks) and `scan_headers`.
//!
//! Input layout: `[step, chunk_seed, payload...]`.
//! * `step` (1..=255, 0 counts as 1): the payload reaches `DataReceiver` in
//!   pieces of `step` octets appended to a buffer, as a socket would deliver
//!   them; the consumed prefix is drained after each call (like the session).
//! * `chunk_seed`: drives the sequence of BDAT chunk sizes (1..=2048).
//!
//! Invariants checked (safe Rust, so panics and assertion failures are what
//! we are after):
//! * `ingest` never consumes more than it was given;
//! * DATA ends only at a real CRLF.CRLF (no SMTP smuggling variant), and
//!   nothing after the terminator is consumed;
//! * the stored body never grows past `max_size + max_line + 2`, and equals
//!   the received size while the size limit is not passed;
//! * `problem()` never panics, and reports `TooBig` exactly when the size
//!   passed the limit;
//! * BDAT takes exactly the announced octets and stores all of them (under
//!   the limit), however the chunks and socket reads are cut;
//! * `scan_headers` stays inside the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proto::{BdatReceiver, BodyLimits, BodyProblem, DataReceiver, DataStatus, scan_headers};

const LIMITS: BodyLimits = BodyLimits {
    max_size: 1 << 16,
    max_line: 1000,
};

/// `max_scan` for `scan_headers`: small enough that large bodies hit it.
const MAX_HEADER_SCAN: usize = 4096;

fn check_headers(body: &[u8]) {
    for max_scan in [0, 1, 64, MAX_HEADER_SCAN, usize::MAX] {
        let info = scan_headers(body, max_scan);
        assert!(
            info.size <= body.len(),
            "header size {} > body {}",
            info.size,
            body.len()
        );
        let lines = body.iter().filter(|&&b| b == b'\n').count() + 1;
        assert!(info.received <= lines);
    }
}

/// Result of one DATA run: (done, consumed, body, problem).
type DataRun = (bool, usize, Vec<u8>, Option<BodyProblem>);

fn run_data(payload: &[u8], step: usize) -> DataRun {
    let mut rx = DataReceiver::new(LIMITS);
    let mut body = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut consumed = 0usize;
    let mut done = false;
    for piece in payload.chunks(step) {
        buf.extend_from_slice(piece);
        let len = buf.len();
        let (status, used) = rx.ingest(&buf, &mut body);
        assert!(used <= len, "DataReceiver consumed {used} of {len} bytes");
        buf.drain(..used);
        consumed += used;

        assert!(
            body.len() <= LIMITS.max_size + LIMITS.max_line + 2,
            "body grew to {} bytes",
            body.len()
        );
        assert!(body.len() <= rx.size());
        let _ = rx.problem();

        if status == DataStatus::Done {
            done = true;
            break;
        }
    }

    let problem = rx.problem();
    let too_big = rx.size() > LIMITS.max_size;
    if !too_big {
        assert_eq!(body.len(), rx.size(), "body lost octets under the size limit");
    }
    assert_eq!(
        problem == Some(BodyProblem::TooBig),
        too_big,
        "{problem:?}, size {}",
        rx.size()
    );
    assert!(consumed <= payload.len());

    if done {
        // Ends only at a real <CRLF>.<CRLF> (the first line may be the dot).
        let eaten = &payload[..consumed];
        assert!(
            eaten == b".\r\n" || eaten.ends_with(b"\r\n.\r\n"),
            "DATA ended at {:?}",
            &eaten[eaten.len().saturating_sub(8)..]
        );
        // The terminator and dot-stuffing never add octets to the body.
        assert!(rx.size() <= consumed - 3);
    }

    check_headers(&body);
    (done, consumed, body, problem)
}

/// Deterministic chunk sizes 1..=2048 from a one-byte seed.
struct ChunkSizes(u32);

impl Iterator for ChunkSizes {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let r = (self.0 >> 16) as usize;
        // Mostly small chunks, sometimes large ones.
        Some(if r & 3 == 0 { 1 + r % 2048 } else { 1 + r % 64 })
    }
}

fn run_bdat(payload: &[u8], step: usize, seed: u8) {
    let mut rx = BdatReceiver::new(LIMITS);
    let mut body = Vec::new();
    let mut rest = payload;
    let mut sizes = ChunkSizes(u32::from(seed));

    while !rest.is_empty() {
        let size = sizes.next().unwrap();
        rx.start_chunk(size as u64);
        let mut got = 0usize;
        loop {
            let piece = &rest[..rest.len().min(step)];
            let (complete, used) = rx.ingest(piece, &mut body);
            assert!(used <= piece.len(), "BdatReceiver consumed {used} of {}", piece.len());
            got += used;
            assert!(got <= size, "chunk of {size} took {got}");
            rest = &rest[used..];
            if complete {
                assert_eq!(got, size, "chunk complete after {got} of {size}");
                break;
            }
            // Not complete: it must have taken the whole piece.
            assert_eq!(used, piece.len());
            if rest.is_empty() {
                break; // the client stopped mid-chunk
            }
        }
        assert!(body.len() <= LIMITS.max_size + LIMITS.max_line + 2);
    }

    // BDAT 0 LAST
    rx.start_chunk(0);
    let (complete, used) = rx.ingest(b"trailing", &mut body);
    assert!(complete && used == 0, "empty chunk: complete={complete} used={used}");

    assert_eq!(rx.size(), payload.len());
    let too_big = rx.size() > LIMITS.max_size;
    if !too_big {
        assert_eq!(body, payload, "BDAT body differs from what was sent");
    } else {
        assert!(payload.starts_with(&body));
    }
    let problem = rx.problem();
    assert_eq!(problem == Some(BodyProblem::TooBig), too_big, "{problem:?}");

    check_headers(&body);
}

fuzz_target!(|data: &[u8]| {
    let [step, seed, payload @ ..] = data else { return };
    let step = usize::from(*step).max(1);
    let stepped = run_data(payload, step);
    // Differential: how the socket cuts the input must not change the
    // framing (this found the CR/LF-split-after-a-long-line bug).
    // An unfinished body may hold back a different partial line, so only
    // finished runs must agree in every detail.
    let whole = run_data(payload, payload.len().max(1));
    assert_eq!(whole.0, stepped.0, "whole vs step {step}: done differs");
    if whole.0 {
        assert_eq!(whole, stepped, "whole vs step {step}");
    }
    run_bdat(payload, step, *seed);
});
