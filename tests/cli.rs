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
