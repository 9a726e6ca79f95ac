//! A folder of images with sidecar captions: `a/b.jpg` + `a/b.txt` (+ optional `a/b.json` with
//! `license`, `url`, ... as img2dataset writes them). Searched recursively, in sorted order.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IngestError, Result};
use crate::normalize::{RejectReason, Rejection};

use super::{
    Emit, ImageData, RawCaption, RawRecord, SourceSpec, is_image_ext, license_from_json,
    url_from_json,
};

/// Every regular file below `root`, sorted, hidden files and folders excluded.
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(|e| IngestError::io("listing", &dir, e))? {
            let e = e.map_err(|e| IngestError::io("listing", &dir, e))?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = e
                .file_type()
                .map_err(|err| IngestError::io("reading", e.path(), err))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() || ft.is_symlink() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Default)]
struct Entry {
    image: Option<PathBuf>,
    extra_images: Vec<PathBuf>,
    caption: Option<PathBuf>,
    json: Option<PathBuf>,
}

pub fn read(src: &SourceSpec, cfg: &crate::IngestConfig, emit: Emit<'_>) -> Result<()> {
    let mut by_key: BTreeMap<String, Entry> = BTreeMap::new();
    for path in list_files(&src.path)? {
        let rel = path.strip_prefix(&src.path).unwrap_or(&path);
        let ext = rel
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let key = rel.with_extension("").to_string_lossy().replace('\\', "/");
        if is_image_ext(&ext) {
            let e = by_key.entry(key).or_default();
            if e.image.is_none() {
                e.image = Some(path);
            } else {
                e.extra_images.push(path);
            }
        } else if ext == "txt" {
            by_key.entry(key).or_default().caption = Some(path);
        } else if ext == "json" {
            by_key.entry(key).or_default().json = Some(path);
        }
    }
    for (key, e) in by_key {
        for extra in &e.extra_images {
            let prov = extra.to_string_lossy().into_owned();
            let r = RawRecord::rejected(
                key.clone(),
                prov,
                Rejection::new(
                    RejectReason::DuplicateKey,
                    "another image with the same name and caption comes first",
                ),
            );
            if !emit(r) {
                return Ok(());
            }
        }
        let Some(rec) = entry_record(&key, e, cfg) else {
            continue;
        };
        if !emit(rec) {
            return Ok(());
        }
    }
    Ok(())
}

fn entry_record(key: &str, e: Entry, cfg: &crate::IngestConfig) -> Option<RawRecord> {
    let (image, caption) = match (e.image, e.caption) {
        (Some(i), Some(c)) => (i, c),
        (Some(i), None) => {
            return Some(RawRecord::rejected(
                key.to_string(),
                i.to_string_lossy().into_owned(),
                Rejection::new(
                    RejectReason::MissingCaption,
                    format!("{} has no .txt caption beside it", i.display()),
                ),
            ));
        }
        (None, Some(c)) => {
            return Some(RawRecord::rejected(
                key.to_string(),
                c.to_string_lossy().into_owned(),
                Rejection::new(
                    RejectReason::MissingImage,
                    format!("caption {} has no image beside it", c.display()),
                ),
            ));
        }
        // A lone .json is metadata of nothing: not an input pair.
        (None, None) => return None,
    };
    // A linked caption would put another file's text into the dataset.
    if let Some(r) = super::link_refused(&caption, cfg) {
        return Some(RawRecord::rejected(
            key.to_string(),
            caption.to_string_lossy().into_owned(),
            r,
        ));
    }
    let text = match cm3_core::fsio::read_input(&caption, super::webdataset::MAX_TEXT_MEMBER_BYTES)
    {
        Ok(t) => t,
        Err(err) => {
            let mut r = Rejection::read_failed(&caption, &err);
            r.reason = RejectReason::Unreadable;
            return Some(RawRecord::rejected(
                key.to_string(),
                caption.to_string_lossy().into_owned(),
                r,
            ));
        }
    };
    let meta: Option<serde_json::Value> = e.json.as_ref().and_then(|p| {
        if let Some(r) = super::link_refused(p, cfg) {
            tracing::warn!(file = %p.display(), "ignoring metadata: {}", r.detail);
            return None;
        }
        let parsed = cm3_core::fsio::read_input(p, super::webdataset::MAX_TEXT_MEMBER_BYTES)
            .map_err(|err| err.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|err| err.to_string()));
        parsed
            .map_err(
                |err| tracing::warn!(file = %p.display(), "ignoring unreadable metadata: {err}"),
            )
            .ok()
    });
    Some(RawRecord {
        key: key.to_string(),
        provenance: meta
            .as_ref()
            .and_then(url_from_json)
            .unwrap_or_else(|| image.to_string_lossy().into_owned()),
        image: ImageData::Path(image),
        captions: vec![RawCaption {
            key: key.to_string(),
            text,
            alt: Vec::new(),
        }],
        license: meta.as_ref().and_then(license_from_json),
        split: meta
            .as_ref()
            .and_then(|m| m.get("split"))
            .and_then(|s| s.as_str())
            .map(str::to_string),
        metadata: meta.map(|m| m.to_string()),
        problem: None,
    })
}
