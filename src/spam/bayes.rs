//! Statistical (Bayes-style) spam classifier: per-token spam/ham counts, Robinson's f(w) and Fisher's chi-square
//! combining, as in SpamBayes and SpamAssassin.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, Write};
use std::sync::OnceLock;

use super::ngram::{self, Ngram};

/// Classifier parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Params {
    /// Robinson's strength of the background probability.
    pub s: f64,
    /// Robinson's background probability for an unknown token.
    pub x: f64,
    /// Tokens whose probability is closer than this to 0.5 are ignored.
    pub min_strength: f64,
    /// At most this many tokens take part in a classification.
    pub max_discriminators: usize,
    /// Tokens seen fewer than this many times in total are ignored when classifying.
    pub min_count: u64,
}

impl Params {
    pub(crate) const DEFAULT: Params = Params {
        s: 0.45,
        x: 0.5,
        min_strength: 0.1,
        max_discriminators: 150,
        // Tokens seen once vote too (pulled towards x by s): on the public
        // sample's cross-validation that is 92.3 % recall at 0.45 % false
        // positives, against 91.8 % at 0.67 % without them. The model file
        // keeps them (`sluice learn --min-count 1`, the default).
        min_count: 1,
    };
}
/// Initial capacity bound of the clue list.
const MAX_CLUES_CAPACITY: usize = 4096;
/// Minimum number of learned spam and of learned ham messages for the model to give an opinion.
pub const MIN_MESSAGES: u32 = crate::config::defaults::SPAM_BAYES_MIN_MESSAGES;

const MAGIC: &str = "sluice-bayes";
/// Version of the model file. 2: the tokenizer of this version (header structure, word pairs, URL pieces,
/// number shapes); models of version 1 hold tokens of the earlier tokenizer and must be retrained.
/// 3: the same counts, then the n-gram classifier's section ([`super::ngram`]). A version 2 file is read as
/// one whose n-gram classifier has learned nothing yet.
const VERSION: &str = "3";
const VERSIONS_READ: [&str; 2] = ["2", "3"];

/// A fast hasher for short strings (multiply-rotate over 8-byte words, as FxHash, with a murmur3 finaliser),
/// keyed with a random per-process seed. Token maps are hashed a lot; SipHash dominated classification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FastState(u64);

impl Default for FastState {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastState(*SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)))
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

pub(crate) struct FastHasher(u64);

const FAST_K: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(FAST_K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Error reading a model file.
#[derive(Debug)]
pub enum BayesError {
    Io(std::io::Error),
    Format { line: usize, what: String },
}

impl fmt::Display for BayesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BayesError::Io(e) => write!(f, "reading bayes model: {e}"),
            BayesError::Format { line, what } => write!(f, "bayes model line {line}: {what}"),
        }
    }
}

impl std::error::Error for BayesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BayesError::Io(e) => Some(e),
            BayesError::Format { .. } => None,
        }
    }
}

impl From<std::io::Error> for BayesError {
    fn from(e: std::io::Error) -> Self {
        BayesError::Io(e)
    }
}

/// Token statistics: for each token the number of spam and ham messages that contained it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    tokens: HashMap<String, (u32, u32), FastState>,
    nspam: u32,
    nham: u32,
    /// The same counts by token fingerprint, for classifying.
    index: Index,
    /// The second classifier, learned from the same messages.
    ngram: Ngram,
}

/// Counts by [`fingerprint`], built from `Model::tokens` when first needed
/// and dropped when the model learns. A lookup is one probe in a table of
/// plain integers, where the string table also chases each key's heap
/// string and compares it: classification was a fifth of a whole score.
/// Two tokens with the same 64-bit fingerprint would share counts; with a
/// few hundred thousand tokens that is about one chance in 10^8.
#[derive(Debug, Clone, Default)]
struct Index(OnceLock<HashMap<u64, (u32, u32), FastState>>);

impl PartialEq for Index {
    /// Derived data: models are equal by their counts.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Index {}

/// A token's 64-bit fingerprint (the fast hash with a fixed key, so that
/// it is the same in every process).
fn fingerprint(token: &str) -> u64 {
    let mut h = FastHasher(0x243f_6a88_85a3_08d3);
    h.write(token.as_bytes());
    h.finish()
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// Learn one message given its tokens (duplicates are counted once).
    pub fn learn(&mut self, tokens: &[String], spam: bool) {
        self.index = Index::default();
        let mut seen: HashSet<&str, FastState> = HashSet::with_capacity_and_hasher(tokens.len(), FastState::default());
        for token in tokens {
            if !seen.insert(token.as_str()) {
                continue;
            }
            let entry = match self.tokens.get_mut(token.as_str()) {
                Some(entry) => entry,
                None => self.tokens.entry(token.clone()).or_insert((0, 0)),
            };
            if spam {
                entry.0 = entry.0.saturating_add(1);
            } else {
                entry.1 = entry.1.saturating_add(1);
            }
        }
        if spam {
            self.nspam = self.nspam.saturating_add(1);
        } else {
            self.nham = self.nham.saturating_add(1);
        }
    }

    /// Takes back what [`Model::learn`] did for the same message and class
    /// (`sa-learn --forget`): a message moved out of Junk is forgotten as
    /// spam, then learned as ham. Counts never go below zero; a token no
    /// message has any more is dropped.
    pub fn forget(&mut self, tokens: &[String], spam: bool) {
        self.index = Index::default();
        let mut seen: HashSet<&str, FastState> = HashSet::with_capacity_and_hasher(tokens.len(), FastState::default());
        for token in tokens {
            if !seen.insert(token.as_str()) {
                continue;
            }
            let Some(entry) = self.tokens.get_mut(token.as_str()) else {
                continue;
            };
            if spam {
                entry.0 = entry.0.saturating_sub(1);
            } else {
                entry.1 = entry.1.saturating_sub(1);
            }
            if *entry == (0, 0) {
                self.tokens.remove(token.as_str());
            }
        }
        if spam {
            self.nspam = self.nspam.saturating_sub(1);
        } else {
            self.nham = self.nham.saturating_sub(1);
        }
    }

    /// The counts by fingerprint (built on first use).
    fn index(&self) -> &HashMap<u64, (u32, u32), FastState> {
        self.index.0.get_or_init(|| {
            let mut m = HashMap::with_capacity_and_hasher(self.tokens.len(), FastState::default());
            for (t, c) in &self.tokens {
                m.insert(fingerprint(t), *c);
            }
            m
        })
    }

    /// The n-gram classifier learned from the same messages.
    pub fn ngram(&self) -> &Ngram {
        &self.ngram
    }

    /// The n-gram classifier, to learn or forget a batch.
    pub fn ngram_mut(&mut self) -> &mut Ngram {
        &mut self.ngram
    }

    /// Number of learned spam messages.
    pub fn nspam(&self) -> u32 {
        self.nspam
    }

    /// Number of learned ham messages.
    pub fn nham(&self) -> u32 {
        self.nham
    }

    /// Number of distinct tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Spam and ham counts of a token.
    pub fn counts(&self, token: &str) -> Option<(u32, u32)> {
        self.tokens.get(token).copied()
    }

    /// Robinson's f(w) of a token, or None if it was seen fewer than `params.min_count` times.
    fn token_prob(&self, spam: u32, ham: u32, params: &Params) -> Option<f64> {
        let n = u64::from(spam) + u64::from(ham);
        if n < params.min_count || self.nspam == 0 || self.nham == 0 {
            return None;
        }
        let spam_ratio = f64::from(spam) / f64::from(self.nspam);
        let ham_ratio = f64::from(ham) / f64::from(self.nham);
        let denom = spam_ratio + ham_ratio;
        if denom <= 0.0 {
            return None;
        }
        let p = spam_ratio / denom;
        let n = n as f64;
        Some((params.s * params.x + n * p) / (params.s + n))
    }

    /// Spam probability in 0..=1 using Robinson's f(w) (s = 0.45, x = 0.5, as in SpamBayes) on per-class
    /// normalised frequencies, the 150 most significant tokens (|f - 0.5| >= 0.1; tokens seen once take part,
    /// their f(w) being pulled towards x by s),
    /// combined with Fisher's chi-square method: H = C⁻¹(-2 Σ ln f, 2n), S = C⁻¹(-2 Σ ln(1 - f), 2n),
    /// P = (1 + H - S) / 2.
    ///
    /// Returns None when the model has fewer than 10 spam or 10 ham messages, or when no token is significant.
    pub fn classify(&self, tokens: &[String]) -> Option<f64> {
        self.classify_with(tokens.iter().map(String::as_str), &Params::DEFAULT)
    }

    /// [`Model::classify`] of a message's [`Tokens`](super::tokenize::Tokens).
    pub fn classify_list(&self, tokens: &super::tokenize::Tokens) -> Option<f64> {
        self.classify_with(tokens.iter(), &Params::DEFAULT)
    }

    /// [`Model::classify`] with explicit parameters.
    pub(crate) fn classify_with<'t>(
        &self,
        tokens: impl IntoIterator<Item = &'t str, IntoIter: ExactSizeIterator>,
        params: &Params,
    ) -> Option<f64> {
        if self.nspam < MIN_MESSAGES || self.nham < MIN_MESSAGES {
            return None;
        }
        let index = self.index();
        let tokens = tokens.into_iter();
        let mut clues: Vec<(f64, &str)> = Vec::with_capacity(tokens.len().min(MAX_CLUES_CAPACITY));
        for token in tokens {
            let Some(&(spam, ham)) = index.get(&fingerprint(token)) else {
                continue;
            };
            let Some(f) = self.token_prob(spam, ham, params) else {
                continue;
            };
            if (f - 0.5).abs() >= params.min_strength {
                clues.push((f, token));
            }
        }
        if clues.is_empty() {
            return None;
        }
        // Strongest first; ties broken by probability and then by token, so that the result does not depend on
        // the order of the tokens. Duplicate tokens end up next to each other and are counted once.
        let strongest = |a: &(f64, &str), b: &(f64, &str)| {
            (b.0 - 0.5)
                .abs()
                .total_cmp(&(a.0 - 0.5).abs())
                .then_with(|| a.0.total_cmp(&b.0))
                .then_with(|| a.1.cmp(b.1))
        };
        let k = params.max_discriminators;
        // Only the strongest `k` are used: select them (linear), then sort those. A message has a few hundred
        // clues or more, and sorting them all was most of this function's time.
        let selected = clues.len() > k && {
            clues.select_nth_unstable_by(k, strongest);
            let top = &mut clues[..k];
            top.sort_unstable_by(strongest);
            top.windows(2).all(|w| w[0].1 != w[1].1)
        };
        if !selected {
            // Fewer than `k` clues, or a token passed twice among the strongest: sort them all.
            clues.sort_unstable_by(strongest);
            clues.dedup_by(|a, b| a.1 == b.1);
        }
        clues.truncate(k);

        let mut ln_f = 0.0f64;
        let mut ln_1f = 0.0f64;
        for &(f, _) in &clues {
            let f = f.clamp(1e-12, 1.0 - 1e-12);
            ln_f += f.ln();
            ln_1f += (1.0 - f).ln();
        }
        let dof = 2 * clues.len();
        let h = chi2q(-2.0 * ln_f, dof);
        let s = chi2q(-2.0 * ln_1f, dof);
        let p = (1.0 + h - s) / 2.0;
        Some(if p.is_finite() { p.clamp(0.0, 1.0) } else { 0.5 })
    }

    /// Write the model as text: a header line `sluice-bayes 3 <nspam> <nham>`, then one `<spam>\t<ham>\t<token>`
    /// line per token, sorted by token, then the n-gram classifier's section ([`Ngram::save`]). Tokens seen
    /// fewer than `min_count` times in total are left out.
    pub fn save(&self, w: &mut impl Write, min_count: u32) -> std::io::Result<()> {
        writeln!(w, "{MAGIC} {VERSION} {} {}", self.nspam, self.nham)?;
        let mut entries: Vec<(&String, &(u32, u32))> = self
            .tokens
            .iter()
            .filter(|(token, (s, h))| {
                u64::from(*s) + u64::from(*h) >= u64::from(min_count)
                    && !token.is_empty()
                    && !token.contains(['\t', '\n', '\r'])
            })
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (token, (s, h)) in entries {
            writeln!(w, "{s}\t{h}\t{token}")?;
        }
        self.ngram.save(w)?;
        w.flush()
    }

    /// Read a model written by [`Model::save`]. Errors name the 1-based line number.
    pub fn load(r: &mut impl BufRead) -> Result<Model, BayesError> {
        let mut model = Model::new();
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        let mut header_seen = false;
        // Weight lines of the n-gram section still to read.
        let mut weights_left: Option<usize> = None;
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            line_no += 1;
            let format_err = |what: String| BayesError::Format { line: line_no, what };
            let line = std::str::from_utf8(&buf).map_err(|_| format_err("not valid UTF-8".to_string()))?;
            let line = line.strip_suffix('\n').unwrap_or(line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !header_seen {
                let fields: Vec<&str> = line.split(' ').collect();
                match fields.as_slice() {
                    [magic, version, nspam, nham] if *magic == MAGIC => {
                        if !VERSIONS_READ.contains(version) {
                            return Err(format_err(format!(
                                "unsupported version {version:?} (expected {VERSION:?}; retrain the model with \
                                 `sluice learn`)"
                            )));
                        }
                        model.nspam = nspam
                            .parse()
                            .map_err(|_| format_err(format!("bad spam count {nspam:?}")))?;
                        model.nham = nham
                            .parse()
                            .map_err(|_| format_err(format!("bad ham count {nham:?}")))?;
                    }
                    _ => return Err(format_err(format!("expected \"{MAGIC} {VERSION} <nspam> <nham>\""))),
                }
                header_seen = true;
                continue;
            }
            if let Some(left) = &mut weights_left {
                if *left == 0 {
                    return Err(format_err("more weight lines than the ngram line said".to_string()));
                }
                model.ngram.parse_weight(line).map_err(format_err)?;
                *left -= 1;
                continue;
            }
            if let Some(rest) = line.strip_prefix(ngram::SECTION).and_then(|r| r.strip_prefix(' ')) {
                let (n, entries) = Ngram::parse_header(rest).map_err(format_err)?;
                model.ngram = n;
                weights_left = Some(entries);
                continue;
            }
            let mut fields = line.splitn(3, '\t');
            let (Some(spam), Some(ham), Some(token)) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format_err("expected \"<spam>\\t<ham>\\t<token>\"".to_string()));
            };
            let spam: u32 = spam
                .parse()
                .map_err(|_| format_err(format!("bad spam count {spam:?}")))?;
            let ham: u32 = ham.parse().map_err(|_| format_err(format!("bad ham count {ham:?}")))?;
            if token.is_empty() {
                return Err(format_err("empty token".to_string()));
            }
            if token.contains('\t') {
                return Err(format_err("token contains a tab".to_string()));
            }
            if model.tokens.insert(token.to_string(), (spam, ham)).is_some() {
                return Err(format_err(format!("duplicate token {token:?}")));
            }
        }
        if !header_seen {
            return Err(BayesError::Format {
                line: 1,
                what: "empty model file".to_string(),
            });
        }
        if let Some(left @ 1..) = weights_left {
            return Err(BayesError::Format {
                line: line_no,
                what: format!("the file ends {left} weight lines early"),
            });
        }
        // Built now rather than at the first message.
        model.index();
        Ok(model)
    }
}

/// Survival function of the chi-square distribution, Q(x2 | v), for even degrees of freedom `v`
/// (series form as in SpamBayes' `chi2Q`).
fn chi2q(x2: f64, v: usize) -> f64 {
    if !x2.is_finite() || x2 <= 0.0 {
        return if x2.is_nan() || x2 <= 0.0 { 1.0 } else { 0.0 };
    }
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..v / 2 {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

#[cfg(test)]
mod tests;
