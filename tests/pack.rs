//! End-to-end test of `cm3 pack` on the repository's real sample: ingest → embed → index →
//! augment → tokenize → pack, then more pairs and pack again (old sequences byte-identical), and
//! an interrupted pack (bytes written after the last commit) recovered to the same output.
mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use cm3_core::vocab::{self, VocabLayout};
use cm3_pack::masking::{Specials, unmask};
use cm3_pack::megatron::IndexedDataset;
use common::*;

/// Run a helper program, asserting success.
fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// Every stage up to tokens for whatever is in `input` (incremental).
fn prepare(ds: &Path, input: &Path, first: bool) {
    runtime();
    run_ok(&[
        "ingest",
        "--input",
        &p(input),
        "--out",
        &p(ds),
        "--shard-rows",
        "8",
        "--image-size",
        "32",
        "--image-format",
        "png",
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
    run_ok(&["augment", &p(ds), "--no-progress"]);
    if first {
        run_ok(&[
            "tokenizer",
            "train-text",
            &p(ds),
            "--vocab-size",
            "500",
            "--min-frequency",
            "1",
        ]);
    }
    run_ok(&[
        "tokenize",
        &p(ds),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--no-progress",
    ]);
}

fn pack(ds: &Path) -> serde_json::Value {
    let out = run_ok(&[
        "pack",
        &p(ds),
        "--seq-len",
        "256",
        "--val-fraction",
        "0.25",
        "--spans-mean",
        "1.5",
        "--json",
    ]);
    serde_json::from_slice(&out.stdout).expect("report")
}

/// (sequence, offset, pair id) per example.
fn boundaries(ds: &Path, split: &str) -> Vec<(i64, i64, u64)> {
    let bytes = fs::read(ds.join(format!("packed/{split}.boundaries.bin"))).expect("boundaries");
    bytes
        .chunks_exact(24)
        .map(|c| {
            let i = |r: std::ops::Range<usize>| i64::from_le_bytes(c[r].try_into().expect("8"));
            (i(0..8), i(8..16), i(16..24) as u64)
        })
        .collect()
}

#[test]
fn packs_retrieval_augmented_masked_examples_incrementally() {
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("input");
    let ds = tmp.path().join("ds");
    sample_part(&input, 0..16);
    prepare(&ds, &input, true);
    let first = pack(&ds);
    assert_eq!(first["shards_written"], 2);
    let examples = first["train"]["examples"].as_u64().expect("n")
        + first["val"]["examples"].as_u64().expect("n");
    assert_eq!(examples, 16);

    let layout = VocabLayout::load(&ds.join("tokenizer/vocab.json")).expect("layout");
    let sp = Specials::from_layout(&layout).expect("specials");
    let eos = layout.special(vocab::EOS).expect("eos");
    let tokens: HashMap<u64, (Vec<u32>, Vec<u32>)> = read_tokens(&ds)
        .into_iter()
        .map(|r| (r.id, (r.text, r.image)))
        .collect();
    let mut spans_seen = 0;
    let mut images_by_split: [HashSet<Vec<u32>>; 2] = Default::default();
    for (which, split) in ["train", "val"].into_iter().enumerate() {
        let d = IndexedDataset::read(&ds.join(format!("packed/{split}"))).expect("read");
        let b = boundaries(&ds, split);
        assert!(
            d.lengths.iter().all(|&l| l == 256),
            "{split}: every sequence is 256 tokens"
        );
        assert!(d.tokens.iter().all(|&t| t >= 0 && (t as u32) < layout.size));
        // The split's token stream without padding (which only ends a sequence), and where each
        // example starts in it: examples may run on into the next sequence (`stream`).
        let mut stream: Vec<u32> = Vec::new();
        let mut seq_start = Vec::new();
        for i in 0..d.lengths.len() {
            seq_start.push(stream.len());
            let s = d.sequence(i);
            let body = s
                .iter()
                .rposition(|&t| t as u32 != sp.pad)
                .map_or(0, |i| i + 1);
            stream.extend(s[..body].iter().map(|&t| t as u32));
        }
        let starts: Vec<usize> = b
            .iter()
            .map(|&(seq, off, _)| seq_start[seq as usize] + off as usize)
            .collect();
        for (k, &(_, _, pair)) in b.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(stream.len());
            let masked = &stream[starts[k]..end];
            spans_seen += usize::from(masked.contains(&sp.infill));
            // Every example ends with its scored <eos>, and CM3 masks at least one span.
            assert_eq!(
                masked.last(),
                Some(&eos),
                "{split} example {k} has no scored end"
            );
            assert!(
                masked.contains(&sp.infill),
                "{split} example {k} has no span"
            );
            let ex = unmask(masked, &sp).expect("unmask");
            // The query pair closes the example: <eos> text <break> image.
            let (text, image) = &tokens[&pair];
            let mut query = vec![eos];
            query.extend(text);
            query.push(sp.brk);
            query.extend(image);
            assert!(
                ex.ends_with(&query),
                "{split} example {k} does not end with its pair"
            );
            assert_eq!(ex[0], eos);
            // Retrieved documents (whole, from the dataset) come before it.
            let docs = ex.iter().filter(|&&t| t == eos).count();
            assert!(docs >= 2, "{split} example {k} has no retrieved document");
            images_by_split[which].insert(image.clone());
        }
    }
    // The split is by image: no image is on both sides.
    assert!(images_by_split[0].is_disjoint(&images_by_split[1]));
    let counts =
        |k: &str| first["train"][k].as_u64().expect("n") + first["val"][k].as_u64().expect("n");
    assert!(counts("text_spans") > 0 && counts("image_spans") > 0);
    assert_eq!(
        counts("text_spans") + counts("image_spans"),
        counts("masked_spans")
    );
    assert!(spans_seen > 0, "no example was masked");

    // An interrupted run leaves bytes after the last commit; a copy of the dataset gets some.
    let crashed = tmp.path().join("crashed");
    copy_dir(&ds, &crashed);
    let mut bin = fs::OpenOptions::new()
        .append(true)
        .open(crashed.join("packed/train.bin"))
        .expect("bin");
    std::io::Write::write_all(&mut bin, &[7u8; 1000]).expect("junk");

    // More pairs: only the new shards are packed, the old sequences stay byte-identical.
    let before = fs::read(ds.join("packed/train.bin")).expect("bin");
    let more = tmp.path().join("more");
    sample_part(&more, 16..32);
    prepare(&ds, &more, false);
    let second = pack(&ds);
    assert_eq!(
        (
            second["shards_written"].as_u64(),
            second["shards_skipped"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let after = fs::read(ds.join("packed/train.bin")).expect("bin");
    assert!(after.len() > before.len());
    assert_eq!(&after[..before.len()], &before[..]);
    let again = pack(&ds);
    assert_eq!(again["shards_written"], 0);

    prepare(&crashed, &more, false);
    pack(&crashed);
    for f in [
        "train.bin",
        "train.idx",
        "val.bin",
        "val.idx",
        "train.boundaries.bin",
    ] {
        assert_eq!(
            fs::read(ds.join("packed").join(f)).expect("a"),
            fs::read(crashed.join("packed").join(f)).expect("b"),
            "{f} differs after recovering from an interrupted run"
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(ds.join("packed/meta.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["seq_len"], 256);
    assert_eq!(meta["vocab"]["size"], layout.size);
    assert!(meta["stages"]["augment"].is_object() && meta["stages"]["tokenize"].is_object());

    // The README's numpy-only reader prints a sequence with its text detokenised.
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let numpy = succeed(
        Command::new("bash")
            .arg(scripts.join("setup-python-package.sh"))
            .args(["numpy", "2.2.6"]),
    );
    let out = succeed(
        Command::new("python3")
            .arg(scripts.join("read_packed.py"))
            .args([p(&ds), "train".into(), "0".into()])
            .env("PYTHONPATH", String::from_utf8_lossy(&numpy.stdout).trim()),
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let (seq, off, pair) = boundaries(&ds, "train")[0];
    assert_eq!((seq, off), (0, 0));
    let caption = read_rows(&ds)
        .into_iter()
        .find(|r| r.id == pair)
        .map(|r| r.caption)
        .expect("caption");
    // Its own caption is there unless a masked span took part of it.
    assert!(
        printed.starts_with("<eos> ") && printed.contains("<break> [16 image tokens]"),
        "{printed}"
    );
    let masked = printed.contains("<infill>");
    assert!(
        masked || printed.contains(&caption),
        "{printed}\nshould contain {caption:?}"
    );

    // Another setting without --rebuild is refused.
    let err = run_err(&["pack", &p(&ds), "--seq-len", "512"]);
    assert!(err.contains("--rebuild"), "{err}");
    // So are tokens remade with another tokenizer: two vocabularies never share packed files.
    run_ok(&[
        "tokenizer",
        "train-text",
        &p(&ds),
        "--vocab-size",
        "450",
        "--min-frequency",
        "1",
        "--overwrite",
    ]);
    run_ok(&[
        "tokenize",
        &p(&ds),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--rebuild",
        "--no-progress",
    ]);
    let err = run_err(&[
        "pack",
        &p(&ds),
        "--seq-len",
        "256",
        "--val-fraction",
        "0.25",
        "--spans-mean",
        "1.5",
    ]);
    assert!(err.contains("--rebuild"), "{err}");
    // What the refusal (and `cm3 train`, for an old objective) asks for: re-packing without any
    // setting keeps the dataset's recorded ones (256-token sequences here, not the paper's 4,096).
    run_ok(&["pack", &p(&ds), "--rebuild", "--json"]);
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(ds.join("packed/meta.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["seq_len"], 256);
    assert_eq!(meta["config"]["val_fraction"], 0.25);
    // A sequence length is a buffer size: bounded before anything is allocated (it aborted the
    // process), and the packed data already written stays.
    let err = run_err(&["pack", &p(&ds), "--seq-len", "100000000000", "--rebuild"]);
    assert!(
        err.contains("100000000000") && err.contains("1048576"),
        "{err}"
    );
    assert!(ds.join("packed/meta.json").is_file());
}

#[test]
fn pairs_excluded_from_the_memory_bank_are_never_trained_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (train_in, eval_in) = (tmp.path().join("train"), tmp.path().join("eval"));
    let ds = tmp.path().join("ds");
    sample_part(&train_in, 0..12);
    sample_part(&eval_in, 12..18);
    runtime();
    let mut before = HashSet::new();
    for input in [&train_in, &eval_in] {
        before = read_rows(&ds).into_iter().map(|r| r.id).collect();
        run_ok(&[
            "ingest",
            "--input",
            &p(input),
            "--out",
            &p(&ds),
            "--image-size",
            "32",
            "--image-format",
            "png",
            "--no-progress",
        ]);
    }
    // The pairs of the second ingest are the held-out set, given to augment as a file of ids.
    let eval_ids: HashSet<u64> = read_rows(&ds)
        .into_iter()
        .map(|r| r.id)
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(eval_ids.len(), 6);
    let ids_file = tmp.path().join("heldout.txt");
    let listed: String = eval_ids.iter().map(|id| format!("{id:016x}\n")).collect();
    fs::write(&ids_file, listed).expect("ids file");
    run_ok(&[
        "embed",
        &p(&ds),
        "--image-model",
        &p(&tiny_model("vision")),
        "--text-model",
        &p(&tiny_model("text")),
    ]);
    run_ok(&["index", "build", &p(&ds), "--no-progress"]);
    run_ok(&[
        "augment",
        &p(&ds),
        "--exclude",
        &p(&ids_file),
        "--no-progress",
    ]);
    // pack reads the ids from the dataset, not from the user's file.
    fs::remove_file(&ids_file).expect("rm ids file");
    run_ok(&[
        "tokenizer",
        "train-text",
        &p(&ds),
        "--vocab-size",
        "500",
        "--min-frequency",
        "1",
    ]);
    run_ok(&[
        "tokenize",
        &p(&ds),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--no-progress",
    ]);
    let r = pack(&ds);
    let excluded =
        r["train"]["excluded"].as_u64().expect("n") + r["val"]["excluded"].as_u64().expect("n");
    assert_eq!(excluded, 6, "{r}");
    let examples =
        r["train"]["examples"].as_u64().expect("n") + r["val"]["examples"].as_u64().expect("n");
    assert_eq!(examples, 12);
    for split in ["train", "val"] {
        for (_, _, pair) in boundaries(&ds, split) {
            assert!(
                !eval_ids.contains(&pair),
                "excluded pair {pair:016x} packed into {split}"
            );
        }
    }
    // The manifest records what was left out.
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(ds.join("manifest.json")).expect("manifest"))
            .expect("json");
    let recorded: u64 = m["stages"]["pack"]["shards"]
        .as_object()
        .expect("shards")
        .values()
        .map(|s| {
            s["counters"]["train_excluded"].as_u64().unwrap_or(0)
                + s["counters"]["val_excluded"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(recorded, 6);
}

#[test]
fn the_captions_of_one_image_are_never_on_both_sides_of_the_split() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let input = tmp.path().join("input");
    let ds = tmp.path().join("ds");
    sample_part(&input, 0..8);
    // Each image three times, with other captions (as COCO gives five per image).
    let images: Vec<_> = fs::read_dir(&input)
        .expect("input")
        .map(|e| e.expect("entry").path())
        .filter(|f| !matches!(f.extension().and_then(|e| e.to_str()), Some("txt" | "json")))
        .collect();
    assert_eq!(images.len(), 8);
    for img in &images {
        let stem = img.file_stem().and_then(|s| s.to_str()).expect("stem");
        let ext = img.extension().and_then(|s| s.to_str()).expect("ext");
        for k in 1..3 {
            fs::copy(img, input.join(format!("{stem}_{k}.{ext}"))).expect("copy");
            fs::write(
                input.join(format!("{stem}_{k}.txt")),
                format!("caption number {k} of the picture {stem}"),
            )
            .expect("caption");
        }
    }
    prepare(&ds, &input, true);
    let r = pack(&ds);
    let n = |s: &str| r[s]["examples"].as_u64().expect("n");
    assert_eq!(n("train") + n("val"), 24, "{r}");
    // With a quarter of the images held out, both sides have some.
    assert!(n("train") > 0 && n("val") > 0, "{r}");
    let image_of: HashMap<u64, Vec<u32>> = read_tokens(&ds)
        .into_iter()
        .map(|t| (t.id, t.image))
        .collect();
    let side = |split: &str| -> HashSet<Vec<u32>> {
        boundaries(&ds, split)
            .into_iter()
            .map(|(_, _, pair)| image_of[&pair].clone())
            .collect()
    };
    let (train, val) = (side("train"), side("val"));
    assert_eq!(train.len() + val.len(), 8, "each image on one side only");
    assert!(train.is_disjoint(&val));
}
