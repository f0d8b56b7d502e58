//! serde's and toml's messages in the admin's words: `invalid type:
//! string "five", expected u64` becomes `expected a whole number, got
//! "five"`, an unknown field names its table and the keys it knows.

/// The problem `message` (from serde or toml) at `key`, reworded.
pub(super) fn admin_words(key: &str, message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return unknown_key(key, rest);
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("missing key {}", quoted(rest));
    }
    if let Some(name) = message.strip_prefix("data did not match any variant of untagged enum ") {
        return match name.trim() {
            "RawThreshold" => "expected a score such as 5.0, or \"off\"".into(),
            "RawRoute" => {
                "expected a next hop such as \"smtp://10.0.0.1:25\", or a table such as { next_hop = \"smtp://10.0.0.1:25\", tls = \"required\" } (known keys: next_hop, tls, tls_ca_file, forward_client)"
                    .into()
            }
            "RawListen" => {
                "expected an address such as \"0.0.0.0:25\", or a table such as { address = \"0.0.0.0:2526\", proxy_protocol = true } (known keys: address, proxy_protocol)"
                    .into()
            }
            _ => "not a value this key takes".into(),
        };
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((got, expected)) = rest.rsplit_once(", expected ")
        {
            let got = got_words(got);
            let want = expected_words(expected, &got);
            return format!("expected {want}, got {got}{}", hint(expected, &got));
        }
    }
    message.to_string()
}

/// `unknown field `foo`, expected one of `a`, `b`` (or `there are no
/// fields`, or `expected `a``).
fn unknown_key(key: &str, rest: &str) -> String {
    let (name, known) = match rest.split_once(", ") {
        Some((n, k)) => (n, k),
        None => (rest, ""),
    };
    let known: Vec<&str> = known
        .trim_start_matches("expected one of ")
        .trim_start_matches("expected ")
        .split(", ")
        .map(|k| k.trim_matches('`'))
        .filter(|k| !k.is_empty() && *k != "there are no fields")
        .collect();
    let name = quoted(name);
    let table = key.rsplit_once('.').map(|(t, _)| t);
    let known = if known.is_empty() {
        "it takes no keys".to_string()
    } else {
        format!("known keys: {}", known.join(", "))
    };
    match table {
        Some(t) => format!("unknown key {name} in [{t}]; {known}"),
        None => format!(
            "unknown section [{}]; known sections: {}",
            name.trim_matches('"'),
            known.trim_start_matches("known keys: ")
        ),
    }
}

/// `` `foo` `` as `"foo"`.
fn quoted(s: &str) -> String {
    format!("{:?}", s.trim().trim_matches('`'))
}

/// serde's `Unexpected` ("string \"five\"", "integer `5`", "map") as the
/// value the admin wrote.
fn got_words(got: &str) -> String {
    let got = got.trim();
    for (prefix, _) in [
        ("string ", ()),
        ("integer ", ()),
        ("floating point ", ()),
        ("boolean ", ()),
    ] {
        if let Some(v) = got.strip_prefix(prefix) {
            return v.trim_matches('`').to_string();
        }
    }
    match got {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        other => other.to_string(),
    }
}

/// serde's expectation (`u64`, `a string`, `struct RawServer`) in words.
fn expected_words(expected: &str, got: &str) -> String {
    let negative = got.starts_with('-');
    match expected.trim() {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" if negative => "a whole number, 0 or more".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u8" | "u64" | "u128" | "usize" => "a whole number".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a string" | "a borrowed string" | "a character" => "text in quotes".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list such as [\"a\", \"b\"]".into(),
        e if e == "a map" || e.starts_with("struct ") => "a table".into(),
        e => e.to_string(),
    }
}

/// A number where text was expected is most often a duration without
/// quotes and unit.
fn hint(expected: &str, got: &str) -> &'static str {
    if expected.trim() == "a string" && got.parse::<f64>().is_ok() {
        " (durations are text with a unit, e.g. \"30s\")"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn problem(toml: &str) -> String {
        Config::parse_raw(toml).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn serde_messages_become_the_admins_words() {
        let cases = [
            (
                "[server]\nmax_connections = \"five\"",
                "server.max_connections: expected a whole number, got \"five\"",
            ),
            (
                "[server]\nmax_recipients = -1",
                "server.max_recipients: expected a whole number, 0 or more, got -1",
            ),
            (
                "[server]\nmax_recipients = 1.5",
                "server.max_recipients: expected a whole number, got 1.5",
            ),
            (
                "[relay]\nmx_port = 70000",
                "relay.mx_port: expected a whole number from 0 to 65535, got 70000",
            ),
            (
                "[spool]\nfsync = \"yes\"",
                "spool.fsync: expected true or false, got \"yes\"",
            ),
            (
                "[relay]\nretry_max = 60",
                "relay.retry_max: expected text in quotes, got 60 (durations are text with a unit, e.g. \"30s\")",
            ),
            (
                "[server]\nlisten = \"127.0.0.1:25\"",
                "server.listen: expected a list such as [\"a\", \"b\"], got \"127.0.0.1:25\"",
            ),
            ("server = 5", "server: expected a table, got 5"),
            (
                "[stress]\nsessions_ratio = \"most\"",
                "stress.sessions_ratio: expected a number, got \"most\"",
            ),
            (
                "[spam]\ntag = true",
                "spam.tag: expected a score such as 5.0, or \"off\"",
            ),
            (
                "[relay.routes]\n\"example.org\" = 25",
                "relay.routes.\"example.org\": expected a next hop such as \"smtp://10.0.0.1:25\", or a table such as { next_hop = \"smtp://10.0.0.1:25\", tls = \"required\" } (known keys: next_hop, tls, tls_ca_file, forward_client)",
            ),
        ];
        for (toml, want) in cases {
            assert_eq!(problem(toml), want, "{toml}");
        }
    }

    #[test]
    fn unknown_keys_name_their_table_and_the_known_keys() {
        let e = problem("[spool]\nfsynk = true");
        assert_eq!(
            e,
            "spool.fsynk: unknown key \"fsynk\" in [spool]; known keys: dir, fsync, segment_size, min_free"
        );
        let e = problem("[nonsense]\nx = 1");
        assert!(
            e.starts_with("nonsense: unknown section [nonsense]; known sections: server, timeouts, tls,"),
            "{e}"
        );
        let e = problem("[firewall.rules.spam]\nwindw = \"5m\"");
        assert_eq!(
            e,
            "firewall.rules.spam.windw: unknown key \"windw\" in [firewall.rules.spam]; known keys: count, window, ban"
        );
    }
}
