use std::path::PathBuf;

/// Errors of the augment stage. Every variant names the dataset, shard, file or pair involved.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
    #[error(transparent)]
    Index(#[from] cm3_index::IndexError),
    #[error(transparent)]
    Embed(#[from] cm3_embed::EmbedError),
    #[error("{path}: {reason}")]
    Parquet { path: PathBuf, reason: String },
    /// The dataset (or the memory bank) is not ready for this stage, or disagrees with itself.
    #[error("{path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    /// A setting or an argument that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The leakage guard: a neighbour would point into the excluded set.
    #[error(
        "shard {shard}: pair {pair:016x} would retrieve {neighbour:016x}, which is excluded \
         ({why}); refusing to write neighbours that leak the excluded set"
    )]
    Leak {
        shard: String,
        pair: u64,
        neighbour: u64,
        why: String,
    },
}

pub type Result<T, E = AugmentError> = std::result::Result<T, E>;

impl AugmentError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Dataset {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
