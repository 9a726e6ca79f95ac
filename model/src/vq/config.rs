//! The GumbelVQ configuration: taming-transformers' `ddconfig` plus the codebook.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The shape of a taming-transformers VQGAN with Gumbel quantisation. Field names are taming's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqConfig {
    /// Base channel count (128 in `vqgan_gumbel_f8`).
    pub ch: usize,
    /// Channel multiplier per resolution level ([1, 1, 2, 4]: factor 2^(levels-1) = 8).
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Feature-map sizes (at `resolution`) that get self-attention (`[32]` at 256²).
    pub attn_resolutions: Vec<usize>,
    /// The training resolution: it decides where attention sits, not the input size.
    pub resolution: usize,
    pub in_channels: usize,
    pub out_ch: usize,
    pub z_channels: usize,
    /// Codebook vector size.
    pub embed_dim: usize,
    /// Number of codes.
    pub n_embed: usize,
    /// What every normalisation layer averages over. A config without the field (taming's, and
    /// every tokenizer saved before it existed) means taming's GroupNorm.
    #[serde(default)]
    pub norm: Norm,
}

/// What a normalisation layer (taming's `Normalize`) takes its mean and variance over. Both
/// have a scale and a shift per channel (`gamma`, `beta`; `weight`, `bias` in checkpoints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// taming's: GroupNorm with 32 groups, over a group's channels and the whole image. With 32
    /// channels that is one channel a group: each channel's mean and scale over the image are
    /// removed, so the level a flat region has in every channel, which is its colour, does not
    /// pass the encoder's last normalisation, and the decoder cannot make it after its own.
    /// Statistics over the whole image also make a region's features depend on the rest of the
    /// image, and on its size: a model trained on crops sees other statistics on whole images.
    #[default]
    Group,
    /// Over the channels at each position (a LayerNorm of every pixel's feature vector, as
    /// ConvNeXt has): a feature depends only on its receptive field, the same on a crop as on
    /// the whole image, and a colour is the direction of the vector, which survives. What cm3
    /// trains.
    Layer,
}

/// taming-transformers' `Normalize`: `GroupNorm(num_groups=32, ...)`.
pub const TAMING_NORM_GROUPS: usize = 32;

impl VqConfig {
    /// `vqgan_gumbel_f8`: 8,192 codes of 256, 256² → 32 × 32 (the paper's image tokenizer shape).
    pub fn gumbel_f8() -> Self {
        Self {
            ch: 128,
            ch_mult: vec![1, 1, 2, 4],
            num_res_blocks: 2,
            attn_resolutions: vec![32],
            resolution: 256,
            in_channels: 3,
            out_ch: 3,
            z_channels: 256,
            embed_dim: 256,
            n_embed: 8192,
            norm: Norm::Group,
        }
    }

    /// Spatial downsampling factor (8 for four levels).
    pub fn factor(&self) -> usize {
        1 << (self.ch_mult.len().saturating_sub(1))
    }

    /// Codes per side for a square image of `resolution` pixels.
    pub fn grid(&self) -> usize {
        self.resolution / self.factor()
    }

    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |reason: String| ModelError::Config {
            origin: origin.to_string(),
            reason,
        };
        if self.ch_mult.is_empty() || self.ch_mult.contains(&0) {
            return Err(bad(format!(
                "ch_mult {:?} must be non-empty and positive",
                self.ch_mult
            )));
        }
        if self.ch == 0 || self.n_embed == 0 || self.embed_dim == 0 || self.num_res_blocks == 0 {
            return Err(bad(
                "ch, n_embed, embed_dim and num_res_blocks must be positive".into(),
            ));
        }
        if self.norm == Norm::Group {
            for c in std::iter::once(self.ch).chain(self.ch_mult.iter().map(|m| m * self.ch)) {
                if !c.is_multiple_of(TAMING_NORM_GROUPS) {
                    return Err(bad(format!(
                        "{c} channels cannot be split into GroupNorm's {TAMING_NORM_GROUPS} \
                         groups (norm = \"layer\" has no such limit)"
                    )));
                }
            }
        }
        // GumbelQuantize.proj is built for z_channels inputs but applied to quant_conv's
        // embed_dim outputs (taming vqgan.py:55-59, quantize.py:129,176): only equal sizes work.
        if self.z_channels != self.embed_dim {
            return Err(bad(format!(
                "z_channels {} must equal embed_dim {} (taming's GumbelQuantize applies a \
                 z_channels-input projection to the embed_dim-channel quant_conv output)",
                self.z_channels, self.embed_dim
            )));
        }
        if !self.resolution.is_multiple_of(self.factor()) {
            return Err(bad(format!(
                "resolution {} is not a multiple of the downsampling factor {}",
                self.resolution,
                self.factor()
            )));
        }
        Ok(())
    }

    /// Read taming's `config.yaml` (`model.target: taming.models.vqgan.GumbelVQ`,
    /// `model.params.{embed_dim, n_embed, ddconfig}`); other keys (loss, schedulers) are ignored.
    pub fn from_taming_yaml(path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            op: "reading",
            path: path.to_path_buf(),
            source: e,
        })?;
        let bad = |reason: String| ModelError::Config {
            origin: origin.clone(),
            reason,
        };
        let doc: TamingDoc = serde_yaml_ng::from_str(&text)
            .map_err(|e| bad(format!("not a taming-transformers model config: {e}")))?;
        let target = doc.model.target.as_deref().unwrap_or("");
        if !target.ends_with("GumbelVQ") {
            return Err(bad(format!(
                "model.target is {target:?}; only taming.models.vqgan.GumbelVQ is supported"
            )));
        }
        let p = doc.model.params;
        let d = p.ddconfig;
        if d.double_z {
            return Err(bad("double_z: true is a VAE encoder, not a VQGAN's".into()));
        }
        let cfg = Self {
            ch: d.ch,
            ch_mult: d.ch_mult,
            num_res_blocks: d.num_res_blocks,
            attn_resolutions: d.attn_resolutions,
            resolution: d.resolution,
            in_channels: d.in_channels,
            out_ch: d.out_ch,
            z_channels: d.z_channels,
            embed_dim: p.embed_dim,
            n_embed: p.n_embed,
            norm: Norm::Group,
        };
        cfg.validate(&origin)?;
        Ok(cfg)
    }
}

#[derive(Deserialize)]
struct TamingDoc {
    model: TamingModel,
}

#[derive(Deserialize)]
struct TamingModel {
    target: Option<String>,
    params: TamingParams,
}

#[derive(Deserialize)]
struct TamingParams {
    embed_dim: usize,
    n_embed: usize,
    ddconfig: TamingDd,
}

#[derive(Deserialize)]
struct TamingDd {
    #[serde(default)]
    double_z: bool,
    z_channels: usize,
    resolution: usize,
    in_channels: usize,
    out_ch: usize,
    ch: usize,
    ch_mult: Vec<usize>,
    num_res_blocks: usize,
    attn_resolutions: Vec<usize>,
}
