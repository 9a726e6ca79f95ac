//! `manifest.json`: what each stage of a dataset directory finished, with what configuration.
//!
//! The manifest is the single source of truth for "is this shard done?": a shard file that exists but
//! is not recorded here is treated as not done (it is rewritten on the next run). Totals are derived
//! from the shard records whenever the manifest is saved, so they cannot drift.
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::fsio::write_atomic;
use crate::names::{plain_name, relative_path};

/// Version of the manifest layout this tool writes and understands.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    #[serde(default)]
    pub stages: BTreeMap<String, StageRecord>,
    /// What the file on disk holds: the journal's state (never serialised, never compared).
    #[serde(skip)]
    journal: JournalState,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format_version: MANIFEST_VERSION,
            stages: BTreeMap::new(),
            journal: JournalState::default(),
        }
    }
}

/// The manifest's journal (`<manifest>.journal`, JSON lines): each finished shard is appended
/// there instead of rewriting the whole manifest, so that a build of S shards writes its records
/// in time linear in S, not quadratic. Every line names the SHA-256 of the manifest file it
/// extends: a journal left beside a newer manifest (a crash between rewriting the manifest and
/// removing the journal) is ignored. [`Manifest::load`] replays it; [`Manifest::save`] folds
/// it into the file and removes it, as every stage does when it ends, and as an append does
/// when the journal has grown past the manifest's size (so rewrites stay linear in total).
#[derive(Debug, Clone, Default)]
struct JournalState {
    /// SHA-256 of the manifest file as last read or written (`None`: not on disk yet).
    base: Option<String>,
    /// Size of that file.
    manifest_bytes: u64,
    /// Bytes of the valid journal (a torn last line is cut off at the next append).
    bytes: u64,
    /// Shards per stage that the file and the journal hold.
    saved: BTreeMap<String, usize>,
}

impl PartialEq for JournalState {
    /// Where a manifest is stored says nothing about what it records.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One journal line: a stage's record (every field but its shards) and its new shards.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalLine {
    base: String,
    stage: String,
    record: StageRecord,
}

/// Where the journal of the manifest at `path` lives.
fn journal_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    path.with_file_name(name)
}

/// One stage's record: the configuration it ran with, its inputs, its finished shards, totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    /// The stage's configuration (its serde form); re-runs must match it.
    pub config: Value,
    /// Version of cm3 that last wrote to this stage.
    pub tool_version: String,
    /// Inputs by source id, with a fingerprint of what was read.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputRecord>,
    /// Finished shards by name.
    #[serde(default)]
    pub shards: BTreeMap<String, ShardRecord>,
    /// Sums over `shards` (derived, rewritten on every save).
    #[serde(default)]
    pub totals: Totals,
    /// Shards added with [`StageRecord::insert_shard`] since the last save.
    #[serde(skip)]
    unsaved: Unsaved,
}

/// Names of shards not yet saved (never serialised, never compared).
#[derive(Debug, Clone, Default)]
struct Unsaved(Vec<String>);

impl PartialEq for Unsaved {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    /// The path as it was read.
    pub path: String,
    /// The source format (`webdataset`, `folder`, ...).
    pub format: String,
    /// Cheap fingerprint of the input (sizes and modification times of what it consists of).
    pub fingerprint: String,
    /// Number of records in the input, once a run has read it to the end; lets later runs skip an
    /// input whose shards are all finished without reading it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRecord {
    /// Output file, relative to the dataset root.
    pub file: String,
    /// Source id of the input this shard was made from.
    pub input: String,
    /// Index of this shard within its input.
    pub chunk: u32,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 (hex) of the output file.
    pub sha256: String,
    #[serde(default)]
    pub rejects: u64,
    /// Rejects file, relative to the dataset root, when there were rejects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejects_by_reason: BTreeMap<String, u64>,
    /// Stage-specific counts (e.g. `captions_repaired`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    /// What the shard was made from: for each upstream stage read, the SHA-256 of its shard of
    /// the same name at the time (see [`Manifest::check_fresh`]). Empty for the first stage and
    /// for records written before cm3 recorded it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub shards: u64,
    pub rows: u64,
    pub rejects: u64,
    pub bytes: u64,
    #[serde(default)]
    pub rejects_by_reason: BTreeMap<String, u64>,
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

impl StageRecord {
    pub fn new(config: Value) -> Self {
        Self {
            config,
            tool_version: crate::TOOL_VERSION.to_string(),
            inputs: BTreeMap::new(),
            shards: BTreeMap::new(),
            totals: Totals::default(),
            unsaved: Unsaved::default(),
        }
    }

    /// Records a finished shard; [`crate::DatasetDir::save_stage`] then appends it to the
    /// manifest's journal instead of rewriting the manifest. (A shard inserted into `shards`
    /// directly is saved too, by a whole rewrite.)
    pub fn insert_shard(&mut self, name: String, record: ShardRecord) {
        self.unsaved.0.push(name.clone());
        self.shards.insert(name, record);
    }

    fn clone_without_shards(&self) -> Self {
        Self {
            config: self.config.clone(),
            tool_version: self.tool_version.clone(),
            inputs: self.inputs.clone(),
            shards: BTreeMap::new(),
            totals: Totals::default(),
            unsaved: Unsaved::default(),
        }
    }

    fn add_to_totals(t: &mut Totals, s: &ShardRecord) {
        t.shards += 1;
        t.rows += s.rows;
        t.rejects += s.rejects;
        t.bytes += s.bytes;
        for (k, v) in &s.rejects_by_reason {
            *t.rejects_by_reason.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.counters {
            *t.counters.entry(k.clone()).or_default() += v;
        }
    }

    pub fn recompute_totals(&mut self) {
        let mut t = Totals::default();
        for s in self.shards.values() {
            Self::add_to_totals(&mut t, s);
        }
        self.totals = t;
    }

    /// Refuse to mix outputs made with another configuration.
    pub fn check_config(&self, stage: &str, dataset: &Path, config: &Value) -> Result<()> {
        if &self.config == config {
            return Ok(());
        }
        Err(CoreError::ConfigMismatch {
            stage: stage.to_string(),
            dataset: dataset.to_path_buf(),
            diff: config_diff(&self.config, config),
        })
    }

    /// Record an input, refusing one whose fingerprint changed since it was processed.
    pub fn check_input(&mut self, stage: &str, id: &str, input: InputRecord) -> Result<()> {
        match self.inputs.get(id) {
            Some(old) if old.fingerprint != input.fingerprint => Err(CoreError::InputChanged {
                stage: stage.to_string(),
                input: input.path,
                recorded: old.fingerprint.clone(),
                current: input.fingerprint,
            }),
            Some(_) => Ok(()),
            None => {
                self.inputs.insert(id.to_string(), input);
                Ok(())
            }
        }
    }
}

/// Human-readable differences between two configurations, one `key: recorded -> given` per line.
pub fn config_diff(recorded: &Value, given: &Value) -> String {
    let mut lines = Vec::new();
    match (recorded, given) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (a.get(k), b.get(k));
                if x != y {
                    let show = |v: Option<&Value>| {
                        v.map_or_else(|| "(absent)".to_string(), Value::to_string)
                    };
                    lines.push(format!("  {k}: recorded {} , given {}", show(x), show(y)));
                }
            }
        }
        _ => lines.push(format!("  recorded {recorded}, given {given}")),
    }
    lines.join("\n")
}

impl Manifest {
    /// The shards of `upstream` (the stage `stage` reads) that `stage` has not recorded yet and
    /// that `worker` owns (by name), with their position in the upstream's order.
    pub fn pending_shards(
        &self,
        upstream: &StageRecord,
        stage: &str,
        worker: &crate::WorkerSpec,
    ) -> Vec<(usize, String, ShardRecord)> {
        let done = self.stages.get(stage);
        upstream
            .shards
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| {
                worker.owns(name) && !done.is_some_and(|s| s.shards.contains_key(*name))
            })
            .map(|(slot, (name, rec))| (slot, name.clone(), rec.clone()))
            .collect()
    }

    /// Refuse shards of `stage`, or of a stage it was made from (followed through the records),
    /// whose upstream shard changed since they were made (e.g. `cm3 ingest --rebuild` wrote new
    /// pairs under the same shard names): their rows would describe other data. The error names
    /// the stage to rebuild.
    pub fn check_fresh(&self, stage: &str) -> Result<()> {
        let mut todo = vec![stage.to_string()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(st) = todo.pop() {
            if !seen.insert(st.clone()) {
                continue;
            }
            let Some(rec) = self.stages.get(&st) else {
                continue;
            };
            for (name, shard) in &rec.shards {
                for (up, recorded) in &shard.upstream {
                    let now = self
                        .stages
                        .get(up)
                        .and_then(|u| u.shards.get(name))
                        .map(|u| u.sha256.as_str());
                    if now != Some(recorded.as_str()) {
                        let short = |s: &str| s.chars().take(12).collect::<String>();
                        return Err(CoreError::Stale {
                            stage: st.clone(),
                            reason: format!(
                                "its shard {name} was made from `{up}` shard {name} (sha256 {}), \
                                 which is now {}",
                                short(recorded),
                                now.map_or_else(
                                    || "gone".to_string(),
                                    |n| format!("sha256 {}", short(n))
                                )
                            ),
                        });
                    }
                    todo.push(up.clone());
                }
            }
        }
        Ok(())
    }

    /// Load a manifest; `Ok(None)` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CoreError::io("reading", path, e)),
        };
        // Check the version before the strict parse so a newer layout gets a useful message.
        let raw: Value = serde_json::from_slice(&bytes).map_err(|source| CoreError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let found = raw
            .get("format_version")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        if found > MANIFEST_VERSION {
            return Err(CoreError::ManifestVersion {
                path: path.to_path_buf(),
                found,
                supported: MANIFEST_VERSION,
            });
        }
        let mut m: Self = serde_json::from_value(raw).map_err(|source| CoreError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        m.journal.base = Some(hex::encode(Sha256::digest(&bytes)));
        m.journal.manifest_bytes = bytes.len() as u64;
        m.replay_journal(path)?;
        m.check_names(path)?;
        m.journal.saved = m
            .stages
            .iter()
            .map(|(name, rec)| (name.clone(), rec.shards.len()))
            .collect();
        Ok(Some(m))
    }

    /// Applies the journal's lines that extend this manifest file (see [`JournalState`]).
    fn replay_journal(&mut self, path: &Path) -> Result<()> {
        let jpath = journal_path(path);
        let bytes = match fs::read(&jpath) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CoreError::io("reading", &jpath, e)),
        };
        let base = self.journal.base.clone().unwrap_or_default();
        let mut valid = 0usize;
        let mut touched = std::collections::BTreeSet::new();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if line.last() != Some(&b'\n') {
                // A line cut short by a crash: it was never acknowledged.
                break;
            }
            let entry: JournalLine =
                serde_json::from_slice(line).map_err(|source| CoreError::Json {
                    path: jpath.clone(),
                    source,
                })?;
            if entry.base != base {
                // Written against an older manifest file, already folded into this one (a
                // journal's lines all name one file; the next append starts over the rest).
                break;
            }
            let rec = self
                .stages
                .entry(entry.stage.clone())
                .or_insert_with(|| StageRecord::new(Value::Null));
            let mut shards = std::mem::take(&mut rec.shards);
            shards.extend(entry.record.shards);
            *rec = StageRecord {
                shards,
                ..entry.record
            };
            touched.insert(entry.stage);
            valid += line.len();
        }
        // Totals once per stage, not once per line (a line adds one shard; a sum over all of a
        // stage's shards per line would make replaying quadratic again).
        for stage in &touched {
            if let Some(rec) = self.stages.get_mut(stage) {
                rec.recompute_totals();
            }
        }
        self.journal.bytes = valid as u64;
        Ok(())
    }

    /// Saves the record of `stage` by appending its new shards (those added with
    /// [`StageRecord::insert_shard`]) to the journal; a whole rewrite ([`Manifest::save`]) when
    /// the file is not on disk yet, when shards were changed otherwise, or when the journal
    /// has grown past the manifest's size.
    pub fn save_stage_incremental(&mut self, path: &Path, stage: &str, tag: &str) -> Result<()> {
        let Some(base) = self.journal.base.clone() else {
            return self.save(path, tag);
        };
        let Some(rec) = self.stages.get(stage) else {
            return self.save(path, tag);
        };
        let saved = self.journal.saved.get(stage).copied().unwrap_or(0);
        let only_inserted = rec.shards.len() == saved + rec.unsaved.0.len()
            && rec.unsaved.0.iter().all(|n| rec.shards.contains_key(n));
        if !only_inserted || self.journal.bytes > self.journal.manifest_bytes.max(1 << 16) {
            return self.save(path, tag);
        }
        let mut record = rec.clone_without_shards();
        record.shards = rec
            .unsaved
            .0
            .iter()
            .filter_map(|n| rec.shards.get(n).map(|r| (n.clone(), r.clone())))
            .collect();
        let line = JournalLine {
            base,
            stage: stage.to_string(),
            record,
        };
        let jpath = journal_path(path);
        let mut bytes = serde_json::to_vec(&line).map_err(|source| CoreError::Json {
            path: jpath.clone(),
            source,
        })?;
        bytes.push(b'\n');
        crate::fsio::append_durably(&jpath, self.journal.bytes, &bytes)?;
        self.journal.bytes += bytes.len() as u64;
        if let Some(rec) = self.stages.get_mut(stage) {
            let new = std::mem::take(&mut rec.unsaved.0);
            for n in &new {
                if let Some(s) = rec.shards.get(n) {
                    StageRecord::add_to_totals(&mut rec.totals, s);
                }
            }
            self.journal
                .saved
                .insert(stage.to_string(), rec.shards.len());
        }
        Ok(())
    }

    /// Shard names become output paths (`embeddings/<name>`, `tokens/<name>.parquet`) and
    /// recorded files are read and removed: refuse any that would leave the dataset.
    fn check_names(&self, path: &Path) -> Result<()> {
        for (stage, rec) in &self.stages {
            for (name, shard) in &rec.shards {
                let at = |what: &str| format!("{}: stage `{stage}`: {what}", path.display());
                plain_name(name, &at("shard name"))?;
                relative_path(&shard.file, &at(&format!("file of shard {name}")))?;
                if let Some(r) = &shard.rejects_file {
                    relative_path(r, &at(&format!("rejects file of shard {name}")))?;
                }
            }
        }
        Ok(())
    }

    /// Save atomically (temporary file, fsync, rename), recomputing totals first.
    pub fn save(&mut self, path: &Path, tag: &str) -> Result<()> {
        for s in self.stages.values_mut() {
            s.recompute_totals();
        }
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|source| CoreError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        bytes.push(b'\n');
        let written = write_atomic(path, &bytes, tag)?;
        // The file now holds everything the journal did (a journal that survives a crash here
        // names the old file and is ignored).
        let jpath = journal_path(path);
        match fs::remove_file(&jpath) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CoreError::io("removing", &jpath, e)),
        }
        self.journal = JournalState {
            base: Some(written.sha256),
            manifest_bytes: written.bytes,
            bytes: 0,
            saved: self
                .stages
                .iter()
                .map(|(name, rec)| (name.clone(), rec.shards.len()))
                .collect(),
        };
        for rec in self.stages.values_mut() {
            rec.unsaved.0.clear();
        }
        Ok(())
    }

    /// Whether the journal holds records the manifest file does not.
    pub fn has_journal(&self) -> bool {
        self.journal.bytes > 0
    }

    /// Fold another manifest's records (a worker's) into this one. Configurations must agree, an
    /// input must have one fingerprint, and a shard recorded twice must be recorded identically.
    pub fn merge_from(&mut self, other: &Manifest, origin: &Path) -> Result<()> {
        let conflict = |reason: String| CoreError::Merge {
            path: origin.to_path_buf(),
            reason,
        };
        for (name, theirs) in &other.stages {
            let ours = self
                .stages
                .entry(name.clone())
                .or_insert_with(|| StageRecord::new(theirs.config.clone()));
            if ours.config != theirs.config {
                return Err(conflict(format!(
                    "stage `{name}` was run with a different configuration:\n{}",
                    config_diff(&ours.config, &theirs.config)
                )));
            }
            for (id, input) in &theirs.inputs {
                match ours.inputs.get_mut(id) {
                    Some(o) if o.fingerprint != input.fingerprint => {
                        return Err(conflict(format!(
                            "input {} has fingerprint {} here and {} in the worker manifest",
                            input.path, o.fingerprint, input.fingerprint
                        )));
                    }
                    Some(o) => o.records = o.records.or(input.records),
                    None => {
                        ours.inputs.insert(id.clone(), input.clone());
                    }
                }
            }
            for (shard, rec) in &theirs.shards {
                match ours.shards.get(shard) {
                    Some(o) if o != rec => {
                        return Err(conflict(format!(
                            "shard {shard} is recorded twice with different contents (sha256 {} vs {})",
                            o.sha256, rec.sha256
                        )));
                    }
                    Some(_) => {}
                    None => {
                        ours.shards.insert(shard.clone(), rec.clone());
                    }
                }
            }
            ours.tool_version = theirs.tool_version.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stale_shards_are_found_through_the_chain() {
        let mut m = Manifest::default();
        let stage = |shards: Vec<(&str, ShardRecord)>| {
            let mut r = StageRecord::new(json!({}));
            r.shards = shards
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect();
            r
        };
        let made_from = |sha: &str, up: &[(&str, &str)]| {
            let mut s = shard(1, sha);
            s.upstream = up
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            s
        };
        m.stages
            .insert("ingest".into(), stage(vec![("x", shard(1, "i1"))]));
        m.stages.insert(
            "tokenize".into(),
            stage(vec![("x", made_from("t1", &[("ingest", "i1")]))]),
        );
        m.stages.insert(
            "pack".into(),
            stage(vec![("x", made_from("", &[("tokenize", "t1")]))]),
        );
        assert!(m.check_fresh("pack").is_ok());
        // Ingest rewritten under the same name: tokenize is stale, and so is pack through it.
        m.stages
            .insert("ingest".into(), stage(vec![("x", shard(1, "i2"))]));
        for s in ["tokenize", "pack"] {
            let err = m.check_fresh(s).expect_err("stale").to_string();
            assert!(err.contains("stage `tokenize` is stale"), "{err}");
        }
        // Gone upstream shards are stale too; records without `upstream` (older cm3) are not
        // checked.
        m.stages.insert("ingest".into(), stage(vec![]));
        assert!(
            m.check_fresh("tokenize")
                .expect_err("gone")
                .to_string()
                .contains("gone")
        );
        m.stages
            .insert("tokenize".into(), stage(vec![("x", shard(1, "t1"))]));
        assert!(m.check_fresh("pack").is_ok());
    }

    fn shard(rows: u64, sha: &str) -> ShardRecord {
        ShardRecord {
            file: "pairs/x.parquet".into(),
            input: "src".into(),
            chunk: 0,
            rows,
            bytes: 10,
            sha256: sha.into(),
            rejects: 1,
            rejects_file: None,
            rejects_by_reason: [("corrupt-image".to_string(), 1)].into(),
            counters: BTreeMap::new(),
            upstream: BTreeMap::new(),
        }
    }

    #[test]
    fn save_load_roundtrip_and_totals() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("manifest.json");
        let mut m = Manifest::default();
        let mut st = StageRecord::new(json!({"image_size": 256}));
        st.shards.insert("a".into(), shard(5, "aa"));
        st.shards.insert("b".into(), shard(7, "bb"));
        m.stages.insert("ingest".into(), st);
        m.save(&path, "t")?;
        let back = Manifest::load(&path)?.expect("saved");
        let t = &back.stages["ingest"].totals;
        assert_eq!((t.shards, t.rows, t.rejects), (2, 12, 2));
        assert_eq!(t.rejects_by_reason["corrupt-image"], 2);
        assert_eq!(back, m);
        Ok(())
    }

    #[test]
    fn config_mismatch_names_the_key() {
        let st = StageRecord::new(json!({"image_size": 256, "jpeg_quality": 95}));
        let err = st
            .check_config(
                "ingest",
                Path::new("/d"),
                &json!({"image_size": 512, "jpeg_quality": 95}),
            )
            .expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains("image_size: recorded 256 , given 512"),
            "{msg}"
        );
        assert!(!msg.contains("jpeg_quality"), "{msg}");
        assert!(msg.contains("--rebuild"), "{msg}");
    }

    #[test]
    fn merge_unions_and_rejects_conflicts() -> Result<()> {
        let cfg = json!({"k": 1});
        let mut a = Manifest::default();
        let mut sa = StageRecord::new(cfg.clone());
        sa.shards.insert("s0".into(), shard(1, "x"));
        a.stages.insert("ingest".into(), sa);
        let mut b = Manifest::default();
        let mut sb = StageRecord::new(cfg.clone());
        sb.shards.insert("s0".into(), shard(1, "x"));
        sb.shards.insert("s1".into(), shard(2, "y"));
        b.stages.insert("ingest".into(), sb);
        a.merge_from(&b, Path::new("w1"))?;
        assert_eq!(a.stages["ingest"].shards.len(), 2);

        let mut c = Manifest::default();
        let mut sc = StageRecord::new(cfg);
        sc.shards.insert("s1".into(), shard(2, "DIFFERENT"));
        c.stages.insert("ingest".into(), sc);
        assert!(a.merge_from(&c, Path::new("w2")).is_err());

        let mut d = Manifest::default();
        d.stages
            .insert("ingest".into(), StageRecord::new(json!({"k": 2})));
        assert!(a.merge_from(&d, Path::new("w3")).is_err());
        Ok(())
    }

    #[test]
    fn names_that_leave_the_dataset_are_refused_on_load() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("manifest.json");
        for (name, file) in [
            ("../../x", "pairs/x.parquet"),
            ("a/b", "pairs/x.parquet"),
            ("ok", "/etc/passwd"),
            ("ok", "pairs/../../x"),
        ] {
            let mut m = Manifest::default();
            let mut st = StageRecord::new(json!({}));
            let mut rec = shard(1, "s");
            rec.file = file.into();
            st.shards.insert(name.into(), rec);
            m.stages.insert("ingest".into(), st);
            m.save(&path, "t")?;
            let err = Manifest::load(&path).expect_err("unsafe name");
            let msg = err.to_string();
            assert!(matches!(err, CoreError::UnsafeName { .. }), "{msg}");
            assert!(
                msg.contains("manifest.json") && msg.contains("ingest"),
                "{msg}"
            );
        }
        Ok(())
    }

    #[test]
    fn newer_manifest_is_refused_with_version_message() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("manifest.json");
        fs::write(
            &path,
            br#"{"format_version": 99, "stages": {}, "new_field": 1}"#,
        )
        .map_err(|e| CoreError::io("w", &path, e))?;
        let err = Manifest::load(&path).expect_err("must refuse");
        assert!(err.to_string().contains("format version 99"), "{err}");
        Ok(())
    }

    /// Shards saved one by one go to the journal; loading replays them; the journal is folded
    /// into the file often enough that rewrites stay linear in total (a few, not one a shard);
    /// `save` leaves the file alone holding everything.
    #[test]
    fn the_journal_holds_new_shards_and_rewrites_stay_few() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("manifest.json");
        let jpath = journal_path(&path);
        let mut m = Manifest::default();
        m.stages
            .insert("ingest".into(), StageRecord::new(json!({"k": 1})));
        m.save(&path, "t")?;
        let (mut rewrites, mut written) = (0usize, 0u64);
        let n = 3000;
        for i in 0..n {
            if let Some(rec) = m.stages.get_mut("ingest") {
                rec.insert_shard(format!("s{i:05}"), shard(i, &format!("{i:064}")));
                rec.inputs.insert(
                    "src".into(),
                    InputRecord {
                        path: "in".into(),
                        format: "folder".into(),
                        fingerprint: "f".into(),
                        records: Some(i),
                    },
                );
            }
            let journal_before = m.journal.bytes;
            m.save_stage_incremental(&path, "ingest", "t")?;
            if m.journal.bytes == 0 {
                rewrites += 1;
                written += m.journal.manifest_bytes;
            } else {
                written += m.journal.bytes - journal_before;
            }
            // What a crash at this moment leaves reads back as what was saved.
            if i % 997 == 0 || i + 1 == n {
                let loaded = Manifest::load(&path)?.expect("saved");
                assert_eq!(loaded, m, "after shard {i}");
                let rec = &loaded.stages["ingest"];
                assert_eq!(rec.totals.shards, i + 1);
                assert_eq!(rec.inputs["src"].records, Some(i));
            }
        }
        let final_bytes = m.journal.manifest_bytes.max(1);
        eprintln!(
            "{n} shards saved one by one: {rewrites} rewrites, {written} bytes written for a \
             {final_bytes}-byte manifest and a {}-byte journal",
            m.journal.bytes
        );
        assert!(rewrites <= 16, "{rewrites} rewrites for {n} shards");
        // Linear: everything written is a small multiple of what the manifest finally holds.
        assert!(
            written < 4 * (final_bytes + m.journal.bytes),
            "{written} bytes written for a {final_bytes}-byte manifest"
        );
        assert!(jpath.exists() && m.has_journal());
        m.save(&path, "t")?;
        assert!(!jpath.exists() && !m.has_journal());
        assert_eq!(Manifest::load(&path)?.expect("saved"), m);
        Ok(())
    }

    /// A line cut short by a crash is ignored and cut off by the next append; a journal left
    /// beside a newer manifest file (already folded in) is ignored; a damaged complete line is
    /// an error naming the journal.
    #[test]
    fn torn_stale_and_damaged_journals() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("manifest.json");
        let jpath = journal_path(&path);
        let mut m = Manifest::default();
        m.stages
            .insert("tokenize".into(), StageRecord::new(json!({})));
        m.save(&path, "t")?;
        for i in 0..3 {
            if let Some(rec) = m.stages.get_mut("tokenize") {
                rec.insert_shard(format!("s{i}"), shard(1, "x"));
            }
            m.save_stage_incremental(&path, "tokenize", "t")?;
        }
        let good = fs::read(&jpath).map_err(|e| CoreError::io("reading", &jpath, e))?;
        // Torn: half of a fourth line.
        let mut torn = good.clone();
        torn.extend_from_slice(&good[..good.len() / 6]);
        fs::write(&jpath, &torn).map_err(|e| CoreError::io("writing", &jpath, e))?;
        let mut loaded = Manifest::load(&path)?.expect("saved");
        assert_eq!(loaded.stages["tokenize"].shards.len(), 3);
        if let Some(rec) = loaded.stages.get_mut("tokenize") {
            rec.insert_shard("s3".into(), shard(1, "x"));
        }
        loaded.save_stage_incremental(&path, "tokenize", "t")?;
        assert_eq!(
            Manifest::load(&path)?.expect("saved").stages["tokenize"]
                .shards
                .len(),
            4
        );

        // Stale: the manifest rewritten (here by hand, as a crash between the rewrite and the
        // journal's removal leaves it) without shard s3; the journal names the old file.
        let journal = fs::read(&jpath).map_err(|e| CoreError::io("reading", &jpath, e))?;
        let mut fresh = Manifest::default();
        fresh
            .stages
            .insert("tokenize".into(), StageRecord::new(json!({"other": 1})));
        fresh.save(&path, "t")?;
        fs::write(&jpath, &journal).map_err(|e| CoreError::io("writing", &jpath, e))?;
        let reloaded = Manifest::load(&path)?.expect("saved");
        assert!(reloaded.stages["tokenize"].shards.is_empty());

        // Damaged: a complete line that is not a record.
        let mut m = Manifest::load(&path)?.expect("saved");
        if let Some(rec) = m.stages.get_mut("tokenize") {
            rec.insert_shard("s0".into(), shard(1, "x"));
        }
        m.save_stage_incremental(&path, "tokenize", "t")?;
        let mut bad = fs::read(&jpath).map_err(|e| CoreError::io("reading", &jpath, e))?;
        bad.extend_from_slice(b"{not json}\n");
        fs::write(&jpath, &bad).map_err(|e| CoreError::io("writing", &jpath, e))?;
        let err = Manifest::load(&path).expect_err("a damaged journal");
        assert!(err.to_string().contains("manifest.json.journal"), "{err}");
        Ok(())
    }

    /// A shard replaced in place (not through `insert_shard`) is saved by a whole rewrite, never
    /// lost.
    #[test]
    fn changes_outside_insert_shard_rewrite_the_file() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("manifest.json");
        let mut m = Manifest::default();
        m.stages.insert("embed".into(), StageRecord::new(json!({})));
        m.save(&path, "t")?;
        if let Some(rec) = m.stages.get_mut("embed") {
            rec.shards.insert("a".into(), shard(1, "x"));
        }
        m.save_stage_incremental(&path, "embed", "t")?;
        assert!(!journal_path(&path).exists());
        assert_eq!(Manifest::load(&path)?.expect("saved"), m);
        Ok(())
    }
}
