use std::path::PathBuf;

/// Everything that can go wrong in an evaluation; each variant names the input it is about.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// An input file or value that is readable but wrong (missing ids, empty captions, a
    /// predictions file naming images the references lack, ...).
    #[error("{what}: {reason}")]
    Input { what: String, reason: String },
    /// A model (ONNX file) that cannot be loaded or run, or has the wrong shape.
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error(transparent)]
    Embed(#[from] cm3_embed::EmbedError),
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
    #[error(transparent)]
    Generate(#[from] cm3_generate::GenerateError),
    #[error(transparent)]
    Tokenize(#[from] cm3_tokenize::TokenizeError),
    #[error("numerics: {0}")]
    Numeric(String),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

impl EvalError {
    pub(crate) fn input(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Input {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
