//! Input sources. Each yields [`RawRecord`]s in a deterministic order; the engine numbers them and
//! cuts the sequence into shards, so a source never needs to know about shards.
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{IngestConfig, InputFormat};
use crate::error::{IngestError, Result};
use crate::normalize::Rejection;

pub mod coco;
pub mod folder;
pub mod listing;
pub mod table;
pub mod webdataset;

/// Extensions read as images (lower-case).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

pub fn is_image_ext(ext: &str) -> bool {
    IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
}

/// The rejection of a file named by an input that is a symbolic link, unless the configuration
/// follows links (`follow_symlinks`).
pub fn link_refused(path: &Path, cfg: &IngestConfig) -> Option<Rejection> {
    let link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    (link && !cfg.follow_symlinks).then(|| {
        Rejection::new(
            crate::normalize::RejectReason::UnsafePath,
            format!(
                "{} is a symbolic link; cm3 does not follow links named by an input unless \
                 asked (--follow-symlinks)",
                path.display()
            ),
        )
    })
}

/// The rejection of an image path from a manifest or COCO file (`rel`, joined to `base`) that
/// leaves `base` (absolute elsewhere, or through `..`), unless `allow_outside_paths`.
pub fn outside_refused(base: &Path, rel: &str, cfg: &IngestConfig) -> Option<Rejection> {
    let p = Path::new(rel);
    let inside = if p.is_absolute() {
        p.starts_with(base) && !p.components().any(|c| c == std::path::Component::ParentDir)
    } else {
        !p.components().any(|c| c == std::path::Component::ParentDir)
    };
    (!inside && !cfg.allow_outside_paths).then(|| {
        Rejection::new(
            crate::normalize::RejectReason::UnsafePath,
            format!(
                "image path {rel:?} leaves {} (absolute or through ..); pass \
                 --allow-outside-paths to read it",
                base.display()
            ),
        )
    })
}

/// Where a record's image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageData {
    Bytes(Vec<u8>),
    /// Read by the decoding thread, so file reads run in parallel.
    Path(PathBuf),
    /// Not loaded: the record belongs to a shard this run does not make.
    Skipped,
}

/// One caption of a record, with the key of the pair it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCaption {
    pub key: String,
    pub text: Vec<u8>,
    /// Further captions of the same image, kept in `alt_captions` (COCO per-image mode).
    pub alt: Vec<Vec<u8>>,
}

/// An image with its captions and metadata, as read from a source, before any validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Key used for rejects that concern the whole record.
    pub key: String,
    pub image: ImageData,
    pub captions: Vec<RawCaption>,
    pub license: Option<String>,
    pub provenance: String,
    pub split: Option<String>,
    pub metadata: Option<String>,
    /// Set when the source already knows the record is unusable (unsafe path, no caption, ...).
    pub problem: Option<Rejection>,
}

impl RawRecord {
    pub fn rejected(key: String, provenance: String, problem: Rejection) -> Self {
        Self {
            key,
            image: ImageData::Skipped,
            captions: Vec::new(),
            license: None,
            provenance,
            split: None,
            metadata: None,
            problem: Some(problem),
        }
    }
}

/// Receives records in order; returns `false` when the reader should stop early.
pub type Emit<'a> = &'a mut dyn FnMut(RawRecord) -> bool;

/// A predicate telling a source whether record number `i` (counting every emitted record from 0)
/// will be processed; sources skip loading image bytes for the others.
pub type Want<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// One input (a tar, a folder, a COCO captions file, a manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub path: PathBuf,
    pub format: InputFormat,
    /// Stable id of the source: its canonical path. Pair ids derive from it.
    pub id: String,
    /// COCO: the folder holding the images; manifests: base of relative image paths.
    pub image_root: Option<PathBuf>,
}

impl SourceSpec {
    /// Short readable name for shard files: file stem, sanitised, plus 8 hex digits of the id.
    pub fn shard_prefix(&self) -> String {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut clean: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        if clean.is_empty() {
            clean.push_str("input");
        }
        let h = Sha256::digest(self.id.as_bytes());
        format!("{clean}-{}", hex::encode(&h[..4]))
    }

    /// Cheap fingerprint: sizes and modification times of the files the source consists of.
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        let mut add = |p: &Path| -> Result<()> {
            let md = fs::metadata(p).map_err(|e| IngestError::io("reading metadata of", p, e))?;
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            h.update(p.to_string_lossy().as_bytes());
            h.update(md.len().to_le_bytes());
            h.update(mtime.to_le_bytes());
            Ok(())
        };
        if self.format == InputFormat::Folder {
            folder::for_each_file(&self.path, |f| add(&f))?;
        } else {
            add(&self.path)?;
        }
        Ok(format!("sha256:{}", hex::encode(&h.finalize()[..16])))
    }

    /// Cheap checks that must pass before any work: e.g. that a manifest has the configured columns.
    pub fn check(&self, cfg: &IngestConfig) -> Result<()> {
        match self.format {
            InputFormat::Jsonl | InputFormat::Csv | InputFormat::Parquet => table::check(self, cfg),
            _ => Ok(()),
        }
    }

    /// Read the source, passing each record to `emit` in order. A source-level failure (unreadable
    /// file, corrupt archive, malformed JSON) after some records were emitted ends the source with
    /// one more record that carries the problem, so it is recorded as a reject and never lost;
    /// a read error that may pass (permissions, I/O) is a retry instead (its shard is not
    /// written). Returns false after such a retry: the input is not finished.
    pub fn read(&self, cfg: &IngestConfig, want: Want<'_>, emit: Emit<'_>) -> bool {
        let mut emitted = 0u64;
        let mut counting = |r: RawRecord| {
            emitted += 1;
            emit(r)
        };
        let result = match self.format {
            InputFormat::Webdataset => webdataset::read(self, want, &mut counting),
            InputFormat::Folder => folder::read(self, cfg, &mut counting),
            InputFormat::Coco => coco::read(self, cfg, &mut counting),
            InputFormat::Jsonl | InputFormat::Csv | InputFormat::Parquet => {
                table::read(self, cfg, &mut counting)
            }
            InputFormat::Auto => Err(IngestError::input(&self.path, "format not resolved")),
        };
        let Err(e) = result else {
            return true;
        };
        let problem = match &e {
            IngestError::Io { path, source, .. } => {
                let mut r = Rejection::read_failed(path, source);
                r.reason = crate::normalize::RejectReason::Unreadable;
                r.detail = e.to_string();
                r
            }
            _ => Rejection::new(
                crate::normalize::RejectReason::MalformedRecord,
                e.to_string(),
            ),
        };
        tracing::error!(input = %self.path.display(), "input failed after {emitted} record(s): {e}");
        let finished = !problem.retry;
        emit(RawRecord::rejected(
            format!("#input-error@{emitted}"),
            self.path.to_string_lossy().into_owned(),
            problem,
        ));
        finished
    }
}

fn canonical(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(|e| IngestError::io("reading input", path, e))
}

fn ext_lower(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Resolve the command line's `--input` paths and `--format` into sources, sorted by id (the order
/// decides shard numbering, so it must not depend on how the paths were typed).
pub fn resolve(
    inputs: &[PathBuf],
    format: InputFormat,
    image_root: Option<&Path>,
) -> Result<Vec<SourceSpec>> {
    if inputs.is_empty() {
        return Err(IngestError::input("--input", "no input given"));
    }
    let mut out: Vec<SourceSpec> = Vec::new();
    for input in inputs {
        let path = canonical(input)?;
        let md = fs::metadata(&path).map_err(|e| IngestError::io("reading input", &path, e))?;
        let mut push = |path: PathBuf, format: InputFormat| {
            let id = path.to_string_lossy().into_owned();
            out.push(SourceSpec {
                path,
                format,
                id,
                image_root: image_root.map(Path::to_path_buf),
            });
        };
        if md.is_dir() {
            let tars = list_tars(&path)?;
            let want_tars = format == InputFormat::Webdataset
                || (format == InputFormat::Auto && !tars.is_empty());
            if want_tars {
                if tars.is_empty() {
                    return Err(IngestError::input(
                        &path,
                        "no .tar files in this folder (--format webdataset)",
                    ));
                }
                for t in tars {
                    push(t, InputFormat::Webdataset);
                }
                continue;
            }
            match format {
                InputFormat::Auto => match coco::find_captions_json(&path)? {
                    Some(json) => push(json, InputFormat::Coco),
                    None => push(path, InputFormat::Folder),
                },
                InputFormat::Coco => match coco::find_captions_json(&path)? {
                    Some(json) => push(json, InputFormat::Coco),
                    None => {
                        return Err(IngestError::input(
                            &path,
                            "no COCO captions JSON (a .json with `images` and `annotations`) in this folder or its annotations/ subfolder",
                        ));
                    }
                },
                InputFormat::Folder => push(path, InputFormat::Folder),
                other => {
                    return Err(IngestError::input(
                        &path,
                        format!("is a folder, but --format {} expects a file", other.name()),
                    ));
                }
            }
        } else {
            let fmt = if format == InputFormat::Auto {
                match ext_lower(&path).as_str() {
                    "tar" => InputFormat::Webdataset,
                    "json" => InputFormat::Coco,
                    "jsonl" | "ndjson" => InputFormat::Jsonl,
                    "csv" | "tsv" => InputFormat::Csv,
                    "parquet" => InputFormat::Parquet,
                    other => {
                        return Err(IngestError::input(
                            &path,
                            format!(
                                "cannot tell the format from the extension `.{other}`; pass --format"
                            ),
                        ));
                    }
                }
            } else if format == InputFormat::Folder {
                return Err(IngestError::input(
                    &path,
                    "--format folder expects a folder",
                ));
            } else {
                format
            };
            push(path, fmt);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

/// The `.tar` files of `dir`, sorted (a WebDataset folder).
pub fn list_tars(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut tars = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| IngestError::io("listing", dir, e))? {
        let p = e.map_err(|e| IngestError::io("listing", dir, e))?.path();
        if p.is_file() && ext_lower(&p) == "tar" {
            tars.push(p);
        }
    }
    tars.sort();
    Ok(tars)
}

/// License from a metadata object: the common field names of img2dataset, LAION and HF datasets.
pub fn license_from_json(meta: &serde_json::Value) -> Option<String> {
    ["license", "LICENSE", "License", "licence"]
        .iter()
        .find_map(|k| meta.get(*k))
        .and_then(|v| match v {
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            serde_json::Value::Null => None,
            serde_json::Value::String(_) => None,
            other => Some(other.to_string()),
        })
}

/// URL from a metadata object.
pub fn url_from_json(meta: &serde_json::Value) -> Option<String> {
    ["url", "URL", "flickr_url", "coco_url"]
        .iter()
        .find_map(|k| meta.get(*k))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
