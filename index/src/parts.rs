//! A memory bank in parts: indexes of at most `part_rows` vectors each, so that building it holds
//! one part in memory, whatever the bank's size.
//!
//! The paper's bank holds every training pair; a bank larger than one machine's memory cannot
//! be one graph in memory. Like autofaiss's index parts, each part is a complete index of its own
//! kind (flat, HNSW or FAISS) over consecutive vectors; a search asks every part and keeps the
//! best `k` of their answers, which are each part's filtered best `k`, so the merge is exact over
//! what the parts return. A generation of a parted index is a folder per part
//! (`part-00000/`, ...) and `parts.json`; a part unchanged since the generation it was loaded
//! from is hard-linked, not written again.
//!
//! A part is in memory while it is being filled, or when [`MipsIndex::make_resident`] loaded
//! them all (the augment stage, which searches the bank many times); otherwise a search loads each
//! saved part in turn and lets it go.
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::files::{read_json, write_json};
use crate::spec::IndexSpec;
use crate::{Hit, MipsIndex, SearchParams, check_add, check_rows, load_index, new_index};

/// The list of parts in a generation folder.
pub const PARTS_META: &str = "parts.json";

/// The most parts one index may have (a bound on what `parts.json` may make cm3 open).
pub const MAX_PARTS: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartsMeta {
    dim: usize,
    part_rows: usize,
    /// Vectors held by each part, in order.
    parts: Vec<usize>,
}

/// The folder of part `i` in a generation folder.
pub fn part_name(i: usize) -> String {
    format!("part-{i:05}")
}

/// Whether a name in a generation folder is a part folder cm3 writes.
pub(crate) fn is_part_name(name: &str) -> bool {
    name.strip_prefix("part-")
        .is_some_and(|n| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug)]
struct Part {
    len: usize,
    /// In memory: the part being filled, or all of them once made resident.
    index: Option<Box<dyn MipsIndex>>,
    /// The folder holding exactly this part, while memory holds nothing newer: what a save
    /// links and a search loads.
    saved: Option<PathBuf>,
}

/// An index in parts of at most `part_rows` vectors.
#[derive(Debug)]
pub struct PartedIndex {
    spec: IndexSpec,
    dim: usize,
    part_rows: usize,
    parts: Vec<Part>,
    /// Where a part that fills up is written at once, to leave memory before the next commit.
    staging: Option<PathBuf>,
}

impl PartedIndex {
    /// A new, empty index whose parts are of kind `spec`.
    pub fn new(spec: IndexSpec, dim: usize, part_rows: usize) -> Result<Self> {
        if part_rows == 0 {
            return Err(IndexError::Invalid("part_rows must be at least 1".into()));
        }
        if dim == 0 {
            return Err(IndexError::Invalid("dimension 0".into()));
        }
        Ok(Self {
            spec,
            dim,
            part_rows,
            parts: Vec::new(),
            staging: None,
        })
    }

    /// The parted index saved in generation folder `dir`, with no part loaded yet.
    pub fn load(spec: IndexSpec, dir: &Path) -> Result<Self> {
        let path = dir.join(PARTS_META);
        let meta: PartsMeta = read_json(&path)?;
        let corrupt = |reason: String| IndexError::Corrupt {
            path: path.clone(),
            reason,
        };
        if meta.part_rows == 0 || meta.dim == 0 || meta.parts.len() > MAX_PARTS {
            return Err(corrupt(format!(
                "part_rows {}, dimension {}, {} parts",
                meta.part_rows,
                meta.dim,
                meta.parts.len()
            )));
        }
        let last = meta.parts.len().saturating_sub(1);
        let mut parts = Vec::with_capacity(meta.parts.len());
        for (i, &len) in meta.parts.iter().enumerate() {
            // Every part but the last is full, and none is empty or over-full.
            if len == 0 || len > meta.part_rows || (i < last && len != meta.part_rows) {
                return Err(corrupt(format!(
                    "part {i} holds {len} vectors in parts of {}",
                    meta.part_rows
                )));
            }
            let folder = dir.join(part_name(i));
            if !folder.is_dir() {
                return Err(corrupt(format!("{} is missing", folder.display())));
            }
            parts.push(Part {
                len,
                index: None,
                saved: Some(folder),
            });
        }
        Ok(Self {
            spec,
            dim: meta.dim,
            part_rows: meta.part_rows,
            parts,
            staging: None,
        })
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Parts held in memory now.
    pub fn resident_parts(&self) -> usize {
        self.parts.iter().filter(|p| p.index.is_some()).count()
    }

    /// Load a saved part, checked against what `parts.json` says it holds.
    fn load_part(&self, i: usize, folder: &Path) -> Result<Box<dyn MipsIndex>> {
        let index = load_index(&self.spec, folder)?;
        let want = self.parts[i].len;
        if index.len() != want || index.dim() != self.dim {
            return Err(IndexError::Corrupt {
                path: folder.to_path_buf(),
                reason: format!(
                    "part {i} holds {} vectors of dimension {}, {PARTS_META} says {want} of \
                     dimension {}",
                    index.len(),
                    index.dim(),
                    self.dim
                ),
            });
        }
        Ok(index)
    }

    /// The last part, in memory and with room: a new one when the last is full.
    fn part_to_fill(&mut self) -> Result<&mut Box<dyn MipsIndex>> {
        let i = match self.parts.last() {
            Some(p) if p.len < self.part_rows => self.parts.len() - 1,
            _ => {
                let mut index = new_index(&self.spec, self.dim)?;
                index.reserve(self.part_rows);
                self.parts.push(Part {
                    len: 0,
                    index: Some(index),
                    saved: None,
                });
                self.parts.len() - 1
            }
        };
        if self.parts[i].index.is_none() {
            let folder = self.parts[i].saved.clone().ok_or_else(|| lost_part(i))?;
            let mut loaded = self.load_part(i, &folder)?;
            loaded.reserve(self.part_rows - self.parts[i].len);
            self.parts[i].index = Some(loaded);
        }
        self.parts[i]
            .index
            .as_mut()
            .ok_or_else(|| IndexError::Invalid(format!("internal: part {i} is not in memory")))
    }
}

impl PartedIndex {
    /// Write the last part to the staging folder and let it leave memory, if it is full and a
    /// staging folder is set.
    fn stage_if_full(&mut self) -> Result<()> {
        let Some(staging) = self.staging.clone() else {
            return Ok(());
        };
        let i = self.parts.len().saturating_sub(1);
        let Some(part) = self.parts.get_mut(i) else {
            return Ok(());
        };
        if part.len < self.part_rows || part.saved.is_some() {
            return Ok(());
        }
        let Some(index) = part.index.take() else {
            return Ok(());
        };
        fs::create_dir_all(&staging).map_err(|e| IndexError::io("creating", &staging, e))?;
        let to = staging.join(part_name(i));
        // Left by an interrupted build of this index (the staging folder is this index's own).
        if to.exists() {
            fs::remove_dir_all(&to).map_err(|e| IndexError::io("removing", &to, e))?;
        }
        fs::create_dir(&to).map_err(|e| IndexError::io("creating", &to, e))?;
        index.save(&to, None)?;
        part.saved = Some(to);
        Ok(())
    }
}

/// A part neither in memory nor on disk: a bug in this module, reported rather than panicked on.
fn lost_part(i: usize) -> IndexError {
    IndexError::Invalid(format!("internal: part {i} is neither in memory nor saved"))
}

/// Best first: higher score, then lower id (so that the result does not depend on the parts'
/// order).
fn better(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.id.cmp(&b.id))
}

/// Merge per-part answers into `into`: per query, the `k` best. Each list is merged into a new
/// one of at most `k` hits (not appended, sorted and cut: a part's lists thousands long would
/// be held twice over).
fn merge_into(into: &mut [Vec<Hit>], from: Vec<Vec<Hit>>, k: usize) {
    for (acc, mut hits) in into.iter_mut().zip(from) {
        hits.sort_by(better);
        if acc.is_empty() {
            hits.truncate(k);
            *acc = hits;
            continue;
        }
        let mut merged = Vec::with_capacity(k.min(acc.len() + hits.len()));
        let (mut a, mut b) = (acc.iter().peekable(), hits.iter().peekable());
        while merged.len() < k {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if better(x, y).is_le() => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            match next {
                Some(h) => merged.push(*h),
                None => break,
            }
        }
        *acc = merged;
    }
}

/// Link (or, across file systems, copy) every file of folder `from` into the new folder `to`.
fn link_folder(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir(to).map_err(|e| IndexError::io("creating", to, e))?;
    for entry in fs::read_dir(from).map_err(|e| IndexError::io("listing", from, e))? {
        let entry = entry.map_err(|e| IndexError::io("listing", from, e))?;
        let src = entry.path();
        let md = entry
            .metadata()
            .map_err(|e| IndexError::io("stat", &src, e))?;
        if !md.is_file() {
            continue;
        }
        let dst = to.join(entry.file_name());
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(|e| IndexError::io("copying", &src, e))?;
        }
    }
    Ok(())
}

impl MipsIndex for PartedIndex {
    fn spec(&self) -> IndexSpec {
        self.spec.clone()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len).sum()
    }

    fn part_rows(&self) -> Option<usize> {
        Some(self.part_rows)
    }

    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        let rows = check_add("vectors added to the parted index", ids, vectors, self.dim)?;
        let dim = self.dim;
        let mut done = 0;
        while done < rows {
            let room = match self.parts.last() {
                Some(p) if p.len < self.part_rows => self.part_rows - p.len,
                _ => self.part_rows,
            };
            let n = room.min(rows - done);
            let part = self.part_to_fill()?;
            part.add(&ids[done..done + n], &vectors[done * dim..(done + n) * dim])?;
            if let Some(p) = self.parts.last_mut() {
                p.len += n;
                p.saved = None;
            }
            done += n;
            self.stage_if_full()?;
        }
        Ok(())
    }

    fn search_batch(&self, queries: &[f32], params: &SearchParams<'_>) -> Result<Vec<Vec<Hit>>> {
        let n = check_rows("queries", queries.len(), self.dim)?;
        let mut out = vec![Vec::new(); n];
        for (i, part) in self.parts.iter().enumerate() {
            let hits = match (&part.index, &part.saved) {
                (Some(index), _) => index.search_batch(queries, params)?,
                // Loaded for this search only: memory holds one saved part at a time.
                (None, Some(folder)) => self.load_part(i, folder)?.search_batch(queries, params)?,
                (None, None) => return Err(lost_part(i)),
            };
            merge_into(&mut out, hits, params.k);
        }
        Ok(out)
    }

    fn save(&self, dir: &Path, previous: Option<&Path>) -> Result<()> {
        for (i, part) in self.parts.iter().enumerate() {
            let to = dir.join(part_name(i));
            match (&part.saved, &part.index) {
                (Some(from), _) => link_folder(from, &to)?,
                (None, Some(index)) => {
                    fs::create_dir(&to).map_err(|e| IndexError::io("creating", &to, e))?;
                    let prev = previous
                        .map(|p| p.join(part_name(i)))
                        .filter(|p| p.is_dir());
                    index.save(&to, prev.as_deref())?;
                }
                (None, None) => return Err(lost_part(i)),
            }
        }
        write_json(
            &dir.join(PARTS_META),
            &PartsMeta {
                dim: self.dim,
                part_rows: self.part_rows,
                parts: self.parts.iter().map(|p| p.len).collect(),
            },
        )
    }

    fn set_staging(&mut self, dir: &Path) {
        self.staging = Some(dir.to_path_buf());
    }

    fn committed(&mut self, generation: &Path) {
        let last = self.parts.len().saturating_sub(1);
        for (i, part) in self.parts.iter_mut().enumerate() {
            // A staged part is now linked into the generation: its staging copy goes.
            if let (Some(staging), Some(saved)) = (&self.staging, &part.saved)
                && saved.starts_with(staging)
            {
                let _ = fs::remove_dir_all(saved);
            }
            part.saved = Some(generation.join(part_name(i)));
            // What is on disk leaves memory, but for the part still being filled.
            if i < last || part.len >= self.part_rows {
                part.index = None;
            }
        }
    }

    fn make_resident(&mut self) -> Result<()> {
        for i in 0..self.parts.len() {
            if self.parts[i].index.is_none()
                && let Some(folder) = self.parts[i].saved.clone()
            {
                let loaded = self.load_part(i, &folder)?;
                self.parts[i].index = Some(loaded);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::FlatIndex;
    use crate::spec::Storage;
    use crate::test_data::unit_rows;

    const FLAT: IndexSpec = IndexSpec::Flat {
        storage: Storage::F32,
    };

    #[test]
    fn parts_fill_in_order_and_search_as_one_index() -> Result<()> {
        let (n, dim) = (1000, 16);
        let data = unit_rows(n, dim, 1);
        let ids: Vec<u64> = (0..n as u64).map(|i| i * 3 + 7).collect();
        let mut whole = FlatIndex::new(dim, Storage::F32);
        whole.add(&ids, &data)?;
        let mut parted = PartedIndex::new(FLAT, dim, 128)?;
        // Adds that straddle part boundaries, of uneven sizes.
        let mut at = 0;
        for step in [100, 300, 1, 27, 572] {
            parted.add(&ids[at..at + step], &data[at * dim..(at + step) * dim])?;
            at += step;
        }
        assert_eq!((parted.len(), parted.parts()), (1000, 8));
        let queries = unit_rows(50, dim, 2);
        let excluded: std::collections::HashSet<u64> = ids.iter().step_by(5).copied().collect();
        for params in [
            SearchParams::top(10),
            SearchParams::top(2000),
            SearchParams {
                k: 7,
                max_score: Some(0.5),
                exclude: Some(&excluded),
                ..SearchParams::default()
            },
        ] {
            let a = whole.search_batch(&queries, &params)?;
            let b = parted.search_batch(&queries, &params)?;
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                let ids_x: Vec<u64> = x.iter().map(|h| h.id).collect();
                let ids_y: Vec<u64> = y.iter().map(|h| h.id).collect();
                assert_eq!(ids_x, ids_y, "k {}", params.k);
            }
        }
        Ok(())
    }

    #[test]
    fn saved_parts_are_linked_loaded_one_at_a_time_and_filled_again() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| IndexError::io("tempdir", "/tmp", e))?;
        let (dim, rows) = (8, 300);
        let data = unit_rows(rows, dim, 3);
        let ids: Vec<u64> = (0..rows as u64).collect();
        let mut parted = PartedIndex::new(FLAT, dim, 100)?;
        parted.add(&ids[..250], &data[..250 * dim])?;
        let g1 = tmp.path().join("gen-1");
        fs::create_dir(&g1).map_err(|e| IndexError::io("mkdir", &g1, e))?;
        parted.save(&g1, None)?;
        parted.committed(&g1);
        // The full parts left memory; the one being filled stayed.
        assert_eq!(parted.resident_parts(), 1);
        // Loaded lazily, it answers as the one in memory did.
        let loaded = PartedIndex::load(FLAT, &g1)?;
        assert_eq!(
            (loaded.len(), loaded.parts(), loaded.resident_parts()),
            (250, 3, 0)
        );
        let q = &data[..4 * dim];
        let before = parted.search_batch(q, &SearchParams::top(3))?;
        assert_eq!(loaded.search_batch(q, &SearchParams::top(3))?, before);
        assert_eq!(before[0][0].id, 0, "a vector finds itself first");
        // Filling goes on in the partial part, loaded from disk.
        let mut again = PartedIndex::load(FLAT, &g1)?;
        again.add(&ids[250..], &data[250 * dim..])?;
        assert_eq!((again.len(), again.parts()), (300, 3));
        let g2 = tmp.path().join("gen-2");
        fs::create_dir(&g2).map_err(|e| IndexError::io("mkdir", &g2, e))?;
        again.save(&g2, Some(&g1))?;
        // Unchanged parts are the same files (hard links); the changed one is new.
        use std::os::unix::fs::MetadataExt;
        let inode = |p: PathBuf| fs::metadata(&p).map(|m| m.ino()).unwrap_or(0);
        let files = |d: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            v.sort();
            v
        };
        for f in files(&g1.join(part_name(0))) {
            let name = f.file_name().map(PathBuf::from).unwrap_or_default();
            assert_eq!(inode(f.clone()), inode(g2.join(part_name(0)).join(name)));
        }
        let mut resident = PartedIndex::load(FLAT, &g2)?;
        resident.make_resident()?;
        assert_eq!(resident.resident_parts(), 3);
        let all = resident.search_batch(&data, &SearchParams::top(1))?;
        assert!(all.iter().zip(&ids).all(|(h, &id)| h[0].id == id));
        Ok(())
    }

    #[test]
    fn full_parts_wait_in_staging_out_of_memory_until_committed() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| IndexError::io("tempdir", "/tmp", e))?;
        let (dim, rows) = (8, 250);
        let data = unit_rows(rows, dim, 5);
        let ids: Vec<u64> = (0..rows as u64).collect();
        let staging = tmp.path().join("staging");
        let mut parted = PartedIndex::new(FLAT, dim, 100)?;
        parted.set_staging(&staging);
        parted.add(&ids, &data)?;
        // Two full parts written out; the third, being filled, in memory.
        assert_eq!((parted.parts(), parted.resident_parts()), (3, 1));
        assert!(staging.join(part_name(0)).is_dir() && staging.join(part_name(1)).is_dir());
        assert!(!staging.join(part_name(2)).exists());
        let top = parted.search_batch(&data, &SearchParams::top(1))?;
        assert!(top.iter().zip(&ids).all(|(h, &id)| h[0].id == id));
        let g1 = tmp.path().join("gen-1");
        fs::create_dir(&g1).map_err(|e| IndexError::io("mkdir", &g1, e))?;
        parted.save(&g1, None)?;
        parted.committed(&g1);
        assert!(!staging.join(part_name(0)).exists(), "linked, then removed");
        let loaded = PartedIndex::load(FLAT, &g1)?;
        assert_eq!(loaded.search_batch(&data, &SearchParams::top(1))?, top);
        Ok(())
    }

    #[test]
    fn damaged_part_lists_are_errors() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| IndexError::io("tempdir", "/tmp", e))?;
        let dir = tmp.path();
        let write = |json: &str| fs::write(dir.join(PARTS_META), json);
        let load = || PartedIndex::load(FLAT, dir).map(|_| ());
        for bad in [
            r#"{"dim": 8, "part_rows": 0, "parts": []}"#,
            r#"{"dim": 8, "part_rows": 10, "parts": [5, 10]}"#,
            r#"{"dim": 8, "part_rows": 10, "parts": [11]}"#,
            r#"{"dim": 8, "part_rows": 10, "parts": [10]}"#,
            r#"{"dim": 8, "part_rows": 10, "parts": [10], "extra": 1}"#,
        ] {
            write(bad).map_err(|e| IndexError::io("write", dir, e))?;
            assert!(
                matches!(load(), Err(IndexError::Corrupt { .. })),
                "{bad} was accepted"
            );
        }
        assert!(PartedIndex::new(FLAT, 8, 0).is_err());
        Ok(())
    }
}
