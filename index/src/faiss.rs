//! FAISS indexes made by `index_factory` (cargo feature `faiss`), for what the flat and HNSW
//! indexes do not cover: IVF lists and product quantisation for hundreds of millions of vectors.
use std::path::Path;
use std::sync::Mutex;

use faiss::{Idx, Index, MetricType, index_factory, read_index, write_index};
use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::files::{read_json, write_ids, write_json};
use crate::spec::IndexSpec;
use crate::topk::TopK;
use crate::vectors::read_ids;
use crate::{Hit, MipsIndex, SearchParams, check_add, check_rows};

const INDEX: &str = "faiss.index";
const META: &str = "faiss.json";
const IDS: &str = "ids.npy";

/// A FAISS index over positions 0..n (our ids are kept beside it, so that every factory string
/// works, including those without `add_with_ids`). FAISS searches through `&mut`, hence the lock.
pub struct FaissIndex {
    index: Mutex<faiss::index::IndexImpl>,
    factory: String,
    ids: Vec<u64>,
    dim: usize,
    /// Vectors the index was trained on (IVF, PQ); 0 for indexes that need no training.
    trained_on: usize,
}

impl std::fmt::Debug for FaissIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaissIndex")
            .field("factory", &self.factory)
            .field("len", &self.ids.len())
            .field("dim", &self.dim)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaissMeta {
    factory: String,
    dim: usize,
    count: usize,
    trained_on: usize,
}

fn backend(op: &'static str, e: impl std::fmt::Display) -> IndexError {
    IndexError::Backend {
        op,
        reason: e.to_string(),
    }
}

impl FaissIndex {
    pub fn new(dim: usize, factory: &str) -> Result<Self> {
        let index = index_factory(dim as u32, factory, MetricType::InnerProduct)
            .map_err(|e| IndexError::Invalid(format!("FAISS index_factory(\"{factory}\"): {e}")))?;
        Ok(Self {
            index: Mutex::new(index),
            factory: factory.to_string(),
            ids: Vec::new(),
            dim,
            trained_on: 0,
        })
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let meta: FaissMeta = read_json(&dir.join(META))?;
        let ids = read_ids(&dir.join(IDS))?;
        let path = dir.join(INDEX);
        let index =
            read_index(path.to_string_lossy().as_ref()).map_err(|e| IndexError::Corrupt {
                path: path.clone(),
                reason: format!("FAISS cannot read it: {e}"),
            })?;
        if index.ntotal() as usize != meta.count || ids.len() != meta.count {
            return Err(IndexError::Corrupt {
                path,
                reason: format!(
                    "{} vectors and {} ids, metadata says {}",
                    index.ntotal(),
                    ids.len(),
                    meta.count
                ),
            });
        }
        Ok(Self {
            index: Mutex::new(index),
            factory: meta.factory,
            ids,
            dim: meta.dim,
            trained_on: meta.trained_on,
        })
    }

    /// Advice when the index has grown far beyond what its IVF lists / codebooks were trained on.
    pub fn retrain_advice(&self) -> Option<String> {
        (self.trained_on > 0 && self.ids.len() > 10 * self.trained_on).then(|| {
            format!(
                "the FAISS index was trained on {} vectors and now holds {}: consider --rebuild to \
                 retrain its lists on the current data",
                self.trained_on,
                self.ids.len()
            )
        })
    }
}

impl MipsIndex for FaissIndex {
    fn spec(&self) -> IndexSpec {
        IndexSpec::Faiss {
            factory: self.factory.clone(),
        }
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        let rows = check_add("vectors added to the FAISS index", ids, vectors, self.dim)?;
        let index = self
            .index
            .get_mut()
            .map_err(|_| backend("FAISS add", "lock poisoned"))?;
        if !index.is_trained() {
            // IVF lists and PQ codebooks are learnt from the first vectors added; later batches
            // are added to the trained lists.
            index
                .train(vectors)
                .map_err(|e| backend("FAISS train", e))?;
            self.trained_on = rows;
        }
        index.add(vectors).map_err(|e| backend("FAISS add", e))?;
        self.ids.extend_from_slice(ids);
        if let Some(advice) = self.retrain_advice() {
            tracing::warn!("{advice}");
        }
        Ok(())
    }

    fn search_batch(&self, queries: &[f32], params: &SearchParams<'_>) -> Result<Vec<Vec<Hit>>> {
        let nq = check_rows("queries", queries.len(), self.dim)?;
        let n = self.ids.len();
        let mut want = if params.is_filtered() {
            2 * params.k
        } else {
            params.k
        }
        .min(n);
        let mut index = self
            .index
            .lock()
            .map_err(|_| backend("FAISS search", "lock poisoned"))?;
        loop {
            if want == 0 {
                return Ok(vec![Vec::new(); nq]);
            }
            let res = index
                .search(queries, want)
                .map_err(|e| backend("FAISS search", e))?;
            let mut short = false;
            let out: Vec<Vec<Hit>> = (0..nq)
                .map(|q| {
                    let mut top = TopK::new(params.k);
                    for j in 0..want {
                        let (label, score): (Idx, f32) =
                            (res.labels[q * want + j], res.distances[q * want + j]);
                        if let Some(pos) = label.get() {
                            let id = self.ids[pos as usize];
                            if params.admits(score, id) {
                                top.push(score, pos as usize);
                            }
                        }
                    }
                    let hits: Vec<Hit> = top
                        .into_sorted()
                        .into_iter()
                        .map(|(score, pos)| Hit {
                            id: self.ids[pos],
                            score,
                        })
                        .collect();
                    short |= hits.len() < params.k;
                    hits
                })
                .collect();
            if !short || want >= n {
                return Ok(out);
            }
            want = (want * 4).min(n);
        }
    }

    fn save(&self, dir: &Path, _previous: Option<&Path>) -> Result<()> {
        let path = dir.join(INDEX);
        {
            let index = self
                .index
                .lock()
                .map_err(|_| backend("FAISS write", "lock poisoned"))?;
            write_index(&*index, path.to_string_lossy().as_ref())
                .map_err(|e| backend("FAISS write", e))?;
        }
        write_ids(&dir.join(IDS), &self.ids)?;
        let meta = FaissMeta {
            factory: self.factory.clone(),
            dim: self.dim,
            count: self.ids.len(),
            trained_on: self.trained_on,
        };
        write_json(&dir.join(META), &meta)
    }
}
