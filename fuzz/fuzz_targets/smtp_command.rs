//! Command framing and parsing: bytes -> `LineReceiver` -> `parse`.
//!
//! Input modes (chosen by the first byte):
//! * odd first byte: the whole input is fed as it is (so plain-text seeds
//!   such as "EHLO ..." work unchanged);
//! * even first byte: every following byte is mapped to a token of the SMTP
//!   alphabet ("MAIL FROM:<", "@", " SIZE=", "\r\n", ...), as smtp-proto's
//!   fuzz target does, so the fuzzer reaches deep into the parameter and
//!   address parsers instead of dying at "unrecognized command".
//!
//! The bytes reach the receiver in pieces of `PIECE` octets appended to a
//! buffer, as a socket would deliver them, so a line longer than the limit
//! spans several calls and the "swallow the rest of an oversize line" state
//! is exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proto::{Command, Line, LineReceiver, parse};

const MAX_LINE: usize = 4096;
const PIECE: usize = 1024;

/// The SMTP alphabet: byte `b` maps to entry `b % (TOKENS.len() + ALNUM.len())`
/// of `TOKENS` followed by the single letters and digits of `ALNUM`.
const TOKENS: &[&[u8]] = &[
    // verbs
    b"EHLO ",
    b"HELO ",
    b"ehlo ",
    b"MAIL FROM:<",
    b"MAIL FROM:",
    b"mail from: <",
    b"RCPT TO:<",
    b"RCPT TO:",
    b"rcpt to:<",
    b"DATA",
    b"BDAT ",
    b"bdat ",
    b" LAST",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"VRFY ",
    b"EXPN ",
    b"HELP",
    b"STARTTLS",
    b"AUTH ",
    // path syntax
    b"<",
    b">",
    b"<>",
    b"@",
    b"@relay.example,",
    b":",
    b",",
    b".",
    b"..",
    b"\"",
    b"\\",
    b"[",
    b"]",
    b"[192.0.2.1]",
    b"IPv6:",
    b"::1",
    b"-",
    b"_",
    b"postmaster",
    b"user",
    b"example.com",
    b"xn--bcher-kva.example",
    // ESMTP parameters
    b" SIZE=",
    b" BODY=",
    b"7BIT",
    b"8BITMIME",
    b"BINARYMIME",
    b" SMTPUTF8",
    b" RET=",
    b"FULL",
    b"HDRS",
    b" ENVID=",
    b" AUTH=",
    b" NOTIFY=",
    b"SUCCESS,FAILURE,DELAY",
    b"NEVER",
    b" ORCPT=",
    b"rfc822;",
    b"=",
    // numbers
    b"0",
    b"1",
    b"7",
    b"9",
    b"100",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9999999999999999999",
    b"-1",
    b"+1",
    // separators and line ends
    b" ",
    b"  ",
    b"\t",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    // non-ASCII: valid UTF-8 (2, 3 and 4 bytes) and invalid bytes
    "ä".as_bytes(),
    "é".as_bytes(),
    "\u{feff}".as_bytes(),
    "\u{1f600}".as_bytes(),
    b"\xc3",
    b"\xff",
    b"\x80",
];

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn remap(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 4);
    for &b in data {
        let i = b as usize % (TOKENS.len() + ALNUM.len());
        match TOKENS.get(i) {
            Some(token) => out.extend_from_slice(token),
            None => out.push(ALNUM[i - TOKENS.len()]),
        }
    }
    out
}

fn check_line(line: &[u8]) {
    match parse(line) {
        Ok(cmd) => {
            assert!(!cmd.verb().is_empty());
            match &cmd {
                Command::Mail { from, params } => {
                    if let Some(m) = from {
                        let _ = (m.to_string(), m.key(), m.is_utf8());
                    }
                    let _ = params.body.as_param();
                }
                Command::Rcpt { to, .. } => {
                    assert!(!to.domain.is_empty(), "RCPT accepted without a domain: {line:?}");
                    let _ = (to.to_string(), to.key(), to.is_utf8());
                }
                _ => {}
            }
        }
        Err(e) => {
            let reply = e.reply();
            assert!(
                (500..600).contains(&reply.code),
                "{e:?} maps to non-5xx reply {reply:?} (line {line:?})"
            );
            let wire = reply.to_bytes();
            assert!(wire.starts_with(reply.code.to_string().as_bytes()));
            assert!(wire.ends_with(b"\r\n"));
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(&mode) = data.first() else { return };
    let input: Vec<u8> = if mode % 2 == 0 {
        remap(&data[1..])
    } else {
        data.to_vec()
    };

    let mut rx = LineReceiver::new(MAX_LINE);
    let mut buf: Vec<u8> = Vec::new();
    for piece in input.chunks(PIECE) {
        buf.extend_from_slice(piece);
        // Consume lines until the receiver needs more data.
        loop {
            let len = buf.len();
            let (item, used) = rx.ingest(&buf);
            assert!(used <= len, "consumed {used} of {len}");
            match item {
                Line::Complete(line) => {
                    assert!(used > 0);
                    assert!(line.len() <= MAX_LINE, "line of {} > {MAX_LINE}", line.len());
                    assert!(!line.contains(&b'\n'));
                    check_line(line);
                }
                Line::TooLong => assert!(used > 0),
                Line::NeedsMoreData => {
                    buf.drain(..used);
                    break;
                }
            }
            buf.drain(..used);
        }
    }
    // A partial last line is not a command, but the parser must cope with
    // any fragment too.
    if buf.len() <= MAX_LINE {
        check_line(&buf);
    }
});
