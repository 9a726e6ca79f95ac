//! Exact maximum-inner-product search: the ground truth, and the right choice up to a few million
//! vectors. Queries are scored a block of stored vectors at a time with a matrix product (our own
//! SIMD kernel, [`crate::product`]), blocks in parallel (rayon), and the best `k` of each query
//! kept in a bounded heap.
use std::fs;
use std::io::Write;
use std::path::Path;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use cm3_embed::npy::{self, Dtype};

use crate::error::{IndexError, Result};
use crate::files::{read_json, write_file, write_ids, write_json};
use crate::product::{self, PackedQueries, Scratch};
use crate::spec::{IndexSpec, Storage};
use crate::topk::TopK;
use crate::vectors::{NpyStream, read_ids};
use crate::{Hit, MipsIndex, SearchParams, check_add, check_rows};

/// Fewest stored vectors per parallel task. Tasks are otherwise a quarter of a thread's share:
/// each keeps its own top-k heaps, which take scores on every test until they fill, so fewer,
/// larger tasks test fewer scores one by one.
const BLOCK_ROWS: usize = 4096;
/// Stored vectors scored at once within a block: 256 × 1,024 queries is a 1 MiB score matrix,
/// which stays in L2 between the product that writes it and the scan that reads it.
const SCORE_ROWS: usize = 256;
/// Queries scored together (bounds the score matrix).
const QUERY_CHUNK: usize = 1024;

/// One rayon worker's buffers for scoring blocks.
#[derive(Debug, Default)]
struct BlockBuffers {
    scores: Vec<f32>,
    widened: Vec<f32>,
    scratch: Scratch,
}

#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

/// The exact index. Vectors added by one `add` call form a segment, saved as one pair of `.npy`
/// files that later generations hard-link instead of rewriting.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    ids: Vec<u64>,
    data: Data,
    /// Rows per segment, in order.
    segments: Vec<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatMeta {
    dim: usize,
    storage: Storage,
    segments: Vec<usize>,
}

const META: &str = "flat.json";

fn segment_files(i: usize) -> (String, String) {
    (format!("ids-{i:05}.npy"), format!("vectors-{i:05}.npy"))
}

impl FlatIndex {
    pub fn new(dim: usize, storage: Storage) -> Self {
        Self {
            dim,
            ids: Vec::new(),
            data: match storage {
                Storage::F32 => Data::F32(Vec::new()),
                Storage::F16 => Data::F16(Vec::new()),
            },
            segments: Vec::new(),
        }
    }

    pub fn storage(&self) -> Storage {
        match self.data {
            Data::F32(_) => Storage::F32,
            Data::F16(_) => Storage::F16,
        }
    }

    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The stored vector at a position, as f32.
    pub fn vector(&self, pos: usize) -> Vec<f32> {
        let r = pos * self.dim..(pos + 1) * self.dim;
        match &self.data {
            Data::F32(v) => v[r].to_vec(),
            Data::F16(v) => v[r].iter().map(|x| x.to_f32()).collect(),
        }
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let meta: FlatMeta = read_json(&dir.join(META))?;
        let mut index = FlatIndex::new(meta.dim, meta.storage);
        for (i, &rows) in meta.segments.iter().enumerate() {
            let (ids_f, vec_f) = segment_files(i);
            let ids = read_ids(&dir.join(&ids_f))?;
            let vpath = dir.join(&vec_f);
            let npy = NpyStream::open(&vpath)?;
            let item = match meta.storage {
                Storage::F32 => 4,
                Storage::F16 => 2,
            };
            let want_descr = match meta.storage {
                Storage::F32 => "<f4",
                Storage::F16 => "<f2",
            };
            if npy.shape != [rows, meta.dim] || ids.len() != rows || npy.descr != want_descr {
                return Err(IndexError::Corrupt {
                    path: vpath,
                    reason: format!(
                        "segment {i} should hold {rows} {want_descr} vectors of dimension {} with \
                         {rows} ids; found shape {:?} ({}), {} ids (replaced file)",
                        meta.dim,
                        npy.shape,
                        npy.descr,
                        ids.len()
                    ),
                });
            }
            // The shape is the index's: the data must be exactly its vectors.
            npy.check_size(item)?;
            // Read a megabyte at a time: the segment is never held twice.
            match &mut index.data {
                Data::F32(v) => {
                    v.reserve(rows * meta.dim);
                    npy.for_each_chunk(|c| {
                        v.extend(
                            c.chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        )
                    })?
                }
                Data::F16(v) => {
                    v.reserve(rows * meta.dim);
                    npy.for_each_chunk(|c| {
                        v.extend(c.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])))
                    })?
                }
            }
            index.ids.extend(ids);
            index.segments.push(rows);
        }
        Ok(index)
    }

    /// Scores of `queries` (nq × dim) against stored rows `start..end`, as an nq × rows matrix in
    /// `buffers.scores`. Buffers are reused across slices: fresh allocations cost page faults.
    fn score_block(
        &self,
        queries: &PackedQueries,
        start: usize,
        end: usize,
        buffers: &mut BlockBuffers,
    ) {
        let base: &[f32] = match &self.data {
            Data::F32(v) => &v[start * self.dim..end * self.dim],
            Data::F16(v) => {
                let widened = &mut buffers.widened;
                widened.resize((end - start) * self.dim, 0.0);
                v[start * self.dim..end * self.dim].convert_to_f32_slice(widened);
                widened
            }
        };
        product::inner_products(queries, base, &mut buffers.scores, &mut buffers.scratch);
    }

    fn search_chunk(&self, queries: &[f32], params: &SearchParams<'_>) -> Vec<Vec<Hit>> {
        let nq = queries.len() / self.dim;
        let n = self.ids.len();
        // Smaller blocks for few queries, so that both cores have work.
        let block = if nq < 16 {
            BLOCK_ROWS / 4
        } else {
            BLOCK_ROWS.max(n.div_ceil(4 * rayon::current_num_threads()))
        };
        let blocks = n.div_ceil(block);
        let filtered = params.is_filtered();
        let packed = PackedQueries::new(queries, self.dim);
        let heaps = (0..blocks)
            .into_par_iter()
            .map_init(BlockBuffers::default, |buffers, b| {
                let start = b * block;
                let end = (start + block).min(n);
                let mut heaps: Vec<TopK> = (0..nq).map(|_| TopK::new(params.k)).collect();
                // Scored a slice at a time so that the score matrix stays in cache.
                for s0 in (start..end).step_by(SCORE_ROWS) {
                    let s1 = (s0 + SCORE_ROWS).min(end);
                    self.score_block(&packed, s0, s1, buffers);
                    for (heap, row) in heaps.iter_mut().zip(buffers.scores.chunks_exact(s1 - s0)) {
                        product::push_row(packed.level(), row, s0, heap, |s, pos| {
                            !filtered || params.admits(s, self.ids[pos])
                        });
                    }
                }
                heaps
            })
            .reduce(
                || (0..nq).map(|_| TopK::new(params.k)).collect(),
                |a, b| a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect(),
            );
        heaps
            .into_iter()
            .map(|h| {
                h.into_sorted()
                    .into_iter()
                    .map(|(score, pos)| Hit {
                        id: self.ids[pos],
                        score,
                    })
                    .collect()
            })
            .collect()
    }
}

impl MipsIndex for FlatIndex {
    fn spec(&self) -> IndexSpec {
        IndexSpec::Flat {
            storage: self.storage(),
        }
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        let rows = check_add("vectors added to the flat index", ids, vectors, self.dim)?;
        if rows == 0 {
            return Ok(());
        }
        match &mut self.data {
            Data::F32(v) => v.extend_from_slice(vectors),
            Data::F16(v) => {
                let start = v.len();
                v.resize(start + vectors.len(), f16::ZERO);
                v[start..].convert_from_f32_slice(vectors);
            }
        }
        self.ids.extend_from_slice(ids);
        self.segments.push(rows);
        Ok(())
    }

    fn search_batch(&self, queries: &[f32], params: &SearchParams<'_>) -> Result<Vec<Vec<Hit>>> {
        check_rows("queries", queries.len(), self.dim)?;
        let mut out = Vec::with_capacity(queries.len() / self.dim);
        for chunk in queries.chunks(QUERY_CHUNK * self.dim) {
            out.extend(self.search_chunk(chunk, params));
        }
        Ok(out)
    }

    fn save(&self, dir: &Path, previous: Option<&Path>) -> Result<()> {
        let prev_segments = previous.and_then(|p| read_json::<FlatMeta>(&p.join(META)).ok());
        let mut start = 0usize;
        for (i, &rows) in self.segments.iter().enumerate() {
            let (ids_f, vec_f) = segment_files(i);
            let end = start + rows;
            // Segments are immutable: one the previous generation already holds is linked.
            let reusable = match (&prev_segments, previous) {
                (Some(pm), Some(p)) => {
                    pm.storage == self.storage()
                        && pm.dim == self.dim
                        && pm.segments.get(..=i) == self.segments.get(..=i)
                        && fs::hard_link(p.join(&ids_f), dir.join(&ids_f)).is_ok()
                        && fs::hard_link(p.join(&vec_f), dir.join(&vec_f)).is_ok()
                }
                _ => false,
            };
            if !reusable {
                for f in [&ids_f, &vec_f] {
                    let _ = fs::remove_file(dir.join(f));
                }
                write_ids(&dir.join(&ids_f), &self.ids[start..end])?;
                let r = start * self.dim..end * self.dim;
                match &self.data {
                    Data::F32(v) => write_file(
                        &dir.join(&vec_f),
                        &npy::header(Dtype::F32, &[rows, self.dim]),
                        |w| v[r].iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
                    )?,
                    Data::F16(v) => write_file(
                        &dir.join(&vec_f),
                        &npy::header(Dtype::F16, &[rows, self.dim]),
                        |w| v[r].iter().try_for_each(|x| w.write_all(&x.to_le_bytes())),
                    )?,
                }
            }
            start = end;
        }
        let meta = FlatMeta {
            dim: self.dim,
            storage: self.storage(),
            segments: self.segments.clone(),
        };
        write_json(&dir.join(META), &meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &mut [f32], dim: usize) {
        for r in v.chunks_exact_mut(dim) {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= n);
        }
    }

    #[test]
    fn finds_itself_first_and_respects_filters() {
        let dim = 8;
        let mut v: Vec<f32> = (0..40 * dim)
            .map(|i| ((i * 7919) % 97) as f32 - 48.0)
            .collect();
        unit(&mut v, dim);
        for storage in [Storage::F32, Storage::F16] {
            let mut idx = FlatIndex::new(dim, storage);
            let ids: Vec<u64> = (100..140).collect();
            idx.add(&ids[..25], &v[..25 * dim]).expect("add");
            idx.add(&ids[25..], &v[25 * dim..]).expect("add");
            let q = &v[7 * dim..8 * dim];
            let hits = idx.search(q, 3).expect("search");
            assert_eq!(hits[0].id, 107);
            assert!((hits[0].score - 1.0).abs() < 2e-3);
            let below = idx.search_threshold(q, 3, 0.9).expect("search");
            assert!(below.iter().all(|h| h.score <= 0.9 && h.id != 107));
            let ex: std::collections::HashSet<u64> = [107, hits[1].id].into();
            let hits2 = idx.search_excluding(q, 3, &ex).expect("search");
            assert_eq!(hits2[0].id, hits[2].id);
            assert!(idx.search(&q[..3], 1).is_err());
        }
    }
}
