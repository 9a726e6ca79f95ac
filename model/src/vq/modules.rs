//! taming-transformers' VQGAN building blocks (`taming/modules/diffusionmodules/model.py`), with
//! the same field names so that checkpoint keys map one to one (`encoder.down.0.block.1.norm1`).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, Initializer, PaddingConfig2d,
};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, PadMode};
use burn::tensor::{Device, Tensor};

use super::config::{Norm, TAMING_NORM_GROUPS, VqConfig};

/// taming's `Normalize` (eps 1e-6, affine) for `channels` channels: a GroupNorm module, whose
/// `gamma`/`beta` are the checkpoint's `weight`/`bias`. Under [`Norm::Layer`] it has one group
/// and only its scale and shift are used ([`norm`]).
fn normalize(kind: Norm, channels: usize, device: &Device) -> GroupNorm {
    let groups = match kind {
        Norm::Group => TAMING_NORM_GROUPS,
        Norm::Layer => 1,
    };
    GroupNormConfig::new(groups, channels)
        .with_epsilon(1e-6)
        .init(device)
}

/// Apply a normalisation made by [`normalize`].
fn norm(n: &GroupNorm, kind: Norm, x: Tensor<4>) -> Tensor<4> {
    norm_then(n, kind, x, false)
}

/// [`norm`] followed by SiLU, as every ResnetBlock and the trunks' ends apply them.
fn norm_silu(n: &GroupNorm, kind: Norm, x: Tensor<4>) -> Tensor<4> {
    norm_then(n, kind, x, true)
}

/// The affine parameters of `n`, when it has them and they are readable.
fn affine(n: &GroupNorm) -> Option<(Vec<f32>, Vec<f32>)> {
    let read = |p: &burn::module::Param<Tensor<1>>| crate::read::read_f32(p.val(), "norm").ok();
    Some((read(n.gamma.as_ref()?)?, read(n.beta.as_ref()?)?))
}

/// GroupNorm (one fused pass on flex when not training, Burn's module otherwise), then SiLU when
/// `then_silu`; the per-position LayerNorm of [`Norm::Layer`].
fn norm_then(n: &GroupNorm, kind: Norm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    let y = match kind {
        Norm::Group => {
            // Only a plain flex tensor takes the fused pass (reading γ and β from a GPU would
            // cost a transfer per call).
            let on_flex = matches!(
                x.device().as_dispatch(),
                burn::backend::DispatchDevice::Flex(_)
            );
            let fused = match if on_flex { affine(n) } else { None } {
                Some((g, b)) => {
                    crate::fused::group_norm(x, &g, &b, n.num_groups, n.epsilon, then_silu)
                }
                None => Err(x),
            };
            match fused {
                Ok(y) => return y,
                Err(x) => n.forward(x),
            }
        }
        Norm::Layer => {
            let [_, c, _, _] = x.dims();
            let mean = x.clone().mean_dim(1);
            let centred = x - mean;
            let var = centred.clone().powf_scalar(2.0).mean_dim(1);
            let y = centred / var.add_scalar(n.epsilon).sqrt();
            match (&n.gamma, &n.beta) {
                (Some(g), Some(b)) => {
                    y * g.val().reshape([1, c, 1, 1]) + b.val().reshape([1, c, 1, 1])
                }
                _ => y,
            }
        }
    };
    if then_silu { silu(y) } else { y }
}

/// How a fresh model's weights are drawn (a loaded checkpoint replaces them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// PyTorch's defaults, as taming's modules start: Kaiming-uniform with a = √5, so a
    /// convolution's weights have variance 1/(3·fan_in) and each plain convolution divides the
    /// signal's variance by about 3. Between the pixels in and the pixels out the VQGAN has a
    /// dozen plain convolutions (`conv_in`, the down- and upsamplers, `conv_out`, `quant_conv`,
    /// `post_quant_conv`), so at the start the output hardly depends on the input. taming trains
    /// for 100k+ steps on GPUs; a CPU tokenizer trained for a few hundred steps spends them
    /// opening that path.
    Torch,
    /// For training from scratch in few steps: variance-preserving weights (1/fan_in, uniform),
    /// zero biases, and the last convolution of every residual branch (`conv2` of a ResnetBlock,
    /// `proj_out` of an AttnBlock) zero, so that every block starts as the identity and the
    /// trunk carries the image from the first step.
    Train,
}

pub(crate) fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    init: Init,
    device: &Device,
) -> Conv2d {
    let c = Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad));
    match init {
        Init::Torch => c.init(device),
        Init::Train => {
            let mut m = c
                .with_initializer(Initializer::KaimingUniform {
                    gain: 1.0,
                    fan_out_only: false,
                })
                .init(device);
            m.bias = m.bias.map(|b| b.map(|t| t.zeros_like()));
            m
        }
    }
}

/// `c.forward(x)`; a 3 × 3 convolution on a flex input (not training) as
/// [`crate::fused::conv3x3`]'s band products.
fn run_conv(c: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    run_conv_padded(c, x, [0; 4])
}

/// [`run_conv`] of `x` zero-padded first by `extra` (top, left, bottom, right) beyond the
/// convolution's own padding.
fn run_conv_padded(c: &Conv2d, x: Tensor<4>, extra: [usize; 4]) -> Tensor<4> {
    let own = match c.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, left, bottom, right]),
        _ => None,
    };
    let fits = c.kernel_size == [3, 3]
        && (c.stride == [1, 1] || c.stride == [2, 2])
        && c.dilation == [1, 1]
        && c.groups == 1;
    let burn = |x: Tensor<4>| {
        let [top, left, bottom, right] = extra;
        if extra == [0; 4] {
            c.forward(x)
        } else {
            c.forward(x.pad((left, right, top, bottom), PadMode::Constant(0.0)))
        }
    };
    match own {
        Some(own) if fits => {
            let pad = [0, 1, 2, 3].map(|i| own[i] + extra[i]);
            let bias = c.bias.as_ref().map(|b| b.val());
            crate::fused::conv3x3(x, &c.weight.val(), bias.as_ref(), c.stride[0], pad)
                .unwrap_or_else(burn)
        }
        _ => burn(x),
    }
}

/// The last convolution of a residual branch: zero under [`Init::Train`].
fn branch_out(
    cin: usize,
    cout: usize,
    k: usize,
    pad: usize,
    init: Init,
    device: &Device,
) -> Conv2d {
    let mut m = conv(cin, cout, k, 1, pad, init, device);
    if init == Init::Train {
        m.weight = m.weight.map(|t| t.zeros_like());
    }
    m
}

#[derive(Module, Debug)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    /// 1 × 1 projection of the input when the channel count changes.
    nin_shortcut: Option<Conv2d>,
    #[module(skip)]
    stats: Norm,
}

impl ResnetBlock {
    fn new(cin: usize, cout: usize, stats: Norm, init: Init, device: &Device) -> Self {
        Self {
            norm1: normalize(stats, cin, device),
            conv1: conv(cin, cout, 3, 1, 1, init, device),
            norm2: normalize(stats, cout, device),
            conv2: branch_out(cout, cout, 3, 1, init, device),
            nin_shortcut: (cin != cout).then(|| conv(cin, cout, 1, 1, 0, init, device)),
            stats,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = run_conv(&self.conv1, norm_silu(&self.norm1, self.stats, x.clone()));
        // Dropout is 0 in every released VQGAN, so there is none.
        let h = run_conv(&self.conv2, norm_silu(&self.norm2, self.stats, h));
        let x = match &self.nin_shortcut {
            Some(c) => c.forward(x),
            None => x,
        };
        x + h
    }
}

/// Single-head self-attention over the feature map's positions (1 × 1 convolutions q, k, v).
#[derive(Module, Debug)]
pub struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
    #[module(skip)]
    stats: Norm,
}

impl AttnBlock {
    fn new(c: usize, stats: Norm, init: Init, device: &Device) -> Self {
        Self {
            norm: normalize(stats, c, device),
            q: conv(c, c, 1, 1, 0, init, device),
            k: conv(c, c, 1, 1, 0, init, device),
            v: conv(c, c, 1, 1, 0, init, device),
            proj_out: branch_out(c, c, 1, 0, init, device),
            stats,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = norm(&self.norm, self.stats, x.clone());
        let q = self
            .q
            .forward(n.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let k = self.k.forward(n.clone()).reshape([b, c, h * w]);
        let v = self.v.forward(n).reshape([b, c, h * w]);
        // [b, query i, key j], softmax over the keys, scaled by c^-1/2 (taming model.py).
        let weights = softmax(q.matmul(k).mul_scalar((c as f64).powf(-0.5)), 2);
        let out = v.matmul(weights.swap_dims(1, 2)).reshape([b, c, h, w]);
        x + self.proj_out.forward(out)
    }
}

/// Halve the size: pad right and bottom by one zero, then a 3 × 3 convolution of stride 2.
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // Bottom and right (Burn's pad takes left, right, top, bottom).
        run_conv_padded(&self.conv, x, [0, 0, 1, 1])
    }
}

/// Double the size: nearest-neighbour ×2, then a 3 × 3 convolution.
#[derive(Module, Debug)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let up = interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([2.0, 2.0]),
        );
        run_conv(&self.conv, up)
    }
}

#[derive(Module, Debug)]
pub struct DownLevel {
    block: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
    downsample: Option<Downsample>,
}

#[derive(Module, Debug)]
pub struct UpLevel {
    block: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
    upsample: Option<Upsample>,
}

#[derive(Module, Debug)]
pub struct Mid {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl Mid {
    fn new(c: usize, stats: Norm, init: Init, device: &Device) -> Self {
        Self {
            block_1: ResnetBlock::new(c, c, stats, init, device),
            attn_1: AttnBlock::new(c, stats, init, device),
            block_2: ResnetBlock::new(c, c, stats, init, device),
        }
    }

    fn forward(&self, h: Tensor<4>) -> Tensor<4> {
        self.block_2
            .forward(self.attn_1.forward(self.block_1.forward(h)))
    }
}

fn run_level(block: &[ResnetBlock], attn: &[AttnBlock], mut h: Tensor<4>) -> Tensor<4> {
    for (i, b) in block.iter().enumerate() {
        h = b.forward(h);
        if let Some(a) = attn.get(i) {
            h = a.forward(h);
        }
    }
    h
}

#[derive(Module, Debug)]
pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<DownLevel>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    #[module(skip)]
    stats: Norm,
}

impl Encoder {
    pub fn new(cfg: &VqConfig, init: Init, device: &Device) -> Self {
        let levels = cfg.ch_mult.len();
        let g = cfg.norm;
        let mut curr_res = cfg.resolution;
        let mut block_in = cfg.ch;
        let mut down = Vec::with_capacity(levels);
        for (i, &mult) in cfg.ch_mult.iter().enumerate() {
            let block_out = cfg.ch * mult;
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for _ in 0..cfg.num_res_blocks {
                block.push(ResnetBlock::new(block_in, block_out, g, init, device));
                block_in = block_out;
                if cfg.attn_resolutions.contains(&curr_res) {
                    attn.push(AttnBlock::new(block_in, g, init, device));
                }
            }
            let downsample = (i + 1 != levels).then(|| Downsample {
                conv: conv(block_in, block_in, 3, 2, 0, init, device),
            });
            if downsample.is_some() {
                curr_res /= 2;
            }
            down.push(DownLevel {
                block,
                attn,
                downsample,
            });
        }
        Self {
            conv_in: conv(cfg.in_channels, cfg.ch, 3, 1, 1, init, device),
            down,
            mid: Mid::new(block_in, g, init, device),
            norm_out: normalize(g, block_in, device),
            conv_out: conv(block_in, cfg.z_channels, 3, 1, 1, init, device),
            stats: g,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = run_conv(&self.conv_in, x);
        for level in &self.down {
            h = run_level(&level.block, &level.attn, h);
            if let Some(d) = &level.downsample {
                h = d.forward(h);
            }
        }
        let h = self.mid.forward(h);
        run_conv(&self.conv_out, norm_silu(&self.norm_out, self.stats, h))
    }
}

#[derive(Module, Debug)]
pub struct Decoder {
    conv_in: Conv2d,
    mid: Mid,
    /// `up[i]` is resolution level `i` (0 = full size), run from the last level to the first.
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    #[module(skip)]
    stats: Norm,
}

impl Decoder {
    pub fn new(cfg: &VqConfig, init: Init, device: &Device) -> Self {
        let levels = cfg.ch_mult.len();
        let g = cfg.norm;
        let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
        let mut curr_res = cfg.resolution / cfg.factor();
        let conv_in = conv(cfg.z_channels, block_in, 3, 1, 1, init, device);
        let mid = Mid::new(block_in, g, init, device);
        let mut up: Vec<UpLevel> = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for _ in 0..=cfg.num_res_blocks {
                block.push(ResnetBlock::new(block_in, block_out, g, init, device));
                block_in = block_out;
                if cfg.attn_resolutions.contains(&curr_res) {
                    attn.push(AttnBlock::new(block_in, g, init, device));
                }
            }
            let upsample = (i != 0).then(|| Upsample {
                conv: conv(block_in, block_in, 3, 1, 1, init, device),
            });
            if upsample.is_some() {
                curr_res *= 2;
            }
            up.insert(
                0,
                UpLevel {
                    block,
                    attn,
                    upsample,
                },
            );
        }
        Self {
            conv_in,
            mid,
            up,
            norm_out: normalize(g, block_in, device),
            conv_out: conv(block_in, cfg.out_ch, 3, 1, 1, init, device),
            stats: g,
        }
    }

    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut h = self.mid.forward(run_conv(&self.conv_in, z));
        for level in self.up.iter().rev() {
            h = run_level(&level.block, &level.attn, h);
            if let Some(u) = &level.upsample {
                h = u.forward(h);
            }
        }
        run_conv(&self.conv_out, norm_silu(&self.norm_out, self.stats, h))
    }
}

/// taming's `GumbelQuantize` at inference: `proj` gives one logit per code, `embed` the codebook.
#[derive(Module, Debug)]
pub struct GumbelQuantize {
    proj: Conv2d,
    embed: Embedding,
}

impl GumbelQuantize {
    pub fn new(cfg: &VqConfig, device: &Device) -> Self {
        Self {
            proj: conv(cfg.z_channels, cfg.n_embed, 1, 1, 0, Init::Torch, device),
            embed: EmbeddingConfig::new(cfg.n_embed, cfg.embed_dim).init(device),
        }
    }

    /// Logits over the codes, [B, n_embed, h, w].
    pub fn logits(&self, prequant: Tensor<4>) -> Tensor<4> {
        self.proj.forward(prequant)
    }

    /// The codebook, [n_embed, embed_dim].
    pub fn codebook(&self) -> Tensor<2> {
        self.embed.weight.val()
    }
}
