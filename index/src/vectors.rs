//! Reading vectors (`.npy` f32/f16, `.fvecs`) and ids (`.npy` integers), and checking them:
//! dimension, finite values, unit norm.
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use cm3_embed::npy::Npy;

use crate::error::{IndexError, Result};

/// A row-major matrix of f32 vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Vectors {
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// How far a norm may be from 1 and still count as a unit vector: float16 storage (what
/// `cm3 embed` and clip-retrieval write) moves norms by about 1e-3.
pub const UNIT_TOLERANCE: f32 = 1e-2;

fn bad(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::Vectors {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Read a matrix of vectors: `.npy` (float32 or float16, shape [n, d]) or `.fvecs` (each row a
/// little-endian i32 dimension then d float32 values).
pub fn read_vectors(path: &Path) -> Result<Vectors> {
    if path.extension().is_some_and(|e| e == "fvecs") {
        return read_fvecs(path);
    }
    read_npy_vectors(path)
}

/// A `.npy` file opened to read its data a megabyte at a time, never whole (1M × 512 float32 is
/// 2 GiB; reading the file, then its data, then the floats held it three times over).
pub(crate) struct NpyStream {
    file: File,
    path: PathBuf,
    pub shape: Vec<usize>,
    pub descr: String,
    /// Bytes after the header.
    pub data_len: u64,
}

impl NpyStream {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let io = |e| IndexError::io("reading", path, e);
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut prefix = Vec::with_capacity(12);
        (&mut file).take(12).read_to_end(&mut prefix).map_err(io)?;
        let header_len = Npy::header_len(&prefix).map_err(|r| bad(path, r))?;
        if header_len as u64 > file_len {
            return Err(bad(path, "truncated .npy header"));
        }
        let mut header = vec![0; header_len];
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_exact(&mut header).map_err(io)?;
        let (shape, descr, start) = Npy::parse_header(&header).map_err(|r| bad(path, r))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            shape,
            descr,
            data_len: file_len - start as u64,
        })
    }

    /// Refuses data that is not exactly the shape's items of `item` bytes.
    pub(crate) fn check_size(&self, item: usize) -> Result<()> {
        let expected = self
            .shape
            .iter()
            .try_fold(item, |bytes: usize, &d| bytes.checked_mul(d))
            .map(|b| b as u64);
        if expected != Some(self.data_len) {
            return Err(bad(
                &self.path,
                format!(
                    "truncated or padded: shape {:?} needs {} bytes of data, the file has {}",
                    self.shape,
                    expected.map_or("more than 2^64".to_string(), |b| b.to_string()),
                    self.data_len
                ),
            ));
        }
        Ok(())
    }

    /// The data, in chunks of whole 8-, 4- or 2-byte items.
    pub(crate) fn for_each_chunk(mut self, mut each: impl FnMut(&[u8])) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = self.data_len;
        while left > 0 {
            let chunk = &mut buf[..left.min(1 << 20) as usize];
            self.file
                .read_exact(chunk)
                .map_err(|e| IndexError::io("reading", &self.path, e))?;
            each(chunk);
            left -= chunk.len() as u64;
        }
        Ok(())
    }
}

/// Rows of a float `.npy` [n, dim] read one at a time at their offset, without reading the file:
/// what a search over a bank larger than memory reads its documents' vectors with. Reads take
/// `&self` (positioned reads), so threads share one reader.
#[derive(Debug)]
pub struct RowReader {
    file: File,
    path: PathBuf,
    rows: usize,
    dim: usize,
    /// Bytes per value: 2 (float16) or 4 (float32).
    item: usize,
    data_start: u64,
}

impl RowReader {
    /// Open `path`, checking that it is a whole float16/float32 matrix of `dim` columns.
    pub fn open(path: &Path, dim: usize) -> Result<Self> {
        let npy = NpyStream::open(path)?;
        let item = match npy.descr.as_str() {
            "<f2" => 2,
            "<f4" => 4,
            d => return Err(bad(path, format!("dtype {d}: expected float32 or float16"))),
        };
        npy.check_size(item)?;
        let rows = match npy.shape.as_slice() {
            &[n, d] if d == dim => n,
            s => return Err(bad(path, format!("shape {s:?}: expected [n, {dim}]"))),
        };
        let file_len = npy
            .file
            .metadata()
            .map_err(|e| IndexError::io("reading", path, e))?
            .len();
        Ok(Self {
            data_start: file_len - npy.data_len,
            file: npy.file,
            path: path.to_path_buf(),
            rows,
            dim,
            item,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `row` as f32.
    pub fn row(&self, row: usize) -> Result<Vec<f32>> {
        use std::os::unix::fs::FileExt;
        if row >= self.rows {
            return Err(bad(
                &self.path,
                format!("row {row} of a file of {} rows", self.rows),
            ));
        }
        let len = self.dim * self.item;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, self.data_start + (row * len) as u64)
            .map_err(|e| IndexError::io("reading", &self.path, e))?;
        Ok(if self.item == 2 {
            buf.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()
        } else {
            buf.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }
}

/// A float `.npy` [n, dim] as f32, read a megabyte at a time.
fn read_npy_vectors(path: &Path) -> Result<Vectors> {
    let npy = NpyStream::open(path)?;
    let item = match npy.descr.as_str() {
        "<f2" => 2,
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(bad(
                path,
                format!("dtype {other} is not a float type (use float32 or float16)"),
            ));
        }
    };
    let [n, dim] = npy.shape[..] else {
        return Err(bad(
            path,
            format!("expected a 2-d array [n, dim], found shape {:?}", npy.shape),
        ));
    };
    if dim == 0 {
        return Err(bad(path, "vectors of dimension 0"));
    }
    npy.check_size(item)?;
    let mut data = Vec::with_capacity(n * dim);
    npy.for_each_chunk(|chunk| match item {
        2 => data.extend(
            chunk
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        4 => data.extend(
            chunk
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        _ => {
            data.extend(chunk.chunks_exact(8).map(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }))
        }
    })?;
    Ok(Vectors { dim, data })
}

fn read_fvecs(path: &Path) -> Result<Vectors> {
    let bytes = fs::read(path).map_err(|e| IndexError::io("reading", path, e))?;
    if bytes.len() < 4 {
        return Err(bad(path, "empty .fvecs file"));
    }
    let dim = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if dim <= 0 || dim > 1 << 20 {
        return Err(bad(path, format!("implausible .fvecs dimension {dim}")));
    }
    let dim = dim as usize;
    let stride = 4 + 4 * dim;
    if bytes.len() % stride != 0 {
        return Err(bad(
            path,
            format!(
                "truncated: {} bytes is not a whole number of {stride}-byte rows of dimension {dim}",
                bytes.len()
            ),
        ));
    }
    let mut data = Vec::with_capacity(bytes.len() / stride * dim);
    for (i, row) in bytes.chunks_exact(stride).enumerate() {
        let d = i32::from_le_bytes([row[0], row[1], row[2], row[3]]);
        if d as usize != dim {
            return Err(bad(
                path,
                format!("row {i} has dimension {d}, the first row {dim}"),
            ));
        }
        data.extend(
            row[4..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok(Vectors { dim, data })
}

/// Read ids: a 1-d `.npy` of int64 / uint64 / uint32 values.
pub fn read_ids(path: &Path) -> Result<Vec<u64>> {
    let npy = NpyStream::open(path)?;
    let (item, signed) = match npy.descr.as_str() {
        "<u8" => (8, false),
        "<i8" => (8, true),
        "<u4" => (4, false),
        "<i4" => (4, true),
        other => {
            return Err(bad(
                path,
                format!("dtype {other} is not an integer id type"),
            ));
        }
    };
    let [n] = npy.shape[..] else {
        return Err(bad(
            path,
            format!("expected a 1-d array of ids, found shape {:?}", npy.shape),
        ));
    };
    npy.check_size(item)?;
    let mut ids = Vec::with_capacity(n);
    let mut negative = None;
    npy.for_each_chunk(|chunk| {
        for c in chunk.chunks_exact(item) {
            let id = match (item, signed) {
                (8, false) => i128::from(u64::from_le_bytes([
                    c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                ])),
                (8, true) => i128::from(i64::from_le_bytes([
                    c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                ])),
                (_, false) => i128::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                (_, true) => i128::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            };
            if id < 0 {
                negative.get_or_insert((ids.len(), id));
            }
            ids.push(id as u64);
        }
    })?;
    match negative {
        Some((row, id)) => Err(bad(path, format!("id {id} at row {row} is negative"))),
        None => Ok(ids),
    }
}

/// What [`check_unit_rows`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormReport {
    /// Rows whose norm was further than [`UNIT_TOLERANCE`] from 1 and were normalised.
    pub normalised: usize,
}

/// Check every row: finite, non-zero, unit norm. Rows within [`UNIT_TOLERANCE`] of 1 are
/// re-normalised exactly (float16 rounding); rows further off are refused with `strict`, or
/// normalised and counted.
pub fn check_unit_rows(
    what: &str,
    data: &mut [f32],
    dim: usize,
    strict: bool,
) -> Result<NormReport> {
    let mut report = NormReport::default();
    for (row, v) in data.chunks_exact_mut(dim).enumerate() {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::NonFinite {
                what: what.to_string(),
                row,
            });
        }
        let norm = v
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt() as f32;
        if norm == 0.0 {
            return Err(IndexError::ZeroVector {
                what: what.to_string(),
                row,
            });
        }
        if (norm - 1.0).abs() > UNIT_TOLERANCE {
            if strict {
                return Err(IndexError::NotUnit {
                    what: what.to_string(),
                    row,
                    norm,
                });
            }
            report.normalised += 1;
        }
        v.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_check_normalises_or_refuses() {
        let mut v = vec![3.0, 4.0, 0.6, 0.8];
        let r = check_unit_rows("t", &mut v, 2, false).expect("normalises");
        assert_eq!(r.normalised, 1);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut v = vec![3.0, 4.0];
        assert!(matches!(
            check_unit_rows("t", &mut v, 2, true),
            Err(IndexError::NotUnit { row: 0, .. })
        ));
        let mut v = vec![0.6, 0.8, f32::NAN, 0.0];
        assert!(matches!(
            check_unit_rows("t", &mut v, 2, false),
            Err(IndexError::NonFinite { row: 1, .. })
        ));
        let mut v = vec![0.0, 0.0];
        assert!(matches!(
            check_unit_rows("t", &mut v, 2, false),
            Err(IndexError::ZeroVector { row: 0, .. })
        ));
    }

    #[test]
    fn fvecs_round_trip_and_truncation() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.fvecs");
        let mut b = Vec::new();
        for row in [[1.0f32, 2.0], [3.0, 4.0]] {
            b.extend_from_slice(&2i32.to_le_bytes());
            for x in row {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        fs::write(&p, &b).expect("write");
        let v = read_vectors(&p).expect("read");
        assert_eq!((v.dim, v.data.clone()), (2, vec![1.0, 2.0, 3.0, 4.0]));
        fs::write(&p, &b[..b.len() - 3]).expect("write");
        let e = read_vectors(&p).expect_err("truncated").to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    /// `.npy` of each float type, larger than a read chunk (rows straddle chunk boundaries), in
    /// header versions 1 and 2, read to the values written; wrong shapes and types are refused.
    #[test]
    fn float_npy_of_every_type_reads_in_chunks() {
        use cm3_embed::npy::{Dtype, encode_f16, encode_f32, header};
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.npy");
        let (n, dim) = (3001, 100); // 1.2 MB as float32, rows of 400 bytes
        let values: Vec<f32> = (0..n * dim)
            .map(|i| (i % 977) as f32 / 64.0 - 7.0)
            .collect();
        let read = |bytes: &[u8]| {
            fs::write(&p, bytes).expect("write");
            read_vectors(&p)
        };
        let f32_file = encode_f32(&[n, dim], &values);
        assert_eq!(
            read(&f32_file).expect("f32"),
            Vectors {
                dim,
                data: values.clone()
            }
        );
        // f16: these values are exact in half precision.
        let f16_file = encode_f16(&[n, dim], &values);
        assert_eq!(read(&f16_file).expect("f16").data, values);
        // f64 (numpy's default float), written by hand: the f32 header with another descr.
        let mut f64_file = header(Dtype::F32, &[n, dim]);
        let at = f64_file
            .windows(3)
            .position(|w| w == b"<f4")
            .expect("descr");
        f64_file[at + 2] = b'8';
        f64_file.extend(values.iter().flat_map(|&x| f64::from(x).to_le_bytes()));
        assert_eq!(read(&f64_file).expect("f64").data, values);
        // Format version 2 (a 4-byte header length).
        let v1 = header(Dtype::F32, &[n, dim]);
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&((v1.len() - 10) as u32).to_le_bytes());
        v2.extend_from_slice(&v1[10..]);
        v2.extend_from_slice(&f32_file[v1.len()..]);
        assert_eq!(read(&v2).expect("v2").data, values);

        let refused = |bytes: &[u8], want: &str| {
            let e = read(bytes).expect_err(want).to_string();
            assert!(e.contains(want) && e.contains("x.npy"), "{want}: {e}");
        };
        refused(&cm3_embed::npy::encode_u64(&[1, 2, 3]), "not a float type");
        refused(&encode_f32(&[6], &[0.0; 6]), "expected a 2-d array");
        refused(&f32_file[..8], "not a .npy file");
        refused(&f32_file[..40], "truncated .npy header");
        refused(&v2[..11], "truncated .npy header");
        let mut padded = f32_file.clone();
        padded.extend_from_slice(&[0; 4]);
        refused(&padded, "truncated or padded");
    }

    /// Ids as u64, i64, u32 and i32 `.npy`; negative ids, other shapes and float ids refused.
    #[test]
    fn ids_of_every_integer_type() {
        use cm3_embed::npy::{Dtype, header};
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("ids.npy");
        // `dtype`'s header with its descr replaced by `descr` (same length), then the values.
        let file = |dtype: Dtype, descr: &[u8; 3], shape: &[usize], data: Vec<u8>| {
            let mut f = header(dtype, shape);
            let at = f.windows(3).position(|w| w[0] == b'<').expect("descr");
            f[at..at + 3].copy_from_slice(descr);
            f.extend(data);
            fs::write(&p, f).expect("write");
            read_ids(&p)
        };
        let want = vec![0u64, 7, 1 << 31, 42];
        let u64s = want.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(file(Dtype::U64, b"<u8", &[4], u64s).expect("u8"), want);
        let i64s = want
            .iter()
            .flat_map(|&x| (x as i64).to_le_bytes())
            .collect();
        assert_eq!(file(Dtype::I64, b"<i8", &[4], i64s).expect("i8"), want);
        let u32s = want
            .iter()
            .flat_map(|&x| (x as u32).to_le_bytes())
            .collect();
        assert_eq!(file(Dtype::U32, b"<u4", &[4], u32s).expect("u4"), want);
        let small = [0i32, 7, 9, 42];
        let i32s = small.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            file(Dtype::U32, b"<i4", &[4], i32s).expect("i4"),
            vec![0, 7, 9, 42]
        );

        let refused = |r: Result<Vec<u64>>, want: &str| {
            let e = r.expect_err(want).to_string();
            assert!(e.contains(want) && e.contains("ids.npy"), "{want}: {e}");
        };
        let with_negative = [3i64, -2, 5].iter().flat_map(|x| x.to_le_bytes()).collect();
        refused(
            file(Dtype::I64, b"<i8", &[3], with_negative),
            "id -2 at row 1 is negative",
        );
        refused(
            file(Dtype::U64, b"<u8", &[2, 1], vec![0; 16]),
            "1-d array of ids",
        );
        refused(
            file(Dtype::F32, b"<f4", &[2], vec![0; 8]),
            "not an integer id type",
        );
        refused(
            file(Dtype::U64, b"<u8", &[3], vec![0; 16]),
            "truncated or padded",
        );
    }

    #[test]
    fn truncated_npy_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.npy");
        let full = cm3_embed::npy::encode_f32(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        fs::write(&p, &full[..full.len() - 2]).expect("write");
        let e = read_vectors(&p).expect_err("truncated").to_string();
        assert!(e.contains("truncated"), "{e}");
        // A shape whose size overflows: refused, not a panic.
        let mut ids = cm3_embed::npy::header(cm3_embed::npy::Dtype::U64, &[usize::MAX / 4]);
        ids.extend_from_slice(&[0; 8]);
        fs::write(&p, &ids).expect("write");
        let e = read_ids(&p).expect_err("overflow").to_string();
        assert!(e.contains("more than 2^64"), "{e}");
    }
}
