use std::path::PathBuf;

/// Errors of training. Every variant names the run, dataset file or step involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset that cannot be trained on (missing or truncated files, another vocabulary).
    #[error("dataset {path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    /// A run directory that does not fit the request.
    #[error("run {path}: {reason}")]
    Run { path: PathBuf, reason: String },
    /// A pretrained model that cannot start this run (`--init-from`).
    #[error("pretrained model {path}: {reason}")]
    Init { path: PathBuf, reason: String },
    #[error("training config: {0}")]
    Config(String),
    /// The loss became NaN or infinite.
    #[error("{0}")]
    Diverged(String),
    #[error(transparent)]
    Model(#[from] cm3_model::ModelError),
    #[error(transparent)]
    Pack(#[from] cm3_pack::PackError),
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
}

pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { op, path, source }
}
