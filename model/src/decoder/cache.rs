//! Incremental decoding: the keys and values of every layer, allocated once per generation for
//! its rows and its longest length, filled as tokens arrive. Rows of different prompt lengths are
//! left-padded to a common length; padding is masked out of attention and positions count from
//! each row's first real token, so a padded row gives the logits of the same row unpadded.
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::POSITION_OFFSET;
use super::{Cm3Decoder, DecoderConfig};
use crate::error::{ModelError, Result};

/// Keys and values `[rows, heads, capacity, head_dim]` per layer.
#[derive(Debug)]
pub struct KvCache {
    keys: Vec<Tensor<4>>,
    values: Vec<Tensor<4>>,
    /// Left padding of each row (slots before it hold no token).
    pad: Vec<usize>,
    len: usize,
    capacity: usize,
    device: Device,
    /// The tied vocabulary projection Eᵀ `[d_model, vocab]` as a contiguous copy, made at the
    /// first step when the cache has more than one row: a product of a few rows with the
    /// transposed view of E ran 2.7x slower than with this copy (1,355 against 509 µs for 8 rows
    /// of 256 against 8,192 entries, flex, 2 threads), where one row runs faster with the view
    /// (123 against 228 µs). It still pays with the fused product, which reads the view without
    /// a copy: the bench's t2i at batch 8 ran 5.88 to 5.95 images/s without this copy, 6.27 to
    /// 6.38 with it (`t2i_vs_hf`, three alternating runs each, 2026-12-06).
    tied_head: Option<Tensor<2>>,
}

impl KvCache {
    /// An empty cache for `pad.len()` rows, each starting with `pad[r]` padding slots, up to
    /// `capacity` slots (padding included).
    pub fn new(cfg: &DecoderConfig, pad: Vec<usize>, capacity: usize, device: &Device) -> Self {
        let shape = [pad.len(), cfg.n_heads, capacity, cfg.head_dim()];
        let zeros = || {
            (0..cfg.n_layers)
                .map(|_| Tensor::zeros(shape, device))
                .collect::<Vec<_>>()
        };
        Self {
            keys: zeros(),
            values: zeros(),
            pad,
            len: 0,
            capacity,
            device: device.clone(),
            tied_head: None,
        }
    }

    pub fn rows(&self) -> usize {
        self.pad.len()
    }

    /// Slots filled so far (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Real tokens of row `r` so far (its next token's position).
    pub fn tokens(&self, r: usize) -> usize {
        self.len.saturating_sub(self.pad[r])
    }
}

impl Cm3Decoder {
    /// Logits `[rows, t, vocab]` of `t` new tokens per row (`ids` `[rows, t]`; slots that are
    /// still padding may hold any id), attending to everything cached before them; the new keys
    /// and values are written into `cache`.
    pub fn forward_cached(
        &self,
        cfg: &DecoderConfig,
        ids: Tensor<2, Int>,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let [b, t] = ids.dims();
        let (start, end) = (cache.len, cache.len + t);
        if b != cache.rows() || t == 0 || end > cache.capacity {
            return Err(ModelError::Input {
                op: "cached decoding",
                reason: format!(
                    "{b} rows of {t} tokens after {start} cached slots; the cache holds {} rows \
                     of up to {} slots",
                    cache.rows(),
                    cache.capacity
                ),
            });
        }
        let longest = (0..b)
            .map(|r| end.saturating_sub(cache.pad[r]))
            .max()
            .unwrap_or(0);
        if longest > cfg.max_seq_len {
            return Err(ModelError::Input {
                op: "cached decoding",
                reason: format!(
                    "a sequence of {longest} tokens; the model takes at most {}",
                    cfg.max_seq_len
                ),
            });
        }
        let (d, h, hd) = (cfg.d_model, cfg.n_heads, cfg.head_dim());
        let device = &cache.device;
        let dec = &self.model.decoder;
        // Positions from each row's first real token (padding slots take position 0).
        let mut positions = Vec::with_capacity(b * t);
        for r in 0..b {
            for slot in start..end {
                positions.push((slot.saturating_sub(cache.pad[r]) + POSITION_OFFSET) as i64);
            }
        }
        let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [b * t]), device);
        let tokens = dec
            .embed_tokens
            .weight
            .val()
            .select(0, ids.reshape([b * t]));
        let pos = dec.embed_positions.weight.val().select(0, positions);
        let mut x = (tokens + pos).reshape([b, t, d]);
        // Attention bias [b, 1, t, end]: new token i (slot start + i) sees slots ≤ start + i
        // that are not padding.
        let mut bias = vec![0f32; b * t * end];
        for r in 0..b {
            for i in 0..t {
                let row = &mut bias[(r * t + i) * end..(r * t + i + 1) * end];
                for (slot, v) in row.iter_mut().enumerate() {
                    if slot > start + i || slot < cache.pad[r] {
                        *v = f32::MIN;
                    }
                }
            }
        }
        let bias = Tensor::<4>::from_data(TensorData::new(bias, [b, 1, t, end]), device);
        // The cache's tensors are taken out and put back so that each is uniquely owned when
        // written: Burn then writes the new slots in place instead of copying the cache.
        let old_keys = std::mem::take(&mut cache.keys);
        let old_values = std::mem::take(&mut cache.values);
        for ((layer, keys), values) in dec.layers.iter().zip(old_keys).zip(old_values) {
            let (new_keys, new_values) = (&mut cache.keys, &mut cache.values);
            x = self.block(layer, cfg, x, |q, k, v| {
                let keys = keys.slice_assign([0..b, 0..h, start..end, 0..hd], k);
                let values = values.slice_assign([0..b, 0..h, start..end, 0..hd], v);
                new_keys.push(keys.clone());
                new_values.push(values.clone());
                let k = keys.slice([0..b, 0..h, 0..end, 0..hd]);
                let v = values.slice([0..b, 0..h, 0..end, 0..hd]);
                softmax(q.matmul(k.swap_dims(2, 3)) + bias.clone(), 3).matmul(v)
            });
        }
        cache.len = end;
        // One row: the view is faster per step, and a copy would serve only the prompt.
        if self.lm_head.is_some() || b == 1 {
            return Ok(self.logits(cfg, x));
        }
        let head = match &cache.tied_head {
            Some(head) => head.clone(),
            None => {
                let e = self.model.decoder.embed_tokens.weight.val().transpose();
                let head =
                    Tensor::from_data(crate::read::data(e, "copying the output head")?, device);
                cache.tied_head = Some(head.clone());
                head
            }
        };
        Ok(super::flat_matmul(
            super::layer_norm(x, cfg.layer_norm_eps),
            head,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::ZeroInit;
    use crate::read::read_f32;

    fn model() -> Result<(Cm3Decoder, DecoderConfig)> {
        let cfg = DecoderConfig {
            vocab_size: 50,
            d_model: 32,
            n_heads: 4,
            ffn_dim: 64,
            n_layers: 2,
            max_seq_len: 32,
            zero_init: ZeroInit::None,
            init_std: 0.1,
            position_init_std: 0.1,
            ..DecoderConfig::default()
        };
        Ok((Cm3Decoder::init(&cfg, 9, &Device::flex())?, cfg))
    }

    fn ids(v: &[i64], rows: usize) -> Tensor<2, Int> {
        Tensor::from_data(
            TensorData::new(v.to_vec(), [rows, v.len() / rows]),
            &Device::flex(),
        )
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// A prompt, then one token at a time: the logits of every position equal a full recompute.
    #[test]
    fn cached_logits_equal_a_full_recompute() -> Result<()> {
        let (m, cfg) = model()?;
        let seq: Vec<i64> = vec![1, 7, 3, 44, 12, 9, 30, 2, 18, 5];
        let full = read_f32(m.forward(&cfg, ids(&seq, 1))?, "full")?;
        let mut cache = KvCache::new(&cfg, vec![0], 16, &Device::flex());
        let mut got = read_f32(m.forward_cached(&cfg, ids(&seq[..4], 1), &mut cache)?, "p")?;
        for &tok in &seq[4..] {
            got.extend(read_f32(
                m.forward_cached(&cfg, ids(&[tok], 1), &mut cache)?,
                "s",
            )?);
        }
        assert_eq!(cache.len(), seq.len());
        let diff = max_diff(&full, &got);
        assert!(diff < 1e-4, "max |Δlogits| {diff}");
        Ok(())
    }

    /// Two rows of different lengths, the shorter left-padded: each row's logits equal its own
    /// recompute, unpadded.
    #[test]
    fn left_padded_rows_match_their_unpadded_recompute() -> Result<()> {
        let (m, cfg) = model()?;
        let long: Vec<i64> = vec![1, 7, 3, 44, 12, 9];
        let short: Vec<i64> = vec![1, 3, 2];
        let mut cache = KvCache::new(&cfg, vec![0, 3], 12, &Device::flex());
        let prompt: Vec<i64> = long
            .iter()
            .copied()
            .chain([0, 0, 0])
            .chain(short.clone())
            .collect();
        let p = read_f32(
            m.forward_cached(&cfg, ids(&prompt, 2), &mut cache)?,
            "prompt",
        )?;
        let step = read_f32(
            m.forward_cached(&cfg, ids(&[20, 21], 2), &mut cache)?,
            "step",
        )?;
        let v = cfg.vocab_size;
        let long_full = read_f32(
            m.forward(&cfg, ids(&[long.clone(), vec![20]].concat(), 1))?,
            "long",
        )?;
        let short_full = read_f32(
            m.forward(&cfg, ids(&[short.clone(), vec![21]].concat(), 1))?,
            "short",
        )?;
        // Row 0: all six prompt positions, then the step.
        assert!(max_diff(&p[..6 * v], &long_full[..6 * v]) < 1e-4);
        assert!(max_diff(&step[..v], &long_full[6 * v..]) < 1e-4);
        // Row 1: its three real prompt positions (after three padding slots), then the step.
        assert!(max_diff(&p[(6 + 3) * v..12 * v], &short_full[..3 * v]) < 1e-4);
        assert!(max_diff(&step[v..], &short_full[3 * v..]) < 1e-4);
        assert_eq!((cache.tokens(0), cache.tokens(1)), (7, 4));
        Ok(())
    }

    #[test]
    fn a_full_cache_is_an_error_not_a_panic() -> Result<()> {
        let (m, cfg) = model()?;
        let mut cache = KvCache::new(&cfg, vec![0], 3, &Device::flex());
        m.forward_cached(&cfg, ids(&[1, 2, 3], 1), &mut cache)?;
        assert!(m.forward_cached(&cfg, ids(&[4], 1), &mut cache).is_err());
        Ok(())
    }
}
