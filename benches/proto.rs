//! Micro-benchmarks of the sans-IO core: command parsing and the DATA
//! receiver (MB/s), compared with a naive baseline (a plain copy).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::proto::{BodyLimits, DataReceiver, DataStatus, parse};
use std::hint::black_box;

fn commands(c: &mut Criterion) {
    let lines: [&[u8]; 4] = [
        b"MAIL FROM:<sender@client.example> SIZE=4096 BODY=8BITMIME",
        b"RCPT TO:<user0500@example.com>",
        b"EHLO client.example",
        b"DATA",
    ];
    c.bench_function("parse 4 commands", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(parse(black_box(l)).ok());
            }
        })
    });
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"Subject: bench\r\nFrom: a@b.example\r\n\r\n".to_vec();
    while m.len() < size {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\r\n");
        m.extend_from_slice(b"..a dot-stuffed line\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

fn data_receiver(c: &mut Criterion) {
    let mut g = c.benchmark_group("data");
    for size in [4096usize, 65536, 1 << 20] {
        let msg = message(size);
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(format!("receiver {size}"), |b| {
            b.iter(|| {
                let mut rx = DataReceiver::new(BodyLimits {
                    max_size: 32 << 20,
                    max_line: 8192,
                });
                let mut body = Vec::with_capacity(msg.len());
                // As from the socket: 16 KiB reads.
                let mut pos = 0;
                let mut pending: Vec<u8> = Vec::new();
                while pos < msg.len() {
                    let end = (pos + 16384).min(msg.len());
                    pending.extend_from_slice(&msg[pos..end]);
                    pos = end;
                    let (st, used) = rx.ingest(&pending, &mut body);
                    pending.drain(..used);
                    if st == DataStatus::Done {
                        break;
                    }
                }
                black_box(rx.problem());
                black_box(body.len())
            })
        });
        g.bench_function(format!("baseline copy {size}"), |b| {
            b.iter(|| {
                let mut body = Vec::with_capacity(msg.len());
                for chunk in msg.chunks(16384) {
                    body.extend_from_slice(black_box(chunk));
                }
                black_box(body.len())
            })
        });
    }
    g.finish();
}

fn recipient_table(c: &mut Criterion) {
    use sluice::policy::recipients::Table;
    use sluice::proto::address::parse_mailbox;
    let mut text = Vec::with_capacity(40 << 20);
    for i in 0..1_000_000 {
        text.extend_from_slice(format!("user{i:07}@example.com OK\n").as_bytes());
    }
    let mut g = c.benchmark_group("recipient table");
    g.sample_size(10);
    g.bench_function("load 1M entries", |b| {
        b.iter(|| black_box(Table::parse(&text, "bench").unwrap().len()))
    });
    let t = Table::parse(&text, "bench").unwrap();
    let hit = parse_mailbox("user0765432@example.com").unwrap();
    let miss = parse_mailbox("nobody@example.com").unwrap();
    g.bench_function("lookup hit+miss in 1M", |b| {
        b.iter(|| (t.lookup(black_box(&hit), None), t.lookup(black_box(&miss), None)))
    });
    g.finish();
}

/// Our MIME decoding per message: plain text (nothing to decode), and a
/// multipart with a base64 attachment of the same total size.
fn mime_decoding(c: &mut Criterion) {
    use sluice::scan::mime::{Limits, analyse};
    let mut g = c.benchmark_group("mime");
    for size in [4096usize, 65536] {
        let plain = message(size);
        g.throughput(Throughput::Bytes(plain.len() as u64));
        g.bench_function(format!("analyse plain {size}"), |b| {
            b.iter(|| analyse(&plain, &Limits::default()))
        });
        let mut att = b"Subject: bench\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/octet-stream; \
            name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            .to_vec();
        while att.len() < size {
            att.extend_from_slice(b"QmVuY2htYXJrIGRhdGEgZm9yIHRoZSBNSU1FIGRlY29kZXIsIG5vdGhpbmcgdG8gc2VlIGhlcmUu\r\n");
        }
        att.extend_from_slice(b"--b--\r\n");
        g.throughput(Throughput::Bytes(att.len() as u64));
        g.bench_function(format!("analyse base64 attachment {size}"), |b| {
            b.iter(|| analyse(&att, &Limits::default()))
        });
    }
}

criterion_group!(benches, commands, data_receiver, recipient_table, mime_decoding);
criterion_main!(benches);
