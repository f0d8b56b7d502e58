//! The nftables batches against the real kernel, in a network namespace of
//! their own (`unshare -n`), so the host's ruleset is never touched: the
//! table and sets sluice owns, elements with kernel timeouts, deletion in
//! the same kind of transaction, and the deploy snippet that drops traffic
//! from the sets.

use sluice::firewall::nft::{Element, NftNames};

/// Runs `script` (a shell script) in a new network namespace; returns its
/// stdout. Panics with stderr if it fails.
fn in_netns(script: &str) -> String {
    let out = std::process::Command::new("unshare")
        .args(["-n", "sh", "-ec", script])
        .output()
        .expect("unshare");
    assert!(
        out.status.success(),
        "{script}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn nft_batches_load_into_a_real_kernel_set_with_timeouts() {
    let n = NftNames::default();
    let el = |net: &str, timeout_secs| Element {
        net: net.parse().unwrap(),
        timeout_secs,
    };
    let first = n.batch(
        &[
            el("192.0.2.7/32", 3600),
            el("198.51.100.0/24", 600),
            el("2001:db8::1/128", 60),
        ],
        &[],
    );
    let second = n.batch(&[el("203.0.113.9/32", 30)], &["192.0.2.7/32".parse().unwrap()]);
    let snippet = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nftables/sluice.nft");
    let script = format!(
        "nft -f - <<'EOF'\n{create}{first}EOF\n\
         echo '--- after first'; nft list table inet sluice\n\
         nft -f - <<'EOF'\n{second}EOF\n\
         echo '--- after second'; nft list table inet sluice\n\
         nft -f {snippet}\n\
         echo '--- with the snippet'; nft list chain inet sluice input\n",
        create = n.create(),
    );
    let out = in_netns(&script);
    let part = |from: &str, to: Option<&str>| {
        let a = out.find(from).unwrap();
        let b = to.and_then(|t| out.find(t)).unwrap_or(out.len());
        out[a..b].to_string()
    };
    let first_out = part("--- after first", Some("--- after second"));
    assert!(first_out.contains("flags interval,timeout"), "{first_out}");
    assert!(first_out.contains("192.0.2.7 timeout 1h"), "{first_out}");
    assert!(first_out.contains("198.51.100.0/24 timeout 10m"), "{first_out}");
    assert!(first_out.contains("2001:db8::1 timeout 1m"), "{first_out}");
    let second_out = part("--- after second", Some("--- with the snippet"));
    assert!(!second_out.contains("192.0.2.7 "), "deleted: {second_out}");
    assert!(second_out.contains("203.0.113.9 timeout 30s"), "{second_out}");
    assert!(second_out.contains("198.51.100.0/24"), "others stay: {second_out}");
    let rules = part("--- with the snippet", None);
    assert!(
        rules.contains("ip saddr @banned_v4 tcp dport { 25, 465, 587 } drop"),
        "{rules}"
    );
    assert!(rules.contains("ip6 saddr @banned_v6"), "{rules}");
}
