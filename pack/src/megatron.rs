//! Megatron-LM's indexed dataset (`megatron/core/datasets/indexed_dataset.py`, "MMIDIDX"): a
//! `.bin` of token ids back to back and an `.idx` that locates each sequence:
//!
//! ```text
//! b"MMIDIDX\x00\x00"   9 bytes
//! version              u64 = 1
//! dtype code           u8  = 4 (int32: the vocabulary exceeds 65,535)
//! sequence count       u64
//! document count       u64 (length of the document index)
//! sequence lengths     i32 × sequence count
//! sequence pointers    i64 × sequence count (byte offsets into .bin)
//! document index       i64 × document count (sequence numbers where documents start, then the count)
//! ```
//!
//! All little-endian. Each packed sequence is one "document" here.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{PackError, Result};

pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
pub const VERSION: u64 = 1;
/// Megatron's `DType` code of int32.
pub const DTYPE_INT32: u8 = 4;

fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> PackError + 'a {
    move |e| PackError::Io {
        op,
        path: path.to_path_buf(),
        source: e,
    }
}

/// Appends sequences to `<prefix>.bin`; [`IndexedWriter::commit`] makes them visible by
/// writing `<prefix>.idx` (atomically, after the `.bin` is synced). Between commits the `.bin`
/// may hold bytes the index does not describe yet; [`IndexedWriter::append`] cuts them off, so
/// an interrupted run leaves the last committed dataset intact.
#[derive(Debug)]
pub struct IndexedWriter {
    prefix: PathBuf,
    bin_path: PathBuf,
    bin: BufWriter<File>,
    lengths: Vec<i32>,
    pointers: Vec<i64>,
    offset: i64,
    /// Reused for each sequence's little-endian bytes.
    buf: Vec<u8>,
}

impl IndexedWriter {
    /// Start an empty dataset (an existing one is replaced).
    pub fn create(prefix: &Path) -> Result<Self> {
        Self::append(prefix, 0)
    }

    /// Continue the dataset at `prefix` after its first `keep` sequences (all that a committed
    /// index must already describe); anything after them is cut off.
    pub fn append(prefix: &Path, keep: usize) -> Result<Self> {
        let bin_path = prefix.with_extension("bin");
        let (mut lengths, mut pointers) = if keep > 0 {
            read_index(&prefix.with_extension("idx"))?
        } else {
            (Vec::new(), Vec::new())
        };
        if lengths.len() < keep {
            return Err(PackError::Format {
                path: prefix.with_extension("idx"),
                reason: format!("{} sequences, {keep} were recorded", lengths.len()),
            });
        }
        lengths.truncate(keep);
        pointers.truncate(keep);
        let offset = lengths.iter().map(|&l| i64::from(l) * 4).sum::<i64>();
        // Never through a link planted at the name: it would truncate whatever it points at.
        let f = cm3_core::fsio::open_in_place(&bin_path)?;
        let have = f.metadata().map_err(io("reading", &bin_path))?.len();
        if have < offset as u64 {
            return Err(PackError::Format {
                path: bin_path,
                reason: format!("{have} bytes, the index describes {offset}"),
            });
        }
        f.set_len(offset as u64)
            .map_err(io("truncating", &bin_path))?;
        let mut f = f;
        f.seek(SeekFrom::End(0)).map_err(io("seeking", &bin_path))?;
        Ok(Self {
            prefix: prefix.to_path_buf(),
            bin_path,
            bin: BufWriter::with_capacity(1 << 20, f),
            lengths,
            pointers,
            offset,
            buf: Vec::new(),
        })
    }

    pub fn push(&mut self, tokens: &[u32]) -> Result<()> {
        let len = i32::try_from(tokens.len())
            .map_err(|_| PackError::Invalid(format!("a sequence of {} tokens", tokens.len())))?;
        if let Some(&t) = tokens.iter().find(|&&t| t > i32::MAX as u32) {
            return Err(PackError::Invalid(format!(
                "token id {t} does not fit int32"
            )));
        }
        self.buf.clear();
        for &t in tokens {
            self.buf.extend_from_slice(&t.to_le_bytes());
        }
        self.bin
            .write_all(&self.buf)
            .map_err(io("writing", &self.bin_path))?;
        self.lengths.push(len);
        self.pointers.push(self.offset);
        self.offset += self.buf.len() as i64;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Sync the `.bin`, then write the `.idx` atomically: the sequences pushed so far are in.
    pub fn commit(&mut self) -> Result<()> {
        self.bin.flush().map_err(io("flushing", &self.bin_path))?;
        self.bin
            .get_ref()
            .sync_all()
            .map_err(io("syncing", &self.bin_path))?;
        let n = self.lengths.len();
        let mut idx = Vec::with_capacity(34 + n * 12 + (n + 1) * 8);
        idx.extend_from_slice(MAGIC);
        idx.extend_from_slice(&VERSION.to_le_bytes());
        idx.push(DTYPE_INT32);
        idx.extend_from_slice(&(n as u64).to_le_bytes());
        idx.extend_from_slice(&((n + 1) as u64).to_le_bytes());
        for l in &self.lengths {
            idx.extend_from_slice(&l.to_le_bytes());
        }
        for p in &self.pointers {
            idx.extend_from_slice(&p.to_le_bytes());
        }
        for d in 0..=n as i64 {
            idx.extend_from_slice(&d.to_le_bytes());
        }
        cm3_core::fsio::write_atomic(&self.prefix.with_extension("idx"), &idx, "pack")?;
        Ok(())
    }

    /// Commit and close; returns the `.bin` and `.idx` paths.
    pub fn finish(mut self) -> Result<(PathBuf, PathBuf)> {
        self.commit()?;
        Ok((self.bin_path.clone(), self.prefix.with_extension("idx")))
    }
}

/// Sequence lengths and pointers of an `.idx`.
pub fn read_index(idx_path: &Path) -> Result<(Vec<i32>, Vec<i64>)> {
    let mut idx = Vec::new();
    File::open(idx_path)
        .and_then(|mut f| f.read_to_end(&mut idx))
        .map_err(io("reading", idx_path))?;
    let d = parse_index(idx_path, &idx)?;
    Ok((d.0, d.1))
}

type Index = (Vec<i32>, Vec<i64>, Vec<i64>);

fn parse_index(idx_path: &Path, idx: &[u8]) -> Result<Index> {
    let bad = |reason: String| PackError::Format {
        path: idx_path.to_path_buf(),
        reason,
    };
    if idx.len() < 34 || &idx[..9] != MAGIC {
        return Err(bad(
            "not a Megatron-LM indexed dataset (no MMIDIDX header)".into()
        ));
    }
    let u64_at = |o: usize| u64::from_le_bytes(idx[o..o + 8].try_into().unwrap_or([0; 8]));
    if u64_at(9) != VERSION {
        return Err(bad(format!("version {}, expected {VERSION}", u64_at(9))));
    }
    if idx[17] != DTYPE_INT32 {
        return Err(bad(format!(
            "dtype code {}, expected {DTYPE_INT32} (int32)",
            idx[17]
        )));
    }
    let (n, m) = (u64_at(18) as usize, u64_at(26) as usize);
    let need = n
        .checked_mul(12)
        .and_then(|x| x.checked_add(m.checked_mul(8)?))
        .and_then(|x| x.checked_add(34));
    if need != Some(idx.len()) {
        return Err(bad(format!(
            "{} bytes for {n} sequences and {m} documents",
            idx.len()
        )));
    }
    let lengths = idx[34..34 + n * 4]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let i64s = |s: &[u8]| -> Vec<i64> {
        s.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()
    };
    let pointers = i64s(&idx[34 + n * 4..34 + n * 12]);
    let documents = i64s(&idx[34 + n * 12..]);
    Ok((lengths, pointers, documents))
}

/// A whole indexed dataset read into memory (for tests, `cm3 inspect` and small datasets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedDataset {
    pub lengths: Vec<i32>,
    pub pointers: Vec<i64>,
    pub documents: Vec<i64>,
    pub tokens: Vec<i32>,
}

impl IndexedDataset {
    pub fn read(prefix: &Path) -> Result<Self> {
        let idx_path = prefix.with_extension("idx");
        let bin_path = prefix.with_extension("bin");
        let mut idx = Vec::new();
        File::open(&idx_path)
            .and_then(|mut f| f.read_to_end(&mut idx))
            .map_err(io("reading", &idx_path))?;
        let (lengths, pointers, documents) = parse_index(&idx_path, &idx)?;
        let mut bin = Vec::new();
        File::open(&bin_path)
            .and_then(|mut f| f.read_to_end(&mut bin))
            .map_err(io("reading", &bin_path))?;
        let total: i64 = lengths.iter().map(|&l| i64::from(l) * 4).sum();
        // Bytes after the described ones are an uncommitted append, not part of the dataset.
        if (bin.len() as i64) < total {
            return Err(PackError::Format {
                path: bin_path,
                reason: format!("{} bytes, the index describes {total}", bin.len()),
            });
        }
        bin.truncate(total as usize);
        let tokens = bin
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            lengths,
            pointers,
            documents,
            tokens,
        })
    }

    /// Sequence `i`'s tokens.
    pub fn sequence(&self, i: usize) -> &[i32] {
        let start = (self.pointers[i] / 4) as usize;
        &self.tokens[start..start + self.lengths[i] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link planted at `train.bin` is refused, not followed: before, `create` truncated the
    /// file it pointed at and wrote the sequences into it.
    #[cfg(unix)]
    #[test]
    fn a_link_at_the_bin_is_not_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("w");
        std::os::unix::fs::symlink(&victim, dir.path().join("train.bin")).expect("ln");
        let err = IndexedWriter::create(&dir.path().join("train")).expect_err("a link");
        assert!(
            err.to_string().contains("train.bin") && err.to_string().contains("symbolic link"),
            "{err}"
        );
        assert_eq!(std::fs::read(&victim).expect("r"), b"precious");
    }

    #[test]
    fn writes_what_it_reads() {
        let dir = tempfile::tempdir().expect("tmp");
        let prefix = dir.path().join("train");
        let mut w = IndexedWriter::create(&prefix).expect("create");
        w.push(&[1, 2, 3, 70_000]).expect("push");
        w.push(&[4, 5, 6, 7]).expect("push");
        let (bin, idx) = w.finish().expect("finish");
        assert_eq!(std::fs::metadata(bin).expect("bin").len(), 32);
        let bytes = std::fs::read(&idx).expect("idx");
        assert_eq!(&bytes[..9], b"MMIDIDX\x00\x00");
        assert_eq!(bytes.len(), 34 + 2 * 4 + 2 * 8 + 3 * 8);
        let d = IndexedDataset::read(&prefix).expect("read");
        assert_eq!(d.lengths, vec![4, 4]);
        assert_eq!(d.pointers, vec![0, 16]);
        assert_eq!(d.documents, vec![0, 1, 2]);
        assert_eq!(d.sequence(0), &[1, 2, 3, 70_000]);
        assert_eq!(d.sequence(1), &[4, 5, 6, 7]);
        // Appending after the first sequence cuts the second and continues from there.
        let mut w = IndexedWriter::append(&prefix, 1).expect("append");
        w.push(&[9, 9]).expect("push");
        w.commit().expect("commit");
        let d = IndexedDataset::read(&prefix).expect("read");
        assert_eq!(d.lengths, vec![4, 2]);
        assert_eq!(d.sequence(1), &[9, 9]);
        // Uncommitted bytes after the last commit are not part of the dataset.
        w.push(&[8, 8, 8]).expect("push");
        drop(w);
        assert_eq!(
            IndexedDataset::read(&prefix).expect("read").lengths,
            vec![4, 2]
        );
    }

    #[test]
    fn truncated_files_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let prefix = dir.path().join("val");
        let mut w = IndexedWriter::create(&prefix).expect("create");
        w.push(&[1, 2, 3]).expect("push");
        w.finish().expect("finish");
        let bin = prefix.with_extension("bin");
        let data = std::fs::read(&bin).expect("bin");
        std::fs::write(&bin, &data[..8]).expect("truncate");
        let e = IndexedDataset::read(&prefix).expect_err("short bin");
        assert!(e.to_string().contains("describes 12"), "{e}");
        std::fs::write(
            prefix.with_extension("idx"),
            b"not an index at all, no header here",
        )
        .expect("w");
        let e = IndexedDataset::read(&prefix).expect_err("junk idx");
        assert!(e.to_string().contains("MMIDIDX"), "{e}");
    }
}
