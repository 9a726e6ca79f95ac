//! The ingest engine: read sources in order, normalise records in parallel, deduplicate in input
//! order (so the result does not depend on thread timing), and commit each shard atomically.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use arrow_array::{StringArray, UInt64Array};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use cm3_core::fsio::{AtomicFile, remove_stale_tmp};
use cm3_core::schema::{
    PairRow, RejectRecord, column, count_reasons, read_columns, write_pairs_shard,
};
use cm3_core::{DatasetDir, InputRecord, Manifest, ShardRecord, WorkerSpec, pair_id};

use crate::config::{IngestConfig, IngestOptions};
use crate::error::{IngestError, Result};
use crate::normalize::{RejectReason, Rejection, normalize_caption, normalize_image};
use crate::source::{self, ImageData, RawRecord, SourceSpec};

/// The manifest's name for this stage.
pub const STAGE: &str = "ingest";

/// Longest time a finished shard may wait to be recorded in the manifest.
const MANIFEST_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Records queued per decoding thread: enough to keep every thread busy, little memory.
const IN_FLIGHT_PER_THREAD: usize = 8;

/// What one `cm3 ingest` run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    pub dataset: PathBuf,
    pub sources: usize,
    pub shards_written: usize,
    /// Shards already finished by an earlier run (or owned by another worker).
    pub shards_skipped: usize,
    pub rows: u64,
    pub rejects: u64,
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// Rows in the whole stage after this run.
    pub total_rows: u64,
    /// Shards left unwritten because a read failed and may pass next time.
    pub shards_unfinished: usize,
}

/// Exact-duplicate and id-uniqueness index over every row the stage has kept.
#[derive(Default)]
struct DedupeIndex {
    content: HashMap<[u8; 32], u64>,
    ids: HashSet<u64>,
}

fn content_key(image_sha256: &str, caption: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(image_sha256.as_bytes());
    h.update([0u8]);
    h.update(caption.as_bytes());
    h.finalize().into()
}

impl DedupeIndex {
    fn load(dataset: &DatasetDir, manifest: &Manifest) -> Result<Self> {
        let mut idx = Self::default();
        let Some(rec) = manifest.stages.get(STAGE) else {
            return Ok(idx);
        };
        for shard in rec.shards.values() {
            let path = dataset.path(&shard.file);
            for b in read_columns(&path, &["id", "sha256", "caption"])? {
                let (Some(ids), Some(sha), Some(cap)) = (
                    column::<UInt64Array>(&b, "id"),
                    column::<StringArray>(&b, "sha256"),
                    column::<StringArray>(&b, "caption"),
                ) else {
                    return Err(IngestError::input(
                        path,
                        "shard columns id/sha256/caption have unexpected types",
                    ));
                };
                for i in 0..b.num_rows() {
                    idx.ids.insert(ids.value(i));
                    idx.content
                        .entry(content_key(sha.value(i), cap.value(i)))
                        .or_insert(ids.value(i));
                }
            }
        }
        Ok(idx)
    }

    /// `None` if the row is new (and records it), else why it is not.
    fn check(&mut self, row: &PairRow) -> Option<(RejectReason, String, Option<u64>)> {
        if self.ids.contains(&row.id) {
            return Some((
                RejectReason::DuplicateKey,
                format!(
                    "key `{}` of this source was already ingested (id {})",
                    row.key, row.id
                ),
                None,
            ));
        }
        let key = content_key(&row.sha256, &row.caption);
        if let Some(&kept) = self.content.get(&key) {
            return Some((
                RejectReason::Duplicate,
                format!("duplicate-of {kept}"),
                Some(kept),
            ));
        }
        self.ids.insert(row.id);
        self.content.insert(key, row.id);
        None
    }
}

enum Outcome {
    Row(Box<PairRow>),
    Reject(RejectRecord),
    /// A read that may succeed next time: the shard is left unwritten (see
    /// [`Rejection::retry`]).
    Retry(String),
}

fn reject(src: &SourceSpec, key: &str, r: Rejection) -> Outcome {
    Outcome::Reject(RejectRecord {
        source: src.id.clone(),
        key: key.to_string(),
        reason: r.reason.code().to_string(),
        detail: r.detail,
        duplicate_of: None,
    })
}

/// Decode and validate one record into rows and rejects (runs on the thread pool).
fn process_record(src: &SourceSpec, rec: &RawRecord, cfg: &IngestConfig) -> Vec<Outcome> {
    let keys = || -> Vec<&str> {
        if rec.captions.is_empty() {
            vec![rec.key.as_str()]
        } else {
            rec.captions.iter().map(|c| c.key.as_str()).collect()
        }
    };
    let all = |r: Rejection| {
        keys()
            .into_iter()
            .map(|k| reject(src, k, r.clone()))
            .collect::<Vec<_>>()
    };
    if let Some(p) = &rec.problem {
        if p.retry {
            return vec![Outcome::Retry(p.detail.clone())];
        }
        return all(p.clone());
    }
    if cfg.require_license && rec.license.is_none() {
        return all(Rejection::new(
            RejectReason::NoLicense,
            "no license in the source metadata (--require-license)",
        ));
    }
    let mut out = Vec::new();
    let mut captions = Vec::new();
    for c in &rec.captions {
        match normalize_caption(&c.text, cfg) {
            Ok(n) => {
                // Alternative captions that fail validation are dropped from the list, not the pair.
                let alt = c
                    .alt
                    .iter()
                    .filter_map(|a| normalize_caption(a, cfg).ok().map(|n| n.text))
                    .collect();
                captions.push((c.key.as_str(), n, alt));
            }
            Err(r) => out.push(reject(src, &c.key, r)),
        }
    }
    if captions.is_empty() {
        return out;
    }
    let loaded;
    let data: &[u8] = match &rec.image {
        ImageData::Bytes(b) => b,
        // A regular file of bounded size: a FIFO or a device named as an image is refused.
        ImageData::Path(p) => {
            if let Some(r) = crate::source::link_refused(p, cfg) {
                out.extend(captions.iter().map(|(k, _, _)| reject(src, k, r.clone())));
                return out;
            }
            match cm3_core::fsio::read_input(p, crate::source::webdataset::MAX_IMAGE_MEMBER_BYTES) {
                Ok(b) => {
                    loaded = b;
                    &loaded
                }
                Err(e) => {
                    let r = Rejection::read_failed(p, &e);
                    if r.retry {
                        return vec![Outcome::Retry(r.detail)];
                    }
                    out.extend(captions.iter().map(|(k, _, _)| reject(src, k, r.clone())));
                    return out;
                }
            }
        }
        ImageData::Skipped => return out,
    };
    match normalize_image(data, cfg) {
        Err(r) => out.extend(captions.iter().map(|(k, _, _)| reject(src, k, r.clone()))),
        Ok(img) => {
            for (key, cap, alt) in captions {
                out.push(Outcome::Row(Box::new(PairRow {
                    id: pair_id(&src.id, key),
                    source: src.id.clone(),
                    key: key.to_string(),
                    caption: cap.text,
                    alt_captions: alt,
                    caption_repaired: cap.repaired,
                    image: img.bytes.clone(),
                    image_format: img.format.to_string(),
                    width: img.width,
                    height: img.height,
                    orig_format: img.orig_format.to_string(),
                    orig_width: img.orig_width,
                    orig_height: img.orig_height,
                    sha256: img.sha256.clone(),
                    license: rec.license.clone(),
                    provenance: rec.provenance.clone(),
                    split: rec
                        .split
                        .clone()
                        .unwrap_or_else(|| cfg.default_split.clone()),
                    metadata: rec.metadata.clone(),
                })));
            }
        }
    }
    out
}

/// Rows and rejects of the shard being built.
#[derive(Default)]
struct ChunkAcc {
    rows: Vec<PairRow>,
    rejects: Vec<RejectRecord>,
    /// Reads that failed and may pass next time: the shard is not written.
    retry: Vec<String>,
}

struct Engine<'a> {
    opts: &'a IngestOptions,
    cfg: &'a IngestConfig,
    dataset: DatasetDir,
    manifest: Manifest,
    dedupe: DedupeIndex,
    pool: Arc<rayon::ThreadPool>,
    bar: ProgressBar,
    report: IngestReport,
    last_save: Instant,
    /// What left a shard unwritten (see [`ChunkAcc::retry`]).
    unfinished: Vec<String>,
}

pub fn run(opts: &IngestOptions, cfg: &IngestConfig) -> Result<IngestReport> {
    cfg.validate().map_err(IngestError::Config)?;
    let worker = opts.worker;
    let dataset = DatasetDir::create(&opts.out)?;
    let _lock = dataset.lock(STAGE, &worker)?;
    let sources = source::resolve(&opts.inputs, opts.format, opts.image_root.as_deref())?;
    let mut inputs = Vec::with_capacity(sources.len());
    for s in &sources {
        s.check(cfg)?;
        let input = InputRecord {
            path: s.path.to_string_lossy().into_owned(),
            format: s.format.name().to_string(),
            fingerprint: s.fingerprint()?,
            records: None,
        };
        inputs.push((s.id.clone(), input));
    }
    // Every input is readable: only now may --rebuild discard the earlier output.
    if opts.rebuild {
        rebuild(&dataset, &worker)?;
    }
    let mut manifest = dataset.load_stage_state(STAGE, &worker)?;
    let mut cfg = cfg.clone();
    let recorded = manifest
        .stages
        .get(STAGE)
        .filter(|r| !r.shards.is_empty())
        .map(|r| &r.config);
    // The codec first: the subsampling's old rule depends on it.
    cfg.resolve_codec(recorded);
    cfg.resolve_subsampling(recorded);
    let cfg = &cfg;
    let config_json = serde_json::to_value(cfg)
        .map_err(|e| IngestError::Config(format!("serialising the configuration: {e}")))?;
    let rec = dataset.stage_record(&mut manifest, STAGE, &config_json)?;
    // Refuse changed inputs before doing any work.
    for (id, input) in inputs {
        rec.check_input(STAGE, &id, input)?;
    }
    dataset.save_stage(&mut manifest, STAGE, &worker)?;
    let tag = worker.tag();
    remove_stale_tmp(&dataset.path("pairs"), &tag)?;
    remove_stale_tmp(&dataset.path("rejects"), &tag)?;
    let dedupe = DedupeIndex::load(&dataset, &manifest)?;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        opts.threads
    };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cm3-ingest-{i}"))
            .build()
            .map_err(|e| IngestError::ThreadPool(e.to_string()))?,
    );
    let bar = if opts.progress {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} ingest {elapsed_precise} {human_pos} records ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut engine = Engine {
        opts,
        cfg,
        report: IngestReport {
            dataset: dataset.root().to_path_buf(),
            sources: sources.len(),
            ..IngestReport::default()
        },
        dataset,
        manifest,
        dedupe,
        pool,
        bar,
        last_save: Instant::now(),
        unfinished: Vec::new(),
    };
    tracing::info!(
        dataset = %engine.dataset.root().display(),
        sources = sources.len(),
        threads,
        worker = %tag,
        "ingest started"
    );
    for src in &sources {
        engine.source(src)?;
    }
    engine
        .dataset
        .finish_stage(&mut engine.manifest, &engine.opts.worker)?;
    engine.bar.finish_and_clear();
    if let Some(first) = engine.unfinished.first() {
        return Err(IngestError::Unfinished {
            count: engine.unfinished.len(),
            first: first.clone(),
        });
    }
    let mut report = engine.report;
    report.total_rows = engine
        .manifest
        .stages
        .get(STAGE)
        .map_or(0, |s| s.totals.rows);
    if report.total_rows == 0 && !worker.is_split() {
        return Err(IngestError::NothingUsable {
            rejects: report.rejects,
            dataset: report.dataset.clone(),
        });
    }
    Ok(report)
}

/// Discard the stage's outputs and record, so it can be redone (e.g. with another configuration).
fn rebuild(dataset: &DatasetDir, worker: &WorkerSpec) -> Result<()> {
    if worker.is_split() {
        return Err(IngestError::Config(
            "--rebuild cannot be combined with --num-workers: run it once without workers (it only discards), then start the workers"
                .into(),
        ));
    }
    let mut m = dataset.load_stage_state(STAGE, worker)?;
    let downstream: Vec<&String> = m.stages.keys().filter(|k| k.as_str() != STAGE).collect();
    if !downstream.is_empty() {
        tracing::warn!(
            "rebuilding ingest: later stages {downstream:?} are now stale and must be rebuilt too"
        );
    }
    // Only the files the stage recorded are removed (the record is dropped first, so a crash
    // leaves unclaimed files, never claims to missing ones); others in `pairs/` stay.
    let Some(rec) = m.stages.remove(STAGE) else {
        return Ok(());
    };
    m.save(&dataset.manifest_path(), &worker.tag())?;
    dataset.remove_recorded(&rec)?;
    for d in ["pairs", "rejects"] {
        remove_stale_tmp(&dataset.path(d), &worker.tag())?;
        cm3_core::dataset::remove_empty_dirs(&dataset.path(d))?;
    }
    Ok(())
}

impl Engine<'_> {
    fn source(&mut self, src: &SourceSpec) -> Result<()> {
        let shard_rows = self.cfg.shard_rows as u64;
        let worker = self.opts.worker;
        let stage = self.manifest.stages.get(STAGE);
        let done: HashSet<u64> = stage
            .map(|s| {
                s.shards
                    .values()
                    .filter(|r| r.input == src.id)
                    .map(|r| u64::from(r.chunk))
                    .collect()
            })
            .unwrap_or_default();
        let known_records = stage
            .and_then(|s| s.inputs.get(&src.id))
            .and_then(|i| i.records);
        // Owned by the shard's name (see `WorkerSpec::owns`), as `finish_chunk` names it.
        let prefix = src.shard_prefix();
        let todo =
            |chunk: u64| worker.owns(&format!("{prefix}-{chunk:05}")) && !done.contains(&chunk);
        if let Some(n) = known_records {
            let chunks = n.div_ceil(shard_rows);
            if !(0..chunks).any(todo) {
                self.report.shards_skipped += (0..chunks).count();
                tracing::debug!(input = %src.path.display(), "all shards finished; not read again");
                return Ok(());
            }
        }
        tracing::info!(input = %src.path.display(), format = src.format.name(), "reading");
        let want = |i: u64| todo(i / shard_rows);
        // Three stages run at once: a reader, the decoding pool, and this thread, which puts results
        // back in input order and writes shards. Bounded channels keep memory bounded.
        let in_flight = IN_FLIGHT_PER_THREAD * self.pool.current_num_threads();
        let (work_tx, work_rx) = sync_channel::<(u64, Option<RawRecord>)>(in_flight);
        let (done_tx, done_rx) = sync_channel::<(u64, Option<Vec<Outcome>>)>(in_flight);
        let cancel = AtomicBool::new(false);
        let (cfg, pool) = (self.cfg, Arc::clone(&self.pool));
        let (consumed, read) = std::thread::scope(|s| {
            let (cancel, want) = (&cancel, &want);
            let reader = s.spawn(move || {
                let mut i = 0u64;
                let mut stopped = false;
                let clean = src.read(cfg, want, &mut |r| {
                    let idx = i;
                    cm3_core::fault::point("ingest.reader", idx);
                    i += 1;
                    // Records of shards this run does not make pass as placeholders, so the
                    // reordering below can count every record.
                    let item = want(idx).then_some(r);
                    stopped = cancel.load(Ordering::Relaxed) || work_tx.send((idx, item)).is_err();
                    !stopped
                });
                (i, !stopped && clean)
            });
            let decoders = s.spawn(move || {
                pool.install(|| {
                    work_rx
                        .into_iter()
                        .par_bridge()
                        .for_each_with(done_tx, |tx, (idx, rec)| {
                            let out = rec.map(|r| {
                                if cancel.load(Ordering::Relaxed) {
                                    Vec::new()
                                } else {
                                    process_record(src, &r, cfg)
                                }
                            });
                            // A closed channel means the run is stopping; the reader sees `cancel`.
                            let _ = tx.send((idx, out));
                        });
                });
            });
            let consumed = self.consume(src, done_rx, shard_rows);
            if consumed.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            let read = reader.join();
            let decoded = decoders.join();
            (consumed, read.and_then(|r| decoded.map(|()| r)))
        });
        let last = match consumed {
            Ok(last) => last,
            Err(e) => {
                // Keep the record of the shards that were finished before the error.
                self.save()?;
                return Err(e);
            }
        };
        let Ok((total, complete)) = read else {
            // The shard in progress may lack records the reader never sent: it is not written
            // (the finished ones before it are complete and stay recorded).
            self.save()?;
            return Err(IngestError::input(
                &src.path,
                "a reader or decoder thread panicked; the shard in progress was not written",
            ));
        };
        // Every record was read and decoded: the last shard is complete.
        if let Some((chunk, acc)) = last {
            self.finish_chunk(src, chunk, acc)?;
        }
        let chunks = total.div_ceil(shard_rows);
        self.report.shards_skipped += (0..chunks).filter(|c| !todo(*c)).count();
        if total == 0 {
            tracing::warn!(input = %src.path.display(), "input holds no caption-image pairs");
        }
        if complete
            && let Some(rec) = self
                .manifest
                .stages
                .get_mut(STAGE)
                .and_then(|s| s.inputs.get_mut(&src.id))
        {
            rec.records = Some(total);
        }
        self.save()
    }

    fn save(&mut self) -> Result<()> {
        self.dataset
            .save_stage(&mut self.manifest, STAGE, &self.opts.worker)?;
        self.last_save = Instant::now();
        Ok(())
    }

    /// Take decoded records in any order, put them back in input order, and cut them into shards.
    /// A shard is written when the first record of the next one arrives (so all of its records
    /// were read); the last one is returned unwritten, for the caller to write once the reader
    /// and the decoders are known to have finished cleanly.
    fn consume(
        &mut self,
        src: &SourceSpec,
        results: Receiver<(u64, Option<Vec<Outcome>>)>,
        shard_rows: u64,
    ) -> Result<Option<(u64, ChunkAcc)>> {
        let mut pending: BTreeMap<u64, Option<Vec<Outcome>>> = BTreeMap::new();
        let mut next = 0u64;
        let mut current: Option<u64> = None;
        let mut acc = ChunkAcc::default();
        for (idx, out) in results {
            pending.insert(idx, out);
            while let Some(out) = pending.remove(&next) {
                let chunk = next / shard_rows;
                next += 1;
                let Some(outcomes) = out else { continue };
                if current != Some(chunk) {
                    if let Some(prev) = current {
                        self.finish_chunk(src, prev, std::mem::take(&mut acc))?;
                    }
                    current = Some(chunk);
                }
                self.accept(src, outcomes, &mut acc)?;
            }
        }
        Ok(current.map(|last| (last, acc)))
    }

    /// Deduplicate (in input order: which of two duplicates is kept never depends on timing),
    /// apply `--strict`, log rejects.
    fn accept(
        &mut self,
        src: &SourceSpec,
        outcomes: Vec<Outcome>,
        acc: &mut ChunkAcc,
    ) -> Result<()> {
        self.bar.inc(1);
        for outcome in outcomes {
            let rej = match outcome {
                Outcome::Retry(detail) => {
                    tracing::warn!(input = %src.path.display(), "could not be read (the shard is left for the next run): {detail}");
                    acc.retry.push(detail);
                    continue;
                }
                Outcome::Row(row) => match self.dedupe.check(&row) {
                    None => {
                        acc.rows.push(*row);
                        continue;
                    }
                    Some((reason, detail, duplicate_of)) => RejectRecord {
                        source: row.source,
                        key: row.key,
                        reason: reason.code().to_string(),
                        detail,
                        duplicate_of,
                    },
                },
                Outcome::Reject(r) => r,
            };
            if self.opts.strict {
                return Err(IngestError::Strict {
                    source_id: rej.source,
                    key: rej.key,
                    reason: rej.reason,
                    detail: rej.detail,
                });
            }
            if rej.reason == RejectReason::Duplicate.code() {
                tracing::info!(input = %src.path.display(), key = %rej.key, "rejected: {}: {}", rej.reason, rej.detail);
            } else {
                tracing::warn!(input = %src.path.display(), key = %rej.key, "rejected: {}: {}", rej.reason, rej.detail);
            }
            acc.rejects.push(rej);
        }
        if self.bar.position().is_multiple_of(64) {
            self.bar.set_message(format!(
                "{} rows, {} rejects",
                self.report.rows + acc.rows.len() as u64,
                self.report.rejects + acc.rejects.len() as u64
            ));
        }
        Ok(())
    }

    fn finish_chunk(&mut self, src: &SourceSpec, chunk: u64, acc: ChunkAcc) -> Result<()> {
        if let Some(first) = acc.retry.first() {
            // Nothing of the shard is written or recorded: the next run reads it again.
            self.report.shards_unfinished += 1;
            self.unfinished.push(format!(
                "{} shard {chunk}: {} read(s) failed, first {first}",
                src.path.display(),
                acc.retry.len()
            ));
            return Ok(());
        }
        let worker = self.opts.worker;
        let tag = worker.tag();
        let name = format!("{}-{chunk:05}", src.shard_prefix());
        let shard_rel = format!("pairs/{name}.parquet");
        let rejects_rel = format!("rejects/{name}.jsonl");
        // Rejects first, then the shard, then the manifest: whatever a crash interrupts is not yet
        // recorded, so the next run redoes the whole shard.
        let rejects_file = if acc.rejects.is_empty() {
            None
        } else {
            let mut f = AtomicFile::create(self.dataset.path(&rejects_rel), &tag)?;
            for r in &acc.rejects {
                let line =
                    serde_json::to_string(r).map_err(|e| IngestError::Config(e.to_string()))?;
                writeln!(f.writer(), "{line}")
                    .map_err(|e| IngestError::io("writing", self.dataset.path(&rejects_rel), e))?;
            }
            f.commit()?;
            Some(rejects_rel)
        };
        let written = write_pairs_shard(&self.dataset.path(&shard_rel), &acc.rows, &tag)?;
        let repaired = acc.rows.iter().filter(|r| r.caption_repaired).count() as u64;
        let by_reason = count_reasons(&acc.rejects);
        let record = ShardRecord {
            file: shard_rel,
            input: src.id.clone(),
            chunk: u32::try_from(chunk)
                .map_err(|_| IngestError::input(&src.path, "more than 2^32 shards"))?,
            rows: acc.rows.len() as u64,
            bytes: written.bytes,
            sha256: written.sha256,
            rejects: acc.rejects.len() as u64,
            rejects_file,
            rejects_by_reason: by_reason.clone(),
            counters: if repaired > 0 {
                [("captions_repaired".to_string(), repaired)].into()
            } else {
                BTreeMap::new()
            },
            upstream: BTreeMap::new(),
        };
        if let Some(stage) = self.manifest.stages.get_mut(STAGE) {
            stage.insert_shard(name.clone(), record);
        }
        // Rewriting the manifest costs its whole size; do it at most once a second (and at the end
        // of every input). Shards finished but not yet recorded when a crash hits are redone by the
        // next run, which writes the same bytes.
        if self.last_save.elapsed() >= MANIFEST_SAVE_INTERVAL {
            self.save()?;
        }
        self.report.shards_written += 1;
        self.report.rows += acc.rows.len() as u64;
        self.report.rejects += acc.rejects.len() as u64;
        for (k, v) in by_reason {
            *self.report.rejects_by_reason.entry(k).or_default() += v;
        }
        tracing::debug!(shard = %name, rows = acc.rows.len(), rejects = acc.rejects.len(), "shard committed");
        Ok(())
    }
}
