//! An index directory on disk, updated atomically.
//!
//! ```text
//! <dir>/INDEX.json     the commit point: format, kind, dimension, count, generation, file sizes,
//!                      and (in a dataset) which embedding shards the index holds
//! <dir>/gen-000003/    the files of the current generation
//! ```
//! An update writes the next generation under a temporary name, fsyncs it, renames it into
//! place, and only then replaces `INDEX.json` (atomically). A crash at any point leaves
//! `INDEX.json` naming a complete generation; leftovers are removed by the next update.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cm3_core::fsio::{sync_dir, write_atomic};

use crate::error::{IndexError, Result};
use crate::parts::{PartedIndex, is_part_name};
use crate::spec::{IndexSpec, VectorSet};
use crate::{MipsIndex, load_index};

pub const FORMAT: &str = "cm3-index";
/// Version of the index directory layout this tool writes and reads.
pub const FORMAT_VERSION: u32 = 1;
pub const INDEX_FILE: &str = "INDEX.json";

/// One embedding shard held by a dataset's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedShard {
    pub rows: u64,
    /// The checksum `cm3 embed` recorded for the shard: an index built from other embeddings
    /// (another dataset, or embeddings made again) is refused instead of silently mixed.
    pub embeddings_sha256: String,
}

/// `INDEX.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexMeta {
    pub format: String,
    pub format_version: u32,
    pub tool_version: String,
    pub spec: IndexSpec,
    pub dim: usize,
    pub count: usize,
    pub generation: u64,
    /// Files of the generation with their sizes (a truncated file is caught before loading).
    pub files: BTreeMap<String, u64>,
    /// In a dataset: the vector set indexed and the shards held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_set: Option<VectorSet>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shards: BTreeMap<String, IndexedShard>,
    /// An index in parts of at most this many vectors ([`crate::parts`]); absent for one index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_rows: Option<usize>,
}

impl IndexMeta {
    pub fn generation_dir(&self, dir: &Path) -> PathBuf {
        dir.join(gen_name(self.generation))
    }
}

fn gen_name(g: u64) -> String {
    format!("gen-{g:06}")
}

/// The generation a folder name stands for, if it is exactly a name `gen_name` writes.
fn gen_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("gen-")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let g = digits.parse().ok()?;
    (gen_name(g) == name).then_some(g)
}

/// A temporary of an index update: `.gen-NNNNNN.tmp-<tag>` or `.INDEX.json.tmp-<tag>`.
fn is_index_tmp(name: &str) -> bool {
    let gen_tmp = name
        .strip_prefix('.')
        .and_then(|n| n.split_once(".tmp-"))
        .is_some_and(|(g, tag)| gen_number(g).is_some() && !tag.is_empty());
    gen_tmp || name.starts_with(".INDEX.json.tmp-")
}

fn not_ours(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::NotOurs {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Names in `dir` (none when it does not exist).
fn entry_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IndexError::io("listing", dir, e)),
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| IndexError::io("listing", dir, e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Does `dir` hold an index cm3 wrote (an `INDEX.json` of format `cm3-index`, any version)?
/// Only such a directory's generation folders are cm3's to remove.
pub fn is_index_dir(dir: &Path) -> Result<bool> {
    let path = dir.join(INDEX_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(IndexError::io("reading", &path, e)),
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        not_ours(
            &path,
            format!("not valid JSON ({e}), so cm3 cannot tell the directory is its index"),
        )
    })?;
    Ok(value.get("format").and_then(|f| f.as_str()) == Some(FORMAT))
}

/// Remove one entry cm3 wrote (a generation folder or a temporary); links are not followed.
fn remove_entry(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Read `INDEX.json` of `dir`; `None` if there is no index there yet.
pub fn read_meta(dir: &Path) -> Result<Option<IndexMeta>> {
    let path = dir.join(INDEX_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IndexError::io("reading", &path, e)),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| IndexError::Corrupt {
            path: path.clone(),
            reason: format!("not valid JSON: {e}"),
        })?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(IndexError::Mismatch {
            path,
            reason: format!("not a cm3 index (no \"format\": \"{FORMAT}\")"),
        });
    }
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if version != u64::from(FORMAT_VERSION) {
        return Err(IndexError::Mismatch {
            path,
            reason: format!(
                "index format version {version}; this cm3 reads version {FORMAT_VERSION} \
                 (rebuild the index with this version: `cm3 index build ... --rebuild`)"
            ),
        });
    }
    let meta: IndexMeta = serde_json::from_value(value).map_err(|e| IndexError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some(meta))
}

/// Open the index committed in `dir`: its metadata and the loaded index. A reader racing a
/// commit (it read `INDEX.json`, then the writer committed the next generation and removed the
/// one it named) reads `INDEX.json` again and opens the new generation.
pub fn open(dir: &Path) -> Result<Option<(IndexMeta, Box<dyn MipsIndex>)>> {
    open_from(dir, read_meta(dir)?)
}

/// Attempts at opening a generation that a concurrent commit removed.
const OPEN_ATTEMPTS: usize = 8;

/// [`open`], starting from `meta` (what `INDEX.json` said when the reader looked).
fn open_from(
    dir: &Path,
    mut meta: Option<IndexMeta>,
) -> Result<Option<(IndexMeta, Box<dyn MipsIndex>)>> {
    for _ in 0..OPEN_ATTEMPTS {
        let Some(m) = meta else {
            return Ok(None);
        };
        match open_generation(dir, &m) {
            Ok(index) => return Ok(Some((m, index))),
            Err(e) => {
                // Only a generation replaced since is retried; any other failure is the index's.
                let now = read_meta(dir)?;
                if now.as_ref().map(|n| n.generation) == Some(m.generation) {
                    return Err(e);
                }
                tracing::debug!(dir = %dir.display(), from = m.generation, "index committed while opening; reading it again");
                meta = now;
            }
        }
    }
    Err(IndexError::Invalid(format!(
        "{}: the index changed {OPEN_ATTEMPTS} times while it was being opened",
        dir.display()
    )))
}

/// The index of generation `meta.generation`, checked against what `meta` records.
fn open_generation(dir: &Path, meta: &IndexMeta) -> Result<Box<dyn MipsIndex>> {
    let gen_dir = meta.generation_dir(dir);
    for (file, &size) in &meta.files {
        let p = gen_dir.join(file);
        let found = fs::metadata(&p)
            .map_err(|e| IndexError::io("opening index file", &p, e))?
            .len();
        if found != size {
            return Err(IndexError::Corrupt {
                path: p,
                reason: format!(
                    "{found} bytes, the index recorded {size} (truncated or replaced; rebuild with --rebuild)"
                ),
            });
        }
    }
    let index: Box<dyn MipsIndex> = match meta.part_rows {
        Some(_) => Box::new(PartedIndex::load(meta.spec.clone(), &gen_dir)?),
        None => load_index(&meta.spec, &gen_dir)?,
    };
    if index.part_rows() != meta.part_rows {
        return Err(IndexError::Corrupt {
            path: gen_dir,
            reason: format!(
                "parts of {:?} vectors, {INDEX_FILE} says {:?}",
                index.part_rows(),
                meta.part_rows
            ),
        });
    }
    if index.len() != meta.count || index.dim() != meta.dim {
        return Err(IndexError::Corrupt {
            path: gen_dir,
            reason: format!(
                "holds {} vectors of dimension {}, {INDEX_FILE} says {} of dimension {}",
                index.len(),
                index.dim(),
                meta.count,
                meta.dim
            ),
        });
    }
    Ok(index)
}

/// Write `index` as the next generation of `dir` and commit it. `previous` is the metadata of
/// the generation it was loaded from (its files may be hard-linked). Every file of the new
/// generation is fsynced before the commit point. Returns the new metadata.
pub fn commit(
    dir: &Path,
    index: &dyn MipsIndex,
    previous: Option<&IndexMeta>,
    vector_set: Option<VectorSet>,
    shards: BTreeMap<String, IndexedShard>,
    tag: &str,
) -> Result<IndexMeta> {
    fs::create_dir_all(dir).map_err(|e| IndexError::io("creating", dir, e))?;
    let generation = previous.map_or(1, |p| p.generation + 1);
    let name = gen_name(generation);
    let tmp = dir.join(format!(".{name}.tmp-{tag}"));
    let final_dir = dir.join(&name);
    if !is_index_dir(dir)? {
        // A new index: the directory may hold other things, which stay untouched, but no
        // generation folder that no INDEX.json of cm3's records.
        if let Some(g) = entry_names(dir)?.iter().find(|n| gen_number(n).is_some()) {
            return Err(not_ours(
                &dir.join(g),
                format!(
                    "a generation folder that no {INDEX_FILE} records, so cm3 cannot tell it is \
                     its own and will not replace it; remove it if it is left from an \
                     interrupted build, or choose another directory"
                ),
            ));
        }
    }
    // Left by a crash before the commit point: not part of any committed generation (and the
    // directory is cm3's index, or `final_dir` was refused above).
    for stale in [&tmp, &final_dir] {
        remove_entry(stale).map_err(|e| IndexError::io("removing", stale, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| IndexError::io("creating", &tmp, e))?;
    let prev_dir = previous.map(|p| p.generation_dir(dir));
    index.save(&tmp, prev_dir.as_deref())?;
    let mut files = BTreeMap::new();
    sync_files(&tmp, "", &mut files)?;
    fs::rename(&tmp, &final_dir)
        .map_err(|e| IndexError::io("renaming into place", &final_dir, e))?;
    sync_dir(dir)?;
    let meta = IndexMeta {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        tool_version: cm3_core::TOOL_VERSION.into(),
        spec: index.spec(),
        dim: index.dim(),
        count: index.len(),
        generation,
        files,
        vector_set,
        shards,
        part_rows: index.part_rows(),
    };
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| IndexError::Invalid(e.to_string()))?;
    write_atomic(&dir.join(INDEX_FILE), &text, tag)?;
    remove_old_generations(dir, generation);
    Ok(meta)
}

/// Fsync every file of generation folder `dir` (and of its part folders, named `prefix` +
/// file name), then the folder itself, recording each file's size in `files`. Every file of a
/// generation is made durable here, whichever library wrote it.
fn sync_files(dir: &Path, prefix: &str, files: &mut BTreeMap<String, u64>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| IndexError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| IndexError::io("listing", dir, e))?;
        let path = entry.path();
        let md = entry
            .metadata()
            .map_err(|e| IndexError::io("stat", &path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if md.is_file() {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| IndexError::io("fsync", &path, e))?;
            files.insert(format!("{prefix}{name}"), md.len());
        } else if md.is_dir() && prefix.is_empty() && is_part_name(&name) {
            sync_files(&path, &format!("{name}/"), files)?;
        }
    }
    Ok(sync_dir(dir)?)
}

/// Remove every generation but `keep`, and temporaries of interrupted updates: only entries
/// named as cm3 names them, in a directory that holds cm3's `INDEX.json`. Best effort: a reader
/// may still have an old generation open (its files stay valid until closed).
pub fn remove_old_generations(dir: &Path, keep: u64) {
    if !is_index_dir(dir).unwrap_or(false) {
        return;
    }
    let Ok(names) = entry_names(dir) else {
        return;
    };
    for name in names {
        let old_gen = gen_number(&name).is_some_and(|g| g != keep);
        let path = dir.join(&name);
        if (old_gen || is_index_tmp(&name))
            && let Err(err) = remove_entry(&path)
        {
            tracing::warn!(path = %path.display(), %err, "could not remove an old index generation");
        }
    }
}

/// Remove the index of `dir` (for `--rebuild`): its generation folders and temporaries, then
/// `INDEX.json` last, so that a crash midway leaves a directory still provably cm3's (the next
/// `--rebuild` finishes the job). Anything else in `dir` stays; a directory without cm3's
/// `INDEX.json` is refused unless it holds nothing of an index.
pub fn remove(dir: &Path) -> Result<()> {
    let names = entry_names(dir)?;
    if !is_index_dir(dir)? {
        if let Some(n) = names.iter().find(|n| !is_index_tmp(n)) {
            return Err(not_ours(
                dir,
                format!(
                    "holds no cm3 {INDEX_FILE} (but `{n}`), so it is not an index cm3 wrote; \
                     --rebuild deletes nothing in it. Choose a new or empty directory"
                ),
            ));
        }
        return Ok(());
    }
    for name in names
        .iter()
        .filter(|n| gen_number(n).is_some() || is_index_tmp(n))
    {
        let path = dir.join(name);
        remove_entry(&path).map_err(|e| IndexError::io("removing", &path, e))?;
    }
    let idx = dir.join(INDEX_FILE);
    fs::remove_file(&idx).map_err(|e| IndexError::io("removing", &idx, e))?;
    sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that read `INDEX.json` just before a commit removed the generation it named
    /// opens the new one instead of failing.
    #[test]
    fn a_reader_racing_a_commit_opens_the_new_generation() -> Result<()> {
        use crate::MipsIndex;
        let dir = tempfile::tempdir().map_err(|e| IndexError::io("tempdir", "/tmp", e))?;
        let mut index = crate::flat::FlatIndex::new(2, crate::Storage::F32);
        index.add(&[1, 2], &[1.0, 0.0, 0.0, 1.0])?;
        let first = commit(dir.path(), &index, None, None, BTreeMap::new(), "t")?;
        index.add(&[3], &[0.6, 0.8])?;
        let second = commit(dir.path(), &index, Some(&first), None, BTreeMap::new(), "t")?;
        assert!(
            !first.generation_dir(dir.path()).exists(),
            "the old generation was removed"
        );
        // What the reader would find without reading INDEX.json again: a missing generation.
        assert!(open_generation(dir.path(), &first).is_err());
        let (meta, opened) = open_from(dir.path(), Some(first))?.expect("an index");
        assert_eq!(meta.generation, second.generation);
        assert_eq!(opened.len(), 3);
        Ok(())
    }

    #[test]
    fn only_names_cm3_writes_are_generations() {
        assert_eq!(gen_number("gen-000003"), Some(3));
        assert_eq!(gen_number("gen-1234567"), Some(1_234_567));
        for other in [
            "gen-2019",
            "gen-",
            "gen-00000x",
            "gen-+00001",
            "xgen-000001",
        ] {
            assert_eq!(gen_number(other), None, "{other}");
        }
        assert!(is_index_tmp(".gen-000002.tmp-index"));
        assert!(is_index_tmp(".INDEX.json.tmp-index"));
        assert!(!is_index_tmp(".gen-2019.tmp-x") && !is_index_tmp(".bashrc"));
    }
}
