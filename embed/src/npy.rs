//! NumPy `.npy` (format 1.0) encoding: what numpy, PyTorch and clip-retrieval read without our code.

/// Element types we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    I64,
    U32,
    U64,
}

impl Dtype {
    fn descr(self) -> &'static str {
        match self {
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
    }
}
