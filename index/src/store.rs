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
}

impl IndexMeta {
    pub fn generation_dir(&self, dir: &Path) -> PathBuf {
        dir.join(gen_name(self.generation))
    }
}

fn gen_name(g: u64) -> String {
    format!("gen-{g:06}")
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

/// Open the index committed in `dir`: its metadata and the loaded index.
pub fn open(dir: &Path) -> Result<Option<(IndexMeta, Box<dyn MipsIndex>)>> {
    let Some(meta) = read_meta(dir)? else {
        return Ok(None);
    };
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
    let index = load_index(&meta.spec, &gen_dir)?;
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
    Ok(Some((meta, index)))
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
    for stale in [&tmp, &final_dir] {
        // Left by a crash before the commit point: not part of any committed generation.
        if stale.exists() {
            fs::remove_dir_all(stale).map_err(|e| IndexError::io("removing", stale, e))?;
        }
    }
    fs::create_dir(&tmp).map_err(|e| IndexError::io("creating", &tmp, e))?;
    let prev_dir = previous.map(|p| p.generation_dir(dir));
    index.save(&tmp, prev_dir.as_deref())?;
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&tmp).map_err(|e| IndexError::io("listing", &tmp, e))? {
        let entry = entry.map_err(|e| IndexError::io("listing", &tmp, e))?;
        let md = entry
            .metadata()
            .map_err(|e| IndexError::io("stat", entry.path(), e))?;
        if md.is_file() {
            // Every file of the generation is made durable here, whichever library wrote it.
            let path = entry.path();
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| IndexError::io("fsync", &path, e))?;
            files.insert(entry.file_name().to_string_lossy().into_owned(), md.len());
        }
    }
    sync_dir(&tmp)?;
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
    };
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| IndexError::Invalid(e.to_string()))?;
    write_atomic(&dir.join(INDEX_FILE), &text, tag)?;
    remove_old_generations(dir, generation);
    Ok(meta)
}

/// Remove every generation but `keep`, and temporary directories of interrupted updates. Best
/// effort: a reader may still have an old generation open (its files stay valid until closed).
pub fn remove_old_generations(dir: &Path, keep: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let keep = gen_name(keep);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old_gen = name.starts_with("gen-") && name != keep;
        let tmp = name.starts_with(".gen-") && name.contains(".tmp-");
        if (old_gen || tmp)
            && let Err(err) = fs::remove_dir_all(e.path())
        {
            tracing::warn!(path = %e.path().display(), %err, "could not remove an old index generation");
        }
    }
}

/// Remove a whole index directory (for `--rebuild`): INDEX.json first, so that a crash midway
/// leaves no index rather than a broken one.
pub fn remove(dir: &Path) -> Result<()> {
    let idx = dir.join(INDEX_FILE);
    match fs::remove_file(&idx) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(IndexError::io("removing", &idx, e)),
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| IndexError::io("removing", dir, e))?;
    }
    Ok(())
}
