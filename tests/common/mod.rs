//! Helpers shared by the end-to-end tests: the embedded sample, running the `cm3` binary, and
//! reading what it wrote.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{Array, BooleanArray, StringArray, UInt32Array, UInt64Array};
use cm3_core::schema::{column, read_columns};

pub fn cm3() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cm3"));
    c.env("RUST_LOG", "warn");
    c
}

/// Run `cm3 args...`, asserting success; returns the output.
pub fn run_ok(args: &[&str]) -> Output {
    let out = cm3().args(args).output().expect("spawn cm3");
    assert!(
        out.status.success(),
        "cm3 {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run `cm3 args...`, asserting failure; returns stderr.
pub fn run_err(args: &[&str]) -> String {
    let out = cm3().args(args).output().expect("spawn cm3");
    assert!(!out.status.success(), "cm3 {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample/pairs")
}

/// One pair of the embedded sample.
#[derive(Debug, Clone)]
pub struct SamplePair {
    pub stem: String,
    pub image: PathBuf,
    pub caption: String,
    pub meta: serde_json::Value,
}

impl SamplePair {
    pub fn ext(&self) -> String {
        self.image
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    pub fn license(&self) -> String {
        self.meta["license"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    pub fn all_captions(&self) -> Vec<String> {
        self.meta["captions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn sample_pairs() -> Vec<SamplePair> {
    let dir = sample_dir();
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("sample dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for p in names {
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        if ext != "jpg" && ext != "png" {
            continue;
        }
        let stem = p.file_stem().expect("stem").to_string_lossy().into_owned();
        let caption = fs::read_to_string(p.with_extension("txt")).expect("caption");
        let meta = serde_json::from_slice(&fs::read(p.with_extension("json")).expect("json"))
            .expect("meta json");
        out.push(SamplePair {
            stem,
            image: p,
            caption: caption.trim().to_string(),
            meta,
        });
    }
    assert!(out.len() >= 30, "sample has {} pairs", out.len());
    out
}

/// A row as the tests look at it (image bytes left out).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub id: u64,
    pub key: String,
    pub caption: String,
    pub sha256: String,
    pub license: Option<String>,
    pub orig_width: u32,
    pub orig_height: u32,
    pub width: u32,
    pub caption_repaired: bool,
}

pub fn shard_files(dataset: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dataset.join("pairs")) {
        Ok(rd) => rd.map(|e| e.expect("entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

pub fn read_rows(dataset: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for f in shard_files(dataset) {
        assert_eq!(
            f.extension().and_then(|e| e.to_str()),
            Some("parquet"),
            "stray file {}",
            f.display()
        );
        let cols = [
            "id",
            "key",
            "caption",
            "sha256",
            "license",
            "orig_width",
            "orig_height",
            "width",
            "caption_repaired",
        ];
        for b in read_columns(&f, &cols).expect("read shard") {
            let id = column::<UInt64Array>(&b, "id").expect("id");
            let key = column::<StringArray>(&b, "key").expect("key");
            let cap = column::<StringArray>(&b, "caption").expect("caption");
            let sha = column::<StringArray>(&b, "sha256").expect("sha");
            let lic = column::<StringArray>(&b, "license").expect("license");
            let ow = column::<UInt32Array>(&b, "orig_width").expect("ow");
            let oh = column::<UInt32Array>(&b, "orig_height").expect("oh");
            let w = column::<UInt32Array>(&b, "width").expect("w");
            let rep = column::<BooleanArray>(&b, "caption_repaired").expect("rep");
            for i in 0..b.num_rows() {
                rows.push(Row {
                    id: id.value(i),
                    key: key.value(i).to_string(),
                    caption: cap.value(i).to_string(),
                    sha256: sha.value(i).to_string(),
                    license: (!lic.is_null(i)).then(|| lic.value(i).to_string()),
                    orig_width: ow.value(i),
                    orig_height: oh.value(i),
                    width: w.value(i),
                    caption_repaired: rep.value(i),
                });
            }
        }
    }
    rows
}

pub fn read_rejects(dataset: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dataset.join("rejects")) else {
        return out;
    };
    let mut files: Vec<PathBuf> = rd.map(|e| e.expect("entry").path()).collect();
    files.sort();
    for f in files {
        for line in fs::read_to_string(&f).expect("rejects").lines() {
            out.push(serde_json::from_str(line).expect("reject json"));
        }
    }
    out
}

pub fn reasons(rejects: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rejects {
        *m.entry(r["reason"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    m
}

pub fn manifest(dataset: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dataset.join("manifest.json")).expect("manifest"))
        .expect("manifest json")
}

/// What a dataset records, as a running (or killed) stage left it: `manifest.json` with the
/// complete lines of its journal replayed, as the next run reads it (`Manifest::load`): stage
/// name → shard name → record. Empty when there is no manifest yet.
pub fn recorded_shards(
    dataset: &Path,
) -> BTreeMap<String, BTreeMap<String, cm3_core::ShardRecord>> {
    cm3_core::Manifest::load(&dataset.join("manifest.json"))
        .expect("a manifest (and journal) that reads")
        .map(|m| m.stages.into_iter().map(|(k, r)| (k, r.shards)).collect())
        .unwrap_or_default()
}

/// Bytes of every shard and rejects file, by relative name.
pub fn output_bytes(dataset: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for d in ["pairs", "rejects"] {
        if let Ok(rd) = fs::read_dir(dataset.join(d)) {
            for e in rd {
                let p = e.expect("entry").path();
                let name = format!("{d}/{}", p.file_name().expect("name").to_string_lossy());
                m.insert(name, fs::read(&p).expect("read"));
            }
        }
    }
    m
}

/// Append a member with an arbitrary (possibly hostile) name to a tar.
pub fn tar_add<W: std::io::Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    // Write the name bytes directly: `set_path` refuses `..` and absolute paths, which is exactly
    // what the hostile-input tests need to produce.
    let raw = name.as_bytes();
    let gnu = h.as_gnu_mut().expect("gnu header");
    gnu.name[..raw.len()].copy_from_slice(raw);
    h.set_cksum();
    b.append(&h, data).expect("append");
}

/// Write the sample as one or more WebDataset tars (img2dataset layout), `per_tar` pairs each.
pub fn write_webdataset(dir: &Path, pairs: &[SamplePair], per_tar: usize) -> Vec<PathBuf> {
    fs::create_dir_all(dir).expect("mkdir");
    let mut tars = Vec::new();
    for (t, chunk) in pairs.chunks(per_tar).enumerate() {
        let path = dir.join(format!("{t:05}.tar"));
        let mut b = tar::Builder::new(fs::File::create(&path).expect("create tar"));
        for (i, p) in chunk.iter().enumerate() {
            let key = format!("{t:05}{i:04}");
            tar_add(
                &mut b,
                &format!("{key}.{}", p.ext()),
                &fs::read(&p.image).expect("image"),
            );
            tar_add(&mut b, &format!("{key}.txt"), p.caption.as_bytes());
            tar_add(
                &mut b,
                &format!("{key}.json"),
                p.meta.to_string().as_bytes(),
            );
        }
        b.finish().expect("finish tar");
        tars.push(path);
    }
    tars
}

/// The tiny CLIP-shaped ONNX models of the embed fixtures (`vision`, `text`, `bad_signature`).
pub fn tiny_model(kind: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../embed/tests/fixtures/tiny_clip")
        .join(kind)
}

/// ONNX Runtime, installed by the project's set-up script on first use.
pub fn runtime() {
    if cm3_embed::onnx::find_onnxruntime().is_err() {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/setup-onnxruntime.sh");
        assert!(
            std::process::Command::new("bash")
                .arg(&script)
                .status()
                .expect("setup")
                .success()
        );
    }
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> String {
    path.to_str().expect("utf-8").to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Copy the sample pairs with index in `range` into `dir` (image, caption, metadata).
pub fn sample_part(dir: &Path, range: std::ops::Range<usize>) {
    fs::create_dir_all(dir).expect("mkdir");
    for pair in &sample_pairs()[range] {
        for ext in [pair.ext().as_str(), "txt", "json"] {
            let src = pair.image.with_extension(ext);
            fs::copy(&src, dir.join(src.file_name().expect("name"))).expect("copy");
        }
    }
}

/// Every row of a dataset's `tokens/` shards, by pair id.
pub fn read_tokens(dataset: &Path) -> Vec<cm3_core::tokens::TokenRow> {
    let mut rows = Vec::new();
    for f in fs::read_dir(dataset.join("tokens")).expect("tokens/") {
        let f = f.expect("entry").path();
        if f.extension().is_some_and(|e| e == "parquet") {
            rows.extend(cm3_core::tokens::read_shard(&f).expect("tokens shard"));
        }
    }
    rows.sort_by_key(|r| r.id);
    rows
}

/// A `cm3 build` settings file whose every output is bit-reproducible: 32-pixel images through the
/// repository's taming VQ fixture (no image tokenizer trained on the spot), 128-token sequences,
/// a quarter of the pairs for validation. `ingest` holds extra `[ingest]` lines.
pub fn reproducible_build_config(dir: &Path, ingest: &str) -> PathBuf {
    let vq = vq_ckpt();
    let cfg = dir.join("build.toml");
    fs::write(
        &cfg,
        format!(
            "[ingest]\n{ingest}image_size = 32\n[tokenize]\nimage_tokenizer = {:?}\n[pack]\n\
             seq_len = 128\nval_fraction = 0.25\n",
            p(&vq)
        ),
    )
    .expect("write build config");
    cfg
}

/// `cm3 build <ds> --preset demo --config <cfg> --input <input>`.
pub fn build_demo(ds: &Path, input: &Path, cfg: &Path) {
    let args = demo_build_args(ds, cfg, input);
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The tiny GumbelVQ (32 × 32 images → 4 × 4 codes of 64) made by taming-transformers.
pub fn vq_ckpt() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/vqgan/tiny_gumbel_f8.ckpt")
}

/// A prepared dataset of the first `pairs` sample pairs: 32-pixel images through the taming VQ
/// fixture (16 codes each), 128-token sequences; built by `cm3 build`.
pub fn prepared(dir: &Path, pairs: usize) -> PathBuf {
    let input = dir.join("input");
    sample_part(&input, 0..pairs);
    let cfg = reproducible_build_config(dir, "");
    let ds = dir.join("ds");
    build_demo(&ds, &input, &cfg);
    ds
}

/// The arguments of `cm3 build <ds> --preset demo --config <cfg> --input <input> --no-progress`.
pub fn demo_build_args(ds: &Path, cfg: &Path, input: &Path) -> Vec<String> {
    [
        "build",
        &p(ds),
        "--preset",
        "demo",
        "--config",
        &p(cfg),
        "--input",
        &p(input),
        "--no-progress",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Run `cm3 args` and kill it (SIGKILL) once `at` has passed, unless it ended before; returns
/// whether the kill interrupted it.
pub fn run_killed_after(args: &[String], at: std::time::Duration) -> bool {
    let mut child = cm3()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn cm3");
    let start = std::time::Instant::now();
    while start.elapsed() < at && child.try_wait().expect("wait").is_none() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let running = child.try_wait().expect("wait").is_none();
    if running {
        child.kill().expect("kill");
    }
    child.wait().expect("wait");
    running
}
