//! Reading rule files: one line at a time into [`Parsed`] definitions,
//! with each pattern checked (and made ASCII-word-boundary where it can be)
//! before anything is compiled into sets.

use std::collections::HashMap;

use regex::bytes::RegexBuilder;

use super::meta::{Expr, parse_meta};
use super::*;

#[derive(Debug, Clone)]
pub(super) struct Loc {
    /// Position of the file in the list given to `compile`.
    pub(super) file_no: usize,
    pub(super) file: String,
    pub(super) line: usize,
}

impl Loc {
    /// A location for tests that compile patterns outside any file.
    #[cfg(test)]
    pub(super) fn test() -> Loc {
        Loc {
            file_no: 0,
            file: "t".into(),
            line: 1,
        }
    }

    pub(super) fn err(&self, what: impl Into<String>) -> RuleError {
        RuleError {
            file: self.file.clone(),
            line: self.line,
            what: what.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TextKind {
    Body,
    Rawbody,
    Uri,
    Full,
}

#[derive(Debug)]
pub(super) enum Def {
    Header {
        header: String,
        pattern: String,
        negated: bool,
    },
    Exists {
        header: String,
    },
    Text {
        kind: TextKind,
        pattern: String,
    },
    Meta {
        expr: Expr,
        refs: Vec<String>,
    },
    /// A band of a classifier's spam probability.
    Band {
        classifier: Classifier,
        low: f64,
        high: f64,
    },
}

/// Which classifier a band rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classifier {
    /// `bayes`: the token counts ([`crate::spam::bayes`]).
    Bayes,
    /// `ngram`: the octet 4-gram regression ([`crate::spam::ngram`]).
    Ngram,
}

#[derive(Debug)]
pub(super) struct RuleDef {
    pub(super) name: String,
    pub(super) at: Loc,
    pub(super) def: Def,
}

#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub(super) defs: Vec<RuleDef>,
    pub(super) by_name: HashMap<String, usize>,
    /// Latest score per name, with where it was given.
    pub(super) scores: HashMap<String, (f64, Loc)>,
    pub(super) describes: HashMap<String, (String, Loc)>,
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

pub(super) fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Splits off the first whitespace-separated word.
pub(super) fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Parses `/pattern/flags` into a pattern with the flags inline, and checks it compiles.
pub(super) fn parse_regex(s: &str, at: &Loc) -> Result<String, RuleError> {
    let s = s.trim();
    let Some(inner) = s.strip_prefix('/') else {
        return Err(at.err(format!("expected /regex/flags, found '{s}'")));
    };
    let Some(end) = inner.rfind('/') else {
        return Err(at.err("regex has no closing '/'"));
    };
    let (pattern, flags) = (&inner[..end], &inner[end + 1..]);
    let mut inline = String::new();
    let mut unicode_boundaries = false;
    for c in flags.chars() {
        match c {
            'i' | 'm' | 's' => {
                if !inline.contains(c) {
                    inline.push(c);
                }
            }
            'u' => unicode_boundaries = true,
            c if c.is_whitespace() => return Err(at.err(format!("unexpected text after regex: '{flags}'"))),
            c => return Err(at.err(format!("unknown regex flag '{c}' (allowed: i, m, s, u)"))),
        }
    }
    let body = if unicode_boundaries {
        pattern.to_string()
    } else {
        ascii_boundaries(pattern)
    };
    let full = if inline.is_empty() {
        body
    } else {
        format!("(?{inline}){body}")
    };
    let compile = |p: &str| RegexBuilder::new(p).size_limit(RULE_SIZE_LIMIT).build();
    // ASCII mode when the pattern can be read that way (and flag `u` is not given).
    if !unicode_boundaries && full.is_ascii() {
        let ascii = format!("{ASCII_MODE}{full}");
        if compile(&ascii).is_ok() {
            return Ok(ascii);
        }
    }
    compile(&full).map_err(|e| at.err(format!("bad regex /{pattern}/: {}", one_line(&e.to_string()))))?;
    Ok(full)
}

/// Makes `\b` and `\B` (and `\b{...}`) outside character classes ASCII-only:
/// `regex`'s fast engines give up on a Unicode word boundary as soon as the
/// text has a non-ASCII byte, and a set with such a pattern then scans with
/// the slow engine (about 1000 times slower for a large set). Flag `u`
/// keeps Unicode boundaries for rules that need them (e.g. Cyrillic words).
pub(super) fn ascii_boundaries(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 16);
    let mut chars = p.chars().peekable();
    let mut class_depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ ('b' | 'B')) if class_depth == 0 => {
                    out.push_str("(?-u:\\");
                    out.push(n);
                    if chars.peek() == Some(&'{') {
                        for d in chars.by_ref() {
                            out.push(d);
                            if d == '}' {
                                break;
                            }
                        }
                    }
                    out.push(')');
                }
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' => {
                out.push('[');
                if class_depth > 0 && chars.peek() == Some(&':') {
                    // `[:alpha:]` inside a class: its `]` closes it.
                    class_depth += 1;
                    continue;
                }
                class_depth += 1;
                // A `]` first in a class (after an optional `^`) is literal.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push(']');
                    chars.next();
                }
            }
            ']' if class_depth > 0 => {
                class_depth -= 1;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// `regex` errors span several lines (with a caret diagram); keep them on one.
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads one line of a rule file into `p`: a rule, a `score` or a
/// `describe`; blank lines and `#` comments are skipped.
pub(super) fn parse_line(p: &mut Parsed, line: &str, at: Loc) -> Result<(), RuleError> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(());
    }
    let (kind, rest) = word(t);
    let (name, rest) = word(rest);
    if !matches!(
        kind,
        "header" | "body" | "rawbody" | "uri" | "full" | "meta" | "bayes" | "ngram" | "score" | "describe"
    ) {
        return Err(at.err(format!("unknown line kind '{kind}'")));
    }
    if name.is_empty() {
        return Err(at.err(format!("'{kind}' needs a rule name")));
    }
    if !valid_name(name) {
        return Err(at.err(format!(
            "bad rule name '{name}' (want [A-Z0-9_], 1 to {MAX_NAME} characters)"
        )));
    }
    let def = match kind {
        "score" => return p.score(name, rest, at),
        "describe" => {
            p.describes.insert(name.to_string(), (rest.to_string(), at));
            return Ok(());
        }
        "header" => parse_header(rest, &at)?,
        "bayes" => parse_band(Classifier::Bayes, kind, rest, &at)?,
        "ngram" => parse_band(Classifier::Ngram, kind, rest, &at)?,
        "body" | "rawbody" | "uri" | "full" => Def::Text {
            kind: text_kind(kind),
            pattern: parse_regex(rest, &at)?,
        },
        _ => {
            let (expr, refs) = parse_meta(rest).map_err(|e| at.err(format!("bad meta expression: {e}")))?;
            Def::Meta { expr, refs }
        }
    };
    p.define(name, at, def)
}

impl Parsed {
    /// `score NAME NUMBER` (`rest` is the number): the latest score given
    /// for a rule is the one kept.
    fn score(&mut self, name: &str, rest: &str, at: Loc) -> Result<(), RuleError> {
        let (num, extra) = word(rest);
        if num.is_empty() || !extra.is_empty() {
            return Err(at.err("expected: score NAME NUMBER"));
        }
        let v: f64 = match num.parse() {
            Ok(v) if f64::is_finite(v) => v,
            _ => return Err(at.err(format!("bad score '{num}'"))),
        };
        if name.starts_with("__") {
            return Err(at.err(format!("sub-rule {name} cannot be scored")));
        }
        self.scores.insert(name.to_string(), (v, at));
        Ok(())
    }

    /// Adds a rule; each name is defined once.
    fn define(&mut self, name: &str, at: Loc, def: Def) -> Result<(), RuleError> {
        if let Some(&i) = self.by_name.get(name) {
            let first = &self.defs[i].at;
            return Err(at.err(format!("rule {name} already defined at {}:{}", first.file, first.line)));
        }
        self.by_name.insert(name.to_string(), self.defs.len());
        self.defs.push(RuleDef {
            name: name.to_string(),
            at,
            def,
        });
        Ok(())
    }
}

/// The rest of a `header` line: `Header-Name =~ /regex/` (or `!~`), or
/// `exists:Header-Name`.
fn parse_header(rest: &str, at: &Loc) -> Result<Def, RuleError> {
    if let Some(h) = rest.strip_prefix("exists:") {
        let h = h.trim();
        if !valid_header_name(h) {
            return Err(at.err(format!("bad header name '{h}'")));
        }
        return Ok(Def::Exists {
            header: h.to_ascii_lowercase(),
        });
    }
    let (header, rest) = word(rest);
    let (op, rest) = word(rest);
    if !valid_header_name(header) {
        return Err(at.err(format!("bad header name '{header}'")));
    }
    let negated = match op {
        "=~" => false,
        "!~" => true,
        _ => return Err(at.err("expected: header NAME Header-Name =~ /regex/ (or !~, or exists:Header)")),
    };
    Ok(Def::Header {
        header: header.to_ascii_lowercase(),
        pattern: parse_regex(rest, at)?,
        negated,
    })
}

/// The rest of a `bayes` or `ngram` line: `LOW HIGH`, with 0 <= LOW < HIGH <= 1.
fn parse_band(classifier: Classifier, kind: &str, rest: &str, at: &Loc) -> Result<Def, RuleError> {
    let (low, rest) = word(rest);
    let (high, extra) = word(rest);
    let band = |s: &str| s.parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v));
    match (band(low), band(high)) {
        (Some(low), Some(high)) if low < high && extra.is_empty() => Ok(Def::Band { classifier, low, high }),
        _ => Err(at.err(format!("expected: {kind} NAME LOW HIGH (0 <= LOW < HIGH <= 1)"))),
    }
}

/// The text a `body`, `rawbody`, `uri` or `full` rule looks at.
fn text_kind(kind: &str) -> TextKind {
    match kind {
        "body" => TextKind::Body,
        "rawbody" => TextKind::Rawbody,
        "uri" => TextKind::Uri,
        _ => TextKind::Full,
    }
}
