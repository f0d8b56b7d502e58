//! The token sink: tokens are hashed into a fixed open-addressing table as
//! they are made (duplicates dropped, at most `MAX_TOKENS`), with no
//! allocation per token.

use super::*;

/// Number of slots of [`Sink`]'s table: a power of two, more than twice [`MAX_TOKENS`], so the table never
/// needs to grow and stays sparse (short probe sequences).
pub(super) const SLOTS: usize = 8192;
const _: () = assert!(SLOTS.is_power_of_two() && SLOTS > 2 * MAX_TOKENS);

/// Collects unique tokens up to [`MAX_TOKENS`].
///
/// Tokens are built in a reused scratch buffer ([`Sink::push_with`]) and only appended to `text` the first time
/// they are seen, so no token costs an allocation of its own. Deduplication uses an open-addressing hash table of
/// token indices (linear probing, [`SLOTS`] slots): each token is stored once, in `text`.
pub(super) struct Sink {
    /// The tokens, one after the other.
    pub(super) text: String,
    /// Where each token of `text` ends.
    pub(super) ends: Vec<u32>,
    /// Hash of each token of `out`, at the same index (compared before the strings).
    pub(super) hashes: Vec<u64>,
    /// `index + 1` of a token of `out`, or 0 for an empty slot; [`SLOTS`] of them.
    pub(super) slots: Vec<u32>,
    /// Per-process random seed of [`token_hash`].
    pub(super) seed: u64,
    /// Scratch buffer the next token is built in.
    pub(super) buf: String,
    /// Scratch buffer for skip tokens.
    pub(super) skip: String,
    /// Scratch buffers of [`text_tokens`].
    pub(super) words: WordBufs,
    /// Scratch buffer for the lowercased text of [`url_tokens`].
    pub(super) url_lower: String,
    /// Scratch buffer for the text of an HTML part.
    pub(super) html_text: String,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            text: String::with_capacity(8192),
            ends: Vec::with_capacity(512),
            hashes: Vec::with_capacity(512),
            slots: vec![0; SLOTS],
            seed: FastState::default().hash_one(0x70c3_u64),
            buf: String::with_capacity(64),
            skip: String::with_capacity(64),
            words: WordBufs::default(),
            url_lower: String::new(),
            html_text: String::new(),
        }
    }
}

impl Sink {
    /// Empty the sink for the next message (keeping its allocations, unless a huge message made them large).
    pub(super) fn reset(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.hashes.clear();
        self.slots.fill(0);
        for text in [&mut self.url_lower, &mut self.html_text] {
            if text.capacity() > 64 * 1024 {
                *text = String::new();
            }
        }
    }

    pub(super) fn full(&self) -> bool {
        self.ends.len() >= MAX_TOKENS
    }

    /// Add a token; over-long tokens become skip tokens.
    pub(super) fn push(&mut self, token: &str) {
        if self.full() || token.is_empty() {
            return;
        }
        match clean(token) {
            Cow::Borrowed(token) => self.push_clean(token),
            Cow::Owned(token) => self.push_clean(&token),
        }
    }

    /// [`Sink::push`] of a token known to hold no control characters (nothing to clean).
    pub(super) fn push_clean(&mut self, token: &str) {
        if self.full() || token.is_empty() {
            return;
        }
        if token.len() > MAX_TOKEN_LEN {
            self.push_skip(token.chars(), token.len());
        } else {
            self.insert(token);
        }
    }

    /// The skip token of an over-long token of `len` bytes that starts with `chars`.
    fn push_skip(&mut self, chars: impl Iterator<Item = char>, len: usize) {
        let mut skip = std::mem::take(&mut self.skip);
        skip.clear();
        skip.push_str("sk:");
        skip.extend(chars.take(8));
        skip.push(':');
        push_decimal(&mut skip, bucket_len(len));
        self.insert(&skip);
        self.skip = skip;
    }

    /// Add a derived token (pair, shape); over-long ones are dropped.
    pub(super) fn push_short(&mut self, token: &str) {
        if self.full() || token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return;
        }
        match clean(token) {
            Cow::Borrowed(token) => self.insert(token),
            Cow::Owned(token) => self.insert(&token),
        }
    }

    /// [`Sink::push_short`] of a token known to hold no control characters.
    pub(super) fn push_short_clean(&mut self, token: &str) {
        if self.full() || token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return;
        }
        self.insert(token);
    }

    /// [`Sink::push`] of the token `build` writes into the (cleared) scratch buffer. Nothing is built once the
    /// sink is full.
    pub(super) fn push_with(&mut self, build: impl FnOnce(&mut String)) {
        self.build(build, Sink::push);
    }

    /// [`Sink::push_short`] of the token `build` writes into the (cleared) scratch buffer.
    pub(super) fn push_short_with(&mut self, build: impl FnOnce(&mut String)) {
        self.build(build, Sink::push_short);
    }

    /// [`Sink::push`] of `prefix + rest`.
    pub(super) fn push2(&mut self, prefix: &str, rest: &str) {
        self.push_with(|b| {
            b.push_str(prefix);
            b.push_str(rest);
        });
    }

    /// [`Sink::push_short`] of `prefix + rest`.
    pub(super) fn push_short2(&mut self, prefix: &str, rest: &str) {
        self.push_short_with(|b| {
            b.push_str(prefix);
            b.push_str(rest);
        });
    }

    /// [`Sink::push_short`] of `prefix` and the [`shape`] of `s` (at most `max` symbols).
    pub(super) fn push_shape(&mut self, prefix: &str, s: &str, max: usize) {
        self.push_short_with(|b| {
            b.push_str(prefix);
            shape_into(b, s, max);
        });
    }

    /// [`Sink::push_clean`] of `prefix + rest`, for words: alphanumerics and joiners are never control characters
    /// (and neither are their lowercase forms), so cleaning would not change them.
    pub(super) fn push_word(&mut self, prefix: &str, rest: &str) {
        let len = prefix.len() + rest.len();
        if len > MAX_TOKEN_LEN {
            // Its skip token, without copying the whole word first.
            if !self.full() {
                self.push_skip(prefix.chars().chain(rest.chars()), len);
            }
            return;
        }
        self.build(
            |b| {
                b.push_str(prefix);
                b.push_str(rest);
            },
            Sink::push_clean,
        );
    }

    pub(super) fn build(&mut self, build: impl FnOnce(&mut String), add: fn(&mut Sink, &str)) {
        if self.full() {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        build(&mut buf);
        add(self, &buf);
        self.buf = buf;
    }

    pub(super) fn insert(&mut self, token: &str) {
        let hash = token_hash(self.seed, token.as_bytes());
        let mut pos = hash as usize & (SLOTS - 1);
        loop {
            match self.slots[pos] {
                0 => break,
                slot => {
                    let index = slot as usize - 1;
                    if self.hashes[index] == hash && self.token(index) == token {
                        return;
                    }
                }
            }
            pos = (pos + 1) & (SLOTS - 1);
        }
        // First sight: the token is appended to the others (no allocation of its own).
        self.slots[pos] = self.ends.len() as u32 + 1;
        self.text.push_str(token);
        self.ends.push(self.text.len() as u32);
        self.hashes.push(hash);
    }

    /// Token `index` of those collected.
    pub(super) fn token(&self, index: usize) -> &str {
        let start = index
            .checked_sub(1)
            .and_then(|i| self.ends.get(i))
            .map_or(0, |&e| e as usize);
        let end = self.ends.get(index).map_or(start, |&e| e as usize);
        self.text.get(start..end).unwrap_or("")
    }

    /// The tokens collected, copied out (the sink keeps its buffers for the next message).
    pub(super) fn collected(&self) -> Tokens {
        Tokens {
            text: self.text.clone(),
            ends: self.ends.clone(),
        }
    }
}

/// Hash of a token for [`Sink`]'s table: multiply-rotate over 8-byte words, as FxHash and the classifier's
/// `FastHasher`, but reading the last (partial) word with overlapping loads instead of copying it into a
/// zero-padded buffer, and finishing with one folded 128-bit multiply. Keyed with a per-process random seed.
pub(super) fn token_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        u64::from_le_bytes(w)
    };
    let half = |b: &[u8]| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[..4]);
        u64::from(u32::from_le_bytes(w))
    };
    let len = bytes.len();
    let mut h = seed ^ (len as u64).wrapping_mul(K);
    let mut rest = bytes;
    while rest.len() > 8 {
        h = (h.rotate_left(26) ^ word(rest)).wrapping_mul(K);
        rest = &rest[8..];
    }
    // The last 1..=8 bytes (the tail of a longer token may overlap the previous word: the length is hashed).
    let tail = if len >= 8 {
        word(&bytes[len - 8..])
    } else if len >= 4 {
        half(bytes) | half(&bytes[len - 4..]) << 32
    } else if len > 0 {
        u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16
    } else {
        0
    };
    let full = u128::from((h.rotate_left(26) ^ tail).wrapping_mul(K)) * u128::from(K);
    (full as u64) ^ ((full >> 64) as u64)
}
