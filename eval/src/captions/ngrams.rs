//! Words and n-grams (n = 1..4) of tokenised captions, shared by BLEU and CIDEr-D.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The marker for "no word / no prefix".
pub(crate) const NONE: u32 = u32::MAX;
/// BLEU-4 and CIDEr-D both use 1..4-grams.
pub(crate) const N: usize = 4;

/// A small multiplicative hasher (FxHash's step): the keys are word and n-gram ids, and hashing
/// them with SipHash would dominate the n-gram counting.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        // The table indexes with the low bits, which a product takes from the key's low bits
        // only; rotating brings the well-mixed high bits down (as rustc-hash 2 does).
        self.0.rotate_left(26)
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Word ids for the words of one evaluation.
#[derive(Debug, Default)]
pub(crate) struct Vocab {
    ids: FxMap<String, u32>,
}

impl Vocab {
    pub(crate) fn id(&mut self, word: &str) -> u32 {
        if let Some(&id) = self.ids.get(word) {
            return id;
        }
        let id = u32::try_from(self.ids.len()).unwrap_or(NONE - 1);
        self.ids.insert(word.to_string(), id);
        id
    }

    /// Python's `s.split()` (runs of `str.isspace` characters), as ids.
    pub(crate) fn split(&mut self, s: &str) -> Vec<u32> {
        s.split(python_isspace)
            .filter(|w| !w.is_empty())
            .map(|w| self.id(w))
            .collect()
    }

    /// Python's `s.split(" ")` (ROUGE-L's tokens: empty strings kept), as ids.
    pub(crate) fn split_space(&mut self, s: &str) -> Vec<u32> {
        s.split(' ').map(|w| self.id(w)).collect()
    }
}

/// N-gram ids: an n-gram is its (n-1)-gram prefix's id plus its last word, so each is found with
/// one integer-keyed lookup; ids are dense, so document frequencies and idf are plain vectors.
#[derive(Debug, Default)]
pub(crate) struct Grams {
    ids: FxMap<u64, u32>,
    /// The order (1..=4) of each n-gram id.
    pub(crate) order: Vec<u8>,
}

impl Grams {
    fn intern(&mut self, prefix: u32, word: u32, order: u8) -> u32 {
        let key = (u64::from(prefix) << 32) | u64::from(word);
        let next = u32::try_from(self.order.len()).unwrap_or(NONE - 1);
        let id = *self.ids.entry(key).or_insert(next);
        if id == next {
            self.order.push(order);
        }
        id
    }

    /// `precook`: the n-gram counts of one caption.
    pub(crate) fn counts(&mut self, words: &[u32]) -> Counts {
        let mut all = Vec::with_capacity(words.len() * N);
        for i in 0..words.len() {
            let mut prefix = NONE;
            for (k, &word) in words[i..].iter().take(N).enumerate() {
                prefix = self.intern(prefix, word, k as u8 + 1);
                all.push(prefix);
            }
        }
        all.sort_unstable();
        let mut grams: Vec<(u32, u32)> = Vec::with_capacity(all.len());
        for g in all {
            match grams.last_mut() {
                Some((last, count)) if *last == g => *count += 1,
                _ => grams.push((g, 1)),
            }
        }
        Counts {
            grams,
            words: words.len(),
        }
    }
}

/// The n-gram counts of one caption, sorted by n-gram id, and its length in words.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    pub(crate) grams: Vec<(u32, u32)>,
    pub(crate) words: usize,
}

/// Python's `str.isspace` (what `split()` splits on): Unicode White_Space plus the four
/// separators U+001C..U+001F, which Python counts and Rust does not.
pub(crate) fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\x1C'..='\x1F').contains(&c)
}
