//! From parsed rule files to a compiled [`RuleSet`]: every `score` and
//! `describe` must name a rule, every meta known rules and no cycle; the
//! rules are then grouped by what they match and each group is compiled
//! into small [`RegexSet`]s (text kinds behind their literal prefilter).

use regex::bytes::RegexSetBuilder;

use super::*;

impl Parsed {
    /// Checks the references between the definitions, orders the metas and
    /// compiles the sets.
    pub(super) fn finish(mut self) -> Result<RuleSet, RuleError> {
        self.check_orphans()?;
        let metas = self.resolve_metas()?;
        let order = meta_order(&self.defs, &metas)?;
        Groups::of(self).build(order)
    }

    /// A `score` or `describe` for a rule that does not exist is an error,
    /// reported at the first such line in file order.
    fn check_orphans(&self) -> Result<(), RuleError> {
        let scores = self.scores.iter().map(|(name, (_, at))| (at, name, "score"));
        let describes = self.describes.iter().map(|(name, (_, at))| (at, name, "describe"));
        let first = scores
            .chain(describes)
            .filter(|(_, name, _)| !self.by_name.contains_key(*name))
            .min_by(|a, b| loc_order(a.0, b.0));
        match first {
            Some((at, name, what)) => Err(at.err(format!("{what} for unknown rule {name}"))),
            None => Ok(()),
        }
    }

    /// Resolves the rule names each meta refers to; returns each meta with
    /// the rules it uses.
    fn resolve_metas(&mut self) -> Result<Vec<(usize, Vec<usize>)>, RuleError> {
        let mut metas = Vec::new();
        for (i, d) in self.defs.iter_mut().enumerate() {
            if let Def::Meta { expr, refs } = &mut d.def {
                let mut deps = Vec::new();
                for name in refs.iter() {
                    let Some(&j) = self.by_name.get(name) else {
                        return Err(d.at.err(format!("meta {} refers to unknown rule {name}", d.name)));
                    };
                    deps.push(j);
                }
                expr.resolve(&deps);
                metas.push((i, deps));
            }
        }
        Ok(metas)
    }
}

/// The rules sorted by what matches them, before any set is compiled.
#[derive(Default)]
struct Groups {
    rules: Vec<RuleInfo>,
    /// Header rules, by lower-case header name.
    headers: HashMap<String, HeaderPatterns>,
    /// `exists:` rules: (lower-case header name, rule).
    exists: Vec<(String, usize)>,
    /// Body, rawbody, uri and full rules, by [`TextKind`].
    texts: [TextPatterns; 4],
    /// Meta expressions by rule.
    metas: HashMap<usize, Expr>,
    /// `bayes` and `ngram` rules: (classifier, low, high, rule).
    bands: Vec<(Classifier, f64, f64, usize)>,
}

/// The patterns of the header rules on one header name.
struct HeaderPatterns {
    patterns: Vec<String>,
    /// For each pattern: (rule, negated).
    rules: Vec<(usize, bool)>,
    /// Where the first of them is defined (a set that does not compile is
    /// reported there).
    at: Loc,
}

/// The patterns of the rules of one text kind.
#[derive(Default)]
struct TextPatterns {
    patterns: Vec<String>,
    /// For each pattern: its rule.
    rules: Vec<usize>,
    /// Where the first of them is defined; `None` when there is none.
    at: Option<Loc>,
}

impl Groups {
    /// Sorts the definitions (their scores and descriptions looked up).
    fn of(p: Parsed) -> Groups {
        let Parsed {
            defs,
            scores,
            describes,
            ..
        } = p;
        let mut g = Groups {
            rules: Vec::with_capacity(defs.len()),
            ..Groups::default()
        };
        for (i, d) in defs.into_iter().enumerate() {
            let score = if d.name.starts_with("__") {
                0.0
            } else {
                scores.get(&d.name).map_or(1.0, |s| s.0)
            };
            let description = describes.get(&d.name).map(|s| s.0.clone()).unwrap_or_default();
            g.rules.push(RuleInfo {
                name: d.name,
                score,
                description,
            });
            g.add(i, d.def, d.at);
        }
        g
    }

    /// Puts rule `i` into its group.
    fn add(&mut self, i: usize, def: Def, at: Loc) {
        match def {
            Def::Header {
                header,
                pattern,
                negated,
            } => {
                let g = self.headers.entry(header).or_insert_with(|| HeaderPatterns {
                    patterns: Vec::new(),
                    rules: Vec::new(),
                    at,
                });
                g.patterns.push(pattern);
                g.rules.push((i, negated));
            }
            Def::Exists { header } => self.exists.push((header, i)),
            Def::Text { kind, pattern } => {
                let t = &mut self.texts[kind as usize];
                t.patterns.push(pattern);
                t.rules.push(i);
                t.at.get_or_insert(at);
            }
            Def::Meta { expr, .. } => {
                self.metas.insert(i, expr);
            }
            Def::Band { classifier, low, high } => self.bands.push((classifier, low, high, i)),
        }
    }

    /// Compiles the sets; `order` is the metas' evaluation order.
    fn build(mut self, order: Vec<usize>) -> Result<RuleSet, RuleError> {
        let mut headers = HashMap::new();
        for (name, h) in self.headers {
            let set = build_set(&h.patterns, &h.at, &format!("header rules on {name}"))?;
            headers.insert(name, HeaderGroup { set, rules: h.rules });
        }
        let [body, rawbody, uri, full] = self.texts;
        let metas = order
            .into_iter()
            .filter_map(|i| self.metas.remove(&i).map(|e| (i, e)))
            .collect();
        Ok(RuleSet {
            rules: self.rules,
            headers,
            exists: self.exists,
            bodies: TextPatterns::build_bodies(body, rawbody)?,
            uri: uri.build("uri rules")?,
            full: full.build("full rules")?,
            bands: self.bands,
            metas,
        })
    }
}

impl TextPatterns {
    /// The body and raw-body rules in one matcher of two parts (body, then
    /// raw body), if there are any.
    fn build_bodies(body: TextPatterns, rawbody: TextPatterns) -> Result<Option<TextSet>, RuleError> {
        let ats = [body.at.clone(), rawbody.at.clone()];
        let Some(first) = ats.iter().flatten().next().cloned() else {
            return Ok(None);
        };
        let ends = [body.patterns.len(), body.patterns.len() + rawbody.patterns.len()];
        let mut patterns = body.patterns;
        patterns.extend(rawbody.patterns);
        let mut rules = body.rules;
        rules.extend(rawbody.rules);
        let matcher = TextMatcher::build_parts(&patterns, &ends, |part, rest| {
            let what = if part == 0 { "body rules" } else { "rawbody rules" };
            let at = ats.get(part).and_then(Option::as_ref).unwrap_or(&first);
            build_set(rest, at, what)
        })?;
        Ok(Some(TextSet { matcher, rules }))
    }

    /// The prefiltered matcher of these patterns, if there are any.
    fn build(self, what: &str) -> Result<Option<TextSet>, RuleError> {
        let Some(at) = self.at else {
            return Ok(None);
        };
        Ok(Some(TextSet {
            matcher: TextMatcher::build(&self.patterns, |rest| build_set(rest, &at, what))?,
            rules: self.rules,
        }))
    }
}

fn loc_order(a: &Loc, b: &Loc) -> std::cmp::Ordering {
    (a.file_no, a.line).cmp(&(b.file_no, b.line))
}

pub(super) fn build_set(patterns: &[String], at: &Loc, what: &str) -> Result<PatternSet, RuleError> {
    let (ascii, unicode): (Vec<usize>, Vec<usize>) =
        (0..patterns.len()).partition(|&i| patterns[i].starts_with(ASCII_MODE));
    // Patterns anchored at the start of the text (`\A...`) get sets of their
    // own: such a set stops as soon as its automaton dies, a few bytes in,
    // where a set mixing them with unanchored patterns reads the whole text.
    let (ascii_anchored, ascii): (Vec<usize>, Vec<usize>) =
        ascii.into_iter().partition(|&i| anchored_start(&patterns[i]));
    let (unicode_anchored, unicode): (Vec<usize>, Vec<usize>) =
        unicode.into_iter().partition(|&i| anchored_start(&patterns[i]));
    let mut chunks = Vec::new();
    for group in [ascii, ascii_anchored, unicode, unicode_anchored] {
        for idx in group.chunks(SET_CHUNK) {
            let set = RegexSetBuilder::new(idx.iter().map(|&i| &patterns[i]))
                .size_limit(SET_SIZE_LIMIT)
                .dfa_size_limit(SET_DFA_LIMIT)
                .build()
                .map_err(|e| {
                    at.err(format!(
                        "cannot compile the {what} together: {}",
                        one_line(&e.to_string())
                    ))
                })?;
            chunks.push((set, idx.to_vec()));
        }
    }
    Ok(PatternSet { chunks })
}

/// Whether every match of `pattern` starts at the start of the text.
fn anchored_start(pattern: &str) -> bool {
    prefilter::parse_hir(pattern).is_some_and(|h| {
        h.properties()
            .look_set_prefix()
            .contains(regex_syntax::hir::Look::Start)
    })
}

/// Orders the metas so that each comes after the metas it uses (Kahn's
/// algorithm); a cycle is reported at the first-defined meta on it.
fn meta_order(defs: &[RuleDef], metas: &[(usize, Vec<usize>)]) -> Result<Vec<usize>, RuleError> {
    let is_meta: HashSet<usize> = metas.iter().map(|m| m.0).collect();
    let mut pending: HashMap<usize, usize> = HashMap::new();
    let mut users: HashMap<usize, Vec<usize>> = HashMap::new();
    for (m, deps) in metas {
        let meta_deps: Vec<usize> = deps.iter().copied().filter(|d| is_meta.contains(d)).collect();
        pending.insert(*m, meta_deps.len());
        for d in meta_deps {
            users.entry(d).or_default().push(*m);
        }
    }
    let mut ready: Vec<usize> = metas
        .iter()
        .map(|m| m.0)
        .filter(|m| pending.get(m) == Some(&0))
        .collect();
    ready.reverse();
    let mut order = Vec::with_capacity(metas.len());
    while let Some(m) = ready.pop() {
        order.push(m);
        for u in users.get(&m).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(n) = pending.get_mut(u) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    ready.push(*u);
                }
            }
        }
    }
    if order.len() == metas.len() {
        return Ok(order);
    }
    // Every meta left waits on another one left: walk until one repeats.
    let done: HashSet<usize> = order.iter().copied().collect();
    let deps: HashMap<usize, &Vec<usize>> = metas.iter().map(|(m, d)| (*m, d)).collect();
    let Some(mut cur) = metas.iter().map(|m| m.0).find(|m| !done.contains(m)) else {
        return Ok(order);
    };
    let mut path: Vec<usize> = Vec::new();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    while let std::collections::hash_map::Entry::Vacant(v) = seen.entry(cur) {
        v.insert(path.len());
        path.push(cur);
        let next = deps
            .get(&cur)
            .and_then(|ds| ds.iter().copied().find(|d| is_meta.contains(d) && !done.contains(d)));
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    let start = seen.get(&cur).copied().unwrap_or(0);
    let cycle = &path[start.min(path.len())..];
    let first = cycle.iter().copied().min().unwrap_or(cur);
    let pos = cycle.iter().position(|&c| c == first).unwrap_or(0);
    let mut names: Vec<&str> = cycle[pos..]
        .iter()
        .chain(&cycle[..pos])
        .map(|&i| defs[i].name.as_str())
        .collect();
    names.push(defs[first].name.as_str());
    Err(defs[first].at.err(format!("meta cycle: {}", names.join(" -> "))))
}
