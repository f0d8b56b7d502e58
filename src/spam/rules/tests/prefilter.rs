//! The literal prefilter against plain regex matching: the built-in rules
//! on the corpora, and random patterns on random texts.

use super::*;

/// The literal prefilter gives exactly the hits of plain matching (every
/// text-kind pattern run alone with `Regex::is_match`) on the corpora's
/// messages, through the built-in rules.
#[test]
fn prefilter_agrees_with_plain_matching() {
    let kinds = builtin_text_patterns();
    let msgs = corpus_messages();
    assert!(msgs.len() > 400, "corpus missing: {}", msgs.len());
    let (mut ac_total, mut cand, mut checked) = (0usize, 0usize, 0usize);
    for (k, patterns) in kinds.iter().enumerate() {
        let plain = plain_regexes(patterns);
        let m = TextMatcher::build(patterns, |rest| compile::build_set(rest, &Loc::test(), "t")).expect("builds");
        eprintln!("kind {k}: {} patterns, {} prefiltered", patterns.len(), m.prefiltered());
        ac_total += m.prefiltered();
        for raw in &msgs {
            let mv = crate::spam::view::MessageView::parse(raw);
            let v = mv.view();
            let texts: Vec<&str> = match k {
                0 => vec![v.body],
                1 => vec![v.rawbody],
                2 => v.uris.iter().map(String::as_str).collect(),
                _ => vec![v.full],
            };
            for t in texts {
                let mut got = vec![false; patterns.len()];
                m.matches(t, |i| got[i] = true);
                let want: Vec<bool> = plain.iter().map(|r| r.is_match(t.as_bytes())).collect();
                for i in 0..patterns.len() {
                    assert_eq!(
                        got[i],
                        want[i],
                        "pattern {} on text {:?}",
                        patterns[i],
                        &t[..t.len().min(200)]
                    );
                }
                cand += got.iter().filter(|g| **g).count();
                checked += 1;
            }
        }
    }
    eprintln!("{ac_total} prefiltered, {checked} texts, {cand} hits");
    assert!(ac_total > 100, "most patterns have a literal: {ac_total}");
}

/// Each pattern compiled alone, as plain matching uses it.
fn plain_regexes(patterns: &[String]) -> Vec<regex::bytes::Regex> {
    patterns
        .iter()
        .map(|p| regex::bytes::Regex::new(p).expect("compiles"))
        .collect()
}

/// The patterns of the built-in text rules, by [`TextKind`], as parsed.
fn builtin_text_patterns() -> [Vec<String>; 4] {
    let mut p = Parsed::default();
    for (file_no, (file, text)) in crate::spam::filter::BUILTIN_RULES.iter().enumerate() {
        for (i, line) in text.lines().enumerate() {
            let at = Loc {
                file_no,
                file: file.to_string(),
                line: i + 1,
            };
            parse_line(&mut p, line, at).expect("built-in rules parse");
        }
    }
    let mut kinds: [Vec<String>; 4] = Default::default();
    for d in &p.defs {
        if let Def::Text { kind, pattern } = &d.def {
            kinds[*kind as usize].push(pattern.clone());
        }
    }
    kinds
}

/// The messages of the SpamAssassin sample (spam and ham).
fn corpus_messages() -> Vec<Vec<u8>> {
    let base = crate::spam::test_corpora();
    let mut msgs = Vec::new();
    for dir in [
        "spamassassin/spam",
        "spamassassin/spam_2",
        "spamassassin/hard_ham",
        "spamassassin/easy_ham",
    ] {
        for f in crate::spam::message_files(&base.join(dir)).expect("corpus") {
            msgs.push(std::fs::read(f).expect("read"));
        }
    }
    msgs
}

/// What the random patterns are made of: literals, classes, `\s`, `\b`,
/// repetitions, alternations, anchors.
const ATOMS: &[&str] = &[
    "ab",
    "Ab",
    "free",
    "FR",
    "x",
    "é",
    "É",
    "\\$",
    "<a",
    "-->",
    "%",
    "\\d",
    "\\d{2,3}",
    "[a-z]",
    "[A-Z]{2,}",
    "[ae]",
    "\\s",
    "\\s+",
    "\\s*",
    "\\w+",
    "\\b",
    "\\bok\\b",
    "(?:ab|cd)",
    "(?:x|)",
    "k",
    "s",
    ".",
    "[^a]",
    "a?",
    "(?:ab)+",
    "^",
    "$",
    "\\A",
    "\\z",
    "[\\x{0400}-\\x{04FF}]",
    "e-?mail",
    "(?:on|off)\\s+line",
];

/// What the random texts are made of: ASCII and not, mixed case, and
/// characters whose case folding is special (K, ſ).
const TEXT_PIECES: &[&str] = &[
    "ab",
    "AB",
    "aB",
    "free",
    "FREE",
    "fr",
    "x",
    "xx",
    "é",
    "É",
    "$",
    "$12",
    "$999",
    "<a",
    "<A href",
    "-->",
    "%",
    "1",
    "12",
    "123",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "ok",
    "OK",
    "cd",
    "k",
    "\u{212A}",
    "s",
    "ſ",
    "email",
    "e-mail",
    "E-Mail",
    "on line",
    "OFF\tline",
    "д",
    "да",
    ".",
    "a",
    "ing",
    "\u{0}",
];

/// Random patterns (of [`ATOMS`], flags i/m/u/s) on random texts (of
/// [`TEXT_PIECES`]): the prefiltered matcher gives exactly the hits of
/// plain regex matching, through `parse_regex` as rule files are read.
#[test]
fn prefilter_agrees_with_plain_matching_on_random_patterns() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let patterns = random_patterns(&mut rng, 400);
    let texts = random_texts(&mut rng, 300);
    let at = Loc::test();
    let mut prefiltered = 0;
    let mut hits = 0;
    for chunk in patterns.chunks(40) {
        let m = TextMatcher::build(chunk, |rest| compile::build_set(rest, &at, "t")).expect("builds");
        prefiltered += m.prefiltered();
        let plain = plain_regexes(chunk);
        for t in &texts {
            let mut got = vec![false; chunk.len()];
            m.matches(t, |i| got[i] = true);
            for (i, re) in plain.iter().enumerate() {
                assert_eq!(got[i], re.is_match(t.as_bytes()), "pattern {:?} on {t:?}", chunk[i]);
                hits += usize::from(got[i]);
            }
        }
    }
    // The test means something: many patterns went through the prefilter,
    // and both outcomes occurred often.
    assert!(prefiltered > 150, "prefiltered {prefiltered}");
    assert!(hits > 5000 && hits < 400 * 301 - 5000, "hits {hits}");
}

/// `n` random patterns of one to four [`ATOMS`] (a third of them with an
/// alternative), as `parse_regex` makes them of `/pattern/flags`; those it
/// refuses are skipped.
fn random_patterns(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut patterns = Vec::new();
    while patterns.len() < n {
        let mut p = String::new();
        for _ in 0..(1 + rng.next() % 4) {
            p.push_str(rng.pick(ATOMS));
        }
        if rng.next().is_multiple_of(3) {
            p = format!("{p}|{}", rng.pick(ATOMS));
        }
        let flags = rng.pick(&["", "i", "m", "im", "u", "iu", "s"]);
        if let Ok(compiled) = parse_regex(&format!("/{p}/{flags}"), &Loc::test()) {
            patterns.push(compiled);
        }
    }
    patterns
}

/// The empty text and `n` random texts of up to 29 [`TEXT_PIECES`].
fn random_texts(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut texts = vec![String::new()];
    for _ in 0..n {
        let mut t = String::new();
        for _ in 0..(rng.next() % 30) {
            t.push_str(rng.pick(TEXT_PIECES));
        }
        texts.push(t);
    }
    texts
}
