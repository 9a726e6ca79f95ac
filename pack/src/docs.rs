//! Every pair's tokens on disk, found by pair id: what `cm3 pack` reads a retrieved document
//! from. A retrieved document may live in any `tokens/` shard, so packing one shard needs random
//! access to all of them; holding every pair's tokens in a hash map made packing's memory grow
//! with the dataset. The store is two anonymous temporary files beside the output (unlinked as
//! soon as they are created, so a crash leaves nothing behind): the tokens, concatenated, and an
//! open-addressing table id → (offset, lengths). Both are read and written with positioned I/O,
//! not memory maps, so they live in the page cache, never in the process's resident memory.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cm3_core::tokens::TokenRow;

use crate::error::{PackError, Result};

/// Bytes of one table slot: id, offset + 1 (0: empty), text length, image length.
const SLOT: u64 = 24;
/// A document longer than this many tokens is refused (the paper's documents are about 1,100).
const MAX_DOC_TOKENS: u64 = 1 << 24;

/// Pair id → its text and image tokens, on disk.
#[derive(Debug)]
pub struct DocStore {
    dir: PathBuf,
    tokens: BufWriter<File>,
    /// Tokens written so far (u32 units).
    written: u64,
    table: File,
    /// Slots in the table: a power of two at least twice the pairs it was made for.
    slots: u64,
    len: u64,
}

impl DocStore {
    /// An empty store for up to `pairs` pairs, its files in `dir`.
    pub fn create(dir: &Path, pairs: u64) -> Result<Self> {
        let io = |op: &'static str| {
            let dir = dir.to_path_buf();
            move |source| PackError::Io {
                op,
                path: dir,
                source,
            }
        };
        let slots = pairs
            .max(1)
            .checked_mul(2)
            .and_then(u64::checked_next_power_of_two)
            .ok_or_else(|| PackError::Invalid(format!("{pairs} pairs: too many for the store")))?;
        let table = tempfile::tempfile_in(dir).map_err(io("creating a temporary file in"))?;
        table
            .set_len(slots * SLOT)
            .map_err(io("sizing a temporary file in"))?;
        let tokens = tempfile::tempfile_in(dir).map_err(io("creating a temporary file in"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tokens: BufWriter::with_capacity(1 << 20, tokens),
            written: 0,
            table,
            slots,
            len: 0,
        })
    }

    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> PackError + use<> {
        let path = self.dir.clone();
        move |source| PackError::Io { op, path, source }
    }

    fn home(&self, id: u64) -> u64 {
        cm3_core::rng::SplitMix64::new(id).next_u64() & (self.slots - 1)
    }

    fn slot(&self, i: u64) -> Result<[u8; SLOT as usize]> {
        let mut s = [0u8; SLOT as usize];
        self.table
            .read_exact_at(&mut s, i * SLOT)
            .map_err(self.io("reading the document table in"))?;
        Ok(s)
    }

    /// Adds a pair (a pair added twice keeps its last tokens, as a map would).
    pub fn insert(&mut self, row: &TokenRow) -> Result<()> {
        let (t, m) = (row.text.len() as u64, row.image.len() as u64);
        if t + m > MAX_DOC_TOKENS {
            return Err(PackError::Invalid(format!(
                "pair {:016x}: {} tokens, more than a document may hold ({MAX_DOC_TOKENS})",
                row.id,
                t + m
            )));
        }
        let mut i = self.home(row.id);
        loop {
            let s = self.slot(i)?;
            let id = u64::from_le_bytes(s[..8].try_into().unwrap_or_default());
            let used = s[8..16] != [0; 8];
            if !used || id == row.id {
                if !used {
                    // Half full at most: probing stays short and always ends.
                    if (self.len + 1) * 2 > self.slots {
                        return Err(PackError::Invalid(format!(
                            "more tokenised pairs than the manifest records ({}): the dataset \
                             changed while packing; run `cm3 pack` again",
                            self.slots / 2
                        )));
                    }
                    self.len += 1;
                }
                let mut rec = [0u8; SLOT as usize];
                rec[..8].copy_from_slice(&row.id.to_le_bytes());
                rec[8..16].copy_from_slice(&(self.written + 1).to_le_bytes());
                rec[16..20].copy_from_slice(&(t as u32).to_le_bytes());
                rec[20..].copy_from_slice(&(m as u32).to_le_bytes());
                self.table
                    .write_all_at(&rec, i * SLOT)
                    .map_err(self.io("writing the document table in"))?;
                break;
            }
            i = (i + 1) & (self.slots - 1);
        }
        for &x in row.text.iter().chain(&row.image) {
            self.tokens
                .write_all(&x.to_le_bytes())
                .map_err(self.io("writing document tokens in"))?;
        }
        self.written += t + m;
        Ok(())
    }

    /// Makes what was inserted readable.
    pub fn finish(&mut self) -> Result<()> {
        self.tokens
            .flush()
            .map_err(self.io("writing document tokens in"))
    }

    /// Pairs stored.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A pair's text and image tokens (`None`: no such pair). Call [`DocStore::finish`] first.
    pub fn get(&self, id: u64) -> Result<Option<(Vec<u32>, Vec<u32>)>> {
        let mut i = self.home(id);
        loop {
            let s = self.slot(i)?;
            let offset = u64::from_le_bytes(s[8..16].try_into().unwrap_or_default());
            if offset == 0 {
                return Ok(None);
            }
            if u64::from_le_bytes(s[..8].try_into().unwrap_or_default()) == id {
                let t = u32::from_le_bytes(s[16..20].try_into().unwrap_or_default()) as usize;
                let m = u32::from_le_bytes(s[20..].try_into().unwrap_or_default()) as usize;
                let mut bytes = vec![0u8; (t + m) * 4];
                self.tokens
                    .get_ref()
                    .read_exact_at(&mut bytes, (offset - 1) * 4)
                    .map_err(self.io("reading document tokens in"))?;
                let mut ids = bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                let text: Vec<u32> = ids.by_ref().take(t).collect();
                return Ok(Some((text, ids.collect())));
            }
            i = (i + 1) & (self.slots - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The store answers as a hash map of the same rows does, absent ids included, with
        /// colliding homes (ids differing only above the table's bits) and re-inserted ids.
        #[test]
        fn the_store_answers_as_a_map(
            rows in prop::collection::vec(
                (0u64..64, prop::collection::vec(0u32..1000, 0..6), prop::collection::vec(0u32..1000, 0..9)),
                0..80,
            ),
            absent in prop::collection::vec(64u64..128, 0..8),
        ) {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let distinct = rows.iter().map(|r| r.0).collect::<std::collections::HashSet<_>>();
            let mut store = DocStore::create(dir.path(), distinct.len() as u64)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut map = HashMap::new();
            for (id, text, image) in &rows {
                // Spread over the high bits too, so homes collide.
                let id = id << 40 | id;
                store
                    .insert(&TokenRow { id, text: text.clone(), image: image.clone() })
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                map.insert(id, (text.clone(), image.clone()));
            }
            store.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(store.len(), map.len() as u64);
            for (id, want) in &map {
                let got = store.get(*id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got.as_ref(), Some(want));
            }
            for id in absent {
                let got = store.get(id << 40 | id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got, None);
            }
            // Nothing is left in the folder: the files were unlinked when made.
            prop_assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(1), 0);
        }
    }

    #[test]
    fn more_pairs_than_promised_is_an_error_not_a_loop() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| PackError::Invalid(e.to_string()))?;
        // Promised 1 pair: 2 slots, so the second distinct pair is over half full.
        let mut store = DocStore::create(dir.path(), 1)?;
        let row = |id| TokenRow {
            id,
            text: vec![1],
            image: vec![],
        };
        store.insert(&row(1))?;
        let err = store
            .insert(&row(2))
            .expect_err("two pairs where one was promised")
            .to_string();
        assert!(err.contains("more tokenised pairs"), "{err}");
        Ok(())
    }
}
