use super::*;

fn err(toml: &str) -> ConfigError {
    Config::from_toml(toml, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_err()
}

#[test]
fn defaults_are_valid() {
    let c = Config::from_toml("", Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(c.server.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
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
        ("[server]\nmax_message_size = 0", "server.max_message_size"),
        ("[server]\nmax_recipients = \"ten\"", "server.max_recipients"),
        ("[server]\nbogus = 1", "server.bogus"),
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
        ("[nonsense]\nx = 1", "nonsense"),
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
