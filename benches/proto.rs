//! Micro-benchmarks of the sans-IO core: command parsing and the DATA
//! receiver (MB/s), compared with a naive baseline (a plain copy).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::smtp::proto::{BodyLimits, DataReceiver, DataStatus, parse};
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

criterion_group!(benches, commands, data_receiver);
criterion_main!(benches);
