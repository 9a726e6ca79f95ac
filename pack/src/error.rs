use std::path::PathBuf;

/// Errors of the pack stage. Every variant names the file, example or setting involved.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
    /// An indexed dataset file that is not what it claims to be.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// A token sequence that is not a causal-masked example.
    #[error("not a causal-masked example: {0}")]
    Unmask(String),
    /// A setting that cannot work.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, PackError>;
