//! What a training run does: the model, the batch, AdamW, the schedule, evaluation and
//! checkpoints. Presets carry the paper's Table 3 values.
use serde::{Deserialize, Serialize};

use cm3_model::decoder::DecoderConfig;

use crate::error::{Result, TrainError};

/// How the learning rate falls after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Linearly to `min_lr_ratio × lr` at the last step (OPT's schedule).
    Linear,
    /// Half a cosine down to `min_lr_ratio × lr`.
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The decoder. `vocab_size` 0 takes the dataset's vocabulary; any other value must equal it.
    pub model: DecoderConfig,
    /// Sequences per forward/backward pass (micro-batch).
    pub batch_size: usize,
    /// Tokens per optimiser step; micro-batches are accumulated up to it (Table 3: 8M).
    pub batch_tokens: usize,
    /// Optimiser steps.
    pub steps: u64,
    /// Peak learning rate (Table 3).
    pub lr: f64,
    pub warmup_steps: u64,
    pub decay: Decay,
    pub min_lr_ratio: f64,
    /// AdamW.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, not applied to the positional embedding (LayerNorms have no
    /// parameters).
    pub weight_decay: f64,
    /// Global gradient-norm clipping (0: none).
    pub clip_norm: f64,
    /// Validation every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Validation micro-batches per evaluation (0: the whole split).
    pub eval_batches: usize,
    /// Checkpoint every this many steps (and at the end).
    pub save_every: u64,
    /// Checkpoints kept (the newest).
    pub keep_checkpoints: usize,
    /// Seeds the initialisation and the data order.
    pub seed: u64,
    /// Which targets the loss scores: `sequence` (every token but padding, the paper's choice
    /// for pretraining and SFT) or `output_only` (only each example's output and its closing
    /// `<eos>`, as `cm3 sft build` marks them: the usual instruction-tuning ablation).
    pub loss: LossOn,
}

/// The targets the training loss scores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossOn {
    #[default]
    Sequence,
    OutputOnly,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::preset("tiny").unwrap_or_else(|_| unreachable!("the tiny preset exists"))
    }
}

/// Table 3: 8M-token batches (2,048 sequences of 4,096), 1,500 warmup steps.
const PAPER_BATCH_TOKENS: usize = 2048 * 4096;

/// Table 4 (SFT): 2M-token batches (512 sequences of 4,096), peak lr 5e-5, 150 warmup steps,
/// "approximately 30 billion tokens" (§E.1).
const SFT_BATCH_TOKENS: usize = 512 * 4096;
const SFT_TOKENS: u64 = 30_000_000_000;

/// The names [`TrainConfig::preset`] knows. `sft` is Table 4's optimisation for a model whose
/// shape comes from the pretrained weights (`cm3 train --init-from`); `sft-760m` and `sft-7b`
/// also name the model, which must then match them.
pub const TRAIN_PRESETS: [&str; 7] = ["tiny", "350m", "760m", "7b", "sft", "sft-760m", "sft-7b"];

impl TrainConfig {
    fn paper(model: &str, lr: f64, tokens: u64) -> Result<Self> {
        Ok(Self {
            model: DecoderConfig {
                vocab_size: 0,
                ..DecoderConfig::preset(model)?
            },
            batch_size: 8,
            batch_tokens: PAPER_BATCH_TOKENS,
            steps: tokens / PAPER_BATCH_TOKENS as u64,
            lr,
            warmup_steps: 1500,
            decay: Decay::Linear,
            min_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            clip_norm: 1.0,
            eval_every: 1000,
            eval_batches: 100,
            save_every: 1000,
            keep_checkpoints: 3,
            seed: 0,
            loss: LossOn::Sequence,
        })
    }

    /// Fine-tuning a pretrained `model` with Table 4's settings.
    fn sft(model: &str) -> Result<Self> {
        Ok(Self {
            batch_tokens: SFT_BATCH_TOKENS,
            steps: SFT_TOKENS / SFT_BATCH_TOKENS as u64,
            warmup_steps: 150,
            ..Self::paper(model, 5e-5, 0)?
        })
    }

    /// `tiny` (a 2-layer model for tests and the demo data), Table 3's `350m`, `760m`, `7b`,
    /// or Table 4's fine-tuning `sft` (the model from `--init-from`), `sft-760m`, `sft-7b`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self {
                batch_size: 4,
                batch_tokens: 0,
                steps: 200,
                lr: 1e-3,
                warmup_steps: 10,
                eval_every: 50,
                eval_batches: 0,
                save_every: 50,
                ..Self::paper("tiny", 1e-3, 0)?
            }),
            "350m" => Self::paper("350m", 6e-4, 1_400_000_000_000),
            "760m" => Self::paper("760m", 5e-4, 1_900_000_000_000),
            "7b" => Self::paper("7b", 1.2e-4, 2_400_000_000_000),
            // The model is a placeholder: `--init-from` replaces its shape.
            "sft" => Self::sft("tiny"),
            "sft-760m" => Self::sft("760m"),
            "sft-7b" => Self::sft("7b"),
            other => Err(TrainError::Config(format!(
                "unknown preset {other:?}; known: {}",
                TRAIN_PRESETS.join(", ")
            ))),
        }
    }

    /// Micro-batches per optimiser step for sequences of `seq_len` (`batch_tokens` 0: one).
    pub fn accumulation(&self, seq_len: usize) -> usize {
        let per_micro = self.batch_size * seq_len;
        if self.batch_tokens == 0 || per_micro == 0 {
            1
        } else {
            self.batch_tokens.div_ceil(per_micro).max(1)
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.batch_size == 0 || self.steps == 0 {
            return bad("batch_size and steps must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1 and beta2 must be in [0, 1)".into());
        }
        if !(self.eps > 0.0 && self.weight_decay >= 0.0 && self.clip_norm >= 0.0) {
            return bad("eps must be positive, weight_decay and clip_norm not negative".into());
        }
        if self.keep_checkpoints == 0 || self.save_every == 0 {
            return bad("save_every and keep_checkpoints must be positive".into());
        }
        Ok(())
    }

    /// The learning rate at optimiser step `step` (0-based): linear warmup from 0 to `lr`
    /// over `warmup_steps`, then `decay` to `min_lr_ratio × lr` at the last step.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        let factor = match self.decay {
            Decay::Linear => 1.0 - progress,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        floor + (self.lr - floor) * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_carry_table_3() -> Result<()> {
        for (name, lr, layers, d) in [
            ("350m", 6e-4, 24, 1024),
            ("760m", 5e-4, 24, 1536),
            ("7b", 1.2e-4, 32, 4096),
        ] {
            let c = TrainConfig::preset(name)?;
            assert_eq!((c.lr, c.model.n_layers, c.model.d_model), (lr, layers, d));
            assert_eq!(c.warmup_steps, 1500);
            assert_eq!(c.batch_tokens, 8_388_608);
            assert_eq!(c.model.max_seq_len, 4096);
            assert_eq!(
                (c.beta1, c.beta2, c.eps, c.weight_decay),
                (0.9, 0.95, 1e-8, 0.1)
            );
            assert_eq!(c.accumulation(4096), 256);
        }
        // 1.4T tokens in 8M-token steps.
        assert_eq!(TrainConfig::preset("350m")?.steps, 166_893);
        Ok(())
    }

    #[test]
    fn sft_presets_carry_table_4() -> Result<()> {
        for (name, d) in [("sft-760m", 1536), ("sft-7b", 4096)] {
            let c = TrainConfig::preset(name)?;
            assert_eq!((c.lr, c.warmup_steps, c.model.d_model), (5e-5, 150, d));
            // 2M-token batches: 512 sequences of 4,096.
            assert_eq!(c.batch_tokens, 2_097_152);
            assert_eq!(c.accumulation(4096), 64);
            // About 30B tokens: 14,305 steps of 2,097,152.
            assert_eq!(c.steps, 14_305);
        }
        assert_eq!(TrainConfig::preset("sft")?.lr, 5e-5);
        for name in TRAIN_PRESETS {
            TrainConfig::preset(name)?.validate()?;
        }
        Ok(())
    }

    #[test]
    fn warmup_then_decay_to_the_floor() -> Result<()> {
        let mut c = TrainConfig {
            lr: 1.0,
            warmup_steps: 10,
            steps: 110,
            min_lr_ratio: 0.1,
            ..TrainConfig::default()
        };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(110) - 0.1).abs() < 1e-12);
        c.decay = Decay::Cosine;
        assert!((c.lr_at(60) - 0.55).abs() < 1e-12);
        assert!(
            (c.lr_at(35) - (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos()))).abs()
                < 1e-12
        );
        Ok(())
    }
}
