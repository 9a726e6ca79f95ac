use std::path::PathBuf;

/// Errors of the models. Every variant names the file, tensor or operation involved.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model configuration that cannot describe a working model.
    #[error("{origin}: {reason}")]
    Config { origin: String, reason: String },
    /// A checkpoint that does not fit the model (missing, extra or misshapen tensors).
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// Input of the wrong shape or range.
    #[error("{op}: {reason}")]
    Input { op: &'static str, reason: String },
    /// Reading a tensor back from the backend failed.
    #[error("{op}: {reason}")]
    Tensor { op: &'static str, reason: String },
    /// Writing a file durably (atomic rename, fsync).
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
}

pub type Result<T> = std::result::Result<T, ModelError>;
