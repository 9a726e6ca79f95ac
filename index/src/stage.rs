//! `cm3 index build <dataset>`: index every embedded shard not yet in the index.
//!
//! The index of a vector set lives in `<dataset>/index/<set>/` (see [`crate::store`]); the manifest
//! stage `index.<set>` records its configuration and, per embedding shard held, the rows and the
//! checksum of the embeddings indexed. Running the build again after `cm3 embed` has added shards
//! adds only those; a crash leaves the previous index usable and the next run finishes the job.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::{StringArray, UInt64Array};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use cm3_core::schema::{column, read_columns};
use cm3_core::{DatasetDir, Manifest, ShardRecord, StageRecord, WorkerSpec};

use crate::error::{IndexError, Result};
use crate::spec::{IndexSpec, VectorSet};
use crate::store::{self, IndexMeta, IndexedShard};
use crate::vectors::{check_unit_rows, read_ids, read_vectors};
use crate::{MipsIndex, new_index_in_parts};

/// The folder of an index directory where the parts of a bank in parts wait for their commit.
const STAGING: &str = ".parts-staging";

/// The manifest stage of an index over `set`.
pub fn stage_name(set: VectorSet) -> String {
    format!("index.{set}")
}

/// Where a dataset keeps the index over `set`.
pub fn index_dir(dataset: &Path, set: VectorSet) -> PathBuf {
    dataset.join("index").join(set.name())
}

/// What determines an index (saved in the manifest; a later build must match it or `--rebuild`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    #[serde(default)]
    pub vector_set: VectorSet,
    #[serde(default)]
    pub index: IndexSpec,
    /// Build the bank in parts of at most this many vectors ([`crate::parts`]): the build then
    /// holds one part in memory, not the bank. Unset: one index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_rows: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub dataset: PathBuf,
    pub config: IndexConfig,
    /// Discard the existing index and build from scratch.
    pub rebuild: bool,
    /// Refuse vectors that are not unit-norm instead of normalising them.
    pub strict: bool,
    pub progress: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    pub index_dir: PathBuf,
    pub spec: IndexSpec,
    pub added_shards: usize,
    pub added_rows: usize,
    pub total_rows: usize,
    pub total_shards: usize,
    pub normalised: usize,
    pub generation: u64,
    pub seconds: f64,
}

fn mismatch(path: &Path, reason: String) -> IndexError {
    IndexError::Mismatch {
        path: path.to_path_buf(),
        reason,
    }
}

/// The embed stage's shards, or a clear error when the dataset has no embeddings.
fn embed_record(ds: &DatasetDir, m: &Manifest) -> Result<StageRecord> {
    match m.stages.get(cm3_embed::stage::STAGE) {
        Some(r) if !r.shards.is_empty() => Ok(r.clone()),
        _ => Err(IndexError::Invalid(format!(
            "{} has no embeddings yet: run `cm3 embed {}` first",
            ds.root().display(),
            ds.root().display()
        ))),
    }
}

/// Refuse an existing index that was built differently or from other embeddings.
fn check_existing(
    dir: &Path,
    meta: &IndexMeta,
    config: &IndexConfig,
    embed: &StageRecord,
) -> Result<()> {
    if meta.spec != config.index {
        return Err(mismatch(
            dir,
            format!(
                "the index was built as {}, this build asks for {}; pass --rebuild to replace it",
                meta.spec, config.index
            ),
        ));
    }
    if meta.part_rows != config.part_rows {
        let says =
            |p: Option<usize>| p.map_or("one index".to_string(), |n| format!("parts of {n}"));
        return Err(mismatch(
            dir,
            format!(
                "the index was built as {}, this build asks for {}; pass --rebuild to replace it",
                says(meta.part_rows),
                says(config.part_rows)
            ),
        ));
    }
    if meta.vector_set != Some(config.vector_set) {
        return Err(mismatch(
            dir,
            format!(
                "the index holds {:?} vectors, not `{}` (an index from elsewhere?); pass --rebuild",
                meta.vector_set, config.vector_set
            ),
        ));
    }
    for (name, held) in &meta.shards {
        match embed.shards.get(name) {
            Some(s) if s.sha256 == held.embeddings_sha256 => {}
            Some(_) => {
                return Err(mismatch(
                    dir,
                    format!(
                        "shard {name} was indexed from other embeddings than the dataset now holds \
                         (embeddings made again, or an index copied from another dataset); pass \
                         --rebuild to index the current embeddings"
                    ),
                ));
            }
            None => {
                return Err(mismatch(
                    dir,
                    format!(
                        "the index holds shard {name}, which this dataset's embeddings do not \
                         (an index copied from another dataset?); pass --rebuild"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Record the committed index in the manifest (idempotent: also repairs a manifest that a crash
/// left behind the index).
fn record_in_manifest(
    ds: &DatasetDir,
    m: &mut Manifest,
    config: &IndexConfig,
    meta: &IndexMeta,
    embed: &StageRecord,
) -> Result<()> {
    let stage = stage_name(config.vector_set);
    let cfg = serde_json::to_value(config).map_err(|e| IndexError::Invalid(e.to_string()))?;
    let rec = ds.stage_record(m, &stage, &cfg)?;
    let gen_dir = format!("index/{}/gen-{:06}", config.vector_set, meta.generation);
    rec.shards = meta
        .shards
        .iter()
        .map(|(name, s)| {
            let chunk = embed.shards.get(name).map_or(0, |e| e.chunk);
            (
                name.clone(),
                ShardRecord {
                    file: gen_dir.clone(),
                    input: name.clone(),
                    chunk,
                    rows: s.rows,
                    bytes: 0,
                    sha256: s.embeddings_sha256.clone(),
                    rejects: 0,
                    rejects_file: None,
                    rejects_by_reason: BTreeMap::new(),
                    counters: BTreeMap::new(),
                    upstream: BTreeMap::from([("embed".to_string(), s.embeddings_sha256.clone())]),
                },
            )
        })
        .collect();
    m.save(&ds.manifest_path(), "index")?;
    Ok(())
}

/// Read one embedding shard's ids and vectors of `set`, checked and normalised.
fn read_shard(
    ds: &DatasetDir,
    rec: &ShardRecord,
    set: VectorSet,
    strict: bool,
) -> Result<(Vec<u64>, Vec<f32>, usize, usize)> {
    let dir = ds.path(&rec.file);
    let ids = read_ids(&dir.join("ids.npy"))?;
    let vpath = dir.join(format!("{set}.npy"));
    let mut v = read_vectors(&vpath)?;
    if v.rows() != ids.len() {
        return Err(IndexError::Vectors {
            path: vpath,
            reason: format!("{} vectors for {} ids", v.rows(), ids.len()),
        });
    }
    let what = vpath.display().to_string();
    let report = check_unit_rows(&what, &mut v.data, v.dim, strict)?;
    Ok((ids, v.data, v.dim, report.normalised))
}

/// A build adding shards to an index.
struct Adding<'a> {
    ds: &'a DatasetDir,
    opts: &'a BuildOptions,
    dir: &'a Path,
    /// Where a bank in parts writes each part that fills up, out of memory until its commit.
    staging: &'a Path,
    index: Option<Box<dyn MipsIndex>>,
    /// The committed generation the index was loaded from or last committed as.
    prev_meta: Option<IndexMeta>,
    shards: BTreeMap<String, IndexedShard>,
    added_rows: usize,
    normalised: usize,
    /// Vectors in the index at its last commit.
    committed_len: usize,
}

impl Adding<'_> {
    fn add_shard(&mut self, name: &str, rec: &ShardRecord) -> Result<()> {
        let (opts, set) = (self.opts, self.opts.config.vector_set);
        let (ids, vecs, dim, norm) = read_shard(self.ds, rec, set, opts.strict)?;
        let idx = match &mut self.index {
            Some(i) => i,
            None => self.index.insert(new_index_in_parts(
                &opts.config.index,
                dim,
                opts.config.part_rows,
            )?),
        };
        idx.set_staging(self.staging);
        if dim != idx.dim() {
            return Err(IndexError::Dimension {
                what: format!("{}/{set}.npy", self.ds.path(&rec.file).display()),
                expected: idx.dim(),
                found: dim,
            });
        }
        idx.add(&ids, &vecs)?;
        self.added_rows += ids.len();
        self.normalised += norm;
        self.shards.insert(
            name.to_string(),
            IndexedShard {
                rows: ids.len() as u64,
                embeddings_sha256: rec.sha256.clone(),
            },
        );
        // A bank in parts is committed at the end of each shard in which a part filled up: its
        // full parts are linked from staging, and a crash loses at most a part's work.
        if opts
            .config
            .part_rows
            .is_some_and(|rows| idx.len() / rows > self.committed_len / rows)
        {
            let meta = store::commit(
                self.dir,
                idx.as_ref(),
                self.prev_meta.as_ref(),
                Some(set),
                self.shards.clone(),
                "index",
            )?;
            idx.committed(&meta.generation_dir(self.dir));
            self.committed_len = idx.len();
            self.prev_meta = Some(meta);
        }
        Ok(())
    }
}

/// Index the embedding shards of `opts.dataset` that the index does not hold yet.
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    let ds = DatasetDir::open(&opts.dataset)?;
    let set = opts.config.vector_set;
    let stage = stage_name(set);
    let _lock = ds.lock(&stage, &WorkerSpec::default())?;
    // Read once: under the lock, only this run changes the manifest.
    let mut m = ds.load_manifest()?;
    // Embeddings made from ingest shards that have changed since are refused (rebuild embed).
    m.check_fresh("embed")?;
    let embed = embed_record(&ds, &m)?;
    let dir = index_dir(ds.root(), set);
    if opts.rebuild {
        store::remove(&dir)?;
        if m.stages.remove(&stage).is_some() {
            m.save(&ds.manifest_path(), "index")?;
        }
    } else {
        // The manifest refuses another configuration before any work.
        let cfg =
            serde_json::to_value(&opts.config).map_err(|e| IndexError::Invalid(e.to_string()))?;
        if let Some(rec) = m.stages.get(&stage)
            && !rec.shards.is_empty()
        {
            rec.check_config(&stage, ds.root(), &cfg)?;
        }
    }
    let existing = store::open(&dir)?;
    if let Some((meta, _)) = &existing {
        check_existing(&dir, meta, &opts.config, &embed)?;
    }
    let held: HashSet<String> = existing
        .as_ref()
        .map(|(m, _)| m.shards.keys().cloned().collect())
        .unwrap_or_default();
    let todo: Vec<(&String, &ShardRecord)> = embed
        .shards
        .iter()
        .filter(|(name, _)| !held.contains(*name))
        .collect();
    let (prev_meta, index): (Option<IndexMeta>, Option<Box<dyn MipsIndex>>) = match existing {
        Some((m, i)) => (Some(m), Some(i)),
        None => (None, None),
    };
    if todo.is_empty()
        && let Some(meta) = &prev_meta
    {
        record_in_manifest(&ds, &mut m, &opts.config, meta, &embed)?;
        tracing::info!(index = %dir.display(), "index is up to date");
        return Ok(BuildReport {
            index_dir: dir,
            spec: meta.spec.clone(),
            added_shards: 0,
            added_rows: 0,
            total_rows: meta.count,
            total_shards: meta.shards.len(),
            normalised: 0,
            generation: meta.generation,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let bar = if opts.progress {
        let b = ProgressBar::new(todo.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "index {bar:30} {pos}/{len} shards, {msg} [{elapsed_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let staging = dir.join(STAGING);
    if staging.exists() {
        // Left by an interrupted build: nothing in it was committed.
        fs::remove_dir_all(&staging).map_err(|e| IndexError::io("removing", &staging, e))?;
    }
    let mut run = Adding {
        ds: &ds,
        opts,
        dir: &dir,
        staging: &staging,
        committed_len: index.as_ref().map_or(0, |i| i.len()),
        index,
        shards: prev_meta
            .as_ref()
            .map(|m| m.shards.clone())
            .unwrap_or_default(),
        prev_meta,
        added_rows: 0,
        normalised: 0,
    };
    for (name, rec) in &todo {
        run.add_shard(name, rec)?;
        bar.inc(1);
        bar.set_message(format!("{} vectors", run.added_rows));
    }
    let Adding {
        index,
        prev_meta,
        shards,
        added_rows,
        normalised,
        ..
    } = run;
    bar.finish_and_clear();
    if normalised > 0 {
        tracing::warn!(
            rows = normalised,
            "vectors were not unit-norm and were normalised (--strict refuses them)"
        );
    }
    // Shards to add, or an index loaded: either way there is one (embed_record refuses none).
    let Some(index) = index else {
        return Err(IndexError::Invalid(format!(
            "{}: no embedding shards to index",
            ds.root().display()
        )));
    };
    let meta = store::commit(
        &dir,
        index.as_ref(),
        prev_meta.as_ref(),
        Some(set),
        shards,
        "index",
    )?;
    // Every staged part is linked into the committed generation now.
    if staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    record_in_manifest(&ds, &mut m, &opts.config, &meta, &embed)?;
    Ok(BuildReport {
        index_dir: dir,
        spec: meta.spec.clone(),
        added_shards: todo.len(),
        added_rows,
        total_rows: meta.count,
        total_shards: meta.shards.len(),
        normalised,
        generation: meta.generation,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Open a dataset's index over `set` for searching.
pub fn open_dataset_index(
    dataset: &Path,
    set: VectorSet,
) -> Result<(IndexMeta, Box<dyn MipsIndex>)> {
    let dir = index_dir(dataset, set);
    store::open(&dir)?.ok_or_else(|| {
        IndexError::Invalid(format!(
            "{} has no `{set}` index: run `cm3 index build {} --set {set}` first",
            dataset.display(),
            dataset.display()
        ))
    })
}

/// The stored `set` vector of a pair, from the dataset's embeddings.
pub fn lookup_vector(dataset: &Path, set: VectorSet, id: u64) -> Result<Vec<f32>> {
    lookup_vectors(dataset, set, &HashSet::from([id]))?
        .remove(&id)
        .ok_or_else(|| {
            IndexError::Invalid(format!(
                "no pair with id {id:016x} in the embeddings of {}",
                dataset.display()
            ))
        })
}

/// The stored vectors of the given pair ids (unit-norm checked), reading each embedding shard
/// at most once and only the shards that hold one of them; ids without a vector are absent.
pub fn lookup_vectors(
    dataset: &Path,
    set: VectorSet,
    ids: &HashSet<u64>,
) -> Result<HashMap<u64, Vec<f32>>> {
    let ds = DatasetDir::open(dataset)?;
    let embed = embed_record(&ds, &ds.load_manifest()?)?;
    let mut out = HashMap::new();
    for rec in embed.shards.values() {
        if out.len() == ids.len() {
            break;
        }
        let dir = ds.path(&rec.file);
        let shard_ids = read_ids(&dir.join("ids.npy"))?;
        let wanted: Vec<(usize, u64)> = shard_ids
            .iter()
            .enumerate()
            .filter(|(_, id)| ids.contains(id))
            .map(|(pos, &id)| (pos, id))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let v = read_vectors(&dir.join(format!("{set}.npy")))?;
        for (pos, id) in wanted {
            if pos < v.rows() {
                let mut row = v.row(pos).to_vec();
                check_unit_rows("query", &mut row, v.dim, false)?;
                out.insert(id, row);
            }
        }
    }
    Ok(out)
}

/// Captions of the given pair ids, from the dataset's `pairs/` shards.
pub fn captions(dataset: &Path, ids: &HashSet<u64>) -> Result<HashMap<u64, String>> {
    let ds = DatasetDir::open(dataset)?;
    let m = ds.load_manifest()?;
    let mut out = HashMap::new();
    let Some(ingest) = m.stages.get("ingest") else {
        return Ok(out);
    };
    for rec in ingest.shards.values() {
        for b in read_columns(&ds.path(&rec.file), &["id", "caption"])? {
            let (Some(bid), Some(cap)) = (
                column::<UInt64Array>(&b, "id"),
                column::<StringArray>(&b, "caption"),
            ) else {
                continue;
            };
            for i in 0..b.num_rows() {
                let id = bid.value(i);
                if ids.contains(&id) {
                    out.insert(id, cap.value(i).to_string());
                }
            }
        }
        if out.len() == ids.len() {
            break;
        }
    }
    Ok(out)
}
