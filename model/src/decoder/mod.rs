//! The CM3Leon decoder (paper §2.3): OPT's decoder-only transformer (pre-LayerNorm, ReLU
//! feed-forward, learned absolute positions) without bias terms, dropout or LayerNorm parameters.
//!
//! Parameters carry Hugging Face `OPTForCausalLM`'s names and layouts (`[out, in]` matrices,
//! the position table with OPT's two unused leading rows), so a saved model is an OPT checkpoint
//! that `transformers` loads, and an OPT checkpoint of this shape loads here.
pub mod cache;
pub mod config;
pub mod init;

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::{Module, Param};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use cm3_core::rng::SplitMix64;
use serde::{Deserialize, Serialize};

pub use cache::KvCache;
use config::POSITION_OFFSET;
pub use config::{DecoderConfig, Memory, ParamCounts, ZeroInit};

use crate::error::{ModelError, Result};
use crate::read::{read_f32, read_i64};

/// A bias-free linear map stored as PyTorch does, `[out, in]`.
#[derive(Module, Debug)]
pub struct Proj {
    pub weight: Param<Tensor<2>>,
}

impl Proj {
    /// `x` `[..., in]` times the weight's transpose, as one 2-D product over all leading
    /// positions: a batched product against a broadcast weight costs a per-batch gradient of the
    /// weight in the backward pass, summed afterwards.
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        project(x, self.weight.val())
    }
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub q_proj: Proj,
    pub k_proj: Proj,
    pub v_proj: Proj,
    pub out_proj: Proj,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: SelfAttention,
    pub fc1: Proj,
    pub fc2: Proj,
}

/// Holds a weight of shape `[rows, cols]` (the embeddings).
#[derive(Module, Debug)]
pub struct Table {
    pub weight: Param<Tensor<2>>,
}

#[derive(Module, Debug)]
pub struct OptDecoder {
    pub embed_tokens: Table,
    /// `(max_seq_len + 2) × d_model`: position `p` is row `p + 2`.
    pub embed_positions: Table,
    pub layers: Vec<DecoderLayer>,
}

#[derive(Module, Debug)]
pub struct OptModel {
    pub decoder: OptDecoder,
}

/// The decoder with its vocabulary projection (absent when tied to the input embedding).
#[derive(Module, Debug)]
pub struct Cm3Decoder {
    pub model: OptModel,
    pub lm_head: Option<Proj>,
}

/// What a forward pass over token sequences gives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    /// Mean next-token cross-entropy (nats) over the scored positions.
    pub loss: f64,
    pub perplexity: f64,
    /// Positions scored (targets that are not padding).
    pub tokens: u64,
}

impl Score {
    fn of((loss, tokens): (Tensor<1>, u64)) -> Result<Self> {
        let loss = f64::from(read_f32(loss, "loss")?[0]);
        Ok(Self {
            loss,
            perplexity: loss.exp(),
            tokens,
        })
    }
}

/// A next-token loss needs at least two tokens.
fn two_or_more(t: usize) -> Result<()> {
    if t < 2 {
        return Err(ModelError::Input {
            op: "loss",
            reason: format!("sequences of {t} tokens: a next-token loss needs at least 2"),
        });
    }
    Ok(())
}

/// Mean cross-entropy of `logits` `[B, T−1, V]` (positions 0..T−1 of `ids` `[B, T]`) against
/// the next ids, skipping targets equal to `pad`, and the number of targets scored.
fn next_token_loss(
    logits: Tensor<3>,
    ids: Tensor<2, Int>,
    pad: Option<u32>,
) -> Result<(Tensor<1>, u64)> {
    let [b, t] = ids.dims();
    let [_, _, v] = logits.dims();
    let n_targets = b * (t - 1);
    let targets = ids.slice([0..b, 1..t]).reshape([n_targets, 1]);
    let logits = logits.reshape([n_targets, v]);
    let ids_read = read_i64(targets.clone().reshape([n_targets]), "loss targets")?;
    if let Some(&bad) = ids_read.iter().find(|&&i| i < 0 || i as usize >= v) {
        return Err(ModelError::Input {
            op: "loss",
            reason: format!("target id {bad} outside the vocabulary of {v}"),
        });
    }
    let ids_u32: Vec<u32> = ids_read.iter().map(|&i| i as u32).collect();
    // One fused pass on flex; the composed -log_softmax(x)[t] elsewhere.
    let nll = crate::fused::nll_rows(logits, &ids_u32).unwrap_or_else(|logits| {
        log_softmax(logits, 1)
            .gather(1, targets.clone())
            .reshape([n_targets])
            .neg()
    });
    let (n, total) = match pad {
        Some(p) => {
            let weights: Vec<f32> = ids_read
                .iter()
                .map(|&i| f32::from(u8::from(i != i64::from(p))))
                .collect();
            let n = weights.iter().filter(|&&w| w > 0.0).count() as u64;
            let weights =
                Tensor::<1>::from_data(TensorData::new(weights, [n_targets]), &nll.device());
            (n, (nll * weights).sum())
        }
        None => (n_targets as u64, nll.sum()),
    };
    Ok((total.div_scalar(n.max(1) as f64), n))
}

/// What a weight is, for [`Cm3Decoder::build`]'s fill.
#[derive(Debug, Clone, Copy)]
enum Draw {
    /// A matrix the paper initialises as 0 ("output layers").
    Zero,
    /// Any other matrix: the truncated normal.
    Matrix,
    /// The positional embedding: a plain normal.
    Positions,
}

fn param(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// LayerNorm without parameters: (x − mean) / sqrt(var + eps) over the last axis (biased
/// variance, as PyTorch).
pub fn layer_norm(x: Tensor<3>, eps: f64) -> Tensor<3> {
    match crate::fused::layer_norm(x, eps) {
        Ok(y) => y,
        Err(x) => layer_norm_composed(x, eps),
    }
}

/// [`layer_norm`] from Burn's tensor operations: every backend but flex.
pub(crate) fn layer_norm_composed(x: Tensor<3>, eps: f64) -> Tensor<3> {
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().powf_scalar(2.0).mean_dim(2);
    centred / (var + eps).sqrt()
}

impl Cm3Decoder {
    /// A new model initialised as §2.3 says, from `seed`.
    pub fn init(cfg: &DecoderConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = SplitMix64::new(seed);
        Self::build(cfg, device, |draw, n| match draw {
            Draw::Zero => vec![0.0; n],
            Draw::Matrix => init::truncated_normal(n, cfg.init_std, cfg.init_truncation, &mut rng),
            Draw::Positions => init::normal(n, cfg.position_init_std, &mut rng),
        })
    }

    /// A model of this shape with every weight 0, to be filled from a checkpoint (random
    /// draws that loading replaces would be one normal draw per parameter for nothing).
    fn zeros(cfg: &DecoderConfig, device: &Device) -> Result<Self> {
        Self::build(cfg, device, |_, n| vec![0.0; n])
    }

    /// The module, each weight's values from `fill(what it is, element count)` in a fixed order.
    fn build(
        cfg: &DecoderConfig,
        device: &Device,
        mut fill: impl FnMut(Draw, usize) -> Vec<f32>,
    ) -> Result<Self> {
        cfg.validate("decoder config")?;
        let (d, f, v) = (cfg.d_model, cfg.ffn_dim, cfg.vocab_size);
        let mut matrix = |rows: usize, cols: usize, zero: bool| -> Proj {
            let draw = if zero { Draw::Zero } else { Draw::Matrix };
            Proj {
                weight: param(fill(draw, rows * cols), [rows, cols], device),
            }
        };
        let residual_zero = cfg.zero_init == ZeroInit::Residual;
        let embed_tokens = Table {
            weight: matrix(v, d, false).weight,
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            layers.push(DecoderLayer {
                self_attn: SelfAttention {
                    q_proj: matrix(d, d, false),
                    k_proj: matrix(d, d, false),
                    v_proj: matrix(d, d, false),
                    out_proj: matrix(d, d, residual_zero),
                },
                fc1: matrix(f, d, false),
                fc2: matrix(d, f, residual_zero),
            });
        }
        let lm_head = (!cfg.tie_embeddings).then(|| matrix(v, d, cfg.zero_init == ZeroInit::Vocab));
        let rows = cfg.max_seq_len + POSITION_OFFSET;
        let positions = fill(Draw::Positions, rows * d);
        Ok(Self {
            model: OptModel {
                decoder: OptDecoder {
                    embed_tokens,
                    embed_positions: Table {
                        weight: param(positions, [rows, d], device),
                    },
                    layers,
                },
            },
            lm_head,
        })
    }

    /// Logits `[B, T, vocab]` of token ids `[B, T]` (causal: position t sees 0..=t).
    pub fn forward(&self, cfg: &DecoderConfig, ids: Tensor<2, Int>) -> Result<Tensor<3>> {
        let [b, t] = ids.dims();
        if t == 0 || t > cfg.max_seq_len {
            return Err(ModelError::Input {
                op: "decoder forward",
                reason: format!(
                    "sequences of {t} tokens; the model takes 1 to {}",
                    cfg.max_seq_len
                ),
            });
        }
        let d = cfg.d_model;
        let device = ids.device();
        let dec = &self.model.decoder;
        let tokens = dec
            .embed_tokens
            .weight
            .val()
            .select(0, ids.reshape([b * t]));
        let positions = dec
            .embed_positions
            .weight
            .val()
            .slice([POSITION_OFFSET..POSITION_OFFSET + t, 0..d]);
        let mut x = tokens.reshape([b, t, d]) + positions.unsqueeze::<3>();
        let mask = causal_mask(t, &device);
        for layer in &dec.layers {
            x = self.block(layer, cfg, x, |q, k, v| causal_attention(q, k, v, &mask));
        }
        Ok(self.logits(cfg, x))
    }

    /// One decoder block on `x` `[B, t, d]`: pre-LayerNorm attention, whose scaled q and k, v
    /// (`[B, heads, t, head_dim]`) `attend` turns into the per-head context, then the
    /// pre-LayerNorm ReLU feed-forward, each added to the residual stream.
    pub(crate) fn block(
        &self,
        layer: &DecoderLayer,
        cfg: &DecoderConfig,
        x: Tensor<3>,
        attend: impl FnOnce(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let (h, hd) = (cfg.n_heads, cfg.head_dim());
        let a = &layer.self_attn;
        let hn = layer_norm(x.clone(), cfg.layer_norm_eps);
        let split = |y: Tensor<3>| y.reshape([b, t, h, hd]).swap_dims(1, 2);
        let q = split(
            a.q_proj
                .forward(hn.clone())
                .mul_scalar((hd as f64).powf(-0.5)),
        );
        let k = split(a.k_proj.forward(hn.clone()));
        let v = split(a.v_proj.forward(hn));
        let ctx = attend(q, k, v).swap_dims(1, 2).reshape([b, t, d]);
        let x = x + a.out_proj.forward(ctx);
        let hn = layer_norm(x.clone(), cfg.layer_norm_eps);
        x + layer.fc2.forward(relu(layer.fc1.forward(hn)))
    }

    /// The final LayerNorm and the vocabulary projection (the embedding when tied).
    pub(crate) fn logits(&self, cfg: &DecoderConfig, x: Tensor<3>) -> Tensor<3> {
        let x = layer_norm(x, cfg.layer_norm_eps);
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => project(x, self.model.decoder.embed_tokens.weight.val()),
        }
    }

    /// Mean next-token cross-entropy of `ids` `[B, T]`, skipping targets equal to `pad`, as a
    /// one-element tensor (differentiable on an autodiff device), and the number of targets.
    pub fn loss(
        &self,
        cfg: &DecoderConfig,
        ids: Tensor<2, Int>,
        pad: Option<u32>,
    ) -> Result<(Tensor<1>, u64)> {
        let [b, t] = ids.dims();
        two_or_more(t)?;
        let logits = self.forward(cfg, ids.clone().slice([0..b, 0..t - 1]))?;
        next_token_loss(logits, ids, pad)
    }

    /// [`Self::loss`] with the targets given apart from the inputs: `targets` `[B, T]` is `ids`
    /// with every target that is not scored replaced by `pad` (the output-only loss of SFT).
    pub fn loss_on(
        &self,
        cfg: &DecoderConfig,
        ids: Tensor<2, Int>,
        targets: Tensor<2, Int>,
        pad: u32,
    ) -> Result<(Tensor<1>, u64)> {
        let [b, t] = ids.dims();
        two_or_more(t)?;
        if targets.dims() != [b, t] {
            return Err(ModelError::Input {
                op: "loss",
                reason: format!("targets {:?} for ids {:?}", targets.dims(), [b, t]),
            });
        }
        let logits = self.forward(cfg, ids.slice([0..b, 0..t - 1]))?;
        next_token_loss(logits, targets, Some(pad))
    }

    /// Loss and perplexity of `ids` (no gradients).
    pub fn score(
        &self,
        cfg: &DecoderConfig,
        ids: Tensor<2, Int>,
        pad: Option<u32>,
    ) -> Result<Score> {
        Score::of(self.loss(cfg, ids, pad)?)
    }

    /// Loss and perplexity of `ids` and the logits of every position `[B, T, vocab]`, from one
    /// forward pass (the last position's logits predict nothing in `ids`).
    pub fn score_with_logits(
        &self,
        cfg: &DecoderConfig,
        ids: Tensor<2, Int>,
        pad: Option<u32>,
    ) -> Result<(Score, Tensor<3>)> {
        let [b, t] = ids.dims();
        two_or_more(t)?;
        let logits = self.forward(cfg, ids.clone())?;
        let v = cfg.vocab_size;
        let score = Score::of(next_token_loss(
            logits.clone().slice([0..b, 0..t - 1, 0..v]),
            ids,
            pad,
        )?)?;
        Ok((score, logits))
    }

    /// Load `model.safetensors` in Hugging Face OPT naming (what [`Self::save`] writes, or an
    /// `OPTForCausalLM` of this shape). Every tensor must be there with its shape; `lm_head` is
    /// absent exactly when the embeddings are tied.
    pub fn load(path: &Path, cfg: &DecoderConfig, device: &Device) -> Result<Self> {
        let bad = |reason: String| ModelError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let mut model = Self::zeros(cfg, device)?;
        let mut store = SafetensorsStore::from_file(path).allow_partial(true);
        let applied = model
            .load_from(&mut store)
            .map_err(|e| bad(format!("cannot be read: {e}")))?;
        let missing: BTreeSet<String> = applied.missing.iter().map(|(p, _)| p.clone()).collect();
        let unused: Vec<String> = applied.unused.clone();
        let errors: Vec<String> = applied.errors.iter().map(|e| e.to_string()).collect();
        if !missing.is_empty() || !unused.is_empty() || !errors.is_empty() {
            let what = if unused.iter().any(|u| u == "lm_head.weight") {
                " (an untied checkpoint: set tie_embeddings = false)"
            } else if missing.contains("lm_head.weight") {
                " (a tied checkpoint: set tie_embeddings = true)"
            } else {
                ""
            };
            return Err(bad(format!(
                "does not fit the configuration{what}: missing {missing:?}, unexpected \
                 {unused:?}, misshapen {errors:?}"
            )));
        }
        Ok(model)
    }

    /// A model folder as cm3 checkpoints and Hugging Face OPT releases hold it: `config.json`
    /// (an OPT config this decoder can run) and `model.safetensors`.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<(Self, DecoderConfig)> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Io {
            op: "reading",
            path: path.clone(),
            source: e,
        })?;
        let origin = path.display().to_string();
        let hf: HfOptConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            origin: origin.clone(),
            reason: format!("not an OPT config.json: {e}"),
        })?;
        let cfg = hf.to_decoder(&origin)?;
        let model = Self::load(&dir.join("model.safetensors"), &cfg, device)?;
        Ok((model, cfg))
    }

    /// Save as `model.safetensors` (Hugging Face OPT names), atomically and durably: synced
    /// before the rename, the directory after it.
    pub fn save(&self, path: &Path) -> Result<()> {
        // A name of this process's own: two writers never share a temporary file.
        let tmp = path.with_extension(format!("safetensors.tmp-{}", std::process::id()));
        let mut store = SafetensorsStore::from_file(&tmp).overwrite(true);
        let written = self
            .save_into(&mut store)
            .map_err(|e| ModelError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("writing: {e}"),
            });
        if let Err(e) = written.and_then(|()| crate::sync_file(&tmp)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(|e| ModelError::Io {
            op: "renaming",
            path: tmp.clone(),
            source: e,
        })?;
        cm3_core::fsio::sync_dir(path.parent().unwrap_or(Path::new("")))?;
        Ok(())
    }
}

/// Queries per block of [`causal_attention`].
const ATTENTION_BLOCK: usize = 128;

/// Causal self-attention of scaled `q` and `k`, `v` (`[B, heads, t, head_dim]`) under `mask`
/// (`causal_mask(t)`), a block of [`ATTENTION_BLOCK`] queries at a time: a block scores only the
/// keys up to its last query, so the scores above the diagonal that the mask would zero are never
/// computed, nor carried through the softmax and its gradient (at t = 512, 10/16 of the work;
/// at 4,096, 33/64).
fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &Tensor<4>) -> Tensor<4> {
    // `start`: the block's first query; on flex the mask is applied inside one fused softmax.
    let attend = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, m: Tensor<4>, start: usize| {
        let scores = batched_matmul(q, k.swap_dims(2, 3));
        let probs = crate::fused::causal_softmax(scores, start)
            .unwrap_or_else(|scores| softmax(scores + m, 3));
        batched_matmul(probs, v)
    };
    let [b, h, t, hd] = q.dims();
    // One block: no slices (each would cost a copy of its gradient), no concatenation.
    if t <= ATTENTION_BLOCK {
        return attend(q, k, v, mask.clone(), 0);
    }
    let blocks = (0..t)
        .step_by(ATTENTION_BLOCK)
        .map(|s| {
            let e = (s + ATTENTION_BLOCK).min(t);
            attend(
                q.clone().slice([0..b, 0..h, s..e, 0..hd]),
                k.clone().slice([0..b, 0..h, 0..e, 0..hd]),
                v.clone().slice([0..b, 0..h, 0..e, 0..hd]),
                mask.clone().slice([0..1, 0..1, s..e, 0..e]),
                s,
            )
        })
        .collect();
    Tensor::cat(blocks, 2)
}

/// `a · b` over the last two axes: fused on flex (operands read where they lie), Burn's matmul
/// elsewhere.
fn batched_matmul(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    match crate::fused::batched_matmul(a, b) {
        Ok(c) => c,
        Err((a, b)) => a.matmul(b),
    }
}

/// `x` `[..., in]` times the transpose of `w` `[out, in]` (a PyTorch weight, or the tied
/// embedding), as one 2-D product: fused on flex, Burn's matmul elsewhere.
fn project<const D: usize>(x: Tensor<D>, w: Tensor<2>) -> Tensor<D> {
    let (x, mut dims) = as_rows(x);
    dims[D - 1] = w.dims()[0];
    match crate::fused::linear(x, w) {
        Ok(y) => y.reshape(dims),
        Err((x, w)) => x.matmul(w.transpose()).reshape(dims),
    }
}

/// `x` `[..., k]` times `w` `[k, n]`, as `[..., n]`, Burn's matmul (the decode cache's copied
/// output head).
fn flat_matmul<const D: usize>(x: Tensor<D>, w: Tensor<2>) -> Tensor<D> {
    let (x, mut dims) = as_rows(x);
    dims[D - 1] = w.dims()[1];
    x.matmul(w).reshape(dims)
}

/// `x` as one matrix of its last axis's rows (one 2-D product instead of a batch of them), and
/// its dims.
fn as_rows<const D: usize>(x: Tensor<D>) -> (Tensor<2>, [usize; D]) {
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    (x.reshape([rows, dims[D - 1]]), dims)
}

/// `[1, 1, T, T]`: 0 where a position may attend, −inf above the diagonal. Every row keeps its
/// diagonal, so none is all −inf. (Hugging Face uses the most negative finite number; the
/// softmax is the same, but glibc's `expf` takes a slow path, setting `errno`, for each finite
/// underflow, half of all scores here, in the forward pass and again in the backward pass, which
/// recomputes `exp`; `exp(−inf)` is answered at once.)
fn causal_mask(t: usize, device: &Device) -> Tensor<4> {
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in i + 1..t {
            m[i * t + j] = f32::NEG_INFINITY;
        }
    }
    Tensor::from_data(TensorData::new(m, [1, 1, t, t]), device)
}

/// The Hugging Face `config.json` of an OPT model of this configuration (so `transformers`
/// loads a saved cm3 model as `OPTForCausalLM`), and back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfOptConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub ffn_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "yes")]
    pub do_layer_norm_before: bool,
    #[serde(default = "yes")]
    pub enable_bias: bool,
    #[serde(default = "yes")]
    pub layer_norm_elementwise_affine: bool,
    #[serde(default = "relu_name")]
    pub activation_function: String,
    /// Absent means tied (the default of `transformers`' `PretrainedConfig`).
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub word_embed_proj_dim: Option<usize>,
    #[serde(default)]
    pub _remove_final_layer_norm: bool,
}

fn yes() -> bool {
    true
}
fn relu_name() -> String {
    "relu".into()
}

impl HfOptConfig {
    /// The cm3 configuration of an OPT `config.json`, refusing what this decoder does not
    /// implement (biases, LayerNorm parameters, post-LayerNorm, another activation, a projected
    /// embedding). The initialisation fields keep their defaults.
    pub fn to_decoder(&self, origin: &str) -> Result<DecoderConfig> {
        let mut unsupported = Vec::new();
        if self.enable_bias {
            unsupported.push("enable_bias must be false");
        }
        if self.layer_norm_elementwise_affine {
            unsupported.push("layer_norm_elementwise_affine must be false");
        }
        if !self.do_layer_norm_before {
            unsupported.push("do_layer_norm_before must be true");
        }
        if self.activation_function != "relu" {
            unsupported.push("activation_function must be relu");
        }
        if self
            .word_embed_proj_dim
            .is_some_and(|w| w != self.hidden_size)
        {
            unsupported.push("word_embed_proj_dim must equal hidden_size");
        }
        if self._remove_final_layer_norm {
            unsupported.push("_remove_final_layer_norm must be false");
        }
        if !unsupported.is_empty() {
            return Err(ModelError::Config {
                origin: origin.to_string(),
                reason: format!(
                    "an OPT model this decoder cannot run: {}",
                    unsupported.join(", ")
                ),
            });
        }
        let c = DecoderConfig {
            vocab_size: self.vocab_size,
            d_model: self.hidden_size,
            n_layers: self.num_hidden_layers,
            n_heads: self.num_attention_heads,
            ffn_dim: self.ffn_dim,
            max_seq_len: self.max_position_embeddings,
            tie_embeddings: self.tie_word_embeddings,
            ..DecoderConfig::default()
        };
        c.validate(origin)?;
        Ok(c)
    }

    /// The `config.json` `transformers` needs to load a cm3 decoder as `OPTForCausalLM`.
    pub fn json(cfg: &DecoderConfig) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["OPTForCausalLM"],
            "model_type": "opt",
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "word_embed_proj_dim": cfg.d_model,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "ffn_dim": cfg.ffn_dim,
            "max_position_embeddings": cfg.max_seq_len,
            "do_layer_norm_before": true,
            "enable_bias": false,
            "layer_norm_elementwise_affine": false,
            "activation_function": "relu",
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
            "layerdrop": 0.0,
            "tie_word_embeddings": cfg.tie_embeddings,
            "torch_dtype": "float32",
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(p: &Param<Tensor<2>>) -> Vec<f32> {
        read_f32(p.val(), "test").unwrap_or_default()
    }

    /// Standard deviation and largest magnitude.
    fn std_max(x: &[f32]) -> (f64, f64) {
        let max = x.iter().map(|&v| f64::from(v).abs()).fold(0.0, f64::max);
        (init::moments(x).1, max)
    }

    /// The blocked causal attention gives the values and gradients of the plain masked softmax
    /// (the oracle fixture's sequences are shorter than a block, so this is where blocks meet).
    #[test]
    fn blocked_attention_matches_the_full_masked_softmax() -> Result<()> {
        let device = Device::flex().autodiff();
        let t = 2 * ATTENTION_BLOCK + 37;
        let shape = [2, 3, t, 8];
        // Seeded here (Burn's random source is global and shared by concurrent tests).
        let mut rng = SplitMix64::new(7);
        let mut draw = || {
            let values = init::normal(2 * 3 * t * 8, 1.0, &mut rng);
            Tensor::<4>::from_data(TensorData::new(values, shape), &device)
        };
        let (q, k, v, w) = (draw(), draw(), draw(), draw());
        let mask = causal_mask(t, &device);
        let run = |blocked: bool| -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
            let (q, k, v) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
            );
            let out = if blocked {
                causal_attention(q.clone(), k.clone(), v.clone(), &mask)
            } else {
                softmax(
                    q.clone().matmul(k.clone().swap_dims(2, 3)) + mask.clone(),
                    3,
                )
                .matmul(v.clone())
            };
            let grads = (out.clone() * w.clone()).sum().backward();
            let mut g = Vec::new();
            for x in [&q, &k, &v] {
                let grad = x.grad(&grads).ok_or(ModelError::Input {
                    op: "test",
                    reason: "no gradient".into(),
                })?;
                g.push(read_f32(grad, "gradient")?);
            }
            Ok((read_f32(out, "attention")?, g))
        };
        let (full, full_grads) = run(false)?;
        let (blocked, blocked_grads) = run(true)?;
        assert_eq!(full.len(), 2 * 3 * t * 8);
        // Blocks sum in another order than the full product, and the matrix kernels (AVX-512 or
        // AVX2, picked at run time) differ by machine: a tolerance relative to the largest value,
        // relative differences measured here are at most 1e-6. A wrong mask is off by order 1.
        let close = |a: &[f32], b: &[f32], what: &str| {
            let scale = a.iter().map(|x| x.abs()).fold(1.0, f32::max);
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                worst < 1e-5 * scale,
                "{what}: largest difference {worst} (largest value {scale})"
            );
        };
        close(&full, &blocked, "attention");
        for (name, (a, b)) in ["q", "k", "v"]
            .iter()
            .zip(full_grads.iter().zip(&blocked_grads))
        {
            close(a, b, name);
        }
        Ok(())
    }

    /// §2.3 on a real initialisation: truncated normal (std 0.006, ±3 std), zero output layers,
    /// positions ~ N(0, 0.0002).
    #[test]
    fn initialisation_follows_the_paper() -> Result<()> {
        let device = Device::flex();
        let cfg = DecoderConfig {
            vocab_size: 1000,
            d_model: 128,
            n_heads: 4,
            ffn_dim: 512,
            n_layers: 2,
            max_seq_len: 512,
            ..DecoderConfig::default()
        };
        let m = Cm3Decoder::init(&cfg, 1, &device)?;
        let d = &m.model.decoder;
        for (name, w) in [
            ("embed_tokens", values(&d.embed_tokens.weight)),
            ("q_proj", values(&d.layers[0].self_attn.q_proj.weight)),
            ("fc1", values(&d.layers[1].fc1.weight)),
        ] {
            let (std, max) = std_max(&w);
            assert!((std / 0.006 - 0.98658).abs() < 0.01, "{name}: std {std}");
            assert!(max <= 0.018 + 1e-7, "{name}: max {max}");
        }
        for layer in &d.layers {
            assert!(
                values(&layer.self_attn.out_proj.weight)
                    .iter()
                    .all(|&v| v == 0.0)
            );
            assert!(values(&layer.fc2.weight).iter().all(|&v| v == 0.0));
        }
        assert!(m.lm_head.is_none(), "tied by default");
        let (std, max) = std_max(&values(&d.embed_positions.weight));
        assert!((std / 0.0002 - 1.0).abs() < 0.02, "positions: std {std}");
        assert!(
            max > 3.0 * 0.0002,
            "positions are a plain normal, not truncated"
        );
        assert_eq!(
            d.embed_positions.weight.dims(),
            [cfg.max_seq_len + POSITION_OFFSET, cfg.d_model]
        );
        // The other reading: the vocabulary projection starts at zero, the blocks do not.
        let cfg = DecoderConfig {
            zero_init: ZeroInit::Vocab,
            tie_embeddings: false,
            ..cfg
        };
        let m = Cm3Decoder::init(&cfg, 1, &device)?;
        let head = m
            .lm_head
            .as_ref()
            .map(|h| values(&h.weight))
            .unwrap_or_default();
        assert_eq!(head.len(), 1000 * 128);
        assert!(head.iter().all(|&v| v == 0.0));
        let (std, _) = std_max(&values(&m.model.decoder.layers[0].fc2.weight));
        assert!(std > 0.005);
        // Seeded.
        let again = Cm3Decoder::init(&cfg, 1, &device)?;
        assert_eq!(
            values(&m.model.decoder.layers[1].fc1.weight),
            values(&again.model.decoder.layers[1].fc1.weight)
        );
        Ok(())
    }

    /// Causality: changing a later token leaves the logits of earlier positions unchanged.
    #[test]
    fn logits_do_not_see_the_future() -> Result<()> {
        let device = Device::flex();
        let cfg = DecoderConfig {
            vocab_size: 40,
            d_model: 32,
            n_heads: 4,
            ffn_dim: 64,
            n_layers: 2,
            max_seq_len: 16,
            zero_init: ZeroInit::None,
            ..DecoderConfig::default()
        };
        let m = Cm3Decoder::init(&cfg, 5, &device)?;
        let run = |ids: Vec<i64>| -> Result<Vec<f32>> {
            read_f32(
                m.forward(
                    &cfg,
                    Tensor::from_data(TensorData::new(ids, [1, 8]), &device),
                )?,
                "logits",
            )
        };
        let a = run(vec![1, 2, 3, 4, 5, 6, 7, 8])?;
        let b = run(vec![1, 2, 3, 4, 5, 9, 9, 9])?;
        assert_eq!(a[..5 * 40], b[..5 * 40]);
        assert_ne!(a[5 * 40..6 * 40], b[5 * 40..6 * 40]);
        Ok(())
    }
}
