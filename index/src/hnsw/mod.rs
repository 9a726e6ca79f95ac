//! Approximate maximum-inner-product search with `hnsw_rs` over unit vectors (distance
//! `1 - <a, b>`, so the nearest neighbours are the largest inner products).
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::{Hnsw, Point};
use hnsw_rs::hnswio::{HnswIo, ReloadOptions};
use hnsw_rs::prelude::DistDot;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::files::{read_json, write_ids, write_json};
use crate::spec::{DEFAULT_EF_SEARCH, IndexSpec};
use crate::vectors::read_ids;
use crate::{Hit, MipsIndex, SearchParams, check_add, check_rows};

mod search_file;

/// The graph's layers (hnsw_rs's maximum).
const MAX_LAYER: usize = 16;
const BASENAME: &str = "hnsw";
const META: &str = "hnsw.json";
const IDS: &str = "ids.npy";
/// The search copy ([`search_file`]).
const SEARCH: &str = "search.bin";

/// An HNSW graph and the ids of its points (hnsw_rs numbers points 0..n; `ids[n]` is ours).
///
/// hnsw_rs builds, stores and reloads the graph. Searching goes through [`Links`], a read-only
/// copy of its links and vectors in flat arrays, saved beside the graph and read when the index
/// is loaded (so that it is part of loading, not of searching), or made from the graph on the
/// first search after an `add` (not after each `add`: a build adds shard after shard): hnsw_rs's
/// own search keeps visited points in a hash map of reference-counted points and takes a lock per
/// node, which made it about 3 times slower than FAISS at the same recall.
pub struct HnswIndex {
    /// Built here, or loaded from `dir` when first needed (to add or to save): searching a saved
    /// index needs only its search copy, and the graph holds several times the vectors' memory.
    graph: OnceLock<Hnsw<'static, f32, DistDot>>,
    /// The directory the index was loaded from.
    dir: Option<PathBuf>,
    /// Inside: `None` while the graph is empty, or if its points are not exactly 0..n (then
    /// hnsw_rs's own search is used).
    links: OnceLock<Option<Links>>,
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
            graph: OnceLock::from(Hnsw::new(m, 1 << 16, MAX_LAYER, ef_construction, DistDot)),
            dir: None,
            links: OnceLock::new(),
            ids: Vec::new(),
            dim,
            m,
            ef_construction,
        })
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let meta: HnswMeta = read_json(&dir.join(META))?;
        let ids = read_ids(&dir.join(IDS))?;
        if ids.len() != meta.count {
            return Err(IndexError::Corrupt {
                path: dir.join(IDS),
                reason: format!("{} ids, the graph holds {}", ids.len(), meta.count),
            });
        }
        let mut index = Self {
            graph: OnceLock::new(),
            dir: Some(dir.to_path_buf()),
            links: OnceLock::new(),
            ids,
            dim: meta.dim,
            m: meta.m,
            ef_construction: meta.ef_construction,
        };
        let links = match search_file::read(&dir.join(SEARCH), meta.count, meta.dim)? {
            Some(links) => Some(links),
            // Saved before the search copy existed: made from the graph, as after an `add`.
            None => Links::from_graph(index.graph()?, meta.count),
        };
        index.links = OnceLock::from(links);
        Ok(index)
    }

    /// hnsw_rs's graph, loaded from the index's directory on first use.
    fn graph(&self) -> Result<&Hnsw<'static, f32, DistDot>> {
        if let Some(graph) = self.graph.get() {
            return Ok(graph);
        }
        let dir = self.dir.as_deref().ok_or_else(|| {
            IndexError::Invalid("an HNSW index with neither a graph nor a directory".into())
        })?;
        let graph = load_graph(dir, self.ids.len())?;
        Ok(self.graph.get_or_init(|| graph))
    }

    fn search_one(&self, q: &[f32], params: &SearchParams<'_>) -> Vec<Hit> {
        let n = self.ids.len();
        let k = params.k.min(n);
        if k == 0 {
            return Vec::new();
        }
        // A beam wider than the index finds nothing more (and sizes the beam's heaps).
        let ef = params.ef_search.unwrap_or(DEFAULT_EF_SEARCH).min(n);
        // Filters are applied to the candidates, so ask for more than k and widen until k pass
        // (or the whole graph has been offered).
        let mut want = if params.is_filtered() { 2 * k } else { k };
        // Unset only after an `add` or on a new index, when the graph is in memory.
        let links = self
            .links
            .get_or_init(|| self.graph.get().and_then(|g| Links::from_graph(g, n)));
        loop {
            let found: Vec<(f32, u32)> = match (links, self.graph.get()) {
                (Some(l), _) => l.search(q, ef.max(want)),
                (None, Some(graph)) => graph
                    .search(q, want.min(n), ef.max(want))
                    .iter()
                    .map(|nb| (nb.distance, nb.d_id as u32))
                    .collect(),
                (None, None) => Vec::new(),
            };
            let hits: Vec<Hit> = found
                .iter()
                .take(want)
                .map(|&(dist, pos)| Hit {
                    id: self.ids[pos as usize],
                    score: 1.0 - dist,
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

/// hnsw_rs's graph saved in `dir`, which must hold `count` points.
fn load_graph(dir: &Path, count: usize) -> Result<Hnsw<'static, f32, DistDot>> {
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
    if graph.get_nb_point() != count {
        return Err(IndexError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!(
                "the graph holds {} points, its metadata says {count}",
                graph.get_nb_point()
            ),
        });
    }
    Ok(graph)
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
        check_add("vectors added to the HNSW index", ids, vectors, self.dim)?;
        if ids.is_empty() {
            // Nothing to add: no reason to load the graph or drop the search copy.
            return Ok(());
        }
        let base = self.ids.len();
        let data: Vec<(&[f32], usize)> = vectors
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(i, v)| (v, base + i))
            .collect();
        let graph = self.graph()?;
        catch_unwind(AssertUnwindSafe(|| graph.parallel_insert_slice(&data))).map_err(|p| {
            IndexError::Backend {
                op: "HNSW insert",
                reason: panic_reason(p),
            }
        })?;
        self.ids.extend_from_slice(ids);
        self.links = OnceLock::new();
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
        let graph = self.graph()?;
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
        write_ids(&dir.join(IDS), &self.ids)?;
        // The search copy: from the one in memory, or streamed from the graph (a build has not
        // searched, and a second copy of the vectors would double its memory).
        let search = dir.join(SEARCH);
        match self.links.get() {
            Some(Some(links)) => search_file::write(&search, &links.graph, links.rows())?,
            _ => {
                if let Some(r) = Renumbered::from_graph(graph, self.ids.len()) {
                    search_file::write(&search, &r.graph, r.rows())?;
                }
            }
        }
        let meta = HnswMeta {
            dim: self.dim,
            m: self.m,
            ef_construction: self.ef_construction,
            count: self.ids.len(),
        };
        write_json(&dir.join(META), &meta)
    }
}

/// The graph's links in flat arrays, and a contiguous copy of its vectors by position: hnsw_rs
/// reaches a vector through two pointers, each a likely cache miss in a random walk.
///
/// Points are renumbered in breadth-first order from the entry point, so that neighbours in the
/// graph are mostly neighbours in memory (a walk touches fewer distinct pages and cache lines),
/// and the vectors sit in transparent huge pages where the kernel gives them: a walk reads a
/// vector from anywhere in hundreds of MiB, and with 4 KiB pages nearly every read missed the TLB.
struct Links {
    data: Vectors,
    graph: Adjacency,
}

/// The graph's links over points renumbered breadth-first: [`Links`] without its vectors, what
/// the search file stores before them.
struct Adjacency {
    dim: usize,
    /// Layer 0: the neighbours of point `i` are `level0[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    level0: Vec<u32>,
    /// Layers 1..: neighbours of the few points that reach them.
    upper: Vec<HashMap<u32, Vec<u32>>>,
    entry: u32,
    /// `position[i]`: hnsw_rs's number (the index's position) of our point `i`.
    position: Vec<u32>,
}

/// Vector storage: an anonymous mapping advised for huge pages, or a plain vector where mapping
/// fails (or on other systems).
enum Vectors {
    Mapped(memmap2::MmapMut),
    Plain(Vec<f32>),
}

impl Vectors {
    /// `len` zeros.
    fn zeros(len: usize) -> Self {
        let mapped = memmap2::MmapMut::map_anon(len * 4)
            .ok()
            .filter(|m| len > 0 && pulp::bytemuck::try_cast_slice::<u8, f32>(m).is_ok());
        match mapped {
            Some(m) => {
                // Advised before the first write, so that the first touch of each 2 MiB faults
                // in a huge page. A refusal (no THP) only costs the speed-up.
                #[cfg(target_os = "linux")]
                let _ = m.advise(memmap2::Advice::HugePage);
                Self::Mapped(m)
            }
            None => Self::Plain(vec![0.0; len]),
        }
    }

    fn as_slice(&self) -> &[f32] {
        match self {
            Self::Mapped(m) => pulp::bytemuck::try_cast_slice::<u8, f32>(m).unwrap_or(&[]),
            Self::Plain(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        match self {
            Self::Mapped(m) => pulp::bytemuck::try_cast_slice_mut::<u8, f32>(m).unwrap_or(&mut []),
            Self::Plain(v) => v,
        }
    }
}

/// A distance ordered totally (for heaps).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dist(f32);

impl Eq for Dist {}

impl Ord for Dist {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl PartialOrd for Dist {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The CPU's SIMD level, detected once.
static ARCH: std::sync::LazyLock<pulp::Arch> = std::sync::LazyLock::new(pulp::Arch::new);

/// Inner product with four independent fused multiply-add chains, dispatched at run time to the
/// widest instruction set the CPU has (our build targets baseline x86-64).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    struct Dot<'a>(&'a [f32], &'a [f32]);
    impl pulp::WithSimd for Dot<'_> {
        type Output = f32;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
            let (a, a_tail) = S::as_simd_f32s(self.0);
            let (b, b_tail) = S::as_simd_f32s(self.1);
            let mut acc = [simd.splat_f32s(0.0); 4];
            let (a4, a_rest) = a.split_at(a.len() / 4 * 4);
            let (b4, b_rest) = b.split_at(a4.len().min(b.len()));
            for (x, y) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
                for j in 0..4 {
                    acc[j] = simd.mul_add_e_f32s(x[j], y[j], acc[j]);
                }
            }
            for (x, y) in a_rest.iter().zip(b_rest) {
                acc[0] = simd.mul_add_e_f32s(*x, *y, acc[0]);
            }
            let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
            simd.reduce_sum_f32s(sum) + a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum::<f32>()
        }
    }
    ARCH.dispatch(Dot(a, b))
}

/// Inner products of one query with four vectors at once (each vector its own FMA chain).
#[inline]
pub fn dot4(q: &[f32], v: [&[f32]; 4]) -> [f32; 4] {
    struct Dot4<'a>(&'a [f32], [&'a [f32]; 4]);
    impl pulp::WithSimd for Dot4<'_> {
        type Output = [f32; 4];
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, simd: S) -> [f32; 4] {
            let (q, q_tail) = S::as_simd_f32s(self.0);
            let [v0, v1, v2, v3] = self.1.map(S::as_simd_f32s);
            let mut acc = [simd.splat_f32s(0.0); 4];
            for ((((&x, &a), &b), &c), &d) in q.iter().zip(v0.0).zip(v1.0).zip(v2.0).zip(v3.0) {
                acc[0] = simd.mul_add_e_f32s(x, a, acc[0]);
                acc[1] = simd.mul_add_e_f32s(x, b, acc[1]);
                acc[2] = simd.mul_add_e_f32s(x, c, acc[2]);
                acc[3] = simd.mul_add_e_f32s(x, d, acc[3]);
            }
            let tails = [v0.1, v1.1, v2.1, v3.1];
            let mut out = [0f32; 4];
            for j in 0..4 {
                out[j] = simd.reduce_sum_f32s(acc[j])
                    + q_tail.iter().zip(tails[j]).map(|(a, b)| a * b).sum::<f32>();
            }
            out
        }
    }
    ARCH.dispatch(Dot4(q, v))
}

/// Which points a search has visited: a stamp per point, reset by bumping the stamp.
#[derive(Debug, Default)]
struct Visited {
    stamps: Vec<u32>,
    now: u32,
}

impl Visited {
    fn start(&mut self, n: usize) {
        if self.stamps.len() < n {
            self.stamps.resize(n, 0);
        }
        self.now = self.now.wrapping_add(1);
        if self.now == 0 {
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.now = 1;
        }
    }

    /// True the first time `i` is seen in this search.
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let s = &mut self.stamps[i as usize];
        let first = *s != self.now;
        *s = self.now;
        first
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

/// The graph's links renumbered breadth-first, and hnsw_rs's points by position (for their
/// vectors): what [`Links`] and the search file are made from.
struct Renumbered {
    points: Vec<Arc<Point<'static, f32>>>,
    graph: Adjacency,
}

impl Renumbered {
    /// `None` if the graph does not hold exactly the points 0..n (then hnsw_rs searches).
    fn from_graph(graph: &Hnsw<'static, f32, DistDot>, n: usize) -> Option<Self> {
        let mut points: Vec<Option<Arc<Point<'static, f32>>>> = vec![None; n];
        let mut neighbours0: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut upper: Vec<HashMap<u32, Vec<u32>>> = Vec::new();
        let mut entry: Option<(usize, u32)> = None;
        for p in graph.get_point_indexation() {
            let pos = p.get_origin_id();
            if pos >= n {
                continue;
            }
            let level = usize::from(p.get_point_id().0);
            for (layer, nbs) in p.get_neighborhood_id().into_iter().enumerate() {
                let ids: Vec<u32> = nbs
                    .iter()
                    .map(|nb| nb.d_id as u32)
                    .filter(|&i| (i as usize) < n)
                    .collect();
                if layer == 0 {
                    neighbours0[pos] = ids;
                } else if layer <= level {
                    if upper.len() < layer {
                        upper.resize_with(layer, HashMap::new);
                    }
                    upper[layer - 1].insert(pos as u32, ids);
                }
            }
            // The entry point is a point of the highest level (hnsw_rs's is the first to reach it).
            if entry.is_none_or(|(l, _)| level > l) {
                entry = Some((level, pos as u32));
            }
            points[pos] = Some(p);
        }
        let entry = entry?.1;
        let points: Vec<Arc<Point<'static, f32>>> = points.into_iter().collect::<Option<_>>()?;
        let dim = points.first().map_or(0, |p| p.get_v().len());
        if points.iter().any(|p| p.get_v().len() != dim) {
            return None;
        }
        let position = breadth_first(&neighbours0, entry);
        let mut ours = vec![0u32; n];
        for (i, &p) in position.iter().enumerate() {
            ours[p as usize] = i as u32;
        }
        let mut offsets = Vec::with_capacity(n + 1);
        let mut level0 = Vec::with_capacity(neighbours0.iter().map(Vec::len).sum());
        offsets.push(0);
        for &p in &position {
            level0.extend(neighbours0[p as usize].iter().map(|&j| ours[j as usize]));
            offsets.push(level0.len());
        }
        let upper = upper
            .into_iter()
            .map(|layer| {
                layer
                    .into_iter()
                    .map(|(p, nbs)| {
                        let nbs = nbs.into_iter().map(|j| ours[j as usize]).collect();
                        (ours[p as usize], nbs)
                    })
                    .collect()
            })
            .collect();
        Some(Self {
            points,
            graph: Adjacency {
                dim,
                offsets,
                level0,
                upper,
                entry: ours[entry as usize],
                position,
            },
        })
    }

    /// The vectors in search order.
    fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.graph
            .position
            .iter()
            .map(|&p| self.points[p as usize].get_v())
    }
}

impl Links {
    /// `None` if the graph does not hold exactly the points 0..n (then hnsw_rs searches).
    fn from_graph(graph: &Hnsw<'static, f32, DistDot>, n: usize) -> Option<Self> {
        let r = Renumbered::from_graph(graph, n)?;
        let dim = r.graph.dim;
        let mut data = Vectors::zeros(n * dim);
        let rows = data.as_mut_slice();
        if rows.len() != n * dim {
            return None;
        }
        for (row, v) in rows.chunks_exact_mut(dim.max(1)).zip(r.rows()) {
            row.copy_from_slice(v);
        }
        Some(Self {
            data,
            graph: r.graph,
        })
    }

    /// The vectors in search order.
    fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.data.as_slice().chunks_exact(self.graph.dim.max(1))
    }

    /// The `ef` nearest points found (distance, position in the index), nearest first.
    fn search(&self, q: &[f32], ef: usize) -> Vec<(f32, u32)> {
        let Adjacency {
            dim,
            offsets,
            level0,
            upper,
            entry,
            position,
        } = &self.graph;
        let n = offsets.len() - 1;
        if n == 0 {
            return Vec::new();
        }
        let (data, dim) = (self.data.as_slice(), *dim);
        let row = |i: u32| &data[i as usize * dim..(i as usize + 1) * dim];
        let dist = |i: u32| 1.0 - dot(q, row(i));
        // Distances to up to four points (unused slots repeat the first).
        let dist4 = |group: &[u32]| {
            let at = |k: usize| row(group.get(k).or(group.first()).copied().unwrap_or(0));
            dot4(q, [at(0), at(1), at(2), at(3)]).map(|d| 1.0 - d)
        };
        // Greedy descent through the upper layers.
        let mut ep = *entry;
        let mut d_ep = dist(ep);
        for layer in upper.iter().rev() {
            loop {
                let mut moved = false;
                if let Some(nbs) = layer.get(&ep) {
                    for &c in nbs {
                        let d = dist(c);
                        if d < d_ep {
                            (ep, d_ep) = (c, d);
                            moved = true;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        // Beam search on layer 0.
        VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            visited.start(n);
            visited.insert(ep);
            let mut candidates = BinaryHeap::with_capacity(ef * 2);
            let mut results: BinaryHeap<(Dist, u32)> = BinaryHeap::with_capacity(ef + 1);
            let mut fresh: Vec<u32> = Vec::with_capacity(64);
            candidates.push(Reverse((Dist(d_ep), ep)));
            results.push((Dist(d_ep), ep));
            while let Some(Reverse((Dist(dc), c))) = candidates.pop() {
                if results.len() >= ef && results.peek().is_some_and(|w| dc > w.0.0) {
                    break;
                }
                let (a, b) = (offsets[c as usize], offsets[c as usize + 1]);
                fresh.clear();
                fresh.extend(
                    level0[a..b]
                        .iter()
                        .copied()
                        .filter(|&nb| visited.insert(nb)),
                );
                // Four distances at a time: four independent streams of loads, as FAISS does;
                // the walk is bound by memory, not arithmetic.
                for group in fresh.chunks(4) {
                    let ds = dist4(group);
                    for (&nb, &d) in group.iter().zip(&ds) {
                        if results.len() < ef || results.peek().is_some_and(|w| d < w.0.0) {
                            candidates.push(Reverse((Dist(d), nb)));
                            results.push((Dist(d), nb));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            results
                .into_sorted_vec()
                .into_iter()
                .map(|(d, i)| (d.0, position[i as usize]))
                .collect()
        })
    }
}

/// Points in breadth-first order from `entry` over the layer-0 links (`order[i]` is the old number
/// of the new point `i`); points the walk does not reach follow in their old order.
fn breadth_first(neighbours: &[Vec<u32>], entry: u32) -> Vec<u32> {
    let n = neighbours.len();
    let mut seen = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut next = 0;
    for start in std::iter::once(entry).chain(0..n as u32) {
        if seen.get(start as usize).copied().unwrap_or(true) {
            continue;
        }
        seen[start as usize] = true;
        order.push(start);
        while next < order.len() {
            let p = order[next] as usize;
            next += 1;
            for &j in &neighbours[p] {
                if !std::mem::replace(&mut seen[j as usize], true) {
                    order.push(j);
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breadth_first_orders_every_point_once() {
        // 0 - 2 - 4, 1 - 3 (not reachable from 4), 5 alone.
        let nbs = vec![vec![2], vec![3], vec![0, 4], vec![1], vec![2], vec![]];
        assert_eq!(breadth_first(&nbs, 4), vec![4, 2, 0, 1, 3, 5]);
        assert_eq!(breadth_first(&[], 0), Vec::<u32>::new());
    }
}
