//! `tokens/<shard>.parquet` (the schema is shared: [`cm3_core::tokens`]).

pub use cm3_core::tokens::*;
