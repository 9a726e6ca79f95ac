//! `cm3 augment <dataset>`: the retrieved documents of every pair, shard by shard.
//!
//! For each embedded shard not yet done: the pairs' image vectors and their captions after query
//! dropout (embedded here with the dataset's CLIP text encoder, in a thread beside the searches)
//! query the memory bank; [`crate::retrieve`] applies the paper's rules; the result is written to
//! `neighbors/<shard>.parquet` and recorded in the manifest. Resumable and worker-splittable like
//! every stage: a re-run does only the shards not recorded.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::{StringArray, UInt64Array};
use indicatif::ProgressBar;
use serde::Serialize;

use cm3_core::fsio::sha256_file;
use cm3_core::schema::{column, read_columns};
use cm3_core::{DatasetDir, ShardRecord, StageRecord, WorkerSpec};
use cm3_embed::ClipTokenizer;
use cm3_embed::onnx::{TextEncoder, model_path, normalize_rows};
use cm3_index::Hit;
use cm3_index::vectors::{check_unit_rows, read_ids, read_vectors};

use crate::bank::{Bank, Exclusion, image_key};
use crate::config::{AugmentConfig, AugmentRecord};
use crate::dropout::{DroppedQuery, query_dropout};
use crate::error::{AugmentError, Result};
use crate::output::{NeighbourRow, write_shard};
use crate::retrieve::{QueryPair, RetrieveStats, choose_all, first_fetch, maybe_search};

pub const STAGE: &str = "augment";
/// The manifest input under which `cm3 embed` records its text encoder.
pub const TEXT_MODEL_INPUT: &str = "text_model";

/// How a run goes about it.
#[derive(Debug, Clone)]
pub struct AugmentOptions {
    pub dataset: PathBuf,
    pub config: AugmentConfig,
    /// Another dataset to retrieve from (its index over `config.vector_set`); `None`: the dataset
    /// itself.
    pub bank: Option<PathBuf>,
    /// The CLIP text encoder (`model.onnx` or its folder); `None`: the one `cm3 embed` used.
    pub text_model: Option<PathBuf>,
    /// The leakage guard: split names of the bank, or files of pair ids, removed from the bank.
    pub exclude: Vec<String>,
    /// Queries per text-encoder batch.
    pub batch_size: usize,
    /// Hold a bank in parts in memory whole (faster when it fits) instead of reading it part
    /// by part (memory for one part). A bank in one index is always held whole.
    pub resident_bank: bool,
    /// ONNX Runtime intra-op threads (0 = its default).
    pub session_threads: usize,
    pub worker: WorkerSpec,
    pub rebuild: bool,
    pub progress: bool,
}

/// What a run did, and where the time went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AugmentReport {
    pub shards_written: usize,
    pub shards_skipped: usize,
    pub rows: u64,
    pub neighbours: u64,
    pub sampled: u64,
    /// Pairs that got fewer documents than asked (by image or by text).
    pub pairs_short: u64,
    pub short_by_image: u64,
    pub short_by_text: u64,
    pub query_tokens: u64,
    pub dropped_tokens: u64,
    /// Pairs searched again with a longer candidate list.
    pub widened: u64,
    pub bank_size: usize,
    /// Wall time of the shards' work (bank and model loading excluded).
    pub seconds: f64,
    /// Time inside the text encoder (in its own thread, overlapping the searches).
    pub text_encode_seconds: f64,
    pub search_seconds: f64,
    pub select_seconds: f64,
    /// Reading embeddings and captions, tokenising, and writing the shards.
    pub io_seconds: f64,
}

/// The text encoder `cm3 embed` recorded for `dataset`.
pub fn recorded_text_model(dataset: &Path) -> Result<PathBuf> {
    let ds = DatasetDir::open(dataset)?;
    let m = ds.load_manifest()?;
    let rec = m
        .stages
        .get(cm3_embed::stage::STAGE)
        .and_then(|s| s.inputs.get(TEXT_MODEL_INPUT))
        .ok_or_else(|| {
            AugmentError::dataset(
                dataset,
                "the manifest does not say which CLIP text encoder `cm3 embed` used (embedded by \
                 an older cm3?); pass --text-model",
            )
        })?;
    Ok(PathBuf::from(&rec.path))
}

/// `--exclude` values: an existing file is a list of pair ids (`.npy` integers, or text with one
/// 16-hex-digit id per line, `#` comments allowed); anything else is a split name of the bank.
pub fn parse_exclusions(values: &[String]) -> Result<Vec<Exclusion>> {
    values
        .iter()
        .map(|v| {
            let path = Path::new(v);
            if !path.is_file() {
                if v.contains('/') || v.ends_with(".npy") || v.ends_with(".txt") {
                    return Err(AugmentError::Invalid(format!(
                        "--exclude {v}: no such file (a split name has no `/` or extension)"
                    )));
                }
                return Ok(Exclusion::Split(v.clone()));
            }
            let sha256 = sha256_file(path)?.sha256;
            let ids = if v.ends_with(".npy") {
                read_ids(path)?
            } else {
                read_id_lines(path)?
            };
            Ok(Exclusion::Ids {
                path: path.to_path_buf(),
                sha256,
                ids,
            })
        })
        .collect()
}

/// Where the ids of an `--exclude` file (recorded as `ids:<sha256>`) are kept in the dataset, so
/// that `cm3 pack` leaves the same pairs out of training without the user's file.
pub fn excluded_ids_file(sha256: &str) -> String {
    format!(
        "neighbors/excluded-{}.ids",
        sha256.get(..16).unwrap_or(sha256)
    )
}

/// Keep each ids exclusion's ids in the dataset (one 16-hex-digit id per line).
fn save_excluded_ids(ds: &DatasetDir, exclusions: &[Exclusion]) -> Result<()> {
    for e in exclusions {
        let Exclusion::Ids { sha256, ids, path } = e else {
            continue;
        };
        let file = ds.path(&excluded_ids_file(sha256));
        if file.is_file() {
            continue;
        }
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir).map_err(|e| AugmentError::io("creating", dir, e))?;
        }
        let mut text = format!("# pair ids excluded by --exclude {}\n", path.display());
        for id in ids {
            text.push_str(&format!("{id:016x}\n"));
        }
        cm3_core::fsio::write_atomic(&file, text.as_bytes(), STAGE)?;
    }
    Ok(())
}

/// The ids of an ids file as [`excluded_ids_file`] keeps them (or as a user writes them).
pub fn read_id_lines(path: &Path) -> Result<Vec<u64>> {
    let text = fs::read_to_string(path).map_err(|e| AugmentError::io("reading", path, e))?;
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let id = u64::from_str_radix(t, 16)
            .ok()
            .filter(|_| t.len() == 16)
            .ok_or_else(|| {
                AugmentError::dataset(
                    path,
                    format!(
                        "line {}: `{t}` is not a pair id (16 hex digits, as `cm3` prints them)",
                        n + 1
                    ),
                )
            })?;
        ids.push(id);
    }
    Ok(ids)
}

fn canonical(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(|e| AugmentError::io("resolving", path, e))
}

/// Retrieve the documents of every pair of `opts.dataset` not done yet.
pub fn run(opts: &AugmentOptions) -> Result<AugmentReport> {
    let cfg = &opts.config;
    cfg.validate()?;
    let ds = DatasetDir::open(&opts.dataset)?;
    let _lock = ds.lock(STAGE, &opts.worker)?;
    if opts.rebuild && opts.worker.is_split() {
        return Err(AugmentError::Invalid(
            "--rebuild cannot be combined with --num-workers".into(),
        ));
    }
    let mut manifest = ds.load_stage_state(STAGE, &opts.worker)?;
    let embed = match manifest.stages.get(cm3_embed::stage::STAGE) {
        Some(r) if !r.shards.is_empty() => r.clone(),
        _ => {
            return Err(AugmentError::dataset(
                ds.root(),
                format!(
                    "no embeddings yet: run `cm3 embed {}` first",
                    ds.root().display()
                ),
            ));
        }
    };
    let ingest = manifest.stages.get("ingest").cloned().ok_or_else(|| {
        AugmentError::dataset(ds.root(), "no ingest stage: run `cm3 ingest` first")
    })?;

    // The text encoder must be the one that made the bank's text side comparable.
    let recorded_sha = embed
        .config
        .get("text_model_sha256")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let text_model = match &opts.text_model {
        Some(p) => model_path(p),
        None => model_path(&recorded_text_model(ds.root())?),
    };
    let text_model_sha256 = sha256_file(&text_model)
        .map_err(|e| {
            AugmentError::dataset(
                &text_model,
                format!("cannot read the CLIP text encoder ({e}); pass --text-model"),
            )
        })?
        .sha256;
    if text_model_sha256 != recorded_sha {
        if opts.text_model.is_none() {
            return Err(AugmentError::dataset(
                &text_model,
                "this is not the text encoder the dataset was embedded with (its checksum \
                 changed); pass --text-model",
            ));
        }
        tracing::warn!(
            model = %text_model.display(),
            "--text-model is not the encoder `cm3 embed` used for this dataset: text queries and \
             the bank's vectors may not be comparable"
        );
    }

    let root = canonical(ds.root())?;
    let bank_root = match &opts.bank {
        Some(b) => canonical(b)?,
        None => root.clone(),
    };
    let bank_is_self = bank_root == root;
    let exclusions = parse_exclusions(&opts.exclude)?;
    let load_started = Instant::now();
    let bank = Bank::open(&bank_root, cfg.vector_set, exclusions, opts.resident_bank)?;
    tracing::info!(
        bank = %bank_root.display(),
        vectors = bank.len(),
        kind = %bank.meta.spec,
        seconds = load_started.elapsed().as_secs_f64(),
        "memory bank loaded"
    );
    if bank.is_empty() {
        return Err(AugmentError::dataset(
            &bank_root,
            "the memory bank is empty",
        ));
    }
    if bank_is_self {
        let missing = embed
            .shards
            .keys()
            .filter(|k| !bank.meta.shards.contains_key(*k))
            .count();
        if missing > 0 {
            tracing::warn!(
                shards = missing,
                "embedded shards are not in the index yet, so no pair can retrieve them; run \
                 `cm3 index build` first to include them"
            );
        }
    }
    let mut encoder = if cfg.by_text > 0 {
        Some(TextEncoder::load_with(
            &text_model,
            opts.session_threads,
            false,
        )?)
    } else {
        None
    };
    // Everything is checked; only now may --rebuild discard the earlier output.
    if opts.rebuild {
        ds.discard_stage(&mut manifest, STAGE, "neighbors", &opts.worker.tag())?;
    }
    let record = AugmentRecord {
        settings: cfg.clone(),
        bank: if bank_is_self {
            "self".into()
        } else {
            bank_root.display().to_string()
        },
        bank_index: bank.meta.spec.to_string(),
        text_model_sha256: text_model_sha256.clone(),
        exclude: bank.exclusions().iter().map(Exclusion::label).collect(),
    };
    let record_json =
        serde_json::to_value(&record).map_err(|e| AugmentError::Invalid(e.to_string()))?;
    // Neither this stage's records nor the embeddings may describe changed upstream shards.
    manifest.check_fresh(STAGE)?;
    manifest.check_fresh(cm3_embed::stage::STAGE)?;
    ds.stage_record(&mut manifest, STAGE, &record_json)?;
    if bank_is_self {
        save_excluded_ids(&ds, bank.exclusions())?;
    }

    let todo = manifest.pending_shards(&embed, STAGE, &opts.worker);
    let mut report = AugmentReport {
        shards_skipped: embed.shards.len() - todo.len(),
        bank_size: bank.len(),
        ..AugmentReport::default()
    };
    let bar = cm3_core::progress::pairs_bar(
        opts.progress,
        "augment",
        todo.iter().map(|t| t.2.rows).sum(),
    );
    let started = Instant::now();
    for (slot, name, rec) in &todo {
        let pairs_file = ingest
            .shards
            .get(name)
            .map(|r| ds.path(&r.file))
            .ok_or_else(|| {
                AugmentError::dataset(
                    ds.root(),
                    format!("embedded shard {name} has no ingest record"),
                )
            })?;
        let ctx = ShardCtx {
            name,
            embeddings: ds.path(&rec.file),
            pairs_file,
            bank: &bank,
            cfg,
            batch_size: opts.batch_size.max(1),
        };
        let shard = augment_shard(&ctx, encoder.as_mut(), &bar)?;
        // The name comes from the manifest: it must stay one file inside the output folder.
        cm3_core::names::plain_name(name, "embed shard name")?;
        let rel = format!("neighbors/{name}.parquet");
        let w_started = Instant::now();
        let written = write_shard(&ds.path(&rel), &shard.rows, &opts.worker.tag())?;
        report.io_seconds += w_started.elapsed().as_secs_f64();
        let c = shard.counters();
        let stage = manifest.stages.get_mut(STAGE).ok_or_else(|| {
            AugmentError::Invalid("internal: the augment stage record vanished".into())
        })?;
        stage.insert_shard(
            name.clone(),
            ShardRecord {
                file: rel,
                input: name.clone(),
                chunk: *slot as u32,
                rows: shard.rows.len() as u64,
                bytes: written.bytes,
                sha256: written.sha256,
                rejects: 0,
                rejects_file: None,
                rejects_by_reason: BTreeMap::new(),
                counters: c.clone(),
                upstream: BTreeMap::from([(
                    cm3_embed::stage::STAGE.to_string(),
                    rec.sha256.clone(),
                )]),
            },
        );
        ds.save_stage(&mut manifest, STAGE, &opts.worker)?;
        report.shards_written += 1;
        report.rows += shard.rows.len() as u64;
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        report.neighbours += get("neighbours");
        report.sampled += get("sampled");
        report.pairs_short += get("pairs_short");
        report.short_by_image += get("short_by_image");
        report.short_by_text += get("short_by_text");
        report.query_tokens += get("query_tokens");
        report.dropped_tokens += get("dropped_tokens");
        report.widened += shard.stats.widened;
        report.text_encode_seconds += shard.text_encode_seconds;
        report.search_seconds += shard.stats.search_seconds;
        report.select_seconds += shard.stats.select_seconds;
        report.io_seconds += shard.io_seconds;
    }
    ds.finish_stage(&mut manifest, &opts.worker)?;
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

struct ShardCtx<'a> {
    name: &'a str,
    embeddings: PathBuf,
    pairs_file: PathBuf,
    bank: &'a Bank,
    cfg: &'a AugmentConfig,
    batch_size: usize,
}

struct ShardOut {
    rows: Vec<NeighbourRow>,
    stats: RetrieveStats,
    text_encode_seconds: f64,
    io_seconds: f64,
}

impl ShardOut {
    /// The shard's counters in the manifest.
    fn counters(&self) -> BTreeMap<String, u64> {
        let mut c = BTreeMap::new();
        let mut add = |k: &str, v: u64| *c.entry(k.to_string()).or_insert(0) += v;
        for r in &self.rows {
            add("neighbours", r.neighbours.len() as u64);
            add(
                "sampled",
                r.neighbours.iter().filter(|n| n.sampled).count() as u64,
            );
            add(
                "pairs_short",
                u64::from(r.short_by_image + r.short_by_text > 0),
            );
            add("short_by_image", u64::from(r.short_by_image));
            add("short_by_text", u64::from(r.short_by_text));
            add("query_tokens", u64::from(r.query_tokens));
            add("dropped_tokens", u64::from(r.dropped_tokens));
        }
        add("searches_widened", self.stats.widened);
        c
    }
}

/// A shard's queries: pair ids, image vectors (row-major), the pairs and their captions.
struct ShardQueries {
    ids: Vec<u64>,
    image: Vec<f32>,
    pairs: Vec<QueryPair>,
    captions: Vec<String>,
}

/// Read a shard's pairs: ids and image vectors from its embeddings, captions and image keys from
/// its `pairs/` shard.
fn read_queries(ctx: &ShardCtx<'_>) -> Result<ShardQueries> {
    let ids = read_ids(&ctx.embeddings.join("ids.npy"))?;
    let ipath = ctx.embeddings.join("image.npy");
    let mut image = read_vectors(&ipath)?;
    if image.rows() != ids.len() {
        return Err(AugmentError::dataset(
            &ipath,
            format!("{} vectors for {} ids", image.rows(), ids.len()),
        ));
    }
    if !ids.is_empty() && image.dim != ctx.bank.dim() {
        return Err(AugmentError::dataset(
            &ipath,
            format!(
                "vectors of dimension {}, the memory bank {} has {} (embedded with another model?)",
                image.dim,
                ctx.bank.root.display(),
                ctx.bank.dim()
            ),
        ));
    }
    check_unit_rows(
        &ipath.display().to_string(),
        &mut image.data,
        image.dim,
        false,
    )?;
    let mut info: HashMap<u64, (String, u64)> = HashMap::with_capacity(ids.len());
    for b in read_columns(&ctx.pairs_file, &["id", "caption", "sha256"])? {
        let (Some(id), Some(cap), Some(sha)) = (
            column::<UInt64Array>(&b, "id"),
            column::<StringArray>(&b, "caption"),
            column::<StringArray>(&b, "sha256"),
        ) else {
            return Err(AugmentError::dataset(
                &ctx.pairs_file,
                "columns id/caption/sha256 have unexpected types",
            ));
        };
        for i in 0..b.num_rows() {
            info.insert(
                id.value(i),
                (cap.value(i).to_string(), image_key(sha.value(i))),
            );
        }
    }
    let mut pairs = Vec::with_capacity(ids.len());
    let mut captions = Vec::with_capacity(ids.len());
    for &id in &ids {
        let Some((caption, key)) = info.remove(&id) else {
            return Err(AugmentError::dataset(
                &ctx.pairs_file,
                format!(
                    "pair {id:016x} of shard {} has embeddings but no row in its pairs shard",
                    ctx.name
                ),
            ));
        };
        pairs.push(QueryPair { id, image_key: key });
        captions.push(caption);
    }
    Ok(ShardQueries {
        ids,
        image: image.data,
        pairs,
        captions,
    })
}

fn augment_shard(
    ctx: &ShardCtx<'_>,
    encoder: Option<&mut TextEncoder>,
    bar: &ProgressBar,
) -> Result<ShardOut> {
    let cfg = ctx.cfg;
    let bank = ctx.bank;
    let io_started = Instant::now();
    let ShardQueries {
        ids,
        image: image_queries,
        pairs,
        captions,
    } = read_queries(ctx)?;
    let tok = ClipTokenizer::openai();
    let dropped: Vec<DroppedQuery> = captions
        .iter()
        .zip(&ids)
        .map(|(c, &id)| query_dropout(&tok.encode(c), cfg.query_dropout, cfg.seed, id))
        .collect();
    let io_seconds = io_started.elapsed().as_secs_f64();
    let excluded = bank.excluded_ids();
    let dim = bank.dim();
    let k = first_fetch(cfg);
    let n = ids.len();
    let mut stats = RetrieveStats::default();
    let mut text_encode_seconds = 0.0;
    let mut text_queries: Vec<f32> = vec![0.0; if cfg.by_text > 0 { n * dim } else { 0 }];
    let mut text_hits: Vec<Vec<Hit>> = vec![Vec::new(); n];
    let mut text_done = 0usize;
    let mut image_hits = Vec::new();
    // Captions are encoded shortest first, so that each batch holds rows of similar length (an
    // encoder with a dynamic sequence axis runs each batch at its longest row, not at 77).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| dropped[i].row.iter().rposition(|&t| t != 0));
    // The text encoder runs in its own thread, a few batches ahead, while this one searches: the
    // image searches need no text, and each text batch is searched as soon as it is encoded.
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = crossbeam_channel::bounded::<Result<(&[usize], Vec<f32>, f64)>>(4);
        if let Some(enc) = encoder.filter(|_| cfg.by_text > 0) {
            let (dropped, order) = (&dropped, &order);
            let batch = ctx.batch_size;
            s.spawn(move || {
                for chunk in order.chunks(batch) {
                    let t = Instant::now();
                    let rows: Vec<u32> = chunk.iter().flat_map(|&i| dropped[i].row).collect();
                    let r = enc.embed(&rows, chunk.len()).map(|mut v| {
                        normalize_rows(&mut v, dim);
                        (chunk, v, t.elapsed().as_secs_f64())
                    });
                    let failed = r.is_err();
                    if tx.send(r.map_err(AugmentError::from)).is_err() || failed {
                        return;
                    }
                }
            });
        } else {
            drop(tx);
        }
        // One search for the shard's image queries (and, for a bank read part by part, one for
        // its text queries once all are encoded): such a bank reads each part once per search.
        let t = Instant::now();
        image_hits = maybe_search(bank, cfg, &excluded, &image_queries, k, cfg.by_image, n)?;
        stats.search_seconds += t.elapsed().as_secs_f64();
        let resident = bank.is_resident();
        for r in rx {
            let (chunk, v, secs) = r?;
            text_encode_seconds += secs;
            // A bank in memory is searched batch by batch, while the encoder makes the next.
            if resident {
                let t = Instant::now();
                let hits = maybe_search(bank, cfg, &excluded, &v, k, cfg.by_text, chunk.len())?;
                stats.search_seconds += t.elapsed().as_secs_f64();
                for (&i, h) in chunk.iter().zip(hits) {
                    text_hits[i] = h;
                }
            }
            for (&i, q) in chunk.iter().zip(v.chunks_exact(dim)) {
                text_queries[i * dim..(i + 1) * dim].copy_from_slice(q);
            }
            text_done += chunk.len();
        }
        Ok(())
    })?;
    if !bank.is_resident() && cfg.by_text > 0 && text_done == n {
        let t = Instant::now();
        text_hits = maybe_search(bank, cfg, &excluded, &text_queries, k, cfg.by_text, n)?;
        stats.search_seconds += t.elapsed().as_secs_f64();
    }
    if cfg.by_text > 0 && text_done != n {
        return Err(AugmentError::Invalid(format!(
            "shard {}: the text encoder returned {text_done} of {n} queries",
            ctx.name
        )));
    }
    if text_hits.len() != n || image_hits.len() != n {
        return Err(AugmentError::Invalid(format!(
            "shard {}: {} image and {} text candidate lists for {n} pairs",
            ctx.name,
            image_hits.len(),
            text_hits.len()
        )));
    }
    let (choices, st) = choose_all(
        bank,
        cfg,
        &excluded,
        &pairs,
        &image_queries,
        &text_queries,
        image_hits,
        text_hits,
    )?;
    stats.add(&st);
    let mut rows = Vec::with_capacity(n);
    for ((pair, choice), d) in pairs.iter().zip(choices).zip(&dropped) {
        // The leakage guard, on exactly what is about to be written.
        for nb in &choice.neighbours {
            if let Some(why) = bank.exclusion_of(nb.id) {
                return Err(AugmentError::Leak {
                    shard: ctx.name.to_string(),
                    pair: pair.id,
                    neighbour: nb.id,
                    why,
                });
            }
        }
        rows.push(NeighbourRow {
            id: pair.id,
            neighbours: choice.neighbours,
            short_by_image: choice.short_by_image as u32,
            short_by_text: choice.short_by_text as u32,
            query_tokens: d.tokens,
            dropped_tokens: d.dropped,
        });
    }
    bar.inc(n as u64);
    Ok(ShardOut {
        rows,
        stats,
        text_encode_seconds,
        io_seconds,
    })
}

/// The stage record of a dataset's augment run, if any.
pub fn stage_record(dataset: &Path) -> Result<Option<(StageRecord, AugmentRecord)>> {
    let ds = DatasetDir::open(dataset)?;
    let m = ds.load_manifest()?;
    let Some(rec) = m.stages.get(STAGE) else {
        return Ok(None);
    };
    let parsed: AugmentRecord = serde_json::from_value(rec.config.clone()).map_err(|e| {
        AugmentError::dataset(
            ds.manifest_path(),
            format!("the augment stage's configuration cannot be read: {e}"),
        )
    })?;
    Ok(Some((rec.clone(), parsed)))
}

/// The neighbours row of pair `id`, if the augment stage has done its shard.
pub fn find_row(dataset: &Path, id: u64) -> Result<Option<NeighbourRow>> {
    let ds = DatasetDir::open(dataset)?;
    let m = ds.load_manifest()?;
    let Some(rec) = m.stages.get(STAGE) else {
        return Ok(None);
    };
    for shard in rec.shards.values() {
        let rows = crate::output::read_shard(&ds.path(&shard.file))?;
        if let Some(r) = rows.into_iter().find(|r| r.id == id) {
            return Ok(Some(r));
        }
    }
    Ok(None)
}
