//! A folder of images with sidecar captions: `a/b.jpg` + `a/b.txt` (+ optional `a/b.json` with
//! `license`, `url`, ... as img2dataset writes them). Searched recursively; pairs come in the
//! order of their keys (the path without its extension), listed by an external sort so that a
//! folder of any size costs its listing the same memory.
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::normalize::{RejectReason, Rejection};

use super::listing::sorted_files;
use super::{
    Emit, ImageData, RawCaption, RawRecord, SourceSpec, is_image_ext, license_from_json,
    url_from_json,
};

/// Every regular file below `root`, sorted, hidden files and folders excluded. Holds every path:
/// for small folders (an SFT set); a dataset's folder input streams them instead.
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    sorted_files(root, |_| Some(Vec::new()))?.collect()
}

/// The paths below `root` in [`list_files`]'s order, without holding them all.
pub fn for_each_file(root: &Path, mut f: impl FnMut(PathBuf) -> Result<()>) -> Result<()> {
    for path in sorted_files(root, |_| Some(Vec::new()))? {
        f(path?)?;
    }
    Ok(())
}

#[derive(Default)]
struct Entry {
    image: Option<PathBuf>,
    extra_images: Vec<PathBuf>,
    caption: Option<PathBuf>,
    json: Option<PathBuf>,
}

/// A pair's key (its path below the folder without the extension, `/`-separated) and its
/// extension, lower-cased.
fn key_and_ext(rel: &Path) -> (String, String) {
    let ext = rel
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let key = rel.with_extension("").to_string_lossy().replace('\\', "/");
    (key, ext)
}

/// The files of one pair sort together, keys in string order (the listing then orders a key's
/// files by path): the key's bytes. Files that are no part of a pair are not listed.
fn pair_order(rel: &Path) -> Option<Vec<u8>> {
    let (key, ext) = key_and_ext(rel);
    (is_image_ext(&ext) || ext == "txt" || ext == "json").then(|| key.into_bytes())
}

pub fn read(src: &SourceSpec, cfg: &crate::IngestConfig, emit: Emit<'_>) -> Result<()> {
    let mut current: Option<(String, Entry)> = None;
    for path in sorted_files(&src.path, pair_order)? {
        let path = path?;
        let rel = path.strip_prefix(&src.path).unwrap_or(&path);
        let (key, ext) = key_and_ext(rel);
        if current.as_ref().is_none_or(|(k, _)| *k != key) {
            // A new key: the previous one's files are all listed.
            if let Some((k, e)) = current.replace((key, Entry::default()))
                && !emit_entry(&k, e, cfg, &mut *emit)
            {
                return Ok(());
            }
        }
        let Some((_, e)) = current.as_mut() else {
            continue;
        };
        if is_image_ext(&ext) {
            if e.image.is_none() {
                e.image = Some(path);
            } else {
                e.extra_images.push(path);
            }
        } else if ext == "txt" {
            e.caption = Some(path);
        } else {
            e.json = Some(path);
        }
    }
    if let Some((k, e)) = current {
        emit_entry(&k, e, cfg, emit);
    }
    Ok(())
}

/// The records of one key: a rejection per extra image, then the pair (if it is one). False
/// when `emit` wants no more.
fn emit_entry(key: &str, e: Entry, cfg: &crate::IngestConfig, emit: Emit<'_>) -> bool {
    for extra in &e.extra_images {
        let prov = extra.to_string_lossy().into_owned();
        let r = RawRecord::rejected(
            key.to_string(),
            prov,
            Rejection::new(
                RejectReason::DuplicateKey,
                "another image with the same name and caption comes first",
            ),
        );
        if !emit(r) {
            return false;
        }
    }
    match entry_record(key, e, cfg) {
        Some(rec) => emit(rec),
        None => true,
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Keys that prefix others, sort around a separator, or repeat under a second image format,
    /// in subfolders too: records come in the order of the keys as strings (as when every
    /// path was held in a map), a key's images in path order.
    #[test]
    fn pairs_come_in_key_order_with_their_extra_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = [
            "b.jpg",
            "b.txt",
            "b.k.jpg",
            "b.k.txt",
            "b-c.png",
            "b-c.txt",
            "b.png",
            "sub/x.jpg",
            "sub/x.txt",
            "sub.a/y.jpg",
            "sub.a/y.txt",
            "sub/x.json",
            "lone.txt",
            "img.jpg",
            "notes.md",
            ".hidden.jpg",
        ];
        for n in names {
            let p = dir.path().join(n);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(
                &p,
                if n.ends_with(".json") {
                    "{}"
                } else {
                    "a caption"
                },
            )
            .expect("write");
        }
        let src = SourceSpec {
            path: dir.path().to_path_buf(),
            format: crate::config::InputFormat::Folder,
            id: "t".into(),
            image_root: None,
        };
        let mut got = Vec::new();
        read(&src, &crate::IngestConfig::default(), &mut |r| {
            got.push((r.key.clone(), r.problem.map(|p| p.reason)));
            true
        })
        .expect("read");
        // The keys as a map of every path orders them.
        let mut want: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for n in names
            .iter()
            .filter(|n| !n.starts_with('.') && !n.ends_with(".md"))
        {
            let key = n.rsplit_once('.').map_or(*n, |(k, _)| k).to_string();
            want.entry(key).or_default().push(n);
        }
        let keys: Vec<&String> = got.iter().map(|(k, _)| k).collect();
        let mut want_keys: Vec<&String> = Vec::new();
        for (k, files) in &want {
            let images = files
                .iter()
                .filter(|f| !f.ends_with(".txt") && !f.ends_with(".json"));
            // One record per extra image, then the pair.
            for _ in images.skip(1) {
                want_keys.push(k);
            }
            want_keys.push(k);
        }
        assert_eq!(keys, want_keys);
        let reason = |key: &str| got.iter().find(|(k, _)| k == key).and_then(|(_, r)| *r);
        assert_eq!(reason("b"), Some(RejectReason::DuplicateKey));
        assert_eq!(reason("lone"), Some(RejectReason::MissingImage));
        assert_eq!(reason("img"), Some(RejectReason::MissingCaption));
        assert_eq!(reason("sub/x"), None);
    }
}
