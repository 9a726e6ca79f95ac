//! The image tokenizer: taming-transformers' VQGAN with Gumbel quantisation (`GumbelVQ`).
//!
//! Tokenising is deterministic: the code of a position is the argmax of `quantize.proj`'s logits
//! (taming's `GumbelQuantize.forward` adds Gumbel noise even in eval mode; the argmax is what a
//! tokenizer must return). Decoding gathers the codebook rows and runs the decoder, as taming's
//! `get_codebook_entry` + `VQModel.decode` do. Pixels are in [-1, 1], NCHW.

pub mod config;
pub mod ema;
pub mod modules;

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::store::{ModuleSnapshot, PytorchStore, SafetensorsStore};
use burn::tensor::{Device, Int, Tensor, TensorData};

pub use config::{Norm, VqConfig};
use ema::EmaVq;
pub use ema::{StepStats, VqTrainConfig, VqTrainer};
use modules::{Decoder, Encoder, GumbelQuantize, Init};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The whole model, with taming's attribute names (checkpoint keys `encoder.*`, `decoder.*`,
/// `quantize.*`, `quant_conv.*`, `post_quant_conv.*`).
#[derive(Module, Debug)]
pub struct GumbelVq {
    encoder: Encoder,
    decoder: Decoder,
    quantize: GumbelQuantize,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
}

impl GumbelVq {
    pub fn new(cfg: &VqConfig, device: &Device) -> Self {
        let conv1 = |cin, cout| modules::conv(cin, cout, 1, 1, 0, Init::Torch, device);
        Self {
            encoder: Encoder::new(cfg, Init::Torch, device),
            decoder: Decoder::new(cfg, Init::Torch, device),
            quantize: GumbelQuantize::new(cfg, device),
            quant_conv: conv1(cfg.z_channels, cfg.embed_dim),
            post_quant_conv: conv1(cfg.embed_dim, cfg.z_channels),
        }
    }
}

/// Checkpoint keys that belong to training only (the GAN discriminator and the LPIPS network
/// of taming's `loss` module): present in released checkpoints, not part of the tokenizer.
fn training_only(key: &str) -> bool {
    key.starts_with("loss.")
}

/// Which quantiser a tokenizer has.
#[derive(Debug)]
enum Model {
    /// taming's GumbelVQ: codes are the argmax of the quantiser's logits.
    Gumbel(Box<GumbelVq>),
    /// Our own, trained with an EMA codebook: codes are the nearest codebook rows.
    Ema(Box<EmaVq>),
}

/// `config.json` beside a trained tokenizer's `model.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedVq {
    /// `ema`: the only kind cm3 trains.
    pub kind: String,
    pub model: VqConfig,
    /// The square image size it tokenises (the dataset's), which may exceed the crops it was
    /// trained on: the model is convolutional.
    pub image_size: usize,
}

/// A loaded image tokenizer.
#[derive(Debug)]
pub struct VqTokenizer {
    model: Model,
    cfg: VqConfig,
    /// The square image size it tokenises.
    image_size: usize,
    device: Device,
}

impl VqTokenizer {
    /// A model with fresh (random) weights.
    pub fn new(cfg: VqConfig, device: &Device) -> Result<Self> {
        cfg.validate("configuration")?;
        Ok(Self {
            model: Model::Gumbel(Box::new(GumbelVq::new(&cfg, device))),
            image_size: cfg.resolution,
            cfg,
            device: device.clone(),
        })
    }

    pub(crate) fn from_ema(
        model: EmaVq,
        cfg: VqConfig,
        image_size: usize,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate("configuration")?;
        if image_size == 0 || !image_size.is_multiple_of(cfg.factor()) {
            return Err(ModelError::Config {
                origin: "configuration".into(),
                reason: format!(
                    "image size {image_size} is not a positive multiple of {}",
                    cfg.factor()
                ),
            });
        }
        Ok(Self {
            model: Model::Ema(Box::new(model)),
            cfg,
            image_size,
            device: device.clone(),
        })
    }

    /// Save a trained tokenizer: `model.safetensors` + `config.json` in `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let Model::Ema(model) = &self.model else {
            return Err(ModelError::Config {
                origin: dir.display().to_string(),
                reason: "only tokenizers trained by cm3 are saved; a taming checkpoint is used \
                         where it is"
                    .into(),
            });
        };
        let io = |op, path: &Path, e| ModelError::Io {
            op,
            path: path.to_path_buf(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let weights = dir.join("model.safetensors");
        let config = dir.join("config.json");
        let saved = SavedVq {
            kind: "ema".into(),
            model: self.cfg.clone(),
            image_size: self.image_size,
        };
        let json = serde_json::to_string_pretty(&saved).map_err(|e| ModelError::Config {
            origin: config.display().to_string(),
            reason: e.to_string(),
        })?;
        // The config names the weights: a reader must never find it beside weights of another
        // model, or before its own weights are on disk. So the old config goes first, the new
        // weights are made durable, and only then does the new config appear, atomically.
        match std::fs::remove_file(&config) {
            Ok(()) => cm3_core::fsio::sync_dir(dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", &config, e)),
        }
        // A name of this process's own: two writers never share a temporary file.
        let tmp = dir.join(format!(".model.safetensors.tmp-{}", std::process::id()));
        let mut store = SafetensorsStore::from_file(&tmp).overwrite(true);
        let written = model
            .save_into(&mut store)
            .map_err(|e| ModelError::Checkpoint {
                path: weights.clone(),
                reason: format!("writing: {e}"),
            });
        let durable = written.and_then(|()| crate::sync_file(&tmp));
        if let Err(e) = durable {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &weights).map_err(|e| io("renaming", &tmp, e))?;
        cm3_core::fsio::sync_dir(dir)?;
        cm3_core::fsio::write_atomic(
            &config,
            (json + "\n").as_bytes(),
            &format!("vq-{}", std::process::id()),
        )?;
        Ok(())
    }

    /// Load a tokenizer saved by [`Self::save`] (`cm3 tokenizer train-image`).
    pub fn load_saved(dir: &Path, device: &Device) -> Result<Self> {
        let config = dir.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(|e| ModelError::Io {
            op: "reading",
            path: config.clone(),
            source: e,
        })?;
        let saved: SavedVq = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            origin: config.display().to_string(),
            reason: format!("not a cm3 VQ tokenizer config: {e}"),
        })?;
        if saved.kind != "ema" {
            return Err(ModelError::Config {
                origin: config.display().to_string(),
                reason: format!("unknown tokenizer kind {:?}", saved.kind),
            });
        }
        saved.model.validate(&config.display().to_string())?;
        let weights = dir.join("model.safetensors");
        let bad = |reason: String| ModelError::Checkpoint {
            path: weights.clone(),
            reason,
        };
        if !weights.is_file() {
            return Err(bad("no such file".into()));
        }
        let mut model = EmaVq::new(&saved.model, device);
        let mut store = SafetensorsStore::from_file(&weights).allow_partial(true);
        let applied = model
            .load_from(&mut store)
            .map_err(|e| bad(format!("cannot be read: {e}")))?;
        check_applied(&applied, &|r| bad(r), &|_| false)?;
        Self::from_ema(model, saved.model, saved.image_size, device)
    }

    /// Load taming-transformers' Lightning checkpoint (`last.ckpt`: `state_dict` inside) for the
    /// model `cfg` describes. Every model tensor must be present with its shape; keys other
    /// than the training-only `loss.*` that the model does not have are refused, with names.
    pub fn load_taming(ckpt: &Path, cfg: VqConfig, device: &Device) -> Result<Self> {
        cfg.validate("configuration")?;
        let mut model = GumbelVq::new(&cfg, device);
        let bad = |reason: String| ModelError::Checkpoint {
            path: ckpt.to_path_buf(),
            reason,
        };
        if !ckpt.is_file() {
            return Err(bad("no such file".into()));
        }
        let mut store = PytorchStore::from_file(ckpt)
            .with_top_level_key("state_dict")
            .map_indices_contiguous(false)
            .allow_partial(true);
        let applied = model
            .load_from(&mut store)
            .map_err(|e| bad(format!("cannot be read as a PyTorch checkpoint: {e}")))?;
        check_applied(&applied, &bad, &training_only)?;
        tracing::debug!(
            path = %ckpt.display(),
            applied = applied.applied.len(),
            "loaded a taming GumbelVQ checkpoint"
        );
        Ok(Self {
            model: Model::Gumbel(Box::new(model)),
            image_size: cfg.resolution,
            cfg,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &VqConfig {
        &self.cfg
    }

    /// The square image size it tokenises: the training resolution for a taming model, the
    /// dataset's image size for one trained by cm3 (on crops of it).
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    fn check_pixels(&self, op: &'static str, x: &Tensor<4>) -> Result<()> {
        let [_, c, h, w] = x.dims();
        let f = self.cfg.factor();
        if c != self.cfg.in_channels || h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(ModelError::Input {
                op,
                reason: format!(
                    "images of shape [{c}, {h}, {w}]: need {} channels and a height and width \
                     that are positive multiples of {f}",
                    self.cfg.in_channels
                ),
            });
        }
        Ok(())
    }

    /// `quant_conv(encoder(x))`, [B, embed_dim, H/f, W/f] (taming's `encode_to_prequant`).
    pub fn prequant(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        self.check_pixels("encoding images", &x)?;
        Ok(match &self.model {
            Model::Gumbel(m) => m.quant_conv.forward(m.encoder.forward(x)),
            Model::Ema(m) => m.quant_conv.forward(m.encoder.forward(x)),
        })
    }

    /// Logits over the codes, [B, n_embed, H/f, W/f] (GumbelVQ only).
    pub fn logits(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        match &self.model {
            Model::Gumbel(m) => Ok(m.quantize.logits(self.prequant(x)?)),
            Model::Ema(_) => Err(ModelError::Input {
                op: "logits",
                reason: "an EMA-codebook tokenizer picks the nearest code; it has no logits".into(),
            }),
        }
    }

    /// Codes of images in [-1, 1], [B, H/f, W/f].
    pub fn encode(&self, x: Tensor<4>) -> Result<Tensor<3, Int>> {
        match &self.model {
            Model::Gumbel(_) => {
                let logits = self.logits(x)?;
                let [b, _, h, w] = logits.dims();
                // On flex: one pass over the channel planes instead of a strided argmax.
                Ok(crate::fused::argmax_channels(logits)
                    .unwrap_or_else(|logits| logits.argmax(1).reshape([b, h, w])))
            }
            Model::Ema(m) => {
                let z = self.prequant(x)?;
                let [b, _, h, w] = z.dims();
                Ok(ema::nearest(ema::flatten(z), m.codebook.weight.val()).reshape([b, h, w]))
            }
        }
    }

    /// Codes of `b` images given as NCHW floats in [-1, 1], row-major per image (y·w + x).
    pub fn encode_pixels(
        &self,
        pixels: Vec<f32>,
        b: usize,
        h: usize,
        w: usize,
    ) -> Result<Vec<u32>> {
        let c = self.cfg.in_channels;
        if pixels.len() != b * c * h * w {
            return Err(ModelError::Input {
                op: "encoding images",
                reason: format!("{} values for {b} images of [{c}, {h}, {w}]", pixels.len()),
            });
        }
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [b, c, h, w]), &self.device);
        let codes = self.encode(x)?;
        // A device that failed the work (on lavapipe, a batch whose activations pass its buffer
        // limit) is an error here, not a panic.
        let ids = crate::read::read_i64(codes, "encoding images on the device")?;
        Ok(ids.into_iter().map(|c| c as u32).collect())
    }

    /// Images (raw decoder output, about [-1, 1]) of `b` code grids of `h` × `w`.
    pub fn decode(&self, codes: &[u32], b: usize, h: usize, w: usize) -> Result<Tensor<4>> {
        if codes.len() != b * h * w || h == 0 || w == 0 {
            return Err(ModelError::Input {
                op: "decoding codes",
                reason: format!("{} codes for {b} grids of {h} × {w}", codes.len()),
            });
        }
        let n = self.cfg.n_embed;
        if let Some((i, c)) = codes.iter().enumerate().find(|&(_, &c)| c as usize >= n) {
            return Err(ModelError::Input {
                op: "decoding codes",
                reason: format!("code {c} at position {i} is outside the codebook of {n}"),
            });
        }
        let ids: Vec<i64> = codes.iter().map(|&c| i64::from(c)).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [b * h * w]), &self.device);
        Ok(match &self.model {
            Model::Gumbel(m) => {
                let z = lookup(m.quantize.codebook(), ids, b, h, w);
                m.decoder.forward(m.post_quant_conv.forward(z))
            }
            Model::Ema(m) => {
                let z = lookup(m.codebook.weight.val(), ids, b, h, w);
                m.decoder.forward(m.post_quant_conv.forward(z))
            }
        })
    }
}

/// Codebook rows of `codes` (a flat [B·h·w] list), as [B, D, h, w].
fn lookup(codebook: Tensor<2>, codes: Tensor<1, Int>, b: usize, h: usize, w: usize) -> Tensor<4> {
    let d = codebook.dims()[1];
    codebook
        .select(0, codes)
        .reshape([b, h, w, d])
        .permute([0, 3, 1, 2])
}

/// Every model tensor loaded with its shape, and no tensor in the file that the model lacks
/// (apart from those `ignored`): otherwise an error listing them.
fn check_applied(
    applied: &burn::store::ApplyResult,
    bad: &dyn Fn(String) -> ModelError,
    ignored: &dyn Fn(&str) -> bool,
) -> Result<()> {
    if !applied.errors.is_empty() {
        return Err(bad(format!(
            "tensors that do not fit the model: {}",
            list(applied.errors.iter().map(|e| e.to_string()))
        )));
    }
    if !applied.missing.is_empty() {
        return Err(bad(format!(
            "{} model tensors are missing: {}",
            applied.missing.len(),
            list(applied.missing.iter().map(|(path, _)| torch_name(path)))
        )));
    }
    let extra: BTreeSet<String> = applied
        .unused
        .iter()
        .filter(|k| !ignored(k))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(bad(format!(
            "{} tensors are not part of a model of this configuration: {}",
            extra.len(),
            list(extra.into_iter())
        )));
    }
    Ok(())
}

/// Burn calls GroupNorm's scale and shift `gamma`/`beta`; checkpoints call them `weight`/`bias`.
fn torch_name(path: &str) -> String {
    if let Some(p) = path.strip_suffix(".gamma") {
        format!("{p}.weight")
    } else if let Some(p) = path.strip_suffix(".beta") {
        format!("{p}.bias")
    } else {
        path.to_string()
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    const SHOW: usize = 12;
    if items.len() <= SHOW {
        items.join(", ")
    } else {
        format!(
            "{}, ... ({} more)",
            items[..SHOW].join(", "),
            items.len() - SHOW
        )
    }
}

#[cfg(test)]
mod tests;
