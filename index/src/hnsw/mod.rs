//! Approximate maximum-inner-product search over unit vectors with an HNSW graph (distance
//! `1 - <a, b>`, so the nearest neighbours are the largest inner products), built by cm3
//! ([`build`], as FAISS's `IndexHNSWFlat` builds it) and searched from a flat copy ([`Links`]).
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::files::{read_json, write_ids, write_json};
use crate::spec::{DEFAULT_EF_SEARCH, IndexSpec};
use crate::vectors::read_ids;
use crate::{Hit, MipsIndex, SearchParams, check_add, check_rows};

mod build;
mod search_file;

use build::Builder;

const META: &str = "hnsw.json";
const IDS: &str = "ids.npy";
/// The graph and its vectors ([`search_file`]).
const SEARCH: &str = "search.bin";

/// An HNSW graph and the ids of its points (`ids[p]` is the id of the point at position `p`).
///
/// A saved index is its search copy (`search.bin`: the links renumbered for locality, and the
/// vectors in that order), which is all a search reads. Adding builds on a [`Builder`] made from
/// it (or from nothing); the search copy is made again from the builder on the first search after
/// an `add` (not after each `add`: a build adds shard after shard) or streamed from it on saving.
pub struct HnswIndex {
    /// The graph while it grows; `None` for a loaded index nothing has been added to.
    builder: Option<Builder>,
    /// The directory the index was loaded from (named in errors).
    dir: Option<PathBuf>,
    /// The search copy: loaded, or made from the builder when first searched.
    links: OnceLock<Links>,
    ids: Vec<u64>,
    dim: usize,
    m: usize,
    ef_construction: usize,
    /// Why an `add` failed part-way (a panic inside the builder): the graph is gone with it.
    broken: Option<String>,
    /// The size [`MipsIndex::reserve`] announced, reserved when the builder exists.
    reserved: usize,
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
            builder: Some(Builder::new(dim, m, ef_construction)),
            dir: None,
            links: OnceLock::new(),
            ids: Vec::new(),
            dim,
            m,
            ef_construction,
            broken: None,
            reserved: 0,
        })
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let meta: HnswMeta = read_json(&dir.join(META))?;
        if !(2..=256).contains(&meta.m) {
            return Err(IndexError::Corrupt {
                path: dir.join(META),
                reason: format!("HNSW M {} outside 2..=256", meta.m),
            });
        }
        let ids = read_ids(&dir.join(IDS))?;
        if ids.len() != meta.count {
            return Err(IndexError::Corrupt {
                path: dir.join(IDS),
                reason: format!("{} ids, the graph holds {}", ids.len(), meta.count),
            });
        }
        let links = if meta.count == 0 {
            Links::empty(meta.dim)
        } else {
            search_file::read(&dir.join(SEARCH), meta.count, meta.dim)?.ok_or_else(|| {
                IndexError::Corrupt {
                    path: dir.join(SEARCH),
                    reason: "missing: this HNSW index was saved by a cm3 before 0.1 kept its \
                             graph there (rebuild with --rebuild)"
                        .into(),
                }
            })?
        };
        Ok(Self {
            builder: None,
            dir: Some(dir.to_path_buf()),
            links: OnceLock::from(links),
            ids,
            dim: meta.dim,
            m: meta.m,
            ef_construction: meta.ef_construction,
            broken: None,
            reserved: 0,
        })
    }

    /// An error if an earlier `add` failed part-way (nothing may be searched or saved then).
    fn check_whole(&self) -> Result<()> {
        match &self.broken {
            None => Ok(()),
            Some(reason) => Err(IndexError::Backend {
                op: "HNSW index",
                reason: format!(
                    "an earlier insert failed ({reason}); this index in memory is incomplete: \
                     load the saved one again"
                ),
            }),
        }
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
        // Unset only after an `add` or on a new index, when the builder is in memory.
        let links = self.links.get_or_init(|| match &self.builder {
            Some(b) => Links::from_builder(b),
            None => Links::empty(self.dim),
        });
        loop {
            let found = links.search(q, ef.max(want));
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
            // Nothing to add: no reason to make a builder or drop the search copy.
            return Ok(());
        }
        let base = self.ids.len();
        if u32::try_from(base + ids.len()).is_err() {
            return Err(IndexError::Invalid(format!(
                "an HNSW index holds at most {} vectors; {base} + {} asked",
                u32::MAX,
                ids.len()
            )));
        }
        self.check_whole()?;
        let mut builder =
            match self.builder.take() {
                Some(b) => b,
                // A loaded index: the builder is made from its search copy, which it replaces (kept
                // if the copy cannot be built on).
                None => match self.links.get() {
                    Some(links) => Builder::from_links(links, self.m, self.ef_construction)
                        .map_err(|reason| IndexError::Corrupt {
                            path: self.dir.clone().unwrap_or_default().join(SEARCH),
                            reason,
                        })?,
                    None => Builder::new(self.dim, self.m, self.ef_construction),
                },
            };
        builder.reserve(self.reserved.saturating_sub(builder.len()));
        self.links = OnceLock::new();
        let positions: Vec<u32> = (base as u32..(base + ids.len()) as u32).collect();
        let grown = catch_unwind(AssertUnwindSafe(move || {
            builder.insert(vectors, &positions);
            builder
        }))
        .map_err(|p| {
            // The graph went with the panic: this index must not search or save what is left.
            let reason = panic_reason(p);
            self.broken = Some(reason.clone());
            IndexError::Backend {
                op: "HNSW insert",
                reason,
            }
        })?;
        self.builder = Some(grown);
        self.ids.extend_from_slice(ids);
        self.links = OnceLock::new();
        Ok(())
    }

    fn reserve(&mut self, additional: usize) {
        self.reserved = self.ids.len() + additional;
        self.ids.reserve(additional);
        if let Some(b) = &mut self.builder {
            b.reserve(additional);
        }
    }

    fn search_batch(&self, queries: &[f32], params: &SearchParams<'_>) -> Result<Vec<Vec<Hit>>> {
        check_rows("queries", queries.len(), self.dim)?;
        self.check_whole()?;
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
        self.check_whole()?;
        // The graph changes with every insertion: it is written whole. From the search copy in
        // memory, or streamed from the builder (a build has not searched, and a second copy of
        // the vectors would double its memory).
        let search = dir.join(SEARCH);
        match (self.links.get(), &self.builder) {
            (Some(links), _) if !self.ids.is_empty() => {
                search_file::write(&search, &links.graph, links.rows())?
            }
            (_, Some(b)) if !self.ids.is_empty() => {
                let (graph, order) = Adjacency::from_builder(b);
                let rows = order.iter().map(|&node| b.row(node));
                search_file::write(&search, &graph, rows)?
            }
            _ => {}
        }
        write_ids(&dir.join(IDS), &self.ids)?;
        let meta = HnswMeta {
            dim: self.dim,
            m: self.m,
            ef_construction: self.ef_construction,
            count: self.ids.len(),
        };
        write_json(&dir.join(META), &meta)
    }
}

/// The graph's links in flat arrays, and a contiguous copy of its vectors in search order.
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
    /// `position[i]`: the index's position (row of its ids) of point `i`.
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

impl Links {
    /// No points.
    fn empty(dim: usize) -> Self {
        Self {
            data: Vectors::Plain(Vec::new()),
            graph: Adjacency {
                dim,
                offsets: vec![0],
                level0: Vec::new(),
                upper: Vec::new(),
                entry: 0,
                position: Vec::new(),
            },
        }
    }

    /// The search copy of the builder's graph.
    fn from_builder(b: &Builder) -> Self {
        if b.entry().is_none() {
            return Self::empty(b.dim);
        }
        let (graph, order) = Adjacency::from_builder(b);
        let dim = b.dim;
        let mut data = Vectors::zeros(order.len() * dim);
        for (row, &node) in data.as_mut_slice().chunks_exact_mut(dim.max(1)).zip(&order) {
            row.copy_from_slice(b.row(node));
        }
        Self { data, graph }
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
        let neighbours = |c: u32, out: &mut Vec<u32>| {
            out.clear();
            out.extend_from_slice(&level0[offsets[c as usize]..offsets[c as usize + 1]]);
        };
        let mut found = beam_search(n, (ep, d_ep), ef, None, neighbours, dist4);
        for (_, i) in &mut found {
            *i = position[*i as usize];
        }
        found
    }
}

/// HNSW's beam search of one layer: the `ef` nearest points found from the entry `(point,
/// distance)`, as (distance, point), nearest first. `neighbours(p, out)` puts p's links in `out`;
/// `dist4` gives the distances to up to four points at once (four independent streams of loads,
/// as FAISS does: the walk is bound by memory, not arithmetic); `skip` is never visited (a point
/// being inserted).
fn beam_search(
    n: usize,
    (ep, d_ep): (u32, f32),
    ef: usize,
    skip: Option<u32>,
    mut neighbours: impl FnMut(u32, &mut Vec<u32>),
    dist4: impl Fn(&[u32]) -> [f32; 4],
) -> Vec<(f32, u32)> {
    VISITED.with(|v| {
        let mut visited = v.borrow_mut();
        visited.start(n);
        visited.insert(ep);
        if let Some(s) = skip {
            visited.insert(s);
        }
        let mut candidates = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<(Dist, u32)> = BinaryHeap::with_capacity(ef + 1);
        let (mut links, mut fresh) = (Vec::with_capacity(64), Vec::with_capacity(64));
        candidates.push(Reverse((Dist(d_ep), ep)));
        results.push((Dist(d_ep), ep));
        while let Some(Reverse((Dist(dc), c))) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|w| dc > w.0.0) {
                break;
            }
            neighbours(c, &mut links);
            fresh.clear();
            fresh.extend(links.iter().copied().filter(|&nb| visited.insert(nb)));
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
            .map(|(d, i)| (d.0, i))
            .collect()
    })
}

/// Points in breadth-first order from `entry` over the layer-0 links (`order[i]` is the old number
/// of the new point `i`); points the walk does not reach follow in their old order.
/// `neighbours(p, out)` puts point `p`'s links in `out`.
fn breadth_first(n: usize, entry: u32, mut neighbours: impl FnMut(u32, &mut Vec<u32>)) -> Vec<u32> {
    let mut seen = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut next = 0;
    let mut buf = Vec::new();
    for start in std::iter::once(entry).chain(0..n as u32) {
        if seen.get(start as usize).copied().unwrap_or(true) {
            continue;
        }
        seen[start as usize] = true;
        order.push(start);
        while next < order.len() {
            let p = order[next];
            next += 1;
            neighbours(p, &mut buf);
            for &j in &buf {
                if !std::mem::replace(&mut seen[j as usize], true) {
                    order.push(j);
                }
            }
        }
    }
    order
}

impl Adjacency {
    /// The builder's graph over its nodes renumbered breadth-first from the entry, and the
    /// builder's node of each new number (the order the vectors are stored in).
    fn from_builder(b: &Builder) -> (Self, Vec<u32>) {
        let n = b.len();
        let entry = b.entry().unwrap_or(0);
        let order = breadth_first(n, entry, |p, out| b.links(p, 0, out));
        let mut ours = vec![0u32; n];
        for (i, &p) in order.iter().enumerate() {
            ours[p as usize] = i as u32;
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut level0 = Vec::new();
        offsets.push(0);
        let mut upper: Vec<HashMap<u32, Vec<u32>>> = Vec::new();
        for &p in &order {
            b.links(p, 0, &mut buf);
            level0.extend(buf.iter().map(|&j| ours[j as usize]));
            offsets.push(level0.len());
            let level = b.level(p);
            if upper.len() < level {
                upper.resize_with(level, HashMap::new);
            }
            for (layer, map) in upper.iter_mut().enumerate().take(level) {
                b.links(p, layer + 1, &mut buf);
                map.insert(
                    ours[p as usize],
                    buf.iter().map(|&j| ours[j as usize]).collect(),
                );
            }
        }
        let position = order.iter().map(|&p| b.position[p as usize]).collect();
        let graph = Self {
            dim: b.dim,
            offsets,
            level0,
            upper,
            entry: ours[entry as usize],
            position,
        };
        (graph, order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breadth_first_orders_every_point_once() {
        // 0 - 2 - 4, 1 - 3 (not reachable from 4), 5 alone.
        let nbs = [vec![2], vec![3], vec![0, 4], vec![1], vec![2], vec![]];
        let walk = |entry| {
            breadth_first(nbs.len(), entry, |p, out: &mut Vec<u32>| {
                out.clone_from(&nbs[p as usize])
            })
        };
        assert_eq!(walk(4), vec![4, 2, 0, 1, 3, 5]);
        assert_eq!(breadth_first(0, 0, |_, _| {}), Vec::<u32>::new());
    }
}
