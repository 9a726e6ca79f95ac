//! Stable pair ids.
use sha2::{Digest, Sha256};

/// The id of a caption-image pair: the first 8 bytes (big-endian) of SHA-256 over `source`, a NUL
/// and `key`. It depends only on where the pair came from, so re-running a stage, resuming after a
/// crash or splitting the work across machines gives every pair the same id.
pub fn pair_id(source: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_sha256_prefix() {
        // sha256("a\0b") = 0x59b271ae... computed independently with `printf 'a\0b' | sha256sum`.
        assert_eq!(format!("{:016x}", pair_id("a", "b")), "59b271ae1bbcb1d3");
    }

    #[test]
    fn separator_prevents_ambiguity() {
        assert_ne!(pair_id("ab", "c"), pair_id("a", "bc"));
    }
}
