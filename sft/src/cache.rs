//! The SFT directory's image-token cache (`image-tokens.bin`): the VQ codes of every image
//! tokenised, by how the picture was made (the file itself, or its Canny edges) and the
//! SHA-256 of the normalised file, for one image tokenizer. A rebuild (another mixture, more
//! tasks, another seed) encodes only the images the cache lacks: the VQ encoder is most of a
//! build's time. A cache of another tokenizer, or one that does not parse, is ignored (and
//! replaced), never trusted.
//!
//! Format: `CM3SFTIC`, u32 version (1), the tokenizer's SHA-256 (64 hex bytes), u32 codes per
//! image, then records of u8 kind (0 file, 1 Canny edges), 64 hex bytes of SHA-256 and the
//! codes as u32, all little-endian.
use std::collections::HashMap;
use std::path::Path;

use crate::error::Result;

const MAGIC: &[u8; 8] = b"CM3SFTIC";
const VERSION: u32 = 1;
/// Codes per image at most (4,096 × 4,096 pixels at f8 is 262,144).
const MAX_CODES: usize = 1 << 20;

/// How a picture was made from its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File = 0,
    Canny = 1,
}

#[derive(Debug, Default)]
pub struct ImageCache {
    tokenizer: String,
    per: usize,
    entries: HashMap<(Kind, String), Vec<u32>>,
}

impl ImageCache {
    pub fn new(tokenizer_sha256: &str, per: usize) -> Self {
        Self {
            tokenizer: tokenizer_sha256.to_string(),
            per,
            entries: HashMap::new(),
        }
    }

    /// The cache at `path` if it is this tokenizer's and reads whole; an empty one otherwise.
    pub fn load(path: &Path, tokenizer_sha256: &str, per: usize) -> Self {
        let mut cache = Self::new(tokenizer_sha256, per);
        let Ok(bytes) = std::fs::read(path) else {
            return cache;
        };
        match parse(&bytes, tokenizer_sha256, per) {
            Some(entries) => cache.entries = entries,
            None => {
                tracing::warn!(cache = %path.display(), "image-token cache of another tokenizer or unreadable: ignored")
            }
        }
        cache
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, kind: Kind, sha256: &str) -> Option<&[u32]> {
        self.entries
            .get(&(kind, sha256.to_string()))
            .map(Vec::as_slice)
    }

    /// Codes of the wrong length (another tokenizer) are not kept.
    pub fn insert(&mut self, kind: Kind, sha256: &str, codes: &[u32]) {
        if codes.len() == self.per && sha256.len() == 64 {
            self.entries
                .insert((kind, sha256.to_string()), codes.to_vec());
        }
    }

    /// Take every entry of `other` (a cache of the same tokenizer, e.g. a worker's); returns
    /// how many it held.
    pub fn absorb(&mut self, other: ImageCache) -> usize {
        let n = other.entries.len();
        if other.tokenizer == self.tokenizer && other.per == self.per {
            self.entries.extend(other.entries);
        }
        n
    }

    /// A cache of the same tokenizer holding only the entries `keys` names (those present).
    pub fn subset<'a>(&self, keys: impl IntoIterator<Item = (Kind, &'a str)>) -> Self {
        let mut out = Self::new(&self.tokenizer, self.per);
        for (kind, sha) in keys {
            if let Some(codes) = self.get(kind, sha) {
                out.insert(kind, sha, codes);
            }
        }
        out
    }

    /// Whether the file at `path` is a cache of this format (of any tokenizer).
    pub fn is_cache_file(path: &Path) -> bool {
        use std::io::Read;
        let mut magic = [0u8; 8];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == MAGIC
    }

    /// Write the cache atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut b = Vec::with_capacity(80 + self.entries.len() * (65 + 4 * self.per));
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(self.tokenizer.as_bytes());
        b.extend_from_slice(&(self.per as u32).to_le_bytes());
        let mut keys: Vec<&(Kind, String)> = self.entries.keys().collect();
        keys.sort_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
        for k in keys {
            b.push(k.0 as u8);
            b.extend_from_slice(k.1.as_bytes());
            for c in &self.entries[k] {
                b.extend_from_slice(&c.to_le_bytes());
            }
        }
        cm3_core::fsio::write_atomic(path, &b, "sft")?;
        Ok(())
    }
}

fn parse(b: &[u8], tokenizer: &str, per: usize) -> Option<HashMap<(Kind, String), Vec<u32>>> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    if b.get(..8)? != MAGIC || u32_at(8)? != VERSION || b.get(12..76)? != tokenizer.as_bytes() {
        return None;
    }
    let stored = u32_at(76)? as usize;
    if stored != per || per == 0 || per > MAX_CODES {
        return None;
    }
    let record = 1 + 64 + 4 * per;
    let body = b.get(80..)?;
    if body.len() % record != 0 {
        return None;
    }
    let mut out = HashMap::with_capacity(body.len() / record);
    for r in body.chunks_exact(record) {
        let kind = match r[0] {
            0 => Kind::File,
            1 => Kind::Canny,
            _ => return None,
        };
        let sha = std::str::from_utf8(&r[1..65]).ok()?.to_string();
        let codes = r[65..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert((kind, sha), codes);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_round_trips_and_another_tokenizers_is_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("image-tokens.bin");
        let (tok, other) = ("a".repeat(64), "b".repeat(64));
        let sha = "c".repeat(64);
        let mut c = ImageCache::new(&tok, 4);
        c.insert(Kind::File, &sha, &[1, 2, 3, 4]);
        c.insert(Kind::Canny, &sha, &[5, 6, 7, 8]);
        c.insert(Kind::File, &"d".repeat(64), &[1, 2]);
        assert_eq!(c.len(), 2, "codes of the wrong length are not kept");
        c.write(&path).expect("write");
        let back = ImageCache::load(&path, &tok, 4);
        assert_eq!(back.get(Kind::File, &sha), Some(&[1, 2, 3, 4][..]));
        assert_eq!(back.get(Kind::Canny, &sha), Some(&[5, 6, 7, 8][..]));
        assert!(ImageCache::load(&path, &other, 4).is_empty());
        assert!(ImageCache::load(&path, &tok, 16).is_empty());
        // A torn file is ignored, not half read.
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        assert!(ImageCache::load(&path, &tok, 4).is_empty());
    }
}
