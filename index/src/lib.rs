//! The memory bank: maximum-inner-product search (MIPS) over unit vectors.
//!
//! The paper: "The final retrieval is done with Maximum Inner Product Search (MIPS) over the memory
//! bank using the dense retriever to obtain a list of candidate documents sorted by relevance
//! score." One trait, [`MipsIndex`], with three implementations: [`flat::FlatIndex`] (exact, a
//! blocked matrix product), [`hnsw::HnswIndex`] (an HNSW graph cm3 builds), and FAISS behind the `faiss` feature.
//! [`store`] keeps an index on disk in generations so that an update is atomic; [`stage`] runs
//! `cm3 index build` over a dataset directory, adding only the shards not yet indexed.

pub mod error;
#[cfg(feature = "faiss")]
pub mod faiss;
mod files;
pub mod flat;
pub mod hnsw;
pub mod parts;
pub mod product;
pub mod spec;
pub mod stage;
pub mod store;
pub mod topk;
pub mod vectors;

use std::collections::HashSet;
use std::fmt::Debug;
use std::path::Path;

pub use error::{IndexError, Result};
pub use spec::{IndexSpec, Storage, VectorSet};

/// One search result: the stored id and its relevance score (the inner product with the query).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub score: f32,
}

/// What a search returns and which stored vectors it may return.
#[derive(Debug, Clone, Default)]
pub struct SearchParams<'a> {
    /// Results per query.
    pub k: usize,
    /// Only hits with `score >= min_score`.
    pub min_score: Option<f32>,
    /// Only hits with `score <= max_score`: the paper's relevance filter (≤ 0.9) that keeps
    /// near-copies of the query out of the retrieved documents.
    pub max_score: Option<f32>,
    /// Ids never returned (e.g. the query's own document).
    pub exclude: Option<&'a HashSet<u64>>,
    /// HNSW: the size of the candidate list (efSearch); ignored by exact indexes.
    pub ef_search: Option<usize>,
}

impl SearchParams<'_> {
    pub fn top(k: usize) -> Self {
        Self {
            k,
            ..Self::default()
        }
    }

    /// Whether a hit with this score and id passes the filters.
    #[inline]
    pub fn admits(&self, score: f32, id: u64) -> bool {
        self.min_score.is_none_or(|m| score >= m)
            && self.max_score.is_none_or(|m| score <= m)
            && self.exclude.is_none_or(|e| !e.contains(&id))
    }

    fn is_filtered(&self) -> bool {
        self.min_score.is_some() || self.max_score.is_some() || self.exclude.is_some()
    }
}

/// A maximum-inner-product index over unit vectors, each stored with a `u64` id.
pub trait MipsIndex: Send + Sync + Debug {
    /// What this index is and how it was built.
    fn spec(&self) -> IndexSpec;
    fn dim(&self) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Add vectors (row-major, `ids.len() * dim` values, unit norm) with their ids.
    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()>;
    /// Search many queries at once (row-major, `n * dim` values): per query, up to `k` hits sorted
    /// by score, best first, passing the filters of `params`.
    fn search_batch(&self, queries: &[f32], params: &SearchParams<'_>) -> Result<Vec<Vec<Hit>>>;
    /// Write the index's files into the empty directory `dir`. `previous` is the directory of the
    /// generation this index was loaded from, whose unchanged files may be hard-linked.
    fn save(&self, dir: &Path, previous: Option<&Path>) -> Result<()>;

    /// Announce that about `additional` more vectors will be added (an index may allocate for
    /// them at once).
    fn reserve(&mut self, _additional: usize) {}
    /// For an index in parts ([`parts::PartedIndex`]): the most vectors a part holds.
    fn part_rows(&self) -> Option<usize> {
        None
    }
    /// For an index in parts: a folder where each part that fills up is written at once, so
    /// that it leaves memory before the next commit (which links it).
    fn set_staging(&mut self, _dir: &Path) {}
    /// Told that what [`MipsIndex::save`] wrote is now committed as generation folder
    /// `generation`: an index in parts lets its saved parts leave memory.
    fn committed(&mut self, _generation: &Path) {}
    /// Load whatever is kept on disk until searched (the parts of a parted index), for an index
    /// about to be searched many times.
    fn make_resident(&mut self) -> Result<()> {
        Ok(())
    }

    /// The `k` best hits for one query.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.search_with(query, &SearchParams::top(k))
    }
    /// One query with filters.
    fn search_with(&self, query: &[f32], params: &SearchParams<'_>) -> Result<Vec<Hit>> {
        Ok(self
            .search_batch(query, params)?
            .into_iter()
            .next()
            .unwrap_or_default())
    }
    /// The `k` best hits whose score is at most `max_score`.
    fn search_threshold(&self, query: &[f32], k: usize, max_score: f32) -> Result<Vec<Hit>> {
        self.search_with(
            query,
            &SearchParams {
                k,
                max_score: Some(max_score),
                ..SearchParams::default()
            },
        )
    }
    /// The `k` best hits whose id is not in `exclude`.
    fn search_excluding(
        &self,
        query: &[f32],
        k: usize,
        exclude: &HashSet<u64>,
    ) -> Result<Vec<Hit>> {
        self.search_with(
            query,
            &SearchParams {
                k,
                exclude: Some(exclude),
                ..SearchParams::default()
            },
        )
    }
}

/// Check that a row-major buffer holds whole rows of dimension `dim`.
pub(crate) fn check_rows(what: &str, values: usize, dim: usize) -> Result<usize> {
    if dim == 0 || !values.is_multiple_of(dim) {
        return Err(IndexError::Dimension {
            what: what.to_string(),
            expected: dim,
            found: if dim == 0 { 0 } else { values % dim },
        });
    }
    Ok(values / dim)
}

/// Check the arguments of [`MipsIndex::add`]: whole rows of dimension `dim`, one id per row.
/// Returns the number of rows.
pub(crate) fn check_add(what: &str, ids: &[u64], vectors: &[f32], dim: usize) -> Result<usize> {
    let rows = check_rows(what, vectors.len(), dim)?;
    if rows != ids.len() {
        return Err(IndexError::Invalid(format!(
            "{what}: {rows} vectors but {} ids",
            ids.len()
        )));
    }
    Ok(rows)
}

/// A new, empty index of the given kind.
pub fn new_index(spec: &IndexSpec, dim: usize) -> Result<Box<dyn MipsIndex>> {
    match spec {
        IndexSpec::Flat { storage } => Ok(Box::new(flat::FlatIndex::new(dim, *storage))),
        IndexSpec::Hnsw { m, ef_construction } => {
            Ok(Box::new(hnsw::HnswIndex::new(dim, *m, *ef_construction)?))
        }
        IndexSpec::Faiss { factory } => {
            #[cfg(feature = "faiss")]
            {
                Ok(Box::new(faiss::FaissIndex::new(dim, factory)?))
            }
            #[cfg(not(feature = "faiss"))]
            {
                Err(IndexError::FeatureOff(format!("faiss:{factory}")))
            }
        }
    }
}

/// A new, empty index of the given kind, in parts of at most `part_rows` vectors if given.
pub fn new_index_in_parts(
    spec: &IndexSpec,
    dim: usize,
    part_rows: Option<usize>,
) -> Result<Box<dyn MipsIndex>> {
    match part_rows {
        Some(rows) => Ok(Box::new(parts::PartedIndex::new(spec.clone(), dim, rows)?)),
        None => new_index(spec, dim),
    }
}

/// Load an index of the given kind from a generation directory written by [`MipsIndex::save`].
pub fn load_index(spec: &IndexSpec, dir: &Path) -> Result<Box<dyn MipsIndex>> {
    match spec {
        IndexSpec::Flat { .. } => Ok(Box::new(flat::FlatIndex::load(dir)?)),
        IndexSpec::Hnsw { .. } => Ok(Box::new(hnsw::HnswIndex::load(dir)?)),
        IndexSpec::Faiss { factory } => {
            #[cfg(feature = "faiss")]
            {
                let _ = factory;
                Ok(Box::new(faiss::FaissIndex::load(dir)?))
            }
            #[cfg(not(feature = "faiss"))]
            {
                Err(IndexError::FeatureOff(format!("faiss:{factory}")))
            }
        }
    }
}

/// Data for the unit tests.
#[cfg(test)]
pub(crate) mod test_data {
    use cm3_core::rng::SplitMix64;

    /// `n` random unit vectors of dimension `dim`, row-major.
    pub(crate) fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        let mut v: Vec<f32> = (0..n * dim).map(|_| rng.next_f64() as f32 - 0.5).collect();
        for row in v.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}
