//! Crash-safe file output: write to a temporary name in the same directory, fsync, rename, fsync the
//! directory. A reader (or a resumed run) therefore sees either the previous file or the finished new
//! one, never a half-written file under the final name.
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, Write};
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
        let file = create_tmp(&tmp)?;
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

/// Create the temporary file `tmp` exclusively (`O_CREAT|O_EXCL`, which never follows a symbolic
/// link). A regular file left there by a crashed writer with the same tag is removed and the
/// creation retried; anything else at the name (a planted link, a folder) is refused, so that
/// writing never reaches a file outside the output.
fn create_tmp(tmp: &Path) -> Result<File> {
    let create = || File::options().write(true).create_new(true).open(tmp);
    match create() {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(CoreError::io("creating", tmp, e));
        }
        Err(_) => {}
    }
    let md = fs::symlink_metadata(tmp).map_err(|e| CoreError::io("inspecting", tmp, e))?;
    if !md.file_type().is_file() {
        return Err(CoreError::NotOurs {
            path: tmp.to_path_buf(),
            reason: format!(
                "a {} is in the way of cm3's temporary file; cm3 does not write through or remove \
                 it: remove it yourself if it is not needed",
                kind_name(&md.file_type())
            ),
        });
    }
    fs::remove_file(tmp).map_err(|e| CoreError::io("removing stale temporary file", tmp, e))?;
    create().map_err(|e| CoreError::io("creating", tmp, e))
}

fn kind_name(t: &fs::FileType) -> &'static str {
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Open `path` for reading and writing, creating it if absent, without following a symbolic
/// link at its name (`O_NOFOLLOW`): for files that are appended to in place, where a planted
/// link would make cm3 truncate and overwrite whatever it points at.
pub fn open_in_place(path: &Path) -> Result<File> {
    let mut opts = File::options();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(not(unix))]
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(link_refused(path));
    }
    let f = opts.open(path).map_err(|e| {
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            link_refused(path)
        } else {
            CoreError::io("opening", path, e)
        }
    })?;
    if !f
        .metadata()
        .map_err(|e| CoreError::io("inspecting", path, e))?
        .is_file()
    {
        return Err(CoreError::NotOurs {
            path: path.to_path_buf(),
            reason: "not a regular file; cm3 writes its output only into files".into(),
        });
    }
    Ok(f)
}

fn link_refused(path: &Path) -> CoreError {
    CoreError::NotOurs {
        path: path.to_path_buf(),
        reason: "a symbolic link where cm3 keeps its own file; cm3 does not write through links: \
                 remove it (or rebuild the output)"
            .into(),
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

/// Writes `bytes` at offset `at` of `path` (created if missing), cutting off whatever followed
/// `at` (a line a crash cut short), and syncs it: an append that is on disk when this returns.
pub fn append_durably(path: &Path, at: u64, bytes: &[u8]) -> Result<()> {
    let created = !path.exists();
    let mut f = open_in_place(path)?;
    f.set_len(at)
        .map_err(|e| CoreError::io("truncating", path, e))?;
    f.seek(io::SeekFrom::Start(at))
        .map_err(|e| CoreError::io("seeking", path, e))?;
    f.write_all(bytes)
        .map_err(|e| CoreError::io("writing", path, e))?;
    f.sync_data().map_err(|e| CoreError::io("fsync", path, e))?;
    if created {
        sync_dir(path.parent().unwrap_or(Path::new("")))?;
    }
    Ok(())
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

    /// A link planted at the temporary name is neither followed nor removed; a regular file left
    /// by a crash is replaced.
    #[cfg(unix)]
    #[test]
    fn temporary_files_never_follow_a_planted_link() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").map_err(|e| CoreError::io("w", &victim, e))?;
        let dst = dir.path().join("a.bin");
        let tmp = dir.path().join(".a.bin.tmp-t0");
        std::os::unix::fs::symlink(&victim, &tmp).map_err(|e| CoreError::io("ln", &tmp, e))?;
        let err = write_atomic(&dst, b"new", "t0").expect_err("a link is in the way");
        assert!(matches!(err, CoreError::NotOurs { .. }), "{err}");
        assert!(err.to_string().contains(".a.bin.tmp-t0"), "{err}");
        assert_eq!(fs::read(&victim).ok().as_deref(), Some(&b"precious"[..]));
        assert!(!dst.exists());
        // A dangling link is not followed into creating its target either.
        fs::remove_file(&tmp).map_err(|e| CoreError::io("rm", &tmp, e))?;
        let target = dir.path().join("made-through-link");
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| CoreError::io("ln", &tmp, e))?;
        assert!(write_atomic(&dst, b"new", "t0").is_err());
        assert!(!target.exists());
        // A crash leftover (a regular file) is replaced.
        fs::remove_file(&tmp).map_err(|e| CoreError::io("rm", &tmp, e))?;
        fs::write(&tmp, b"half").map_err(|e| CoreError::io("w", &tmp, e))?;
        write_atomic(&dst, b"new", "t0")?;
        assert_eq!(fs::read(&dst).ok().as_deref(), Some(&b"new"[..]));
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn in_place_files_never_follow_a_planted_link() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| CoreError::io("tempdir", "/tmp", e))?;
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").map_err(|e| CoreError::io("w", &victim, e))?;
        let bin = dir.path().join("train.bin");
        std::os::unix::fs::symlink(&victim, &bin).map_err(|e| CoreError::io("ln", &bin, e))?;
        let err = open_in_place(&bin).expect_err("a link");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).ok().as_deref(), Some(&b"precious"[..]));
        let plain = dir.path().join("val.bin");
        open_in_place(&plain)?;
        assert!(plain.is_file());
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

/// The bytes of an input file that must be a regular file (symlinks to one are followed) of at
/// most `limit` bytes: a FIFO would block forever and a device (`/dev/zero`) never ends, so
/// both are refused before anything is read, and nothing beyond `limit + 1` bytes is ever read
/// (a file growing while it is read, or one whose size the kernel does not report, included).
pub fn read_input(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO, socket or device)",
        ));
    }
    let too_large = |n: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{n} bytes or more, over the {limit} bytes cm3 reads from one input file"),
        )
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

#[cfg(test)]
mod read_input_tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.txt");
        std::fs::write(&f, b"hello").expect("write");
        assert_eq!(read_input(&f, 5).expect("read"), b"hello");
        let err = read_input(&f, 4).expect_err("too large");
        assert!(err.to_string().contains("over the 4 bytes"), "{err}");
        let err = read_input(dir.path(), 10).expect_err("a directory");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        #[cfg(unix)]
        {
            let err = read_input(Path::new("/dev/zero"), 10).expect_err("a device");
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }
}
