//! The leakage guard: evaluation images must be neither training pairs nor in the memory bank
//! retrieval draws from at inference. cm3 stores each pair's image normalised (resized,
//! centre-cropped, re-encoded by `cm3 ingest`) with the SHA-256 of those bytes; an evaluation
//! image is normalised with the dataset's own recorded ingest settings and its hash looked up.
//! An exact match is what this catches: the same picture re-encoded elsewhere (another size,
//! another JPEG quality) is not.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::{StringArray, UInt64Array};
use cm3_core::DatasetDir;
use cm3_core::schema::{column, read_columns};
use cm3_ingest::IngestConfig;
use cm3_ingest::normalize::normalize_image;
use serde::Serialize;

use crate::error::{EvalError, Result};

/// Largest evaluation image read (bytes): larger files are refused, not allocated.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// An evaluation image found among the dataset's pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlap {
    /// The evaluation image's id (as the evaluation names it) and file.
    pub eval_id: String,
    pub file: PathBuf,
    /// The dataset pair holding the same normalised image.
    pub pair_id: String,
}

/// What the guard found, as the report records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakageReport {
    pub checked: usize,
    pub overlaps: Vec<Overlap>,
    /// True when the user accepted overlaps (`--allow-overlap`).
    pub accepted: bool,
}

/// The normalised-image hashes of a dataset's pairs, with the settings that produced them.
#[derive(Debug)]
pub struct LeakageGuard {
    dataset: PathBuf,
    ingest: IngestConfig,
    by_hash: HashMap<String, u64>,
}

/// SFT directories built on SFT directories: a bound on the chain followed.
const MAX_SFT_DEPTH: usize = 8;

impl LeakageGuard {
    /// The pairs of `dataset`; for an SFT directory (`cm3 sft build`), its images and those of
    /// the pretrained dataset it was built from (the model has been trained on both).
    pub fn for_dataset(dataset: &Path) -> Result<Self> {
        Self::for_dataset_at(dataset, 0)
    }

    fn for_dataset_at(dataset: &Path, depth: usize) -> Result<Self> {
        let record = dataset.join(cm3_sft::build::SFT_RECORD);
        if record.is_file() {
            return Self::for_sft(dataset, &record, depth);
        }
        let ds = DatasetDir::open(dataset).map_err(|e| {
            EvalError::input(dataset.display().to_string(), format!("not a dataset: {e}"))
        })?;
        let manifest = ds
            .load_manifest()
            .map_err(|e| EvalError::input(dataset.display().to_string(), e.to_string()))?;
        let rec = manifest.stages.get(cm3_ingest::STAGE).ok_or_else(|| {
            EvalError::input(
                dataset.display().to_string(),
                "has no ingested pairs to check evaluation images against",
            )
        })?;
        let ingest: IngestConfig = serde_json::from_value(rec.config.clone()).map_err(|e| {
            EvalError::input(
                format!("{}/manifest.json", dataset.display()),
                format!("the recorded ingest settings do not parse: {e}"),
            )
        })?;
        let mut by_hash = HashMap::new();
        for shard in rec.shards.values() {
            let path = ds.path(&shard.file);
            let batches = read_columns(&path, &["id", "sha256"])
                .map_err(|e| EvalError::input(path.display().to_string(), e.to_string()))?;
            for b in batches {
                let (Some(id), Some(sha)) = (
                    column::<UInt64Array>(&b, "id"),
                    column::<StringArray>(&b, "sha256"),
                ) else {
                    return Err(EvalError::input(
                        path.display().to_string(),
                        "columns id/sha256 have unexpected types",
                    ));
                };
                for i in 0..b.num_rows() {
                    by_hash.insert(sha.value(i).to_string(), id.value(i));
                }
            }
        }
        Ok(Self {
            dataset: dataset.to_path_buf(),
            ingest,
            by_hash,
        })
    }

    fn for_sft(dataset: &Path, record: &Path, depth: usize) -> Result<Self> {
        let bad = |reason: String| EvalError::input(record.display().to_string(), reason);
        if depth >= MAX_SFT_DEPTH {
            return Err(bad(format!(
                "more than {MAX_SFT_DEPTH} SFT directories built on each other"
            )));
        }
        let v: serde_json::Value = crate::files::read_json(record, 64 << 20)?;
        if v["format"] != cm3_sft::build::SFT_FORMAT {
            return Err(bad(format!(
                "format {}, not {}",
                v["format"],
                cm3_sft::build::SFT_FORMAT
            )));
        }
        let pretrained = v["pretrained_dataset"]
            .as_str()
            .ok_or_else(|| bad("no pretrained_dataset".into()))?;
        let mut guard = Self::for_dataset_at(Path::new(pretrained), depth + 1)?;
        let list = dataset.join(cm3_sft::build::SFT_IMAGES);
        let bytes = crate::files::read_bounded(&list, 4 << 30)?;
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.is_empty()) {
            let sha = line.split('\t').next().unwrap_or_default();
            // Its id: the key `cm3 sft build` records (the hash's first 64 bits).
            guard
                .by_hash
                .insert(sha.to_string(), cm3_augment::bank::image_key(sha));
        }
        guard.dataset = dataset.to_path_buf();
        Ok(guard)
    }

    /// Number of distinct pair images known.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The dataset pair holding this image file, if any. An image the ingest settings reject
    /// (corrupt, too small) cannot be a pair: `None`.
    pub fn find(&self, file: &Path) -> Result<Option<u64>> {
        let bytes = crate::files::read_bounded(file, MAX_IMAGE_BYTES)?;
        Ok(match normalize_image(&bytes, &self.ingest) {
            Ok(img) => self.by_hash.get(&img.sha256).copied(),
            Err(_) => None,
        })
    }

    /// Check every (id, file); with `accept` false any overlap is an error listing them.
    pub fn check(&self, images: &[(String, PathBuf)], accept: bool) -> Result<LeakageReport> {
        let mut overlaps = Vec::new();
        for (id, file) in images {
            if let Some(pair) = self.find(file)? {
                overlaps.push(Overlap {
                    eval_id: id.clone(),
                    file: file.clone(),
                    pair_id: format!("{pair:016x}"),
                });
            }
        }
        if !overlaps.is_empty() && !accept {
            let shown: Vec<String> = overlaps
                .iter()
                .take(20)
                .map(|o| format!("{} (pair {})", o.eval_id, o.pair_id))
                .collect();
            return Err(EvalError::input(
                self.dataset.display().to_string(),
                format!(
                    "{} of the {} evaluation images are pairs of this dataset (trained on and in \
                     its memory bank): {}{}; evaluate on held-out images, or pass \
                     --allow-overlap to accept it (recorded in the report)",
                    overlaps.len(),
                    images.len(),
                    shown.join(", "),
                    if overlaps.len() > 20 { ", ..." } else { "" }
                ),
            ));
        }
        Ok(LeakageReport {
            checked: images.len(),
            overlaps,
            accepted: accept,
        })
    }
}
