//! Spam scoring in the server: actions in the session (reject, tempfail,
//! quarantine, tag, deliver), per-domain thresholds with the strictest
//! applying, headers prepended with the rest byte for byte, the
//! `SpamScored` event, and hot reload of rule files.

use std::sync::Arc;
use std::time::Duration;

use sluice::events::Event;

use crate::util::*;

/// Local rules for deterministic scores: a message containing `score3`
/// gets 3 points, `score6` 6, `score12` 12.
const LOCAL_RULES: &str = "\
body SCORE3 /\\bscore3\\b/
score SCORE3 3
body SCORE6 /\\bscore6\\b/
score SCORE6 6
body SCORE12 /\\bscore12\\b/
score SCORE12 12
";

fn message(marker: &str, word: &str) -> Vec<u8> {
    format!(
        "From: a@client.example\r\nTo: user@example.com\r\nSubject: {marker}\r\n\
Message-ID: <{marker}@client.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n\
Hello, this is {marker}.\r\n{word}\r\n"
    )
    .into_bytes()
}

/// A relay with spam scoring on: built-in rules plus `LOCAL_RULES`, no
/// DNS checks, and `extra` appended to the [spam] section.
async fn relay(sink: &Sink, extra: &str) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/50_local.rules"), LOCAL_RULES).unwrap();
    let base = base_toml(&sink.next_hop()).replace("[spam]\nenabled = false\n", "");
    let toml = format!("{base}\n[spam]\nauth = false\nrules_dir = \"rules\"\nreload_interval = \"100ms\"\n{extra}\n");
    TestRelay::start_in(dir, &toml, |_| {}).await
}

async fn spam_event(
    events: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    id_hint: Option<&str>,
) -> (f64, String, String) {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("SpamScored in time")
            .unwrap();
        if let Event::SpamScored {
            score,
            action,
            rules,
            id,
            ..
        } = &*e
            && id_hint.is_none_or(|h| h == id)
        {
            return (*score, action.as_str().to_string(), rules.clone());
        }
    }
}

/// Splits a delivered message at our Received header: (what was added on
/// top, the rest from Received on).
fn split_top(data: &[u8]) -> (String, &[u8]) {
    let text = String::from_utf8_lossy(data);
    let at = text.find("Received: from ").expect("our Received header");
    (text[..at].to_string(), &data[at..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gtube_is_rejected_in_session_and_never_relayed() {
    let sink = Sink::start().await;
    let relay = relay(&sink, "").await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    let gtube = corpus_message(&corpora().join("virus/gtube/gtube.eml"));
    let r = c.data(&gtube).await;
    assert!(r.starts_with("550 5.7.1 Message rejected as spam (score 10"), "{r}");
    let (score, action, rules) = spam_event(&mut events, None).await;
    assert!(score >= 1000.0, "{score}");
    assert_eq!(action, "reject");
    assert!(rules.split(',').any(|r| r == "GTUBE"), "{rules}");
    // The session goes on and a plain message is delivered untouched.
    c.envelope("a@client.example", &["user@example.com"]).await;
    let plain = message("plain", "nothing special");
    assert!(c.data(&plain).await.starts_with("250"));
    // GTUBE was refused, never accepted: only the plain one can be relayed.
    assert_eq!(event_count(&relay.running().events, "message_accepted"), 1);
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1, "GTUBE was never relayed");
    let (top, rest) = split_top(&got[0].data);
    assert_eq!(top, "", "no headers added to mail delivered as it is");
    assert_eq!(strip_trace(rest), &plain[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_mail_gets_headers_on_top_and_stays_byte_for_byte() {
    let sink = Sink::start().await;
    let relay = relay(&sink, "subject_prefix = \"[SPAM]\"").await;
    let mut c = relay.client().await;
    c.envelope("a@client.example", &["user@example.com"]).await;
    // Folded headers, odd spacing and a body that must not change.
    let mut msg = message("tagme", "score6");
    msg.extend_from_slice(b"X-Not-A-Header: in the body\r\n\tstill body\r\n");
    assert!(c.data(&msg).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    let (top, rest) = split_top(&got[0].data);
    assert!(
        top.starts_with("X-Spam-Score: 6.0\r\nX-Spam-Status: Yes, score=6.0 required=5.0 tests="),
        "{top}"
    );
    assert!(top.contains("SCORE6"), "{top}");
    assert!(top.ends_with("\r\n"));
    // Only the Subject changed, by the prefix.
    let want = String::from_utf8(msg)
        .unwrap()
        .replace("Subject: tagme", "Subject: [SPAM] tagme");
    assert_eq!(String::from_utf8_lossy(strip_trace(rest)), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_domain_thresholds_strictest_wins_quarantine_and_tempfail() {
    let sink = Sink::start().await;
    let relay = relay(
        &sink,
        "[spam.domains.\"catchall.example.net\"]\nquarantine = 5\ntempfail = 10\nreject = \"off\"\n",
    )
    .await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;

    // 6 points: tagged for example.com, quarantined for catchall: the
    // strictest applies to the one copy.
    c.envelope("a@client.example", &["user@example.com", "x@catchall.example.net"])
        .await;
    let r = c.data(&message("both", "score6")).await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let id = r.trim().rsplit(' ').next().unwrap().to_string();
    let (_, action, _) = spam_event(&mut events, Some(&id)).await;
    assert_eq!(action, "quarantine");
    let q = sluice::quarantine::Quarantine::new(relay.path("spool/quarantine"));
    let entry = q.entry(&id).expect("quarantined");
    assert_eq!(entry.reason, sluice::events::Cause::Spam);
    assert!(String::from_utf8_lossy(&q.body(&id).unwrap()).starts_with("X-Spam-Score: 6.0\r\n"));

    // 12 points: reject for example.com (default 10), tempfail for
    // catchall (reject off there): each alone.
    c.envelope("a@client.example", &["x@catchall.example.net"]).await;
    let r = c.data(&message("temp", "score12")).await;
    assert!(r.starts_with("451 4.7.1"), "{r}");
    c.envelope("a@client.example", &["user@example.com"]).await;
    let r = c.data(&message("rej", "score12")).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");

    // 3 points: delivered as is to both.
    c.envelope("a@client.example", &["user@example.com", "x@catchall.example.net"])
        .await;
    assert!(c.data(&message("fine", "score3")).await.starts_with("250"));
    let got = sink.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: fine"));
    assert_eq!(split_top(&got[0].data).0, "");
    // The quarantined one got 250 too, but the relay owes nothing more:
    // the 3-point message is all the next hop will ever get.
    assert_eq!(stop_and_pending(relay).await, Vec::<String>::new());
    assert_eq!(sink.messages().len(), 1, "only the 3-point message was relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_files_reload_on_change_and_a_bad_file_keeps_the_running_set() {
    let sink = Sink::start().await;
    let relay = relay(&sink, "").await;
    let mut events = relay.running().events.subscribe();
    let rules = relay.path("rules/50_local.rules");
    let send = |word: &'static str| {
        let addr = relay.addr;
        async move {
            let mut c = Client::connect(addr).await;
            c.expect("220").await;
            c.send("EHLO client.example").await;
            c.expect("250 ").await;
            c.envelope("a@client.example", &["user@example.com"]).await;
            c.data(&message("reload", word)).await
        }
    };
    assert!(send("newword").await.starts_with("250"));

    // A broken file: refused with file:line, the running set stays.
    std::fs::write(
        &rules,
        format!("{LOCAL_RULES}body NEWWORD /newword(/\nscore NEWWORD 20\n"),
    )
    .unwrap();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("a warning about the bad rule")
            .unwrap();
        if let Event::Warning {
            component: "spam",
            message,
        } = &*e
        {
            assert!(message.contains("50_local.rules:7:"), "{message}");
            break;
        }
    }
    assert!(send("score12").await.starts_with("550 5.7.1"), "old rules still work");
    assert!(send("newword").await.starts_with("250"));

    // Fixed: the new rule is live without a restart.
    std::fs::write(
        &rules,
        format!("{LOCAL_RULES}body NEWWORD /newword/\nscore NEWWORD 20\n"),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = send("newword").await;
        if r.starts_with("550 5.7.1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new rule never became live: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The n-gram classifier votes in the session: a model learned as `sluice
/// learn` does from the sample's spam and ham, minus twenty spam_2
/// messages, which are then sent through the server. Its `NGRAM_*` rules
/// must show among the rules of the `SpamScored` events (without the n-gram
/// section in the model, they never can).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ngram_classifier_votes_on_mail_in_the_session() {
    let all = crate::spam::labelled();
    let held_out: Vec<_> = all.iter().filter(|(_, g, _)| g == "spam_2").take(20).cloned().collect();
    let mut model = sluice::spam::bayes::Model::new();
    let mut batch = Vec::new();
    for (p, _, is_spam) in all.iter().filter(|m| !held_out.contains(m)) {
        let raw = std::fs::read(p).unwrap();
        sluice::spam::learn_message(&mut model, &raw, *is_spam, false, 50_000, &mut batch);
    }
    assert!(sluice::spam::finish_batch(&mut model, &batch, false));
    let models = tempfile::tempdir().unwrap();
    let path = models.path().join("bayes.model");
    model.save(&mut std::fs::File::create(&path).unwrap(), 1).unwrap();

    let sink = Sink::start().await;
    let relay = relay(&sink, &format!("bayes_model = {:?}", path.display().to_string())).await;
    let mut events = relay.running().events.subscribe();
    let mut c = relay.client().await;
    let mut ngram_votes = 0;
    for (p, _, _) in &held_out {
        c.envelope("a@client.example", &["user@example.com"]).await;
        let r = c.data(&corpus_message(p)).await;
        assert!(r.starts_with("250") || r.starts_with("550 5.7.1"), "{r}");
        // The event carries both classifiers' probabilities (the n-gram one
        // has learned enough to vote on every message).
        let (rules, ngram) = loop {
            let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("SpamScored in time")
                .unwrap();
            if let Event::SpamScored {
                rules, ngram, bayes, ..
            } = &*e
            {
                assert!(bayes.is_some(), "{e:?}");
                break (rules.clone(), *ngram);
            }
        };
        let ngram = ngram.expect("the n-gram classifier's probability in SpamScored");
        assert!((0.0..=1.0).contains(&ngram), "{ngram}");
        let band = rules.split(',').find(|r| r.starts_with("NGRAM_"));
        if band.is_some() {
            assert!(ngram >= 0.8, "{band:?} at P {ngram}");
        }
        ngram_votes += usize::from(band.is_some());
    }
    assert!(
        ngram_votes > 0,
        "no NGRAM_* rule on any of {} held-out spam",
        held_out.len()
    );
}

/// The whole score (built-in rules + a classifier trained on the other
/// folds) on the shared SpamAssassin sample, 5-fold, at the default
/// threshold. docs/SPAM-QUALITY.md has the full report; these floors are a
/// little below it so a regression fails here.
#[test]
fn whole_score_cross_validation_on_the_spamassassin_sample() {
    use sluice::spam::eval::{Sample, cross_validate};
    use sluice::spam::filter::{SpamConfig, SpamFilter};
    let samples: Vec<Sample> = crate::spam::labelled()
        .into_iter()
        .map(|(path, group, spam)| Sample {
            name: path.display().to_string(),
            raw: std::fs::read(&path).unwrap(),
            group,
            spam,
        })
        .collect();
    assert!(samples.len() >= 600);
    let cfg = SpamConfig {
        auth: false,
        ..SpamConfig::default()
    };
    let threshold = cfg.default.tag.unwrap();
    let filter = SpamFilter::new(cfg, None).unwrap();
    let scores = cross_validate(&filter, &samples, 5, true);
    eprintln!("{}\n{}", scores.report(threshold), scores.mistakes(threshold));
    let (recall, fp) = scores.rates(threshold);
    // Measured 2026-12-07 (night): 94.4 % at 0.45 %; 92.3 % without the n-gram
    // classifier's bands, which this floor would catch.
    assert!(recall >= 0.93, "spam recall {recall:.3}");
    assert!(fp <= 0.005, "ham false positives {fp:.4}");
    // The best threshold with at most 0.5 % of the ham flagged (measured 2026-12-07, night: 95.9 % at 4.0).
    let (t, r, f) = scores.at_fp(sluice::spam::eval::MAX_FP);
    assert!(
        r >= 0.94 && f <= 0.005,
        "at <= 0.5 % false positives (score >= {t}): recall {r:.3}, false positives {f:.4}"
    );
    // Rules alone (no classifier) flag no ham at all.
    let rules_only = cross_validate(&filter, &samples, 5, false);
    let (r, f) = rules_only.rates(threshold);
    eprintln!("rules alone: recall {r:.3}, false positives {f:.4}");
    assert!(
        f == 0.0 && r >= 0.35,
        "rules alone: recall {r:.3}, false positives {f:.4}"
    );
}

/// `sluice scan --json`: one object per message with file, verdict,
/// score and reasons; directories and stdin work; exit 1 when something
/// would not be delivered as it is.
#[test]
fn scan_command_prints_json_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        base_toml("smtp://127.0.0.1:1").replace("[spam]\nenabled = false", "[spam]\nauth = false"),
    )
    .unwrap();
    let msgs = dir.path().join("msgs");
    std::fs::create_dir(&msgs).unwrap();
    std::fs::copy(corpora().join("virus/gtube/gtube.eml"), msgs.join("gtube.eml")).unwrap();
    std::fs::write(msgs.join("plain.eml"), message("plain", "see you at lunch")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["scan", "--offline", "--json", "--config"])
        .arg(&cfg)
        .arg(&msgs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let gtube = &lines[0];
    assert!(gtube["file"].as_str().unwrap().ends_with("gtube.eml"));
    assert_eq!(gtube["verdict"], "reject");
    assert!(gtube["score"].as_f64().unwrap() >= 1000.0);
    assert!(gtube["reasons"].as_array().unwrap().iter().any(|r| r == "GTUBE"));
    let plain = &lines[1];
    assert_eq!(plain["verdict"], "deliver", "{plain}");
    assert!(plain["score"].as_f64().unwrap() < 5.0);
    // stdin, and the exit code when all is delivered.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["scan", "--offline", "--json", "--config"])
        .arg(&cfg)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&message("stdin", "hello"))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["file"].as_str(), v["verdict"].as_str()),
        (Some("-"), Some("deliver"))
    );
}
