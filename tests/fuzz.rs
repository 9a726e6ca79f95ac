//! The fuzz campaign (issue 21): every parser that reads bytes a user did not write with cm3
//! gets inputs made by mutating a real, valid file of its format (byte flips, truncations,
//! insertions, and 32-bit sizes set to 0, 2^31 - 1 or 2^32 - 1, which is where allocation bugs
//! live) and purely random bytes. Every input must come back as a value or an error: a panic
//! fails the case, an abort (an allocation beyond memory) kills the test.
//!
//! `CM3_FUZZ_CASES` inputs per parser (64 by default, what CI runs; `scripts/fuzz.sh` runs
//! more), seeded (`CM3_FUZZ_SEED`, 0 by default) so that a failure repeats. Each test prints how
//! many inputs it tried.
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// A little-endian u32 overwritten with a size that breaks naive allocation.
    Size {
        at: usize,
        value: u32,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u32),
                Just(0x7fff_ffff),
                Just(u32::MAX),
                Just(0x8000_0000)
            ]
        )
            .prop_map(|(at, value)| Mutation::Size { at, value }),
    ]
}

/// The seed with `mutations` applied, or (one case in eight) random bytes.
fn input(seed: &[u8]) -> impl Strategy<Value = Vec<u8>> {
    let seed = seed.to_vec();
    prop_oneof![
        7 => proptest::collection::vec(mutation(), 1..8).prop_map(move |ms| {
            let mut b = seed.clone();
            for m in ms {
                apply(&mut b, m);
            }
            b
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

fn apply(b: &mut Vec<u8>, m: Mutation) {
    let n = b.len().max(1);
    match m {
        Mutation::Flip { at, mask } => {
            if let Some(x) = b.get_mut(at % n) {
                *x ^= mask;
            }
        }
        Mutation::Truncate { at } => b.truncate(at % n),
        Mutation::Insert { at, bytes } => {
            let at = (at % n).min(b.len());
            b.splice(at..at, bytes);
        }
        Mutation::Size { at, value } => {
            let at = at % n;
            if at + 4 <= b.len() {
                b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("CM3_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Run `parse` on `cases()` inputs derived from `seed`; it must not panic. Returns the count.
fn fuzz(name: &str, seed: &[u8], parse: impl Fn(&[u8])) -> u32 {
    let seed_value: u64 = std::env::var("CM3_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed_value.to_le_bytes());
    for (i, b) in name.bytes().enumerate() {
        key[8 + i % 24] ^= b;
    }
    let n = cases();
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: n,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    let result = runner.run(&input(seed), |bytes| {
        parse(&bytes);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: an input made a parser panic: {e}");
    }
    println!("fuzz {name}: {n} inputs, none panicked");
    n
}

/// Write `bytes` to a fresh file `name` in a temporary folder (kept while the guard lives).
fn file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join(name);
    fs::write(&path, bytes).expect("write");
    (dir, path)
}

/// Read `path` as an ingest source of `format` to its end (records and rejects are fine).
fn read_source(path: &Path, format: cm3_ingest::InputFormat) {
    let spec = cm3_ingest::source::SourceSpec {
        path: path.to_path_buf(),
        format,
        id: path.to_string_lossy().into_owned(),
        image_root: None,
    };
    let cfg = cm3_ingest::IngestConfig::default();
    if spec.check(&cfg).is_err() {
        return;
    }
    let mut n = 0u64;
    spec.read(&cfg, &|_| true, &mut |_r| {
        n += 1;
        n < 100_000
    });
}

#[test]
fn images() {
    let cfg = cm3_ingest::IngestConfig {
        image_size: 32,
        ..cm3_ingest::IngestConfig::default()
    };
    // A JPEG and a PNG of the sample (the PNG: a pair stored as such, or the JPEG re-encoded).
    let pairs = sample_pairs();
    let jpeg = fs::read(&pairs[0].image).expect("image");
    let png = {
        let img = image::load_from_memory(&jpeg)
            .expect("decode")
            .thumbnail(48, 48);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("png");
        out.into_inner()
    };
    let small_jpeg = {
        let img = image::load_from_memory(&jpeg)
            .expect("decode")
            .thumbnail(48, 48);
        let mut out = std::io::Cursor::new(Vec::new());
        img.to_rgb8()
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("jpeg");
        out.into_inner()
    };
    for (name, seed) in [("image-jpeg", &small_jpeg), ("image-png", &png)] {
        fuzz(name, seed, |b| {
            let _ = cm3_ingest::normalize::normalize_image(b, &cfg);
        });
    }
}

#[test]
fn webdataset_tars() {
    let pairs = sample_pairs();
    let dir = tempfile::tempdir().expect("tmp");
    let tars = write_webdataset(dir.path(), &pairs[..2], 2);
    let seed = fs::read(&tars[0]).expect("tar");
    fuzz("webdataset-tar", &seed, |b| {
        let (_d, path) = file("x.tar", b);
        read_source(&path, cm3_ingest::InputFormat::Webdataset);
    });
}

#[test]
fn tables_and_coco() {
    let jsonl = br#"{"image": "a.jpg", "caption": "a cat", "key": "k1", "license": "CC-BY"}
{"image": "b.png", "caption": "a dog", "split": "val"}
"#;
    fuzz("jsonl", jsonl, |b| {
        let (_d, path) = file("x.jsonl", b);
        read_source(&path, cm3_ingest::InputFormat::Jsonl);
    });
    let csv = b"image,caption,key\na.jpg,\"a cat, sitting\",k1\nb.png,a dog,k2\n";
    fuzz("csv", csv, |b| {
        let (_d, path) = file("x.csv", b);
        read_source(&path, cm3_ingest::InputFormat::Csv);
    });
    let coco = br#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
 "annotations": [{"id": 7, "image_id": 1, "caption": "a cat"}],
 "licenses": [{"id": 1, "name": "CC BY", "url": "x"}]}"#;
    fuzz("coco-json", coco, |b| {
        let (_d, path) = file("captions.json", b);
        read_source(&path, cm3_ingest::InputFormat::Coco);
    });
    // Parquet: image bytes and captions.
    let parquet = {
        use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray};
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter(vec![
            (
                "jpg",
                Arc::new(BinaryArray::from_iter_values([b"abc".as_slice(), b"de"])) as ArrayRef,
            ),
            (
                "caption",
                Arc::new(StringArray::from_iter_values(["a cat", "a dog"])) as ArrayRef,
            ),
        ])
        .expect("batch");
        let mut out = Vec::new();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        out
    };
    fuzz("parquet", &parquet, |b| {
        let (_d, path) = file("x.parquet", b);
        read_source(&path, cm3_ingest::InputFormat::Parquet);
    });
}

#[test]
fn vectors_and_packed_index() {
    // .npy float32 [3, 4] and .fvecs of the same rows.
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
    let pad = 64 - (10 + header.len() + 1) % 64;
    let header = format!("{header}{}\n", " ".repeat(pad));
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    let mut fvecs = Vec::new();
    for r in 0..3 {
        fvecs.extend(4i32.to_le_bytes());
        for c in 0..4 {
            let v = (r * 4 + c) as f32 * 0.1;
            npy.extend(v.to_le_bytes());
            fvecs.extend(v.to_le_bytes());
        }
    }
    assert!(cm3_index::vectors::read_vectors(&file("v.npy", &npy).1).is_ok());
    fuzz("npy", &npy, |b| {
        let (_d, path) = file("v.npy", b);
        let _ = cm3_index::vectors::read_vectors(&path);
    });
    fuzz("fvecs", &fvecs, |b| {
        let (_d, path) = file("v.fvecs", b);
        let _ = cm3_index::vectors::read_vectors(&path);
    });
    // A Megatron .idx of two sequences, as cm3 pack writes them.
    let dir = tempfile::tempdir().expect("tmp");
    let prefix = dir.path().join("train");
    let mut w = cm3_pack::megatron::IndexedWriter::append(&prefix, 0).expect("writer");
    w.push(&[1, 2, 3, 4]).expect("push");
    w.push(&[5, 6, 7, 8]).expect("push");
    w.commit().expect("commit");
    let idx = fs::read(prefix.with_extension("idx")).expect("idx");
    fuzz("megatron-idx", &idx, |b| {
        let (_d, path) = file("x.idx", b);
        let _ = cm3_pack::megatron::read_index(&path);
    });
}

#[test]
fn manifests() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 4);
    let seed = fs::read(ds.join("manifest.json")).expect("manifest");
    fuzz("manifest-json", &seed, |b| {
        let (_d, path) = file("manifest.json", b);
        let _ = cm3_core::Manifest::load(&path);
    });
    let vocab = fs::read(ds.join("tokenizer/vocab.json")).expect("vocab");
    fuzz("vocab-json", &vocab, |b| {
        let (_d, path) = file("vocab.json", b);
        let _ = cm3_core::vocab::VocabLayout::load(&path);
    });
}

#[test]
fn index_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let n = 64;
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, 8), }}");
    let pad = 64 - (10 + header.len() + 1) % 64;
    let header = format!("{header}{}\n", " ".repeat(pad));
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    let mut state = 1u64;
    for _ in 0..n * 8 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        npy.extend((((state >> 33) as f32) / (1u64 << 31) as f32 - 0.5).to_le_bytes());
    }
    let vectors = tmp.path().join("v.npy");
    fs::write(&vectors, &npy).expect("npy");
    let out = tmp.path().join("index");
    run_ok(&[
        "index",
        "build",
        "--vectors",
        &p(&vectors),
        "--out",
        &p(&out),
        "--kind",
        "hnsw",
    ]);
    assert!(cm3_index::store::open(&out).expect("open").is_some());
    // Each file of the index mutated in turn, the others intact.
    let files: Vec<PathBuf> = walk(&out);
    for f in files {
        let name = f
            .strip_prefix(&out)
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        let seed = fs::read(&f).expect("read");
        fuzz(&format!("index:{name}"), &seed, |b| {
            let copy = tempfile::tempdir().expect("tmp");
            copy_dir(&out, copy.path());
            fs::write(copy.path().join(&name), b).expect("write");
            let _ = cm3_index::store::open(copy.path());
        });
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).expect("dir") {
        let p = e.expect("entry").path();
        let dst = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            fs::create_dir_all(&dst).expect("mkdir");
            copy_dir(&p, &dst);
        } else {
            fs::copy(&p, &dst).expect("copy");
        }
    }
}

#[test]
fn model_folders() {
    use cm3_model::decoder::{Cm3Decoder, DecoderConfig};
    let device = burn::tensor::Device::flex();
    let cfg = DecoderConfig {
        vocab_size: 32,
        d_model: 8,
        n_layers: 1,
        n_heads: 2,
        ffn_dim: 16,
        max_seq_len: 16,
        ..DecoderConfig::preset("tiny").expect("tiny")
    };
    let dir = tempfile::tempdir().expect("tmp");
    let model = Cm3Decoder::init(&cfg, 0, &device).expect("init");
    model
        .save(&dir.path().join("model.safetensors"))
        .expect("save");
    fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&cm3_model::decoder::HfOptConfig::json(&cfg)).expect("json"),
    )
    .expect("config");
    assert!(Cm3Decoder::load_dir(dir.path(), &device).is_ok());
    for name in ["config.json", "model.safetensors"] {
        let seed = fs::read(dir.path().join(name)).expect("read");
        fuzz(&format!("model:{name}"), &seed, |b| {
            let copy = tempfile::tempdir().expect("tmp");
            copy_dir(dir.path(), copy.path());
            fs::write(copy.path().join(name), b).expect("write");
            let _ = Cm3Decoder::load_dir(copy.path(), &device);
        });
    }
}
