//! The decoder's shape and initialisation (paper §2.3, Table 3), its presets, and what it costs
//! in parameters and memory.
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// OPT's learned positions start at row 2 of the table (rows 0 and 1 are unused, a fairseq
/// legacy); we keep the same table so that checkpoints are Hugging Face OPT checkpoints.
pub const POSITION_OFFSET: usize = 2;

/// Which layers "output layers are initialized as 0" (§2.3) means; the paper does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroInit {
    /// The projections that write into the residual stream (attention `out_proj`, `fc2`): every
    /// block starts as the identity, and the vocabulary projection can be tied to the input
    /// embedding (the default).
    Residual,
    /// The vocabulary projection (`lm_head`): the first predictions are uniform. Needs untied
    /// embeddings.
    Vocab,
    /// Nothing: every matrix from the truncated normal.
    None,
}

/// A CM3Leon decoder: OPT without biases, dropout or LayerNorm parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderConfig {
    /// Token ids (text + image + specials): the dataset's `vocab.json` size.
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Feed-forward width (4 × d_model in every configuration of the paper).
    pub ffn_dim: usize,
    /// Longest sequence (learned positions).
    pub max_seq_len: usize,
    /// The vocabulary projection is the input embedding (OPT's and metaseq's default).
    pub tie_embeddings: bool,
    pub zero_init: ZeroInit,
    /// Truncated normal: standard deviation and cut-off in standard deviations.
    pub init_std: f64,
    pub init_truncation: f64,
    /// Standard deviation of the positional embedding's normal initialisation.
    pub position_init_std: f64,
    /// LayerNorm epsilon (PyTorch's default, which OPT uses).
    pub layer_norm_eps: f64,
}

/// The paper's vocabulary: 56,320 text entries (specials included) + 8,192 image codes.
pub const PAPER_VOCAB: usize = 56_320 + 8_192;

impl Default for DecoderConfig {
    fn default() -> Self {
        Self::preset("350m").unwrap_or_else(|_| unreachable!("the 350m preset exists"))
    }
}

/// The names [`DecoderConfig::preset`] knows.
pub const PRESETS: [&str; 4] = ["tiny", "350m", "760m", "7b"];

impl DecoderConfig {
    fn shape(d_model: usize, n_layers: usize, n_heads: usize, max_seq_len: usize) -> Self {
        Self {
            vocab_size: PAPER_VOCAB,
            d_model,
            n_layers,
            n_heads,
            ffn_dim: 4 * d_model,
            max_seq_len,
            tie_embeddings: true,
            zero_init: ZeroInit::Residual,
            init_std: 0.006,
            init_truncation: 3.0,
            position_init_std: 0.0002,
            layer_norm_eps: 1e-5,
        }
    }

    /// Table 3's models, and `tiny` for tests and the demo (2 layers, d 64, 1,024 positions).
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "tiny" => Self::shape(64, 2, 4, 1024),
            "350m" => Self::shape(1024, 24, 16, 4096),
            "760m" => Self::shape(1536, 24, 24, 4096),
            "7b" => Self::shape(4096, 32, 32, 4096),
            other => {
                return Err(ModelError::Config {
                    origin: "model preset".into(),
                    reason: format!("unknown preset {other:?}; known: {}", PRESETS.join(", ")),
                });
            }
        })
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(ModelError::Config {
                origin: origin.to_string(),
                reason,
            })
        };
        if self.vocab_size == 0 || self.d_model == 0 || self.n_layers == 0 || self.ffn_dim == 0 {
            return bad(format!(
                "vocab_size, d_model, n_layers and ffn_dim must be positive (got {}, {}, {}, {})",
                self.vocab_size, self.d_model, self.n_layers, self.ffn_dim
            ));
        }
        if self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return bad(format!(
                "d_model {} is not a multiple of n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        if self.max_seq_len == 0 {
            return bad("max_seq_len must be positive".into());
        }
        // Every dimension is an allocation size (a config.json is a file anyone can edit): each
        // within reach of a real model (the paper's 7B: d_model 4,096, 32 layers, ffn 16,384),
        // and no weight matrix over 2^36 values.
        let limits = [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("d_model", self.d_model, 1 << 16),
            ("n_layers", self.n_layers, 1 << 10),
            ("n_heads", self.n_heads, 1 << 10),
            ("ffn_dim", self.ffn_dim, 1 << 18),
            ("max_seq_len", self.max_seq_len, 1 << 20),
        ];
        for (name, value, max) in limits {
            if value > max {
                return bad(format!("{name} {value} is over the {max} cm3 allows"));
            }
        }
        let largest =
            (self.vocab_size.max(self.ffn_dim).max(self.max_seq_len) as u64) * self.d_model as u64;
        if largest > 1 << 36 {
            return bad(format!(
                "a weight matrix of {largest} values (d_model {} by {}) is over 2^36",
                self.d_model,
                self.vocab_size.max(self.ffn_dim).max(self.max_seq_len)
            ));
        }
        if self.zero_init == ZeroInit::Vocab && self.tie_embeddings {
            return bad(
                "zero_init = \"vocab\" zeroes the vocabulary projection, which tied embeddings \
                 share with the input: set tie_embeddings = false"
                    .into(),
            );
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.init_std)
            || !positive(self.init_truncation)
            || !positive(self.position_init_std)
            || !positive(self.layer_norm_eps)
        {
            return bad(
                "init_std, init_truncation, position_init_std and layer_norm_eps must be \
                 positive and finite"
                    .into(),
            );
        }
        Ok(())
    }

    /// Parameters, by group.
    pub fn param_counts(&self) -> ParamCounts {
        let d = self.d_model as u64;
        let per_layer = 4 * d * d + 2 * d * self.ffn_dim as u64;
        let embeddings = self.vocab_size as u64 * d;
        let positions = (self.max_seq_len + POSITION_OFFSET) as u64 * d;
        let lm_head = if self.tie_embeddings { 0 } else { embeddings };
        ParamCounts {
            embeddings,
            positions,
            per_layer,
            layers: per_layer * self.n_layers as u64,
            lm_head,
            total: embeddings + positions + per_layer * self.n_layers as u64 + lm_head,
        }
    }

    /// Memory for training at `batch` sequences of `seq_len` tokens, float32 everywhere.
    pub fn memory(&self, batch: usize, seq_len: usize) -> Memory {
        let n = self.param_counts().total;
        let (b, s, h) = (batch as u64, seq_len as u64, self.d_model as u64);
        let (a, f, v) = (
            self.n_heads as u64,
            self.ffn_dim as u64,
            self.vocab_size as u64,
        );
        // Tensors kept for the backward pass, per layer: the LayerNorm inputs and outputs (4
        // s·b·h), q, k, v (3), the attention context (1), the softmax (a·s²·b), the
        // feed-forward's hidden before and after ReLU (2 s·b·f); then the final LayerNorm and
        // the logits with their softmax (2 s·b·V). Without recomputation; a lower bound for
        // what an autodiff graph keeps.
        let per_layer = s * b * (8 * h + 2 * f) + a * s * s * b;
        let activations = 4 * (per_layer * self.n_layers as u64 + s * b * (2 * h + 2 * v));
        Memory {
            weights: 4 * n,
            gradients: 4 * n,
            adam_states: 8 * n,
            activations,
        }
    }
}

/// Parameter counts of a [`DecoderConfig`] (LayerNorms have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// Token embedding, vocab_size × d_model.
    pub embeddings: u64,
    /// Learned positions, (max_seq_len + 2) × d_model (OPT's table).
    pub positions: u64,
    /// One block: q, k, v, out (4 d²) and the feed-forward (2 d · ffn).
    pub per_layer: u64,
    pub layers: u64,
    /// The vocabulary projection when it is not tied to the embedding.
    pub lm_head: u64,
    pub total: u64,
}

/// Bytes needed to train (float32 weights, gradients, AdamW's two moments, and activations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub weights: u64,
    pub gradients: u64,
    pub adam_states: u64,
    pub activations: u64,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.weights + self.gradients + self.adam_states + self.activations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's names are nominal; these are the exact counts with its vocabulary.
    #[test]
    fn parameter_counts_of_the_paper_models() -> Result<()> {
        let count = |name: &str, tied: bool| -> Result<u64> {
            let mut c = DecoderConfig::preset(name)?;
            c.tie_embeddings = tied;
            Ok(c.param_counts().total)
        };
        assert_eq!(count("350m", true)?, 372_246_528);
        assert_eq!(count("350m", false)?, 438_306_816);
        assert_eq!(count("760m", true)?, 784_862_208);
        assert_eq!(count("760m", false)?, 883_952_640);
        assert_eq!(count("7b", true)?, 6_723_477_504);
        assert_eq!(count("7b", false)?, 6_987_718_656);
        let c = DecoderConfig::preset("350m")?;
        assert_eq!(c.param_counts().per_layer, 12 * 1024 * 1024);
        assert_eq!((c.n_layers, c.d_model, c.n_heads), (24, 1024, 16));
        Ok(())
    }

    #[test]
    fn bad_shapes_are_refused() -> Result<()> {
        let c = DecoderConfig {
            n_heads: 7,
            ..DecoderConfig::default()
        };
        assert!(c.validate("t").is_err());
        let mut c = DecoderConfig {
            zero_init: ZeroInit::Vocab,
            ..DecoderConfig::default()
        };
        assert!(c.validate("t").is_err());
        c.tie_embeddings = false;
        assert!(c.validate("t").is_ok());
        assert!(DecoderConfig::preset("13b").is_err());
        // Sizes from a config.json are bounded before anything is allocated; the presets pass.
        for name in PRESETS {
            DecoderConfig::preset(name)?.validate(name)?;
        }
        for huge in [
            DecoderConfig {
                d_model: 1 << 30,
                n_heads: 1,
                ..DecoderConfig::default()
            },
            DecoderConfig {
                n_layers: 1 << 40,
                ..DecoderConfig::default()
            },
            DecoderConfig {
                vocab_size: usize::MAX,
                ..DecoderConfig::default()
            },
            DecoderConfig {
                d_model: 1 << 16,
                n_heads: 1,
                vocab_size: 1 << 24,
                ..DecoderConfig::default()
            },
        ] {
            let e = huge.validate("config.json").expect_err("too large");
            assert!(e.to_string().contains("config.json"), "{e}");
        }
        Ok(())
    }
}
