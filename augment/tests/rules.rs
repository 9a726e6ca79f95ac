//! Property tests of the retrieval rules on synthetic embeddings, against a brute-force oracle:
//! no neighbour above the relevance threshold, never the pair itself, its duplicates or an
//! excluded id, no document twice, no two near-copies, per-modality counts (and a shortfall only
//! when the bank truly has nothing more), the sampled subset, and determinism by seed.
use std::collections::HashSet;

use cm3_augment::AugmentConfig;
use cm3_augment::bank::Bank;
use cm3_augment::retrieve::{QueryPair, retrieve};
use cm3_augment::select::{FoundBy, Rules, choose, sample};
use cm3_index::flat::FlatIndex;
use cm3_index::{Hit, MipsIndex, Storage};
use proptest::prelude::*;

const DIM: usize = 16;

/// A tiny deterministic generator for the synthetic vectors (the test's own, not the crate's).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` clustered unit vectors: `clusters` centres, each point a centre plus noise of `spread`, so
/// that near-copies (score > 0.9), mid-range and distant documents all occur.
fn clustered(n: usize, clusters: usize, spread: f32, seed: u64) -> Vec<f32> {
    let mut r = Lcg(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| {
            let mut c: Vec<f32> = (0..DIM).map(|_| r.next()).collect();
            unit(&mut c);
            c
        })
        .collect();
    let mut out = Vec::with_capacity(n * DIM);
    for i in 0..n {
        let c = &centres[i % clusters];
        let mut v: Vec<f32> = c.iter().map(|x| x + spread * r.next()).collect();
        unit(&mut v);
        out.extend(v);
    }
    out
}

struct World {
    bank: Bank,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    pairs: Vec<QueryPair>,
    image_q: Vec<f32>,
    text_q: Vec<f32>,
    excluded: HashSet<u64>,
    /// Image key of each bank id.
    key_of: std::collections::HashMap<u64, u64>,
}

fn world(n: usize, clusters: usize, spread: f32, seed: u64, n_excluded: usize) -> World {
    let vectors = clustered(n, clusters, spread, seed);
    let ids: Vec<u64> = (0..n as u64).map(|i| i * 7 + 1000).collect();
    // Every fifth pair shares its image with the next one (COCO's several captions per image).
    let keys: Vec<u64> = (0..n as u64)
        .map(|i| if i % 5 == 1 { i - 1 } else { i })
        .collect();
    let images: Vec<(u64, u64)> = keys.iter().zip(&ids).map(|(&k, &id)| (k, id)).collect();
    let excluded: HashSet<u64> = ids
        .iter()
        .rev()
        .step_by(3)
        .take(n_excluded)
        .copied()
        .collect();
    let mut index = FlatIndex::new(DIM, Storage::F32);
    index.add(&ids, &vectors).expect("add");
    let bank = Bank::in_memory(Box::new(index), &ids, &vectors, images, &excluded).expect("bank");
    // Queries: the first 12 pairs of the bank; image query = its vector with a little noise
    // (so some candidates score above 0.9), text query = another noisy copy.
    let q = 12.min(n);
    let mut r = Lcg(seed ^ 0xabc);
    let noisy = |r: &mut Lcg, amount: f32| -> Vec<f32> {
        let mut out = Vec::with_capacity(q * DIM);
        for i in 0..q {
            let mut v: Vec<f32> = vectors[i * DIM..(i + 1) * DIM]
                .iter()
                .map(|x| x + amount * r.next())
                .collect();
            unit(&mut v);
            out.extend(v);
        }
        out
    };
    let image_q = noisy(&mut r, 0.05);
    let text_q = noisy(&mut r, 0.3);
    let pairs = (0..q)
        .map(|i| QueryPair {
            id: ids[i],
            image_key: keys[i],
        })
        .collect();
    World {
        bank,
        key_of: ids.iter().copied().zip(keys.iter().copied()).collect(),
        ids,
        vectors,
        pairs,
        image_q,
        text_q,
        excluded,
    }
}

/// Every bank document ranked by its exact (f64) score with `q`, best first, above nothing.
fn brute_force(w: &World, q: &[f32]) -> Vec<Hit> {
    let mut all: Vec<(f64, u64)> = w
        .ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let s: f64 = w.vectors[i * DIM..(i + 1) * DIM]
                .iter()
                .zip(q)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (s, id)
        })
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.into_iter()
        .map(|(s, id)| Hit {
            id,
            score: s as f32,
        })
        .collect()
}

fn near(a: f32, b: f32, eps: f32) -> bool {
    (a - b).abs() < eps
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rules_hold_and_match_a_brute_force_oracle(
        n in 20usize..160,
        clusters in 1usize..8,
        spread in 0.05f32..0.6,
        seed in any::<u64>(),
        by_image in 0usize..4,
        by_text in 0usize..4,
        sample_k in 1usize..5,
        relevance in prop::sample::select(vec![0.8f32, 0.9, 0.95]),
        n_excluded in 0usize..10,
    ) {
        prop_assume!(by_image + by_text > 0);
        let w = world(n, clusters, spread, seed, n_excluded);
        let cfg = AugmentConfig {
            relevance,
            by_image,
            by_text,
            sample: sample_k,
            seed: seed ^ 1,
            ..AugmentConfig::default()
        };
        let (choices, _) = retrieve(&w.bank, &cfg, &w.pairs, &w.image_q, &w.text_q).expect("retrieve");
        prop_assert_eq!(choices.len(), w.pairs.len());
        let rules = Rules { relevance, by_image, by_text };
        for (i, (pair, c)) in w.pairs.iter().zip(&choices).enumerate() {
            let iq = &w.image_q[i * DIM..(i + 1) * DIM];
            let tq = &w.text_q[i * DIM..(i + 1) * DIM];
            let mut seen = HashSet::new();
            for nb in &c.neighbours {
                // relevance, recomputed exactly from the vectors
                let q = if nb.found_by == FoundBy::Image { iq } else { tq };
                let exact = brute_force(&w, q).into_iter().find(|h| h.id == nb.id).expect("in bank");
                prop_assert!(near(exact.score, nb.score, 1e-4), "score {} vs exact {}", nb.score, exact.score);
                prop_assert!(nb.score <= relevance);
                // no self, no duplicate of the pair's image, nothing excluded, nothing twice
                prop_assert_ne!(nb.id, pair.id);
                prop_assert_ne!(w.key_of[&nb.id], pair.image_key);
                prop_assert!(!w.excluded.contains(&nb.id));
                prop_assert!(seen.insert(nb.id));
            }
            // diversity: no two chosen documents are near-copies
            for a in &c.neighbours {
                for b in &c.neighbours {
                    if a.id != b.id {
                        prop_assert!(w.bank.similarity(a.id, b.id) <= relevance);
                    }
                }
            }
            // per-modality counts and the shortfall
            let by = |m: FoundBy| c.neighbours.iter().filter(|x| x.found_by == m).count();
            prop_assert_eq!(by(FoundBy::Image) + c.short_by_image, by_image);
            prop_assert_eq!(by(FoundBy::Text) + c.short_by_text, by_text);
            // image-found documents come first, each group by descending score
            let order: Vec<FoundBy> = c.neighbours.iter().map(|x| x.found_by).collect();
            let mut sorted_order = order.clone();
            sorted_order.sort_by_key(|m| *m == FoundBy::Text);
            prop_assert_eq!(&order, &sorted_order);
            // sampled subset
            let sampled = c.neighbours.iter().filter(|x| x.sampled).count();
            prop_assert_eq!(sampled, sample_k.min(c.neighbours.len()));
            // The oracle: the same greedy choice over every bank document ranked exactly. Skip the
            // rare draws where rounding could flip a decision (a score at the threshold or a tie).
            let (bi, bt) = (brute_force(&w, iq), brute_force(&w, tq));
            let fragile = bi.iter().chain(&bt).any(|h| near(h.score, relevance, 1e-4))
                || bi.windows(2).chain(bt.windows(2)).any(|p| near(p[0].score, p[1].score, 1e-6));
            if !fragile {
                let skip = |id: u64| id == pair.id || w.key_of[&id] == pair.image_key || w.excluded.contains(&id);
                let mut want = choose(&bi, &bt, &rules, skip, |a, b| w.bank.similarity(a, b));
                sample(&mut want.neighbours, sample_k, cfg.seed, pair.id);
                let got: Vec<(u64, FoundBy, bool)> = c.neighbours.iter().map(|x| (x.id, x.found_by, x.sampled)).collect();
                let exp: Vec<(u64, FoundBy, bool)> = want.neighbours.iter().map(|x| (x.id, x.found_by, x.sampled)).collect();
                prop_assert_eq!(got, exp);
                prop_assert_eq!((c.short_by_image, c.short_by_text), (want.short_by_image, want.short_by_text));
            }
        }
        // determinism: the same seed gives the same result; another seed may sample differently
        let (again, _) = retrieve(&w.bank, &cfg, &w.pairs, &w.image_q, &w.text_q).expect("retrieve");
        prop_assert_eq!(&choices, &again);
    }
}

#[test]
fn a_pair_searched_again_when_its_first_candidates_run_out() {
    // The query is axis 0. Forty documents are near-copies of one another (score 0.85 with the
    // query, 0.99+ with each other) and fill the first candidate list; forty diverse ones score
    // 0.5. After the first near-copy, diversity skips the rest, so the search must widen.
    let mut r = Lcg(3);
    let mut vectors = Vec::new();
    let axis = |i: usize| -> Vec<f32> { (0..DIM).map(|d| f32::from(u8::from(d == i))).collect() };
    for _ in 0..40 {
        let mut v: Vec<f32> = axis(0)
            .iter()
            .zip(axis(1))
            .map(|(a, b)| 0.85 * a + 0.527 * b)
            .collect();
        v.iter_mut().skip(2).for_each(|x| *x = 0.01 * r.next());
        unit(&mut v);
        vectors.extend(v);
    }
    for i in 0..40 {
        let mut v = vec![0.0f32; DIM];
        v[0] = 0.5;
        v[2 + i % (DIM - 2)] = 0.866;
        v.iter_mut().skip(2).for_each(|x| *x += 0.05 * r.next());
        unit(&mut v);
        vectors.extend(v);
    }
    let ids: Vec<u64> = (1..=80).collect();
    let mut index = FlatIndex::new(DIM, Storage::F32);
    index.add(&ids, &vectors).expect("add");
    let images = ids.iter().map(|&id| (id, id)).collect();
    let bank =
        Bank::in_memory(Box::new(index), &ids, &vectors, images, &HashSet::new()).expect("bank");
    let q = axis(0);
    let pairs = [QueryPair {
        id: 999,
        image_key: 999,
    }];
    let cfg = AugmentConfig::default();
    let (choices, stats) = retrieve(&bank, &cfg, &pairs, &q, &q).expect("retrieve");
    assert_eq!(stats.widened, 1, "{stats:?}");
    let c = &choices[0];
    assert_eq!(c.neighbours.len(), 4, "{c:?}");
    assert_eq!((c.short_by_image, c.short_by_text), (0, 0));
    let near_copies = c.neighbours.iter().filter(|n| n.id <= 40).count();
    assert_eq!(
        near_copies, 1,
        "one near-copy, then diverse documents: {c:?}"
    );
}

#[test]
fn query_dropout_removes_a_fifth_of_the_tokens_and_is_seeded() {
    use cm3_augment::dropout::query_dropout;
    let (mut total, mut dropped) = (0u64, 0u64);
    for id in 0..2_000u64 {
        let len = 5 + (id % 26) as usize;
        let tokens: Vec<u32> = (0..len as u32).map(|t| 300 + t).collect();
        let q = query_dropout(&tokens, 0.2, 42, id);
        total += u64::from(q.tokens);
        dropped += u64::from(q.dropped);
        assert_eq!(q, query_dropout(&tokens, 0.2, 42, id), "seeded");
    }
    let frac = dropped as f64 / total as f64;
    assert!((0.18..=0.22).contains(&frac), "dropped fraction {frac}");
    let other: Vec<_> = (0..50u64)
        .map(|id| query_dropout(&[1, 2, 3, 4, 5, 6, 7, 8], 0.2, 43, id).row)
        .collect();
    let same: Vec<_> = (0..50u64)
        .map(|id| query_dropout(&[1, 2, 3, 4, 5, 6, 7, 8], 0.2, 42, id).row)
        .collect();
    assert_ne!(other, same, "another seed drops other tokens");
}
