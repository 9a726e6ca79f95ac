//! End-to-end tests of `cm3 index`: incremental builds over a dataset, search by id / text,
//! raw-vector mode, bad input, and a build killed at arbitrary points.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn embed(ds: &Path) {
    run_ok(&[
        "embed",
        &p(ds),
        "--image-model",
        &p(&tiny_model("vision")),
        "--text-model",
        &p(&tiny_model("text")),
    ]);
}

fn search_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = run_ok(args);
    serde_json::from_slice(&out.stdout).expect("search --json output")
}

#[test]
fn dataset_index_grows_with_new_shards_and_finds_pairs() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    sample_part(&a, 0..20);
    sample_part(&b, 20..sample_pairs().len());
    let ingest = |input: &Path| {
        run_ok(&[
            "ingest",
            "--input",
            &p(input),
            "--out",
            &p(&ds),
            "--shard-rows",
            "8",
            "--no-progress",
        ])
    };
    ingest(&a);
    embed(&ds);
    let out = run_ok(&["index", "build", &p(&ds), "--no-progress"]);
    assert!(
        stderr(&out).contains("added 20 vectors from 3 new shard(s)"),
        "{}",
        stderr(&out)
    );
    let m = manifest(&ds);
    assert_eq!(m["stages"]["index.doc"]["totals"]["rows"], 20);
    assert_eq!(m["stages"]["index.doc"]["totals"]["shards"], 3);

    // Nothing new: nothing done.
    let out = run_ok(&["index", "build", &p(&ds), "--no-progress"]);
    assert!(
        stderr(&out).contains("up to date: 20 vectors from 3 shard(s)"),
        "{}",
        stderr(&out)
    );

    // A week later: new pairs arrive; only their shards are indexed.
    ingest(&b);
    embed(&ds);
    let out = run_ok(&["index", "build", &p(&ds), "--no-progress"]);
    let n_b = sample_pairs().len() - 20;
    assert!(
        stderr(&out).contains(&format!("added {n_b} vectors from 2 new shard(s)")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(&format!(
        "holds {} vectors from 5 shard(s), generation 2",
        20 + n_b
    )));

    // Search by a pair's id: the pair itself first (score 1), with its caption.
    let rows = read_rows(&ds);
    let first = &rows[0];
    let id = format!("{:016x}", first.id);
    let hits = search_json(&["index", "search", &p(&ds), "--id", &id, "-k", "5", "--json"]);
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0]["id"], id);
    assert!((hits[0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-3);
    assert_eq!(hits[0]["caption"], first.caption);
    let scores: Vec<f64> = hits
        .iter()
        .map(|h| h["score"].as_f64().expect("s"))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted best first: {scores:?}"
    );
    // --exclude-self and the paper's relevance filter.
    let hits2 = search_json(&[
        "index",
        "search",
        &p(&ds),
        "--id",
        &id,
        "-k",
        "4",
        "--exclude-self",
        "--json",
    ]);
    assert_eq!(hits2.len(), 4);
    assert!(hits2.iter().all(|h| h["id"] != id));
    assert_eq!(hits2[0]["id"], hits[1]["id"]);
    let hits3 = search_json(&[
        "index",
        "search",
        &p(&ds),
        "--id",
        &id,
        "-k",
        "4",
        "--max-score",
        "0.9",
        "--json",
    ]);
    assert!(hits3.iter().all(|h| h["score"].as_f64().expect("s") <= 0.9));

    // The incremental index answers exactly like one built in one go.
    let before = search_json(&[
        "index",
        "search",
        &p(&ds),
        "--id",
        &id,
        "-k",
        "10",
        "--json",
    ]);
    run_ok(&["index", "build", &p(&ds), "--rebuild", "--no-progress"]);
    let after = search_json(&[
        "index",
        "search",
        &p(&ds),
        "--id",
        &id,
        "-k",
        "10",
        "--json",
    ]);
    assert_eq!(before, after);

    // Query by text, with the model that made the embeddings; another model is refused.
    let hits = search_json(&[
        "index",
        "search",
        &p(&ds),
        "--text",
        &first.caption,
        "-k",
        "3",
        "--json",
        "--text-model",
        &p(&tiny_model("text")),
    ]);
    assert_eq!(hits.len(), 3);
    let err = run_err(&[
        "index",
        "search",
        &p(&ds),
        "--text",
        "a dog",
        "--text-model",
        &p(&tiny_model("vision")),
    ]);
    assert!(
        err.contains("not the model that made this dataset's embeddings"),
        "{err}"
    );

    // Another kind of index over the image vectors, beside the doc index.
    let out = run_ok(&[
        "index",
        "build",
        &p(&ds),
        "--set",
        "image",
        "--kind",
        "hnsw",
        "--m",
        "8",
        "--no-progress",
    ]);
    assert!(
        stderr(&out).contains("hnsw (M=8, efConstruction=200)"),
        "{}",
        stderr(&out)
    );
    let hits = search_json(&[
        "index",
        "search",
        &p(&ds),
        "--set",
        "image",
        "--id",
        &id,
        "-k",
        "3",
        "--json",
    ]);
    assert_eq!(hits[0]["id"], id);

    // Asking for a different kind over an existing index is refused, --rebuild replaces it.
    let err = run_err(&["index", "build", &p(&ds), "--kind", "hnsw", "--no-progress"]);
    assert!(err.contains("--rebuild"), "{err}");
    run_ok(&[
        "index",
        "build",
        &p(&ds),
        "--kind",
        "hnsw",
        "--rebuild",
        "--no-progress",
    ]);
    let m = manifest(&ds);
    assert_eq!(m["stages"]["index.doc"]["config"]["index"]["kind"], "hnsw");
}

#[test]
fn index_without_embeddings_and_foreign_index_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    let a = tmp.path().join("a");
    sample_part(&a, 0..4);
    run_ok(&[
        "ingest",
        "--input",
        &p(&a),
        "--out",
        &p(&ds),
        "--no-progress",
    ]);
    let err = run_err(&["index", "build", &p(&ds)]);
    assert!(
        err.contains("no embeddings yet") && err.contains("cm3 embed"),
        "{err}"
    );
    let err = run_err(&["index", "search", &p(&ds), "--id", "0123456789abcdef"]);
    assert!(
        err.contains("no `doc` index") && err.contains("cm3 index build"),
        "{err}"
    );
}

/// Seeded random vectors as a float32 .npy.
fn random_npy(path: &Path, n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n * dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    fs::write(path, cm3_embed::npy::encode_f32(&[n, dim], &v)).expect("write npy");
    v
}

/// `cm3 index search <dir> --queries <queries> -k <k> --out <out> [extra...]`: the neighbour ids
/// it wrote, and their shape.
fn search_ids(
    dir: &Path,
    queries: &Path,
    k: &str,
    out: &Path,
    extra: &[&str],
) -> (Vec<usize>, Vec<i64>) {
    let (dir, queries, out) = (p(dir), p(queries), p(out));
    let mut args = vec![
        "index",
        "search",
        &dir,
        "--queries",
        &queries,
        "-k",
        k,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    run_ok(&args);
    read_i64_npy(Path::new(&out))
}

fn read_i64_npy(path: &Path) -> (Vec<usize>, Vec<i64>) {
    let npy = cm3_embed::npy::Npy::parse(&fs::read(path).expect("read")).expect("npy");
    assert_eq!(npy.descr, "<i8");
    (npy.shape.clone(), npy.to_i64().expect("ints"))
}

#[test]
fn raw_vectors_build_search_and_bad_input() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = |n: &str| tmp.path().join(n);
    random_npy(&t("base.npy"), 500, 32, 1);
    for kind in ["flat", "hnsw"] {
        let dir = t(&format!("idx-{kind}"));
        let out = run_ok(&[
            "index",
            "build",
            "--vectors",
            &p(&t("base.npy")),
            "--kind",
            kind,
            "--out",
            &p(&dir),
        ]);
        // Uniform random vectors are not unit-norm: all normalised, and said so.
        assert!(
            stderr(&out).contains("500 vector(s) were not unit-norm")
                && stderr(&out).contains("holds 500"),
            "{}",
            stderr(&out)
        );
        // Queries = the first 7 stored vectors: each finds itself first.
        let q = cm3_embed::npy::Npy::parse(&fs::read(t("base.npy")).expect("r"))
            .expect("npy")
            .to_f32()
            .expect("f");
        fs::write(
            t("q.npy"),
            cm3_embed::npy::encode_f32(&[7, 32], &q[..7 * 32]),
        )
        .expect("w");
        let (shape, ids) = search_ids(
            &dir,
            &t("q.npy"),
            "5",
            &t("n.npy"),
            &["--scores", &p(&t("s.npy"))],
        );
        assert_eq!(shape, vec![7, 5]);
        for qi in 0..7 {
            assert_eq!(ids[qi * 5], qi as i64, "{kind}: query {qi}");
        }
        // Paths relative to the working directory, outputs given as bare file names.
        let rel = cm3()
            .current_dir(tmp.path())
            .args([
                "index",
                "search",
                &format!("idx-{kind}"),
                "--queries",
                "q.npy",
            ])
            .args(["-k", "5", "--out", "rel.npy", "--scores", "rel-s.npy"])
            .output()
            .expect("spawn cm3");
        assert!(rel.status.success(), "{kind}: {}", stderr(&rel));
        assert_eq!(read_i64_npy(&t("rel.npy")), (shape, ids));
        assert!(t("rel-s.npy").is_file());
        // k larger than the index: padded with -1.
        let (_, ids) = search_ids(&dir, &t("q.npy"), "600", &t("n2.npy"), &[]);
        assert_eq!(ids[599], -1);
        assert!(ids[499] >= 0);
    }
    let dir = t("idx-flat");
    // Building over an existing index needs --append (or --rebuild).
    let err = run_err(&[
        "index",
        "build",
        "--vectors",
        &p(&t("base.npy")),
        "--out",
        &p(&dir),
    ]);
    assert!(err.contains("--append"), "{err}");
    // Wrong dimension on append: refused, the index untouched.
    random_npy(&t("d16.npy"), 10, 16, 2);
    let before = fs::read(dir.join("INDEX.json")).expect("r");
    let err = run_err(&[
        "index",
        "build",
        "--vectors",
        &p(&t("d16.npy")),
        "--out",
        &p(&dir),
        "--append",
    ]);
    assert!(err.contains("dimension 16") && err.contains("32"), "{err}");
    assert_eq!(fs::read(dir.join("INDEX.json")).expect("r"), before);
    // Non-finite values name the file and the row.
    let mut v = random_npy(&t("nan.npy"), 10, 32, 3);
    v[3 * 32 + 5] = f32::NAN;
    fs::write(t("nan.npy"), cm3_embed::npy::encode_f32(&[10, 32], &v)).expect("w");
    let err = run_err(&[
        "index",
        "build",
        "--vectors",
        &p(&t("nan.npy")),
        "--out",
        &p(&t("x")),
    ]);
    assert!(
        err.contains("nan.npy") && err.contains("row 3") && err.contains("non-finite"),
        "{err}"
    );
    // --strict refuses vectors that are not unit-norm.
    let err = run_err(&[
        "index",
        "build",
        "--vectors",
        &p(&t("d16.npy")),
        "--out",
        &p(&t("y")),
        "--strict",
    ]);
    assert!(err.contains("row 0") && err.contains("not 1"), "{err}");
    // A truncated .npy.
    let bytes = fs::read(t("d16.npy")).expect("r");
    fs::write(t("trunc.npy"), &bytes[..bytes.len() - 10]).expect("w");
    let err = run_err(&[
        "index",
        "build",
        "--vectors",
        &p(&t("trunc.npy")),
        "--out",
        &p(&t("z")),
    ]);
    assert!(
        err.contains("trunc.npy") && err.contains("truncated"),
        "{err}"
    );
    assert!(!t("z").join("INDEX.json").exists());
    // Queries of the wrong dimension; a directory that is no index.
    let err = run_err(&["index", "search", &p(&dir), "--queries", &p(&t("d16.npy"))]);
    assert!(err.contains("dimension 16"), "{err}");
    let err = run_err(&[
        "index",
        "search",
        &p(tmp.path()),
        "--queries",
        &p(&t("q.npy")),
    ]);
    assert!(err.contains("no index"), "{err}");
    // Ids from a file, appended: the new ids are found.
    fs::write(
        t("ids.npy"),
        cm3_embed::npy::encode_u64(&(1000..1007).collect::<Vec<_>>()),
    )
    .expect("w");
    run_ok(&[
        "index",
        "build",
        "--vectors",
        &p(&t("q.npy")),
        "--ids",
        &p(&t("ids.npy")),
        "--out",
        &p(&dir),
        "--append",
    ]);
    let out = run_ok(&[
        "index",
        "search",
        &p(&dir),
        "--queries",
        &p(&t("q.npy")),
        "-k",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().expect("line");
    assert!(first.contains("1000:") && first.contains("0:"), "{first}");
}

fn index_count(dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(dir.join("INDEX.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["count"].as_u64()
}

#[test]
fn killed_builds_leave_the_previous_index_usable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = |n: &str| tmp.path().join(n);
    random_npy(&t("small.npy"), 300, 64, 4);
    random_npy(&t("big.npy"), 20_000, 64, 5);
    fs::write(
        t("bigids.npy"),
        cm3_embed::npy::encode_u64(&(10_000..30_000).collect::<Vec<_>>()),
    )
    .expect("w");
    let dir: PathBuf = t("idx");
    run_ok(&[
        "index",
        "build",
        "--vectors",
        &p(&t("small.npy")),
        "--kind",
        "hnsw",
        "--m",
        "8",
        "--out",
        &p(&dir),
    ]);
    let append = [
        "index",
        "build",
        "--vectors",
        &p(&t("big.npy")),
        "--ids",
        &p(&t("bigids.npy")),
        "--kind",
        "hnsw",
        "--m",
        "8",
        "--out",
        &p(&dir),
        "--append",
    ];
    // Kill the append at several points; every time, the committed index opens and answers.
    let mut killed = 0;
    for delay_ms in [50u64, 200, 400, 700, 1000, 1500] {
        let mut child = cm3().args(append).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill");
            killed += 1;
        }
        child.wait().expect("reap");
        let count = index_count(&dir).expect("INDEX.json readable");
        if count == 20_300 {
            break; // this run finished before the kill
        }
        assert_eq!(count, 300);
        let (_, ids) = search_ids(&dir, &t("small.npy"), "1", &t("n.npy"), &[]);
        assert_eq!(&ids[..5], &[0, 1, 2, 3, 4]);
    }
    assert!(killed > 0, "no build was interrupted");
    if index_count(&dir) != Some(20_300) {
        run_ok(&append);
    }
    assert_eq!(index_count(&dir), Some(20_300));
    // Only the committed generation remains.
    let left: Vec<String> = fs::read_dir(&dir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "INDEX.json" && !n.ends_with(".lock"))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // Random 64-d vectors are the hardest case for a graph: search wide.
    let (_, ids) = search_ids(
        &dir,
        &t("small.npy"),
        "1",
        &t("n.npy"),
        &["--ef-search", "800"],
    );
    assert_eq!(&ids[..5], &[0, 1, 2, 3, 4]);
}

/// The files of part `part` of the committed generation of index `dir`, with their inodes.
fn part_inodes(dir: &Path, part: usize) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("INDEX.json")).expect("INDEX.json"))
            .expect("json");
    let folder = dir
        .join(format!(
            "gen-{:06}",
            meta["generation"].as_u64().expect("generation")
        ))
        .join(format!("part-{part:05}"));
    let mut v: Vec<(String, u64)> = fs::read_dir(&folder)
        .expect("part folder")
        .flatten()
        .map(|e| {
            let ino = e.metadata().expect("stat").ino();
            (e.file_name().to_string_lossy().into_owned(), ino)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn raw_bank_in_parts_answers_as_one_index_and_appends_to_its_last_part() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = |n: &str| tmp.path().join(n);
    random_npy(&t("a.npy"), 300, 32, 11);
    random_npy(&t("q.npy"), 40, 32, 12);
    random_npy(&t("b.npy"), 200, 32, 13);
    fs::write(
        t("bids.npy"),
        cm3_embed::npy::encode_u64(&(1000..1200).collect::<Vec<_>>()),
    )
    .expect("w");
    let build = |out: &Path, vectors: &str, extra: &[&str]| {
        let (out, vectors) = (p(out), p(&t(vectors)));
        let mut args = vec![
            "index",
            "build",
            "--vectors",
            &vectors,
            "--kind",
            "flat",
            "--storage",
            "f32",
            "--out",
            &out,
        ];
        args.extend_from_slice(extra);
        run_ok(&args)
    };
    let (whole, parted) = (t("whole"), t("parted"));
    build(&whole, "a.npy", &[]);
    build(&parted, "a.npy", &["--part-rows", "64"]);
    // Exact search, so the same neighbours: per part, then merged.
    let (shape, a) = search_ids(&whole, &t("q.npy"), "10", &t("n1.npy"), &[]);
    let (_, b) = search_ids(&parted, &t("q.npy"), "10", &t("n2.npy"), &[]);
    assert_eq!(shape, vec![40, 10]);
    assert_eq!(a, b);
    // Appending fills the last part, then new ones; full parts are linked, not written again.
    let full_before = part_inodes(&parted, 0);
    let last_before = part_inodes(&parted, 4);
    let bids = p(&t("bids.npy"));
    build(&whole, "b.npy", &["--ids", &bids, "--append"]);
    build(
        &parted,
        "b.npy",
        &["--ids", &bids, "--append", "--part-rows", "64"],
    );
    assert_eq!(index_count(&parted), Some(500));
    assert_eq!(part_inodes(&parted, 0), full_before);
    assert_ne!(
        part_inodes(&parted, 4),
        last_before,
        "the part filled up was written"
    );
    assert!(
        !part_inodes(&parted, 7).is_empty(),
        "500 vectors in parts of 64: 8 parts"
    );
    let (_, a) = search_ids(&whole, &t("q.npy"), "10", &t("n1.npy"), &[]);
    let (_, b) = search_ids(&parted, &t("q.npy"), "10", &t("n2.npy"), &[]);
    assert_eq!(a, b);
    // Another part size, or none, is refused.
    let err = run_err(&[
        "index",
        "build",
        "--vectors",
        &p(&t("b.npy")),
        "--kind",
        "flat",
        "--storage",
        "f32",
        "--out",
        &p(&parted),
        "--append",
    ]);
    assert!(err.contains("parts of"), "{err}");
}

/// `-k` and `--ef-search` size allocations: above the bound they are refused with the flag named
/// (they aborted the process on an allocation failure); below it, a `k` or an `ef` larger than
/// the index gives every vector, padded with -1 as FAISS does.
#[test]
fn search_widths_are_bounded_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = |n: &str| tmp.path().join(n);
    random_npy(&t("base.npy"), 40, 8, 3);
    random_npy(&t("q.npy"), 2, 8, 4);
    for kind in ["flat", "hnsw"] {
        let dir = t(&format!("idx-{kind}"));
        run_ok(&[
            "index",
            "build",
            "--vectors",
            &p(&t("base.npy")),
            "--kind",
            kind,
            "--out",
            &p(&dir),
        ]);
        for flags in [
            ["-k", "100000000000", "--ef-search", "64"],
            ["-k", "5", "--ef-search", "100000000000"],
        ] {
            let mut args = vec![
                "index".to_string(),
                "search".into(),
                p(&dir),
                "--queries".into(),
                p(&t("q.npy")),
                "--out".into(),
                p(&t("n.npy")),
            ];
            args.extend(flags.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let err = run_err(&args);
            assert!(err.contains("at most 1048576"), "{kind}: {err}");
        }
        let (shape, ids) = search_ids(
            &dir,
            &t("q.npy"),
            "50",
            &t("n.npy"),
            &["--ef-search", "1000"],
        );
        assert_eq!(shape, [2, 50]);
        for row in ids.chunks(50) {
            assert_eq!(
                row.iter().filter(|&&i| i >= 0).count(),
                40,
                "{kind}: {row:?}"
            );
            assert!(row[40..].iter().all(|&i| i == -1));
        }
    }
}
