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
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format_version: MANIFEST_VERSION,
            stages: BTreeMap::new(),
        }
    }
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
        }
    }

    pub fn recompute_totals(&mut self) {
        let mut t = Totals::default();
        for s in self.shards.values() {
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
        let m: Self = serde_json::from_value(raw).map_err(|source| CoreError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        m.check_names(path)?;
        Ok(Some(m))
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
        write_atomic(path, &bytes, tag)?;
        Ok(())
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
}
