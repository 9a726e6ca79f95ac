//! An HNSW index on disk (`search.bin`): its graph and its vectors, in the order a search reads
//! them.
//!
//! Searching a saved index reads only this file, and adding to it builds on what it holds (every
//! point's links on every layer it reaches). That keeps a search process at about one copy of the
//! vectors, and loading at a sequential read.
//!
//! Layout, little-endian: magic `CM3HNSWL`, u32 version, u64 n, u64 dim, u32 entry, u32 upper
//! layers; n × u32 positions; (n + 1) × u64 layer-0 offsets; layer-0 neighbours as u32; per upper
//! layer a u64 count and, per point in ascending order, u32 point, u32 count, the neighbours as
//! u32; n × dim × f32 vectors in search order; nothing after. Every number is checked on reading,
//! so that a damaged file is an error, not an out-of-bounds search.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{Adjacency, Links, Vectors};
use crate::error::{IndexError, Result};

const MAGIC: &[u8; 8] = b"CM3HNSWL";
const VERSION: u32 = 1;

/// Write `graph` and the vectors `rows` (in search order, `graph.dim` each) to `path`.
pub(super) fn write<'r>(
    path: &Path,
    graph: &Adjacency,
    rows: impl Iterator<Item = &'r [f32]>,
) -> Result<()> {
    let io = |e| IndexError::io("writing the HNSW search file", path, e);
    let file = File::create(path).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let n = graph.position.len();
    let mut put = |bytes: &[u8]| w.write_all(bytes).map_err(io);
    put(MAGIC)?;
    put(&VERSION.to_le_bytes())?;
    put(&(n as u64).to_le_bytes())?;
    put(&(graph.dim as u64).to_le_bytes())?;
    put(&graph.entry.to_le_bytes())?;
    put(&(graph.upper.len() as u32).to_le_bytes())?;
    put(&u32_bytes(&graph.position))?;
    let offsets: Vec<u8> = graph
        .offsets
        .iter()
        .flat_map(|&o| (o as u64).to_le_bytes())
        .collect();
    put(&offsets)?;
    put(&u32_bytes(&graph.level0))?;
    for layer in &graph.upper {
        put(&(layer.len() as u64).to_le_bytes())?;
        // Ascending, so that the same graph always gives the same bytes.
        let mut points: Vec<(&u32, &Vec<u32>)> = layer.iter().collect();
        points.sort_unstable_by_key(|(p, _)| **p);
        for (&p, nbs) in points {
            put(&p.to_le_bytes())?;
            put(&(nbs.len() as u32).to_le_bytes())?;
            put(&u32_bytes(nbs))?;
        }
    }
    let mut buf = Vec::with_capacity(graph.dim * 4);
    for row in rows {
        buf.clear();
        buf.extend(row.iter().flat_map(|x| x.to_le_bytes()));
        put(&buf)?;
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The search copy saved in `path`, for an index of `count` vectors of dimension `dim`;
/// `None` if there is no such file (an index saved before it existed).
pub(super) fn read(path: &Path, count: usize, dim: usize) -> Result<Option<Links>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IndexError::io("opening the HNSW search file", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| IndexError::io("reading the HNSW search file", path, e))?
        .len();
    let mut input = Input {
        r: BufReader::with_capacity(1 << 20, file),
        left: len,
        path: path.to_path_buf(),
    };
    let magic = input.bytes(8)?;
    let version = input.u32()?;
    if magic != MAGIC || version != VERSION {
        return Err(input.corrupt(format!(
            "not a cm3 HNSW search file of version {VERSION} (rebuild with --rebuild)"
        )));
    }
    let (n, d) = (input.u64()?, input.u64()?);
    if n != count as u64 || d != dim as u64 {
        return Err(input.corrupt(format!(
            "holds {n} vectors of dimension {d}, the index {count} of dimension {dim}"
        )));
    }
    let (entry, layers) = (input.u32()?, input.u32()?);
    let in_range = |i: u32| (i as usize) < count;
    if count == 0 || !in_range(entry) {
        return Err(input.corrupt(format!("entry point {entry} outside {count} points")));
    }
    let position = input.u32s(n)?;
    let mut seen = vec![false; count];
    if !position
        .iter()
        .all(|&p| in_range(p) && !std::mem::replace(&mut seen[p as usize], true))
    {
        return Err(input.corrupt("the positions are not a permutation of the points".into()));
    }
    let offsets: Vec<usize> = input
        .u64s(n + 1)?
        .into_iter()
        .map(|o| usize::try_from(o).unwrap_or(usize::MAX))
        .collect();
    if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(input.corrupt("layer-0 offsets do not ascend from 0".into()));
    }
    let level0 = input.u32s(offsets[count] as u64)?;
    if !level0.iter().all(|&i| in_range(i)) {
        return Err(input.corrupt("a layer-0 neighbour outside the points".into()));
    }
    let mut upper = Vec::new();
    for _ in 0..layers {
        let points = input.u64()?;
        if points > count as u64 {
            return Err(input.corrupt(format!("an upper layer of {points} points")));
        }
        let mut layer = HashMap::with_capacity(points as usize);
        for _ in 0..points {
            let (p, k) = (input.u32()?, input.u32()?);
            let nbs = input.u32s(u64::from(k))?;
            if !in_range(p) || !nbs.iter().all(|&i| in_range(i)) {
                return Err(input.corrupt("an upper-layer link outside the points".into()));
            }
            layer.insert(p, nbs);
        }
        upper.push(layer);
    }
    // What is left is exactly the vectors, checked before allocating them (`dim` comes from the
    // index's metadata, which the file's header only has to repeat).
    let floats = count
        .checked_mul(dim)
        .filter(|f| f.checked_mul(4) == usize::try_from(input.left).ok());
    let Some(floats) = floats else {
        return Err(input.corrupt(format!(
            "{} bytes left for {count} vectors of dimension {dim} (truncated or padded; rebuild \
             with --rebuild)",
            input.left
        )));
    };
    let mut data = Vectors::zeros(floats);
    input.f32s_into(data.as_mut_slice())?;
    Ok(Some(Links {
        data,
        graph: Adjacency {
            dim,
            offsets,
            level0,
            upper,
            entry,
            position,
        },
    }))
}

/// A bounded reader: every read is checked against the bytes left, so that a damaged count
/// cannot ask for more memory than the file holds.
struct Input {
    r: BufReader<File>,
    left: u64,
    path: PathBuf,
}

impl Input {
    fn corrupt(&self, reason: String) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn take(&mut self, bytes: u64) -> Result<()> {
        if bytes > self.left {
            return Err(self.corrupt(format!(
                "truncated: {bytes} more bytes needed, {} left (rebuild with --rebuild)",
                self.left
            )));
        }
        self.left -= bytes;
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.take(buf.len() as u64)?;
        let path = self.path.clone();
        self.r
            .read_exact(buf)
            .map_err(|e| IndexError::io("reading the HNSW search file", path, e))
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; n];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// `count` items of `size` bytes, checked against the bytes left before allocating.
    fn array(&mut self, count: u64, size: u64) -> Result<Vec<u8>> {
        let bytes = count
            .checked_mul(size)
            .filter(|&b| b <= self.left)
            .ok_or_else(|| {
                self.corrupt(format!(
                    "truncated: {count} items of {size} bytes, {} bytes left",
                    self.left
                ))
            })?;
        self.bytes(bytes as usize)
    }

    fn u32s(&mut self, count: u64) -> Result<Vec<u32>> {
        let b = self.array(count, 4)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn u64s(&mut self, count: u64) -> Result<Vec<u64>> {
        let b = self.array(count, 8)?;
        Ok(b.chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    /// Fills `out` with f32, a megabyte at a time (no second copy of the vectors).
    fn f32s_into(&mut self, out: &mut [f32]) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        for chunk in out.chunks_mut(buf.len() / 4) {
            let bytes = &mut buf[..chunk.len() * 4];
            self.fill(bytes)?;
            for (x, b) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(())
    }
}
