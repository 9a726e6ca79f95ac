//! What kind of index, over which vectors.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::IndexError;

/// How the flat index stores vectors. float16 halves the memory (and is what `cm3 embed` writes);
/// scores are computed in float32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    F32,
    #[default]
    F16,
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
        })
    }
}

/// HNSW defaults: M = 32 links per node (64 on the base layer) and efConstruction = 200, the
/// usual settings for 512-d CLIP vectors (FAISS's `HNSW32`).
pub const DEFAULT_M: usize = 32;
pub const DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Default efSearch: measured to give recall@10 ≥ 0.95 on clustered 512-d unit vectors.
pub const DEFAULT_EF_SEARCH: usize = 128;

/// The kind of index and its build parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IndexSpec {
    /// Exact search.
    Flat {
        #[serde(default)]
        storage: Storage,
    },
    /// Approximate search over a navigable small-world graph (built by cm3 as FAISS's `IndexHNSWFlat` builds it).
    Hnsw { m: usize, ef_construction: usize },
    /// A FAISS index made by `index_factory` (cargo feature `faiss`).
    Faiss { factory: String },
}

impl Default for IndexSpec {
    fn default() -> Self {
        IndexSpec::Flat {
            storage: Storage::F16,
        }
    }
}

impl fmt::Display for IndexSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexSpec::Flat { storage } => write!(f, "flat ({storage})"),
            IndexSpec::Hnsw { m, ef_construction } => {
                write!(f, "hnsw (M={m}, efConstruction={ef_construction})")
            }
            IndexSpec::Faiss { factory } => write!(f, "faiss:{factory}"),
        }
    }
}

impl IndexSpec {
    /// Parse `flat`, `hnsw` or `faiss:<index_factory string>`, with the flat storage and the
    /// HNSW parameters given separately.
    pub fn parse(
        kind: &str,
        storage: Storage,
        m: usize,
        ef_construction: usize,
    ) -> Result<Self, IndexError> {
        match kind {
            "flat" => Ok(IndexSpec::Flat { storage }),
            "hnsw" => {
                if !(2..=256).contains(&m) {
                    return Err(IndexError::Invalid(format!(
                        "HNSW M must be between 2 and 256, not {m}"
                    )));
                }
                if ef_construction == 0 {
                    return Err(IndexError::Invalid(
                        "efConstruction must be positive".into(),
                    ));
                }
                Ok(IndexSpec::Hnsw { m, ef_construction })
            }
            k => match k.strip_prefix("faiss:") {
                Some(f) if !f.trim().is_empty() => Ok(IndexSpec::Faiss {
                    factory: f.trim().to_string(),
                }),
                _ => Err(IndexError::Invalid(format!(
                    "unknown index kind `{k}`: use flat, hnsw or faiss:<index_factory string> \
                     (e.g. faiss:IVF4096,Flat)"
                ))),
            },
        }
    }
}

/// Which of the vectors `cm3 embed` writes an index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VectorSet {
    /// `normalise((image + text) / 2)`: the paper's document vector.
    #[default]
    Doc,
    Image,
    Text,
}

impl VectorSet {
    pub fn name(self) -> &'static str {
        match self {
            VectorSet::Doc => "doc",
            VectorSet::Image => "image",
            VectorSet::Text => "text",
        }
    }
}

impl fmt::Display for VectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VectorSet {
    type Err = IndexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "doc" => Ok(VectorSet::Doc),
            "image" => Ok(VectorSet::Image),
            "text" => Ok(VectorSet::Text),
            o => Err(IndexError::Invalid(format!(
                "unknown vector set `{o}`: use doc, image or text"
            ))),
        }
    }
}

impl FromStr for Storage {
    type Err = IndexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(Storage::F16),
            "f32" => Ok(Storage::F32),
            o => Err(IndexError::Invalid(format!(
                "unknown storage `{o}`: use f16 or f32"
            ))),
        }
    }
}
