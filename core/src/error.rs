use std::path::PathBuf;

/// Errors of the shared dataset-directory layer. Every variant names the file or stage involved.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: Parquet error: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: Arrow error: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error(
        "{path}: manifest format version {found} is newer than this tool understands ({supported})"
    )]
    ManifestVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "stage `{stage}` in {dataset} was made with a different configuration:\n{diff}\n\
         Re-run with the same settings, or pass --rebuild to discard the stage's outputs and redo it."
    )]
    ConfigMismatch {
        stage: String,
        dataset: PathBuf,
        diff: String,
    },
    #[error(
        "input {input} of stage `{stage}` changed since it was processed (was {recorded}, now {current}); \
         pass --rebuild to redo the stage, or give changed data as a new input"
    )]
    InputChanged {
        stage: String,
        input: String,
        recorded: String,
        current: String,
    },
    /// A shard whose columns are not what its schema says.
    #[error("{path}: {reason}")]
    Shard { path: PathBuf, reason: String },
    #[error("vocabulary layout: {reason}")]
    Vocab { reason: String },
    #[error("merging {path}: {reason}")]
    Merge { path: PathBuf, reason: String },
    #[error("{path} is in use by another cm3 process ({what}); wait for it to finish")]
    Locked { path: PathBuf, what: String },
    #[error("invalid worker split: {0}")]
    Workers(String),
    /// A stage whose records describe upstream content that has changed.
    #[error(
        "stage `{stage}` is stale: {reason}; rebuild it and then the stages after it (`cm3 \
         {stage} <dataset> --rebuild`)"
    )]
    Stale { stage: String, reason: String },
    #[error("{path}: not a cm3 dataset directory (no manifest.json)")]
    NotADataset { path: PathBuf },
    /// A name read from a file or the network that would not stay one path component.
    #[error(
        "{what} {name:?} is refused: {reason}; a name read from a file must be one plain path \
         component"
    )]
    UnsafeName {
        what: String,
        name: String,
        reason: &'static str,
    },
    /// cm3 deletes or replaces only what it wrote, in a directory it can prove is its own.
    #[error("{path}: {reason}")]
    NotOurs { path: PathBuf, reason: String },
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

impl CoreError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
