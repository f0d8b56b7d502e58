//! The rules engine of spam scoring: SpamAssassin-like rules in sluice's own
//! line-based format (see `rules/README.md`).
//!
//! Rules are parsed and compiled once into a [`RuleSet`]. Matching never scans
//! a message once per rule: the pattern rules of a kind are compiled into
//! [`regex::bytes::RegexSet`]s of up to [`SET_CHUNK`] patterns each (header
//! rules per header name), so each text is scanned once per small set and the
//! set says which rules matched. Small sets keep each lazy DFA small: one set
//! of 80 body rules scanned about 3 times slower than 10 sets of 8. Patterns
//! that allow it are matched in ASCII mode (`\s`, `\w`, `.`, case folding),
//! which again makes the automata several times smaller; the others (non-ASCII
//! characters, `\x{...}` above 7F, `\p{...}`, flag `u`) in Unicode mode, in
//! sets of their own. Text kinds (body, raw body, URI, full message) first
//! go through a literal prefilter (`prefilter`): one Aho-Corasick pass finds
//! which patterns' starting literals occur, only those run, and only the
//! patterns without a usable literal stay in the sets. Meta rules are then
//! evaluated over those results in dependency order.
//!
//! Here: the compiled [`RuleSet`] and matching; `parse` reads rule files,
//! `compile` turns them into sets, `meta` parses and evaluates meta
//! expressions.

use std::collections::{HashMap, HashSet};
use std::fmt;

use regex::bytes::RegexSet;

/// Compiled-size limit of one rule's regex (as `regex`'s own default).
const RULE_SIZE_LIMIT: usize = 10 * (1 << 20);
/// Compiled-size limit of one set.
const SET_SIZE_LIMIT: usize = 64 * (1 << 20);
/// Lazy-DFA cache of one set (per thread using it); too small a cache makes
/// a set fall back to a much slower engine.
const SET_DFA_LIMIT: usize = 8 * (1 << 20);
/// Patterns per set (measured on the default rules: 8 was fastest).
const SET_CHUNK: usize = 8;
/// The inline flag that marks a pattern compiled in ASCII mode.
const ASCII_MODE: &str = "(?-u)";
/// Longest rule name.
const MAX_NAME: usize = 40;

/// A rule file that could not be parsed or compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub what: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

impl std::error::Error for RuleError {}

/// What rules look at; built by the caller from the parsed message.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// (name as written, unfolded value), in order.
    pub headers: &'a [(String, String)],
    /// Decoded text of the text parts, HTML reduced to text.
    pub body: &'a str,
    /// Text parts, HTML as is.
    pub rawbody: &'a str,
    /// Each URI found in the message.
    pub uris: &'a [String],
    /// The whole raw message (lossy UTF-8).
    pub full: &'a str,
    /// The statistical classifier's spam probability, if it had one.
    pub bayes: Option<f64>,
    /// The n-gram classifier's spam probability, if it had one.
    pub ngram: Option<f64>,
}

/// The result of evaluating a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Sum of the scores of the hits.
    pub score: f64,
    /// Rules that hit, sorted by name, without `__` sub-rules.
    pub hits: Vec<Hit>,
}

/// One rule that hit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub name: String,
    pub score: f64,
    pub description: String,
}

/// A compiled set of rules.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<RuleInfo>,
    /// Header rules, by lower-case header name.
    headers: HashMap<String, HeaderGroup>,
    /// `exists:` rules: (lower-case header name, rule).
    exists: Vec<(String, usize)>,
    /// The body rules (part 0) and raw-body rules (part 1) in one matcher:
    /// a message without HTML, whose body and raw body are the same text,
    /// is read once for both.
    bodies: Option<TextSet>,
    uri: Option<TextSet>,
    full: Option<TextSet>,
    /// `bayes` and `ngram` rules: (classifier, low, high, rule).
    bands: Vec<(Classifier, f64, f64, usize)>,
    /// Meta rules in evaluation order (dependencies first).
    metas: Vec<(usize, Expr)>,
}

#[derive(Debug)]
struct RuleInfo {
    name: String,
    score: f64,
    description: String,
}

/// Patterns split into small sets; indices are over all the patterns.
#[derive(Debug)]
struct PatternSet {
    /// Each set, with the index of each of its patterns.
    chunks: Vec<(RegexSet, Vec<usize>)>,
}

impl PatternSet {
    fn matches<'a>(&'a self, text: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.chunks.iter().flat_map(move |(set, idx)| {
            set.matches(text.as_bytes())
                .into_iter()
                .filter_map(move |i| idx.get(i).copied())
        })
    }
}

/// The header rules on one header name.
#[derive(Debug)]
struct HeaderGroup {
    set: PatternSet,
    /// For each pattern of the set: (rule, negated).
    rules: Vec<(usize, bool)>,
}

/// The rules of one text kind.
#[derive(Debug)]
struct TextSet {
    matcher: TextMatcher,
    /// For each pattern of the matcher: its rule.
    rules: Vec<usize>,
}

impl TextSet {
    fn mark(&self, text: &str, hits: &mut [bool]) {
        self.mark_parts(text, 0..usize::MAX, hits);
    }

    /// [`TextSet::mark`] with the patterns of the matcher's parts `parts`.
    fn mark_parts(&self, text: &str, parts: std::ops::Range<usize>, hits: &mut [bool]) {
        let parts = parts.start..parts.end.min(self.matcher.part_count());
        self.matcher.matches_parts(text, parts, |i| {
            if let Some(&r) = self.rules.get(i)
                && let Some(h) = hits.get_mut(r)
            {
                *h = true;
            }
        });
    }
}

impl RuleSet {
    /// Parses and compiles several files' contents (name, text), in order.
    ///
    /// `score` and `describe` may come before or after the rule they name, in
    /// any of the files; a later `score` or `describe` for a rule overrides an
    /// earlier one (so a local file can re-score stock rules).
    pub fn compile(files: &[(String, String)]) -> Result<RuleSet, RuleError> {
        let mut p = Parsed::default();
        for (file_no, (file, text)) in files.iter().enumerate() {
            for (i, line) in text.lines().enumerate() {
                let at = Loc {
                    file_no,
                    file: file.clone(),
                    line: i + 1,
                };
                parse_line(&mut p, line, at)?;
            }
        }
        p.finish()
    }

    /// Number of rules (sub-rules included).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluates every rule on a message.
    pub fn evaluate(&self, msg: &View<'_>) -> Outcome {
        let hits = self.hit_vector(msg);
        let mut out: Vec<Hit> = self
            .rules
            .iter()
            .zip(&hits)
            .filter(|(r, h)| **h && !r.name.starts_with("__"))
            .map(|(r, _)| Hit {
                name: r.name.clone(),
                score: r.score,
                description: r.description.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let score = out.iter().map(|h| h.score).sum();
        Outcome { score, hits: out }
    }

    /// Whether each rule (by index) hit, sub-rules included.
    fn hit_vector(&self, msg: &View<'_>) -> Vec<bool> {
        let mut hits = vec![false; self.rules.len()];
        // Header rules: one scan of each header value by the set of its name.
        let mut matched = vec![false; self.rules.len()];
        let mut present: HashSet<String> = HashSet::new();
        for (name, value) in msg.headers {
            let lower = name.to_ascii_lowercase();
            if let Some(g) = self.headers.get(&lower) {
                for i in g.set.matches(value) {
                    if let Some(&(r, _)) = g.rules.get(i)
                        && let Some(m) = matched.get_mut(r)
                    {
                        *m = true;
                    }
                }
            }
            present.insert(lower);
        }
        for g in self.headers.values() {
            for &(r, negated) in &g.rules {
                if let (Some(h), Some(&m)) = (hits.get_mut(r), matched.get(r)) {
                    *h = m != negated;
                }
            }
        }
        for (name, r) in &self.exists {
            if let Some(h) = hits.get_mut(*r) {
                *h = present.contains(name);
            }
        }
        if let Some(s) = &self.bodies {
            if msg.body == msg.rawbody {
                s.mark_parts(msg.body, 0..2, &mut hits);
            } else {
                s.mark_parts(msg.body, 0..1, &mut hits);
                s.mark_parts(msg.rawbody, 1..2, &mut hits);
            }
        }
        if let Some(s) = &self.full {
            s.mark(msg.full, &mut hits);
        }
        if let Some(s) = &self.uri {
            for u in msg.uris {
                s.mark(u, &mut hits);
            }
        }
        for &(classifier, low, high, r) in &self.bands {
            let p = match classifier {
                Classifier::Bayes => msg.bayes,
                Classifier::Ngram => msg.ngram,
            };
            let Some(p) = p else { continue };
            // Bands are [low, high), except that 1.0 falls in [x, 1].
            let inside = p >= low && (p < high || (high >= 1.0 && p <= 1.0));
            if let Some(h) = hits.get_mut(r) {
                *h = inside;
            }
        }
        for (r, e) in &self.metas {
            let v = e.eval(&hits) != 0.0;
            if let Some(h) = hits.get_mut(*r) {
                *h = v;
            }
        }
        hits
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.name == name)
    }
}

/// Checks a fixture against a compiled set.
///
/// Blocks are separated by lines starting with `=== `; each such line is
/// `=== expect: RULE_A RULE_B !RULE_C` (rules that must hit / must not hit;
/// `__` sub-rules may be named too). The message follows (headers, blank
/// line, body) and is read like a received message ([`super::view::MessageView`]), except
/// that the pseudo-headers written in it are kept (`Sluice-Auth`, and
/// `Sluice-Bayes: 0.99` to set the classifier's probability). Lines before
/// the first block are
/// ignored. Returns the failures (empty = pass), each naming the block
/// number, its line in the fixture, and the rule.
pub fn check_fixture(set: &RuleSet, fixture: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let mut blocks: Vec<(usize, &str, Vec<&str>)> = Vec::new();
    for (i, line) in fixture.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("=== ") {
            blocks.push((i + 1, rest, Vec::new()));
        } else if let Some(b) = blocks.last_mut() {
            b.2.push(line);
        }
    }
    if blocks.is_empty() {
        failures.push("fixture has no '=== expect:' blocks".to_string());
    }
    for (n, (line_no, head, lines)) in blocks.into_iter().enumerate() {
        let block = format!("block {} (line {line_no})", n + 1);
        let Some(expect) = head.trim().strip_prefix("expect:") else {
            failures.push(format!("{block}: expected '=== expect: RULES', found '=== {head}'"));
            continue;
        };
        let mut text = lines.join("\n");
        text.push('\n');
        let mv = match mail_parser::MessageParser::default().parse(text.as_bytes()) {
            Some(m) => super::view::MessageView::from_message(&m, true, super::view::PART_SCAN),
            None => super::view::MessageView::parse(text.as_bytes()),
        };
        let view = mv.view();
        let hits = set.hit_vector(&view);
        let hit_names = || {
            let mut v: Vec<&str> = set
                .rules
                .iter()
                .zip(&hits)
                .filter(|(_, h)| **h)
                .map(|(r, _)| r.name.as_str())
                .collect();
            v.sort_unstable();
            if v.is_empty() { "none".to_string() } else { v.join(" ") }
        };
        let words: Vec<&str> = expect.split_whitespace().collect();
        if words.is_empty() {
            failures.push(format!("{block}: no rules to expect"));
        }
        for w in words {
            let (want, name) = match w.strip_prefix('!') {
                Some(name) => (false, name),
                None => (true, w),
            };
            match set.index_of(name) {
                None => failures.push(format!("{block}: unknown rule {name}")),
                Some(i) => {
                    let got = hits.get(i).copied().unwrap_or(false);
                    if got != want {
                        let what = if want {
                            "to hit but it did not"
                        } else {
                            "not to hit but it did"
                        };
                        failures.push(format!("{block}: expected {name} {what} (hits: {})", hit_names()));
                    }
                }
            }
        }
    }
    failures
}

mod compile;
mod meta;
mod parse;
mod prefilter;
use meta::Expr;
use parse::*;
use prefilter::TextMatcher;

#[cfg(test)]
mod tests;
