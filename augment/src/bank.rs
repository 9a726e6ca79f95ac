//! The memory bank a dataset retrieves from: a dataset's index over `doc` (or `image`, `text`)
//! vectors, the same vectors kept in memory (float16) to judge diversity between candidates, the
//! bank's pairs grouped by image (to skip a query's duplicates by id), and the excluded set.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow_array::{StringArray, UInt64Array};
use half::f16;

use cm3_core::DatasetDir;
use cm3_core::schema::{column, read_columns};
use cm3_index::stage::open_dataset_index;
use cm3_index::store::IndexMeta;
use cm3_index::vectors::{RowReader, check_unit_rows, read_ids, read_vectors};
use cm3_index::{MipsIndex, VectorSet};

use crate::error::{AugmentError, Result};

/// A 64-bit key of an image: the first 16 hex digits of its SHA-256 (collisions between distinct
/// images are vanishingly rare at any dataset size and would only skip one candidate).
pub fn image_key(sha256_hex: &str) -> u64 {
    sha256_hex
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

/// What `--exclude` asked to remove from the bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// Every bank pair whose `split` column has this value.
    Split(String),
    /// Ids read from a file, with the file's path and SHA-256 (recorded in the manifest).
    Ids {
        path: PathBuf,
        sha256: String,
        ids: Vec<u64>,
    },
}

impl Exclusion {
    /// How the manifest records it.
    pub fn label(&self) -> String {
        match self {
            Self::Split(s) => format!("split:{s}"),
            Self::Ids { sha256, .. } => format!("ids:{sha256}"),
        }
    }
}

/// The bank's document vectors, for the diversity rule's similarities between candidates.
#[derive(Debug)]
enum BankVectors {
    /// In memory (float16), by row.
    Resident {
        rows: HashMap<u64, u32>,
        data: Vec<f16>,
    },
    /// Read from the embedding files when a similarity is asked for: (id, file, row), sorted by
    /// id. 16 bytes a document instead of its vector.
    OnDisk {
        at: Vec<(u64, u32, u32)>,
        files: Vec<RowReader>,
    },
}

/// The inner product of two float16 vectors, in f32.
fn dot(x: &[f16], y: &[f16]) -> f32 {
    x.iter().zip(y).map(|(p, q)| p.to_f32() * q.to_f32()).sum()
}

/// Vectors a bank read part by part has read for one pair's choice.
#[derive(Debug, Default)]
pub struct VectorCache(std::cell::RefCell<HashMap<u64, Option<Vec<f16>>>>);

/// An opened memory bank.
#[derive(Debug)]
pub struct Bank {
    pub root: PathBuf,
    pub meta: IndexMeta,
    pub index: Box<dyn MipsIndex>,
    dim: usize,
    vectors: BankVectors,
    /// (image key, id), sorted: the bank's pairs by image.
    by_image: Vec<(u64, u64)>,
    /// Ids never retrieved, with the exclusion that removed each.
    excluded: HashMap<u64, u32>,
    exclusions: Vec<Exclusion>,
}

impl Bank {
    /// Open the bank of dataset `root` over `set`, removing `exclusions` from it.
    ///
    /// A bank in one index is held in memory, with its documents' vectors. A bank in parts
    /// (`cm3 index build --part-rows`) is one that need not fit in memory: unless `resident`, its
    /// parts are loaded one at a time by each search and its vectors are read from the embedding
    /// files when needed, so that memory holds one part. Either way the answers are the same.
    pub fn open(
        root: &Path,
        set: VectorSet,
        exclusions: Vec<Exclusion>,
        resident: bool,
    ) -> Result<Self> {
        let (meta, mut index) = open_dataset_index(root, set)?;
        let resident = resident || index.part_rows().is_none();
        if resident {
            index.make_resident()?;
        }
        let ds = DatasetDir::open(root)?;
        let m = ds.load_manifest()?;
        let embed = m
            .stages
            .get(cm3_embed::stage::STAGE)
            .ok_or_else(|| AugmentError::dataset(root, "the bank has no embeddings"))?;
        let dim = index.dim();
        let mut rows = HashMap::with_capacity(if resident { index.len() } else { 0 });
        let mut vectors: Vec<f16> =
            Vec::with_capacity(if resident { index.len() * dim } else { 0 });
        let (mut at, mut files) = (Vec::new(), Vec::new());
        // The vectors of exactly the shards the index holds, checked against what was indexed.
        for (name, held) in &meta.shards {
            let Some(rec) = embed.shards.get(name) else {
                return Err(AugmentError::dataset(
                    root,
                    format!(
                        "the `{set}` index holds shard {name}, which the embeddings do not; run \
                         `cm3 index build {} --set {set} --rebuild`",
                        root.display()
                    ),
                ));
            };
            if rec.sha256 != held.embeddings_sha256 {
                return Err(AugmentError::dataset(
                    root,
                    format!(
                        "shard {name} was embedded again after it was indexed; run `cm3 index \
                         build {} --set {set} --rebuild`",
                        root.display()
                    ),
                ));
            }
            let dir = ds.path(&rec.file);
            let ids = read_ids(&dir.join("ids.npy"))?;
            let vpath = dir.join(format!("{set}.npy"));
            if !resident {
                let reader = RowReader::open(&vpath, dim)?;
                if reader.rows() != ids.len() {
                    return Err(AugmentError::dataset(
                        &vpath,
                        format!("{} vectors for {} ids", reader.rows(), ids.len()),
                    ));
                }
                let file = u32::try_from(files.len())
                    .map_err(|_| AugmentError::dataset(root, "more than 2^32 embedding shards"))?;
                at.extend(ids.iter().enumerate().map(|(i, &id)| (id, file, i as u32)));
                files.push(reader);
                continue;
            }
            let mut v = read_vectors(&vpath)?;
            if v.rows() != ids.len() || v.dim != dim {
                return Err(AugmentError::dataset(
                    &vpath,
                    format!(
                        "{} vectors of dimension {} for {} ids; the index has dimension {dim}",
                        v.rows(),
                        v.dim,
                        ids.len()
                    ),
                ));
            }
            check_unit_rows(&vpath.display().to_string(), &mut v.data, dim, false)?;
            for (i, id) in ids.iter().enumerate() {
                rows.insert(*id, (rows.len()) as u32);
                vectors.extend(v.row(i).iter().map(|&x| f16::from_f32(x)));
            }
        }
        let distinct = if resident {
            rows.len()
        } else {
            at.sort_unstable();
            at.dedup_by_key(|e| e.0);
            at.len()
        };
        if distinct != index.len() {
            return Err(AugmentError::dataset(
                root,
                format!(
                    "the `{set}` index holds {} vectors but its shards' embeddings hold {} distinct \
                     ids; run `cm3 index build {} --set {set} --rebuild`",
                    index.len(),
                    distinct,
                    root.display()
                ),
            ));
        }
        let mut bank = Self {
            root: root.to_path_buf(),
            meta,
            index,
            dim,
            vectors: if resident {
                BankVectors::Resident {
                    rows,
                    data: vectors,
                }
            } else {
                BankVectors::OnDisk { at, files }
            },
            by_image: Vec::new(),
            excluded: HashMap::new(),
            exclusions: Vec::new(),
        };
        bank.read_pairs(&ds, &m, exclusions)?;
        Ok(bank)
    }

    /// The bank's pairs by image, and the pairs of excluded splits.
    fn read_pairs(
        &mut self,
        ds: &DatasetDir,
        m: &cm3_core::Manifest,
        exclusions: Vec<Exclusion>,
    ) -> Result<()> {
        let splits: Vec<(usize, String)> = exclusions
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Exclusion::Split(s) => Some((i, s.clone())),
                Exclusion::Ids { .. } => None,
            })
            .collect();
        let mut seen_splits = BTreeSet::new();
        let mut split_hits = vec![0usize; exclusions.len()];
        if let Some(ingest) = m.stages.get("ingest") {
            for rec in ingest.shards.values() {
                let path = ds.path(&rec.file);
                for b in read_columns(&path, &["id", "sha256", "split"])? {
                    let (Some(id), Some(sha), Some(split)) = (
                        column::<UInt64Array>(&b, "id"),
                        column::<StringArray>(&b, "sha256"),
                        column::<StringArray>(&b, "split"),
                    ) else {
                        return Err(AugmentError::dataset(
                            &path,
                            "columns id/sha256/split have unexpected types",
                        ));
                    };
                    for i in 0..b.num_rows() {
                        let id = id.value(i);
                        self.by_image.push((image_key(sha.value(i)), id));
                        let s = split.value(i);
                        if !seen_splits.contains(s) {
                            seen_splits.insert(s.to_string());
                        }
                        for (which, name) in &splits {
                            if name == s {
                                self.excluded.insert(id, *which as u32);
                                split_hits[*which] += 1;
                            }
                        }
                    }
                }
            }
        }
        self.by_image.sort_unstable();
        for (which, name) in &splits {
            if split_hits[*which] == 0 {
                return Err(AugmentError::Invalid(format!(
                    "--exclude {name}: no pair of the bank {} is in split `{name}` (its splits: {}); \
                     give a split name or a file of ids",
                    self.root.display(),
                    seen_splits.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        for (which, e) in exclusions.iter().enumerate() {
            if let Exclusion::Ids { ids, .. } = e {
                for id in ids {
                    self.excluded.entry(*id).or_insert(which as u32);
                }
            }
        }
        self.exclusions = exclusions;
        Ok(())
    }

    /// A bank from vectors in memory (tests, and callers with their own index): `ids[i]` is row
    /// `i` of `vectors` (unit rows of `index.dim()`), already added to `index`; `images` pairs each
    /// id with its [`image_key`]; `excluded` ids are never retrieved.
    pub fn in_memory(
        index: Box<dyn MipsIndex>,
        ids: &[u64],
        vectors: &[f32],
        images: Vec<(u64, u64)>,
        excluded: &HashSet<u64>,
    ) -> Result<Self> {
        let dim = index.dim();
        if vectors.len() != ids.len() * dim || index.len() != ids.len() {
            return Err(AugmentError::Invalid(format!(
                "in-memory bank: {} values for {} ids of dimension {dim}, index of {}",
                vectors.len(),
                ids.len(),
                index.len()
            )));
        }
        let mut by_image: Vec<(u64, u64)> = images;
        by_image.sort_unstable();
        let exclusions = vec![Exclusion::Ids {
            path: PathBuf::from("(in memory)"),
            sha256: String::new(),
            ids: excluded.iter().copied().collect(),
        }];
        Ok(Self {
            root: PathBuf::from("(in memory)"),
            meta: IndexMeta {
                format: "in-memory".into(),
                format_version: 0,
                tool_version: cm3_core::TOOL_VERSION.into(),
                spec: index.spec(),
                dim,
                count: ids.len(),
                generation: 0,
                files: Default::default(),
                vector_set: None,
                shards: Default::default(),
                part_rows: index.part_rows(),
            },
            index,
            dim,
            vectors: BankVectors::Resident {
                rows: ids
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| (id, i as u32))
                    .collect(),
                data: vectors.iter().map(|&x| f16::from_f32(x)).collect(),
            },
            by_image,
            excluded: excluded.iter().map(|&id| (id, 0)).collect(),
            exclusions,
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn exclusions(&self) -> &[Exclusion] {
        &self.exclusions
    }

    /// The ids removed from the bank (given to every search).
    pub fn excluded_ids(&self) -> HashSet<u64> {
        self.excluded.keys().copied().collect()
    }

    /// Why `id` is excluded, if it is.
    pub fn exclusion_of(&self, id: u64) -> Option<String> {
        let which = *self.excluded.get(&id)? as usize;
        self.exclusions.get(which).map(Exclusion::label)
    }

    /// Bank ids of the pairs whose image has key `key`.
    pub fn same_image(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        let start = self.by_image.partition_point(|&(k, _)| k < key);
        self.by_image[start..]
            .iter()
            .take_while(move |&&(k, _)| k == key)
            .map(|&(_, id)| id)
    }

    /// The inner product of two bank documents (NaN when one is not in the bank, which the
    /// diversity rule treats as "not diverse").
    pub fn similarity(&self, a: u64, b: u64) -> f32 {
        match &self.vectors {
            BankVectors::Resident { rows, data } => {
                let (Some(&ra), Some(&rb)) = (rows.get(&a), rows.get(&b)) else {
                    return f32::NAN;
                };
                let (ra, rb) = (ra as usize * self.dim, rb as usize * self.dim);
                dot(&data[ra..ra + self.dim], &data[rb..rb + self.dim])
            }
            BankVectors::OnDisk { .. } => {
                let cache = VectorCache::default();
                self.similarity_in(&cache, a, b)
            }
        }
    }

    /// [`Bank::similarity`], keeping the vectors a bank read part by part reads in `cache`: the
    /// diversity rule compares each candidate of a pair with each document chosen so far.
    pub fn similarity_in(&self, cache: &VectorCache, a: u64, b: u64) -> f32 {
        if self.is_resident() {
            return self.similarity(a, b);
        }
        let mut map = cache.0.borrow_mut();
        for id in [a, b] {
            map.entry(id).or_insert_with(|| self.read_vector(id));
        }
        match (map.get(&a), map.get(&b)) {
            (Some(Some(x)), Some(Some(y))) => dot(x, y),
            _ => f32::NAN,
        }
    }

    /// A document's vector read from its embedding file, made exactly what the resident bank
    /// holds (normalised as the index normalised it, then float16), so that both give the same
    /// similarities. `None` when it is not in the bank or cannot be read.
    fn read_vector(&self, id: u64) -> Option<Vec<f16>> {
        let BankVectors::OnDisk { at, files } = &self.vectors else {
            return None;
        };
        let i = at.binary_search_by_key(&id, |e| e.0).ok()?;
        let (_, file, row) = at[i];
        let mut v = match files.get(file as usize)?.row(row as usize) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(id, error = %e, "a bank vector could not be read");
                return None;
            }
        };
        check_unit_rows("bank vector", &mut v, self.dim, false).ok()?;
        Some(v.into_iter().map(f16::from_f32).collect())
    }

    /// Whether memory holds the whole bank (a bank in parts read part by part does not).
    pub fn is_resident(&self) -> bool {
        matches!(self.vectors, BankVectors::Resident { .. })
    }
}
