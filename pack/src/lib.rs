//! The end of the data pipeline: retrieval-augmented examples (paper Figure 9), the CM3
//! causal-masking objective with spans that never cross `<break>` or a document boundary
//! (§2.2), fixed-length packing, and the Megatron-LM indexed-dataset files training reads.

pub mod docs;
pub mod error;
pub mod example;
pub mod masking;
pub mod megatron;
pub mod packing;
pub mod stage;

pub use error::{PackError, Result};
