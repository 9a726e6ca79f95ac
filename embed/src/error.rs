use std::path::PathBuf;

/// Errors of the embedding stage; every variant names the file or input involved.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
    #[error("{what}: invalid CLIP BPE vocabulary: {reason}")]
    Vocabulary { what: String, reason: String },
    #[error("image: {0}")]
    Image(String),
    #[error("{0}")]
    Runtime(String),
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("hf:{repo}: {reason}")]
    Hub { repo: String, reason: String },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = EmbedError> = std::result::Result<T, E>;
