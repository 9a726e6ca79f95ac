//! The small files every index kind writes beside its data: JSON metadata and an `ids.npy`.
//! Files are written plainly; [`crate::store::commit`] fsyncs every file of a generation before
//! committing it, whoever wrote it (FAISS writes its own).
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use cm3_embed::npy::{self, Dtype};

use crate::error::{IndexError, Result};

/// Write `header` then whatever `body` writes, buffered.
pub(crate) fn write_file(
    path: &Path,
    header: &[u8],
    body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let f = File::create(path).map_err(|e| IndexError::io("creating", path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(header)
        .and_then(|_| body(&mut w))
        .and_then(|_| w.flush())
        .map_err(|e| IndexError::io("writing", path, e))
}

/// Ids as a 1-d `<u8` `.npy`.
pub(crate) fn write_ids(path: &Path, ids: &[u64]) -> Result<()> {
    write_file(path, &npy::header(Dtype::U64, &[ids.len()]), |w| {
        ids.iter().try_for_each(|id| w.write_all(&id.to_le_bytes()))
    })
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| IndexError::Invalid(e.to_string()))?;
    write_file(path, &text, |_| Ok(()))
}

/// Read metadata written by [`write_json`]; unreadable JSON is a corrupt index.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| IndexError::io("reading", path, e))?;
    serde_json::from_str(&text).map_err(|e| IndexError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
