//! Matching the patterns of one text kind (body, raw body, URI, full
//! message) without scanning the text once per pattern or per small set.
//!
//! Most rules start with a literal word: `click\s+here`, `<iframe`,
//! `(?:act|order|call)\s+now`. At build time each pattern's possible
//! starting literals are extracted (`regex_syntax`'s prefix extractor, cut
//! to 5 bytes) and put in one Aho-Corasick automaton, ASCII
//! case-insensitive. At match time one pass of that automaton over the text
//! gives each occurrence of each pattern's literals; the pattern then runs as
//! an anchored search at each occurrence, which usually fails within a few
//! bytes (past [`MAX_OCCURRENCES`], one unanchored search from the first).
//! A pattern that starts with a wide class uses the literals of the rest of
//! its top-level concatenation (`[a-z]<!--` → `<!--`), and runs once,
//! unanchored, when one occurs. The patterns left (no usable literal: wide
//! classes throughout, or a possibly empty match) are matched by the small
//! [`PatternSet`]s as before, those that need a non-ASCII character only on
//! non-ASCII text. On mail that hits few rules the text is read once by the
//! automaton and once per remaining set, instead of once per set of 8
//! patterns.
//!
//! Correctness rests on one property: a match of the pattern must start with
//! one of its extracted literals, compared ASCII case-insensitively. The
//! extractor guarantees it for the pattern's own syntax tree; for ASCII-mode
//! patterns with flag `i` the literals are extracted with `i` removed and
//! compared case-insensitively, which accepts a superset of what the pattern
//! does. `tests::prefilter::prefilter_agrees_with_plain_matching` (the
//! built-in rules on the corpora) and `..._on_random_patterns` check it
//! against plain regex matching, pattern by pattern.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use super::{ASCII_MODE, PatternSet, RULE_SIZE_LIMIT};

/// Literals shorter than this are not selective enough to be worth a
/// regex of their own: their patterns go to the sets.
const MIN_LITERAL: usize = 2;
/// Occurrences of one pattern's literals searched one by one (anchored);
/// past this, one unanchored search from the first occurrence.
const MAX_OCCURRENCES: u32 = 1024;
/// Literals are cut to this many bytes.
const MAX_LITERAL: usize = 5;
/// Most literals the extractor may list for one pattern (its default is
/// 250; more keeps longer, more selective literals for alternations).
const LIMIT_TOTAL: usize = 2000;
/// The extractor's default limit, tried when the larger one gives nothing.
const DEFAULT_LIMIT_TOTAL: usize = 250;

/// The patterns of one text kind, or of several kinds read by one automaton
/// ([`Part`]s: the body and raw-body rules, so that a message whose two
/// texts are the same is read once).
#[derive(Debug)]
pub(super) struct TextMatcher {
    /// Starting literals of the prefiltered patterns, if there are any.
    ac: Option<AhoCorasick>,
    /// For each automaton pattern: the patterns (indices) that start with it.
    owners: Vec<Vec<usize>>,
    /// Each pattern's own regex when it is prefiltered, by pattern index.
    regexes: Vec<Option<Regex>>,
    /// Where each prefiltered pattern's literals are in its matches.
    places: Vec<Place>,
    /// The parts, in pattern order.
    parts: Vec<Part>,
}

/// A run of the patterns (a text kind), with the sets of those of them
/// that have no usable literal.
#[derive(Debug)]
struct Part {
    /// The part's patterns are those before this index (and after the
    /// previous part's).
    end: usize,
    /// The patterns without a usable literal.
    rest: PatternSet,
    /// For `rest`'s indices: the pattern index.
    rest_index: Vec<usize>,
    /// The patterns without a usable literal whose every match has a
    /// non-ASCII byte: skipped on ASCII text (most mail).
    non_ascii: PatternSet,
    /// For `non_ascii`'s indices: the pattern index.
    non_ascii_index: Vec<usize>,
}

impl TextMatcher {
    /// Builds the matcher; `build_set` compiles the patterns without
    /// literals into sets (with the caller's error reporting).
    pub(super) fn build<E>(
        patterns: &[String],
        build_set: impl Fn(&[String]) -> Result<PatternSet, E>,
    ) -> Result<TextMatcher, E> {
        TextMatcher::build_parts(patterns, &[patterns.len()], |_, rest| build_set(rest))
    }

    /// [`TextMatcher::build`] of patterns in parts: part `k` is the
    /// patterns before `ends[k]` (and from the previous end); `build_set`
    /// is told the part.
    pub(super) fn build_parts<E>(
        patterns: &[String],
        ends: &[usize],
        build_set: impl Fn(usize, &[String]) -> Result<PatternSet, E>,
    ) -> Result<TextMatcher, E> {
        let part_of = |i: usize| ends.iter().position(|&e| i < e).unwrap_or(ends.len().saturating_sub(1));
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        // Literal -> its index in `literals`.
        let mut index: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
        let mut regexes = Vec::with_capacity(patterns.len());
        let mut rest: Vec<(Vec<String>, Vec<usize>)> = vec![Default::default(); ends.len()];
        let mut non_ascii: Vec<(Vec<String>, Vec<usize>)> = vec![Default::default(); ends.len()];
        let mut places = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            let lits = required_literals(p);
            let regex = lits.as_ref().and_then(|_| anchored_regex(p));
            match (lits, regex) {
                (Some((lits, place)), Some(re)) => {
                    places.push(place);
                    for lit in lits {
                        let k = *index.entry(lit.clone()).or_insert_with(|| {
                            literals.push(lit);
                            owners.push(Vec::new());
                            owners.len() - 1
                        });
                        owners[k].push(i);
                    }
                    regexes.push(Some(re));
                }
                _ => {
                    places.push(Place::Start);
                    regexes.push(None);
                    let to = if needs_non_ascii(p) { &mut non_ascii } else { &mut rest };
                    if let Some((set, index)) = to.get_mut(part_of(i)) {
                        set.push(p.clone());
                        index.push(i);
                    }
                }
            }
        }
        let ac = if literals.is_empty() {
            None
        } else {
            // Standard match semantics: overlapping search reports every
            // literal that occurs, not only the leftmost of overlapping ones.
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&literals)
                .ok()
        };
        if ac.is_none() && !literals.is_empty() {
            // Cannot happen with these sizes; keep every pattern correct anyway.
            let mut parts = Vec::with_capacity(ends.len());
            let mut start = 0;
            for (k, &end) in ends.iter().enumerate() {
                let end = end.clamp(start, patterns.len());
                parts.push(Part {
                    end,
                    rest: build_set(k, &patterns[start..end])?,
                    rest_index: (start..end).collect(),
                    non_ascii: build_set(k, &[])?,
                    non_ascii_index: Vec::new(),
                });
                start = end;
            }
            return Ok(TextMatcher {
                ac: None,
                owners: Vec::new(),
                regexes: vec![None; patterns.len()],
                places: vec![Place::Start; patterns.len()],
                parts,
            });
        }
        let mut parts = Vec::with_capacity(ends.len());
        for (k, ((rest, rest_index), (non_ascii, non_ascii_index))) in rest.into_iter().zip(non_ascii).enumerate() {
            parts.push(Part {
                end: ends.get(k).copied().unwrap_or(patterns.len()),
                rest: build_set(k, &rest)?,
                rest_index,
                non_ascii: build_set(k, &non_ascii)?,
                non_ascii_index,
            });
        }
        Ok(TextMatcher {
            ac,
            owners,
            regexes,
            places,
            parts,
        })
    }

    /// Calls `hit` with the index of each pattern that matches `text`.
    #[cfg(test)]
    pub(super) fn matches(&self, text: &str, hit: impl FnMut(usize)) {
        self.matches_parts(text, 0..self.parts.len(), hit);
    }

    /// [`TextMatcher::matches`] for the patterns of the parts `parts` only.
    pub(super) fn matches_parts(&self, text: &str, parts: std::ops::Range<usize>, mut hit: impl FnMut(usize)) {
        let bytes = text.as_bytes();
        let lo = match parts.start.checked_sub(1) {
            Some(k) => self.parts.get(k).map_or(usize::MAX, |p| p.end),
            None => 0,
        };
        let hi = parts
            .end
            .checked_sub(1)
            .and_then(|k| self.parts.get(k))
            .map_or(0, |p| p.end);
        let wanted = lo..hi;
        if let Some(ac) = &self.ac
            && !wanted.is_empty()
        {
            let n = self.regexes.len();
            // Per pattern: how many times its literals occur, the first
            // offset, and (up to MAX_OCCURRENCES) each (pattern, offset).
            let mut count = vec![0u32; n];
            let mut first = vec![usize::MAX; n];
            let mut found: Vec<(usize, usize)> = Vec::new();
            for m in ac.find_overlapping_iter(bytes) {
                for &p in &self.owners[m.pattern().as_usize()] {
                    if !wanted.contains(&p) {
                        continue;
                    }
                    let (Some(c), Some(f)) = (count.get_mut(p), first.get_mut(p)) else {
                        continue;
                    };
                    // Overlapping matches come in order of their end, so
                    // starts are not monotone.
                    *f = (*f).min(m.start());
                    *c = c.saturating_add(1);
                    if *c <= MAX_OCCURRENCES && self.places.get(p) == Some(&Place::Start) {
                        found.push((p, m.start()));
                    }
                }
            }
            found.sort_unstable();
            found.dedup();
            // A match starts with one of the pattern's literals, so an
            // anchored search at each occurrence finds it; it usually fails
            // within a few bytes. The rest of the text is context for
            // look-arounds (`\b`, `^`).
            let mut done = usize::MAX;
            for (p, at) in found {
                if p == done || count.get(p).is_none_or(|&c| c > MAX_OCCURRENCES) {
                    continue;
                }
                if let Some(Some(re)) = self.regexes.get(p)
                    && re.is_match(Input::new(bytes).range(at..).anchored(Anchored::Yes))
                {
                    done = p;
                    hit(p);
                }
            }
            // One unanchored search for the others: a literal inside the
            // pattern occurs (the match may start anywhere before it), or a
            // starting literal occurs too often for a search at each
            // occurrence (say, thousands of `$`): from the first one.
            for (p, re) in self.regexes.iter().enumerate() {
                let (Some(re), Some(&c), Some(&f)) = (re, count.get(p), first.get(p)) else {
                    continue;
                };
                let from = match self.places.get(p) {
                    _ if c == 0 => continue,
                    Some(Place::Start) if c <= MAX_OCCURRENCES => continue,
                    Some(Place::Start) => f,
                    _ => 0,
                };
                if re.is_match(Input::new(bytes).range(from..)) {
                    hit(p);
                }
            }
        }
        let mut ascii = None;
        for part in self.parts.get(parts).unwrap_or(&[]) {
            for i in part.rest.matches(text) {
                if let Some(&p) = part.rest_index.get(i) {
                    hit(p);
                }
            }
            if !part.non_ascii_index.is_empty() && !*ascii.get_or_insert_with(|| text.is_ascii()) {
                for i in part.non_ascii.matches(text) {
                    if let Some(&p) = part.non_ascii_index.get(i) {
                        hit(p);
                    }
                }
            }
        }
    }

    pub(super) fn part_count(&self) -> usize {
        self.parts.len()
    }

    /// How many patterns are prefiltered (the rest go to the sets).
    #[cfg(test)]
    pub(super) fn prefiltered(&self) -> usize {
        self.regexes.iter().filter(|r| r.is_some()).count()
    }

    /// The sizes of the sets the other patterns are in: those that can
    /// match ASCII text, then those that cannot.
    #[cfg(test)]
    pub(super) fn set_sizes(&self) -> (Vec<usize>, Vec<usize>) {
        let all = |set: fn(&Part) -> &PatternSet| -> Vec<usize> {
            self.parts
                .iter()
                .flat_map(|p| set(p).chunks.iter().map(|c| c.1.len()))
                .collect()
        };
        (all(|p| &p.rest), all(|p| &p.non_ascii))
    }
}

/// `pattern` compiled for anchored searches, as `regex::bytes` would compile
/// it (bytes, not necessarily UTF-8); `None` if it cannot be.
fn anchored_regex(pattern: &str) -> Option<Regex> {
    Regex::builder()
        .syntax(regex_automata::util::syntax::Config::new().utf8(false))
        .configure(
            Regex::config()
                .utf8_empty(false)
                .nfa_size_limit(Some(RULE_SIZE_LIMIT))
                .hybrid_cache_capacity(2 * (1 << 20)),
        )
        .build(pattern)
        .ok()
}

/// Where a pattern's literals are in its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// Every match starts with one of them: an anchored search at each
    /// occurrence finds the match.
    Start,
    /// Every match contains one of them: the pattern runs (unanchored) once
    /// if any occurs.
    Inside,
}

/// The literals every match of `pattern` starts with or contains
/// (lower-cased, compared ASCII case-insensitively), or `None` when there is
/// no usable set: the pattern can start with a wide class and has no
/// required part with literals, or one literal is too short.
fn required_literals(pattern: &str) -> Option<(Vec<Vec<u8>>, Place)> {
    use regex_syntax::hir::{Hir, HirKind};
    let ascii = pattern.starts_with(ASCII_MODE);
    // ASCII mode: extract from the case-sensitive form (the automaton folds
    // ASCII case). Unicode mode with `i` folds more than ASCII (e.g. the
    // Kelvin sign for k), so extract from the pattern as it is: the extractor
    // then lists the case variants itself.
    let source = if ascii {
        without_leading_i(pattern)
    } else {
        pattern.to_string()
    };
    let hir = parse_hir(&source)?;
    if let Some(lits) = prefix_literals(&hir) {
        return Some((lits, Place::Start));
    }
    // A concatenation's tail: whatever its first parts match, a match
    // contains a match of the rest, which starts with one of its literals.
    if let HirKind::Concat(parts) = hir.kind() {
        for i in 1..parts.len() {
            if let Some(lits) = prefix_literals(&Hir::concat(parts[i..].to_vec())) {
                return Some((lits, Place::Inside));
            }
        }
    }
    None
}

/// The literals every match of `hir` starts with, if they are all usable.
fn prefix_literals(hir: &regex_syntax::hir::Hir) -> Option<Vec<Vec<u8>>> {
    // A larger limit keeps literals longer; when it makes the set give up
    // (a product of classes too large), the default limit may still not.
    let usable = |limit: usize| {
        let seq = Extractor::new()
            .kind(ExtractKind::Prefix)
            .limit_total(limit)
            .extract(hir);
        let lits = seq.literals()?;
        if lits.is_empty() || !lits.iter().all(|l| selective(l.as_bytes())) {
            return None;
        }
        Some(
            lits.iter()
                .map(|l| l.as_bytes().to_ascii_lowercase())
                .collect::<Vec<_>>(),
        )
    };
    let mut out = usable(LIMIT_TOTAL).or_else(|| usable(DEFAULT_LIMIT_TOTAL))?;
    // Longer literals are cut: they are still prefixes of every match, and
    // the automaton stays small (the `\s` variants of phrases made thousands
    // of long literals; cut to 5 bytes, the corpus scans 15 % faster; 3
    // bytes is too unselective).
    for l in &mut out {
        l.truncate(MAX_LITERAL);
    }
    out.sort();
    out.dedup();
    // A literal that starts with another one adds nothing: sorted, it comes
    // right after a literal it starts with (or after one that does).
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(out.len());
    for l in out {
        if !kept.last().is_some_and(|k| l.starts_with(k)) {
            kept.push(l);
        }
    }
    Some(kept)
}

/// Whether a literal is worth prefiltering on: two bytes or more, or one
/// punctuation byte (`$`, `<`): a letter or a space alone is in every text.
fn selective(l: &[u8]) -> bool {
    l.len() >= MIN_LITERAL || (l.len() == 1 && l[0].is_ascii_punctuation())
}

/// Whether every match of `pattern` contains a byte above 0x7F (a
/// non-ASCII character), so that it cannot match ASCII text. Conservative:
/// `false` when unsure.
fn needs_non_ascii(pattern: &str) -> bool {
    parse_hir(pattern).is_some_and(|h| hir_needs_non_ascii(&h))
}

/// A pattern's syntax tree, read as `regex::bytes` reads it (not
/// necessarily UTF-8).
pub(super) fn parse_hir(pattern: &str) -> Option<regex_syntax::hir::Hir> {
    regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()
}

fn hir_needs_non_ascii(h: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    match h.kind() {
        HirKind::Literal(l) => l.0.iter().any(|b| *b > 0x7F),
        HirKind::Class(Class::Unicode(c)) => c.ranges().iter().all(|r| u32::from(r.start()) > 0x7F),
        HirKind::Class(Class::Bytes(c)) => c.ranges().iter().all(|r| r.start() > 0x7F),
        HirKind::Repetition(r) => r.min >= 1 && hir_needs_non_ascii(&r.sub),
        HirKind::Capture(c) => hir_needs_non_ascii(&c.sub),
        HirKind::Concat(hs) => hs.iter().any(hir_needs_non_ascii),
        HirKind::Alternation(hs) => hs.iter().all(hir_needs_non_ascii),
        HirKind::Empty | HirKind::Look(_) => false,
    }
}

/// `(?-u)(?is)body` → `(?-u)(?s)body`: the pattern with the leading flag
/// group's `i` removed (as `rules::parse` writes the flags).
fn without_leading_i(pattern: &str) -> String {
    let rest = pattern.strip_prefix(ASCII_MODE).unwrap_or(pattern);
    let Some(after) = rest.strip_prefix("(?") else {
        return pattern.to_string();
    };
    let Some(close) = after.find(')') else {
        return pattern.to_string();
    };
    let flags = &after[..close];
    if flags.is_empty() || !flags.chars().all(|c| matches!(c, 'i' | 'm' | 's')) {
        return pattern.to_string();
    }
    let kept: String = flags.chars().filter(|&c| c != 'i').collect();
    let group = if kept.is_empty() {
        String::new()
    } else {
        format!("(?{kept})")
    };
    format!("{ASCII_MODE}{group}{}", &after[close + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_lower_cased_and_minimal() {
        let lits = |p: &str| {
            required_literals(p).map(|(v, place)| {
                let v = v
                    .into_iter()
                    .map(|l| String::from_utf8(l).unwrap())
                    .collect::<Vec<String>>();
                (v, place)
            })
        };
        let at = |v: &[&str], place| Some((v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), place));
        let digits = |p: &str| (0..10).map(|d| format!("{p}{d}")).collect::<Vec<_>>();
        // Cut to 5 bytes, `clickhere` and `clickbelow` are one literal.
        assert_eq!(lits("(?-u)(?i)Click(?:Here|Below)"), at(&["click"], Place::Start));
        assert_eq!(lits("(?-u)(?i)(?:ab|Cd)e"), at(&["abe", "cde"], Place::Start));
        // `free` covers `freedom`; `\b` is only context.
        assert_eq!(lits("(?-u)(?-u:\\b)(?:free|freedom)"), at(&["free"], Place::Start));
        assert_eq!(lits("(?-u)x\\d"), Some((digits("x"), Place::Start)));
        // One punctuation byte is selective enough; a letter is not.
        assert_eq!(lits("(?-u)\\$\\d"), Some((digits("$"), Place::Start)));
        assert_eq!(lits("(?-u)\\$\\s*[a-z]"), at(&["$"], Place::Start));
        assert_eq!(lits("(?-u)a\\s*[a-z]"), None);
        // A wide class first: the literals of the rest of the concatenation.
        assert_eq!(lits("(?-u)(?i)[a-z]<!--[^>]{0,60}-->"), at(&["<!--"], Place::Inside));
        assert_eq!(lits("(?-u)[a-z]+ing"), at(&["ing"], Place::Inside));
        // Nothing required, or a possibly empty match: no literals.
        assert_eq!(lits("(?-u)[A-Z]{2,}[ \\t]+[A-Z]{2,}"), None);
        assert_eq!(lits("(?-u)(?:abc)?"), None);
    }
    #[test]
    fn leading_i_is_removed_only_from_the_flag_group() {
        assert_eq!(without_leading_i("(?-u)(?is)ab"), "(?-u)(?s)ab");
        assert_eq!(without_leading_i("(?-u)(?i)ab"), "(?-u)ab");
        assert_eq!(without_leading_i("(?-u)(?:i)ab"), "(?-u)(?:i)ab");
        assert_eq!(without_leading_i("(?-u)(?-u:\\b)ab"), "(?-u)(?-u:\\b)ab");
    }

    #[test]
    fn many_occurrences_and_inner_literals_still_match() {
        let pats = ["(?-u)\\$\\d{3}".to_string(), "(?-u)[a-z]+ing".to_string()];
        let m = TextMatcher::build(&pats, |rest| {
            super::super::compile::build_set(rest, &super::super::Loc::test(), "t")
        })
        .expect("builds");
        assert_eq!(m.prefiltered(), 2);
        let hits = |t: &str| {
            let mut v = Vec::new();
            m.matches(t, |p| v.push(p));
            v.sort_unstable();
            v
        };
        // Thousands of `$` before the one that matches: past MAX_OCCURRENCES
        // the search runs once, from the first `$`.
        let text = format!("{}$123 runs", "$ ".repeat(5000));
        assert_eq!(hits(&text), [0]);
        assert_eq!(hits(&"$1 ".repeat(2000)), Vec::<usize>::new());
        assert_eq!(hits("$12 and $999"), [0]);
        // The inner literal `ing`: the match starts before it.
        assert_eq!(hits("nothing"), [1]);
        assert_eq!(hits("ING"), Vec::<usize>::new());
        assert_eq!(hits("$5000 swimming"), [0, 1]);
    }

    #[test]
    fn non_ascii_requirement() {
        assert!(needs_non_ascii("[\\x{0400}-\\x{04FF}]{3}"));
        assert!(needs_non_ascii("a\\s*[\\x{4E00}-\\x{9FFF}]"));
        assert!(needs_non_ascii("(?:é|ü)x"));
        assert!(!needs_non_ascii("a|[\\x{0400}-\\x{04FF}]"));
        assert!(!needs_non_ascii("[\\x{0400}-\\x{04FF}]{0,3}b"));
        assert!(!needs_non_ascii("[\\x{0041}-\\x{04FF}]"));
        assert!(!needs_non_ascii("(?i)k"));
    }
}
