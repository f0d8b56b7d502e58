//! The statistical classifier on the shared SpamAssassin sample: k-fold
//! cross-validation through the library, and `sluice learn` as a command.

use std::path::PathBuf;

use sluice::spam::{bayes, tokenize};

use crate::util::corpora;

/// (file, SpamAssassin group, is spam) from labels.tsv.
pub(crate) fn labelled() -> Vec<(PathBuf, String, bool)> {
    let dir = corpora().join("spamassassin");
    let text = std::fs::read_to_string(dir.join("labels.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (path, label, group) = (col("path"), col("label"), col("sa_group"));
    lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .map(|f| (dir.join(f[path]), f[group].to_string(), f[label] == "spam"))
        .collect()
}

#[test]
fn classifier_separates_spam_from_ham_in_cross_validation() {
    const FOLDS: usize = 5;
    const THRESHOLD: f64 = 0.9;
    let all: Vec<_> = labelled()
        .into_iter()
        .map(|(p, g, s)| (tokenize::tokens(&std::fs::read(&p).unwrap()), g, s))
        .collect();
    assert!(all.len() >= 600);
    // Score every message with a model trained on the other folds.
    let mut scores = vec![0.5; all.len()];
    for k in 0..FOLDS {
        let mut model = bayes::Model::new();
        for (i, (t, _, s)) in all.iter().enumerate() {
            if i % FOLDS != k {
                model.learn(t, *s);
            }
        }
        for (i, (t, _, _)) in all.iter().enumerate() {
            if i % FOLDS == k {
                scores[i] = model.classify(t).unwrap_or(0.5);
            }
        }
    }
    // (recall, false positive rate) at a threshold, and the per-group curve.
    let rates = |threshold: f64| {
        let (mut spam, mut caught, mut ham, mut fp) = (0, 0, 0, 0);
        for ((_, _, s), p) in all.iter().zip(&scores) {
            let flagged = usize::from(*p > threshold);
            if *s {
                spam += 1;
                caught += flagged;
            } else {
                ham += 1;
                fp += flagged;
            }
        }
        (caught as f64 / spam as f64, fp as f64 / ham as f64)
    };
    let groups: std::collections::BTreeSet<&str> = all.iter().map(|(_, g, _)| g.as_str()).collect();
    for threshold in [0.5, 0.7, 0.9, 0.95, 0.99] {
        let per_group: Vec<String> = groups
            .iter()
            .map(|g| {
                let in_group = || all.iter().zip(&scores).filter(|((_, gg, _), _)| gg == g);
                let flagged = in_group().filter(|(_, p)| **p > threshold).count();
                format!("{g} {flagged}/{}", in_group().count())
            })
            .collect();
        let (recall, fp_rate) = rates(threshold);
        eprintln!(
            "P > {threshold}: recall {recall:.3}, false positives {fp_rate:.4}; flagged: {}",
            per_group.join(", ")
        );
    }
    let (recall, fp_rate) = rates(THRESHOLD);
    eprintln!("Bayes alone, {FOLDS}-fold, P > {THRESHOLD}: recall {recall:.3}, false positives {fp_rate:.4}");
    // A floor against regressions (measured 2026-12-07: recall 0.882, false positives 0.0045 at P > 0.9; 0.964
    // and 0.0090 at P > 0.5); the issue's targets are for the whole scoring (rules + classifier + auth), measured
    // in docs/SPAM-QUALITY.md.
    assert!(recall >= 0.84, "recall {recall:.3}");
    assert!(fp_rate <= 0.012, "false positives {fp_rate:.4}");
    let (recall, fp_rate) = rates(0.5);
    assert!(recall >= 0.93, "recall at P > 0.5 {recall:.3}");
    assert!(fp_rate <= 0.02, "false positives at P > 0.5 {fp_rate:.4}");
}

#[test]
fn learn_command_writes_a_model_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (spam_dir, ham_dir) = (dir.path().join("spam"), dir.path().join("ham"));
    std::fs::create_dir_all(&spam_dir).unwrap();
    std::fs::create_dir_all(&ham_dir).unwrap();
    let (mut ns, mut nh) = (0, 0);
    for (p, _, s) in labelled() {
        let (d, n) = if s { (&spam_dir, &mut ns) } else { (&ham_dir, &mut nh) };
        if *n < 15 {
            std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
            *n += 1;
        }
    }
    let model = dir.path().join("bayes.model");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["learn", "--spam"])
        .arg(&spam_dir)
        .arg("--ham")
        .arg(&ham_dir)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("15 spam, 15 ham"));
    let m = bayes::Model::load(&mut std::io::BufReader::new(std::fs::File::open(&model).unwrap())).unwrap();
    assert_eq!((m.nspam(), m.nham()), (15, 15));
    assert!(!m.is_empty());
}

#[test]
fn every_rules_file_compiles_and_passes_its_fixture() {
    use sluice::spam::rules::{RuleSet, check_fixture};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap()))
        .collect();
    let set = RuleSet::compile(&texts).unwrap_or_else(|e| panic!("{e}"));
    assert!(!set.is_empty());
    for f in &files {
        let fixture = f.with_extension("test");
        let text = std::fs::read_to_string(&fixture)
            .unwrap_or_else(|e| panic!("{}: every rules file needs a .test fixture: {e}", fixture.display()));
        let failures = check_fixture(&set, &text);
        assert!(failures.is_empty(), "{}:\n{}", fixture.display(), failures.join("\n"));
    }
}

/// `sluice learn` with `args`, `stdin` piped in; (exit code, stdout+stderr).
fn learn(args: &[&std::ffi::OsStr], stdin: &[u8]) -> (Option<i32>, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("learn")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn learning_adds_to_the_model_as_a_full_retrain_would_and_forget_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let os = |s: &str| std::ffi::OsString::from(s);
    // Two batches of the sample: a Maildir of spam and a directory of ham
    // each, and one more spam as an mbox.
    let (mut spam, mut ham): (Vec<PathBuf>, Vec<PathBuf>) = (Vec::new(), Vec::new());
    for (p, _, s) in labelled() {
        let v = if s { &mut spam } else { &mut ham };
        if v.len() < 30 {
            v.push(p);
        }
    }
    for (batch, range) in [("a", 0..15), ("b", 15..29)] {
        std::fs::create_dir_all(d.join(format!("spam-{batch}/cur"))).unwrap();
        std::fs::create_dir_all(d.join(format!("spam-{batch}/new"))).unwrap();
        std::fs::create_dir_all(d.join(format!("ham-{batch}"))).unwrap();
        for i in range {
            let sub = if i % 2 == 0 { "cur" } else { "new" };
            std::fs::copy(&spam[i], d.join(format!("spam-{batch}/{sub}/{i}:2,S"))).unwrap();
            std::fs::copy(&ham[i], d.join(format!("ham-{batch}/{i}"))).unwrap();
        }
    }
    let last = std::fs::read(&spam[29]).unwrap();
    let mut mbox = b"From someone@example.com Mon Dec  7 10:00:00 2026\n".to_vec();
    mbox.extend_from_slice(&last);
    std::fs::write(d.join("one.mbox"), &mbox).unwrap();
    let p = |s: &str| d.join(s).into_os_string();
    let (inc, full) = (p("inc.model"), p("full.model"));

    // Too few to start a model: refused, nothing written.
    let (code, out) = learn(
        &[
            &os("--rebuild"),
            &os("--spam"),
            &p("one.mbox"),
            &os("--ham"),
            &p("ham-a"),
            &os("-o"),
            &inc,
        ],
        b"",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("too few messages") && !d.join("inc.model").exists(),
        "{out}"
    );
    let (code, out) = learn(&[&os("--spam"), &p("ham-a/nothing-here"), &os("-o"), &inc], b"");
    assert_ne!(code, Some(0), "{out}");
    std::fs::create_dir(d.join("empty")).unwrap();
    let (code, out) = learn(&[&os("--spam"), &p("empty"), &os("-o"), &inc], b"");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no messages found"), "{out}");

    // Batch a, then batch b added, then one spam from stdin, equals all at once.
    let ok = |args: &[&std::ffi::OsStr], stdin: &[u8]| {
        let (code, out) = learn(args, stdin);
        assert_eq!(code, Some(0), "{out}");
        out
    };
    ok(
        &[&os("--spam"), &p("spam-a"), &os("--ham"), &p("ham-a"), &os("-o"), &inc],
        b"",
    );
    ok(
        &[&os("--spam"), &p("spam-b"), &os("--ham"), &p("ham-b"), &os("-o"), &inc],
        b"",
    );
    let out = ok(&[&os("--spam"), &os("-"), &os("-o"), &inc], &last);
    assert!(
        out.contains("learned 1 spam and 0 ham") && out.contains("30 spam, 29 ham"),
        "{out}"
    );
    ok(
        &[
            &os("--rebuild"),
            &os("--spam"),
            &p("spam-a"),
            &os("--spam"),
            &p("spam-b"),
            &os("--spam"),
            &p("one.mbox"),
            &os("--ham"),
            &p("ham-a"),
            &os("--ham"),
            &p("ham-b"),
            &os("-o"),
            &full,
        ],
        b"",
    );
    let read = |f: &std::ffi::OsStr| std::fs::read(f).unwrap();
    // The token counts, byte for byte: the file up to the n-gram section.
    let counts = |f: &std::ffi::OsStr| {
        let text = String::from_utf8(read(f)).unwrap();
        let at = text.find("\nngram ").expect("an n-gram section");
        text[..at].to_string()
    };
    let load = |f: &std::ffi::OsStr| bayes::Model::load(&mut read(f).as_slice()).unwrap();
    assert_eq!(
        counts(&inc),
        counts(&full),
        "adding batches gives the token counts of one full retrain"
    );
    // The n-gram classifier learns online (src/spam/ngram.rs), from runs
    // with at least 10 spam and 10 ham: batches a and b, not the one spam
    // from stdin.
    assert!(
        out.contains("n-gram classifier (29 spam, 29 ham) is left as it was"),
        "{out}"
    );
    assert_eq!(load(&inc).ngram().counts(), (29, 29));
    assert_eq!(load(&full).ngram().counts(), (30, 29));

    // Moved out of Junk: forgotten as spam (the model of never having
    // learned it), then learned as ham.
    let before = p("before.model");
    ok(
        &[
            &os("--rebuild"),
            &os("--spam"),
            &p("spam-a"),
            &os("--spam"),
            &p("spam-b"),
            &os("--ham"),
            &p("ham-a"),
            &os("--ham"),
            &p("ham-b"),
            &os("-o"),
            &before,
        ],
        b"",
    );
    let ngram_learned = load(&inc).ngram().clone();
    let out = ok(&[&os("--forget"), &os("--spam"), &os("-"), &os("-o"), &inc], &last);
    assert!(out.contains("forgot 1 spam"), "{out}");
    assert_eq!(counts(&inc), counts(&before));
    // One message at a time leaves the n-gram classifier alone.
    assert_eq!(load(&inc).ngram(), &ngram_learned);
    let out = ok(&[&os("--ham"), &os("-"), &os("-o"), &inc], &last);
    assert!(out.contains("29 spam, 30 ham"), "{out}");
}

/// A model at `model` learned by `sluice learn --rebuild` from 12 spam and
/// 12 ham of the sample (copied under `d`); returns one more spam.
fn twelve_and_twelve(d: &std::path::Path, model: &std::path::Path) -> Vec<u8> {
    let (spam_dir, ham_dir) = (d.join("spam"), d.join("ham"));
    std::fs::create_dir_all(&spam_dir).unwrap();
    std::fs::create_dir_all(&ham_dir).unwrap();
    let mut extra = None;
    let (mut ns, mut nh) = (0, 0);
    for (p, _, s) in labelled() {
        let (dir, n) = if s { (&spam_dir, &mut ns) } else { (&ham_dir, &mut nh) };
        if *n < 12 {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
            *n += 1;
        } else if s && extra.is_none() {
            extra = Some(std::fs::read(&p).unwrap());
        }
    }
    let arg = |s: &str| std::ffi::OsString::from(s);
    let args = [
        arg("--rebuild"),
        arg("--spam"),
        spam_dir.into_os_string(),
        arg("--ham"),
        ham_dir.into_os_string(),
        arg("-o"),
        model.as_os_str().to_owned(),
    ];
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, out) = learn(&refs, b"");
    assert_eq!(code, Some(0), "{out}");
    extra.expect("a 13th spam")
}

/// The README's IMAPSieve recipe against a real Dovecot: a user moving a
/// message into Junk trains it as spam; moving it back out forgets it as
/// spam and trains it as ham.
#[test]
fn dovecot_imapsieve_trains_the_model_as_users_move_mail_in_and_out_of_junk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The imap process runs as `mail`: it replaces the model file in its
    // directory.
    let model_dir = d.join("model");
    std::fs::create_dir(&model_dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&model_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let model = model_dir.join("bayes.model");
    let moved = twelve_and_twelve(d, &model);
    let counts = || {
        let m = bayes::Model::load(&mut std::io::BufReader::new(std::fs::File::open(&model).unwrap())).unwrap();
        (m.nspam(), m.nham())
    };
    assert_eq!(counts(), (12, 12));
    let imap = crate::util::services::DovecotImap::start(std::path::Path::new(env!("CARGO_BIN_EXE_sluice")), &model);
    let msg = d.join("moved.eml");
    std::fs::write(&msg, moved).unwrap();
    // A user appends the message to INBOX, moves it to Junk, then back.
    let client = r#"
import imaplib, sys, time
port, path, step = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = imaplib.IMAP4("127.0.0.1", port)
c.login("alice", "secret")
if step == "junk":
    c.append("INBOX", None, None, open(path, "rb").read())
    c.select("INBOX")
    typ, data = c.copy("1", "Junk")
else:
    c.select("Junk")
    typ, data = c.copy("1", "INBOX")
print(typ, data)
c.logout()
"#;
    let step = |s: &str| {
        let out = std::process::Command::new("python3")
            .args(["-c", client, &imap.port.to_string(), msg.to_str().unwrap(), s])
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("OK"),
            "{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            imap.log()
        );
    };
    let wait_for = |want: (u32, u32)| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while counts() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "model {:?}, wanted {want:?}\n{}",
                counts(),
                imap.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    step("junk");
    wait_for((13, 12));
    step("out");
    wait_for((12, 13));
}

/// `sluice learn --daemon`: the running daemon learns the message into
/// spam.bayes_model and answers with the model it now uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_daemon_learns_a_message_sent_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("bayes.model");
    let extra = twelve_and_twelve(d, &model);
    let os = |p: &std::path::Path| p.as_os_str().to_owned();
    let port = crate::util::free_port();
    let toml = crate::util::base_toml("smtp://127.0.0.1:1")
        .replace(
            "listen = [\"127.0.0.1:0\"]",
            &format!("listen = [\"127.0.0.1:{port}\"]"),
        )
        .replace(
            "[spam]\nenabled = false\n",
            "[spam]\nauth = false\nbayes_model = \"bayes.model\"\n",
        );
    let _p = crate::util::Proc::start_toml(d, port, &toml);
    let cfg = d.join("sluice.toml");
    let (code, out) = learn(
        &[
            std::ffi::OsStr::new("-c"),
            &os(&cfg),
            std::ffi::OsStr::new("--daemon"),
            std::ffi::OsStr::new("--spam"),
            std::ffi::OsStr::new("-"),
        ],
        &extra,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("daemon: learned 1 spam and 0 ham; the model in use has 13 spam, 12 ham"),
        "{out}"
    );
    let m = bayes::Model::load(&mut std::io::BufReader::new(std::fs::File::open(&model).unwrap())).unwrap();
    assert_eq!((m.nspam(), m.nham()), (13, 12), "written to spam.bayes_model");
}
