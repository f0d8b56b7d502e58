use super::*;

const LIMITS: BodyLimits = BodyLimits {
    max_size: 1 << 20,
    max_line: 1000,
};

/// Feeds `input` to a fresh DATA receiver in pieces of `step` bytes, as a
/// socket would deliver it. Returns (done, body, bytes consumed, problem).
fn data(input: &[u8], step: usize) -> (bool, Vec<u8>, usize, Option<BodyProblem>) {
    let mut r = DataReceiver::new(LIMITS);
    let mut body = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut consumed_total = 0;
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        let (st, used) = r.ingest(&buf, &mut body);
        buf.drain(..used);
        consumed_total += used;
        if st == DataStatus::Done {
            return (true, body, consumed_total, r.problem());
        }
    }
    (false, body, consumed_total, r.problem())
}

#[test]
fn plain_body_and_unstuffing() {
    for step in [1, 2, 3, 7, 1000] {
        let (done, body, used, problem) = data(b"Subject: x\r\n\r\n..dot\r\nline\r\n.\r\n", step);
        assert!(done, "step {step}");
        assert_eq!(body, b"Subject: x\r\n\r\n.dot\r\nline\r\n");
        assert_eq!(used, 30);
        assert_eq!(problem, None);
    }
}

#[test]
fn empty_body() {
    let (done, body, _, problem) = data(b".\r\n", 1);
    assert!(done);
    assert!(body.is_empty());
    assert_eq!(problem, None);
}

#[test]
fn pipelined_commands_after_end_are_not_consumed() {
    let input = b"a\r\n.\r\nMAIL FROM:<x@y>\r\n";
    let mut r = DataReceiver::new(LIMITS);
    let mut body = Vec::new();
    let (st, used) = r.ingest(input, &mut body);
    assert_eq!(st, DataStatus::Done);
    assert_eq!(&input[used..], b"MAIL FROM:<x@y>\r\n");
}

/// The 12 SMTP smuggling end-of-data variants: none may end DATA, and each
/// leaves a bare CR or LF in the body, so the message is refused.
#[test]
fn smuggling_vectors_do_not_end_data() {
    let vectors = SMUGGLING_VECTORS;
    for v in vectors {
        for step in [1, 3, 64] {
            let mut input = b"Subject: smuggle\r\n\r\nbody".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            let (done, ..) = data(&input, step);
            assert!(!done, "vector {v:?} ended DATA (step {step})");
            // The real end follows; the message is then refused.
            input.extend_from_slice(b"\r\n.\r\n");
            let (done, _, _, problem) = data(&input, step);
            assert!(done, "{v:?}");
            if v.contains(&0) {
                // NUL variants have no bare newline but must still not end DATA.
                continue;
            }
            assert_eq!(problem, Some(BodyProblem::BareNewline), "{v:?}");
        }
    }
}

#[test]
fn bare_lf_and_bare_cr_are_flagged() {
    assert_eq!(data(b"a\nb\r\n.\r\n", 1).3, Some(BodyProblem::BareNewline));
    assert_eq!(data(b"a\rb\r\n.\r\n", 1).3, Some(BodyProblem::BareNewline));
    assert_eq!(data(b"a\r\r\n.\r\n", 1).3, Some(BodyProblem::BareNewline));
    assert_eq!(data(b"ab\r\n.\r\n", 1).3, None);
}

#[test]
fn long_lines_are_flagged() {
    let mut input = vec![b'x'; 1001];
    input.extend_from_slice(b"\r\n.\r\n");
    for step in [1, 100, 5000] {
        let (done, _, _, problem) = data(&input, step);
        assert!(done);
        assert_eq!(problem, Some(BodyProblem::LineTooLong), "step {step}");
    }
    let mut ok = vec![b'x'; 1000];
    ok.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(data(&ok, 7).3, None);
}

#[test]
fn huge_line_without_newline_is_not_buffered_forever() {
    let mut r = DataReceiver::new(LIMITS);
    let mut body = Vec::new();
    let junk = vec![b'x'; 10_000];
    let (st, used) = r.ingest(&junk, &mut body);
    assert_eq!(st, DataStatus::NeedsMoreData);
    assert_eq!(used, junk.len(), "oversize fragment must be consumed");
    let (st, _) = r.ingest(b"\r\n.\r\n", &mut body);
    assert_eq!(st, DataStatus::Done);
    assert_eq!(r.problem(), Some(BodyProblem::LineTooLong));
}

#[test]
fn oversize_body_is_counted_but_not_stored() {
    let limits = BodyLimits {
        max_size: 10,
        max_line: 1000,
    };
    let mut r = DataReceiver::new(limits);
    let mut body = Vec::new();
    let (st, _) = r.ingest(b"0123456789\r\nmore\r\n.\r\n", &mut body);
    assert_eq!(st, DataStatus::Done);
    assert_eq!(r.problem(), Some(BodyProblem::TooBig));
    assert!(body.len() <= 10);
    assert_eq!(r.size(), 18);
}

#[test]
fn line_receiver_frames_and_caps() {
    let mut lr = LineReceiver::new(10);
    assert_eq!(lr.ingest(b"NOOP\r\nQUIT\r\n"), (Line::Complete(b"NOOP"), 6));
    assert_eq!(lr.ingest(b"QUI"), (Line::NeedsMoreData, 0));
    assert_eq!(lr.ingest(b"QUIT\n"), (Line::Complete(b"QUIT"), 5));
    // Oversize without newline: swallowed, then reported once at the newline.
    assert_eq!(lr.ingest(b"0123456789AB"), (Line::NeedsMoreData, 12));
    assert_eq!(lr.ingest(b"CD\r\nNOOP\r\n"), (Line::TooLong, 4));
    assert_eq!(lr.ingest(b"NOOP\r\n"), (Line::Complete(b"NOOP"), 6));
    // Oversize with newline in the same buffer.
    assert_eq!(lr.ingest(b"0123456789ABCDEF\r\n"), (Line::TooLong, 18));
}

#[test]
fn bdat_takes_exact_octets_across_chunks() {
    let mut r = BdatReceiver::new(LIMITS);
    let mut body = Vec::new();
    r.start_chunk(5);
    assert_eq!(r.ingest(b"ab", &mut body), (false, 2));
    assert_eq!(r.ingest(b"c\r\nQUIT\r\n", &mut body), (true, 3));
    r.start_chunk(3);
    assert_eq!(r.ingest(b"x\r\nRSET", &mut body), (true, 3));
    assert_eq!(body, b"abc\r\nx\r\n");
    assert_eq!(r.problem(), None);
}

#[test]
fn bdat_flags_bare_newline_split_over_chunks() {
    let mut r = BdatReceiver::new(LIMITS);
    let mut body = Vec::new();
    r.start_chunk(2);
    r.ingest(b"a\r", &mut body);
    r.start_chunk(2);
    r.ingest(b"\nb", &mut body);
    // CR at the end of chunk 1 + LF at the start of chunk 2 is a CRLF.
    assert_eq!(r.problem(), None);
    let mut r = BdatReceiver::new(LIMITS);
    r.start_chunk(3);
    r.ingest(b"a\nb", &mut body);
    assert_eq!(r.problem(), Some(BodyProblem::BareNewline));
}

#[test]
fn header_scan_counts_received_and_size() {
    let body = b"Received: from a\r\nreceived: from b\r\nSubject: x\r\n\r\nReceived: not a header\r\n";
    let info = scan_headers(body, 1 << 16);
    assert_eq!(info.received, 2);
    assert_eq!(info.size, 50);
    let no_body = b"Subject: x\r\n";
    assert_eq!(scan_headers(no_body, 1 << 16).size, no_body.len());
}

/// Found by fuzzing: a long line stored as a fragment that ends in CR,
/// with its LF in the next read, is still a real CRLF before `.`.
#[test]
fn crlf_split_after_long_line_fragment() {
    let mut rx = DataReceiver::new(LIMITS);
    let mut body = Vec::new();
    let mut a = vec![b'x'; 1019];
    a.push(b'\r');
    assert_eq!(rx.ingest(&a, &mut body), (DataStatus::NeedsMoreData, 1020));
    assert_eq!(rx.ingest(b"\n.\r\n", &mut body), (DataStatus::Done, 4));
    assert_eq!(rx.problem(), Some(BodyProblem::LineTooLong));
}

/// Feeding a body whole or in pieces of any size gives the same result.
#[test]
fn framing_does_not_depend_on_read_sizes() {
    let mut inputs: Vec<Vec<u8>> = vec![test_body(), b"a\r\n.\r\nMAIL".to_vec()];
    let mut long = vec![b'y'; 3000];
    long.extend_from_slice(b"\r\n..x\r\n\r\n.\r\nQUIT\r\n");
    inputs.push(long);
    for input in inputs {
        let whole = data(&input, input.len());
        for step in 1..64 {
            let stepped = data(&input, step);
            assert_eq!(
                (whole.0, &whole.1, whole.2, whole.3),
                (stepped.0, &stepped.1, stepped.2, stepped.3),
                "step {step}"
            );
        }
    }
}

fn test_body() -> Vec<u8> {
    let mut m = b"Subject: t\r\n\r\n".to_vec();
    for i in 0..50 {
        m.extend_from_slice(format!(".line {i}\r\n").as_bytes());
    }
    m.extend_from_slice(b".\r\n");
    m
}

#[test]
fn header_scan_finds_the_message_id_even_folded() {
    let body = b"Received: x\r\nMESSAGE-ID:  <a1@example.com> \r\nSubject: s\r\n\r\nMessage-ID: <body@x>\r\n";
    assert_eq!(
        scan_headers(body, 1 << 16).message_id.as_deref(),
        Some("<a1@example.com>")
    );
    let folded = b"Message-Id:\r\n <b2@example.com>\r\n\r\n";
    assert_eq!(
        scan_headers(folded, 1 << 16).message_id.as_deref(),
        Some("<b2@example.com>")
    );
    assert_eq!(
        scan_headers(b"Subject: s\r\n\r\nMessage-ID: <no>\r\n", 1 << 16).message_id,
        None
    );
}
