//! The random streams of the augment stage: SplitMix64 ([`cm3_core::rng`]) seeded by (seed,
//! purpose, pair id), one purpose per kind of decision.

pub use cm3_core::rng::SplitMix64;

/// Purposes: independent streams for the same pair.
pub const STREAM_DROPOUT: u64 = 0x6472_6f70_6f75_7401; // "dropout"
pub const STREAM_SAMPLE: u64 = 0x7361_6d70_6c65_0002; // "sample"
