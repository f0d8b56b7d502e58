use super::*;

fn compile(text: &str) -> Result<RuleSet, RuleError> {
    RuleSet::compile(&[("t.rules".to_string(), text.to_string())])
}

fn owned(h: &[(&str, &str)]) -> Vec<(String, String)> {
    h.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// A message view with `body` as body, rawbody and full text.
fn msg(headers: &[(&str, &str)], body: &str) -> crate::spam::view::MessageView {
    crate::spam::view::MessageView {
        headers: owned(headers),
        body: body.to_string(),
        rawbody: body.to_string(),
        uris: crate::spam::view::text_uris(body, 100),
        full: body.to_string(),
        bayes: None,
        ngram: None,
    }
}

fn names(o: &Outcome) -> Vec<&str> {
    o.hits.iter().map(|h| h.name.as_str()).collect()
}

fn err(text: &str) -> RuleError {
    match compile(text) {
        Ok(_) => panic!("compiled: {text}"),
        Err(e) => e,
    }
}

const EVERY_KIND: &str = r#"
# one rule of each kind
header   SUBJ_FREE    Subject =~ /\bfree\b/i
header   NO_DATE      Date !~ /\d/
header   HAS_XMAILER  exists:X-Mailer
body     BODY_VIAGRA  /v[i1]agra/i
rawbody  RAW_FONT     /<font\b/i
uri      URI_IP       /^https?:\/\/\d+\.\d+\.\d+\.\d+/
full     FULL_BCC     /^Bcc:/m
meta     META_BOTH    SUBJ_FREE && BODY_VIAGRA
score    SUBJ_FREE    2.5
score    NO_DATE      1.2
score    BODY_VIAGRA  3
score    META_BOTH    -0.5
describe SUBJ_FREE    Subject says free
"#;

#[test]
fn compiles_every_kind() {
    let set = compile(EVERY_KIND).unwrap();
    assert_eq!(set.len(), 8);
    assert!(!set.is_empty());
    assert!(compile("# nothing\n\n").unwrap().is_empty());
    assert_eq!(set.headers.len(), 2);
    assert_eq!(set.exists.len(), 1);
    assert!(set.bodies.is_some() && set.uri.is_some() && set.full.is_some());
    assert_eq!(set.metas.len(), 1);
}

#[test]
fn evaluates_every_kind_and_sums_scores() {
    let set = compile(EVERY_KIND).unwrap();
    let mut m = msg(
        &[("subject", "Get it FREE now"), ("Date", "Mon"), ("x-MAILER", "x")],
        "buy V1AGRA at http://10.0.0.1/x <font>\n",
    );
    m.full = format!("Subject: x\nBcc: y\n\n{}", m.body);
    let o = set.evaluate(&m.view());
    assert_eq!(
        names(&o),
        [
            "BODY_VIAGRA",
            "FULL_BCC",
            "HAS_XMAILER",
            "META_BOTH",
            "NO_DATE",
            "RAW_FONT",
            "SUBJ_FREE",
            "URI_IP"
        ]
    );
    // 2.5 + 1.2 + 3 - 0.5, and 1.0 for each of the 4 unscored rules.
    assert!((o.score - 10.2).abs() < 1e-9, "{}", o.score);
    let subj = o.hits.iter().find(|h| h.name == "SUBJ_FREE").unwrap();
    assert_eq!((subj.score, subj.description.as_str()), (2.5, "Subject says free"));

    let m = msg(
        &[("Date", "Mon, 1 Jan 2024"), ("Subject", "freedom")],
        "hello https://example.com/\n",
    );
    let o = set.evaluate(&m.view());
    assert!(o.hits.is_empty(), "{:?}", names(&o));
    assert_eq!(o.score, 0.0);
}

#[test]
fn header_rules() {
    let set =
        compile("header FROM_X From =~ /x\\.example$/\nheader NOT_ME To !~ /me@/i\nheader HAS_REF exists:References\n")
            .unwrap();
    let hit = |h: &[(&str, &str)]| names(&set.evaluate(&msg(h, "").view())).join(" ");
    // Any occurrence of the header may match; names are case-insensitive.
    assert_eq!(
        hit(&[("FROM", "a@b.org"), ("from", "c@x.example"), ("To", "ME@here")]),
        "FROM_X"
    );
    // `!~`: hits when no occurrence matches, including when missing.
    assert_eq!(hit(&[("To", "you@there")]), "NOT_ME");
    assert_eq!(hit(&[]), "NOT_ME");
    assert_eq!(hit(&[("To", "you@there"), ("to", "me@here")]), "");
    assert_eq!(hit(&[("To", "me@"), ("references", "<a@b>")]), "HAS_REF");
    // A rule on one header does not look at another.
    assert_eq!(hit(&[("Subject", "c@x.example"), ("To", "me@")]), "");
}

#[test]
fn regex_flags() {
    let set = compile("body CASE /abc/\nbody NOCASE /abc/i\nbody MULTI /^x$/m\nbody DOT /a.b/s\nbody ALL /^y.z$/ims\n")
        .unwrap();
    let hit = |b: &str| names(&set.evaluate(&msg(&[], b).view())).join(" ");
    assert_eq!(hit("ABC"), "NOCASE");
    assert_eq!(hit("q\nx\nq a\nb"), "DOT MULTI");
    assert_eq!(hit("Y\nZ"), "ALL");
    assert_eq!(hit("abc"), "CASE NOCASE");
}

#[test]
fn metas_with_operators_sums_and_subrules() {
    let text = r#"
body __A /aaa/
body __B /bbb/
body __C /ccc/
body D   /ddd/
meta AND_NOT   __A && !__B
meta OR        __B || __C
meta TWO_OF    (__A + __B + __C) >= 2
meta ALL_THREE __A + __B + __C == 3
meta NESTED    (TWO_OF || D) && !(ALL_THREE)
meta OF_META   OR && AND_NOT
score D 0.5
"#;
    let set = compile(text).unwrap();
    let hit = |b: &str| names(&set.evaluate(&msg(&[], b).view())).join(" ");
    assert_eq!(hit(""), "");
    assert_eq!(hit("aaa"), "AND_NOT");
    assert_eq!(hit("aaa ccc"), "AND_NOT NESTED OF_META OR TWO_OF");
    assert_eq!(hit("aaa bbb"), "NESTED OR TWO_OF");
    assert_eq!(hit("aaa bbb ccc"), "ALL_THREE OR TWO_OF");
    assert_eq!(hit("ddd"), "D NESTED");
    // Sub-rules score 0 and are never reported.
    let o = set.evaluate(&msg(&[], "ddd").view());
    assert_eq!(o.score, 1.5);
    // Metas may refer to rules defined later, also in a later file.
    let set = RuleSet::compile(&[
        ("a".into(), "meta M __X || Y\n".into()),
        ("b".into(), "body __X /x/\nbody Y /y/\nscore M 4\n".into()),
    ])
    .unwrap();
    let o = set.evaluate(&msg(&[], "x").view());
    assert_eq!((names(&o), o.score), (vec!["M"], 4.0));
}

#[test]
fn later_score_overrides() {
    let set = RuleSet::compile(&[
        ("stock".into(), "body A /a/\nscore A 2\ndescribe A old\n".into()),
        ("local".into(), "score A -1\ndescribe A new\n".into()),
    ])
    .unwrap();
    let o = set.evaluate(&msg(&[], "a").view());
    assert_eq!(
        o.hits,
        vec![Hit {
            name: "A".into(),
            score: -1.0,
            description: "new".into()
        }]
    );
}

#[test]
fn errors_name_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("\nbody A /a(/\n", 2, "bad regex"),
        ("body A /a/x\n", 1, "unknown regex flag 'x'"),
        ("body A a\n", 1, "expected /regex/flags"),
        ("body A /a\n", 1, "no closing"),
        ("body A /a/\n# c\nbody A /b/\n", 3, "already defined at t.rules:1"),
        ("body A /a/\nheader A exists:To\n", 2, "already defined"),
        ("body A /a/\nscore B 1\n", 2, "score for unknown rule B"),
        ("describe C x\n", 1, "describe for unknown rule C"),
        ("body A /a/\n\nmeta M A && B\n", 3, "meta M refers to unknown rule B"),
        (
            "meta M1 M2\nmeta M2 M3\nbody A /a/\nmeta M3 A || M1\n",
            1,
            "meta cycle: M1 -> M2 -> M3 -> M1",
        ),
        ("body A /a/\nmeta SELF A && SELF\n", 2, "meta cycle: SELF -> SELF"),
        ("bogus A /a/\n", 1, "unknown line kind 'bogus'"),
        ("body\n", 1, "needs a rule name"),
        ("body lower /a/\n", 1, "bad rule name"),
        (
            "body ABCDEFGHIJABCDEFGHIJABCDEFGHIJABCDEFGHIJK /a/\n",
            1,
            "bad rule name",
        ),
        ("body A /a/\nscore A x\n", 2, "bad score"),
        ("body A /a/\nscore A 1 2\n", 2, "expected: score NAME NUMBER"),
        ("body A /a/\nscore A inf\n", 2, "bad score"),
        ("body __A /a/\nscore __A 1\n", 2, "cannot be scored"),
        ("header A Subject ~ /a/\n", 1, "expected: header NAME"),
        ("header A Sub:ject =~ /a/\n", 1, "bad header name"),
        ("header A exists:\n", 1, "bad header name"),
        ("meta M (A\n", 1, "missing ')'"),
        ("meta M\n", 1, "empty expression"),
        ("meta M A B\n", 1, "unexpected 'B'"),
        ("meta M A > 1 > 2\n", 1, "unexpected comparison"),
        ("meta M A & B\n", 1, "unexpected character '&'"),
        ("meta M 1e999\n", 1, "bad number"),
    ];
    for (text, line, what) in cases {
        let e = err(text);
        assert_eq!((e.file.as_str(), e.line), ("t.rules", *line), "{text:?}: {e}");
        assert!(e.what.contains(what), "{text:?}: {e}");
        assert!(!e.what.contains('\n'), "{e}");
    }
    let e = err(&format!("meta M {}A{}\n", "(".repeat(100), ")".repeat(100)));
    assert!(e.what.contains("nested deeper"), "{e}");
    let e = err(&format!("meta M {}A\n", "!".repeat(100)));
    assert!(e.what.contains("nested deeper"), "{e}");
    // Display and the second file's name.
    let e = RuleSet::compile(&[
        ("a.rules".into(), "body A /a/\n".into()),
        ("b.rules".into(), "body A /b/\n".into()),
    ])
    .unwrap_err();
    assert_eq!(e.to_string(), "b.rules:1: rule A already defined at a.rules:1");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("b.rules:1"));
}

#[test]
fn long_meta_chains_and_sums() {
    let mut text = String::from("body R0 /x/\n");
    for i in 1..2000 {
        text.push_str(&format!("meta R{i} R{}\n", i - 1));
    }
    let sum: Vec<String> = (0..2000).map(|i| format!("R{i}")).collect();
    text.push_str(&format!("meta BIG {} >= 2000\n", sum.join(" + ")));
    let set = compile(&text).unwrap();
    let o = set.evaluate(&msg(&[], "x").view());
    assert_eq!(o.hits.len(), 2001);
    assert!(set.evaluate(&msg(&[], "y").view()).hits.is_empty());
}

const FIXTURE_RULES: &str = r#"
header SUBJ_FREE Subject =~ /free/i
body   __MONEY   /\$\d+/
body   CASH      /cash/i
meta   FREE_CASH SUBJ_FREE && (CASH || __MONEY)
uri    URI_BIT   /^https?:\/\/bit\.ly\//i
full   FOLDED    /Subject: totally\n\tfree/
"#;

const GOOD_FIXTURE: &str = "first lines are ignored
=== expect: SUBJ_FREE FREE_CASH __MONEY URI_BIT FOLDED !CASH
From: a@b
Subject: totally
\tfree money

win $100 at https://bit.ly/abc. today
=== expect: !SUBJ_FREE !FREE_CASH !URI_BIT
Subject: hello

see http://example.com/bit.ly-lookalike?no (not really)
=== expect: CASH
Subject: headers only, no body: CASH cannot hit
";

#[test]
fn fixture_passes() {
    let set = compile(FIXTURE_RULES).unwrap();
    let bad = check_fixture(&set, GOOD_FIXTURE);
    assert_eq!(
        bad,
        vec!["block 3 (line 12): expected CASH to hit but it did not (hits: none)".to_string()]
    );
    let good = GOOD_FIXTURE.replace("=== expect: CASH", "=== expect: !CASH");
    assert_eq!(check_fixture(&set, &good), Vec::<String>::new());
}

#[test]
fn fixture_failures_are_useful() {
    let set = compile(FIXTURE_RULES).unwrap();
    let fixture = "=== expect: CASH !SUBJ_FREE NOPE
Subject: free

nothing here
=== expected: CASH
Subject: x
=== expect:
";
    let bad = check_fixture(&set, fixture);
    assert_eq!(
        bad,
        vec![
            "block 1 (line 1): expected CASH to hit but it did not (hits: SUBJ_FREE)",
            "block 1 (line 1): expected SUBJ_FREE not to hit but it did (hits: SUBJ_FREE)",
            "block 1 (line 1): unknown rule NOPE",
            "block 2 (line 5): expected '=== expect: RULES', found '=== expected: CASH'",
            "block 3 (line 7): no rules to expect",
        ]
    );
    assert_eq!(
        check_fixture(&set, "no blocks\n"),
        vec!["fixture has no '=== expect:' blocks"]
    );
}

#[test]
fn word_boundaries_are_ascii_unless_u() {
    assert_eq!(ascii_boundaries(r"\bfree\B"), r"(?-u:\b)free(?-u:\B)");
    assert_eq!(ascii_boundaries(r"\b{start}x\\b"), r"(?-u:\b{start})x\\b");
    assert_eq!(
        ascii_boundaries(r"[\b]\[\b[]\b][^]x]\b[[:alpha:]\b]\b"),
        r"[\b]\[(?-u:\b)[]\b][^]x](?-u:\b)[[:alpha:]\b](?-u:\b)"
    );
    assert_eq!(ascii_boundaries("é\\"), "é\\");
    let set = compile(
        "body ASCII /\\bfree\\b/\nbody UNI /\\bfree\\b/u\nbody CYR /\\bдаром\\b/iu\nbody CYR_A /\\bдаром\\b/i\n",
    )
    .unwrap();
    let hit = |b: &str| names(&set.evaluate(&msg(&[], b).view())).join(" ");
    assert_eq!(hit("it is free!"), "ASCII UNI");
    assert_eq!(hit("éfree"), "ASCII");
    assert_eq!(hit("это ДАРОМ"), "CYR");
}

#[test]
fn uri_scan() {
    assert_eq!(
        crate::spam::view::text_uris(
            "a HTTP://X.org/a, (https://y.net/b) http:// <http://z/>. httpx https://é.fr/ü",
            9
        ),
        ["HTTP://X.org/a", "https://y.net/b", "http://z/", "https://é.fr/ü"]
    );
    assert!(crate::spam::view::text_uris("", 9).is_empty());
}

/// A tiny deterministic generator (xorshift), to avoid a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[test]
fn random_rule_files_never_panic() {
    let pieces = [
        "header", "body", "rawbody", "uri", "full", "meta", "score", "describe", "A", "B", "__C", "D1", "a", " ", " ",
        " ", "\n", "\n", "#", "/", "/x/", "/a+/i", "/(/", "/[/ms", "=~", "!~", "exists:", "Subject", "To", "&&", "||",
        "!", "(", ")", "+", ">=", "==", "<", "1", "2.5", "-3", "é", "\u{0}", "\r", "\t", ":", "\\", ".*", "^", "$",
        "===", "{99999}", "\\p{L}", "\\b", "\\B{", "[^]", "[[:", "/iu",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut compiled = 0;
    for _ in 0..3000 {
        let mut text = String::new();
        // Mostly well-formed-looking lines, so that some sets compile.
        for _ in 0..(rng.next() % 8) {
            let kind = rng.pick(&[
                "header", "body", "rawbody", "uri", "full", "meta", "score", "describe", "",
            ]);
            let name = rng.pick(&["A", "B", "__C", "D1", "a", ""]);
            text.push_str(&format!("{kind} {name} "));
            for _ in 0..(rng.next() % 6) {
                text.push_str(rng.pick(&pieces));
            }
            text.push('\n');
        }
        let files = vec![("f".to_string(), text.clone())];
        if let Ok(set) = RuleSet::compile(&files) {
            compiled += 1;
            let m = msg(&[("Subject", "x a"), ("To", "é")], "a x é\nhttp://a/x\n");
            let _ = set.evaluate(&m.view());
            let _ = check_fixture(&set, &format!("=== expect: A !B __C\n{text}"));
        }
        let _ = check_fixture(&compile("").unwrap(), &text);
    }
    assert!(compiled > 100, "only {compiled} compiled");
}

#[test]
fn ascii_mode_where_possible_unicode_otherwise_and_small_sets() {
    let mut text = String::from(
        "body SPACE /a\\sb/\nbody WORD /^\\w+$/m\nbody ZWSP /a\\x{200B}b/\nbody CYR /[\\x{0400}-\\x{04FF}]{3}/\nbody LIT /café/i\n",
    );
    for i in 0..20 {
        text.push_str(&format!("body R{i} /rule{i}\\b/\n"));
    }
    let set = compile(&text).unwrap();
    let body = set.bodies.as_ref().unwrap();
    // The 23 patterns that start with literals of 2 bytes or more (`a\sb`
    // gives `a b`, `a\tb` and so on; a `\x{200B}` literal is fine in ASCII
    // mode: it matches its UTF-8 bytes; `café` in Unicode mode has its case
    // variants) go through the prefilter. The others are in sets: the ASCII
    // one, then the Unicode one, which needs a non-ASCII character and is
    // not run on ASCII text.
    assert_eq!(body.matcher.prefiltered(), 23);
    assert_eq!(body.matcher.set_sizes(), (vec![1], vec![1]));
    let hits = |b: &str| names(&set.evaluate(&msg(&[], b).view())).join(" ");
    // ASCII mode: \s and \w are ASCII (a no-break space or é is not one).
    assert_eq!(hits("a b"), "SPACE");
    assert_eq!(hits("a\u{a0}b"), "");
    assert_eq!(hits("word"), "WORD");
    assert_eq!(hits("wörd"), "");
    // Unicode mode for what needs it, including case folding.
    assert_eq!(hits("a\u{200b}b"), "ZWSP");
    assert_eq!(hits("да да"), "");
    assert_eq!(hits("дада"), "CYR");
    assert_eq!(hits("CAFÉ"), "LIT");
    assert_eq!(hits("rule7 rule19"), "R19 R7");
}

#[test]
fn body_rules_read_the_body_and_rawbody_rules_the_raw_body_whether_or_not_they_are_the_same_text() {
    let set = compile(
        "body B_WORD /offer/i\nrawbody R_WORD /offer/i\nrawbody R_TAG /<b>/\nbody B_TAG /<b>/\nbody B_CAPS /[A-Z]{4}/\nrawbody R_CAPS /[A-Z]{4}/\n",
    )
    .unwrap();
    let hits = |body: &str, rawbody: &str| {
        let mut m = msg(&[], body);
        m.rawbody = rawbody.to_string();
        names(&set.evaluate(&m.view())).join(" ")
    };
    // The same text (no HTML): both kinds read it, in one pass.
    assert_eq!(hits("an offer <b>", "an offer <b>"), "B_TAG B_WORD R_TAG R_WORD");
    // HTML: the tag is only in the raw body, the capitals only in the rendered text.
    assert_eq!(
        hits("an OFFER now", "an <b>offer</b> now"),
        "B_CAPS B_WORD R_TAG R_WORD"
    );
    assert_eq!(hits("nothing here", "<b>OFFER</b>"), "R_CAPS R_TAG R_WORD");
    // Rules of one kind only.
    let only_raw = compile("rawbody R /x<b>/\n").unwrap();
    let mut m = msg(&[], "x");
    m.rawbody = "x<b>".to_string();
    assert_eq!(names(&only_raw.evaluate(&m.view())), ["R"]);
    let only_body = compile("body B /x<b>/\n").unwrap();
    assert_eq!(names(&only_body.evaluate(&m.view())), Vec::<&str>::new());
    assert_eq!(names(&only_body.evaluate(&msg(&[], "x<b>").view())), ["B"]);
}

#[test]
fn bayes_bands() {
    let set = compile("bayes LOW 0 0.5\nbayes HIGH 0.5 1\nscore HIGH 3\n").unwrap();
    let at = |p: Option<f64>| {
        let m = msg(&[], "x");
        let mut v = m.view();
        v.bayes = p;
        names(&set.evaluate(&v)).join(" ")
    };
    assert_eq!(at(Some(0.0)), "LOW");
    assert_eq!(at(Some(0.5)), "HIGH");
    assert_eq!(at(Some(1.0)), "HIGH");
    assert_eq!(at(None), "");
    for bad in [
        "bayes X 0.5 0.5",
        "bayes X 0.2",
        "bayes X 0 2",
        "bayes X a b",
        "bayes X 0 1 extra",
    ] {
        let e = compile(bad).unwrap_err();
        assert!(e.what.contains("bayes NAME LOW HIGH"), "{bad}: {e}");
    }
}

#[test]
fn ngram_bands_read_the_ngram_classifier_only() {
    let set = compile(
        "ngram N_HIGH 0.9 1
bayes B_HIGH 0.9 1
",
    )
    .unwrap();
    let at = |bayes: Option<f64>, ngram: Option<f64>| {
        let m = msg(&[], "x");
        let mut v = m.view();
        v.bayes = bayes;
        v.ngram = ngram;
        names(&set.evaluate(&v)).join(" ")
    };
    assert_eq!(at(None, Some(0.95)), "N_HIGH");
    assert_eq!(at(Some(0.95), None), "B_HIGH");
    assert_eq!(at(Some(0.95), Some(0.5)), "B_HIGH");
    assert_eq!(at(Some(0.95), Some(1.0)), "B_HIGH N_HIGH");
    assert_eq!(at(None, None), "");
    let e = compile("ngram X 0.5 0.2").unwrap_err();
    assert!(e.what.contains("ngram NAME LOW HIGH"), "{e}");
}

mod prefilter;
