//! The stage's settings, with the paper's defaults, and what the manifest records of a run.
use cm3_index::VectorSet;
use serde::{Deserialize, Serialize};

use crate::error::{AugmentError, Result};

/// The paper's retrieval strategy (§2.1). A `--config` file (TOML or JSON) may give these; flags
/// override them. They decide the output, so the manifest keeps them and a later run must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// The bank's vectors searched: `doc` (the paper's document vectors), `image` or `text`.
    pub vector_set: VectorSet,
    /// Skip a candidate whose score with the query (or with an already chosen document) is above
    /// this: "we only use retrieved documents with relevance score ≤ 0.9".
    pub relevance: f32,
    /// Documents retrieved with the pair's image as the query.
    pub by_image: usize,
    /// Documents retrieved with the pair's caption (after query dropout) as the query.
    pub by_text: usize,
    /// Documents sampled for the training example: "we randomly select three retrieved samples".
    pub sample: usize,
    /// Probability of dropping each CLIP token of the caption in the text query (0.2).
    pub query_dropout: f64,
    /// Seed of query dropout and sampling (each pair draws from its own stream).
    pub seed: u64,
    /// HNSW bank: efSearch (the index's default when absent); ignored by exact indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_search: Option<usize>,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            vector_set: VectorSet::Doc,
            relevance: 0.9,
            by_image: 2,
            by_text: 2,
            sample: 3,
            query_dropout: 0.2,
            seed: 0,
            ef_search: None,
        }
    }
}

impl AugmentConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.relevance.is_finite() && self.relevance > -1.0 && self.relevance <= 1.0) {
            return Err(AugmentError::Invalid(format!(
                "relevance {} must be a score in (-1, 1] (the paper uses 0.9)",
                self.relevance
            )));
        }
        if !(0.0..1.0).contains(&self.query_dropout) {
            return Err(AugmentError::Invalid(format!(
                "query_dropout {} must be in [0, 1) (the paper uses 0.2)",
                self.query_dropout
            )));
        }
        if self.by_image + self.by_text == 0 {
            return Err(AugmentError::Invalid(
                "by_image and by_text are both 0: nothing would be retrieved".into(),
            ));
        }
        if self.by_image + self.by_text > 256 {
            return Err(AugmentError::Invalid(format!(
                "by_image + by_text = {} documents per pair; at most 256",
                self.by_image + self.by_text
            )));
        }
        if self.sample == 0 {
            return Err(AugmentError::Invalid(
                "sample is 0: no retrieved document would reach the training example".into(),
            ));
        }
        if self.ef_search == Some(0) {
            return Err(AugmentError::Invalid("ef_search must be at least 1".into()));
        }
        Ok(())
    }
}

/// What the manifest's `augment` stage records as its configuration: the settings plus what the
/// neighbours were retrieved from. A later run (more shards, another worker) must agree with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentRecord {
    pub settings: AugmentConfig,
    /// `self`, or the canonical path of the bank dataset.
    pub bank: String,
    /// The bank index's kind and parameters (`flat:f16`, `hnsw:m=32,ef_construction=200`, ...).
    pub bank_index: String,
    /// SHA-256 of the CLIP text encoder that embedded the dropped-out captions.
    pub text_model_sha256: String,
    /// The leakage guard: `split:<name>` and `ids:<sha256 of the ids file>` entries.
    #[serde(default)]
    pub exclude: Vec<String>,
}
