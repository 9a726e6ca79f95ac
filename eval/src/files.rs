//! Reading the user's files: regular files only, bounded before anything is allocated.
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{EvalError, Result};

/// A regular file's bytes, refusing anything else and anything over `limit` bytes.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(EvalError::input(
            path.display().to_string(),
            "not a regular file",
        ));
    }
    if meta.len() > limit {
        return Err(EvalError::input(
            path.display().to_string(),
            format!("{} bytes, more than the {limit} read", meta.len()),
        ));
    }
    std::fs::read(path).map_err(io)
}

/// A JSON file of at most `limit` bytes, parsed into `T`.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path, limit: u64) -> Result<T> {
    serde_json::from_slice(&read_bounded(path, limit)?).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}
