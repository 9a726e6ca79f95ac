//! `cm3 embed <dataset>`: CLIP image, text and document vectors for every pair of `pairs/`.
//!
//! Output, per `pairs/` shard, a folder `embeddings/<shard>/` with `ids.npy` (u64) and `image.npy`,
//! `text.npy`, `doc.npy` (float16 [n,512], L2-normalised; `doc = normalise((image + text) / 2)`, the
//! paper's document vector), readable by numpy without cm3. A folder is written under a temporary
//! name and renamed into place, then recorded in the manifest.
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow_array::{BinaryArray, StringArray, UInt64Array};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use cm3_core::fsio::{AtomicFile, sha256_file, sync_dir};
use cm3_core::schema::{RejectRecord, column, count_reasons, read_columns};
use cm3_core::{DatasetDir, InputRecord, ShardRecord, WorkerSpec};

use crate::clip_tokenizer::{CONTEXT_LENGTH, ClipTokenizer};
use crate::error::{EmbedError, Result};
use crate::npy;
use crate::onnx::{EMBED_DIM, TextEncoder, VisionEncoder, model_path, normalize_rows};
use crate::preprocess::{CLIP_SIZE, preprocess_bytes};

pub const STAGE: &str = "embed";

/// What determines the vectors: the models (by checksum) and the preprocessing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    pub image_model_sha256: String,
    pub text_model_sha256: String,
    pub image_size: u32,
    pub context_length: usize,
    pub dtype: String,
    /// The JPEG decoder of the preprocessing (`libjpeg-turbo` matches PIL bit for bit).
    pub jpeg_decoder: String,
}

/// The run settings a `--config` file (TOML or JSON) may give for `cm3 embed <dataset>`; flags
/// override them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedFileConfig {
    /// A folder in the Hugging Face layout, a `model.onnx`, or `hf:<repo>`.
    pub image_model: String,
    pub text_model: String,
    pub batch_size: usize,
    pub session_threads: usize,
    pub preprocess_threads: usize,
}

impl Default for EmbedFileConfig {
    fn default() -> Self {
        Self {
            image_model: "hf:Qdrant/clip-ViT-B-32-vision".into(),
            text_model: "hf:Qdrant/clip-ViT-B-32-text".into(),
            batch_size: 32,
            session_threads: 0,
            preprocess_threads: 1,
        }
    }
}

/// How this run goes about it.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub dataset: PathBuf,
    /// `model.onnx` or a folder holding one (Hugging Face layout).
    pub image_model: PathBuf,
    pub text_model: PathBuf,
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads (0 = its default).
    pub session_threads: usize,
    /// Threads decoding and resizing images ahead of inference. On a CPU one is plenty (the model
    /// is ~30 times slower) and more would take cores from inference; on a GPU give more.
    pub preprocess_threads: usize,
    pub worker: WorkerSpec,
    pub rebuild: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EmbedReport {
    pub shards_written: usize,
    pub shards_skipped: usize,
    pub rows: u64,
    pub rejects: u64,
    pub captions_truncated: u64,
    /// Wall time of the embedding work, model loading excluded.
    pub seconds: f64,
}

fn jpeg_decoder() -> &'static str {
    if cfg!(feature = "turbojpeg") {
        "libjpeg-turbo"
    } else {
        "zune-jpeg"
    }
}

/// A pair to embed.
struct Pair {
    id: u64,
    caption: String,
    image: Vec<u8>,
}

fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let mut out = Vec::new();
    for b in read_columns(path, &["id", "caption", "image"])? {
        let (Some(ids), Some(caps), Some(imgs)) = (
            column::<UInt64Array>(&b, "id"),
            column::<StringArray>(&b, "caption"),
            column::<BinaryArray>(&b, "image"),
        ) else {
            return Err(EmbedError::Shape(format!(
                "{}: id/caption/image columns have unexpected types",
                path.display()
            )));
        };
        for i in 0..b.num_rows() {
            out.push(Pair {
                id: ids.value(i),
                caption: caps.value(i).to_string(),
                image: imgs.value(i).to_vec(),
            });
        }
    }
    Ok(out)
}

pub fn run(opts: &EmbedOptions) -> Result<EmbedReport> {
    let dataset = DatasetDir::open(&opts.dataset)?;
    let _lock = dataset.lock(STAGE, &opts.worker)?;
    let (image_path, text_path) = (model_path(&opts.image_model), model_path(&opts.text_model));
    let config = EmbedConfig {
        image_model_sha256: sha256_file(&image_path)
            .map_err(|e| EmbedError::Model {
                path: image_path.clone(),
                reason: e.to_string(),
            })?
            .sha256,
        text_model_sha256: sha256_file(&text_path)
            .map_err(|e| EmbedError::Model {
                path: text_path.clone(),
                reason: e.to_string(),
            })?
            .sha256,
        image_size: CLIP_SIZE,
        context_length: CONTEXT_LENGTH,
        dtype: "float16".into(),
        jpeg_decoder: jpeg_decoder().into(),
    };
    let mut vision = VisionEncoder::load(&image_path, opts.session_threads)?;
    let mut text = TextEncoder::load(&text_path, opts.session_threads)?;
    if opts.rebuild {
        if opts.worker.is_split() {
            return Err(EmbedError::Runtime(
                "--rebuild cannot be combined with --num-workers".into(),
            ));
        }
        // Only what the stage recorded is removed; the record goes first (see `discard_stage`).
        let mut m = dataset.load_stage_state(STAGE, &opts.worker)?;
        if let Some(rec) = m.stages.remove(STAGE) {
            m.save(&dataset.manifest_path(), &opts.worker.tag())?;
            dataset.remove_recorded(&rec)?;
        }
        for d in ["embeddings", "rejects/embed"] {
            cm3_core::dataset::remove_empty_dirs(&dataset.path(d))?;
        }
    }
    let mut manifest = dataset.load_stage_state(STAGE, &opts.worker)?;
    let Some(ingest) = manifest.stages.get("ingest").cloned() else {
        return Err(EmbedError::Runtime(format!(
            "{} has no ingest stage yet: run `cm3 ingest` first",
            dataset.root().display()
        )));
    };
    let config_json =
        serde_json::to_value(&config).map_err(|e| EmbedError::Runtime(e.to_string()))?;
    // Records made from ingest shards that have changed since are refused (rebuild embed).
    manifest.check_fresh(STAGE)?;
    let rec = dataset.stage_record(&mut manifest, STAGE, &config_json)?;
    let inputs_before = rec.inputs.clone();
    // Which model files made the vectors, so that later stages (`cm3 augment` embeds dropped-out
    // captions) can load the same encoder; the checksums in the config identify them.
    for (input, path, sha) in [
        ("image_model", &image_path, &config.image_model_sha256),
        ("text_model", &text_path, &config.text_model_sha256),
    ] {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        rec.inputs.insert(
            input.to_string(),
            InputRecord {
                path: path.display().to_string(),
                format: "onnx".into(),
                fingerprint: sha.clone(),
                records: None,
            },
        );
    }
    if rec.inputs != inputs_before && !rec.shards.is_empty() {
        // Shards made by an earlier run: record the models now, not only with the next shard.
        dataset.save_stage(&mut manifest, STAGE, &opts.worker)?;
    }
    let tok = ClipTokenizer::openai();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.preprocess_threads.max(1))
        .thread_name(|i| format!("cm3-embed-pre-{i}"))
        .build()
        .map_err(|e| EmbedError::Runtime(format!("thread pool: {e}")))?;
    let start = std::time::Instant::now();
    let mut report = EmbedReport::default();
    for (slot, (name, shard)) in ingest.shards.iter().enumerate() {
        let done = manifest
            .stages
            .get(STAGE)
            .is_some_and(|s| s.shards.contains_key(name));
        if done || !opts.worker.owns(name) {
            report.shards_skipped += 1;
            continue;
        }
        let pairs = read_pairs(&dataset.path(&shard.file))?;
        tracing::info!(shard = %name, pairs = pairs.len(), "embedding");
        let (record, rows, rejects, truncated) = embed_shard(
            &dataset,
            name,
            slot,
            &pairs,
            opts,
            tok,
            &pool,
            &mut vision,
            &mut text,
        )?;
        let mut record = record;
        // Made from this ingest shard: a rebuilt ingest makes it stale (`check_fresh`).
        record
            .upstream
            .insert("ingest".to_string(), shard.sha256.clone());
        if let Some(stage) = manifest.stages.get_mut(STAGE) {
            stage.insert_shard(name.clone(), record);
        }
        dataset.save_stage(&mut manifest, STAGE, &opts.worker)?;
        report.shards_written += 1;
        report.rows += rows;
        report.rejects += rejects;
        report.captions_truncated += truncated;
    }
    dataset.finish_stage(&mut manifest, &opts.worker)?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Preprocessed batch: ids, pixels of the decodable images, and rejects.
struct Batch {
    ids: Vec<u64>,
    pixels: Vec<f32>,
    tokens: Vec<u32>,
    truncated: u64,
    rejects: Vec<RejectRecord>,
}

#[allow(clippy::too_many_arguments)]
fn embed_shard(
    dataset: &DatasetDir,
    name: &str,
    slot: usize,
    pairs: &[Pair],
    opts: &EmbedOptions,
    tok: &ClipTokenizer,
    pool: &rayon::ThreadPool,
    vision: &mut VisionEncoder,
    text: &mut TextEncoder,
) -> Result<(ShardRecord, u64, u64, u64)> {
    let batch_size = opts.batch_size.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(2);
    let mut ids = Vec::with_capacity(pairs.len());
    let mut image = Vec::with_capacity(pairs.len() * EMBED_DIM);
    let mut textv = Vec::with_capacity(pairs.len() * EMBED_DIM);
    let mut rejects = Vec::new();
    let mut truncated = 0u64;
    // Preprocessing (decode, resize, normalise: rayon) runs ahead of inference, two batches deep,
    // so the ONNX session does not wait for pixels.
    std::thread::scope(|s| -> Result<()> {
        s.spawn(move || {
            for chunk in pairs.chunks(batch_size) {
                let pre: Vec<std::result::Result<Vec<f32>, String>> = pool.install(|| {
                    chunk
                        .par_iter()
                        .map(|p| preprocess_bytes(&p.image, CLIP_SIZE).map_err(|e| e.to_string()))
                        .collect()
                });
                let mut b = Batch {
                    ids: Vec::new(),
                    pixels: Vec::new(),
                    tokens: Vec::new(),
                    truncated: 0,
                    rejects: Vec::new(),
                };
                for (p, r) in chunk.iter().zip(pre) {
                    match r {
                        Ok(px) => {
                            let (row, cut) = tok.tokenize_77(&p.caption);
                            b.ids.push(p.id);
                            b.pixels.extend_from_slice(&px);
                            b.tokens.extend_from_slice(&row);
                            b.truncated += u64::from(cut);
                        }
                        Err(e) => b.rejects.push(RejectRecord {
                            source: name.to_string(),
                            key: p.id.to_string(),
                            reason: "corrupt-image".into(),
                            detail: e,
                            duplicate_of: None,
                        }),
                    }
                }
                if tx.send(b).is_err() {
                    return;
                }
            }
        });
        for b in rx {
            let n = b.ids.len();
            truncated += b.truncated;
            rejects.extend(b.rejects);
            if n == 0 {
                continue;
            }
            image.extend(vision.embed(b.pixels, n)?);
            textv.extend(text.embed(&b.tokens, n)?);
            ids.extend(b.ids);
        }
        Ok(())
    })?;
    normalize_rows(&mut image, EMBED_DIM);
    normalize_rows(&mut textv, EMBED_DIM);
    let mut doc: Vec<f32> = image
        .iter()
        .zip(&textv)
        .map(|(a, b)| (a + b) / 2.0)
        .collect();
    normalize_rows(&mut doc, EMBED_DIM);
    let n = ids.len();
    // The name comes from the manifest: it must stay one folder inside `embeddings/`.
    let name = cm3_core::names::plain_name(name, "ingest shard name")?;
    let rel = format!("embeddings/{name}");
    let files: [(&str, Vec<u8>); 4] = [
        ("ids.npy", npy::encode_u64(&ids)),
        ("image.npy", npy::encode_f16(&[n, EMBED_DIM], &image)),
        ("text.npy", npy::encode_f16(&[n, EMBED_DIM], &textv)),
        ("doc.npy", npy::encode_f16(&[n, EMBED_DIM], &doc)),
    ];
    let (bytes, sha256) = write_dir_atomic(&dataset.path(&rel), &files, &opts.worker.tag())?;
    let rejects_file = if rejects.is_empty() {
        None
    } else {
        let rel = format!("rejects/embed/{name}.jsonl");
        let mut f = AtomicFile::create(dataset.path(&rel), &opts.worker.tag())?;
        for r in &rejects {
            let line = serde_json::to_string(r).map_err(|e| EmbedError::Runtime(e.to_string()))?;
            writeln!(f.writer(), "{line}").map_err(|e| EmbedError::Io {
                op: "writing",
                path: dataset.path(&rel),
                source: e,
            })?;
        }
        f.commit()?;
        Some(rel)
    };
    let record = ShardRecord {
        file: rel,
        input: name.to_string(),
        chunk: slot as u32,
        rows: n as u64,
        bytes,
        sha256,
        rejects: rejects.len() as u64,
        rejects_file,
        rejects_by_reason: count_reasons(&rejects),
        counters: if truncated > 0 {
            BTreeMap::from([("captions_truncated".to_string(), truncated)])
        } else {
            BTreeMap::new()
        },
        upstream: BTreeMap::new(),
    };
    Ok((record, n as u64, rejects.len() as u64, truncated))
}

/// Write files into `dir` atomically: a temporary sibling folder, each file fsynced, renamed into
/// place. Returns the total size and a SHA-256 over the files in order.
fn write_dir_atomic(dir: &Path, files: &[(&str, Vec<u8>)], tag: &str) -> Result<(u64, String)> {
    let io = |op: &'static str, path: &Path, e: std::io::Error| EmbedError::Io {
        op,
        path: path.to_path_buf(),
        source: e,
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
    let tmp = parent.join(format!(".{name}.tmp-{tag}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io("removing", &tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| io("creating", &tmp, e))?;
    let mut h = Sha256::new();
    let mut bytes = 0u64;
    for (file, data) in files {
        let p = tmp.join(file);
        let mut f = File::create(&p).map_err(|e| io("creating", &p, e))?;
        f.write_all(data).map_err(|e| io("writing", &p, e))?;
        f.sync_all().map_err(|e| io("fsync", &p, e))?;
        h.update(data);
        bytes += data.len() as u64;
    }
    sync_dir(&tmp)?;
    // A folder left by a crash before it was recorded is not finished: replace it.
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| io("removing", dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| io("renaming into place", dir, e))?;
    sync_dir(parent)?;
    Ok((bytes, hex::encode(h.finalize())))
}
