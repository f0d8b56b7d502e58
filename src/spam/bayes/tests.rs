use super::*;

fn toks(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn trained() -> Model {
    let mut m = Model::new();
    for i in 0..20 {
        let extra = format!("spamid{}", i % 3);
        m.learn(&toks(&["viagra", "free", "money", "click", "common", &extra]), true);
        let extra = format!("hamid{}", i % 3);
        m.learn(&toks(&["meeting", "patch", "review", "lunch", "common", &extra]), false);
    }
    m
}

#[test]
fn forgetting_a_message_gives_the_model_of_never_having_learned_it() {
    let (a, b, c) = (toks(&["x", "y", "y"]), toks(&["y", "z"]), toks(&["only-b", "x"]));
    let mut full = Model::new();
    full.learn(&a, true);
    full.learn(&c, false);
    let mut m = Model::new();
    m.learn(&a, true);
    m.learn(&b, true);
    m.learn(&c, false);
    m.forget(&b, true);
    assert_eq!(m, full);
    assert_eq!(m.counts("z"), None, "a token no message has is dropped");
    // Moved out of Junk: forgotten as spam, learned as ham.
    m.forget(&a, true);
    m.learn(&a, false);
    assert_eq!((m.nspam(), m.nham(), m.counts("x")), (0, 2, Some((0, 2))));
}

#[test]
fn learning_after_classifying_uses_the_new_counts() {
    let mut m = trained();
    let msg = toks(&["novel", "word"]);
    // Unknown tokens: no clue, no opinion.
    assert_eq!(m.classify(&msg), None);
    for _ in 0..20 {
        m.learn(&toks(&["novel", "word"]), true);
    }
    let p = m.classify(&msg).expect("known now");
    assert!(p > 0.9, "{p}");
    // The same as a model that learned everything before classifying.
    let mut fresh = trained();
    for _ in 0..20 {
        fresh.learn(&toks(&["novel", "word"]), true);
    }
    assert_eq!(m, fresh);
    assert_eq!(fresh.classify(&msg), Some(p));
}

#[test]
fn chi2q_values() {
    assert!((chi2q(0.0, 2) - 1.0).abs() < 1e-12);
    // Q(x2 | 2) = exp(-x2/2).
    assert!((chi2q(3.0, 2) - (-1.5f64).exp()).abs() < 1e-12);
    // Q(4 | 4) = e^-2 (1 + 2).
    assert!((chi2q(4.0, 4) - 3.0 * (-2.0f64).exp()).abs() < 1e-12);
    assert_eq!(chi2q(f64::INFINITY, 10), 0.0);
    assert!(chi2q(1e6, 300) >= 0.0);
}

#[test]
fn classifies() {
    let m = trained();
    assert_eq!(m.nspam(), 20);
    assert_eq!(m.nham(), 20);
    assert_eq!(m.len(), 15);
    assert!(!m.is_empty());
    let spam = m.classify(&toks(&["viagra", "money", "click", "unknown"])).unwrap();
    let ham = m.classify(&toks(&["meeting", "review", "patch", "unknown"])).unwrap();
    assert!(spam > 0.9, "{spam}");
    assert!(ham < 0.1, "{ham}");
    // Only neutral or unknown tokens: no opinion.
    assert_eq!(m.classify(&toks(&["common", "unknown"])), None);
    assert_eq!(m.classify(&[]), None);
    // Mixed evidence is uncertain.
    let mixed = m.classify(&toks(&["viagra", "meeting"])).unwrap();
    assert!((mixed - 0.5).abs() < 0.1, "{mixed}");
}

#[test]
fn needs_minimum_training() {
    let mut m = Model::new();
    for _ in 0..9 {
        m.learn(&toks(&["spammy", "words"]), true);
        m.learn(&toks(&["hammy", "words"]), false);
    }
    assert_eq!(m.classify(&toks(&["spammy"])), None);
    m.learn(&toks(&["spammy", "words"]), true);
    assert_eq!(m.classify(&toks(&["spammy"])), None);
    m.learn(&toks(&["hammy", "words"]), false);
    assert!(m.classify(&toks(&["spammy"])).unwrap() > 0.9);
}

#[test]
fn only_the_strongest_clues_count_whatever_the_order_and_repeats() {
    // 400 tokens of graded strength (more than the 150 used), learned
    // with different spam/ham mixes.
    let mut m = Model::new();
    let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
    for n in 0..40 {
        let spam: Vec<String> = words
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 40 > n)
            .map(|(_, w)| w.clone())
            .collect();
        m.learn(&spam, true);
        let ham: Vec<String> = words
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 40 <= n)
            .map(|(_, w)| w.clone())
            .collect();
        m.learn(&ham, false);
    }
    let p = m.classify(&words).expect("an opinion");
    // Reference: every clue sorted by strength, the first 150 combined.
    let params = Params::DEFAULT;
    let mut clues: Vec<(f64, &str)> = words
        .iter()
        .filter_map(|w| {
            let (s, h) = m.counts(w)?;
            let f = m.token_prob(s, h, &params)?;
            ((f - 0.5).abs() >= params.min_strength).then_some((f, w.as_str()))
        })
        .collect();
    assert!(clues.len() > params.max_discriminators, "{}", clues.len());
    clues.sort_by(|a, b| {
        (b.0 - 0.5)
            .abs()
            .total_cmp(&(a.0 - 0.5).abs())
            .then(a.0.total_cmp(&b.0))
            .then(a.1.cmp(b.1))
    });
    clues.truncate(params.max_discriminators);
    let (ln_f, ln_1f) = clues.iter().fold((0.0, 0.0), |(a, b), &(f, _)| {
        let f: f64 = f.clamp(1e-12, 1.0 - 1e-12);
        (a + f.ln(), b + (1.0 - f).ln())
    });
    let dof = 2 * clues.len();
    let want = (1.0 + chi2q(-2.0 * ln_f, dof) - chi2q(-2.0 * ln_1f, dof)) / 2.0;
    assert_eq!(p, want.clamp(0.0, 1.0));
    // Reversed, and with the strongest tokens given twice: the same.
    let mut again: Vec<String> = words.iter().rev().cloned().collect();
    again.extend(clues.iter().take(100).map(|c| c.1.to_string()));
    assert_eq!(m.classify(&again), Some(p));
}

#[test]
fn a_token_list_classifies_as_its_strings() {
    let mut m = Model::new();
    let msg = |i: u32, spam: bool| {
        let words = if spam {
            "cheap pills offer now"
        } else {
            "meeting notes attached review"
        };
        format!("From: a{i}@example.org\r\nSubject: {words} {i}\r\n\r\n{words} number {i}\r\n")
    };
    for i in 0..12 {
        m.learn(&super::super::tokenize::tokens(msg(i, true).as_bytes()), true);
        m.learn(&super::super::tokenize::tokens(msg(i, false).as_bytes()), false);
    }
    let raw = "Subject: cheap offer\r\n\r\ncheap pills, meeting now\r\n";
    let list = super::super::tokenize::token_list(raw.as_bytes(), super::super::tokenize::PART_TEXT);
    let strings = super::super::tokenize::tokens(raw.as_bytes());
    assert_eq!(list.iter().collect::<Vec<_>>(), strings);
    assert_eq!(list.len(), strings.len());
    let p = m.classify_list(&list);
    assert!(p.is_some_and(|p| p > 0.5), "{p:?}");
    assert_eq!(p, m.classify(&strings));
}

#[test]
fn duplicates_counted_once() {
    let mut m = Model::new();
    m.learn(&toks(&["a", "a", "b"]), true);
    assert_eq!(m.counts("a"), Some((1, 0)));
}

#[test]
fn save_load_round_trip() {
    let mut m = trained();
    m.learn(&toks(&["once", "ünïcödé token", "sk:abcdefgh:50"]), false);
    let mut out = Vec::new();
    m.save(&mut out, 0).unwrap();
    let loaded = Model::load(&mut out.as_slice()).unwrap();
    assert_eq!(loaded, m);

    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("sluice-bayes 3 20 21\n"));
    let (text, section) = text.split_once("\nngram ").unwrap();
    assert_eq!(section, "0 0 0\n", "nothing learned by the n-gram classifier");
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l.splitn(3, '\t').nth(2).unwrap_or(""));
    assert_eq!(lines, sorted);

    // Pruning drops tokens seen once.
    let mut pruned = Vec::new();
    m.save(&mut pruned, 2).unwrap();
    let p = Model::load(&mut pruned.as_slice()).unwrap();
    assert_eq!(p.counts("once"), None);
    assert_eq!(p.counts("viagra"), Some((20, 0)));
    assert_eq!(p.nham(), 21);
}

#[test]
fn load_errors_name_line() {
    let line_of = |text: &str| match Model::load(&mut text.as_bytes()) {
        Err(BayesError::Format { line, .. }) => line,
        other => panic!("expected format error, got {other:?}"),
    };
    assert_eq!(line_of(""), 1);
    assert_eq!(line_of("something else\n"), 1);
    assert_eq!(line_of("sluice-bayes 1 1 1\n"), 1);
    assert_eq!(line_of("sluice-bayes 4 1 1\n"), 1);
    // The n-gram section: a bad header, a bad weight, too many or too few lines.
    assert_eq!(line_of("sluice-bayes 3 1 1\n1\t2\tok\nngram 1 1\n"), 3);
    assert_eq!(line_of("sluice-bayes 3 1 1\nngram 1 1 1\n5 x\n"), 3);
    assert_eq!(line_of("sluice-bayes 3 1 1\nngram 1 1 1\n5 0.5\n6 0.5\n"), 4);
    assert_eq!(line_of("sluice-bayes 3 1 1\nngram 1 1 2\n5 0.5\n"), 3);
    let ok = Model::load(&mut "sluice-bayes 3 1 1\n1\t2\tok\nngram 4 5 1\n5 0.5\n".as_bytes()).unwrap();
    assert_eq!((ok.len(), ok.ngram().counts()), (1, (4, 5)));
    let old = Model::load(&mut "sluice-bayes 1 1 1\n".as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        old.contains("unsupported version \"1\"") && old.contains("retrain"),
        "{old}"
    );
    assert_eq!(line_of("sluice-bayes 2 x 1\n"), 1);
    assert_eq!(line_of("sluice-bayes 2 1 1\n1\t2\tok\n3\tx\tbad\n"), 3);
    assert_eq!(line_of("sluice-bayes 2 1 1\r\n1\t2\tok\r\nno tabs here\r\n"), 3);
    assert_eq!(line_of("sluice-bayes 2 1 1\n1\t2\tdup\n1\t2\tdup\n"), 3);
    assert_eq!(line_of("sluice-bayes 2 1 1\n1\t2\t\n"), 2);
    assert_eq!(line_of("sluice-bayes 2 1 1\n-1\t2\tneg\n"), 2);
    let err = Model::load(&mut "sluice-bayes 2 1 1\n1\t2\tok\n3\tx\tbad\n".as_bytes()).unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
    let ok = Model::load(&mut "sluice-bayes 2 3 4\r\n".as_bytes()).unwrap();
    assert_eq!((ok.nspam(), ok.nham(), ok.len()), (3, 4, 0));
}
