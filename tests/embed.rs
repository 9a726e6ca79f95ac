//! End-to-end tests of the `cm3 embed` tools.
mod common;

use std::fs;

use cm3_embed::preprocess::{CLIP_SIZE, preprocess_bytes};
use common::*;

#[test]
fn tokenize_writes_77_id_rows_and_counts_truncation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("captions.txt");
    let long = "a very long caption ".repeat(40);
    fs::write(
        &input,
        format!("Hello World!\n{long}\n<break> is plain text here\n"),
    )
    .expect("w");
    let out = tmp.path().join("ids.jsonl");
    let res = run_ok(&[
        "embed",
        "tokenize",
        "--input",
        input.to_str().expect("p"),
        "--out",
        out.to_str().expect("p"),
    ]);
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("3 rows written"),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("1 longer than 77"));
    let rows: Vec<Vec<u32>> = fs::read_to_string(&out)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.len() == 77));
    // The CLIP notebook's printed output for "Hello World!".
    assert_eq!(&rows[0][..6], &[49406, 3306, 1002, 256, 49407, 0]);
    assert_eq!(rows[1][76], 49407);
}

#[test]
fn preprocess_writes_a_numpy_tensor_in_argument_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pairs = sample_pairs();
    let (a, b) = (&pairs[0].image, &pairs[5].image);
    let out = tmp.path().join("x.npy");
    run_ok(&[
        "embed",
        "preprocess",
        b.to_str().expect("p"),
        a.to_str().expect("p"),
        "--out",
        out.to_str().expect("p"),
    ]);
    let file = fs::read(&out).expect("npy");
    let header_len = usize::from(u16::from_le_bytes([file[8], file[9]]));
    let header = std::str::from_utf8(&file[10..10 + header_len]).expect("header");
    assert!(
        header.contains("'<f4'") && header.contains("(2, 3, 224, 224)"),
        "{header}"
    );
    let values: Vec<f32> = file[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let per = 3 * (CLIP_SIZE * CLIP_SIZE) as usize;
    assert_eq!(values.len(), 2 * per);
    assert_eq!(
        values[..per],
        preprocess_bytes(&fs::read(b).expect("b"), CLIP_SIZE).expect("b")[..]
    );
    assert_eq!(
        values[per..],
        preprocess_bytes(&fs::read(a).expect("a"), CLIP_SIZE).expect("a")[..]
    );
    // A file that is not an image is an error naming it, and nothing is written.
    let bad = tmp.path().join("bad.jpg");
    fs::write(&bad, b"not an image").expect("w");
    let out2 = tmp.path().join("y.npy");
    let err = run_err(&[
        "embed",
        "preprocess",
        bad.to_str().expect("p"),
        "--out",
        out2.to_str().expect("p"),
    ]);
    assert!(err.contains("bad.jpg"), "{err}");
    assert!(!out2.exists());
}

/// A float16 (or u64) .npy as f32 values and its shape.
fn read_f16_npy(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let npy = cm3_embed::npy::Npy::parse(&fs::read(path).expect("read")).expect("npy");
    let values = match npy.descr.as_str() {
        "<u8" => npy
            .to_i64()
            .expect("ints")
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        _ => npy.to_f32().expect("floats"),
    };
    (npy.shape, values)
}

#[test]
fn embed_stage_writes_unit_vectors_shard_aligned_and_resumes() {
    runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ds = tmp.path().join("ds");
    let p = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    run_ok(&[
        "ingest",
        "--input",
        &p(&sample_dir()),
        "--out",
        &p(&ds),
        "--shard-rows",
        "20",
        "--no-progress",
    ]);
    let args = [
        "embed".to_string(),
        p(&ds),
        "--image-model".into(),
        p(&tiny_model("vision")),
        "--text-model".into(),
        p(&tiny_model("text")),
        "--batch-size".into(),
        "7".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ok(&args);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("32 rows and 0 rejects in 2 shard(s)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = manifest(&ds);
    let ingest_shards: Vec<String> = m["stages"]["ingest"]["shards"]
        .as_object()
        .expect("shards")
        .keys()
        .cloned()
        .collect();
    let embed_shards: Vec<String> = m["stages"]["embed"]["shards"]
        .as_object()
        .expect("shards")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        ingest_shards, embed_shards,
        "one embeddings folder per pairs shard"
    );
    let mut total = 0;
    for name in &embed_shards {
        let dir = ds.join("embeddings").join(name);
        let (ids_shape, _) = read_f16_npy(&dir.join("ids.npy"));
        let n = ids_shape[0];
        total += n;
        let (shape, image) = read_f16_npy(&dir.join("image.npy"));
        assert_eq!(shape, vec![n, 512]);
        let (_, text) = read_f16_npy(&dir.join("text.npy"));
        let (_, doc) = read_f16_npy(&dir.join("doc.npy"));
        for r in 0..n {
            let row = |v: &[f32]| v[r * 512..(r + 1) * 512].to_vec();
            let (i, t, d) = (row(&image), row(&text), row(&doc));
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            for v in [&i, &t, &d] {
                assert!((norm(v) - 1.0).abs() < 5e-3, "norm {}", norm(v));
            }
            // doc = normalise((image + text) / 2), up to float16 rounding.
            let mean: Vec<f32> = i.iter().zip(&t).map(|(a, b)| (a + b) / 2.0).collect();
            let nm = norm(&mean);
            let err = mean
                .iter()
                .zip(&d)
                .map(|(m, d)| (m / nm - d).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 2e-3, "doc differs from normalise(mean) by {err}");
        }
    }
    assert_eq!(total, 32);
    // A second run does nothing; a different model is refused.
    let out = run_ok(&args);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("0 rows and 0 rejects in 0 shard(s) (2 skipped)")
    );
    let mut other = args.clone();
    let text_as_image = p(&tiny_model("text"));
    other[5] = &text_as_image;
    other[3] = &text_as_image;
    let err = run_err(&other);
    assert!(err.contains("pixel_values"), "{err}");
    // An hf: model that is neither cached nor downloadable (no hub here) says how to get it; one
    // in the hub cache is used.
    let hub_cache = tmp.path().join("hub");
    let out = cm3()
        .args([
            "embed",
            &p(&ds),
            "--image-model",
            "hf:nobody/nothing",
            "--text-model",
            &p(&tiny_model("text")),
        ])
        .env("HF_HUB_CACHE", &hub_cache)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("huggingface-cli download nobody/nothing"),
        "{err}"
    );
    let snap = hub_cache.join("models--Qdrant--clip-ViT-B-32-vision/snapshots/0123abc");
    fs::create_dir_all(&snap).expect("mkdir");
    fs::copy(
        tiny_model("vision").join("model.onnx"),
        snap.join("model.onnx"),
    )
    .expect("copy");
    let out = cm3()
        .args(["embed", &p(&ds), "--text-model", &p(&tiny_model("text"))])
        .env("HF_HUB_CACHE", &hub_cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("(2 skipped)"));
}

#[test]
fn embed_text_and_image_print_unit_vectors() {
    runtime();
    let p = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let out = run_ok(&[
        "embed",
        "text",
        "a photo of a cat",
        "--text-model",
        &p(&tiny_model("text")),
    ]);
    let v: Vec<f32> = serde_json::from_slice(&out.stdout).expect("json vector");
    assert_eq!(v.len(), 512);
    assert!((v.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-5);
    // Same text, same vector; another text, another vector.
    let again: Vec<f32> = serde_json::from_slice(
        &run_ok(&[
            "embed",
            "text",
            "a photo of a cat",
            "--text-model",
            &p(&tiny_model("text")),
        ])
        .stdout,
    )
    .expect("json");
    assert_eq!(v, again);
    let other: Vec<f32> = serde_json::from_slice(
        &run_ok(&[
            "embed",
            "text",
            "a red bicycle",
            "--text-model",
            &p(&tiny_model("text")),
        ])
        .stdout,
    )
    .expect("json");
    assert_ne!(v, other);
    let pairs = sample_pairs();
    let tmp = tempfile::tempdir().expect("tempdir");
    let npy = tmp.path().join("img.npy");
    run_ok(&[
        "embed",
        "image",
        &p(&pairs[0].image),
        "--image-model",
        &p(&tiny_model("vision")),
        "--out",
        &p(&npy),
    ]);
    let file = fs::read(&npy).expect("npy");
    let header_len = usize::from(u16::from_le_bytes([file[8], file[9]]));
    assert!(
        std::str::from_utf8(&file[10..10 + header_len])
            .expect("header")
            .contains("(1, 512)")
    );
    let img: Vec<f32> = file[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!((img.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-5);
}

/// Replace the image of the first row of a pairs shard by bytes that are not an image.
fn corrupt_first_image(shard: &std::path::Path) {
    use arrow_array::{Array, ArrayRef, RecordBatch};
    use std::sync::Arc;
    let f = fs::File::open(shard).expect("open");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("reader")
        .build()
        .expect("build");
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    let schema = batches[0].schema();
    let out = fs::File::create(shard).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(out, schema.clone(), None).expect("writer");
    for (n, b) in batches.iter().enumerate() {
        let idx = schema.index_of("image").expect("image column");
        let images = b
            .column(idx)
            .as_any()
            .downcast_ref::<arrow_array::BinaryArray>()
            .expect("binary");
        let new: arrow_array::BinaryArray = (0..images.len())
            .map(|i| {
                if n == 0 && i == 0 {
                    Some(&b"\xff\xd8 not a jpeg any more"[..])
                } else {
                    Some(images.value(i))
                }
            })
            .collect();
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols[idx] = Arc::new(new);
        w.write(&RecordBatch::try_new(schema.clone(), cols).expect("batch"))
            .expect("write");
    }
    w.close().expect("close");
}

#[test]
fn embed_with_config_file_workers_and_a_corrupted_shard() {
    runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ds = tmp.path().join("ds");
    let p = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    run_ok(&[
        "ingest",
        "--input",
        &p(&sample_dir()),
        "--out",
        &p(&ds),
        "--shard-rows",
        "10",
        "--no-progress",
    ]);
    let first = shard_files(&ds)[0].clone();
    corrupt_first_image(&first);
    let cfg = tmp.path().join("embed.toml");
    fs::write(
        &cfg,
        format!(
            "image_model = {:?}\ntext_model = {:?}\nbatch_size = 4\n",
            p(&tiny_model("vision")),
            p(&tiny_model("text"))
        ),
    )
    .expect("w");
    for i in 0..2 {
        let i = i.to_string();
        run_ok(&[
            "embed",
            &p(&ds),
            "--config",
            &p(&cfg),
            "--num-workers",
            "2",
            "--worker-index",
            &i,
        ]);
    }
    run_ok(&["manifest", "merge", &p(&ds)]);
    let m = manifest(&ds);
    let stage = &m["stages"]["embed"];
    assert_eq!(stage["totals"]["shards"], 4);
    assert_eq!(stage["totals"]["rows"], 31);
    assert_eq!(stage["totals"]["rejects_by_reason"]["corrupt-image"], 1);
    let rejects: Vec<serde_json::Value> = fs::read_dir(ds.join("rejects/embed"))
        .expect("rejects")
        .flat_map(|e| {
            fs::read_to_string(e.expect("entry").path())
                .expect("read")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rejects.len(), 1);
    assert!(
        rejects[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("decoding")),
        "{rejects:?}"
    );
    // An unknown field in the config file is an error naming it.
    fs::write(&cfg, "image_modle = \"x\"\n").expect("w");
    let err = run_err(&["embed", &p(&ds), "--config", &p(&cfg)]);
    assert!(err.contains("image_modle"), "{err}");
}

#[test]
fn missing_onnx_runtime_says_what_to_run() {
    let out = cm3()
        .args([
            "embed",
            "text",
            "hello",
            "--text-model",
            tiny_model("text").to_str().expect("p"),
        ])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .env("CM3_ORT_DIR", "/nonexistent")
        .env("PATH", "")
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ONNX Runtime (libonnxruntime.so) not found")
            && err.contains("setup-onnxruntime.sh"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// ONNX Runtime is never taken from the directory cm3 runs in: a planted `onnxruntime/` package
/// there is neither imported by the Python fallback (importing runs its code) nor loaded.
#[test]
fn a_planted_onnxruntime_in_the_working_directory_is_not_loaded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkg = tmp.path().join("onnxruntime");
    fs::create_dir_all(pkg.join("capi")).expect("mkdir");
    let marker = tmp.path().join("imported");
    fs::write(
        pkg.join("__init__.py"),
        format!("open({:?}, 'w').write('planted code ran')\n", p(&marker)),
    )
    .expect("write");
    fs::write(pkg.join("capi/libonnxruntime.so.1.31.1"), b"not a library").expect("write");
    // No project install and no ORT_DYLIB_PATH: the Python fallback is what finds a runtime.
    let out = cm3()
        .current_dir(tmp.path())
        .env("CM3_ORT_DIR", tmp.path().join("no-install"))
        .env_remove("ORT_DYLIB_PATH")
        .args([
            "embed",
            "text",
            "a cat",
            "--text-model",
            &p(&tiny_model("text")),
        ])
        .output()
        .expect("spawn cm3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!marker.exists(), "the planted package was imported: {err}");
    assert!(!err.contains(&p(&pkg)), "{err}");
}
