use std::path::PathBuf;

/// Errors of the index stage. Every variant names the file, index or vector involved.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] cm3_core::CoreError),
    #[error("{path}: {reason}")]
    Vectors { path: PathBuf, reason: String },
    #[error("{what}: vectors have dimension {found}, the index has {expected}")]
    Dimension {
        what: String,
        expected: usize,
        found: usize,
    },
    #[error("{what}: row {row} has a non-finite value (NaN or infinity)")]
    NonFinite { what: String, row: usize },
    #[error(
        "{what}: row {row} has norm {norm:.6}, not 1 (the index holds unit vectors for inner-product \
         search); drop --strict to normalise such rows with a warning"
    )]
    NotUnit { what: String, row: usize, norm: f32 },
    #[error("{what}: row {row} is all zeros and cannot be normalised")]
    ZeroVector { what: String, row: usize },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    /// cm3 deletes or replaces only what its index records say it wrote.
    #[error("{path}: {reason}")]
    NotOurs { path: PathBuf, reason: String },
    #[error(
        "index kind `{0}` needs cm3 built with the `faiss` cargo feature \
         (cargo build --release -p cm3 --features faiss; see the README)"
    )]
    FeatureOff(String),
    #[error("{op}: {reason}")]
    Backend { op: &'static str, reason: String },
}

pub type Result<T, E = IndexError> = std::result::Result<T, E>;

impl IndexError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
