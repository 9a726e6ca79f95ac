//! A VQ tokenizer of our own: the same VQGAN encoder and decoder, with a nearest-neighbour
//! codebook learned by exponential moving averages (VQ-VAE-2 / "Neural Discrete Representation
//! Learning" appendix) and dead-code restarts (codes that stop being used are moved onto
//! encoder outputs of the current batch, as Jukebox and SoundStream do, drawn where the codebook
//! fits the batch worst), trained on reconstruction (mean squared error) plus the commitment loss
//! with a straight-through gradient. No adversarial or perceptual loss: they need a
//! discriminator and a pretrained VGG, and are GPU work.
//!
//! It is trained for a few hundred steps on a CPU, which decides three settings that taming's
//! 100k-step GPU training does not care about: weights drawn so that the untrained network
//! already passes the image through ([`Init::Train`]), a codebook average that follows the
//! encoder within a few steps (`ema_decay` 0.9), and no restarts in the last quarter of the
//! steps, so that the decoder learns the codebook it is saved with.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use cm3_core::rng::SplitMix64;
use serde::{Deserialize, Deserializer, Serialize};

use super::config::{Norm, VqConfig};
use super::modules::{Decoder, Encoder, Init, conv};
use crate::error::{ModelError, Result};
use crate::read::{read_f32, read_i64};

/// The inference model: encoder, decoder and the learned codebook (`codebook.weight` [K, D]).
#[derive(Module, Debug)]
pub struct EmaVq {
    pub(crate) encoder: Encoder,
    pub(crate) decoder: Decoder,
    pub(crate) quant_conv: Conv2d,
    pub(crate) post_quant_conv: Conv2d,
    pub(crate) codebook: Embedding,
}

impl EmaVq {
    /// A model to train from scratch ([`Init::Train`]); loading saved weights replaces them all.
    pub fn new(cfg: &VqConfig, device: &Device) -> Self {
        let conv1 = |cin, cout| conv(cin, cout, 1, 1, 0, Init::Train, device);
        Self {
            encoder: Encoder::new(cfg, Init::Train, device),
            decoder: Decoder::new(cfg, Init::Train, device),
            quant_conv: conv1(cfg.z_channels, cfg.embed_dim),
            post_quant_conv: conv1(cfg.embed_dim, cfg.z_channels),
            codebook: EmbeddingConfig::new(cfg.n_embed, cfg.embed_dim).init(device),
        }
    }
}

/// Index of the nearest codebook row for every row of `flat` ([N, D] against [K, D]).
pub(crate) fn nearest(flat: Tensor<2>, codebook: Tensor<2>) -> Tensor<1, Int> {
    let [n, _] = flat.dims();
    let [k, _] = codebook.dims();
    let dist = flat.clone().powf_scalar(2.0).sum_dim(1)
        - flat.matmul(codebook.clone().transpose()).mul_scalar(2.0)
        + codebook.powf_scalar(2.0).sum_dim(1).reshape([1, k]);
    dist.argmin(1).reshape([n])
}

/// [B, D, h, w] → [B·h·w, D], position-major (the order codes are listed in).
pub(crate) fn flatten(z: Tensor<4>) -> Tensor<2> {
    let [b, d, h, w] = z.dims();
    z.permute([0, 2, 3, 1]).reshape([b * h * w, d])
}

/// How a VQ tokenizer is trained. The defaults are a small model (16, 32, 64 and 64 channels at
/// the four levels, per-position normalisation, f8, 256 codes of 32, 32 × 32 crops) that trains
/// on a CPU in minutes; the full f8-8192 shape (`VqConfig::gumbel_f8` sizes on 256² crops) is
/// GPU work. `model.resolution` is the crop size. A `model` table without `norm` gets
/// [`Norm::Layer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VqTrainConfig {
    #[serde(deserialize_with = "train_model")]
    pub model: VqConfig,
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Weight of the commitment loss ||z_e − sg(z_q)||².
    pub commitment: f64,
    /// EMA decay of the codebook statistics (0.9: the codebook follows the encoder within about
    /// ten steps; 0.99 lags a hundred steps behind it, a whole short training).
    pub ema_decay: f64,
    /// Every this many steps, codes whose EMA usage (per step) fell below `dead_code_usage` are
    /// restarted, until three quarters of the steps are done.
    pub restart_every: usize,
    pub dead_code_usage: f64,
    /// Of this many random crops of a training image, the one whose pixels vary most is trained
    /// on (1: any crop). A crop of a flat background teaches little; on flat shapes most random
    /// crops are one.
    pub crop_candidates: usize,
    /// Images held out (by a hash of the pair id) to report reconstruction and code usage on.
    pub held_out: usize,
    /// At most this many training images are decoded and kept in memory: a dataset with more
    /// contributes a uniform sample of them (the images whose seeded hash of the pair id is
    /// smallest), so that memory does not grow with the dataset. 4,096 images of 256² are
    /// 768 MiB. Training draws `steps × batch_size` crops, so a sample larger than that adds
    /// nothing.
    pub max_images: usize,
    pub seed: u64,
}

impl Default for VqTrainConfig {
    fn default() -> Self {
        Self {
            model: VqConfig {
                ch: 16,
                ch_mult: vec![1, 2, 4, 4],
                num_res_blocks: 1,
                attn_resolutions: vec![],
                resolution: 32,
                in_channels: 3,
                out_ch: 3,
                z_channels: 32,
                embed_dim: 32,
                n_embed: 256,
                norm: Norm::Layer,
            },
            steps: 300,
            batch_size: 8,
            learning_rate: 1e-3,
            commitment: 0.25,
            ema_decay: 0.9,
            restart_every: 20,
            dead_code_usage: 0.25,
            crop_candidates: 4,
            held_out: 16,
            max_images: 4096,
            seed: 0,
        }
    }
}

/// A training config's `model` table: without `norm`, [`Norm::Layer`] (a saved tokenizer's
/// `config.json` without it means taming's GroupNorm, as it was trained).
fn train_model<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<VqConfig, D::Error> {
    let mut v = serde_json::Value::deserialize(d)?;
    if let Some(table) = v.as_object_mut() {
        table.entry("norm").or_insert_with(|| "layer".into());
    }
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

impl VqTrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.model.validate("train config")?;
        let bad = |reason: &str| ModelError::Config {
            origin: "train config".into(),
            reason: reason.into(),
        };
        if self.steps == 0
            || self.batch_size == 0
            || self.crop_candidates == 0
            || self.max_images == 0
        {
            return Err(bad(
                "steps, batch_size, crop_candidates and max_images must be positive",
            ));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(bad("ema_decay must be in [0, 1)"));
        }
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return Err(bad("learning_rate must be positive"));
        }
        Ok(())
    }
}

/// One step's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepStats {
    pub step: usize,
    pub loss: f64,
    pub reconstruction: f64,
    pub commitment: f64,
    /// exp(entropy) of the batch's code histogram: how many codes are effectively in use.
    pub perplexity: f64,
    pub restarted: usize,
}

/// The training state: the model on an autodiff device, the optimizer, and the codebook with
/// its EMA statistics kept on the host (they are updated by averaging, not by gradients).
pub struct VqTrainer {
    cfg: VqTrainConfig,
    device: Device,
    /// Taken out and put back around each optimiser step (which consumes the module).
    model: Option<EmaVq>,
    optim: ModuleOptimizer,
    codebook: Vec<f32>,
    ema_count: Vec<f64>,
    ema_sum: Vec<f64>,
    initialised: bool,
    step: usize,
    rng: SplitMix64,
}

impl std::fmt::Debug for VqTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VqTrainer")
            .field("cfg", &self.cfg)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl VqTrainer {
    /// `device` must be an autodiff device (`Device::flex().autodiff()`).
    pub fn new(cfg: VqTrainConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let m = &cfg.model;
        let model = EmaVq::new(m, device);
        let optim = AdamConfig::new().with_epsilon(1e-8).init();
        Ok(Self {
            codebook: vec![0.0; m.n_embed * m.embed_dim],
            ema_count: vec![0.0; m.n_embed],
            ema_sum: vec![0.0; m.n_embed * m.embed_dim],
            rng: SplitMix64::new(cfg.seed ^ 0x9E37_79B9_7F4A_7C15),
            cfg,
            device: device.clone(),
            model: Some(model),
            optim,
            initialised: false,
            step: 0,
        })
    }

    fn codebook_tensor(&self) -> Tensor<2> {
        let m = &self.cfg.model;
        Tensor::from_data(
            TensorData::new(self.codebook.clone(), [m.n_embed, m.embed_dim]),
            &self.device,
        )
    }

    /// One optimisation step on `b` images (NCHW in [-1, 1], the configured resolution).
    pub fn step(&mut self, pixels: Vec<f32>, b: usize) -> Result<StepStats> {
        let m = self.cfg.model.clone();
        let (k, d, r) = (m.n_embed, m.embed_dim, m.resolution);
        if pixels.len() != b * m.in_channels * r * r {
            return Err(ModelError::Input {
                op: "training step",
                reason: format!("{} values for {b} images of {r} × {r}", pixels.len()),
            });
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels, [b, m.in_channels, r, r]),
            &self.device,
        );
        let model = self.model.take().ok_or_else(|| ModelError::Tensor {
            op: "training step",
            reason: "an earlier step failed half-way; start a new trainer".into(),
        })?;
        let z = model.quant_conv.forward(model.encoder.forward(x.clone()));
        let [_, _, h, w] = z.dims();
        let flat = flatten(z);
        let flat_host = read_f32(flat.clone().detach(), "encoder output")?;
        if !self.initialised {
            // Start the codebook on encoder outputs, so that every code begins near the data.
            let n = flat_host.len() / d;
            for c in 0..k {
                let i = (self.rng.next_u64() % n as u64) as usize;
                self.codebook[c * d..(c + 1) * d].copy_from_slice(&flat_host[i * d..(i + 1) * d]);
                self.ema_sum[c * d..(c + 1) * d]
                    .iter_mut()
                    .zip(&flat_host[i * d..(i + 1) * d])
                    .for_each(|(s, &v)| *s = f64::from(v));
                self.ema_count[c] = 1.0;
            }
            self.initialised = true;
        }
        let codebook = self.codebook_tensor();
        let old_codebook = self.codebook.clone();
        let idx = nearest(flat.clone().detach(), codebook.clone());
        let idx_host = read_i64(idx.clone(), "codes")?;
        let zq = codebook.select(0, idx);
        let commitment = (flat.clone() - zq.clone()).powf_scalar(2.0).mean();
        // Straight-through: the decoder sees z_q, the gradient flows to z_e unchanged.
        let zq_st = flat.clone() + (zq - flat).detach();
        let zq_img = zq_st.reshape([b, h, w, d]).permute([0, 3, 1, 2]);
        let recon = model.decoder.forward(model.post_quant_conv.forward(zq_img));
        let reconstruction = (recon - x).powf_scalar(2.0).mean();
        let loss = reconstruction.clone() + commitment.clone().mul_scalar(self.cfg.commitment);
        let stats_loss = read_f32(loss.clone().detach().reshape([1]), "loss")?[0];
        let stats_rec = read_f32(reconstruction.detach().reshape([1]), "loss")?[0];
        let stats_com = read_f32(commitment.detach().reshape([1]), "loss")?[0];
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optim.step(self.cfg.learning_rate, model, grads));

        // EMA codebook update from this batch's assignments.
        let decay = self.cfg.ema_decay;
        let mut count = vec![0f64; k];
        let mut sum = vec![0f64; k * d];
        for (i, &c) in idx_host.iter().enumerate() {
            let c = c as usize;
            count[c] += 1.0;
            for j in 0..d {
                sum[c * d + j] += f64::from(flat_host[i * d + j]);
            }
        }
        for c in 0..k {
            self.ema_count[c] = decay * self.ema_count[c] + (1.0 - decay) * count[c];
            for j in 0..d {
                let s = &mut self.ema_sum[c * d + j];
                *s = decay * *s + (1.0 - decay) * sum[c * d + j];
            }
        }
        // Laplace smoothing keeps rarely used codes from dividing by zero.
        let total: f64 = self.ema_count.iter().sum();
        let eps = 1e-5;
        for c in 0..k {
            let n = (self.ema_count[c] + eps) / (total + k as f64 * eps) * total;
            for j in 0..d {
                self.codebook[c * d + j] = (self.ema_sum[c * d + j] / n) as f32;
            }
        }
        self.step += 1;
        let mut restarted = 0;
        // No restarts in the last quarter: a restarted code is new to the decoder, and the
        // tokenizer must be saved with codes the decoder has learned.
        if self.step.is_multiple_of(self.cfg.restart_every.max(1))
            && 4 * self.step <= 3 * self.cfg.steps
        {
            let n = idx_host.len();
            // The squared distance of every encoder output to the code it was given: restarted
            // codes go where the codebook fits the batch worst (k-means++ seeding), not where
            // the batch is densest (a flat background would take them all).
            let err: Vec<f64> = idx_host
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let c = c as usize;
                    (0..d)
                        .map(|j| {
                            let e = f64::from(flat_host[i * d + j] - old_codebook[c * d + j]);
                            e * e
                        })
                        .sum()
                })
                .collect();
            let total_err: f64 = err.iter().sum();
            for c in 0..k {
                if self.ema_count[c] < self.cfg.dead_code_usage {
                    let i = if total_err <= 0.0 {
                        (self.rng.next_u64() % n as u64) as usize
                    } else {
                        let mut t = self.rng.next_f64() * total_err;
                        err.iter()
                            .position(|&e| {
                                t -= e;
                                t < 0.0
                            })
                            .unwrap_or(n - 1)
                    };
                    let v = &flat_host[i * d..(i + 1) * d];
                    self.codebook[c * d..(c + 1) * d].copy_from_slice(v);
                    for (s, &x) in self.ema_sum[c * d..(c + 1) * d].iter_mut().zip(v) {
                        *s = f64::from(x);
                    }
                    self.ema_count[c] = 1.0;
                    restarted += 1;
                }
            }
        }
        Ok(StepStats {
            step: self.step,
            loss: f64::from(stats_loss),
            reconstruction: f64::from(stats_rec),
            commitment: f64::from(stats_com),
            perplexity: perplexity(&count),
            restarted,
        })
    }

    /// Mean squared reconstruction error of `b` images (NCHW in [-1, 1]) through the current
    /// encoder, codebook and decoder (no gradient step).
    pub fn evaluate(&self, pixels: Vec<f32>, b: usize) -> Result<f64> {
        let m = &self.cfg.model;
        let r = m.resolution;
        let model = self.model.as_ref().ok_or_else(|| ModelError::Tensor {
            op: "evaluating",
            reason: "an earlier step failed half-way".into(),
        })?;
        if pixels.len() != b * m.in_channels * r * r || b == 0 {
            return Err(ModelError::Input {
                op: "evaluating",
                reason: format!("{} values for {b} images of {r} × {r}", pixels.len()),
            });
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels, [b, m.in_channels, r, r]),
            &self.device,
        );
        let z = model
            .quant_conv
            .forward(model.encoder.forward(x.clone()))
            .detach();
        let [_, d, h, w] = z.dims();
        let codebook = self.codebook_tensor();
        let zq = codebook.clone().select(0, nearest(flatten(z), codebook));
        let zq = zq.reshape([b, h, w, d]).permute([0, 3, 1, 2]);
        let recon = model.decoder.forward(model.post_quant_conv.forward(zq));
        let mse = (recon - x).powf_scalar(2.0).mean().detach().reshape([1]);
        Ok(f64::from(read_f32(mse, "evaluation")?[0]))
    }

    pub fn config(&self) -> &VqTrainConfig {
        &self.cfg
    }

    /// The trained model for inference on `device` (typically without autodiff), tokenising
    /// square images of `image_size`.
    pub fn finish(self, device: &Device, image_size: usize) -> Result<super::VqTokenizer> {
        let m = self.cfg.model.clone();
        let codebook = Tensor::<2>::from_data(
            TensorData::new(self.codebook.clone(), [m.n_embed, m.embed_dim]),
            &self.device,
        );
        let mut model = self.model.ok_or_else(|| ModelError::Tensor {
            op: "finishing training",
            reason: "an earlier step failed half-way".into(),
        })?;
        model.codebook.weight = Param::from_tensor(codebook);
        let model = model.valid();
        super::VqTokenizer::from_ema(model.to_device(device), m, image_size, device)
    }
}

/// exp(entropy) of a histogram.
pub fn perplexity(counts: &[f64]) -> f64 {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| {
            let p = c / total;
            -p * p.ln()
        })
        .sum();
    h.exp()
}
