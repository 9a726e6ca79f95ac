//! Retrieval augmentation (paper §2.1): for every caption-image pair, the documents of the memory
//! bank it is trained with.
//!
//! "To sample informative retrieved documents for the generator during training, we consider three
//! key factors: relevance, modality, and diversity ... We skip a candidate document if it is too
//! similar to the query or if the documents have already been retrieved. In practice, we only use
//! retrieved documents with relevance score ≤ 0.9. Additionally, we use query dropout, which drops
//! some tokens of the query used in retrieval (20% of tokens) ... we retrieve two documents each,
//! based on image and text, respectively. In training, we randomly select three retrieved samples
//! for every caption-image pair."
//!
//! [`select`] holds the rules as a pure function, [`retrieve`] runs them over batches of queries
//! against a [`bank::Bank`], and [`stage`] runs `cm3 augment <dataset>` shard by shard into
//! `neighbors/`.

pub mod bank;
pub mod config;
pub mod dropout;
pub mod error;
pub mod output;
pub mod retrieve;
pub mod rng;
pub mod select;
pub mod stage;

pub use config::{AugmentConfig, AugmentRecord};
pub use error::{AugmentError, Result};
pub use stage::{AugmentOptions, AugmentReport};
