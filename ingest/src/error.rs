use std::path::PathBuf;

/// Errors that stop `cm3 ingest`. Problems with individual inputs are not errors: they become
/// reject records (see [`crate::RejectReason`]).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
    #[error("input {path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("--strict: input rejected: {source_id} key {key}: {reason}: {detail}")]
    Strict {
        source_id: String,
        key: String,
        reason: String,
        detail: String,
    },
    #[error(
        "nothing usable was read: {rejects} input(s) rejected, 0 rows in {dataset}; see {dataset}/rejects/"
    )]
    NothingUsable { rejects: u64, dataset: PathBuf },
    /// Reads that failed for a reason that may pass (see `Rejection::retry`): their shards
    /// were not written, the others are recorded.
    #[error(
        "{count} shard(s) not written because an input could not be read ({first}); the other \
         shards are recorded: fix the cause and run the same command again to read them"
    )]
    Unfinished { count: usize, first: String },
    #[error("building the thread pool: {0}")]
    ThreadPool(String),
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

impl IngestError {
    pub fn input(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IngestError::Input {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IngestError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
