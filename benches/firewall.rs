//! Firewall throughput and latency (issue 7), against the real kernel in a
//! network namespace of its own (`unshare -n`, needs root and nft):
//!
//! 1. decisions/s of the ban engine alone (100,000 offending addresses);
//! 2. those 100,000 bans into the nft set as one transaction: decisions/s
//!    end to end (engine + batch text + `nft -f -`);
//! 3. event -> kernel latency with 100,000 bans active: one new ban at a
//!    time, engine + batch + `nft -f -`, 200 times; p50/p99 (the service
//!    adds at most one `firewall.flush_interval`, 50 ms by default).
//!
//! Run: `cargo bench --bench firewall` (prints a table for docs/BENCHMARKS.md).

use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use sluice::firewall::engine::{BanConfig, Decision, Engine, Offence, Rule};
use sluice::firewall::nft::{Element, NftNames};

fn addr(i: u32) -> IpAddr {
    IpAddr::from((0x0a00_0000u32 + i).to_be_bytes())
}

fn main() {
    // cargo bench passes --bench; nothing to parse.
    const N: u32 = 100_000;
    let mut cfg = BanConfig::default();
    cfg.rules.insert(
        Offence::UnknownUser,
        Rule {
            count: 1,
            window: 60,
            ban: 3600,
        },
    );
    let mut engine = Engine::new(cfg);
    let t0 = Instant::now();
    let mut elements = Vec::with_capacity(N as usize);
    for i in 0..N {
        if let Decision::Ban(b) = engine.record(1_000, addr(i), Offence::UnknownUser) {
            elements.push(Element {
                net: b.net,
                timeout_secs: b.until - 1_000,
            });
        }
    }
    let engine_s = t0.elapsed().as_secs_f64();
    assert_eq!(elements.len(), N as usize);
    let names = NftNames::default();
    let t1 = Instant::now();
    let big = format!("{}{}", names.create(&[]), names.batch(&elements, &[]));
    let batch_s = t1.elapsed().as_secs_f64();

    // The latency probes: one new ban each, built the way the service does.
    let mut probes = Vec::new();
    for i in 0..200u32 {
        let t = Instant::now();
        let Decision::Ban(b) = engine.record(1_000, addr(N + i), Offence::UnknownUser) else {
            panic!("no ban")
        };
        let text = names.batch(
            &[Element {
                net: b.net,
                timeout_secs: 3600,
            }],
            &[],
        );
        probes.push((t.elapsed().as_secs_f64(), text));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("big.nft"), &big).unwrap();
    let mut script = String::from("set -e\ns=$(date +%s%N); nft -f big.nft; e=$(date +%s%N); echo big $((e - s))\n");
    for (i, (_, text)) in probes.iter().enumerate() {
        std::fs::write(dir.path().join(format!("p{i}.nft")), text).unwrap();
        script.push_str(&format!(
            "s=$(date +%s%N); nft -f p{i}.nft; e=$(date +%s%N); echo probe $((e - s))\n"
        ));
    }
    script.push_str("nft list set inet sluice banned_v4 | grep -o timeout | wc -l\n");
    let mut child = Command::new("unshare")
        .args(["-n", "sh"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare -n sh (root and nft needed)");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut big_ns = 0f64;
    let mut lat: Vec<f64> = Vec::new();
    for (line, (engine_part, _)) in text.lines().filter(|l| l.starts_with("probe ")).zip(&probes) {
        let ns: f64 = line[6..].parse().unwrap();
        lat.push(ns / 1e6 + engine_part * 1e3);
    }
    if let Some(l) = text.lines().find(|l| l.starts_with("big ")) {
        big_ns = l[4..].parse().unwrap();
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let big_s = big_ns / 1e9;
    println!("| measure | result |\n|---|---:|");
    println!("| ban engine alone: decisions/s | {:.0} |", f64::from(N) / engine_s);
    println!("| batch text for {N} bans | {:.1} ms |", batch_s * 1e3);
    println!("| `nft -f` of {N} bans (one transaction) | {:.0} ms |", big_s * 1e3);
    println!(
        "| end to end (engine + batch + nft): decisions/s | {:.0} |",
        f64::from(N) / (engine_s + batch_s + big_s)
    );
    println!(
        "| one new ban with {N} active, engine + nft: p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    println!(
        "| elements in the kernel set afterwards | {} |",
        text.lines().last().unwrap_or("?")
    );
}
