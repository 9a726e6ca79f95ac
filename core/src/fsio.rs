//! Crash-safe file output: write to a temporary name in the same directory, fsync, rename, fsync the
//! directory. A reader (or a resumed run) therefore sees either the previous file or the finished new
//! one, never a half-written file under the final name.
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

/// Suffix marker of temporary files; `tag` identifies the writer so that concurrent workers never
/// remove each other's files when cleaning up after a crash.
fn tmp_name(dst: &Path, tag: &str) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dst.with_file_name(format!(".{name}.tmp-{tag}"))
}

/// A writer that hashes (SHA-256) and counts what passes through it, so a shard's checksum is known
/// when it is written without reading it back.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn into_parts(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file being written under a temporary name; [`AtomicFile::commit`] makes it visible.
/// Dropping it without committing removes the temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    dst: PathBuf,
    tmp: PathBuf,
    writer: Option<HashingWriter<BufWriter<File>>>,
}

/// What a committed file is: its size and SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub sha256: String,
}

impl AtomicFile {
    pub fn create(dst: impl Into<PathBuf>, tag: &str) -> Result<Self> {
        let dst = dst.into();
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| CoreError::io("creating directory", parent, e))?;
        }
        let tmp = tmp_name(&dst, tag);
        let file = File::create(&tmp).map_err(|e| CoreError::io("creating", &tmp, e))?;
        Ok(Self {
            dst,
            tmp,
            writer: Some(HashingWriter::new(BufWriter::with_capacity(1 << 20, file))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dst
    }

    pub fn writer(&mut self) -> &mut HashingWriter<BufWriter<File>> {
        // Only `commit` takes the writer, and it consumes `self`.
        self.writer.as_mut().expect("writer present until commit")
    }

    /// Flush, fsync, rename over the final name and fsync the directory.
    pub fn commit(mut self) -> Result<Written> {
        let Some(writer) = self.writer.take() else {
            unreachable!("commit called twice")
        };
        let (buf, sha256, bytes) = writer.into_parts();
        let file = buf
            .into_inner()
            .map_err(|e| CoreError::io("writing", &self.tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| CoreError::io("fsync", &self.tmp, e))?;
        drop(file);
        fs::rename(&self.tmp, &self.dst)
            .map_err(|e| CoreError::io("renaming into place", &self.dst, e))?;
        if let Some(parent) = self.dst.parent() {
            sync_dir(parent)?;
        }
        Ok(Written { bytes, sha256 })
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Write `bytes` to `dst` atomically.
pub fn write_atomic(dst: &Path, bytes: &[u8], tag: &str) -> Result<Written> {
    let mut f = AtomicFile::create(dst, tag)?;
    f.writer()
        .write_all(bytes)
        .map_err(|e| CoreError::io("writing", dst, e))?;
    f.commit()
}

/// fsync a directory so that a rename inside it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    // The parent of a bare file name (`--out n.npy`) is "", the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let d = File::open(dir).map_err(|e| CoreError::io("opening directory", dir, e))?;
    d.sync_all()
        .map_err(|e| CoreError::io("fsync directory", dir, e))
}

/// Remove temporary files left in `dir` by a crashed writer with the same `tag`.
pub fn remove_stale_tmp(dir: &Path, tag: &str) -> Result<usize> {
    let suffix = format!(".tmp-{tag}");
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(CoreError::io("listing", dir, e)),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry.map_err(|e| CoreError::io("listing", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(&suffix) {
            fs::remove_file(entry.path())
                .map_err(|e| CoreError::io("removing", entry.path(), e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// SHA-256 (hex) and size of a file on disk.
pub fn sha256_file(path: &Path) -> Result<Written> {
    let mut f = File::open(path).map_err(|e| CoreError::io("opening", path, e))?;
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut f, &mut w).map_err(|e| CoreError::io("reading", path, e))?;
    let (_, sha256, bytes) = w.into_parts();
    Ok(Written { bytes, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_makes_file_visible_with_checksum() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let dst = dir.path().join("a.bin");
        let w = write_atomic(&dst, b"hello", "t0")?;
        assert_eq!(fs::read(&dst).ok().as_deref(), Some(&b"hello"[..]));
        // sha256("hello"), from `printf hello | sha256sum`.
        assert_eq!(
            w.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(sha256_file(&dst)?, w);
        Ok(())
    }

    /// `write_atomic("n.npy", ..)` syncs the parent of a bare file name: "", the current directory.
    #[test]
    fn the_parent_of_a_bare_file_name_is_the_current_directory() -> Result<()> {
        sync_dir(Path::new(""))?;
        Ok(())
    }

    #[test]
    fn dropped_file_leaves_nothing() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let dst = dir.path().join("b.bin");
        {
            let mut f = AtomicFile::create(&dst, "t1")?;
            f.writer()
                .write_all(b"partial")
                .map_err(|e| CoreError::io("w", &dst, e))?;
        }
        assert!(!dst.exists());
        assert_eq!(fs::read_dir(dir.path()).map(|d| d.count()).ok(), Some(0));
        Ok(())
    }

    #[test]
    fn stale_tmp_cleanup_is_per_tag() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        fs::write(dir.path().join(".x.parquet.tmp-w0"), b"1")
            .map_err(|e| CoreError::io("w", dir.path(), e))?;
        fs::write(dir.path().join(".y.parquet.tmp-w1"), b"1")
            .map_err(|e| CoreError::io("w", dir.path(), e))?;
        assert_eq!(remove_stale_tmp(dir.path(), "w0")?, 1);
        assert!(dir.path().join(".y.parquet.tmp-w1").exists());
        Ok(())
    }
}
