//! Meta rule expressions: `A && (B || !C)`, `A + B + C >= 2`. Rule
//! references become numbered slots; a value is 1 if that rule hit, else 0.

use super::valid_name;

/// Deepest nesting of `(` and `!` in a meta expression.
const MAX_META_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

/// A meta expression. Values are numbers: a rule is 1 if it hit, else 0;
/// `!`, `&&`, `||` and comparisons give 0 or 1; anything non-zero is true.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    /// A rule: by reference slot while parsing, by rule index once resolved.
    Rule(usize),
    Num(f64),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Sum(Vec<Expr>),
    Cmp(Box<Expr>, Cmp, Box<Expr>),
}

impl Expr {
    pub(super) fn eval(&self, hits: &[bool]) -> f64 {
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        match self {
            Expr::Rule(i) => b(hits.get(*i).copied().unwrap_or(false)),
            Expr::Num(n) => *n,
            Expr::Not(e) => b(e.eval(hits) == 0.0),
            Expr::And(es) => b(es.iter().all(|e| e.eval(hits) != 0.0)),
            Expr::Or(es) => b(es.iter().any(|e| e.eval(hits) != 0.0)),
            Expr::Sum(es) => es.iter().map(|e| e.eval(hits)).sum(),
            Expr::Cmp(l, op, r) => {
                let (l, r) = (l.eval(hits), r.eval(hits));
                b(match op {
                    Cmp::Ge => l >= r,
                    Cmp::Gt => l > r,
                    Cmp::Le => l <= r,
                    Cmp::Lt => l < r,
                    Cmp::Eq => l == r,
                    Cmp::Ne => l != r,
                })
            }
        }
    }

    /// Replaces reference slots by rule indexes (`map[slot]`).
    pub(super) fn resolve(&mut self, map: &[usize]) {
        match self {
            Expr::Rule(s) => *s = map.get(*s).copied().unwrap_or(usize::MAX),
            Expr::Num(_) => {}
            Expr::Not(e) => e.resolve(map),
            Expr::And(es) | Expr::Or(es) | Expr::Sum(es) => es.iter_mut().for_each(|e| e.resolve(map)),
            Expr::Cmp(l, _, r) => {
                l.resolve(map);
                r.resolve(map);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Num(f64),
    And,
    Or,
    Not,
    Plus,
    Open,
    Close,
    Cmp(Cmp),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, c)| c);
        let two = |t: Tok, chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
            chars.next();
            t
        };
        let tok = match (c, next) {
            (c, _) if c.is_whitespace() => continue,
            ('&', Some('&')) => two(Tok::And, &mut chars),
            ('|', Some('|')) => two(Tok::Or, &mut chars),
            ('>', Some('=')) => two(Tok::Cmp(Cmp::Ge), &mut chars),
            ('<', Some('=')) => two(Tok::Cmp(Cmp::Le), &mut chars),
            ('=', Some('=')) => two(Tok::Cmp(Cmp::Eq), &mut chars),
            ('!', Some('=')) => two(Tok::Cmp(Cmp::Ne), &mut chars),
            ('>', _) => Tok::Cmp(Cmp::Gt),
            ('<', _) => Tok::Cmp(Cmp::Lt),
            ('!', _) => Tok::Not,
            ('+', _) => Tok::Plus,
            ('(', _) => Tok::Open,
            (')', _) => Tok::Close,
            (c, _) if c.is_ascii_alphanumeric() || c == '_' || c == '.' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == '.' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let w = &s[i..end];
                if w.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.') {
                    match w.parse::<f64>() {
                        Ok(v) if v.is_finite() => Tok::Num(v),
                        _ => return Err(format!("bad number '{w}'")),
                    }
                } else if valid_name(w) {
                    Tok::Name(w.to_string())
                } else {
                    return Err(format!("bad rule name '{w}'"));
                }
            }
            (c, _) => return Err(format!("unexpected character '{c}'")),
        };
        toks.push(tok);
    }
    Ok(toks)
}

struct MetaParser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    refs: Vec<String>,
}

/// Parses a meta expression; rule references become numbered slots, listed in `refs`.
pub(super) fn parse_meta(s: &str) -> Result<(Expr, Vec<String>), String> {
    let toks = lex(s)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let mut p = MetaParser {
        toks,
        pos: 0,
        depth: 0,
        refs: Vec::new(),
    };
    let e = p.or()?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(format!("unexpected {} after the expression", describe_tok(t)));
    }
    Ok((e, p.refs))
}

fn describe_tok(t: &Tok) -> String {
    match t {
        Tok::Name(n) => format!("'{n}'"),
        Tok::Num(n) => format!("'{n}'"),
        Tok::And => "'&&'".into(),
        Tok::Or => "'||'".into(),
        Tok::Not => "'!'".into(),
        Tok::Plus => "'+'".into(),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::Cmp(_) => "comparison".into(),
    }
}

impl MetaParser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn list(
        &mut self,
        sep: &Tok,
        next: fn(&mut Self) -> Result<Expr, String>,
        mk: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr, String> {
        let first = next(self)?;
        if self.peek() != Some(sep) {
            return Ok(first);
        }
        let mut es = vec![first];
        while self.eat(sep) {
            es.push(next(self)?);
        }
        Ok(mk(es))
    }

    fn or(&mut self) -> Result<Expr, String> {
        self.list(&Tok::Or, Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Expr, String> {
        self.list(&Tok::And, Self::cmp, Expr::And)
    }

    fn cmp(&mut self) -> Result<Expr, String> {
        let l = self.sum()?;
        if let Some(Tok::Cmp(op)) = self.peek() {
            let op = *op;
            self.pos += 1;
            let r = self.sum()?;
            return Ok(Expr::Cmp(Box::new(l), op, Box::new(r)));
        }
        Ok(l)
    }

    fn sum(&mut self) -> Result<Expr, String> {
        self.list(&Tok::Plus, Self::unary, Expr::Sum)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_META_DEPTH {
            return Err(format!("nested deeper than {MAX_META_DEPTH}"));
        }
        let e = if self.eat(&Tok::Not) {
            self.unary().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        e
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Name(n)) => {
                self.pos += 1;
                self.refs.push(n);
                Ok(Expr::Rule(self.refs.len() - 1))
            }
            Some(Tok::Num(v)) => {
                self.pos += 1;
                Ok(Expr::Num(v))
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let e = self.or()?;
                if !self.eat(&Tok::Close) {
                    return Err("missing ')'".into());
                }
                Ok(e)
            }
            Some(t) => Err(format!("unexpected {}", describe_tok(&t))),
            None => Err("unexpected end of expression".into()),
        }
    }
}

// ---------------------------------------------------------------- fixtures
