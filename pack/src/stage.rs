//! `cm3 pack <dataset>`: retrieval-augmented, causal-masked examples packed into fixed-length
//! sequences in `<dataset>/packed/{train,val}.{bin,idx}` (Megatron-LM indexed datasets), with
//! `meta.json` and the example boundaries.
//!
//! Incremental and append-only: shards already packed are skipped, and a run appends the new
//! examples' sequences after the old ones, which stay byte-identical. The manifest records how
//! many sequences and bytes each split held after each shard, so a crash is undone on the next
//! run by cutting the files back to the last recorded length.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::{StringArray, UInt64Array};
use cm3_augment::bank::image_key;
use cm3_core::rng::SplitMix64;
use cm3_core::schema::{column, read_columns};
use cm3_core::vocab::VocabLayout;
use cm3_core::{DatasetDir, ShardRecord, WorkerSpec};
use serde::{Deserialize, Serialize};

use crate::docs::DocStore;
use crate::error::{PackError, Result};
use crate::example::{Budget, Doc, build};
use crate::masking::{MaskPlan, Modality, Specials, causal_mask, growth};
use crate::megatron::IndexedWriter;
use crate::packing::{Packer, Policy};

pub const STAGE: &str = "pack";
const STREAM_SPLIT: u64 = 0x7370_6c69_7400_0003; // "split"
const STREAM_EXAMPLE: u64 = 0x6578_616d_706c_0004; // "exampl"

/// Longest sequence `cm3 pack` writes (tokens).
pub const MAX_SEQ_LEN: usize = 1 << 20;

/// How examples are made and packed. Defaults are the paper's (CM3's span count; the masking
/// rates and the packing policy are ours: see [`MaskPlan`] and the README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackConfig {
    /// Tokens per sequence (4,096 in CM3Leon).
    pub seq_len: usize,
    /// `stream` (the default): examples are concatenated and cut into sequences, as metaseq
    /// does, so that a query and all three of its retrieved documents (about 4,300 tokens at the
    /// paper's shapes, more than one 4,096-token sequence) are kept and almost nothing is
    /// padding. `whole`: an example never crosses a sequence boundary; retrieved documents are
    /// dropped to fit and the rest of a sequence is padding.
    pub policy: Policy,
    /// Mean of the Poisson number of masked spans per example (CM3: 1).
    pub spans_mean: f64,
    /// The span count is clamped to [spans_min, spans_max] (CM3: [1, 16]).
    pub spans_min: u32,
    pub spans_max: u32,
    /// Probability that a span is placed in a text segment (caption) rather than an image.
    pub text_rate: f64,
    /// Probability that a text span masks the whole caption.
    pub whole_caption_rate: f64,
    /// Probability that a document is written image first (image `<break>` text).
    pub image_first: f64,
    /// Share of images in the validation split (by a hash of the image's content, so that the
    /// captions of one image are never on both sides).
    pub val_fraction: f64,
    /// Put the sampled retrieved documents in front of each pair (false: plain pairs).
    pub retrieval: bool,
    pub seed: u64,
}

impl Default for PackConfig {
    fn default() -> Self {
        let m = MaskPlan::default();
        Self {
            seq_len: 4_096,
            policy: Policy::Stream,
            spans_mean: m.spans_mean,
            spans_min: m.spans_min,
            spans_max: m.spans_max,
            text_rate: m.text_rate,
            whole_caption_rate: m.whole_caption_rate,
            image_first: 0.0,
            val_fraction: 0.01,
            retrieval: true,
            seed: 0,
        }
    }
}

impl PackConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(PackError::Invalid(r));
        if self.seq_len < 16 {
            return bad(format!("seq_len {} is too short", self.seq_len));
        }
        // Sequences are buffers: bound their length before anything is allocated.
        if self.seq_len > MAX_SEQ_LEN {
            return bad(format!(
                "seq_len {} is over the {MAX_SEQ_LEN} tokens cm3 packs (the paper's is 4,096)",
                self.seq_len
            ));
        }
        if !(0.0..=1.0).contains(&self.image_first) || !(0.0..1.0).contains(&self.val_fraction) {
            return bad("image_first must be in [0, 1] and val_fraction in [0, 1)".into());
        }
        self.mask_plan().validate()
    }

    /// The masking settings.
    pub fn mask_plan(&self) -> MaskPlan {
        MaskPlan {
            spans_mean: self.spans_mean,
            spans_min: self.spans_min,
            spans_max: self.spans_max,
            text_rate: self.text_rate,
            whole_caption_rate: self.whole_caption_rate,
            ..MaskPlan::default()
        }
    }
}

/// The settings the dataset was last packed with (`None` if it never was), so that re-packing
/// (`cm3 pack --rebuild`, what `cm3 train` asks for after an objective change) keeps the
/// sequence length and the other choices instead of falling back to the paper's defaults.
/// Settings an older cm3 did not record take today's defaults.
pub fn recorded_config(dataset: &Path) -> Result<Option<PackConfig>> {
    let ds = DatasetDir::open(dataset)?;
    let manifest = ds.load_manifest()?;
    let Some(settings) = manifest
        .stages
        .get(STAGE)
        .and_then(|rec| rec.config.get("settings"))
    else {
        return Ok(None);
    };
    serde_json::from_value(settings.clone())
        .map(Some)
        .map_err(|e| {
            PackError::Invalid(format!(
                "{}: the recorded pack settings are not readable ({e}); give --config",
                ds.manifest_path().display()
            ))
        })
}

#[derive(Debug, Clone)]
pub struct PackOptions {
    pub dataset: PathBuf,
    pub config: PackConfig,
    pub rebuild: bool,
}

/// Per split: what the files held after the last shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    pub sequences: u64,
    pub examples: u64,
    pub tokens: u64,
    pub padding: u64,
    pub retrieved: u64,
    pub dropped_documents: u64,
    pub masked_spans: u64,
    /// Spans in captions, of which `whole_caption_spans` masked a whole caption.
    pub text_spans: u64,
    pub whole_caption_spans: u64,
    pub image_spans: u64,
    /// Examples whose query caption (not a retrieved document's) is masked whole.
    pub query_caption_masked: u64,
    pub skipped_too_long: u64,
    /// Pairs left out because `cm3 augment --exclude` removed them from the memory bank (an
    /// evaluation split is never trained on).
    pub excluded: u64,
}

impl SplitCounts {
    /// Every counter, by the name the manifest records it under.
    pub fn fields(&self) -> [(&'static str, u64); 13] {
        [
            ("sequences", self.sequences),
            ("examples", self.examples),
            ("tokens", self.tokens),
            ("padding", self.padding),
            ("retrieved", self.retrieved),
            ("dropped_documents", self.dropped_documents),
            ("masked_spans", self.masked_spans),
            ("text_spans", self.text_spans),
            ("whole_caption_spans", self.whole_caption_spans),
            ("image_spans", self.image_spans),
            ("query_caption_masked", self.query_caption_masked),
            ("skipped_too_long", self.skipped_too_long),
            ("excluded", self.excluded),
        ]
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            "sequences" => &mut self.sequences,
            "examples" => &mut self.examples,
            "tokens" => &mut self.tokens,
            "padding" => &mut self.padding,
            "retrieved" => &mut self.retrieved,
            "dropped_documents" => &mut self.dropped_documents,
            "masked_spans" => &mut self.masked_spans,
            "text_spans" => &mut self.text_spans,
            "whole_caption_spans" => &mut self.whole_caption_spans,
            "image_spans" => &mut self.image_spans,
            "query_caption_masked" => &mut self.query_caption_masked,
            "skipped_too_long" => &mut self.skipped_too_long,
            "excluded" => &mut self.excluded,
            _ => return None,
        })
    }

    fn add(&mut self, o: &SplitCounts) {
        for (name, v) in o.fields() {
            if let Some(f) = self.field_mut(name) {
                *f += v;
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PackReport {
    pub shards_written: usize,
    pub shards_skipped: usize,
    pub train: SplitCounts,
    pub val: SplitCounts,
    pub padding_fraction: f64,
    pub seconds: f64,
}

/// `meta.json`: everything training needs to read the sequences, and how they were made.
/// The version of the training objective the sequences follow. `cm3 train` refuses sequences of
/// another version: v1 (no `objective_version` in meta.json) masked almost no caption, had no
/// scored end and split the captions of one image across train and validation.
pub const OBJECTIVE_VERSION: u32 = 2;
/// The suffix of a split's output marks (`packed/{split}.outputs.bin`, written by `cm3 sft
/// build`): one byte per token of `{split}.bin`, 1 where the token is an example's output
/// (answer, caption, output image) or its closing `<eos>`, 0 elsewhere (the output-only loss).
pub const OUTPUT_MARKS: &str = "outputs.bin";
pub const OBJECTIVE: &str = "CM3 causal masking: span count Poisson clamped, segment chosen \
    first (captions and images at set rates, whole captions included), no span across <eos> or \
    <break>, a scored <eos> closing every example; split by image";

#[derive(Debug, Clone, Serialize)]
struct Meta<'a> {
    format: &'static str,
    objective_version: u32,
    objective: &'static str,
    seq_len: usize,
    token_dtype: &'static str,
    vocab: &'a VocabLayout,
    config: &'a PackConfig,
    train: SplitCounts,
    val: SplitCounts,
    boundaries: &'static str,
    stages: BTreeMap<String, serde_json::Value>,
}

pub fn run(opts: &PackOptions) -> Result<PackReport> {
    let cfg = &opts.config;
    cfg.validate()?;
    let ds = DatasetDir::open(&opts.dataset)?;
    let worker = WorkerSpec::default();
    let _lock = ds.lock(STAGE, &worker)?;
    let mut manifest = ds.load_manifest()?;
    let missing = |what: &str, cmd: &str| {
        PackError::Invalid(format!(
            "{}: no {what} yet; run `cm3 {cmd}` first",
            ds.root().display()
        ))
    };
    let tokens_stage = manifest
        .stages
        .get("tokenize")
        .cloned()
        .ok_or_else(|| missing("tokens", "tokenize"))?;
    let neighbours_stage = if cfg.retrieval {
        let rec = manifest
            .stages
            .get(cm3_augment::stage::STAGE)
            .cloned()
            .ok_or_else(|| missing("retrieved documents", "augment"))?;
        if rec.config.get("bank").and_then(|b| b.as_str()) != Some("self") {
            return Err(PackError::Invalid(
                "the documents were retrieved from another dataset's bank; packing them needs that \
                 dataset's tokens, which is not supported yet (augment with the dataset itself as \
                 the bank, or pack with retrieval = false)"
                    .into(),
            ));
        }
        Some(rec)
    } else {
        None
    };
    let layout = VocabLayout::load(&ds.path(cm3_core::vocab::VOCAB))?;
    let sp = Specials::from_layout(&layout)?;
    // The settings and the tokenizers that made the tokens: packed sequences from two
    // vocabularies must never share files.
    let config_json = serde_json::json!({
        "settings": serde_json::to_value(cfg).map_err(|e| PackError::Invalid(e.to_string()))?,
        "tokenize": tokens_stage.config,
    });
    let packed = ds.path("packed");
    if opts.rebuild {
        ds.discard_stage(&mut manifest, STAGE, "packed", &worker.tag())?;
    }
    // Neither this stage's records nor the tokens and neighbours it reads may describe changed
    // upstream shards.
    for stage in [STAGE, "tokenize", cm3_augment::stage::STAGE] {
        manifest.check_fresh(stage)?;
    }
    ds.stage_record(&mut manifest, STAGE, &config_json)?;
    fs::create_dir_all(&packed).map_err(|e| PackError::Io {
        op: "creating",
        path: packed.clone(),
        source: e,
    })?;

    // What earlier runs left: cut files back to the recorded lengths (undoes a crash).
    let done = manifest
        .stages
        .get(STAGE)
        .map(|s| s.shards.clone())
        .unwrap_or_default();
    // Every pair's tokens in an on-disk store (retrieved documents may live in any shard), and
    // the pairs' splits and exclusions a shard at a time, so memory does not grow with the
    // dataset; nothing is read when every shard is packed already.
    let mut store = None;
    let mut exclusion = Exclusion::default();
    if tokens_stage
        .shards
        .keys()
        .any(|name| !done.contains_key(name))
    {
        exclusion = Exclusion::of(&ds, &manifest)?;
        if neighbours_stage.is_some() {
            store = Some(doc_store(&ds, &packed, &tokens_stage)?);
        }
    }
    let mut totals = [SplitCounts::default(); 2];
    for rec in done.values() {
        for (k, split) in ["train", "val"].iter().enumerate() {
            totals[k].add(&counts_from(&rec.counters, split));
        }
    }
    let mut writers = [
        SplitWriter::open(&packed, "train", &totals[0], cfg, sp.pad)?,
        SplitWriter::open(&packed, "val", &totals[1], cfg, sp.pad)?,
    ];

    let mut report = PackReport::default();
    let started = Instant::now();
    let plan = cfg.mask_plan();
    // Room kept for masking: with every sentinel used an example grows by `growth(n)`.
    let reserve = growth(sp.sentinels.len()).min(cfg.seq_len / 4);
    let budget = Budget {
        query: cfg.seq_len - reserve,
        total: match cfg.policy {
            Policy::Whole => cfg.seq_len - reserve,
            // Every sampled document is kept: the example continues in the next sequence.
            Policy::Stream => usize::MAX,
        },
    };
    for (slot, name) in tokens_stage.shards.keys().enumerate() {
        if done.contains_key(name) {
            report.shards_skipped += 1;
            continue;
        }
        let rec = &tokens_stage.shards[name];
        let rows = cm3_core::tokens::read_shard(&ds.path(&rec.file))
            .map_err(|e| PackError::Invalid(format!("reading tokens: {e}")))?;
        let pairs_info = read_pairs_info(&ds, &manifest, name)?;
        // What the shard is made from (`Manifest::check_fresh`).
        let mut upstream = BTreeMap::from([("tokenize".to_string(), rec.sha256.clone())]);
        if let Some(n) = neighbours_stage.as_ref().and_then(|n| n.shards.get(name)) {
            upstream.insert(cm3_augment::stage::STAGE.to_string(), n.sha256.clone());
        }
        let neighbours: HashMap<u64, Vec<u64>> = match &neighbours_stage {
            Some(n) => match n.shards.get(name) {
                Some(nrec) => cm3_augment::output::read_shard(&ds.path(&nrec.file))
                    .map_err(|e| PackError::Invalid(format!("reading neighbours: {e}")))?
                    .into_iter()
                    .map(|r| {
                        let sampled = r
                            .neighbours
                            .iter()
                            .filter(|n| n.sampled)
                            .map(|n| n.id)
                            .collect();
                        (r.id, sampled)
                    })
                    .collect(),
                None => {
                    return Err(PackError::Invalid(format!(
                        "shard {name} has tokens but no retrieved documents: run `cm3 augment` first"
                    )));
                }
            },
            None => HashMap::new(),
        };
        let mut shard_counts = [SplitCounts::default(); 2];
        for row in &rows {
            let pair = row.id;
            let info = pairs_info.get(&pair).ok_or_else(|| {
                PackError::Invalid(format!(
                    "shard {name}: pair {pair:016x} has tokens but no row in pairs/; the dataset \
                     is inconsistent (re-run `cm3 tokenize --rebuild`)"
                ))
            })?;
            // By image, so that the captions of one image are never on both sides.
            let mut rng = SplitMix64::for_pair(cfg.seed, STREAM_SPLIT, info.image);
            let split = usize::from(rng.next_f64() < cfg.val_fraction);
            let c = &mut shard_counts[split];
            if exclusion.excludes(pair, &info.split) {
                c.excluded += 1;
                continue;
            }
            let mut rng = SplitMix64::for_pair(cfg.seed, STREAM_EXAMPLE, pair);
            let mut retrieved = Vec::new();
            if let (Some(ns), Some(store)) = (neighbours.get(&pair), &store) {
                for &id in ns {
                    retrieved.extend(store.get(id)?);
                }
            }
            let mut docs: Vec<Doc> = retrieved
                .iter()
                .map(|(text, image)| Doc { text, image })
                .collect();
            // A random order: what `whole` packing drops (the last) is then a random sampled
            // document, never one chosen by comparing image-query and text-query scores.
            shuffle(&mut docs, &mut rng);
            let flips: Vec<bool> = (0..=docs.len())
                .map(|_| rng.next_f64() < cfg.image_first)
                .collect();
            let (text, image) = (&row.text, &row.image);
            let query = Doc { text, image };
            let Some(ex) = build(&docs, query, &flips, budget, &sp) else {
                c.skipped_too_long += 1;
                continue;
            };
            let max_extra = match cfg.policy {
                Policy::Whole => cfg.seq_len - ex.tokens.len(),
                Policy::Stream => growth(sp.sentinels.len()),
            };
            let m = causal_mask(&ex.tokens, &sp, &plan, max_extra, &mut rng);
            // The query's caption: after its `<eos>`, or after its image and `<break>`.
            let caption_start = ex.query_start
                + 1
                + if flips.get(docs.len()).copied().unwrap_or(false) {
                    image.len() + 1
                } else {
                    0
                };
            let caption = caption_start..caption_start + text.len();
            c.examples += 1;
            c.retrieved += ex.retrieved as u64;
            c.dropped_documents += ex.dropped as u64;
            c.masked_spans += m.spans.len() as u64;
            for span in &m.spans {
                match span.modality {
                    Modality::Text => {
                        c.text_spans += 1;
                        c.whole_caption_spans += u64::from(span.whole);
                    }
                    Modality::Image => c.image_spans += 1,
                }
            }
            c.query_caption_masked +=
                u64::from(!caption.is_empty() && m.spans.iter().any(|s| s.range == caption));
            writers[split].push(&m.tokens, pair, c)?;
        }
        for (k, w) in writers.iter_mut().enumerate() {
            w.end_shard(&mut shard_counts[k])?;
        }
        let mut counters = BTreeMap::new();
        for (k, split) in ["train", "val"].iter().enumerate() {
            put_counts(&mut counters, split, &shard_counts[k]);
            totals[k].add(&shard_counts[k]);
        }
        let stage = manifest
            .stages
            .get_mut(STAGE)
            .ok_or_else(|| PackError::Invalid("internal: the stage record vanished".into()))?;
        stage.insert_shard(
            name.clone(),
            ShardRecord {
                file: "packed".into(),
                input: name.clone(),
                chunk: slot as u32,
                rows: rows.len() as u64,
                bytes: 0,
                sha256: String::new(),
                rejects: shard_counts.iter().map(|c| c.skipped_too_long).sum(),
                rejects_file: None,
                rejects_by_reason: BTreeMap::new(),
                counters,
                upstream,
            },
        );
        write_meta(&ds, &manifest, &layout, cfg, &totals)?;
        ds.save_stage(&mut manifest, STAGE, &worker)?;
        report.shards_written += 1;
        report.train.add(&shard_counts[0]);
        report.val.add(&shard_counts[1]);
    }
    if report.shards_written == 0 {
        write_meta(&ds, &manifest, &layout, cfg, &totals)?;
    }
    ds.finish_stage(&mut manifest, &worker)?;
    let all_tokens = totals[0].tokens + totals[1].tokens;
    report.padding_fraction =
        (totals[0].padding + totals[1].padding) as f64 / all_tokens.max(1) as f64;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What packing needs to know of a pair besides its tokens.
#[derive(Debug, Clone)]
struct PairInfo {
    /// The image's content key (first 64 bits of its SHA-256): the unit of the split.
    image: u64,
    /// The pair's `split` column (what `cm3 augment --exclude <split>` names).
    split: String,
}

/// Every pair's tokens, from every `tokens/` shard, in an on-disk store in `dir`.
fn doc_store(
    ds: &DatasetDir,
    dir: &Path,
    tokens_stage: &cm3_core::StageRecord,
) -> Result<DocStore> {
    let pairs: u64 = tokens_stage.shards.values().map(|r| r.rows).sum();
    let mut store = DocStore::create(dir, pairs)?;
    for rec in tokens_stage.shards.values() {
        let rows = cm3_core::tokens::read_shard(&ds.path(&rec.file))
            .map_err(|e| PackError::Invalid(format!("reading tokens: {e}")))?;
        for row in &rows {
            store.insert(row)?;
        }
    }
    store.finish()?;
    Ok(store)
}

/// The image key and split of every pair of the ingested shard `name` (the shard of `pairs/`
/// that the `tokens/` shard of that name was made from).
fn read_pairs_info(
    ds: &DatasetDir,
    manifest: &cm3_core::Manifest,
    name: &str,
) -> Result<HashMap<u64, PairInfo>> {
    let mut out = HashMap::new();
    let Some(rec) = manifest
        .stages
        .get("ingest")
        .and_then(|ingest| ingest.shards.get(name))
    else {
        return Ok(out);
    };
    let path = ds.path(&rec.file);
    for b in read_columns(&path, &["id", "sha256", "split"])? {
        let (Some(id), Some(sha), Some(split)) = (
            column::<UInt64Array>(&b, "id"),
            column::<StringArray>(&b, "sha256"),
            column::<StringArray>(&b, "split"),
        ) else {
            return Err(PackError::Invalid(format!(
                "{}: columns id/sha256/split have unexpected types",
                path.display()
            )));
        };
        for i in 0..b.num_rows() {
            out.insert(
                id.value(i),
                PairInfo {
                    image: image_key(sha.value(i)),
                    split: split.value(i).to_string(),
                },
            );
        }
    }
    Ok(out)
}

/// The pairs `cm3 augment --exclude` removed from this dataset's memory bank: an evaluation
/// split must not be trained on either. Splits are matched per pair; an ids file is held as a
/// set (an evaluation split's size, not the dataset's).
#[derive(Debug, Default)]
struct Exclusion {
    splits: HashSet<String>,
    ids: HashSet<u64>,
}

impl Exclusion {
    fn of(ds: &DatasetDir, manifest: &cm3_core::Manifest) -> Result<Self> {
        let mut out = Self::default();
        let Some(rec) = manifest.stages.get(cm3_augment::stage::STAGE) else {
            return Ok(out);
        };
        // Another dataset's bank: its exclusions name that dataset's pairs, not ours.
        if rec.config.get("bank").and_then(|b| b.as_str()) != Some("self") {
            return Ok(out);
        }
        let labels = rec
            .config
            .get("exclude")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        for label in labels.iter().filter_map(|l| l.as_str()) {
            if let Some(name) = label.strip_prefix("split:") {
                out.splits.insert(name.to_string());
            } else if let Some(sha) = label.strip_prefix("ids:") {
                let file = ds.path(&cm3_augment::stage::excluded_ids_file(sha));
                if !file.is_file() {
                    return Err(PackError::Invalid(format!(
                        "{}: the memory bank excludes the pairs of an ids file (sha256 {sha}), \
                         but their list {} is missing (augmented by an older cm3?); re-run `cm3 \
                         augment --rebuild --exclude <that file>` so that pack can leave them out",
                        ds.root().display(),
                        file.display()
                    )));
                }
                let ids = cm3_augment::stage::read_id_lines(&file)
                    .map_err(|e| PackError::Invalid(format!("reading excluded ids: {e}")))?;
                out.ids.extend(ids);
            } else {
                return Err(PackError::Invalid(format!(
                    "the augment record excludes `{label}`, which this cm3 does not know"
                )));
            }
        }
        Ok(out)
    }

    fn excludes(&self, pair: u64, split: &str) -> bool {
        self.ids.contains(&pair) || self.splits.contains(split)
    }
}

/// Fisher-Yates, seeded.
fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

fn counts_from(c: &BTreeMap<String, u64>, split: &str) -> SplitCounts {
    let mut out = SplitCounts::default();
    for (name, _) in SplitCounts::default().fields() {
        if let (Some(v), Some(f)) = (c.get(&format!("{split}_{name}")), out.field_mut(name)) {
            *f = *v;
        }
    }
    out
}

fn put_counts(c: &mut BTreeMap<String, u64>, split: &str, s: &SplitCounts) {
    for (name, v) in s.fields() {
        c.insert(format!("{split}_{name}"), v);
    }
}

fn write_meta(
    ds: &DatasetDir,
    manifest: &cm3_core::Manifest,
    layout: &VocabLayout,
    cfg: &PackConfig,
    totals: &[SplitCounts; 2],
) -> Result<()> {
    let meta = Meta {
        format: "Megatron-LM MMIDIDX indexed dataset, one packed sequence per entry",
        objective_version: OBJECTIVE_VERSION,
        objective: OBJECTIVE,
        seq_len: cfg.seq_len,
        token_dtype: "int32",
        vocab: layout,
        config: cfg,
        train: totals[0],
        val: totals[1],
        boundaries: "{split}.boundaries.bin: little-endian int64 triples (sequence, offset in \
                     the sequence, pair id), one per example, in order",
        stages: manifest
            .stages
            .iter()
            .map(|(k, v)| (k.clone(), v.config.clone()))
            .collect(),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&meta).map_err(|e| PackError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    cm3_core::fsio::write_atomic(&ds.path("packed/meta.json"), &bytes, "pack")?;
    Ok(())
}

/// One split's files: the indexed dataset (appended) and the example boundaries. Also what
/// `cm3 sft build` writes its sequences with.
#[allow(missing_debug_implementations)] // holds file handles and a packer; nothing to show
pub struct SplitWriter {
    writer: IndexedWriter,
    packer: Packer,
    boundaries: BufWriter<File>,
    boundaries_path: PathBuf,
    /// Sequences written so far (old ones included).
    sequences: u64,
    /// Pair ids of the examples pushed but not yet written, in order (the packer reports
    /// example starts in the order examples were pushed).
    pending: VecDeque<u64>,
}

impl SplitWriter {
    /// `dir/{split}.{bin,idx,boundaries.bin}`, keeping the sequences `before` recorded.
    pub fn open(
        dir: &Path,
        split: &str,
        before: &SplitCounts,
        cfg: &PackConfig,
        pad: u32,
    ) -> Result<Self> {
        let prefix = dir.join(split);
        // Old sequences, as recorded; anything beyond (a crashed run) is cut off.
        let writer = IndexedWriter::append(&prefix, before.sequences as usize)?;
        let boundaries_path = dir.join(format!("{split}.boundaries.bin"));
        let keep = before.examples * 24;
        let f = cm3_core::fsio::open_in_place(&boundaries_path)?;
        f.set_len(keep).map_err(|e| PackError::Io {
            op: "truncating",
            path: boundaries_path.clone(),
            source: e,
        })?;
        let mut f = f;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).map_err(|e| PackError::Io {
            op: "seeking",
            path: boundaries_path.clone(),
            source: e,
        })?;
        Ok(Self {
            writer,
            packer: Packer::new(cfg.seq_len, cfg.policy, pad)?,
            boundaries: BufWriter::new(f),
            boundaries_path,
            sequences: before.sequences,
            pending: VecDeque::new(),
        })
    }

    /// One example (`pair` is recorded in the boundaries).
    pub fn push(&mut self, tokens: &[u32], pair: u64, c: &mut SplitCounts) -> Result<()> {
        self.pending.push_back(pair);
        for s in self.packer.push(tokens)? {
            self.emit(&s, c)?;
        }
        Ok(())
    }

    fn emit(&mut self, s: &crate::packing::Sequence, c: &mut SplitCounts) -> Result<()> {
        self.writer.push(&s.tokens)?;
        for &(off, _) in &s.starts {
            let pair = self.pending.pop_front().unwrap_or(u64::MAX);
            let mut rec = [0u8; 24];
            rec[..8].copy_from_slice(&(self.sequences as i64).to_le_bytes());
            rec[8..16].copy_from_slice(&i64::from(off).to_le_bytes());
            rec[16..].copy_from_slice(&pair.to_le_bytes());
            self.boundaries.write_all(&rec).map_err(|e| PackError::Io {
                op: "writing",
                path: self.boundaries_path.clone(),
                source: e,
            })?;
        }
        self.sequences += 1;
        c.sequences += 1;
        c.tokens += s.tokens.len() as u64;
        c.padding += u64::from(s.padding);
        Ok(())
    }

    /// Pad the last sequence of the shard and commit the files, so the next shard (or run)
    /// starts a fresh sequence and old sequences never change.
    pub fn end_shard(&mut self, c: &mut SplitCounts) -> Result<()> {
        if let Some(s) = self.packer.finish() {
            self.emit(&s, c)?;
        }
        self.boundaries.flush().map_err(|e| PackError::Io {
            op: "flushing",
            path: self.boundaries_path.clone(),
            source: e,
        })?;
        self.boundaries
            .get_ref()
            .sync_all()
            .map_err(|e| PackError::Io {
                op: "syncing",
                path: self.boundaries_path.clone(),
                source: e,
            })?;
        self.writer.commit()?;
        Ok(())
    }
}
