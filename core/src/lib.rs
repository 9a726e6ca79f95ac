//! Shared types of the cm3 pipeline.
//!
//! Every stage reads and writes one *dataset directory*. This crate owns what the stages share about
//! it: stable pair ids, the Arrow schema of `pairs/` shards, the `manifest.json` that records what each
//! stage finished, and the atomic-write discipline (temporary name, fsync, rename) that makes a crash
//! leave either a finished shard or nothing.

pub mod dataset;
pub mod error;
pub mod fault;
pub mod fsio;
pub mod id;
pub mod manifest;
pub mod names;
pub mod progress;
pub mod rng;
pub mod schema;
pub mod tokens;
pub mod vocab;

pub use dataset::{DatasetDir, DatasetLock, WorkerSpec, lock_dir};
pub use error::{CoreError, Result};
pub use id::pair_id;
pub use manifest::{InputRecord, Manifest, ShardRecord, StageRecord, Totals};
pub use vocab::VocabLayout;

/// Version of the tool that wrote an output; recorded in the manifest beside every stage.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
