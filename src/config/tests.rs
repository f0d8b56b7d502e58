use std::net::SocketAddr;

use super::*;

/// The error of `toml`: from validation, or else from loading the files
/// it names (`app::preflight`, as `serve` and `check-config` do). The
/// recipient table (loaded first) is the example one unless `toml` names
/// one.
fn err(toml: &str) -> ConfigError {
    let toml = if toml.contains("[recipients]") {
        toml.to_string()
    } else {
        format!("{toml}\n[recipients]\ntable = \"deploy/recipients.example\"\n")
    };
    match Config::from_toml(&toml, Path::new(env!("CARGO_MANIFEST_DIR"))) {
        Err(e) => e,
        Ok(c) => match crate::app::preflight(&c) {
            Err(e) => e,
            Ok(_) => panic!("{toml}: accepted"),
        },
    }
}

#[test]
fn defaults_are_valid() {
    let c = Config::from_toml("", Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(
        c.server.listen,
        vec![Listen::from("127.0.0.1:2525".parse::<SocketAddr>().unwrap())]
    );
    assert!(c.server.proxy_from.is_empty());
    assert_eq!(c.server.proxy_timeout, Duration::from_secs(3));
    assert_eq!(c.server.max_message_size, 26_214_400);
    assert_eq!(
        c.relay.next_hop,
        NextHop::Smtp {
            host: "127.0.0.1".into(),
            port: 10025
        }
    );
    assert_eq!(c.relay.retry_initial, Duration::from_secs(60));
    assert_eq!(c.relay.max_queue_age, Duration::from_secs(5 * 86400));
    assert!(c.spool.fsync);
}

#[test]
fn errors_name_the_dotted_key() {
    let cases: &[(&str, &str)] = &[
        ("[server]\nlisten = [\"nonsense\"]", "server.listen[0]"),
        (
            "[server]\nlisten = [\"127.0.0.1:25\", { address = \"nonsense\" }]",
            "server.listen[1].address",
        ),
        (
            "[server]\nlisten = [{ proxy_protocol = true }]",
            "server.listen[0].address",
        ),
        (
            "[server]\nlisten = [{ address = \"0.0.0.0:2526\", proxy_protocol = true }]",
            "server.proxy_from",
        ),
        ("[server]\nproxy_from = [\"balancer\"]", "server.proxy_from[0]"),
        ("[server]\nproxy_timeout = \"0s\"", "server.proxy_timeout"),
        ("[server]\nmax_message_size = 0", "server.max_message_size"),
        ("[server]\nmax_recipients = \"ten\"", "server.max_recipients"),
        ("[server]\nbogus = 1", "server.bogus"),
        ("[scan]\nunscannable = \"drop\"", "scan.unscannable"),
        ("[scan]\nunscannable_trusted = \"drop\"", "scan.unscannable_trusted"),
        ("[spam]\nbayes_min_messages = 5", "spam.bayes_min_messages"),
        ("[scan]\narchive_max_depth = 0", "scan.archive_max_depth"),
        ("[scan]\narchive_max_size = 0", "scan.archive_max_size"),
        // Keys that are empty or not bare are quoted, as in TOML (found by
        // the config_toml fuzz target: the empty key gave an empty name).
        ("['']\nx = 1", "\"\""),
        ("\t''= \"of\"", "\"\""),
        ("[server]\n'' = 1", "server.\"\""),
        ("[server]\n'a.b' = 1", "server.\"a.b\""),
        ("[relay]\nnext_hop = \"http://x\"", "relay.next_hop"),
        ("[relay]\nnext_hop = \"smtp://h:notaport\"", "relay.next_hop"),
        ("[relay]\nretry_initial = \"soon\"", "relay.retry_initial"),
        ("[relay]\nretry_initial = \"2h\"\nretry_max = \"1h\"", "relay.retry_max"),
        ("[recipients]\ndomains = []", "recipients.domains"),
        ("[recipients]\ntable = \"/nonexistent/table\"", "recipients.table"),
        ("[recipients]\ntable = \"\"", "recipients.table"),
        (
            "[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"",
            "tls.cert",
        ),
        ("[log]\nlevel = \"loud\"", "log.level"),
        ("[relay]\ntls = \"maybe\"", "relay.tls"),
        (
            "[relay]\ntls = \"required\"\ntls_ca_file = \"/nonexistent.pem\"",
            "relay.tls_ca_file",
        ),
        ("[relay]\nforward_client = \"yes\"", "relay.forward_client"),
        ("[relay]\nbounce_next_hop = \"mx.example\"", "relay.bounce_next_hop"),
        ("[relay]\ndouble_bounce_to = \"postmaster\"", "relay.double_bounce_to"),
        (
            "[relay.routes]\n\"not a domain\" = \"smtp://h:25\"",
            "relay.routes.\"not a domain\"",
        ),
        (
            "[relay.routes]\n\"example.org\" = \"http://x\"",
            "relay.routes.\"example.org\"",
        ),
        (
            "[relay.routes]\n\"example.org\" = { next_hop = \"smtp://h:25\", tls = \"on\" }",
            "relay.routes.\"example.org\".tls",
        ),
        ("[nonsense]\nx = 1", "nonsense"),
        // Tables whose keys are all optional to serde name what they miss.
        (
            "[relay.routes.\"example.org\"]\ntls = \"required\"",
            "relay.routes.\"example.org\".next_hop",
        ),
        ("[tls]\nkey = \"key.pem\"", "tls.cert"),
    ];
    for (toml, key) in cases {
        let e = err(toml);
        assert_eq!(e.key, *key, "{toml}: {e}");
    }
    // The unknown key itself is named in the message.
    assert!(err("[server]\nbogus = 1").to_string().contains("bogus"));
    assert!(err("[nonsense]\nx = 1").to_string().contains("nonsense"));
}

#[test]
fn next_hop_forms() {
    let base = Path::new("/etc/sluice");
    assert_eq!(
        relay::parse_next_hop("relay.next_hop", "lmtp://127.0.0.1:24", base).unwrap(),
        NextHop::LmtpTcp {
            host: "127.0.0.1".into(),
            port: 24
        }
    );
    assert_eq!(
        relay::parse_next_hop("relay.next_hop", "lmtp:/run/dovecot/lmtp", base).unwrap(),
        NextHop::LmtpUnix {
            path: "/run/dovecot/lmtp".into()
        }
    );
    assert_eq!(
        relay::parse_next_hop("relay.next_hop", "smtp://[::1]:25", base).unwrap(),
        NextHop::Smtp {
            host: "::1".into(),
            port: 25
        }
    );
}

#[test]
fn routes_most_specific_first_with_inherited_settings() {
    let c = Config::from_toml(
        "[relay]\nforward_client = \"xclient\"\n\
         [relay.routes]\n\
         \"*.example.org\" = \"smtp://10.0.0.1:25\"\n\
         \"example.org\" = \"lmtp:/run/dovecot/lmtp\"\n\
         \"*.a.example.org\" = { next_hop = \"smtp://10.0.0.2:25\", tls = \"opportunistic\", forward_client = \"none\" }\n",
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap();
    let names: Vec<String> = c.relay.routes.iter().map(|r| r.domains.to_string()).collect();
    assert_eq!(names, ["example.org", "*.a.example.org", "*.example.org"]);
    assert_eq!(
        c.relay.routes[0].hop.forward_client,
        ForwardClient::Xclient,
        "inherited"
    );
    assert_eq!(c.relay.routes[1].hop.tls, HopTls::Opportunistic);
    assert_eq!(c.relay.routes[1].hop.forward_client, ForwardClient::None);
    assert_eq!(c.relay.routes[2].hop.tls, HopTls::None);
    assert!(c.relay.bounce_next_hop.is_none(), "MX lookup by default");
    assert_eq!(c.relay.mx_port, 25);
}

/// Every key may be left out, as the example config says: a ban rule with
/// only `count` keeps the offence's own window and ban.
#[test]
fn a_ban_rule_with_only_a_count_keeps_the_offences_window_and_ban() {
    let c = Config::from_toml(
        "[firewall.rules.unknown_user]\ncount = 5\n[firewall.rules.virus]\nban = \"2h\"\n",
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap();
    let fw = c.firewall.expect("firewall on by default");
    let default = firewall::BanConfig::default();
    let unknown = crate::firewall::engine::Offence::UnknownUser;
    let virus = crate::firewall::engine::Offence::Virus;
    let rule = fw.bans.rules[&unknown];
    assert_eq!(rule.count, 5);
    assert_eq!(
        (rule.window, rule.ban),
        (default.rules[&unknown].window, default.rules[&unknown].ban)
    );
    let rule = fw.bans.rules[&virus];
    assert_eq!(
        (rule.count, rule.window),
        (default.rules[&virus].count, default.rules[&virus].window)
    );
    assert_eq!(rule.ban, 7200);
    assert_eq!(
        err("[firewall.rules.unknown_user]\ncount = 0\n").key,
        "firewall.rules.unknown_user.count"
    );
}

/// `firewall.ports`: TCP ports, each once (default: all traffic); the
/// kernel names are known with the firewall off too (a start removes what
/// they name).
#[test]
fn firewall_ports_and_kernel_names() {
    let load = |toml: &str| Config::from_toml(toml, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let c = load("[firewall]\nexporter = \"nft\"\nports = [25, 465, 587, 25]\n");
    let fw = c.firewall.unwrap();
    assert_eq!(fw.ports, [25, 465, 587]);
    assert_eq!(fw.kernel_exporter(), Some(firewall::KernelExporter::Nft));
    assert!(load("").firewall.unwrap().ports.is_empty());
    let off = load("[firewall]\nenabled = false\nnft_table = \"mail\"\nipset_name = \"mx\"\n");
    assert!(off.firewall.is_none());
    assert_eq!(off.kernel_names.nft.table, "mail");
    assert_eq!(off.kernel_names.ipset.set_v6, "mx_v6");
    for (toml, key, problem) in [
        (
            "[firewall]\nports = [0]",
            "firewall.ports[0]",
            "0 is not a TCP port (1-65535)",
        ),
        (
            "[firewall]\nports = [25, 70000]",
            "firewall.ports[1]",
            "70000 is not a TCP port (1-65535)",
        ),
        (
            "[firewall]\nexporter = \"ipset\"\nports = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]",
            "firewall.ports",
            "16 ports: with exporter = \"ipset\" at most 15 (iptables' multiport match)",
        ),
        (
            "[firewall]\nenabled = false\nnft_table = \"a-b\"",
            "firewall.nft_table",
            "letters, digits and _ only",
        ),
    ] {
        let e = err(toml);
        assert_eq!((e.key.as_str(), e.problem.as_str()), (key, problem), "{toml}");
    }
}

#[test]
fn a_listener_behind_a_load_balancer_is_a_table_beside_plain_addresses() {
    let toml = r#"
[server]
listen = ["127.0.0.1:25", { address = "10.0.0.2:2526", proxy_protocol = true }]
proxy_from = ["10.0.0.5", "10.0.1.0/24"]
proxy_timeout = "1500ms"
"#;
    let c = Config::from_toml(toml, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let plain = Listen::from("127.0.0.1:25".parse::<SocketAddr>().unwrap());
    let proxied = Listen {
        addr: "10.0.0.2:2526".parse().unwrap(),
        proxy_protocol: true,
    };
    assert_eq!(c.server.listen, vec![plain, proxied]);
    assert_eq!(
        c.server.proxy_from,
        vec![
            "10.0.0.5/32".parse::<ipnet::IpNet>().unwrap(),
            "10.0.1.0/24".parse().unwrap()
        ]
    );
    assert_eq!(c.server.proxy_timeout, Duration::from_millis(1500));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    // The table's keys are named when one is wrong.
    let e = Config::from_toml(
        "[server]\nlisten = [{ address = \"10.0.0.2:2526\", proxy = true }]",
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap_err();
    assert!(e.to_string().contains("known keys: address, proxy_protocol"), "{e}");

    // Balancers listed for no PROXY listener: a warning, not an error.
    let c = Config::from_toml(
        "[server]\nproxy_from = [\"10.0.0.5\"]",
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].key, "server.proxy_from");
}
