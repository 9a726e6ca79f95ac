//! Exactness and recall on real SIFT vectors (with an inner-product ground truth computed by
//! someone else) and on clustered 512-d unit vectors; incremental builds against one-shot builds.
mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use cm3_index::flat::FlatIndex;
use cm3_index::hnsw::HnswIndex;
use cm3_index::store;
use cm3_index::vectors::{Vectors, check_unit_rows, read_vectors};
use cm3_index::{Hit, MipsIndex, SearchParams, Storage};
use common::clustered;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sift")
        .join(name)
}

fn read_ivecs(path: &Path) -> Vec<Vec<u64>> {
    let b = fs::read(path).expect("ivecs");
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let d = i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 4;
        out.push(
            (0..d)
                .map(|i| {
                    i32::from_le_bytes(b[at + 4 * i..at + 4 * i + 4].try_into().expect("4")) as u64
                })
                .collect(),
        );
        at += 4 * d;
    }
    out
}

fn read_f64_npy(path: &Path) -> Vec<f64> {
    let b = fs::read(path).expect("npy");
    let npy = cm3_embed::npy::Npy::parse(&b).expect("parse");
    assert_eq!(npy.descr, "<f8");
    npy.data
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
        .collect()
}

/// The graph is built in parallel, so recall varies a little from run to run: the tests search
/// with a candidate list wide enough to stay clear of their thresholds.
const TOP10_EF200: SearchParams<'static> = SearchParams {
    k: 10,
    min_score: None,
    max_score: None,
    exclude: None,
    ef_search: Some(200),
};

fn sift() -> (Vectors, Vectors) {
    (
        read_vectors(&fixture("split_base4800.fvecs")).expect("base"),
        read_vectors(&fixture("split_query200.fvecs")).expect("queries"),
    )
}

/// Recall@k of `got` against `truth` (ids), averaged over queries.
fn recall(got: &[Vec<Hit>], truth: &[Vec<u64>], k: usize) -> f64 {
    let mut sum = 0.0;
    for (g, t) in got.iter().zip(truth) {
        let t: HashSet<u64> = t.iter().take(k).copied().collect();
        sum += g.iter().take(k).filter(|h| t.contains(&h.id)).count() as f64 / k as f64;
    }
    sum / got.len() as f64
}

fn ids_of(hits: &[Vec<Hit>]) -> Vec<Vec<u64>> {
    hits.iter()
        .map(|h| h.iter().map(|x| x.id).collect())
        .collect()
}

#[test]
fn flat_reproduces_the_sift_inner_product_ground_truth() {
    let (base, queries) = sift();
    let truth = read_ivecs(&fixture("split_groundtruth_ip_top100.ivecs"));
    let scores = read_f64_npy(&fixture("split_groundtruth_ip_scores_top100.npy"));
    let ids: Vec<u64> = (0..base.rows() as u64).collect();
    // SIFT values are integers below 256: float16 holds them exactly, so both storages are exact.
    for storage in [Storage::F32, Storage::F16] {
        let mut flat = FlatIndex::new(base.dim, storage);
        flat.add(&ids, &base.data).expect("add");
        let got = flat
            .search_batch(&queries.data, &SearchParams::top(100))
            .expect("search");
        assert_eq!(got.len(), 200);
        for (q, hits) in got.iter().enumerate() {
            assert_eq!(hits.len(), 100);
            for (r, h) in hits.iter().enumerate() {
                let want = scores[q * 100 + r];
                // Integer inner products below 2^24 are exact in float32 whatever the order.
                assert_eq!(f64::from(h.score), want, "query {q} rank {r} ({storage})");
                // Ids agree except between equal scores (the fixture has ties).
                if h.id != truth[q][r] {
                    let pos = truth[q].iter().position(|&t| t == h.id);
                    assert!(
                        pos.is_some_and(|p| scores[q * 100 + p] == want),
                        "query {q} rank {r}: id {} is not tied with {}",
                        h.id,
                        truth[q][r]
                    );
                }
            }
        }
    }
}

fn normalised_sift() -> (Vectors, Vectors) {
    let (mut base, mut queries) = sift();
    check_unit_rows("base", &mut base.data, base.dim, false).expect("norm");
    check_unit_rows("queries", &mut queries.data, queries.dim, false).expect("norm");
    (base, queries)
}

#[test]
fn hnsw_recall_on_normalised_sift() {
    let (base, queries) = normalised_sift();
    let ids: Vec<u64> = (0..base.rows() as u64).collect();
    let mut flat = FlatIndex::new(base.dim, Storage::F32);
    flat.add(&ids, &base.data).expect("add");
    let truth = ids_of(
        &flat
            .search_batch(&queries.data, &SearchParams::top(10))
            .expect("flat"),
    );
    let mut hnsw = HnswIndex::new(base.dim, 16, 200).expect("hnsw");
    hnsw.add(&ids, &base.data).expect("add");
    let params = SearchParams {
        k: 10,
        ef_search: Some(64),
        ..SearchParams::default()
    };
    let got = hnsw.search_batch(&queries.data, &params).expect("search");
    let r = recall(&got, &truth, 10);
    eprintln!("hnsw recall@10 on normalised SIFT 4,800 (M=16, efC=200, ef=64): {r:.4}");
    assert!(r >= 0.95, "recall@10 {r}");
}

#[test]
fn hnsw_recall_on_clustered_512d() {
    let dim = 512;
    let base = clustered(6000, dim, 60, 1);
    let queries = clustered(200, dim, 60, 2);
    let ids: Vec<u64> = (0..6000).map(|i| 1_000_000 + i).collect();
    let mut flat = FlatIndex::new(dim, Storage::F32);
    flat.add(&ids, &base).expect("add");
    let truth = ids_of(
        &flat
            .search_batch(&queries, &SearchParams::top(10))
            .expect("flat"),
    );
    let mut hnsw = HnswIndex::new(dim, 32, 200).expect("hnsw");
    hnsw.add(&ids, &base).expect("add");
    let got = hnsw.search_batch(&queries, &TOP10_EF200).expect("search");
    let r = recall(&got, &truth, 10);
    eprintln!("hnsw recall@10 on clustered 512-d (6,000, M=32, efC=200, ef=200): {r:.4}");
    assert!(r >= 0.95, "recall@10 {r}");
    // f16 storage loses a little precision but not the neighbours.
    let mut f16 = FlatIndex::new(dim, Storage::F16);
    f16.add(&ids, &base).expect("add");
    let got16 = f16
        .search_batch(&queries, &SearchParams::top(10))
        .expect("f16");
    let r16 = recall(&got16, &truth, 10);
    assert!(r16 >= 0.99, "f16 recall@10 {r16}");
}

#[test]
fn a_query_equal_to_a_stored_vector_finds_itself() {
    // 1 - <a, a> can round below zero: distances are never assumed non-negative (hnsw_rs's
    // scalar distance, which built cm3's graphs before, panicked on it).
    let dim = 512;
    let base = clustered(500, dim, 5, 3);
    let ids: Vec<u64> = (0..500).collect();
    let mut hnsw = HnswIndex::new(dim, 16, 100).expect("hnsw");
    hnsw.add(&ids, &base).expect("add");
    for i in [0usize, 17, 499] {
        let hits = hnsw
            .search(&base[i * dim..(i + 1) * dim], 1)
            .expect("search");
        assert_eq!(hits[0].id, i as u64);
        assert!((hits[0].score - 1.0).abs() < 1e-4, "{}", hits[0].score);
    }
}

#[test]
fn filters_keep_k_results_on_hnsw() {
    let dim = 64;
    let base = clustered(2000, dim, 4, 4);
    let ids: Vec<u64> = (0..2000).collect();
    let mut hnsw = HnswIndex::new(dim, 16, 100).expect("hnsw");
    hnsw.add(&ids, &base).expect("add");
    let q = &base[..dim];
    let top = hnsw.search(q, 20).expect("search");
    let exclude: HashSet<u64> = top.iter().take(15).map(|h| h.id).collect();
    let got = hnsw.search_excluding(q, 10, &exclude).expect("search");
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|h| !exclude.contains(&h.id)));
    let below = hnsw.search_threshold(q, 10, 0.5).expect("search");
    assert_eq!(below.len(), 10);
    assert!(below.iter().all(|h| h.score <= 0.5));
}

/// Build `dir` in updates, one per row range of `base`: each reopens the committed index (or
/// starts from `empty`), adds the range and commits the next generation.
fn build_in_updates(
    dir: &Path,
    parts: &[std::ops::Range<usize>],
    ids: &[u64],
    base: &[f32],
    empty: impl Fn() -> Box<dyn MipsIndex>,
) -> store::IndexMeta {
    let mut prev = None;
    for part in parts {
        let mut idx = match store::open(dir).expect("open") {
            Some((_, i)) => i,
            None => empty(),
        };
        let dim = idx.dim();
        idx.add(&ids[part.clone()], &base[part.start * dim..part.end * dim])
            .expect("add");
        prev = Some(commit_to(dir, idx.as_ref(), prev.as_ref()));
    }
    prev.expect("at least one update")
}

fn commit_to(
    dir: &Path,
    index: &dyn MipsIndex,
    prev: Option<&store::IndexMeta>,
) -> store::IndexMeta {
    store::commit(dir, index, prev, None, BTreeMap::new(), "test").expect("commit")
}

#[test]
fn incremental_flat_equals_one_shot() {
    let dim = 512;
    let base = clustered(3000, dim, 30, 5);
    let queries = clustered(100, dim, 30, 6);
    let ids: Vec<u64> = (0..3000).map(|i| i * 7 + 3).collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let (one, inc) = (tmp.path().join("one"), tmp.path().join("inc"));
    let mut a = FlatIndex::new(dim, Storage::F16);
    a.add(&ids, &base).expect("add");
    commit_to(&one, &a, None);
    // Three updates, each reopening the committed index.
    let meta = build_in_updates(
        &inc,
        &[0..1000, 1000..2200, 2200..3000],
        &ids,
        &base,
        || Box::new(FlatIndex::new(dim, Storage::F16)),
    );
    assert_eq!((meta.generation, meta.count), (3, 3000));
    // Only the current generation is left.
    let gens: Vec<_> = fs::read_dir(&inc)
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
        .collect();
    assert_eq!(gens.len(), 1);
    let (_, one) = store::open(&one).expect("open").expect("index");
    let (_, inc) = store::open(&inc).expect("open").expect("index");
    let p = SearchParams::top(10);
    assert_eq!(
        one.search_batch(&queries, &p).expect("a"),
        inc.search_batch(&queries, &p).expect("b")
    );
}

#[test]
fn incremental_hnsw_recall_matches_one_shot() {
    let dim = 512;
    let base = clustered(4000, dim, 40, 7);
    let queries = clustered(200, dim, 40, 8);
    let ids: Vec<u64> = (0..4000).collect();
    let mut flat = FlatIndex::new(dim, Storage::F32);
    flat.add(&ids, &base).expect("add");
    let truth = ids_of(
        &flat
            .search_batch(&queries, &SearchParams::top(10))
            .expect("flat"),
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let mut one = HnswIndex::new(dim, 16, 200).expect("hnsw");
    one.add(&ids, &base).expect("add");
    let r_one = recall(
        &one.search_batch(&queries, &TOP10_EF200).expect("s"),
        &truth,
        10,
    );
    let dir = tmp.path().join("inc");
    build_in_updates(&dir, &[0..2500, 2500..4000], &ids, &base, || {
        Box::new(HnswIndex::new(dim, 16, 200).expect("hnsw"))
    });
    let (meta, inc) = store::open(&dir).expect("open").expect("index");
    assert_eq!(meta.count, 4000);
    let r_inc = recall(
        &inc.search_batch(&queries, &TOP10_EF200).expect("s"),
        &truth,
        10,
    );
    eprintln!("hnsw recall@10: one-shot {r_one:.4}, two updates {r_inc:.4}");
    assert!(
        r_inc >= r_one - 0.01,
        "incremental {r_inc} vs one-shot {r_one}"
    );
    assert!(r_inc >= 0.95);
}

#[test]
fn damaged_index_files_are_clear_errors() {
    let dim = 16;
    let base = clustered(300, dim, 3, 9);
    let ids: Vec<u64> = (0..300).collect();
    let tmp = tempfile::tempdir().expect("tmp");
    for kind in ["flat", "hnsw"] {
        let dir = tmp.path().join(kind);
        let mut idx: Box<dyn MipsIndex> = if kind == "flat" {
            Box::new(FlatIndex::new(dim, Storage::F32))
        } else {
            Box::new(HnswIndex::new(dim, 8, 50).expect("hnsw"))
        };
        idx.add(&ids, &base).expect("add");
        let meta = commit_to(&dir, idx.as_ref(), None);
        // Truncate the biggest file of the generation.
        let gen_dir = meta.generation_dir(&dir);
        let (big, size) = meta
            .files
            .iter()
            .max_by_key(|(_, s)| **s)
            .map(|(f, s)| (gen_dir.join(f), *s))
            .expect("files");
        let f = fs::OpenOptions::new().write(true).open(&big).expect("open");
        f.set_len(size / 2).expect("truncate");
        let err = store::open(&dir).expect_err("truncated").to_string();
        assert!(err.contains("truncated"), "{kind}: {err}");
        if kind == "flat" {
            // Without the store's size check, the segment's own check refuses it.
            let err = FlatIndex::load(&gen_dir)
                .expect_err("truncated")
                .to_string();
            assert!(err.contains("truncated or padded"), "{err}");
        }
    }
    // An index from a future version of the layout.
    let dir = tmp.path().join("flat");
    let p = dir.join(store::INDEX_FILE);
    let text = fs::read_to_string(&p).expect("read");
    fs::write(
        &p,
        text.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .expect("write");
    let err = store::open(&dir).expect_err("version").to_string();
    assert!(err.contains("format version 99"), "{err}");
    fs::write(&p, "{\"something\": 1}").expect("write");
    let err = store::open(&dir).expect_err("foreign").to_string();
    assert!(err.contains("not a cm3 index"), "{err}");
}

/// A saved HNSW index searches from its search copy (`search.bin`) with the results of the index
/// it was saved from, whether the copy was streamed from the builder or written from the one in
/// memory (the same bytes); an index without the copy is refused; a damaged copy is a clear
/// error; adding to a loaded index builds on the copy.
#[test]
fn hnsw_search_copy_round_trips() {
    let dim = 64;
    let base = clustered(2000, dim, 20, 11);
    let queries = clustered(100, dim, 20, 12);
    let ids: Vec<u64> = (0..2000).map(|i| i * 3 + 1).collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let fresh = |name: &str| {
        let d = tmp.path().join(name);
        fs::create_dir(&d).expect("dir");
        d
    };
    let mut idx = HnswIndex::new(dim, 16, 100).expect("hnsw");
    idx.add(&ids[..1500], &base[..1500 * dim]).expect("add");
    // Saved before any search: the copy is streamed from the graph.
    let streamed = fresh("streamed");
    idx.save(&streamed, None).expect("save");
    let before = idx.search_batch(&queries, &TOP10_EF200).expect("search");
    let from_memory = fresh("memory");
    idx.save(&from_memory, None).expect("save");
    assert_eq!(
        fs::read(streamed.join("search.bin")).expect("streamed"),
        fs::read(from_memory.join("search.bin")).expect("from memory")
    );
    let loaded = HnswIndex::load(&streamed).expect("load");
    assert_eq!(loaded.len(), 1500);
    assert_eq!(
        loaded.search_batch(&queries, &TOP10_EF200).expect("s"),
        before
    );

    // A saved index is its three files, the graph in the search copy.
    let mut files: Vec<String> = fs::read_dir(&streamed)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["hnsw.json", "ids.npy", "search.bin"]);

    // Saved by a cm3 that kept its graph elsewhere (no search copy): refused, naming the fix.
    fs::remove_file(from_memory.join("search.bin")).expect("rm");
    let err = HnswIndex::load(&from_memory)
        .expect_err("no search copy")
        .to_string();
    assert!(
        err.contains("search.bin") && err.contains("--rebuild"),
        "{err}"
    );

    // Adding to a loaded index, then saving and loading again.
    let mut grown = HnswIndex::load(&streamed).expect("load");
    grown
        .add(&ids[1500..], &base[1500 * dim..])
        .expect("add to a loaded index");
    let after = grown.search_batch(&queries, &TOP10_EF200).expect("s");
    let mut flat = FlatIndex::new(dim, Storage::F32);
    flat.add(&ids, &base).expect("add");
    let truth = ids_of(
        &flat
            .search_batch(&queries, &SearchParams::top(10))
            .expect("f"),
    );
    let r = recall(&after, &truth, 10);
    assert!(r >= 0.95, "recall@10 after adding to a loaded index: {r}");
    let saved = fresh("grown");
    grown.save(&saved, None).expect("save");
    let reloaded = HnswIndex::load(&saved).expect("load");
    assert_eq!(reloaded.len(), 2000);
    assert_eq!(
        reloaded.search_batch(&queries, &TOP10_EF200).expect("s"),
        after
    );

    // A damaged copy: another file's bytes, a truncated or padded one, a link outside the points.
    let search = saved.join("search.bin");
    let good = fs::read(&search).expect("read");
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "not a cm3 HNSW search file",
            b"something else entirely".to_vec(),
        ),
        ("truncated", good[..good.len() - 5].to_vec()),
        ("padded", [&good[..], &[0u8; 4][..]].concat()),
        ("entry point", {
            let mut b = good.clone();
            // The entry point (after magic, version, n and dim) set past the last point.
            b[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        }),
    ];
    for (want, bytes) in cases {
        fs::write(&search, bytes).expect("write");
        let err = HnswIndex::load(&saved).expect_err(want).to_string();
        assert!(
            err.contains(want) && err.contains("search.bin"),
            "{want}: {err}"
        );
    }
}
