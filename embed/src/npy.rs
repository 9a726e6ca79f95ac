//! NumPy `.npy` (format 1.0) encoding: what numpy, PyTorch and clip-retrieval read without our code.

/// Element types we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F64,
    F32,
    F16,
    I64,
    U32,
    U64,
}

impl Dtype {
    fn descr(self) -> &'static str {
        match self {
            Dtype::F64 => "<f8",
            Dtype::F32 => "<f4",
            Dtype::F16 => "<f2",
            Dtype::I64 => "<i8",
            Dtype::U32 => "<u4",
            Dtype::U64 => "<u8",
        }
    }
}

/// The `.npy` header for a C-ordered array: magic, version 1.0, and the dict padded with spaces
/// so that the data starts on a 64-byte boundary.
pub fn header(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        dtype.descr()
    );
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// A complete `.npy` file of f32 values.
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let mut out = header(Dtype::F32, shape);
    out.reserve(data.len() * 4);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A complete `.npy` file of f16 values (what clip-retrieval writes for embeddings).
pub fn encode_f16(shape: &[usize], data: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let mut out = header(Dtype::F16, shape);
    out.reserve(data.len() * 2);
    for v in data {
        out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
    }
    out
}

/// A complete `.npy` file of u64 values as little-endian `<u8`.
pub fn encode_u64(data: &[u64]) -> Vec<u8> {
    let mut out = header(Dtype::U64, &[data.len()]);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A parsed `.npy` file: shape, dtype (`descr`, e.g. `<f4`) and the raw little-endian data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub descr: String,
    pub data: Vec<u8>,
}

impl Npy {
    /// Parse a C-ordered `.npy` (format 1.x or 2.x); `Err` names what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let (shape, descr, start) = Self::parse_header(bytes)?;
        Ok(Self {
            shape,
            descr,
            data: bytes[start..].to_vec(),
        })
    }

    /// Bytes needed to hold the header, from the file's first 12 (or fewer) bytes: so that a
    /// reader can stream the data instead of holding the whole file.
    pub fn header_len(prefix: &[u8]) -> Result<usize, String> {
        if prefix.len() < 10 || &prefix[..6] != b"\x93NUMPY" {
            return Err("not a .npy file (no \\x93NUMPY magic)".into());
        }
        match prefix[6] {
            1 => Ok(10 + usize::from(u16::from_le_bytes([prefix[8], prefix[9]]))),
            2 | 3 => match prefix.get(8..12) {
                Some(&[a, b, c, d]) => Ok(12 + u32::from_le_bytes([a, b, c, d]) as usize),
                _ => Err("truncated .npy header".into()),
            },
            v => Err(format!(".npy format version {v} is not supported")),
        }
    }

    /// Shape, dtype and where the data starts, from the file's first bytes.
    pub fn parse_header(bytes: &[u8]) -> Result<(Vec<usize>, String, usize), String> {
        let end = Self::header_len(bytes)?;
        let start = if bytes[6] == 1 { 10 } else { 12 };
        let header = bytes
            .get(start..end)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or("truncated .npy header")?;
        if header.contains("'fortran_order': True") {
            return Err("Fortran-ordered arrays are not supported".into());
        }
        let field = |key: &str| header.split(key).nth(1).map(str::trim_start);
        let descr = field("'descr':")
            .and_then(|s| s.strip_prefix('\'')?.split('\'').next())
            .ok_or("no descr in the .npy header")?
            .to_string();
        let shape_txt = field("'shape':")
            .and_then(|s| s.strip_prefix('(')?.split(')').next())
            .ok_or("no shape in the .npy header")?;
        let shape = shape_txt
            .split(',')
            .filter(|d| !d.trim().is_empty())
            .map(|d| {
                d.trim()
                    .parse::<usize>()
                    .map_err(|e| format!("bad dimension {d:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((shape, descr, end))
    }

    /// Values as f32, from `<f4` or `<f2` data.
    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        match self.descr.as_str() {
            "<f4" => Ok(self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()),
            "<f2" => Ok(self
                .data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()),
            other => Err(format!("dtype {other} is not a float")),
        }
    }

    /// Values as i64, from `<i8`, `<u8` (u64) or `<u4` data.
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        match self.descr.as_str() {
            "<i8" | "<u8" => Ok(self
                .data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()),
            "<u4" => Ok(self
                .data
                .chunks_exact(4)
                .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()),
            "<i4" => Ok(self
                .data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()),
            other => Err(format!("dtype {other} is not an integer type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_parsable() {
        let h = header(Dtype::F32, &[2, 3, 224, 224]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let text = std::str::from_utf8(&h[10..]).expect("ascii");
        assert!(
            text.starts_with(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 224, 224), }"
            )
        );
        assert!(text.ends_with('\n'));
        assert!(
            std::str::from_utf8(&header(Dtype::F16, &[5])[10..])
                .expect("ascii")
                .contains("'shape': (5,)")
        );
        let f = encode_f32(&[2], &[1.0, -2.5]);
        assert_eq!(&f[f.len() - 8..], &[0, 0, 128, 63, 0, 0, 32, 192]);
        // Round trips through the reader.
        let back = Npy::parse(&f).expect("parse");
        assert_eq!(
            (back.shape.clone(), back.to_f32().expect("f32")),
            (vec![2], vec![1.0, -2.5])
        );
        let h = Npy::parse(&encode_f16(&[1, 2], &[0.5, 3.0])).expect("parse f16");
        assert_eq!(
            (h.shape.clone(), h.to_f32().expect("f32")),
            (vec![1, 2], vec![0.5, 3.0])
        );
        assert_eq!(
            Npy::parse(&encode_u64(&[7, 9]))
                .expect("u64")
                .to_i64()
                .expect("i64"),
            vec![7, 9]
        );
        assert!(Npy::parse(b"not npy").is_err());
    }
}
