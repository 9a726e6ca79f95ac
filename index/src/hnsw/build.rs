//! Building the HNSW graph (Malkov & Yashunin 2018) the way FAISS's `IndexHNSWFlat` builds it, so
//! that recall at a given efSearch matches FAISS's:
//!
//! - a point's level is `floor(-ln(u) / ln(M))`; layer 0 holds up to `2M` links, the others `M`;
//! - points of one batch are inserted highest level first, each level's points in parallel;
//! - an insertion descends greedily to its level, then on each of its layers searches with
//!   `efConstruction`, keeps the candidates that the neighbour-selection heuristic keeps (a
//!   candidate closer to an already kept one than to the new point is dropped; FAISS's
//!   `shrink_neighbor_list`, applied only when there are more candidates than links) and links
//!   both ways; a full neighbour list that gains a link is shrunk by the same heuristic.
//!
//! Links live in flat arrays of atomics (a node's slots are read and written only under the
//! node's lock, the atomics only make the shared arrays safe to touch from several threads), so
//! that a build holds about the vectors plus `2M` u32 per point, as FAISS does (hnsw_rs, which
//! built cm3's graphs before, held 1.6x FAISS's memory and took 3.6x its time).
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cm3_core::rng::SplitMix64;
use rayon::prelude::*;

use super::{Links, beam_search, dot, dot4};

/// The highest level a point is given (FAISS's level distribution practically never goes past it).
pub(super) const MAX_LEVEL: usize = 15;
/// Seed of the level draws (a point's level depends only on its node number).
const LEVEL_SEED: u64 = 0x4853_574c_4556_454c;
/// No node (an empty slot of the entry point before the first insertion).
const NONE: u32 = u32::MAX;

/// An HNSW graph being built: the vectors by node, each node's level and links, and the entry.
pub(super) struct Builder {
    pub(super) dim: usize,
    pub(super) m: usize,
    pub(super) ef_construction: usize,
    /// Vectors by node (`dim` each).
    pub(super) data: Vec<f32>,
    /// The index position (row of `ids`) of each node.
    pub(super) position: Vec<u32>,
    levels: Vec<u8>,
    /// Layer 0: node `i`'s links are `slots0[i * 2M..][..count0[i]]`.
    slots0: Vec<AtomicU32>,
    count0: Vec<AtomicU16>,
    /// Layers 1..: node `i`'s layer `l` list is list number `upper_start[i] + l - 1`, its links
    /// `upper_slots[list * M..][..upper_count[list]]` (`upper_start` is unused at level 0).
    upper_start: Vec<u32>,
    upper_slots: Vec<AtomicU32>,
    upper_count: Vec<AtomicU16>,
    locks: Vec<Mutex<()>>,
    /// The entry node (a node of the highest level), or [`NONE`].
    entry: u32,
}

/// A node's lock; a poisoned lock (a panic elsewhere) is still usable: the links it guards are
/// whole numbers whatever happened, and the panic itself is reported by the caller.
fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Builder {
    pub(super) fn new(dim: usize, m: usize, ef_construction: usize) -> Self {
        Self {
            dim,
            m,
            ef_construction,
            data: Vec::new(),
            position: Vec::new(),
            levels: Vec::new(),
            slots0: Vec::new(),
            count0: Vec::new(),
            upper_start: Vec::new(),
            upper_slots: Vec::new(),
            upper_count: Vec::new(),
            locks: Vec::new(),
            entry: NONE,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.levels.len()
    }

    pub(super) fn entry(&self) -> Option<u32> {
        (self.entry != NONE).then_some(self.entry)
    }

    pub(super) fn level(&self, node: u32) -> usize {
        usize::from(self.levels[node as usize])
    }

    fn cap(&self, layer: usize) -> usize {
        if layer == 0 { 2 * self.m } else { self.m }
    }

    /// Node's vector.
    pub(super) fn row(&self, node: u32) -> &[f32] {
        let at = node as usize * self.dim;
        &self.data[at..at + self.dim]
    }

    /// Where node's list of `layer` lives: (slots, count).
    fn list(&self, node: u32, layer: usize) -> (&[AtomicU32], &AtomicU16) {
        let cap = self.cap(layer);
        if layer == 0 {
            let i = node as usize;
            (&self.slots0[i * cap..(i + 1) * cap], &self.count0[i])
        } else {
            let list = self.upper_start[node as usize] as usize + layer - 1;
            (
                &self.upper_slots[list * cap..(list + 1) * cap],
                &self.upper_count[list],
            )
        }
    }

    /// Node's links on `layer`, read while its lock is held by the caller.
    fn read_locked(&self, node: u32, layer: usize, out: &mut Vec<u32>) {
        let (slots, count) = self.list(node, layer);
        out.clear();
        out.extend(
            slots[..usize::from(count.load(Relaxed))]
                .iter()
                .map(|s| s.load(Relaxed)),
        );
    }

    /// Node's links on `layer` (a copy, taken under its lock).
    pub(super) fn links(&self, node: u32, layer: usize, out: &mut Vec<u32>) {
        let _guard = lock(&self.locks[node as usize]);
        self.read_locked(node, layer, out);
    }

    /// Replace node's links on `layer` (its lock held by the caller).
    fn write_locked(&self, node: u32, layer: usize, links: impl Iterator<Item = u32>) {
        let (slots, count) = self.list(node, layer);
        let mut n = 0;
        for (slot, l) in slots.iter().zip(links) {
            slot.store(l, Relaxed);
            n += 1;
        }
        count.store(n as u16, Relaxed);
    }

    /// A builder holding a saved graph (its search copy), to add to it: node `i` is the copy's
    /// point `i`. Links beyond a layer's capacity (a graph made with another M) are cut.
    pub(super) fn from_links(
        links: &Links,
        m: usize,
        ef_construction: usize,
    ) -> Result<Self, String> {
        let g = &links.graph;
        let n = g.position.len();
        if n == 0 {
            return Ok(Self::new(g.dim, m, ef_construction));
        }
        if g.upper.len() > MAX_LEVEL {
            return Err(format!(
                "{} upper layers; a graph has at most {MAX_LEVEL}",
                g.upper.len()
            ));
        }
        let mut levels = vec![0u8; n];
        for (layer, map) in g.upper.iter().enumerate() {
            for &p in map.keys() {
                let l = &mut levels[p as usize];
                *l = (*l).max(layer as u8 + 1);
            }
        }
        // The entry must be a point of the top level (a damaged copy could name another).
        let top = levels.iter().copied().max().unwrap_or(0);
        if levels[g.entry as usize] != top {
            return Err(format!(
                "the entry point {} is at level {}, the graph reaches level {top}",
                g.entry, levels[g.entry as usize]
            ));
        }
        let mut b = Self::new(g.dim, m, ef_construction);
        b.push_linked(
            links.data.as_slice(),
            &g.position,
            &levels,
            g.entry,
            |i, layer| {
                if layer == 0 {
                    g.level0[g.offsets[i as usize]..g.offsets[i as usize + 1]].to_vec()
                } else {
                    // A link to a point that does not reach the layer has no list there to
                    // link back from: dropped (only a damaged copy has one).
                    let mut l = g.upper[layer - 1].get(&i).cloned().unwrap_or_default();
                    l.retain(|&j| usize::from(levels[j as usize]) >= layer);
                    l
                }
            },
        );
        Ok(b)
    }

    /// Fill this empty builder with `vectors` as nodes at `positions`, their links given by
    /// `links(node, layer)` (a graph read back from disk), without searching: `levels[i]` is
    /// node i's level.
    fn push_linked(
        &mut self,
        vectors: &[f32],
        positions: &[u32],
        levels: &[u8],
        entry: u32,
        mut links: impl FnMut(u32, usize) -> Vec<u32>,
    ) {
        debug_assert_eq!(self.len(), 0, "a saved graph fills an empty builder");
        self.grow(vectors, positions, levels);
        for i in 0..levels.len() as u32 {
            for layer in 0..=usize::from(levels[i as usize]) {
                let cap = self.cap(layer);
                self.write_locked(i, layer, links(i, layer).into_iter().take(cap));
            }
        }
        self.entry = entry;
    }

    /// Make room for `nodes` more nodes at once, so that a graph whose final size is known
    /// (a part of a parted bank) is allocated once instead of grown by doubling: the reallocated
    /// buffers are what the allocator kept after a part was dropped.
    pub(super) fn reserve(&mut self, nodes: usize) {
        let (cap0, dim) = (self.cap(0), self.dim);
        self.data.reserve(nodes * dim);
        self.position.reserve(nodes);
        self.levels.reserve(nodes);
        self.slots0.reserve(nodes * cap0);
        self.count0.reserve(nodes);
        self.upper_start.reserve(nodes);
        self.locks.reserve(nodes);
    }

    /// Room for new nodes: their vectors, positions, levels and empty link lists.
    fn grow(&mut self, vectors: &[f32], positions: &[u32], levels: &[u8]) {
        self.data.extend_from_slice(vectors);
        self.position.extend_from_slice(positions);
        let (cap0, cap) = (self.cap(0), self.cap(1));
        for &level in levels {
            self.levels.push(level);
            self.slots0.extend((0..cap0).map(|_| AtomicU32::new(NONE)));
            self.count0.push(AtomicU16::new(0));
            self.upper_start.push(self.upper_count.len() as u32);
            for _ in 0..level {
                self.upper_slots
                    .extend((0..cap).map(|_| AtomicU32::new(NONE)));
                self.upper_count.push(AtomicU16::new(0));
            }
            self.locks.push(Mutex::new(()));
        }
    }

    /// Insert `vectors` (`dim` each) as new nodes at index positions `positions`.
    pub(super) fn insert(&mut self, vectors: &[f32], positions: &[u32]) {
        let base = self.len() as u32;
        let ml = 1.0 / (self.m as f64).ln();
        let levels: Vec<u8> = (0..positions.len() as u64)
            .map(|i| {
                let u = SplitMix64::for_pair(LEVEL_SEED, 0, u64::from(base) + i).next_f64();
                // u in [0, 1): 1 - u in (0, 1], so the logarithm is finite.
                ((-(1.0 - u).ln() * ml) as usize).min(MAX_LEVEL) as u8
            })
            .collect();
        self.grow(vectors, positions, &levels);
        // Highest level first (FAISS's order): the first points make the upper layers, which
        // every later insertion descends through.
        let mut order: Vec<u32> = (base..base + levels.len() as u32).collect();
        // Each level's points in a seeded random order, as FAISS shuffles them ("to get rid of
        // dataset order bias": a shard arrives sorted or clustered, and rayon hands each thread a
        // contiguous run).
        let mut rng = SplitMix64::for_pair(LEVEL_SEED, 1, u64::from(base));
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order.sort_by_key(|&n| std::cmp::Reverse(self.levels[n as usize]));
        let mut rest = &order[..];
        while let Some(&first) = rest.first() {
            let level = self.levels[first as usize];
            let end = rest
                .iter()
                .position(|&n| self.levels[n as usize] != level)
                .unwrap_or(rest.len());
            let (bucket, after) = rest.split_at(end);
            rest = after;
            let mut bucket = bucket;
            // A point above the graph's top becomes the entry: inserted alone, before the others
            // of its level, which then descend from it.
            if self
                .entry()
                .is_none_or(|e| self.level(e) < usize::from(level))
            {
                if let Some(e) = self.entry() {
                    self.insert_one(first, e);
                }
                self.entry = first;
                bucket = &bucket[1..];
            }
            let entry = self.entry;
            let this = &*self;
            bucket
                .par_iter()
                .for_each(|&node| this.insert_one(node, entry));
        }
    }

    /// Link `node` into the graph entered at `entry`.
    fn insert_one(&self, node: u32, entry: u32) {
        let q = self.row(node);
        let level = self.level(node);
        let top = self.level(entry);
        let mut buf = Vec::with_capacity(2 * self.m);
        let (mut ep, mut d_ep) = (entry, self.dist(q, entry));
        for layer in (level + 1..=top).rev() {
            (ep, d_ep) = self.greedy(q, ep, d_ep, layer, &mut buf);
        }
        for layer in (0..=level.min(top)).rev() {
            let found = self.search_layer(q, node, ep, d_ep, layer);
            let Some(&(d, nearest)) = found.first() else {
                continue;
            };
            let chosen = self.shrink(found, self.cap(layer));
            {
                // Merged with what is there: a point of the same level inserted meanwhile may
                // already have linked to this one (FAISS adds these links one by one too).
                let _guard = lock(&self.locks[node as usize]);
                self.read_locked(node, layer, &mut buf);
                let mut all = chosen.clone();
                for &n in buf.iter() {
                    if !all.iter().any(|&(_, c)| c == n) {
                        all.push((self.dist(q, n), n));
                    }
                }
                if all.len() > chosen.len() {
                    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    all = self.shrink(all, self.cap(layer));
                }
                self.write_locked(node, layer, all.iter().map(|&(_, n)| n));
            }
            for &(_, other) in &chosen {
                self.add_link(other, node, layer, &mut buf);
            }
            (ep, d_ep) = (nearest, d);
        }
    }

    fn dist(&self, q: &[f32], node: u32) -> f32 {
        1.0 - dot(q, self.row(node))
    }

    /// Greedy walk on `layer` from `ep` to the nearest point it can reach.
    fn greedy(
        &self,
        q: &[f32],
        mut ep: u32,
        mut d_ep: f32,
        layer: usize,
        buf: &mut Vec<u32>,
    ) -> (u32, f32) {
        loop {
            self.links(ep, layer, buf);
            let mut moved = false;
            for &c in buf.iter() {
                let d = self.dist(q, c);
                if d < d_ep {
                    (ep, d_ep, moved) = (c, d, true);
                }
            }
            if !moved {
                return (ep, d_ep);
            }
        }
    }

    /// The `efConstruction` nearest points to `q` found on `layer` from `ep`, nearest first
    /// (`node`, the point being inserted, is never among them).
    fn search_layer(
        &self,
        q: &[f32],
        node: u32,
        ep: u32,
        d_ep: f32,
        layer: usize,
    ) -> Vec<(f32, u32)> {
        let dist4 = |group: &[u32]| {
            let at = |k: usize| self.row(group.get(k).or(group.first()).copied().unwrap_or(0));
            dot4(q, [at(0), at(1), at(2), at(3)]).map(|d| 1.0 - d)
        };
        let neighbours = |c: u32, out: &mut Vec<u32>| self.links(c, layer, out);
        beam_search(
            self.len(),
            (ep, d_ep),
            self.ef_construction.max(1),
            Some(node),
            neighbours,
            dist4,
        )
    }

    /// The neighbour-selection heuristic over `candidates` (nearest first): a candidate is kept
    /// unless it is nearer to a kept one than to the query; at most `cap` kept. Fewer candidates
    /// than `cap` are all kept, as FAISS keeps them (a full list gaining a link has `cap + 1`).
    fn shrink(&self, candidates: Vec<(f32, u32)>, cap: usize) -> Vec<(f32, u32)> {
        if candidates.len() < cap {
            return candidates;
        }
        let mut kept: Vec<(f32, u32)> = Vec::with_capacity(cap);
        for (d, c) in candidates {
            let v = self.row(c);
            if kept.iter().all(|&(_, k)| 1.0 - dot(v, self.row(k)) >= d) {
                kept.push((d, c));
                if kept.len() >= cap {
                    break;
                }
            }
        }
        kept
    }

    /// Add the link `src -> dst` on `layer`, shrinking `src`'s list if it is full.
    fn add_link(&self, src: u32, dst: u32, layer: usize, buf: &mut Vec<u32>) {
        let _guard = lock(&self.locks[src as usize]);
        self.read_locked(src, layer, buf);
        if buf.contains(&dst) {
            return;
        }
        let cap = self.cap(layer);
        if buf.len() < cap {
            let (slots, count) = self.list(src, layer);
            slots[buf.len()].store(dst, Relaxed);
            count.store(buf.len() as u16 + 1, Relaxed);
            return;
        }
        let s = self.row(src);
        let mut candidates: Vec<(f32, u32)> = buf
            .iter()
            .chain(std::iter::once(&dst))
            .map(|&n| (1.0 - dot(s, self.row(n)), n))
            .collect();
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let kept = self.shrink(candidates, cap);
        self.write_locked(src, layer, kept.into_iter().map(|(_, n)| n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_data::unit_rows;

    /// Every list within its layer's capacity, on the layers its node reaches, without the node
    /// itself or a repeat; all but a few nodes reachable from the entry on layer 0.
    fn check_graph(b: &Builder) {
        let n = b.len();
        let mut buf = Vec::new();
        for node in 0..n as u32 {
            for layer in 0..=b.level(node) {
                b.links(node, layer, &mut buf);
                assert!(buf.len() <= b.cap(layer), "node {node} layer {layer}");
                assert!(!buf.contains(&node), "node {node} links to itself");
                let mut sorted = buf.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), buf.len(), "node {node}: a repeated link");
                for &j in &buf {
                    assert!(b.level(j) >= layer, "node {node} links {j} above its level");
                }
            }
        }
        let entry = b.entry().expect("entry");
        assert!((0..n as u32).all(|i| b.level(i) <= b.level(entry)));
        let order = super::super::breadth_first(n, entry, |p, out| b.links(p, 0, out));
        let mut reached = vec![false; n];
        let mut next = vec![entry];
        reached[entry as usize] = true;
        while let Some(p) = next.pop() {
            b.links(p, 0, &mut buf);
            for &j in &buf {
                if !std::mem::replace(&mut reached[j as usize], true) {
                    next.push(j);
                }
            }
        }
        assert_eq!(order.len(), n);
        // Pruning can take every in-link of a point (FAISS's and hnswlib's graphs have the same
        // property); it must stay rare.
        let lost = reached.iter().filter(|&&r| !r).count();
        eprintln!("{lost} of {n} nodes unreachable on layer 0");
        assert!(
            lost * 200 <= n,
            "{lost} of {n} nodes unreachable on layer 0"
        );
    }

    #[test]
    fn graphs_keep_their_invariants_across_batches_and_reloads() {
        let (dim, m) = (16, 4);
        let data = unit_rows(3000, dim, 1);
        let mut b = Builder::new(dim, m, 40);
        b.insert(&data[..1000 * dim], &(0..1000).collect::<Vec<u32>>());
        check_graph(&b);
        b.insert(&data[1000 * dim..], &(1000..3000).collect::<Vec<u32>>());
        check_graph(&b);
        let upper = (0..3000).filter(|&i| b.level(i) > 0).count();
        // P(level > 0) = 1/M = 0.25: 750 expected, sd about 24.
        assert!((600..900).contains(&upper), "{upper} of 3000 above layer 0");
        // Through the search copy and back: the same links, then more points on top.
        let links = Links::from_builder(&b);
        let mut again = Builder::from_links(&links, m, 40).expect("from links");
        check_graph(&again);
        assert_eq!(again.len(), 3000);
        let more = unit_rows(500, dim, 2);
        again.insert(&more, &(3000..3500).collect::<Vec<u32>>());
        check_graph(&again);
        // An empty saved graph grows like a new one.
        let mut empty = Builder::from_links(&Links::empty(dim), m, 40).expect("empty");
        empty.insert(&more, &(0..500).collect::<Vec<u32>>());
        check_graph(&empty);
        // A damaged copy: an entry below the top level is refused; an upper link to a point
        // that does not reach the layer is dropped.
        let mut links = Links::from_builder(&b);
        let low = (0..3000u32)
            .find(|&i| links.graph.upper.iter().all(|l| !l.contains_key(&i)))
            .expect("a point of level 0");
        let saved_entry = links.graph.entry;
        links.graph.entry = low;
        let err = Builder::from_links(&links, m, 40)
            .err()
            .expect("entry below the top");
        assert!(err.contains("entry point"), "{err}");
        links.graph.entry = saved_entry;
        if let Some(list) = links.graph.upper[0].values_mut().next() {
            list.push(low);
        }
        check_graph(&Builder::from_links(&links, m, 40).expect("bad link dropped"));
        let mut positions = again.position.clone();
        positions.sort_unstable();
        assert_eq!(positions, (0..3500).collect::<Vec<u32>>());
    }
}
