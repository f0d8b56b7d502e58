//! The second classifier: online logistic regression over the octet
//! 4-grams of a message's first few kilobytes, as the best filters of the
//! TREC spam tracks did (Goodman and Yih; Cormack's and Sculley's online
//! filters). It reads octets, not words, so it needs no tokenizer and sees
//! what word tokens lose: obfuscated spellings, markup, encodings and the
//! shape of the header section. It is discriminative, where the Bayes
//! model counts: the two disagree on different messages, and the whole
//! score gains from both (docs/SPAM-QUALITY.md).
//!
//! The weights live in the model file beside the Bayes counts
//! ([`super::bayes::Model`]). Learning is online: each batch given to
//! [`Ngram::train`] is visited a few times in a fixed shuffled order, so
//! the same messages learned in the same batches give the same weights.
//!
//! A regression learns from both classes at once or not at all: fed one
//! class alone (a user moving spam into Junk, one message at a time), the
//! weights that every message shares drift towards that class until all
//! mail looks like it. So a batch changes the weights only when it holds
//! at least [`MIN_EACH`] spam and as many ham (`sluice learn` runs such as
//! a nightly `--rebuild` from the users' folders); smaller or one-sided
//! batches (IMAPSieve, the daemon's learn) change the Bayes counts only.
//! Unlike the counts, forgetting is not exact: [`Ngram::untrain`] pulls
//! each message's own score back to neutral.

use std::borrow::Borrow;
use std::io::Write;

/// Octets of each message read (headers first, without Received and the
/// headers added along the way, then the body).
pub const PREFIX: usize = 3000;
/// log2 of the number of weights: 2^20 (4 MiB of f32).
const BITS: u32 = 20;
const DIM: usize = 1 << BITS;
/// The learning rate of each step.
const RATE: f32 = 0.02;
/// Passes over a batch when learning it.
const EPOCHS: usize = 5;
/// Spam and ham (each) a batch needs for the weights to change.
pub const MIN_EACH: usize = 10;

/// Whether a batch holds at least [`MIN_EACH`] of each class.
fn balanced<F>(batch: &[(F, bool)]) -> bool {
    let spam = batch.iter().filter(|(_, s)| *s).count();
    spam >= MIN_EACH && batch.len() - spam >= MIN_EACH
}

thread_local! {
    /// [`Features::of`]'s bitmap of the indices seen, all zero between calls.
    static SEEN: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A message's features: the distinct weight indices of its 4-grams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Features(Vec<u32>);

impl Features {
    /// The features of a raw message, in the order they first occur.
    pub fn of(raw: &[u8]) -> Features {
        let text = prefix(raw);
        let mut f = Vec::with_capacity(text.len());
        // Distinct indices through a bitmap of all the weights (128 KiB per
        // thread, cleared bit by bit afterwards): a sort of the ~3,000
        // indices cost four times as much as the rest.
        SEEN.with_borrow_mut(|seen| {
            seen.resize(DIM / 64, 0);
            for w in text.windows(4) {
                let i = u32::from_le_bytes([w[0], w[1], w[2], w[3]]).wrapping_mul(0x9e37_79b1) >> (32 - BITS);
                let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
                if seen[word] & bit == 0 {
                    seen[word] |= bit;
                    f.push(i);
                }
            }
            for &i in &f {
                seen[(i / 64) as usize] = 0;
            }
        });
        Features(f)
    }
}

impl Features {
    /// The features packed for a learning batch ([`Packed`]).
    pub fn pack(&self) -> Packed {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let mut out = Vec::with_capacity(sorted.len() * 2);
        let mut prev = 0;
        for i in sorted {
            let mut d = i - prev;
            prev = i;
            while d >= 0x80 {
                out.push((d as u8) | 0x80);
                d >>= 7;
            }
            out.push(d as u8);
        }
        Packed(out.into_boxed_slice())
    }
}

/// A message's features as a learning batch keeps them until it is
/// learned: the indices in ascending order, each stored as its distance
/// from the one before in LEB128 (about 2 octets an index instead of 4 and
/// no spare capacity: half or less of what the unpacked lists took). The
/// order does not matter to learning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packed(Box<[u8]>);

impl Packed {
    /// The indices, ascending, into `out` (cleared first).
    fn unpack_into(&self, out: &mut Vec<u32>) {
        out.clear();
        let (mut prev, mut d, mut shift) = (0u32, 0u32, 0);
        for &b in self.0.iter() {
            d |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                prev = prev.wrapping_add(d);
                out.push(prev);
                (d, shift) = (0, 0);
            } else {
                shift = (shift + 7).min(28);
            }
        }
    }

    /// The octets it takes.
    pub fn size(&self) -> usize {
        self.0.len()
    }
}

/// Headers that servers on the way (ours among them) and the final delivery
/// add, beside the tokenizer's ignored ones: a message learned from a
/// Maildir has them, the same message in the SMTP session does not.
const ADDED_ON_THE_WAY: &[&str] = &[
    "Received",
    "Return-Path",
    "Authentication-Results",
    "Received-SPF",
    "ARC-Seal",
    "ARC-Message-Signature",
    "ARC-Authentication-Results",
];

/// The first [`PREFIX`] octets of the message without its Received headers
/// and the headers added along the way (ours among them), which say how it
/// travelled rather than what it is.
fn prefix(raw: &[u8]) -> Vec<u8> {
    let raw = super::tokenize::skip_mbox_from(raw);
    let mut out = Vec::with_capacity(PREFIX.min(raw.len()));
    let mut rest = raw;
    let mut keep = true;
    // The header section, one line at a time; a folded line goes with its field.
    while !rest.is_empty() && out.len() < PREFIX {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        rest = &rest[end..];
        if line == b"\n" || line == b"\r\n" {
            out.extend_from_slice(line);
            break;
        }
        if !matches!(line[0], b' ' | b'\t') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = std::str::from_utf8(name).unwrap_or_default().trim();
            keep = !ADDED_ON_THE_WAY.iter().any(|h| name.eq_ignore_ascii_case(h))
                && !super::tokenize::is_ignored_header(name);
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    let room = PREFIX.saturating_sub(out.len());
    out.extend_from_slice(&rest[..room.min(rest.len())]);
    out.truncate(PREFIX);
    out
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z.clamp(-30.0, 30.0)).exp())
}

/// The weights and how many messages of each class they were trained on.
#[derive(Clone)]
pub struct Ngram {
    weights: Vec<f32>,
    nspam: u32,
    nham: u32,
}

impl Default for Ngram {
    fn default() -> Self {
        Ngram {
            weights: vec![0.0; DIM],
            nspam: 0,
            nham: 0,
        }
    }
}

impl std::fmt::Debug for Ngram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.weights.iter().filter(|w| **w != 0.0).count();
        write!(
            f,
            "Ngram {{ nspam: {}, nham: {}, weights set: {entries} }}",
            self.nspam, self.nham
        )
    }
}

impl PartialEq for Ngram {
    /// Equal weights octet for octet.
    fn eq(&self, other: &Self) -> bool {
        self.nspam == other.nspam
            && self.nham == other.nham
            && self
                .weights
                .iter()
                .zip(&other.weights)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for Ngram {}

impl Ngram {
    /// Messages learned (less those forgotten), spam and ham.
    pub fn counts(&self) -> (u32, u32) {
        (self.nspam, self.nham)
    }

    fn margin(&self, f: &[u32]) -> f32 {
        f.iter().map(|&i| self.weights[i as usize]).sum()
    }

    /// The spam probability of a message.
    pub fn classify(&self, f: &Features) -> f64 {
        f64::from(sigmoid(self.margin(&f.0)))
    }

    fn step(&mut self, f: &[u32], toward: f32) {
        let g = RATE * (toward - sigmoid(self.margin(f)));
        for &i in f {
            self.weights[i as usize] += g;
        }
    }

    /// Learns a batch of messages (packed features, spam?): [`EPOCHS`]
    /// passes in an order shuffled by a fixed seed, so that spam and ham
    /// given one after the other are interleaved. A batch with fewer than
    /// [`MIN_EACH`] of either class is left out; returns whether it was learned.
    pub fn train<F: Borrow<Packed>>(&mut self, batch: &[(F, bool)]) -> bool {
        if !balanced(batch) {
            return false;
        }
        let mut order: Vec<usize> = (0..batch.len()).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ batch.len() as u64);
        let mut f = Vec::with_capacity(PREFIX);
        for _ in 0..EPOCHS {
            rng.shuffle(&mut order);
            for &i in &order {
                let (p, spam) = &batch[i];
                p.borrow().unpack_into(&mut f);
                self.step(&f, if *spam { 1.0 } else { 0.0 });
            }
        }
        self.count(batch, true);
        true
    }

    /// Forgets a batch learned before as the given classes: each message's
    /// score is pulled back towards neutral while it still leans the way it
    /// was learned (approximate, see the module's documentation). Like
    /// [`Ngram::train`], only a batch of at least [`MIN_EACH`] of each class;
    /// returns whether it was forgotten.
    pub fn untrain<F: Borrow<Packed>>(&mut self, batch: &[(F, bool)]) -> bool {
        if !balanced(batch) {
            return false;
        }
        let mut f = Vec::with_capacity(PREFIX);
        for _ in 0..EPOCHS {
            for (p, spam) in batch {
                p.borrow().unpack_into(&mut f);
                let p = sigmoid(self.margin(&f));
                if (*spam && p > 0.5) || (!*spam && p < 0.5) {
                    self.step(&f, 0.5);
                }
            }
        }
        self.count(batch, false);
        true
    }

    /// Adds (or takes away) the batch's messages to the counts of each class.
    fn count<F>(&mut self, batch: &[(F, bool)], add: bool) {
        let spam = u32::try_from(batch.iter().filter(|(_, s)| *s).count()).unwrap_or(u32::MAX);
        let ham = u32::try_from(batch.len()).unwrap_or(u32::MAX).saturating_sub(spam);
        if add {
            self.nspam = self.nspam.saturating_add(spam);
            self.nham = self.nham.saturating_add(ham);
        } else {
            self.nspam = self.nspam.saturating_sub(spam);
            self.nham = self.nham.saturating_sub(ham);
        }
    }

    /// Writes the `ngram` section of the model file: `ngram <nspam> <nham>
    /// <entries>`, then one `<index> <weight>` line per weight that is not 0.
    pub fn save(&self, w: &mut impl Write) -> std::io::Result<()> {
        let entries = self.weights.iter().filter(|w| **w != 0.0).count();
        writeln!(w, "{SECTION} {} {} {entries}", self.nspam, self.nham)?;
        for (i, x) in self.weights.iter().enumerate() {
            if *x != 0.0 {
                writeln!(w, "{i} {x}")?;
            }
        }
        Ok(())
    }

    /// Reads the section's header line (after [`SECTION`]): the counts and
    /// how many weight lines follow.
    pub fn parse_header(rest: &str) -> Result<(Ngram, usize), String> {
        let f: Vec<&str> = rest.split(' ').collect();
        let [nspam, nham, entries] = f.as_slice() else {
            return Err(format!("expected \"{SECTION} <nspam> <nham> <entries>\""));
        };
        let n = |s: &str| s.parse::<u32>().map_err(|_| format!("bad count {s:?}"));
        let entries = entries
            .parse::<usize>()
            .map_err(|_| format!("bad entry count {entries:?}"))?;
        if entries > DIM {
            return Err(format!("{entries} entries, more than the {DIM} weights"));
        }
        Ok((
            Ngram {
                weights: vec![0.0; DIM],
                nspam: n(nspam)?,
                nham: n(nham)?,
            },
            entries,
        ))
    }

    /// Reads one `<index> <weight>` line.
    pub fn parse_weight(&mut self, line: &str) -> Result<(), String> {
        let (i, x) = line
            .split_once(' ')
            .ok_or_else(|| "expected \"<index> <weight>\"".to_string())?;
        let i: usize = i.parse().map_err(|_| format!("bad index {i:?}"))?;
        let x: f32 = x.parse().map_err(|_| format!("bad weight {x:?}"))?;
        if i >= DIM || !x.is_finite() {
            return Err(format!("weight {i} {x} out of range"));
        }
        self.weights[i] = x;
        Ok(())
    }
}

/// The line that opens the n-gram section of a model file.
pub const SECTION: &str = "ngram";

/// splitmix64: a small fixed-seed generator for the training order.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(headers: &str, body: &str) -> Vec<u8> {
        format!("{headers}\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn received_and_added_headers_are_not_read() {
        let a = msg(
            "Return-Path: <a@a.example>\r\nReceived: from a.example by b.example\r\n\tid 1\r\n\
             Authentication-Results: b.example; spf=pass\r\nX-Spam-Score: 9.0\r\nSubject: hello",
            "body text",
        );
        let b = msg("Subject: hello", "body text");
        assert_eq!(prefix(&a), prefix(&b));
        assert_eq!(Features::of(&a), Features::of(&b));
        let c = msg("Subject: hello", "other text");
        assert_ne!(Features::of(&b), Features::of(&c));
    }

    #[test]
    fn features_are_the_distinct_4grams_each_once_and_calls_do_not_leak() {
        let raw = msg("Subject: abab abab", "abababab xyz xyz xyz abab");
        let reference = |raw: &[u8]| {
            let mut v: Vec<u32> = prefix(raw)
                .windows(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]).wrapping_mul(0x9e37_79b1) >> (32 - BITS))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let sorted = |f: Features| {
            let mut v = f.0;
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(Features::of(&raw)), reference(&raw));
        // The bitmap is clear again: the same message gives the same features,
        // and a message sharing 4-grams with the last one still gets them.
        assert_eq!(Features::of(&raw), Features::of(&raw));
        let other = msg("Subject: abab", "xyz");
        assert_eq!(sorted(Features::of(&other)), reference(&other));
        assert_eq!(Features::of(b"abc"), Features::default());
    }

    #[test]
    fn only_the_first_kilobytes_are_read() {
        let long = "x".repeat(PREFIX);
        let a = msg("Subject: s", &format!("{long}spam spam"));
        let b = msg("Subject: s", &format!("{long}ham ham"));
        assert_eq!(prefix(&a).len(), PREFIX);
        assert_eq!(Features::of(&a), Features::of(&b));
    }

    fn sample(i: usize, spam: bool) -> Features {
        let body = if spam {
            format!("Buy cheap pills now {i}, limited offer, click here")
        } else {
            format!("Minutes of meeting {i}: the build is green, see the agenda")
        };
        Features::of(&msg(&format!("Subject: note {i}"), &body))
    }

    fn batch(range: std::ops::Range<usize>) -> Vec<(Packed, bool)> {
        range
            .flat_map(|i| [(sample(i, true).pack(), true), (sample(i, false).pack(), false)])
            .collect()
    }

    #[test]
    fn packed_features_unpack_to_the_same_indices_in_fewer_octets() {
        let mut out = Vec::new();
        for raw in [
            msg("Subject: abab abab", "abababab xyz xyz xyz abab"),
            msg(
                "Subject: s",
                &"Some longer text, with words and 1234 numbers. ".repeat(80),
            ),
        ] {
            let f = Features::of(&raw);
            let mut sorted = f.0.clone();
            sorted.sort_unstable();
            let p = f.pack();
            p.unpack_into(&mut out);
            assert_eq!(out, sorted);
            // Three octets at most (distances below 2^21), two for a message of ~3,000 octets.
            let most = if sorted.len() > 1000 { 2 } else { 3 };
            assert!(
                p.size() <= most * sorted.len(),
                "{} octets for {} indices",
                p.size(),
                sorted.len()
            );
        }
        // The extremes of the index range, and an empty list.
        let f = Features(vec![(DIM - 1) as u32, 0, 127, 128, 16_383, 16_384]);
        f.pack().unpack_into(&mut out);
        assert_eq!(out, [0, 127, 128, 16_383, 16_384, (DIM - 1) as u32]);
        Features::default().pack().unpack_into(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn it_learns_to_tell_the_classes_apart_and_untraining_pulls_back() {
        let mut m = Ngram::default();
        assert!(m.train(&batch(0..20)));
        assert_eq!(m.counts(), (20, 20));
        let (s, h) = (m.classify(&sample(99, true)), m.classify(&sample(99, false)));
        assert!(s > 0.8 && h < 0.2, "spam {s}, ham {h}");
        let probe = batch(20..30);
        let before = m.classify(&sample(20, true));
        assert!(m.train(&probe));
        let learned = m.classify(&sample(20, true));
        assert!(learned > before, "{learned} > {before}");
        assert!(m.untrain(&probe));
        let forgot = m.classify(&sample(20, true));
        assert!(forgot < learned, "{forgot} < {learned}");
        assert_eq!(m.counts(), (20, 20));
    }

    #[test]
    fn a_one_sided_or_small_batch_leaves_the_weights_alone() {
        let mut m = Ngram::default();
        m.train(&batch(0..20));
        let before = m.clone();
        // Spam alone, however much of it: the drift this guards against.
        let spam: Vec<_> = (100..200).map(|i| (sample(i, true).pack(), true)).collect();
        assert!(!m.train(&spam));
        assert!(!m.untrain(&spam));
        // Nine of each: below the minimum.
        assert!(!m.train(&batch(200..209)));
        assert_eq!(m, before);
        assert!(m.train(&batch(200..210)));
        assert_ne!(m, before);
    }

    #[test]
    fn the_same_batches_give_the_same_weights_and_the_file_keeps_them() {
        let batch: Vec<_> = (0..12)
            .flat_map(|i| [(sample(i, true).pack(), true), (sample(i, false).pack(), false)])
            .collect();
        let (mut a, mut b) = (Ngram::default(), Ngram::default());
        a.train(&batch);
        b.train(&batch);
        assert_eq!(a, b);
        let mut out = Vec::new();
        a.save(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let head = lines.next().unwrap().strip_prefix("ngram ").unwrap();
        let (mut c, n) = Ngram::parse_header(head).unwrap();
        assert_eq!(n, lines.clone().count());
        for l in lines {
            c.parse_weight(l).unwrap();
        }
        assert_eq!(a, c);
        assert!(Ngram::parse_header("1 2").is_err());
        assert!(c.parse_weight("99999999 1").is_err());
        assert!(c.parse_weight("1 NaN").is_err());
    }
}
