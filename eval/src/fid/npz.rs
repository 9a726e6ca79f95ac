//! Just enough of `.npz` (a zip of `.npy` files) for pytorch-fid's statistics files: reading the
//! stored and deflated entries numpy's `savez` / `savez_compressed` write, and writing deflated
//! ones that `np.load` reads.
use std::io::{Read, Write};

use cm3_embed::npy::Npy;
use flate2::Crc;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

/// Largest entry inflated (a 2048 x 2048 f64 sigma is 32 MiB; 8192-d would be 512 MiB).
const MAX_ENTRY: u64 = 1 << 30;

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| "truncated zip".to_string())
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "truncated zip".to_string())
}

/// Zip64's 8-byte sizes and offset from a central-directory extra field, where the 4-byte fields
/// are 0xFFFFFFFF (in the order: uncompressed, compressed, offset).
fn zip64(extra: &[u8], fields: [&mut u64; 3]) -> Result<(), String> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let (id, len) = (u16_at(extra, at)?, usize::from(u16_at(extra, at + 2)?));
        if id == 1 {
            let mut p = at + 4;
            for f in fields {
                if *f == u64::from(u32::MAX) {
                    let v = extra.get(p..p + 8).ok_or("truncated zip64 field")?;
                    *f = u64::from_le_bytes(v.try_into().map_err(|_| "zip64 field")?);
                    p += 8;
                }
            }
            return Ok(());
        }
        at += 4 + len;
    }
    Ok(())
}

/// The entries (name, uncompressed bytes) of a zip archive, from its central directory.
pub(super) fn read_zip(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    // End of central directory: the last "PK\5\6" within the last 64 KiB + 22 bytes.
    let from = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..i + 4] == *b"PK\x05\x06")
        .ok_or("not a zip file (no end of central directory)")?;
    let count = usize::from(u16_at(bytes, eocd + 10)?);
    let mut at = u32_at(bytes, eocd + 16)? as usize;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        if u32_at(bytes, at)? != 0x0201_4b50 {
            return Err("corrupt zip central directory".into());
        }
        let method = u16_at(bytes, at + 10)?;
        let crc = u32_at(bytes, at + 16)?;
        let mut packed = u64::from(u32_at(bytes, at + 20)?);
        let mut size = u64::from(u32_at(bytes, at + 24)?);
        let (name_len, extra_len, comment_len) = (
            usize::from(u16_at(bytes, at + 28)?),
            usize::from(u16_at(bytes, at + 30)?),
            usize::from(u16_at(bytes, at + 32)?),
        );
        let mut offset = u64::from(u32_at(bytes, at + 42)?);
        let name_at = at + 46;
        let name = bytes
            .get(name_at..name_at + name_len)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .ok_or("truncated zip entry name")?;
        let extra = bytes
            .get(name_at + name_len..name_at + name_len + extra_len)
            .ok_or("truncated zip extra field")?;
        zip64(extra, [&mut size, &mut packed, &mut offset])?;
        at = name_at + name_len + extra_len + comment_len;
        if size > MAX_ENTRY {
            return Err(format!("{name}: {size} bytes is too large"));
        }
        let local = usize::try_from(offset).map_err(|_| "zip offset")?;
        if u32_at(bytes, local)? != 0x0403_4b50 {
            return Err(format!("{name}: corrupt local header"));
        }
        let start = local + 30 + usize::from(u16_at(bytes, local + 26)?);
        let start = start + usize::from(u16_at(bytes, local + 28)?);
        let data = usize::try_from(packed)
            .ok()
            .and_then(|n| bytes.get(start..start.checked_add(n)?))
            .ok_or_else(|| format!("{name}: truncated data"))?;
        let data = match method {
            0 => data.to_vec(),
            8 => {
                let mut v = Vec::with_capacity(size as usize);
                DeflateDecoder::new(data)
                    .take(MAX_ENTRY)
                    .read_to_end(&mut v)
                    .map_err(|e| format!("{name}: {e}"))?;
                v
            }
            m => return Err(format!("{name}: compression method {m} is not supported")),
        };
        let mut check = Crc::new();
        check.update(&data);
        if check.sum() != crc || data.len() as u64 != size {
            return Err(format!("{name}: CRC or size mismatch"));
        }
        out.push((name, data));
    }
    Ok(out)
}

/// A zip archive of deflated entries (no zip64: each entry and the whole below 4 GiB).
pub(super) fn write_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing into a Vec cannot fail.
        let packed = enc
            .write_all(data)
            .and_then(|()| enc.finish())
            .unwrap_or_default();
        let mut crc = Crc::new();
        crc.update(data);
        let offset = out.len() as u32;
        // Shared fields: version 20, flags 0, deflate, time/date 0, crc, sizes, name length.
        let mut common = Vec::new();
        common.extend_from_slice(&[20, 0, 0, 0, 8, 0, 0, 0, 0x21, 0]);
        common.extend_from_slice(&crc.sum().to_le_bytes());
        common.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes()); // extra length
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&packed);
        central.extend_from_slice(b"PK\x01\x02\x14\x00");
        central.extend_from_slice(&common);
        // Comment length, disk, internal attributes; external: a regular file, mode 644.
        central.extend_from_slice(&[0; 6]);
        central.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_offset, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    let n = entries.len() as u16;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A `.npy` file of little-endian f64 (`<f8`), C order.
pub(super) fn npy_f64(shape: &[usize], data: &[f64]) -> Vec<u8> {
    let mut out = cm3_embed::npy::header(cm3_embed::npy::Dtype::F64, shape);
    out.reserve(data.len() * 8);
    data.iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

/// Shape and values of a `.npy` of `<f8` or `<f4` (widened), checking the data length.
pub(super) fn parse_f64(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f64>), String> {
    let npy = Npy::parse(bytes)?;
    let n = npy
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let values: Vec<f64> = match npy.descr.as_str() {
        "<f8" => npy
            .data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        "<f4" => npy.to_f32()?.into_iter().map(f64::from).collect(),
        other => return Err(format!("dtype {other} is not float64 or float32")),
    };
    if values.len() != n {
        return Err(format!("{} values for shape {:?}", values.len(), npy.shape));
    }
    Ok((npy.shape, values))
}
