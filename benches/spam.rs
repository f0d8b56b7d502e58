//! Spam scoring speed on the shared SpamAssassin sample, one core:
//! the message view + rules, the tokenizer + classifier, and the whole
//! offline score (parse once, view, classifier, rules). Throughput is in
//! messages (criterion's "elem/s"); the target is 2,000 messages/s per core
//! for the average message.
//!
//! The classifier here is trained on the same sample, only to have a
//! realistic model size; nothing of it is kept.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::spam::filter::{SpamConfig, SpamFilter};
use sluice::spam::{bayes, tokenize, view::MessageView};
use std::hint::black_box;
use std::path::PathBuf;

fn corpus() -> Vec<(Vec<u8>, bool)> {
    let base = std::env::var_os("SLUICE_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora")))
        .join("spamassassin");
    let mut out = Vec::new();
    for (dir, spam) in [
        ("easy_ham", false),
        ("easy_ham_2", false),
        ("hard_ham", false),
        ("spam", true),
        ("spam_2", true),
    ] {
        for f in sluice::spam::message_files(&base.join(dir)).expect("corpus directory") {
            out.push((std::fs::read(f).expect("read"), spam));
        }
    }
    out
}

fn spam(c: &mut Criterion) {
    let msgs = corpus();
    let bytes: usize = msgs.iter().map(|m| m.0.len()).sum();
    eprintln!("{} messages, average {} bytes", msgs.len(), bytes / msgs.len().max(1));
    let mut model = bayes::Model::new();
    for (m, s) in &msgs {
        model.learn(&tokenize::tokens(m), *s);
    }
    let cfg = SpamConfig {
        auth: false,
        ..SpamConfig::default()
    };
    let filter = SpamFilter::new(cfg, None).expect("built-in rules");
    eprintln!("{} rules", filter.rule_count());

    let mut g = c.benchmark_group("spam");
    g.sample_size(10);
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("view + rules", |b| {
        b.iter(|| {
            for (m, _) in &msgs {
                let v = MessageView::parse(m);
                black_box(filter.rules().evaluate(&v.view()).score);
            }
        })
    });
    g.bench_function("tokenize + classify", |b| {
        b.iter(|| {
            for (m, _) in &msgs {
                black_box(model.classify(&tokenize::tokens(m)));
            }
        })
    });
    let model_for_syn = model.clone();
    filter.set_model(Some(model.clone()));
    g.bench_function("whole score (offline)", |b| {
        b.iter(|| {
            for (m, _) in &msgs {
                black_box(filter.score_offline(m).score);
            }
        })
    });
    g.finish();

    // smtp-source's 4 KiB message (numbered lines of X), as the relay
    // benchmarks send it: the floor of the per-message cost.
    let mut syn = String::from(
        "Received: from bench.localdomain ([127.0.0.1])\r\n\tby bench.localdomain (sluice) with SMTP id 660FA377F457A000\r\n\tfor <user0500@example.com>;\r\n\tMon, 23 Nov 2026 23:47:29 +0000\r\nFrom: <sender@example.net>\r\nTo: <user0500@example.com>\r\nDate: Mon, 23 Nov 2026 23:47:29 +0000 (UTC)\r\nMessage-Id: <6d88.0003.0000@bench.localdomain>\r\n\r\n",
    );
    let mut n = 1;
    while syn.len() < 4096 {
        syn.push_str(&format!("{n}{}\r\n", "X".repeat(78)));
        n += 1;
    }
    let syn = syn.into_bytes();
    let mut g = c.benchmark_group("spam-smtp-source-4k");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("view + rules", |b| {
        b.iter(|| {
            let v = MessageView::parse(&syn);
            black_box(filter.rules().evaluate(&v.view()).score);
        })
    });
    g.bench_function("tokenize + classify", |b| {
        b.iter(|| black_box(model_for_syn.classify(&tokenize::tokens(&syn))))
    });
    g.bench_function("whole score (offline)", |b| {
        b.iter(|| black_box(filter.score_offline(&syn).score))
    });
    g.finish();
}

criterion_group!(benches, spam);
criterion_main!(benches);
