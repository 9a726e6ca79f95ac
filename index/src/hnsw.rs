//! Approximate maximum-inner-product search with `hnsw_rs` over unit vectors (distance
//! `1 - <a, b>`, so the nearest neighbours are the largest inner products).
use std::fs;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::{HnswIo, ReloadOptions};
use hnsw_rs::prelude::DistDot;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use cm3_embed::npy::{self, Dtype};

use crate::error::{IndexError, Result};
use crate::flat::write_synced;
use crate::spec::{DEFAULT_EF_SEARCH, IndexSpec};
use crate::vectors::read_ids;
use crate::{Hit, MipsIndex, SearchParams, check_rows};

/// The graph's layers (hnsw_rs's maximum).
const MAX_LAYER: usize = 16;
const BASENAME: &str = "hnsw";
const META: &str = "hnsw.json";
const IDS: &str = "ids.npy";

/// An HNSW graph and the ids of its points (hnsw_rs numbers points 0..n; `ids[n]` is ours).
pub struct HnswIndex {
    graph: Hnsw<'static, f32, DistDot>,
    ids: Vec<u64>,
    dim: usize,
    m: usize,
    ef_construction: usize,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("len", &self.ids.len())
            .field("dim", &self.dim)
            .field("m", &self.m)
            .field("ef_construction", &self.ef_construction)
            .finish()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HnswMeta {
    dim: usize,
    m: usize,
    ef_construction: usize,
    count: usize,
}

fn panic_reason(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl HnswIndex {
    pub fn new(dim: usize, m: usize, ef_construction: usize) -> Result<Self> {
        if !(2..=256).contains(&m) {
            return Err(IndexError::Invalid(format!(
                "HNSW M must be between 2 and 256, not {m}"
            )));
        }
        Ok(Self {
            graph: Hnsw::new(m, 1 << 16, MAX_LAYER, ef_construction, DistDot),
            ids: Vec::new(),
            dim,
            m,
            ef_construction,
        })
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join(META);
        let text =
            fs::read_to_string(&meta_path).map_err(|e| IndexError::io("reading", &meta_path, e))?;
        let meta: HnswMeta = serde_json::from_str(&text).map_err(|e| IndexError::Corrupt {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        let ids = read_ids(&dir.join(IDS))?;
        if ids.len() != meta.count {
            return Err(IndexError::Corrupt {
                path: dir.join(IDS),
                reason: format!("{} ids, the graph holds {}", ids.len(), meta.count),
            });
        }
        // hnsw_rs's loader borrows its reader for the graph's lifetime; the reader is small and
        // lives as long as the process (the graph's data stays memory-mapped from it).
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new_with_options(
            dir,
            BASENAME,
            ReloadOptions::default().set_mmap(true),
        )));
        let mut reader = Some(io);
        let graph = catch_unwind(AssertUnwindSafe(|| {
            reader
                .take()
                .map(|io| io.load_hnsw::<f32, DistDot>().map_err(|e| format!("{e:#}")))
                .unwrap_or_else(|| Err("the reader was already used".to_string()))
        }))
        .map_err(|p| IndexError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!("HNSW graph unreadable: {}", panic_reason(p)),
        })?
        .map_err(|e| IndexError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!("HNSW graph unreadable: {e}"),
        })?;
        if graph.get_nb_point() != meta.count {
            return Err(IndexError::Corrupt {
                path: dir.to_path_buf(),
                reason: format!(
                    "the graph holds {} points, its metadata says {}",
                    graph.get_nb_point(),
                    meta.count
                ),
            });
        }
        Ok(Self {
            graph,
            ids,
            dim: meta.dim,
            m: meta.m,
            ef_construction: meta.ef_construction,
        })
    }

    fn search_one(&self, q: &[f32], params: &SearchParams<'_>) -> Vec<Hit> {
        let n = self.ids.len();
        let k = params.k.min(n);
        if k == 0 {
            return Vec::new();
        }
        let ef = params.ef_search.unwrap_or(DEFAULT_EF_SEARCH);
        // Filters are applied to the candidates, so ask for more than k and widen until k pass
        // (or the whole graph has been offered).
        let mut want = if params.is_filtered() { 2 * k } else { k };
        loop {
            let found = self.graph.search(q, want.min(n), ef.max(want));
            let hits: Vec<Hit> = found
                .iter()
                .map(|nb| Hit {
                    id: self.ids[nb.d_id],
                    score: 1.0 - nb.distance,
                })
                .filter(|h| params.admits(h.score, h.id))
                .take(k)
                .collect();
            if hits.len() >= k || found.len() < want.min(n) || want >= n {
                return hits;
            }
            want = (want * 4).min(n);
        }
    }
}

impl MipsIndex for HnswIndex {
    fn spec(&self) -> IndexSpec {
        IndexSpec::Hnsw {
            m: self.m,
            ef_construction: self.ef_construction,
        }
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        let rows = check_rows("vectors added to the HNSW index", vectors.len(), self.dim)?;
        if rows != ids.len() {
            return Err(IndexError::Invalid(format!(
                "{rows} vectors but {} ids",
                ids.len()
            )));
        }
        let base = self.ids.len();
        let data: Vec<(&[f32], usize)> = vectors
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(i, v)| (v, base + i))
            .collect();
        let graph = &self.graph;
        catch_unwind(AssertUnwindSafe(|| graph.parallel_insert_slice(&data))).map_err(|p| {
            IndexError::Backend {
                op: "HNSW insert",
                reason: panic_reason(p),
            }
        })?;
        self.ids.extend_from_slice(ids);
        Ok(())
    }

    fn search_batch(&self, queries: &[f32], params: &SearchParams<'_>) -> Result<Vec<Vec<Hit>>> {
        check_rows("queries", queries.len(), self.dim)?;
        catch_unwind(AssertUnwindSafe(|| {
            queries
                .par_chunks_exact(self.dim)
                .map(|q| self.search_one(q, params))
                .collect()
        }))
        .map_err(|p| IndexError::Backend {
            op: "HNSW search",
            reason: panic_reason(p),
        })
    }

    fn save(&self, dir: &Path, _previous: Option<&Path>) -> Result<()> {
        // The graph changes with every insertion: it is written whole.
        let graph = &self.graph;
        let name = catch_unwind(AssertUnwindSafe(|| graph.file_dump(dir, BASENAME)))
            .map_err(|p| IndexError::Backend {
                op: "HNSW dump",
                reason: panic_reason(p),
            })?
            .map_err(|e| IndexError::Backend {
                op: "HNSW dump",
                reason: format!("{e:#}"),
            })?;
        if name != BASENAME {
            return Err(IndexError::Backend {
                op: "HNSW dump",
                reason: format!("wrote {name} instead of {BASENAME} (directory not empty)"),
            });
        }
        for f in ["hnsw.hnsw.graph", "hnsw.hnsw.data"] {
            let p = dir.join(f);
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| IndexError::io("fsync", &p, e))?;
        }
        write_synced(
            &dir.join(IDS),
            &npy::header(Dtype::U64, &[self.ids.len()]),
            |w| {
                self.ids
                    .iter()
                    .try_for_each(|id| w.write_all(&id.to_le_bytes()))
            },
        )?;
        let meta = HnswMeta {
            dim: self.dim,
            m: self.m,
            ef_construction: self.ef_construction,
            count: self.ids.len(),
        };
        let text =
            serde_json::to_string_pretty(&meta).map_err(|e| IndexError::Invalid(e.to_string()))?;
        write_synced(&dir.join(META), text.as_bytes(), |_| Ok(()))
    }
}
