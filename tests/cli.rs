//! The command line: check-config and exit codes.

use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn example_config_is_valid() {
    let out = sluice()
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sluice.example.toml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_config_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nmax_recipients = -1\n", "server.max_recipients"),
        ("[server]\nlisten = [\"nope\"]\n", "server.listen[0]"),
        ("[relay]\nnext_hop = \"ftp://x\"\n", "relay.next_hop"),
        ("[relay]\nretry_max = \"forever\"\n", "relay.retry_max"),
        ("[spool]\nfsynk = true\n", "spool.fsynk"),
        ("[server\n", "(syntax)"),
    ];
    // [spam] is read after the recipient table, which must exist.
    let table = concat!(
        "[recipients]\ntable = \"",
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/recipients.example\"\n"
    );
    let spam_cases = [
        ("[spam]\ntag = \"high\"\n", "spam.tag"),
        (
            "[spam.domains.\"x.example\"]\nreject = \"never\"\n",
            "spam.domains.\"x.example\".reject",
        ),
        ("[spam]\nbayes_model = \"/nonexistent/model\"\n", "/nonexistent/model"),
        ("[spam]\nrules_dir = \"rules.d\"\n", "bad.rules:2: bad regex"),
    ];
    std::fs::create_dir(dir.path().join("rules.d")).unwrap();
    std::fs::write(dir.path().join("rules.d/bad.rules"), "# comment\nbody X /(/\n").unwrap();
    let spam_cases = spam_cases.map(|(t, k)| (format!("{table}{t}"), k));
    let cases = cases.map(|(t, k)| (t.to_string(), k));
    for (text, key) in cases.iter().chain(&spam_cases) {
        let (text, key) = (text.as_str(), *key);
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, text).unwrap();
        for args in [
            vec!["check-config", f.to_str().unwrap()],
            vec!["serve", "--config", f.to_str().unwrap()],
        ] {
            let out = sluice()
                .args(&args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(64), "{text:?} {args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(key), "{text:?}: stderr {err:?} should name {key}");
        }
    }
}

#[test]
fn missing_config_file_exits_64() {
    let out = sluice()
        .args(["check-config", "/nonexistent/sluice.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// The configuration is found the way admins expect: `-c/--config`
/// anywhere on the line (also after a sub-subcommand), else
/// `SLUICE_CONFIG`; `check-config` uses the same as the other commands.
#[test]
fn config_flag_anywhere_and_from_the_environment() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sluice.example.toml");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nmax_recipients = -1\n").unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut c = sluice();
        c.args(args).env_remove("SLUICE_CONFIG");
        if let Some(e) = env {
            c.env("SLUICE_CONFIG", e);
        }
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(run(&["check-config"], Some(example)).0, Some(0));
    let (code, err) = run(&["check-config"], Some(bad.to_str().unwrap()));
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("server.max_recipients"), "{err}");
    assert_eq!(run(&["--config", example, "check-config"], None).0, Some(0));
    assert_eq!(run(&["check-config", "-c", example], None).0, Some(0));
    // After the sub-subcommand: the bad file is read (and refused), so
    // the flag was taken.
    let (code, err) = run(&["bans", "list", "--config", bad.to_str().unwrap()], None);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("server.max_recipients"), "{err}");
}

/// Runs sluice without SLUICE_CONFIG; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = sluice().args(args).env_remove("SLUICE_CONFIG").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names under "Commands:" in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every command's --help describes it and ends with an example, down to
/// the sub-subcommands (`sluice queue hold --help`).
#[test]
fn every_help_has_an_example() {
    let (code, top, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(top.contains("Example"), "{top}");
    let mut todo: Vec<Vec<String>> = subcommands(&top).into_iter().map(|c| vec![c]).collect();
    assert!(todo.len() >= 9, "{top}");
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (code, help, err) = run(&args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(help.contains("\nExample"), "sluice {args:?} has no example:\n{help}");
        // Every argument and option is described.
        // (on the same line, or on the next, further indented, in the long help).
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("  <") || line.starts_with("  [") || line.starts_with("  -") {
                let next = lines.get(i + 1).copied().unwrap_or_default();
                assert!(
                    line.trim().contains("  ") || (next.starts_with("      ") && !next.trim().is_empty()),
                    "sluice {args:?}: argument without a description: {line:?}"
                );
            }
        }
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        seen += 1;
    }
    assert!(seen >= 24, "{seen} commands");
}

/// `sluice config` prints every key with its default filled in; the
/// output is a valid configuration that prints the same again.
#[test]
fn config_prints_the_effective_configuration_which_reads_back() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sluice.example.toml");
    let (code, full, err) = run(&["config", example]);
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "[server]\nlisten = [\"127.0.0.1:2525\"]\nhostname = \"mx.example.org\"\n",
        concat!(
            "table = \"",
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/recipients.example\"\n"
        ),
        "[firewall.rules.unknown_user]\ncount = 10\nwindow = \"5m\"\nban = \"1h\"\n",
        "tag = 5.0\nquarantine = \"off\"\n",
    ] {
        assert!(full.contains(line), "{line:?} not in\n{full}");
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("effective.toml");
    std::fs::write(&f, &full).unwrap();
    let f = f.to_str().unwrap();
    let (code, out, err) = run(&["check-config", f]);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{out}");
    let body = |s: &str| s.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    let (code, again, _) = run(&["config", "-c", f]);
    assert_eq!(code, Some(0));
    assert_eq!(body(&again), body(&full));
    // Only what the example changes.
    let (code, changed, err) = run(&["config", "--changed", example]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        changed,
        concat!(
            "recipients.table = \"",
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/recipients.example\"\nserver.hostname = \"mx.example.org\"\n"
        )
    );
    // The --changed lines are a configuration too: the same effective one.
    std::fs::write(dir.path().join("changed.toml"), &changed).unwrap();
    let (_, from_changed, _) = run(&["config", dir.path().join("changed.toml").to_str().unwrap()]);
    assert_eq!(body(&from_changed), body(&full));
    // An invalid file is refused, not printed.
    std::fs::write(dir.path().join("bad.toml"), "[server]\nmax_connections = 0\n").unwrap();
    let (code, out, err) = run(&["config", dir.path().join("bad.toml").to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (Some(64), ""));
    assert!(
        err.contains("server.max_connections: must be greater than zero"),
        "{err}"
    );
}

/// Without a file, the built-in defaults are those of an installed system.
#[test]
fn builtin_defaults_suit_an_installed_system() {
    if std::path::Path::new("/etc/sluice/sluice.toml").exists() {
        return;
    }
    let (code, full, err) = run(&["config"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(full.contains("[spool]\ndir = \"/var/spool/sluice\"\n"), "{full}");
    assert!(full.contains("table = \"/etc/sluice/recipients\"\n"), "{full}");
    assert!(full.contains("store = \"/var/spool/sluice/bans.json\"\n"), "{full}");
    assert_eq!(run(&["config", "--changed"]).1, "");
}

fn with_table(dir: &std::path::Path, name: &str, text: &str) -> String {
    let f = dir.join(name);
    let table = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/recipients.example");
    std::fs::write(&f, format!("{text}\n[recipients]\ntable = \"{table}\"\n")).unwrap();
    f.to_str().unwrap().to_string()
}

/// check-config warns about settings that contradict each other (exit 0),
/// and refuses them with --strict (exit 64).
#[test]
fn check_config_warns_about_contradictions() {
    let dir = tempfile::tempdir().unwrap();
    let f = with_table(
        dir.path(),
        "c.toml",
        "[spam]\ntag = 12\nreject = 10\n[spam.domains.\"other.example\"]\nreject = 20",
    );
    let (code, out, err) = run(&["check-config", &f]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("{f}: OK\n"));
    assert_eq!(
        err,
        "sluice: warning: spam.tag: 12 is not below spam.reject (10): no message is ever given \"tag\"\n\
         sluice: warning: spam.domains.\"other.example\": other.example is not in recipients.domains: \
         its mail is refused (554 5.7.1) before any spam check, so these thresholds never apply\n"
    );
    let (code, out, err) = run(&["check-config", "--strict", &f]);
    assert_eq!((code, out.as_str()), (Some(64), ""));
    assert!(err.ends_with("2 warning(s), refused (--strict)\n"), "{err}");
}

/// Errors speak the admin's words, with the dotted key, and exit 64; any
/// key may be left out.
#[test]
fn config_errors_speak_the_admins_words() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[server]\nmax_connections = \"five\"",
            "server.max_connections: expected a whole number, got \"five\"",
        ),
        (
            "[firewall.rules.unknown_user]\ncount = \"five\"",
            "firewall.rules.unknown_user.count: expected a whole number from 0 to 4294967295, got \"five\"",
        ),
        (
            "[spam]\nreject = \"never\"",
            "spam.reject: expected a score such as 5.0, or \"off\"; got \"never\"",
        ),
        (
            "[log]\nlevel = 3",
            "log.level: expected text in quotes, got 3 (durations are text with a unit, e.g. \"30s\")",
        ),
        (
            "[metrics]\nenabeld = false",
            "metrics.enabeld: unknown key \"enabeld\" in [metrics]; known keys: enabled, listen, probe_timeout",
        ),
        (
            "[tls]\ncert = \"cert.pem\"",
            "tls.key: missing: [tls] needs both cert and key (leave out the whole [tls] table for no STARTTLS)",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = with_table(dir.path(), &format!("{i}.toml"), text);
        for cmd in ["check-config", "config"] {
            let (code, _, err) = run(&[cmd, &f]);
            assert_eq!(code, Some(64), "{text}");
            assert_eq!(err, format!("sluice: configuration error: {want}\n"), "{cmd} {text}");
        }
    }
    // The example: a ban rule with only a count.
    let f = with_table(dir.path(), "rule.toml", "[firewall.rules.unknown_user]\ncount = 5");
    let (code, _, err) = run(&["check-config", &f]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        run(&["config", "--changed", &f]).1.lines().next(),
        Some("firewall.rules.unknown_user.count = 5")
    );
}
