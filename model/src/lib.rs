//! cm3's models in Burn (`flex` CPU backend by default).
//!
//! - [`vq`]: the image tokenizer, taming-transformers' GumbelVQ at downsampling factor 8 (the
//!   paper's tokenizer shape: 256 × 256 → 32 × 32 = 1,024 codes of 8,192), loading its published
//!   Lightning checkpoint.
//! - [`decoder`]: the CM3Leon decoder (OPT without biases, dropout or LayerNorm parameters),
//!   in Hugging Face OPT's parameter names.

pub mod decoder;
pub mod error;
pub mod vq;

pub use error::{ModelError, Result};
