//! End-to-end tests of the tokenizers on the repository's real sample: `cm3 tokenizer
//! train-text`, `cm3 tokenize` with the VQ tokenizer fixture (a taming GumbelVQ checkpoint),
//! the vocabulary layout, incremental runs, refusing to mix tokenizers, and the image commands.
mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use cm3_core::vocab::VocabLayout;
use cm3_tokenize::TextTokenizer;
use common::*;

fn ingest(ds: &Path) {
    run_ok(&[
        "ingest",
        "--input",
        &p(&sample_dir()),
        "--out",
        &p(ds),
        "--shard-rows",
        "12",
        "--image-size",
        "32",
        "--image-format",
        "png",
        "--no-progress",
    ]);
}

/// `cm3 tokenizer train-text` on the dataset's captions (every word counted, however rare).
fn train_text(ds: &Path, vocab_size: &str, extra: &[&str]) {
    let ds = p(ds);
    let mut args = vec![
        "tokenizer",
        "train-text",
        &ds,
        "--vocab-size",
        vocab_size,
        "--min-frequency",
        "1",
    ];
    args.extend_from_slice(extra);
    run_ok(&args);
}

#[test]
fn tokenizes_the_sample_into_one_vocabulary() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    ingest(&ds);

    // Tokenize needs a text tokenizer first.
    let err = run_err(&["tokenize", &p(&ds), "--image-tokenizer", &p(&vq_ckpt())]);
    assert!(err.contains("cm3 tokenizer train-text"), "{err}");

    train_text(&ds, "600", &[]);
    let err = run_err(&["tokenizer", "train-text", &p(&ds)]);
    assert!(err.contains("--overwrite"), "{err}");
    let text = TextTokenizer::load(&ds.join("tokenizer/text/tokenizer.json")).expect("text");
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(ds.join("tokenizer/text/train.json")).expect("record"))
            .expect("json");
    assert_eq!(record["corpus"], "captions");
    assert_eq!(record["report"]["texts"], 32);

    let out = run_ok(&[
        "tokenize",
        &p(&ds),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--no-progress",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["rows"], 32);
    assert_eq!(report["shards_written"], 3);
    assert_eq!(report["image_tokens"], 32 * 16);

    let layout = VocabLayout::load(&ds.join("tokenizer/vocab.json")).expect("layout");
    assert_eq!(layout.text.size, text.vocab_size());
    assert_eq!(layout.image.offset, text.vocab_size());
    assert_eq!((layout.image.codes, layout.image.grid), (64, 4));
    assert_eq!(layout.size, text.vocab_size() + 64);

    let captions: HashMap<u64, String> = read_rows(&ds)
        .into_iter()
        .map(|r| (r.id, r.caption))
        .collect();
    let rows = read_tokens(&ds);
    assert_eq!(rows.len(), 32);
    for r in &rows {
        assert_eq!(r.image.len(), 16);
        assert!(
            r.image.iter().all(|&t| layout.image_code(t).is_some()),
            "{r:?}"
        );
        assert!(r.text.iter().all(|&t| layout.is_text(t)));
        assert_eq!(&text.decode(&r.text).expect("decode"), &captions[&r.id]);
    }
    // Real images give varied codes, not one code everywhere.
    let distinct: std::collections::HashSet<u32> =
        rows.iter().flat_map(|r| r.image.iter().copied()).collect();
    assert!(
        distinct.len() >= 10,
        "{} distinct image ids",
        distinct.len()
    );

    // Incremental: nothing to do the second time.
    let out = run_ok(&[
        "tokenize",
        &p(&ds),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--json",
    ]);
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(
        (
            again["shards_written"].as_u64(),
            again["shards_skipped"].as_u64()
        ),
        (Some(0), Some(3))
    );

    // Another text tokenizer: refused, the tokens would mix two vocabularies.
    train_text(&ds, "500", &["--overwrite"]);
    let err = run_err(&["tokenize", &p(&ds), "--image-tokenizer", &p(&vq_ckpt())]);
    assert!(
        err.contains("different configuration") && err.contains("--rebuild"),
        "{err}"
    );
    let before = fs::read(ds.join("tokenizer/vocab.json")).expect("vocab");
    assert_eq!(
        VocabLayout::load(&ds.join("tokenizer/vocab.json")).expect("layout"),
        layout,
        "a refused run must not touch the layout"
    );
    run_ok(&[
        "tokenize",
        &p(&ds),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--rebuild",
    ]);
    assert_ne!(
        fs::read(ds.join("tokenizer/vocab.json")).expect("vocab"),
        before
    );

    // The image commands agree with the stage: the same image gives the same codes.
    let pair = &sample_pairs()[0];
    let id = read_rows(&ds)
        .into_iter()
        .find(|r| r.key == pair.stem || r.key.starts_with(&format!("{}.", pair.stem)))
        .map(|r| r.id)
        .expect("the pair's row");
    let row = rows.iter().find(|r| r.id == id).expect("its tokens");
    let codes_json = tmp.path().join("codes.json");
    run_ok(&[
        "tokenizer",
        "encode-image",
        &p(&pair.image),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--out",
        &p(&codes_json),
    ]);
    let codes: Vec<u32> =
        serde_json::from_slice(&fs::read(&codes_json).expect("codes")).expect("json");
    assert_eq!(codes.len(), 16);
    let from_stage: Vec<u32> = row.image.iter().map(|&t| t - layout.image.offset).collect();
    assert_eq!(codes, from_stage);
    let png = tmp.path().join("decoded.png");
    run_ok(&[
        "tokenizer",
        "decode-image",
        &p(&codes_json),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--out",
        &p(&png),
    ]);
    let img = image::open(&png).expect("png");
    assert_eq!((img.width(), img.height()), (32, 32));
    fs::write(&codes_json, "[1, 2, 3]").expect("write");
    let err = run_err(&[
        "tokenizer",
        "decode-image",
        &p(&codes_json),
        "--image-tokenizer",
        &p(&vq_ckpt()),
        "--out",
        &p(&png),
    ]);
    assert!(err.contains("3 codes") && err.contains("16"), "{err}");
}

#[test]
fn images_of_the_wrong_size_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    // Ingested at the default 256 px; the fixture tokenizer takes 32 px.
    run_ok(&[
        "ingest",
        "--input",
        &p(&sample_dir()),
        "--out",
        &p(&ds),
        "--no-progress",
    ]);
    train_text(&ds, "400", &[]);
    let err = run_err(&["tokenize", &p(&ds), "--image-tokenizer", &p(&vq_ckpt())]);
    assert!(
        err.contains("ingested at 256") && err.contains("--image-size 32"),
        "{err}"
    );
    assert!(!ds.join("tokens").exists());
    let err = run_err(&["tokenize", &p(&ds), "--image-tokenizer", "/nonexistent/vq"]);
    assert!(err.contains("/nonexistent/vq"), "{err}");
}

#[test]
fn trains_its_own_image_tokenizer_and_tokenizes_with_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    run_ok(&[
        "ingest",
        "--input",
        &p(&sample_dir()),
        "--out",
        &p(&ds),
        "--image-size",
        "64",
        "--no-progress",
    ]);
    let cfg = tmp.path().join("vq.toml");
    fs::write(
        &cfg,
        "steps = 40\nbatch_size = 4\nheld_out = 6\n\n[model]\nch = 32\nch_mult = [1, 1, 2, 2]\n\
         num_res_blocks = 1\nattn_resolutions = []\nresolution = 32\nin_channels = 3\nout_ch = 3\n\
         z_channels = 16\nembed_dim = 16\nn_embed = 64\n",
    )
    .expect("config");
    // `cm3 tokenizer train-image` with a settings file (and more flags), its JSON report.
    let train_image = |cfg: &Path, more: &[&str]| -> serde_json::Value {
        let (ds, cfg) = (p(&ds), p(cfg));
        let mut args = vec!["tokenizer", "train-image", &ds, "--config", &cfg];
        args.extend(more);
        args.extend(["--no-progress", "--json"]);
        serde_json::from_slice(&run_ok(&args).stdout).expect("report")
    };
    let r = train_image(&cfg, &[]);
    let first = r["held_out_mse_first"].as_f64().expect("first");
    let last = r["held_out_mse_last"].as_f64().expect("last");
    // Reconstruction error on held-out images falls as it trains.
    assert!(last < 0.8 * first, "held-out MSE {first} -> {last}");
    assert_eq!(r["held_out"], 6);
    // Every other image is trained on while they fit `max_images`.
    assert_eq!(
        (r["images"].as_u64(), r["images_available"].as_u64()),
        (Some(26), Some(32))
    );
    assert!(r["codes_used"].as_u64().expect("used") >= 4, "{r}");
    let psnr = r["psnr_db"].as_f64().expect("psnr");
    assert!(psnr.is_finite() && psnr > 5.0, "{psnr}");
    assert!(ds.join("tokenizer/image/model.safetensors").is_file());

    // Training again without --overwrite is refused; the saved tokenizer is kept.
    let err = run_err(&["tokenizer", "train-image", &p(&ds), "--config", &p(&cfg)]);
    assert!(err.contains("--overwrite"), "{err}");

    // With fewer allowed than there are, a sample of `max_images` is decoded and trained on,
    // the same held-out images beside it.
    let capped = tmp.path().join("vq-capped.toml");
    let text = fs::read_to_string(&cfg).expect("config");
    fs::write(
        &capped,
        text.replacen("held_out = 6\n", "held_out = 6\nmax_images = 10\n", 1),
    )
    .expect("config");
    let c = train_image(&capped, &["--out", &p(&tmp.path().join("vq-capped"))]);
    assert_eq!(
        (c["images"].as_u64(), c["images_available"].as_u64()),
        (Some(10), Some(32))
    );
    assert_eq!(c["held_out"], 6);
    assert!(
        c["held_out_mse_last"].as_f64().expect("last")
            < c["held_out_mse_first"].as_f64().expect("first"),
        "{c}"
    );

    // `cm3 tokenize` finds the dataset's own tokenizers: 64² images → 8 × 8 codes of 64.
    train_text(&ds, "400", &[]);
    let out = run_ok(&["tokenize", &p(&ds), "--no-progress", "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(t["rows"], 32);
    assert_eq!(t["image_tokens"], 32 * 64);
    let layout = VocabLayout::load(&ds.join("tokenizer/vocab.json")).expect("layout");
    assert_eq!((layout.image.codes, layout.image.grid), (64, 8));
    // The dataset's own tokenizers are recorded relative to it (the dataset can move).
    assert_eq!(layout.text.tokenizer.path, "tokenizer/text/tokenizer.json");
    assert!(
        layout.image.tokenizer.path.starts_with("tokenizer/image"),
        "{}",
        layout.image.tokenizer.path
    );
}

/// An image tokenizer outside the dataset, given relative to where `cm3 tokenize` ran, is
/// recorded as an absolute path (`cm3 generate` reads it from any directory); the same
/// tokenizer moved elsewhere is the same layout, recorded at its new place (another tokenizer
/// is refused: `tokenizes_the_sample_into_one_vocabulary`).
#[test]
fn the_layout_records_where_the_image_tokenizer_is_from_any_directory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    ingest(&ds);
    train_text(&ds, "600", &[]);
    let vq = tmp.path().join("vq");
    fs::create_dir(&vq).expect("vq dir");
    let fixture = vq_ckpt();
    for name in ["tiny_gumbel_f8.ckpt", "config.yaml"] {
        let from = fixture.with_file_name(name);
        fs::copy(&from, vq.join(name)).expect("copy the VQ fixture");
    }
    let out = cm3()
        .current_dir(tmp.path())
        .args([
            "tokenize",
            &p(&ds),
            "--image-tokenizer",
            "vq/tiny_gumbel_f8.ckpt",
            "--no-progress",
        ])
        .output()
        .expect("spawn cm3");
    assert!(out.status.success(), "{}", stderr(&out));
    let layout = VocabLayout::load(&ds.join("tokenizer/vocab.json")).expect("layout");
    let recorded = Path::new(&layout.image.tokenizer.path);
    assert!(recorded.is_absolute(), "{}", recorded.display());
    assert!(recorded.is_file(), "{}", recorded.display());

    let moved = tmp.path().join("moved");
    fs::rename(&vq, &moved).expect("move the tokenizer");
    run_ok(&[
        "tokenize",
        &p(&ds),
        "--image-tokenizer",
        &p(&moved.join("tiny_gumbel_f8.ckpt")),
        "--no-progress",
    ]);
    let layout = VocabLayout::load(&ds.join("tokenizer/vocab.json")).expect("layout");
    assert!(
        Path::new(&layout.image.tokenizer.path)
            .starts_with(fs::canonicalize(&moved).expect("canon")),
        "{}",
        layout.image.tokenizer.path
    );
}

#[test]
fn two_workers_and_a_merge_give_the_single_process_tokens() {
    let tmp = tempfile::tempdir().expect("tmp");
    let single = tmp.path().join("single");
    ingest(&single);
    train_text(&single, "500", &[]);
    let split = tmp.path().join("split");
    ingest(&split);
    // The same text tokenizer for both (training is deterministic, but share the file anyway).
    let text = single.join("tokenizer/text/tokenizer.json");
    let vq = p(&vq_ckpt());
    run_ok(&[
        "tokenize",
        &p(&single),
        "--image-tokenizer",
        &vq,
        "--no-progress",
    ]);
    for w in ["0", "1"] {
        run_ok(&[
            "tokenize",
            &p(&split),
            "--text-tokenizer",
            &p(&text),
            "--image-tokenizer",
            &vq,
            "--num-workers",
            "2",
            "--worker-index",
            w,
            "--no-progress",
        ]);
    }
    run_ok(&["manifest", "merge", &p(&split)]);
    let (a, b) = (read_tokens(&single), read_tokens(&split));
    assert_eq!(a.len(), 32);
    assert_eq!(a, b);
    let m = manifest(&split);
    assert_eq!(
        m["stages"]["tokenize"]["shards"]
            .as_object()
            .expect("shards")
            .len(),
        3
    );
}
