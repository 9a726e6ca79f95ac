//! `cm3 ingest`: caption-image pairs from WebDataset tars, image folders with sidecar captions,
//! COCO captions JSON and JSONL/CSV/Parquet manifests, decoded, validated, normalised to square
//! images, deduplicated and written as zstd Parquet shards in `<dataset>/pairs/`. Every input that
//! does not become a row is written to `<dataset>/rejects/` with a reason.

pub mod config;
pub mod error;
pub mod normalize;
mod run;
pub mod source;

pub use config::{IngestConfig, IngestOptions, InputFormat};
pub use error::{IngestError, Result};
pub use normalize::{RejectReason, Rejection};
pub use run::{IngestReport, STAGE, run};
