use super::super::Config;
use super::*;

fn base() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> RawConfig {
    Config::load_raw(&base().join("deploy/sluice.example.toml")).unwrap()
}

/// The sections without a HashMap, whose Debug text is stable.
fn stable(c: &Config) -> String {
    format!(
        "{:?}",
        (
            (
                &c.server,
                &c.timeouts,
                &c.tls,
                &c.relay,
                &c.recipients,
                &c.spool,
                &c.log
            ),
            (
                &c.dns,
                &c.policy,
                &c.limits,
                &c.helo,
                &c.greylist,
                &c.callahead,
                &c.clamd
            ),
            (
                &c.metrics,
                &c.stress,
                &c.scan.limits,
                c.scan.ambiguous,
                c.scan.unknown_encoding
            ),
            (
                c.scan.on_failure,
                c.scan.latency_budget,
                c.scan.retry,
                c.scan.max_held,
                &c.scan.quarantine_dir
            ),
            (c.scan.unscannable, &c.scan.archives),
        )
    )
}

#[test]
fn the_filled_configuration_validates_to_the_same_configuration() {
    let partial = Config::parse_raw(
        "[spool]\ndir = \"/srv/spool\"\n[spam]\ntag = 4\n[spam.domains.\"example.com\"]\nreject = 20\n\
         [firewall.rules.virus]\nban = \"2h\"\n[relay.routes]\n\"example.org\" = { next_hop = \"smtp://10.0.0.1:25\" }\n",
    )
    .unwrap();
    let behind_balancer = Config::parse_raw(
        "[server]\nlisten = [\"127.0.0.1:25\", { address = \"127.0.0.1:2526\", proxy_protocol = true }]\n\
         proxy_from = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    for raw in [RawConfig::default(), example(), partial, behind_balancer] {
        let a = Config::from_raw(raw.clone(), base()).unwrap();
        let full = filled(raw);
        let b = Config::from_raw(full.clone(), base()).unwrap();
        assert_eq!(stable(&a), stable(&b));
        assert_eq!(a.scan.banned, b.scan.banned);
        assert_eq!(format!("{:?}", a.dnsbl.zones), format!("{:?}", b.dnsbl.zones));
        assert_eq!(a.dnsbl.threshold, b.dnsbl.threshold);
        let (sa, sb) = (a.spam.unwrap(), b.spam.unwrap());
        assert_eq!((&sa.default, &sa.domains), (&sb.default, &sb.domains));
        assert_eq!(
            (sa.max_size, sa.auth, sa.builtin_rules),
            (sb.max_size, sb.auth, sb.builtin_rules)
        );
        let (fa, fb) = (a.firewall.unwrap(), b.firewall.unwrap());
        assert_eq!(fa.bans.rules, fb.bans.rules);
        assert_eq!((fa.store, fa.control_socket), (fb.store, fb.control_socket));
        // Filling is done once: filled again, nothing changes.
        assert_eq!(filled(full.clone()), full);
        // The TOML printed reads back as the same configuration.
        assert_eq!(Config::parse_raw(&to_toml(&full)).unwrap(), full);
    }
}

#[test]
fn changed_lists_only_what_differs_from_leaving_it_out() {
    let raw = Config::parse_raw(
        "[server]\nmax_connections = 500\nmax_recipients = 100\n[spool]\ndir = \"/srv/spool\"\n\
         [firewall.rules.virus]\ncount = 2\nban = \"2h\"\n[spam.domains.\"example.org\"]\ntag = 5.0\nreject = 20\n",
    )
    .unwrap();
    assert_eq!(
        changed(&raw, Path::new("/etc/sluice")),
        [
            "firewall.rules.virus.ban = \"2h\"",
            "server.max_connections = 500",
            "spam.domains.\"example.org\".reject = 20.0",
            "spool.dir = \"/srv/spool\"",
        ]
    );
    assert!(changed(&RawConfig::default(), base()).is_empty());
    // The lines are TOML: read back, they give the same configuration.
    let back = Config::parse_raw(&changed(&raw, base()).join("\n")).unwrap();
    assert_eq!(filled(back), filled(raw));
    // Relative paths are printed resolved against the file's directory.
    let rel =
        Config::parse_raw("[recipients]\ntable = \"maps/recipients\"\n[relay]\nnext_hop = \"lmtp:lmtp.sock\"").unwrap();
    assert_eq!(
        changed(&rel, Path::new("/etc/sluice")),
        [
            "recipients.table = \"/etc/sluice/maps/recipients\"",
            "relay.next_hop = \"lmtp:/etc/sluice/lmtp.sock\"",
        ]
    );
}

/// Every key may be left out: each section takes an empty table, and
/// any one of its keys alone (at its default value).
#[test]
fn every_section_takes_an_empty_table_and_each_key_alone() {
    let full = toml::Table::try_from(filled(RawConfig::default())).unwrap();
    for (section, _) in &full {
        let text = format!("[{section}]\n");
        let raw = Config::parse_raw(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        Config::from_raw(raw, base()).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
    let keys = leaves(&full);
    assert!(keys.len() > 150, "{}", keys.len());
    for (path, value) in keys {
        let line = format!("{} = {value}", dotted(&path));
        let raw = Config::parse_raw(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        Config::from_raw(raw, base()).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
}
