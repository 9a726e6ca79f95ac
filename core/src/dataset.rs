//! The dataset directory: its layout, its lock, and how worker processes share it.
//!
//! ```text
//! <dataset>/manifest.json                 merged record of every stage
//! <dataset>/manifest.d/<stage>.wIofN.json a worker's record, until `cm3 manifest merge`
//! <dataset>/pairs/*.parquet               ingest output
//! <dataset>/rejects/*.jsonl               every input that did not become a row, with a reason
//! ```
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::manifest::{Manifest, StageRecord};

/// Which share of the work this process does: shards are numbered, and worker `worker_index` of
/// `num_workers` takes the shards whose number is `worker_index` modulo `num_workers`. The same
/// command with `--worker-index $SLURM_ARRAY_TASK_ID` (or `$JOB_COMPLETION_INDEX`) splits a stage
/// across machines; `cm3 manifest merge` then combines the workers' records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub num_workers: u32,
    pub worker_index: u32,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        Self {
            num_workers: 1,
            worker_index: 0,
        }
    }
}

impl WorkerSpec {
    pub fn new(num_workers: u32, worker_index: u32) -> Result<Self> {
        if num_workers == 0 {
            return Err(CoreError::Workers(
                "--num-workers must be at least 1".into(),
            ));
        }
        if worker_index >= num_workers {
            return Err(CoreError::Workers(format!(
                "--worker-index {worker_index} is out of range for --num-workers {num_workers} (0..{})",
                num_workers - 1
            )));
        }
        Ok(Self {
            num_workers,
            worker_index,
        })
    }

    pub fn is_split(&self) -> bool {
        self.num_workers > 1
    }

    /// Does this worker own the shard named `name`? By a hash of the name (FNV-1a), not its
    /// position in a list, so that shards added between runs never move between workers.
    pub fn owns(&self, name: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h % u64::from(self.num_workers) == u64::from(self.worker_index)
    }

    /// Tag for temporary files and worker manifests.
    pub fn tag(&self) -> String {
        format!("w{}of{}", self.worker_index, self.num_workers)
    }
}

/// A dataset directory.
#[derive(Debug, Clone)]
pub struct DatasetDir {
    root: PathBuf,
}

/// Held while a stage writes into the dataset; released on drop.
#[derive(Debug)]
pub struct DatasetLock {
    _files: Vec<File>,
}

impl DatasetDir {
    /// Create the directory if needed. An existing directory without a manifest becomes a
    /// dataset only if it holds none of the folders ingest writes into (`pairs/`, `rejects/`):
    /// cm3 replaces files there, so they must be its own.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| CoreError::io("creating dataset directory", &root, e))?;
        let d = Self { root };
        if !d.manifest_path().exists() && d.worker_manifests()?.is_empty() {
            for sub in ["pairs", "rejects"] {
                let p = d.root.join(sub);
                if fs::symlink_metadata(&p).is_ok() {
                    return Err(CoreError::NotOurs {
                        path: d.root.clone(),
                        reason: format!(
                            "holds `{sub}` but no manifest.json, so it is not a cm3 dataset and \
                             cm3 will not write into (or delete) {}; choose a new or empty directory",
                            p.display()
                        ),
                    });
                }
            }
        }
        Ok(d)
    }

    /// Open an existing dataset (one with a manifest).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let d = Self { root };
        if !d.manifest_path().is_file() && d.worker_manifests()?.is_empty() {
            return Err(CoreError::NotADataset { path: d.root });
        }
        Ok(d)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    pub fn worker_manifest_dir(&self) -> PathBuf {
        self.root.join("manifest.d")
    }
    pub fn worker_manifest_path(&self, stage: &str, worker: &WorkerSpec) -> PathBuf {
        self.worker_manifest_dir()
            .join(format!("{stage}.{}.json", worker.tag()))
    }
    /// Path of a file given relative to the root (as recorded in the manifest).
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Lock the dataset for a stage run. A single process takes the dataset exclusively; workers
    /// share it with each other but each holds its own worker lock, and exclude single-process runs
    /// and merges. (Advisory `flock` locks: they protect one machine and most shared filesystems.)
    pub fn lock(&self, stage: &str, worker: &WorkerSpec) -> Result<DatasetLock> {
        let main = self.open_lock_file(&self.root.join(".cm3.lock"))?;
        let what = |w: &str| format!("{w} of stage `{stage}`");
        if worker.is_split() {
            try_lock(
                &main,
                true,
                &self.root,
                what("a single-process run or merge"),
            )?;
            fs::create_dir_all(self.worker_manifest_dir())
                .map_err(|e| CoreError::io("creating directory", self.worker_manifest_dir(), e))?;
            self.refuse_mixed_split(stage, worker)?;
            let wpath = self
                .worker_manifest_dir()
                .join(format!("{stage}.{}.lock", worker.tag()));
            let wfile = self.open_lock_file(&wpath)?;
            try_lock(
                &wfile,
                false,
                &wpath,
                what(&format!("worker {}", worker.worker_index)),
            )?;
            Ok(DatasetLock {
                _files: vec![main, wfile],
            })
        } else {
            try_lock(&main, false, &self.root, what("another run"))?;
            Ok(DatasetLock { _files: vec![main] })
        }
    }

    /// Workers of one stage must all split it the same way: a record or lock of this stage
    /// from workers started with another `--num-workers` (not yet merged) is refused, since
    /// the two splits would own overlapping shards.
    fn refuse_mixed_split(&self, stage: &str, worker: &WorkerSpec) -> Result<()> {
        let dir = self.worker_manifest_dir();
        let entries = fs::read_dir(&dir).map_err(|e| CoreError::io("listing", &dir, e))?;
        let prefix = format!("{stage}.w");
        for e in entries {
            let name = e
                .map_err(|e| CoreError::io("listing", &dir, e))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            // `<stage>.w<i>of<n>.json` or `.lock`
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Some(tag) = rest
                .strip_suffix(".json")
                .or_else(|| rest.strip_suffix(".lock"))
            else {
                continue;
            };
            let Some(n) = tag
                .split_once("of")
                .and_then(|(_, n)| n.parse::<u32>().ok())
            else {
                continue;
            };
            if n != worker.num_workers {
                return Err(CoreError::Workers(format!(
                    "stage `{stage}` of {} is being split across {n} workers ({}); this worker \
                     was started with --num-workers {}: finish that split with {n} workers and \
                     `cm3 manifest merge`, or remove its unmerged records first",
                    self.root.display(),
                    dir.join(&name).display(),
                    worker.num_workers
                )));
            }
        }
        Ok(())
    }

    fn open_lock_file(&self, path: &Path) -> Result<File> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| CoreError::io("opening lock file", path, e))
    }

    /// The merged manifest (empty when the dataset is new).
    pub fn load_manifest(&self) -> Result<Manifest> {
        Ok(Manifest::load(&self.manifest_path())?.unwrap_or_default())
    }

    /// Worker manifests not yet merged.
    pub fn worker_manifests(&self) -> Result<Vec<PathBuf>> {
        let dir = self.worker_manifest_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CoreError::io("listing", &dir, e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let p = e.map_err(|e| CoreError::io("listing", &dir, e))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The state a stage run starts from: the merged manifest, plus (for a worker) its own
    /// unmerged record. A single-process run refuses to start while worker records are unmerged,
    /// because it could redo their shards.
    pub fn load_stage_state(&self, stage: &str, worker: &WorkerSpec) -> Result<Manifest> {
        let mut m = self.load_manifest()?;
        if worker.is_split() {
            let wpath = self.worker_manifest_path(stage, worker);
            if let Some(own) = Manifest::load(&wpath)? {
                m.merge_from(&own, &wpath)?;
            }
        } else {
            let pending: Vec<_> = self
                .worker_manifests()?
                .into_iter()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{stage}.")))
                })
                .collect();
            if let Some(p) = pending.first() {
                return Err(CoreError::Merge {
                    path: p.clone(),
                    reason: format!(
                        "{} unmerged worker manifest(s) for stage `{stage}`: run `cm3 manifest merge {}` first",
                        pending.len(),
                        self.root.display()
                    ),
                });
            }
        }
        Ok(m)
    }

    /// Persist a stage's record: into `manifest.json` for a single process (its new shards
    /// appended to the manifest's journal: see [`Manifest::save_stage_incremental`]), or into the
    /// worker's own manifest file (holding only that stage) for a worker.
    pub fn save_stage(
        &self,
        manifest: &mut Manifest,
        stage: &str,
        worker: &WorkerSpec,
    ) -> Result<()> {
        if worker.is_split() {
            let Some(rec) = manifest.stages.get(stage) else {
                return Ok(());
            };
            let mut own = Manifest::default();
            own.stages.insert(stage.to_string(), rec.clone());
            own.save(&self.worker_manifest_path(stage, worker), &worker.tag())
        } else {
            manifest.save_stage_incremental(&self.manifest_path(), stage, &worker.tag())
        }
    }

    /// Folds the manifest's journal into `manifest.json` (see [`Manifest::save`]): what every
    /// stage does when it ends, so that the file alone is the whole record between runs.
    pub fn finish_stage(&self, manifest: &mut Manifest, worker: &WorkerSpec) -> Result<()> {
        if !worker.is_split() && manifest.has_journal() {
            manifest.save(&self.manifest_path(), &worker.tag())?;
        }
        Ok(())
    }

    /// Combine all worker manifests into `manifest.json`, then remove them. Idempotent: a crash
    /// between the write and the removal merges the same records again on the next call.
    pub fn merge_workers(&self) -> Result<MergeReport> {
        let _lock = self.lock("merge", &WorkerSpec::default())?;
        let mut m = self.load_manifest()?;
        let files = self.worker_manifests()?;
        let mut report = MergeReport::default();
        for f in &files {
            let Some(w) = Manifest::load(f)? else {
                continue;
            };
            let before: usize = m.stages.values().map(|s| s.shards.len()).sum();
            m.merge_from(&w, f)?;
            let after: usize = m.stages.values().map(|s| s.shards.len()).sum();
            report.files += 1;
            report.new_shards += after - before;
        }
        if files.is_empty() {
            return Ok(report);
        }
        m.save(&self.manifest_path(), "merge")?;
        for f in &files {
            fs::remove_file(f)
                .map_err(|e| CoreError::io("removing merged worker manifest", f, e))?;
            let lock = f.with_extension("lock");
            let _ = fs::remove_file(lock);
        }
        Ok(report)
    }

    /// Forget a stage and delete the files its record names (what `--rebuild` does, once every
    /// check of the new run has passed), then this writer's temporaries and the folders left
    /// empty in its output folder. Files the record does not name stay: cm3 deletes only what it
    /// recorded writing. The manifest is saved without the stage first, so a crash in between
    /// leaves stale files the stage no longer claims, never claimed files that are gone.
    pub fn discard_stage(
        &self,
        manifest: &mut Manifest,
        stage: &str,
        output: &str,
        tag: &str,
    ) -> Result<()> {
        if let Some(rec) = manifest.stages.remove(stage) {
            manifest.save(&self.manifest_path(), tag)?;
            self.remove_recorded(&rec)?;
        }
        let dir = self.path(output);
        crate::fsio::remove_stale_tmp(&dir, tag)?;
        remove_empty_dirs(&dir)?;
        Ok(())
    }

    /// Remove every file (or folder, as a stage may record one) that `rec`'s shards name.
    pub fn remove_recorded(&self, rec: &StageRecord) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (name, shard) in &rec.shards {
            let files = std::iter::once(&shard.file).chain(shard.rejects_file.as_ref());
            for rel in files {
                let what = format!("file recorded for shard {name}");
                let rel = crate::names::relative_path(rel, &what)?;
                if !seen.insert(rel) {
                    continue;
                }
                let p = self.root.join(rel);
                let r = match fs::symlink_metadata(&p) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(CoreError::io("inspecting", &p, e)),
                    Ok(md) if md.is_dir() => fs::remove_dir_all(&p),
                    Ok(_) => fs::remove_file(&p),
                };
                r.map_err(|e| CoreError::io("removing", &p, e))?;
            }
        }
        Ok(())
    }

    /// A stage's record, creating it with `config` if absent; refuses a different config.
    pub fn stage_record<'m>(
        &self,
        manifest: &'m mut Manifest,
        stage: &str,
        config: &serde_json::Value,
    ) -> Result<&'m mut StageRecord> {
        let rec = manifest
            .stages
            .entry(stage.to_string())
            .or_insert_with(|| StageRecord::new(config.clone()));
        if rec.shards.is_empty() && &rec.config != config {
            // Nothing was made with the old configuration (a run that failed early): nothing to mix.
            *rec = StageRecord::new(config.clone());
        }
        rec.check_config(stage, &self.root, config)?;
        rec.tool_version = crate::TOOL_VERSION.to_string();
        Ok(rec)
    }
}

/// What `merge_workers` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeReport {
    pub files: usize,
    pub new_shards: usize,
}

/// Lock a directory that is not a dataset (a training run) for one process, with the flock a
/// dataset uses (`<dir>/.cm3.lock`). The holder writes who it is into the lock file, so that a
/// refused process can name it (`pid 123 on host h`); the lock is released on drop, or when the
/// holder dies.
pub fn lock_dir(dir: &Path, what: &str) -> Result<DatasetLock> {
    use std::io::Write;
    let path = dir.join(".cm3.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| CoreError::io("opening lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            // Written by the holder just after it locked; empty only in that instant.
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => "holder unknown".to_string(),
                h => format!("held by {h}"),
            };
            return Err(CoreError::Locked {
                path: dir.to_path_buf(),
                what: format!("{what}, {holder}"),
            });
        }
        Err(TryLockError::Error(e)) => return Err(CoreError::io("locking", &path, e)),
    }
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| format!(" on host {}", h.trim()))
        .unwrap_or_default();
    let holder = format!("pid {}{host}\n", std::process::id());
    // Who holds it is only for the refusal message: a failure to record it is not an error.
    let _ = file.set_len(0);
    let _ = (&file).write_all(holder.as_bytes());
    Ok(DatasetLock { _files: vec![file] })
}

/// Remove `dir` and the folders below it that are empty (bottom-up); folders holding anything
/// stay. Links are not followed.
pub fn remove_empty_dirs(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CoreError::io("listing", dir, e)),
    };
    for e in entries {
        let e = e.map_err(|e| CoreError::io("listing", dir, e))?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&e.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        // Not empty (the error kind varies by platform): it holds something that stays.
        Err(_) if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) => Ok(()),
        Err(e) => Err(CoreError::io("removing", dir, e)),
    }
}

fn try_lock(file: &File, shared: bool, path: &Path, what: String) -> Result<()> {
    let r = if shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match r {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(CoreError::Locked {
            path: path.to_path_buf(),
            what,
        }),
        Err(TryLockError::Error(e)) => Err(CoreError::io("locking", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn worker_spec_partitions_slots() -> Result<()> {
        let ws: Vec<WorkerSpec> = (0..3)
            .map(|i| WorkerSpec::new(3, i))
            .collect::<Result<_>>()?;
        let mut counts = [0usize; 3];
        for slot in 0..300u64 {
            let name = format!("pairs-3f2a9c1e-{slot:05}");
            let owners: Vec<usize> = (0..3).filter(|&i| ws[i].owns(&name)).collect();
            assert_eq!(owners.len(), 1, "{name}");
            counts[owners[0]] += 1;
        }
        // Spread: each worker gets a fair share of 300 shards.
        assert!(
            counts.iter().all(|&c| (70..=130).contains(&c)),
            "{counts:?}"
        );
        assert!(WorkerSpec::new(3, 3).is_err());
        assert!(WorkerSpec::new(0, 0).is_err());
        Ok(())
    }

    #[test]
    fn a_folder_with_pairs_but_no_manifest_is_not_adopted() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let pairs = dir.path().join("pairs");
        fs::create_dir(&pairs).map_err(|e| CoreError::io("mkdir", &pairs, e))?;
        let err = DatasetDir::create(dir.path()).expect_err("not a dataset");
        assert!(matches!(err, CoreError::NotOurs { .. }), "{err}");
        assert!(err.to_string().contains("manifest.json"), "{err}");
        // An empty folder, or one with unrelated files, may become a dataset.
        let other = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let cfg = other.path().join("build.toml");
        fs::write(&cfg, b"").map_err(|e| CoreError::io("w", &cfg, e))?;
        DatasetDir::create(other.path())?;
        Ok(())
    }

    #[test]
    fn discard_removes_only_recorded_files() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let d = DatasetDir::create(dir.path())?;
        let out = dir.path().join("tokens");
        fs::create_dir_all(out.join("rejects")).map_err(|e| CoreError::io("mkdir", &out, e))?;
        for f in [
            "tokens/a.parquet",
            "tokens/rejects/a.jsonl",
            "tokens/mine.txt",
        ] {
            let p = dir.path().join(f);
            fs::write(&p, b"x").map_err(|e| CoreError::io("w", &p, e))?;
        }
        let mut m = Manifest::default();
        let mut rec = StageRecord::new(json!({}));
        rec.shards.insert(
            "a".into(),
            crate::ShardRecord {
                file: "tokens/a.parquet".into(),
                input: "a".into(),
                chunk: 0,
                rows: 1,
                bytes: 1,
                sha256: "h".into(),
                rejects: 1,
                rejects_file: Some("tokens/rejects/a.jsonl".into()),
                rejects_by_reason: Default::default(),
                counters: Default::default(),
                upstream: Default::default(),
            },
        );
        m.stages.insert("tokenize".into(), rec);
        d.discard_stage(&mut m, "tokenize", "tokens", "w0of1")?;
        assert!(!out.join("a.parquet").exists() && !out.join("rejects").exists());
        assert!(
            out.join("mine.txt").is_file(),
            "a file cm3 did not record stays"
        );
        assert!(d.load_manifest()?.stages.is_empty());
        Ok(())
    }

    #[test]
    fn exclusive_lock_refuses_second_run() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let d = DatasetDir::create(dir.path())?;
        let _held = d.lock("ingest", &WorkerSpec::default())?;
        let err = d
            .lock("ingest", &WorkerSpec::default())
            .expect_err("second lock");
        assert!(matches!(err, CoreError::Locked { .. }), "{err}");
        // Workers are excluded too while a single-process run holds the dataset.
        assert!(d.lock("ingest", &WorkerSpec::new(2, 0)?).is_err());
        Ok(())
    }

    #[test]
    fn a_locked_directory_names_its_holder_and_is_released_on_drop() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let held = lock_dir(dir.path(), "training run")?;
        let err = lock_dir(dir.path(), "training run").expect_err("second lock");
        let msg = err.to_string();
        assert!(matches!(err, CoreError::Locked { .. }), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!("held by pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        lock_dir(dir.path(), "training run")?;
        Ok(())
    }

    #[test]
    fn workers_share_and_merge() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let d = DatasetDir::create(dir.path())?;
        let cfg = json!({"a": 1});
        for i in 0..2 {
            let w = WorkerSpec::new(2, i)?;
            let _l = d.lock("ingest", &w)?;
            let mut m = d.load_stage_state("ingest", &w)?;
            let rec = d.stage_record(&mut m, "ingest", &cfg)?;
            rec.shards.insert(
                format!("s{i}"),
                crate::ShardRecord {
                    file: format!("pairs/s{i}.parquet"),
                    input: "x".into(),
                    chunk: i,
                    rows: 3,
                    bytes: 1,
                    sha256: "h".into(),
                    rejects: 0,
                    rejects_file: None,
                    rejects_by_reason: Default::default(),
                    counters: Default::default(),
                    upstream: Default::default(),
                },
            );
            d.save_stage(&mut m, "ingest", &w)?;
        }
        // A single-process run must not start before the merge.
        assert!(
            d.load_stage_state("ingest", &WorkerSpec::default())
                .is_err()
        );
        let r = d.merge_workers()?;
        assert_eq!(
            r,
            MergeReport {
                files: 2,
                new_shards: 2
            }
        );
        let m = d.load_stage_state("ingest", &WorkerSpec::default())?;
        assert_eq!(m.stages["ingest"].totals.rows, 6);
        assert!(d.worker_manifests()?.is_empty());
        Ok(())
    }
}
