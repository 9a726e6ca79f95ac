//! Flat top-k, and the matrix product under it, against a plain float64 computation, with and
//! without filters.
mod common;

use std::collections::HashSet;

use proptest::prelude::*;

use cm3_index::flat::FlatIndex;
use cm3_index::product::{PackedQueries, Scratch, SimdLevel, inner_products, push_row};
use cm3_index::topk::TopK;
use cm3_index::{MipsIndex, SearchParams, Storage};

fn f64_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// `n` stored vectors and `nq` queries of dimension `dim` from one seeded stream (stored first),
/// the stored ones in a float32 flat index with ids 0..n.
fn data(seed: u64, n: usize, nq: usize, dim: usize) -> (Vec<f32>, Vec<f32>, FlatIndex) {
    let mut draw = common::uniform(seed);
    let base = draw(n * dim);
    let queries = draw(nq * dim);
    let ids: Vec<u64> = (0..n as u64).collect();
    let mut idx = FlatIndex::new(dim, Storage::F32);
    idx.add(&ids, &base).expect("add");
    (base, queries, idx)
}

fn f64_topk(
    base: &[f32],
    dim: usize,
    q: &[f32],
    k: usize,
    keep: impl Fn(f64, u64) -> bool,
) -> Vec<(u64, f64)> {
    let mut s: Vec<(u64, f64)> = base
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, r)| (i as u64, f64_dot(r, q)))
        .filter(|(i, s)| keep(*s, *i))
        .collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    s.truncate(k);
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn flat_topk_matches_f64(
        dim in 1usize..40,
        n in 0usize..300,
        k in 0usize..20,
        seed in any::<u64>(),
        max_score in proptest::option::of(-1.0f32..1.0),
        exclude_every in proptest::option::of(2u64..5),
    ) {
        let (base, q, idx) = data(seed, n, 1, dim);
        let exclude: HashSet<u64> = exclude_every.map(|e| (0..n as u64).filter(|i| i % e == 0).collect()).unwrap_or_default();
        let params = SearchParams {
            k,
            max_score,
            exclude: exclude_every.map(|_| &exclude),
            ..SearchParams::default()
        };
        let got = idx.search_with(&q, &params).expect("search");
        // Filter on the f64 score with a margin: float32 and float64 may disagree at the threshold.
        let want = f64_topk(&base, dim, &q, k, |sc, i| {
            max_score.is_none_or(|m| sc <= f64::from(m)) && !exclude.contains(&i)
        });
        let tol = 1e-5 * dim as f64;
        // Without a threshold the counts agree exactly; with one, a score within rounding of it
        // may fall on either side.
        if max_score.is_none() {
            prop_assert_eq!(got.len(), want.len());
        } else {
            prop_assert!(got.len().abs_diff(want.len()) <= 1, "{} vs {}", got.len(), want.len());
        }
        for (g, w) in got.iter().zip(&want) {
            // Same score at each rank; ids may differ only where scores tie within rounding.
            prop_assert!((f64::from(g.score) - w.1).abs() <= tol, "{} vs {}", g.score, w.1);
            if g.id != w.0 {
                let gs = want.iter().find(|x| x.0 == g.id).map(|x| x.1);
                let exact = f64_dot(&base[g.id as usize * dim..(g.id as usize + 1) * dim], &q);
                prop_assert!(gs.is_none_or(|gs| (gs - w.1).abs() <= 2.0 * tol) && (exact - w.1).abs() <= 2.0 * tol);
            }
            prop_assert!(!exclude.contains(&g.id));
            if let Some(m) = max_score { prop_assert!(g.score <= m); }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Batches of 16 or more queries take the packed matrix product and the SIMD skip over scores
    /// below each heap's floor: every query's top-k scores must still be the float64 ones.
    #[test]
    fn flat_batch_topk_matches_f64(
        dim in 1usize..40,
        n in 0usize..700,
        nq in 16usize..90,
        k in 0usize..12,
        seed in any::<u64>(),
        max_score in proptest::option::of(-1.0f32..1.0),
    ) {
        let (base, queries, idx) = data(seed, n, nq, dim);
        let params = SearchParams { k, max_score, ..SearchParams::default() };
        let got = idx.search_batch(&queries, &params).expect("search");
        prop_assert_eq!(got.len(), nq);
        let tol = 1e-5 * dim as f64;
        for (qi, hits) in got.iter().enumerate() {
            let q = &queries[qi * dim..(qi + 1) * dim];
            let want = f64_topk(&base, dim, q, k, |sc, _| max_score.is_none_or(|m| sc <= f64::from(m)));
            if max_score.is_none() {
                prop_assert_eq!(hits.len(), want.len());
            } else {
                prop_assert!(hits.len().abs_diff(want.len()) <= 1, "{} vs {}", hits.len(), want.len());
            }
            for (g, w) in hits.iter().zip(&want) {
                prop_assert!((f64::from(g.score) - w.1).abs() <= tol, "query {}: {} vs {}", qi, g.score, w.1);
                if let Some(m) = max_score { prop_assert!(g.score <= m); }
            }
        }
    }
}

proptest! {
    /// The packed product at every SIMD level this CPU runs (AVX-512, AVX2, scalar), every shape
    /// (edge tiles and partial panels included), against a plain f64 product; `out` starts with
    /// stale values, which must all be overwritten.
    #[test]
    fn product_matches_f64(
        nq in 1usize..90,
        rows in 1usize..40,
        dim in 1usize..70,
        seed in any::<u64>(),
    ) {
        let mut draw = common::uniform(seed);
        let queries = draw(nq * dim);
        let base = draw(rows * dim);
        for level in SimdLevel::available() {
            let mut out = vec![f32::NAN; 3];
            let packed = PackedQueries::for_level(&queries, dim, level);
            inner_products(&packed, &base, &mut out, &mut Scratch::default());
            prop_assert_eq!(out.len(), nq * rows);
            for q in 0..nq {
                for r in 0..rows {
                    let want = f64_dot(&queries[q * dim..(q + 1) * dim], &base[r * dim..(r + 1) * dim]);
                    let got = f64::from(out[q * rows + r]);
                    prop_assert!((got - want).abs() <= 1e-5 * (dim as f64).max(1.0),
                        "{:?}: q {} r {}: {} vs {}", level, q, r, got, want);
                }
            }
        }
    }

    /// Offering a row of scores with the SIMD skip below the heap's floor, at every level, keeps
    /// what offering each score in turn keeps (rows of every length, filters included).
    #[test]
    fn push_row_keeps_what_a_plain_loop_keeps(
        rows in proptest::collection::vec(proptest::collection::vec(-1.0f32..1.0, 0..300), 1..6),
        k in 1usize..20,
        skip_odd in any::<bool>(),
    ) {
        let admits = |_: f32, pos: usize| !skip_odd || pos.is_multiple_of(2);
        let mut plain = TopK::new(k);
        let mut offset = 0;
        for row in &rows {
            for (j, &s) in row.iter().enumerate() {
                if plain.would_accept(s) && admits(s, offset + j) {
                    plain.push(s, offset + j);
                }
            }
            offset += row.len();
        }
        let want = plain.into_sorted();
        for level in SimdLevel::available() {
            let mut heap = TopK::new(k);
            let mut offset = 0;
            for row in &rows {
                push_row(level, row, offset, &mut heap, admits);
                offset += row.len();
            }
            prop_assert_eq!(heap.into_sorted(), want.clone(), "{:?}", level);
        }
    }
}
