//! End-to-end tests of `cm3 augment` on the repository's real sample: every pair gets documents
//! by the paper's rules, incrementally, deterministically, split across workers, from another
//! dataset's bank, with the leakage guard; and `cm3 inspect --neighbors`.
mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use arrow_array::{Array, BooleanArray, Float32Array, ListArray, StringArray, UInt64Array};
use cm3_core::schema::{column, read_columns};
use common::*;

/// Ingest `input` into `ds` (8 pairs a shard), embed with the tiny models, build the doc index.
fn prepare(ds: &Path, input: &Path) {
    run_ok(&[
        "ingest",
        "--input",
        &p(input),
        "--out",
        &p(ds),
        "--shard-rows",
        "8",
        "--no-progress",
    ]);
    run_ok(&[
        "embed",
        &p(ds),
        "--image-model",
        &p(&tiny_model("vision")),
        "--text-model",
        &p(&tiny_model("text")),
    ]);
    run_ok(&["index", "build", &p(ds), "--no-progress"]);
}

#[derive(Debug, Clone, PartialEq)]
struct Nb {
    id: u64,
    score: f32,
    found_by: String,
    sampled: bool,
}

/// Every neighbours row of a dataset, by pair id (read with Arrow, as a user would).
fn neighbours(ds: &Path) -> HashMap<u64, Vec<Nb>> {
    let mut out = HashMap::new();
    let dir = ds.join("neighbors");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("neighbors/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    for f in files {
        for b in
            read_columns(&f, &["id", "neighbors", "scores", "found_by", "sampled"]).expect("read")
        {
            let ids = column::<UInt64Array>(&b, "id").expect("id");
            let l = |n: &str| column::<ListArray>(&b, n).expect("list").clone();
            let (nb, sc, fb, sa) = (l("neighbors"), l("scores"), l("found_by"), l("sampled"));
            for i in 0..b.num_rows() {
                let nbi = nb.value(i);
                let nbi = nbi.as_any().downcast_ref::<UInt64Array>().expect("u64");
                let sci = sc.value(i);
                let sci = sci.as_any().downcast_ref::<Float32Array>().expect("f32");
                let fbi = fb.value(i);
                let fbi = fbi.as_any().downcast_ref::<StringArray>().expect("str");
                let sai = sa.value(i);
                let sai = sai.as_any().downcast_ref::<BooleanArray>().expect("bool");
                let row = (0..nbi.len())
                    .map(|j| Nb {
                        id: nbi.value(j),
                        score: sci.value(j),
                        found_by: fbi.value(j).to_string(),
                        sampled: sai.value(j),
                    })
                    .collect();
                out.insert(ids.value(i), row);
            }
        }
    }
    out
}

fn shard_hashes(ds: &Path) -> Vec<(String, String)> {
    let m = manifest(ds);
    m["stages"]["augment"]["shards"]
        .as_object()
        .expect("augment shards")
        .iter()
        .map(|(k, v)| (k.clone(), v["sha256"].as_str().expect("sha").to_string()))
        .collect()
}

/// The paper's rules on what was written.
fn check_rules(
    rows: &HashMap<u64, Vec<Nb>>,
    relevance: f32,
    sha_of: &HashMap<u64, String>,
    bank_sha: &HashMap<u64, String>,
) {
    for (id, nbs) in rows {
        let mut seen = HashSet::new();
        assert!(nbs.len() <= 4, "{id:016x}: {} documents", nbs.len());
        let by_image = nbs.iter().filter(|n| n.found_by == "image").count();
        assert!(by_image <= 2 && nbs.len() - by_image <= 2);
        for n in nbs {
            assert_ne!(n.id, *id, "a pair never retrieves itself");
            assert!(
                n.score <= relevance,
                "{id:016x}: score {} above {relevance}",
                n.score
            );
            assert!(seen.insert(n.id), "no document twice");
            assert_ne!(
                bank_sha[&n.id], sha_of[id],
                "no copy of the pair's own image"
            );
        }
        let sampled = nbs.iter().filter(|n| n.sampled).count();
        assert_eq!(sampled, nbs.len().min(3));
    }
}

fn sha_by_id(ds: &Path) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    for f in fs::read_dir(ds.join("pairs")).expect("pairs") {
        let f = f.expect("entry").path();
        if f.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        for b in read_columns(&f, &["id", "sha256"]).expect("read") {
            let id = column::<UInt64Array>(&b, "id").expect("id");
            let sha = column::<StringArray>(&b, "sha256").expect("sha");
            for i in 0..b.num_rows() {
                out.insert(id.value(i), sha.value(i).to_string());
            }
        }
    }
    out
}

#[test]
fn augments_incrementally_and_deterministically_with_the_papers_rules() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let n = sample_pairs().len();
    sample_part(&a, 0..20);
    sample_part(&b, 20..n);
    let ds = tmp.path().join("ds");
    prepare(&ds, &a);
    let out = run_ok(&["augment", &p(&ds), "--no-progress"]);
    assert!(
        stderr(&out).contains("augment: 20 pairs in 3 shard(s) (0 already done)"),
        "{}",
        stderr(&out)
    );
    let first = neighbours(&ds);
    assert_eq!(first.len(), 20);
    let sha = sha_by_id(&ds);
    check_rules(&first, 0.9, &sha, &sha);
    // With 19 other pairs in the bank, every pair gets its 2 + 2 documents.
    let full = first.values().filter(|v| v.len() == 4).count();
    assert!(full >= 18, "{full} of 20 pairs have 4 documents");
    let m = manifest(&ds);
    let rec = &m["stages"]["augment"];
    assert_eq!(rec["totals"]["rows"], 20);
    assert_eq!(
        rec["config"]["settings"]["relevance"]
            .as_f64()
            .map(|x| x as f32),
        Some(0.9)
    );
    assert_eq!(rec["config"]["bank"], "self");
    let tokens = rec["totals"]["counters"]["query_tokens"]
        .as_u64()
        .expect("tokens");
    let dropped = rec["totals"]["counters"]["dropped_tokens"]
        .as_u64()
        .expect("dropped");
    assert!(
        tokens > 100 && dropped > 0 && dropped < tokens / 2,
        "{dropped} of {tokens}"
    );

    // Nothing new: nothing done. A different setting is refused, naming it.
    let out = run_ok(&["augment", &p(&ds), "--no-progress"]);
    assert!(
        stderr(&out).contains("0 pairs in 0 shard(s) (3 already done)"),
        "{}",
        stderr(&out)
    );
    let err = run_err(&["augment", &p(&ds), "--relevance", "0.8", "--no-progress"]);
    assert!(
        err.contains("relevance") && err.contains("--rebuild"),
        "{err}"
    );

    // New pairs arrive: embedded, indexed, and only their shards augmented.
    run_ok(&[
        "ingest",
        "--input",
        &p(&b),
        "--out",
        &p(&ds),
        "--shard-rows",
        "8",
        "--no-progress",
    ]);
    run_ok(&[
        "embed",
        &p(&ds),
        "--image-model",
        &p(&tiny_model("vision")),
        "--text-model",
        &p(&tiny_model("text")),
    ]);
    run_ok(&["index", "build", &p(&ds), "--no-progress"]);
    let out = run_ok(&["augment", &p(&ds), "--no-progress"]);
    assert!(
        stderr(&out).contains(&format!(
            "augment: {} pairs in 2 shard(s) (3 already done)",
            n - 20
        )),
        "{}",
        stderr(&out)
    );
    let all = neighbours(&ds);
    assert_eq!(all.len(), n);
    for (id, v) in &first {
        assert_eq!(&all[id], v, "earlier shards are kept as they were");
    }
    let sha = sha_by_id(&ds);
    check_rules(&all, 0.9, &sha, &sha);

    // Determinism: the same data and seed in another directory (and split across two workers)
    // give byte-identical shards; another seed samples differently.
    let ds2 = tmp.path().join("ds2");
    prepare(&ds2, &a);
    run_ok(&[
        "ingest",
        "--input",
        &p(&b),
        "--out",
        &p(&ds2),
        "--shard-rows",
        "8",
        "--no-progress",
    ]);
    run_ok(&[
        "embed",
        &p(&ds2),
        "--image-model",
        &p(&tiny_model("vision")),
        "--text-model",
        &p(&tiny_model("text")),
    ]);
    run_ok(&["index", "build", &p(&ds2), "--no-progress", "--rebuild"]);
    for w in ["0", "1"] {
        run_ok(&[
            "augment",
            &p(&ds2),
            "--num-workers",
            "2",
            "--worker-index",
            w,
            "--no-progress",
        ]);
    }
    run_ok(&["manifest", "merge", &p(&ds2)]);
    let split = shard_hashes(&ds2);
    run_ok(&["augment", &p(&ds2), "--rebuild", "--no-progress"]);
    assert_eq!(
        split,
        shard_hashes(&ds2),
        "two workers write what one process writes"
    );
    // The shards `ds` augmented with the full bank (its second part) are the same bytes in ds2,
    // whose index was built in one go rather than in two generations.
    let later = |ds: &Path| -> Vec<(String, String)> {
        shard_hashes(ds)
            .into_iter()
            .filter(|(k, _)| k.starts_with("b-"))
            .collect()
    };
    assert_eq!(later(&ds).len(), 2);
    assert_eq!(later(&ds), later(&ds2));
    run_ok(&[
        "augment",
        &p(&ds2),
        "--seed",
        "7",
        "--rebuild",
        "--no-progress",
    ]);
    let reseeded = neighbours(&ds2);
    let differs = all.iter().any(|(id, v)| {
        let s = |x: &Vec<Nb>| x.iter().map(|n| (n.id, n.sampled)).collect::<Vec<_>>();
        s(v) != s(&reseeded[id])
    });
    assert!(
        differs,
        "another seed changes dropout or sampling somewhere"
    );

    // inspect --neighbors: the pair, its documents, captions, scores, modality, sampled.
    let (id, nbs) = all.iter().find(|(_, v)| v.len() == 4).expect("a full pair");
    let hex = format!("{id:016x}");
    let out = run_ok(&["inspect", &p(&ds), "--neighbors", &hex]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&hex), "{text}");
    // Ingest collapses runs of whitespace in captions (one sample caption has a double space).
    let captions: HashMap<String, String> = sample_pairs()
        .iter()
        .map(|s| {
            let caption = s.caption.split_whitespace().collect::<Vec<_>>().join(" ");
            (caption, s.stem.clone())
        })
        .collect();
    let listed = text
        .lines()
        .filter(|l| {
            captions
                .keys()
                .any(|c| !c.is_empty() && l.ends_with(c.as_str()))
        })
        .count();
    assert!(
        listed >= 5,
        "the pair and its 4 documents with captions:\n{text}"
    );
    let out = run_ok(&["inspect", &p(&ds), "--neighbors", &hex, "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["neighbors"].as_array().expect("list").len(), 4);
    assert_eq!(j["neighbors"][0]["id"], format!("{:016x}", nbs[0].id));
    assert_eq!(j["neighbors"][0]["found_by"], "image");
    assert!(
        j["neighbors"][0]["caption"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    let err = run_err(&["inspect", &p(&ds), "--neighbors", "00000000000000ff"]);
    assert!(err.contains("00000000000000ff"), "{err}");
}

#[test]
fn retrieves_from_another_bank_without_leaking_duplicates_or_excluded_ids() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let n = sample_pairs().len();
    let (a, all) = (tmp.path().join("a"), tmp.path().join("all"));
    sample_part(&a, 0..12);
    sample_part(&all, 0..n);
    let (ds, bank) = (tmp.path().join("ds"), tmp.path().join("bank"));
    prepare(&ds, &a);
    // The bank holds every sample pair, the 12 of `ds` among them under other ids (another
    // source path): the same images, which the duplicate rule must skip.
    prepare(&bank, &all);
    let bank_sha = sha_by_id(&bank);
    let own_sha = sha_by_id(&ds);
    // Exclude a third of the bank by id (an evaluation split, say).
    let excluded: Vec<u64> = bank_sha.keys().copied().filter(|id| id % 3 == 0).collect();
    let ids_file = tmp.path().join("eval_ids.txt");
    let text: String = excluded.iter().map(|id| format!("{id:016x}\n")).collect();
    fs::write(&ids_file, format!("# evaluation pairs\n{text}")).expect("write ids");
    let out = run_ok(&[
        "augment",
        &p(&ds),
        "--bank",
        &p(&bank),
        "--exclude",
        &p(&ids_file),
        "--no-progress",
    ]);
    assert!(
        stderr(&out).contains(&format!("bank of {n} vectors")),
        "{}",
        stderr(&out)
    );
    let rows = neighbours(&ds);
    assert_eq!(rows.len(), 12);
    check_rules(&rows, 0.9, &own_sha, &bank_sha);
    let excluded: HashSet<u64> = excluded.into_iter().collect();
    for v in rows.values() {
        assert!(
            v.iter().all(|nb| !excluded.contains(&nb.id)),
            "excluded ids never appear"
        );
        assert!(
            v.iter().all(|nb| bank_sha.contains_key(&nb.id)),
            "documents come from the bank"
        );
    }
    let m = manifest(&ds);
    let ex = m["stages"]["augment"]["config"]["exclude"]
        .as_array()
        .expect("exclude")
        .clone();
    assert_eq!(ex.len(), 1);
    assert!(ex[0].as_str().is_some_and(|s| s.starts_with("ids:")));

    // Excluding the whole bank (its only split) leaves nothing to retrieve: recorded, not hidden.
    let out = run_ok(&[
        "augment",
        &p(&ds),
        "--bank",
        &p(&bank),
        "--exclude",
        "train",
        "--rebuild",
        "--no-progress",
    ]);
    assert!(
        stderr(&out).contains("12 pairs got fewer than asked (24 by image, 24 by text missing)"),
        "{}",
        stderr(&out)
    );
    assert!(neighbours(&ds).values().all(Vec::is_empty));

    // Bad input: an unknown split, a bad ids file, a bank without an index, a bad setting.
    let err = run_err(&[
        "augment",
        &p(&ds),
        "--bank",
        &p(&bank),
        "--exclude",
        "val",
        "--rebuild",
        "--no-progress",
    ]);
    assert!(
        err.contains("split `val`") && err.contains("train"),
        "{err}"
    );
    let bad = tmp.path().join("bad.txt");
    fs::write(&bad, "0123\n").expect("write");
    let err = run_err(&[
        "augment",
        &p(&ds),
        "--exclude",
        &p(&bad),
        "--rebuild",
        "--no-progress",
    ]);
    assert!(err.contains("line 1") && err.contains("0123"), "{err}");
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let err = run_err(&[
        "augment",
        &p(&ds),
        "--bank",
        &p(&empty),
        "--rebuild",
        "--no-progress",
    ]);
    assert!(err.contains(&p(&empty)), "{err}");
    let err = run_err(&[
        "augment",
        &p(&ds),
        "--query-dropout",
        "1.5",
        "--rebuild",
        "--no-progress",
    ]);
    assert!(err.contains("query_dropout 1.5"), "{err}");
    // A failed run leaves the earlier output in place.
    assert_eq!(neighbours(&ds).len(), 12);
}

#[test]
fn a_bank_in_parts_gives_the_neighbours_of_one_index() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("in");
    sample_part(&input, 0..sample_pairs().len());
    let ds = tmp.path().join("ds");
    prepare(&ds, &input);
    run_ok(&["augment", &p(&ds), "--no-progress"]);
    let whole = neighbours(&ds);
    // The same exact (flat) bank in parts of 6 vectors.
    run_ok(&[
        "index",
        "build",
        &p(&ds),
        "--rebuild",
        "--part-rows",
        "6",
        "--no-progress",
    ]);
    let dir = ds.join("index").join("doc");
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("INDEX.json")).expect("INDEX.json"))
            .expect("json");
    assert_eq!(meta["part_rows"], 6);
    let count = meta["count"].as_u64().expect("count") as usize;
    assert_eq!(count, sample_pairs().len());
    let generation = dir.join(format!(
        "gen-{:06}",
        meta["generation"].as_u64().expect("generation")
    ));
    let parts = fs::read_dir(&generation)
        .expect("generation")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("part-"))
        })
        .count();
    assert_eq!(parts, count.div_ceil(6));
    // Every file of every part is recorded with its size.
    let files = meta["files"].as_object().expect("files");
    assert!(
        files.keys().any(|k| k.starts_with("part-00000/")),
        "{files:?}"
    );
    // Read part by part (the default for a bank in parts), then held whole: the same documents.
    for extra in [None, Some("--resident-bank")] {
        let mut args = vec!["augment", &*p(&ds), "--rebuild", "--no-progress"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(extra.map(String::from));
        run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let parted = neighbours(&ds);
        assert_eq!(parted.len(), whole.len());
        for (id, nbs) in &whole {
            let got = &parted[id];
            let ids = |v: &[Nb]| v.iter().map(|n| n.id).collect::<Vec<_>>();
            assert_eq!(ids(got), ids(nbs), "pair {id:016x} ({extra:?})");
            for (a, b) in got.iter().zip(nbs) {
                assert!((a.score - b.score).abs() < 1e-6, "pair {id:016x}");
            }
        }
    }
    // Asking for one index again is a changed configuration.
    let err = run_err(&["index", "build", &p(&ds), "--no-progress"]);
    assert!(err.contains("part"), "{err}");
}
