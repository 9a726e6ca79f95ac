//! `cm3 tokenize <dataset>`: every ingested pair as text ids and image ids in one vocabulary.
//!
//! Reads `pairs/` (captions and the normalised images), writes `tokens/<shard>.parquet`
//! shard-aligned, and saves the vocabulary layout as `tokenizer/vocab.json`. The manifest records
//! both tokenizers by checksum: a later run with another tokenizer is refused (tokens made by two
//! tokenizers must never be mixed) until `--rebuild`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::{BinaryArray, StringArray, UInt64Array};
use burn::tensor::Device;
use cm3_core::fsio::write_atomic;
use cm3_core::schema::{RejectRecord, column, count_reasons, read_columns};
use cm3_core::vocab::VocabLayout;
use cm3_core::{DatasetDir, ShardRecord, WorkerSpec};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TokenizeError};
use crate::image::{ImageTokenizer, decode_rgb};
use crate::output::{TokenRow, write_shard};
use crate::text::TextTokenizer;
use crate::train_text::TEXT_TOKENIZER;

pub const STAGE: &str = "tokenize";
/// The vocabulary layout, relative to the dataset directory.
pub use cm3_core::vocab::VOCAB;

/// Which tokenizers to use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizeConfig {
    /// The text tokenizer.json [default: the dataset's, from `cm3 tokenizer train-text`].
    pub text_tokenizer: Option<PathBuf>,
    /// The image tokenizer (a taming release folder, or a .ckpt with config.yaml beside it)
    /// [default: the dataset's, from `cm3 tokenizer train-image`].
    pub image_tokenizer: Option<PathBuf>,
    /// Its taming config.yaml, when it is not beside the checkpoint.
    pub image_tokenizer_config: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TokenizeOptions {
    pub dataset: PathBuf,
    pub config: TokenizeConfig,
    /// Images per VQ encoder batch.
    pub batch_size: usize,
    pub worker: WorkerSpec,
    pub rebuild: bool,
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TokenizeReport {
    pub shards_written: usize,
    pub shards_skipped: usize,
    pub rows: u64,
    pub rejects: u64,
    pub text_tokens: u64,
    pub image_tokens: u64,
    pub vocab_size: u32,
    pub seconds: f64,
    pub text_seconds: f64,
    pub image_seconds: f64,
}

/// The stage's record in the manifest: both tokenizers and the layout they make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRecord {
    text_tokenizer_sha256: String,
    image_tokenizer_sha256: String,
    vocab_size: u32,
    image_offset: u32,
    image_tokens: u32,
}

pub fn run(opts: &TokenizeOptions, device: &Device) -> Result<TokenizeReport> {
    let ds = DatasetDir::open(&opts.dataset)?;
    let _lock = ds.lock(STAGE, &opts.worker)?;
    if opts.rebuild && opts.worker.is_split() {
        return Err(TokenizeError::Invalid(
            "--rebuild cannot be combined with --num-workers".into(),
        ));
    }
    let mut manifest = ds.load_stage_state(STAGE, &opts.worker)?;
    let ingest = manifest
        .stages
        .get("ingest")
        .cloned()
        .ok_or_else(|| TokenizeError::Dataset {
            path: ds.root().to_path_buf(),
            reason: "no ingested pairs yet: run `cm3 ingest` first".into(),
        })?;

    let text_path = opts
        .config
        .text_tokenizer
        .clone()
        .unwrap_or_else(|| ds.path(TEXT_TOKENIZER));
    if !text_path.is_file() {
        return Err(TokenizeError::Dataset {
            path: text_path,
            reason: "no text tokenizer: run `cm3 tokenizer train-text` first, or pass \
                     --text-tokenizer"
                .into(),
        });
    }
    let text = TextTokenizer::load(&text_path)?;
    let own = ds.path(crate::train_image::IMAGE_TOKENIZER);
    let image_path = match opts.config.image_tokenizer.clone() {
        Some(p) => p,
        None if own.join("config.json").is_file() => own,
        None => {
            return Err(TokenizeError::Invalid(
                "no image tokenizer: train one with `cm3 tokenizer train-image`, or pass \
                 --image-tokenizer (a taming GumbelVQ release folder or .ckpt)"
                    .into(),
            ));
        }
    };
    let image = ImageTokenizer::open(
        &image_path,
        opts.config.image_tokenizer_config.as_deref(),
        device,
    )?;
    let side = image.resolution();
    let ingest_size = ingest.config.get("image_size").and_then(|v| v.as_u64());
    if ingest_size != Some(u64::from(side)) {
        return Err(TokenizeError::Dataset {
            path: ds.root().to_path_buf(),
            reason: format!(
                "the pairs were ingested at {} pixels, the image tokenizer takes {side} × {side}; \
                 re-ingest with --image-size {side}",
                ingest_size.map_or("an unknown size".to_string(), |s| s.to_string())
            ),
        });
    }
    let text_rel = relative(ds.root(), &text_path);
    // Recorded relative to the dataset, or absolute: `cm3 generate` finds it from any directory.
    let mut image_ref = image.reference();
    image_ref.path = relative(ds.root(), Path::new(&image_ref.path));
    let layout = VocabLayout::new(
        text.vocab(&text_rel),
        image.vq().config().n_embed as u32,
        image.grid(),
        image_ref,
    )?;
    let record = TokenizeRecord {
        text_tokenizer_sha256: text.sha256().to_string(),
        image_tokenizer_sha256: layout.image.tokenizer.sha256.clone(),
        vocab_size: layout.size,
        image_offset: layout.image.offset,
        image_tokens: layout.image_tokens(),
    };
    let record_json =
        serde_json::to_value(&record).map_err(|e| TokenizeError::Invalid(e.to_string()))?;

    // Everything is loaded and checked; only now may --rebuild discard the earlier output.
    if opts.rebuild {
        ds.discard_stage(&mut manifest, STAGE, "tokens", &opts.worker.tag())?;
    }
    // Records made from ingest shards that have changed since are refused (rebuild tokenize).
    manifest.check_fresh(STAGE)?;
    ds.stage_record(&mut manifest, STAGE, &record_json)?;
    save_layout(&ds, &layout)?;

    let todo = manifest.pending_shards(&ingest, STAGE, &opts.worker);
    let mut report = TokenizeReport {
        shards_skipped: ingest.shards.len() - todo.len(),
        vocab_size: layout.size,
        ..TokenizeReport::default()
    };
    let bar = cm3_core::progress::pairs_bar(
        opts.progress,
        "tokenize",
        todo.iter().map(|t| t.2.rows).sum(),
    );
    let started = Instant::now();
    for (slot, name, rec) in &todo {
        let pairs = ds.path(&rec.file);
        let shard = tokenize_shard(&pairs, &text, &image, &layout, opts.batch_size.max(1), &bar)?;
        // The name comes from the manifest: it must stay one file inside the output folder.
        cm3_core::names::plain_name(name, "ingest shard name")?;
        let rel = format!("tokens/{name}.parquet");
        let written = write_shard(&ds.path(&rel), &shard.rows, &opts.worker.tag())?;
        let rejects_file = if shard.rejects.is_empty() {
            None
        } else {
            let rel = format!("tokens/rejects/{name}.jsonl");
            let mut lines = Vec::new();
            for r in &shard.rejects {
                let mut line =
                    serde_json::to_vec(r).map_err(|e| TokenizeError::Invalid(e.to_string()))?;
                line.push(b'\n');
                lines.extend(line);
            }
            write_atomic(&ds.path(&rel), &lines, &opts.worker.tag())?;
            Some(rel)
        };
        let mut counters = BTreeMap::new();
        counters.insert("text_tokens".to_string(), shard.text_tokens);
        counters.insert("image_tokens".to_string(), shard.image_tokens);
        let stage = manifest
            .stages
            .get_mut(STAGE)
            .ok_or_else(|| TokenizeError::Invalid("internal: the stage record vanished".into()))?;
        stage.insert_shard(
            name.clone(),
            ShardRecord {
                file: rel,
                input: name.clone(),
                chunk: *slot as u32,
                rows: shard.rows.len() as u64,
                bytes: written.bytes,
                sha256: written.sha256,
                rejects: shard.rejects.len() as u64,
                rejects_file,
                rejects_by_reason: count_reasons(&shard.rejects),
                counters,
                upstream: BTreeMap::from([("ingest".to_string(), rec.sha256.clone())]),
            },
        );
        ds.save_stage(&mut manifest, STAGE, &opts.worker)?;
        report.shards_written += 1;
        report.rows += shard.rows.len() as u64;
        report.rejects += shard.rejects.len() as u64;
        report.text_tokens += shard.text_tokens;
        report.image_tokens += shard.image_tokens;
        report.text_seconds += shard.text_seconds;
        report.image_seconds += shard.image_seconds;
    }
    ds.finish_stage(&mut manifest, &opts.worker)?;
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The layout beside the tokens; an existing, different one means the tokens were made by other
/// tokenizers (the manifest check catches that first; this guards a hand-edited directory).
fn save_layout(ds: &DatasetDir, layout: &VocabLayout) -> Result<()> {
    let path = ds.path(VOCAB);
    if path.is_file() {
        let old = VocabLayout::load(&path)?;
        if &old == layout {
            return Ok(());
        }
        // The same tokenizers (same checksums) at other paths make the same tokens: the layout
        // is rewritten to where they are now.
        let mut moved = old.clone();
        moved
            .text
            .tokenizer
            .path
            .clone_from(&layout.text.tokenizer.path);
        moved
            .image
            .tokenizer
            .path
            .clone_from(&layout.image.tokenizer.path);
        if &moved != layout && ds.path("tokens").exists() {
            return Err(TokenizeError::Dataset {
                path,
                reason: "tokens were made with another vocabulary layout; pass --rebuild to \
                         remake them with these tokenizers"
                    .into(),
            });
        }
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| TokenizeError::Io {
            op: "creating",
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    layout.save(&path)?;
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (root, path) = (canon(root), canon(path));
    path.strip_prefix(&root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

struct ShardOut {
    rows: Vec<TokenRow>,
    rejects: Vec<RejectRecord>,
    text_tokens: u64,
    image_tokens: u64,
    text_seconds: f64,
    image_seconds: f64,
}

fn tokenize_shard(
    pairs: &Path,
    text: &TextTokenizer,
    image: &ImageTokenizer,
    layout: &VocabLayout,
    batch_size: usize,
    bar: &ProgressBar,
) -> Result<ShardOut> {
    let mut out = ShardOut {
        rows: Vec::new(),
        rejects: Vec::new(),
        text_tokens: 0,
        image_tokens: 0,
        text_seconds: 0.0,
        image_seconds: 0.0,
    };
    let side = image.resolution();
    for b in read_columns(pairs, &["id", "source", "key", "caption", "image"])? {
        let bad = || TokenizeError::Dataset {
            path: pairs.to_path_buf(),
            reason: "columns id/source/key/caption/image have unexpected types".into(),
        };
        let ids = column::<UInt64Array>(&b, "id").ok_or_else(bad)?;
        let sources = column::<StringArray>(&b, "source").ok_or_else(bad)?;
        let keys = column::<StringArray>(&b, "key").ok_or_else(bad)?;
        let captions = column::<StringArray>(&b, "caption").ok_or_else(bad)?;
        let images = column::<BinaryArray>(&b, "image").ok_or_else(bad)?;
        let n = b.num_rows();
        let mut start = 0;
        while start < n {
            let end = (start + batch_size).min(n);
            let t0 = Instant::now();
            let batch_captions: Vec<&str> = (start..end).map(|i| captions.value(i)).collect();
            let text_ids = text.encode_batch(&batch_captions)?;
            out.text_seconds += t0.elapsed().as_secs_f64();
            // Decode the stored images; one that cannot be used is rejected, not fatal.
            let mut rgb = Vec::new();
            let mut kept = Vec::new();
            for i in start..end {
                match decode_rgb(images.value(i), side) {
                    Ok(px) => {
                        rgb.push(px);
                        kept.push(i);
                    }
                    Err(detail) => out.rejects.push(RejectRecord {
                        source: sources.value(i).to_string(),
                        key: keys.value(i).to_string(),
                        reason: "unusable-image".into(),
                        detail: format!("pair {:016x}: {detail}", ids.value(i)),
                        duplicate_of: None,
                    }),
                }
            }
            let t1 = Instant::now();
            let views: Vec<&[u8]> = rgb.iter().map(Vec::as_slice).collect();
            let codes = if views.is_empty() {
                Vec::new()
            } else {
                image.encode_rgb(&views)?
            };
            out.image_seconds += t1.elapsed().as_secs_f64();
            for (i, codes) in kept.into_iter().zip(codes) {
                let image_ids = codes
                    .into_iter()
                    .map(|c| layout.image_token(c))
                    .collect::<std::result::Result<Vec<u32>, _>>()?;
                let text_ids = text_ids[i - start].clone();
                out.text_tokens += text_ids.len() as u64;
                out.image_tokens += image_ids.len() as u64;
                out.rows.push(TokenRow {
                    id: ids.value(i),
                    text: text_ids,
                    image: image_ids,
                });
            }
            bar.inc((end - start) as u64);
            start = end;
        }
    }
    Ok(out)
}
