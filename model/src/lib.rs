//! cm3's models in Burn (`flex` CPU backend by default).
//!
//! - [`vq`]: the image tokenizer, taming-transformers' GumbelVQ at downsampling factor 8 (the
//!   paper's tokenizer shape: 256 × 256 → 32 × 32 = 1,024 codes of 8,192), loading its published
//!   Lightning checkpoint.
//! - [`decoder`]: the CM3Leon decoder (OPT without biases, dropout or LayerNorm parameters),
//!   in Hugging Face OPT's parameter names.

pub mod decoder;
pub mod device;
pub mod error;
mod fused;
pub mod read;
pub mod vq;

pub use error::{ModelError, Result};
pub use read::{read_f32, read_i64, read_scalar};

/// fsync a file that Burn wrote, so that it is on disk before a rename or a pointer (`latest`, a
/// `config.json`) makes it visible, whatever the version of Burn's writers does.
pub fn sync_file(path: &std::path::Path) -> Result<()> {
    let io = |op, e| ModelError::Io {
        op,
        path: path.to_path_buf(),
        source: e,
    };
    std::fs::File::open(path)
        .map_err(|e| io("opening", e))?
        .sync_all()
        .map_err(|e| io("fsync", e))
}
