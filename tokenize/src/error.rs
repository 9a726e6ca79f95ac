use std::path::PathBuf;

/// Errors of the tokenizers and the tokenize stage. Every variant names the file, shard or id.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
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
    Model(#[from] cm3_model::ModelError),
    /// A tokenizer file that cannot be read, or is not the kind this layout needs.
    #[error("{path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    /// Training could not run or produced something unusable.
    #[error("training the text tokenizer: {0}")]
    Train(String),
    /// Ids that are not in the vocabulary.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// The dataset is not ready for this step.
    #[error("{path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    /// A setting that cannot work.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, TokenizeError>;
