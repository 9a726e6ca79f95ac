//! The decoding loop: every sample's conditional stream (and, with guidance, its unconditional
//! stream) as rows of one batched forward over one key/value cache.
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use cm3_core::rng::SplitMix64;
use cm3_model::decoder::{Cm3Decoder, DecoderConfig, KvCache};

use crate::error::{GenerateError, Result};
use crate::sampling::{
    Sampling, cd_k_scores, cfg_logits, cfg_logits_two, constrain, keep_plausible, sample,
};

/// How the conditional and unconditional streams are combined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Guidance {
    /// The conditional stream alone.
    None,
    /// Classifier-free guidance, eq. 2.
    Cfg { cfg_scale: f32 },
    /// Contrastive decoding CD-K, eq. 3.
    CdK { cd_alpha: f64, cd_k: usize },
    /// Editing: three streams (conditioned on instruction and image, on the image only, on
    /// neither); `uncond + image_scale·(image − uncond) + text_scale·(full − image)`.
    Edit { text_scale: f32, image_scale: f32 },
}

impl Guidance {
    /// The `Sampling::min_p` its samples are drawn with when guided samples take `guided`: CFG
    /// and edit guidance amplify the streams' differences, so their samples keep to the
    /// conditional stream's plausible tokens; CD-K has its own plausible set (eq. 3), and the
    /// conditional stream alone needs none. One rule for `cm3 generate` and `cm3 eval`.
    pub fn min_p(&self, guided: f64) -> f64 {
        match self {
            Guidance::Cfg { .. } | Guidance::Edit { .. } => guided,
            Guidance::None | Guidance::CdK { .. } => 0.0,
        }
    }

    /// Streams per sample.
    pub fn streams(&self) -> usize {
        match self {
            Guidance::None => 1,
            Guidance::Cfg { .. } | Guidance::CdK { .. } => 2,
            Guidance::Edit { .. } => 3,
        }
    }
}

/// What follows the prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Exactly `count` ids, each from `allowed` (an image: its codes' id range).
    Fixed {
        count: usize,
        allowed: std::ops::Range<usize>,
    },
    /// Image spans, each from `allowed`: `lengths[0]` ids, then `separators[0]` (forced, not
    /// returned), `lengths[1]` ids, … (CM3 infilling of several masked spans). The
    /// unconditional stream is forced `uncond_separators` instead (its sentinels are numbered
    /// after its masked caption's); the image-only stream takes `separators`.
    Spans {
        lengths: Vec<usize>,
        separators: Vec<u32>,
        uncond_separators: Vec<u32>,
        allowed: std::ops::Range<usize>,
    },
    /// Ids from `allowed` until one of `stop` (not included: a span that ends at `<eos>`
    /// returns the ids before it) or `max` ids.
    UntilStop {
        max: usize,
        allowed: Vec<std::ops::Range<usize>>,
        stop: Vec<u32>,
    },
}

impl Target {
    fn max(&self) -> usize {
        match self {
            Target::Fixed { count, .. } => *count,
            Target::Spans {
                lengths,
                separators,
                ..
            } => lengths.iter().sum::<usize>() + separators.len(),
            Target::UntilStop { max, .. } => *max,
        }
    }
}

/// One generation: `cond[i]` is sample i's prompt, `uncond[i]` its unconditional prompt (needed
/// unless `guidance` is `None`); each sample draws from its own seeded stream.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub cond: &'a [Vec<u32>],
    pub uncond: &'a [Vec<u32>],
    /// Editing only: each sample's prompt with the instruction masked and the image kept.
    pub image_only: &'a [Vec<u32>],
    pub target: Target,
    pub guidance: Guidance,
    pub sampling: Sampling,
    pub seeds: &'a [u64],
}

/// Generate each sample's ids (without the prompt).
pub fn generate(
    model: &Cm3Decoder,
    cfg: &DecoderConfig,
    req: &Request<'_>,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let n = req.cond.len();
    let streams = req.guidance.streams();
    check_counts(req, streams)?;
    // Rows: the conditional streams, then the unconditional ones, then (editing) image-only.
    let mut rows: Vec<&Vec<u32>> = req.cond.iter().collect();
    if streams >= 2 {
        rows.extend(req.uncond);
    }
    if streams == 3 {
        rows.extend(req.image_only);
    }
    let longest = rows.iter().map(|p| p.len()).max().unwrap_or(0);
    if rows.iter().any(|p| p.is_empty()) {
        return Err(GenerateError::Invalid("an empty prompt".into()));
    }
    let capacity = longest + req.target.max();
    if capacity > cfg.max_seq_len {
        return Err(GenerateError::Invalid(format!(
            "a prompt of {longest} tokens and {} to generate exceed the model's context of {} \
             tokens",
            req.target.max(),
            cfg.max_seq_len
        )));
    }
    if let Some(bad) = rows
        .iter()
        .flat_map(|p| p.iter())
        .find(|&&t| t as usize >= cfg.vocab_size)
    {
        return Err(GenerateError::Invalid(format!(
            "prompt id {bad} is outside the model's vocabulary of {}",
            cfg.vocab_size
        )));
    }
    let pads: Vec<usize> = rows.iter().map(|p| longest - p.len()).collect();
    let mut cache = KvCache::new(cfg, pads.clone(), capacity, device);
    let mut prompt = Vec::with_capacity(rows.len() * longest);
    for (p, &pad) in rows.iter().zip(&pads) {
        prompt.extend(std::iter::repeat_n(0i64, pad));
        prompt.extend(p.iter().map(|&t| i64::from(t)));
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(prompt, [rows.len(), longest]), device);
    let mut logits = last_logits(model.forward_cached(cfg, ids, &mut cache)?, cfg.vocab_size)?;
    let mut rngs: Vec<SplitMix64> = req.seeds.iter().map(|&s| SplitMix64::new(s)).collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut done = vec![false; n];
    let v = cfg.vocab_size;
    // Steps at which a separator is forced (Spans): the conditional and unconditional streams'.
    let forced: Vec<Option<(u32, u32)>> = match &req.target {
        Target::Spans {
            lengths,
            separators,
            uncond_separators,
            ..
        } => {
            let mut f = Vec::new();
            for (i, &len) in lengths.iter().enumerate() {
                f.extend(std::iter::repeat_n(None, len));
                if let Some(&s) = separators.get(i) {
                    f.push(Some((s, uncond_separators.get(i).copied().unwrap_or(s))));
                }
            }
            f
        }
        _ => Vec::new(),
    };
    for step in 0..req.target.max() {
        let mut next = Vec::with_capacity(rows.len());
        for i in 0..n {
            let cond = &logits[i * v..(i + 1) * v];
            let mut scores = match req.guidance {
                Guidance::None => cond.to_vec(),
                Guidance::Cfg { cfg_scale } => {
                    cfg_logits(cond, &logits[(n + i) * v..(n + i + 1) * v], cfg_scale)
                }
                Guidance::CdK { cd_alpha, cd_k } => {
                    cd_k_scores(cond, &logits[(n + i) * v..(n + i + 1) * v], cd_alpha, cd_k)
                }
                Guidance::Edit {
                    text_scale,
                    image_scale,
                } => cfg_logits_two(
                    cond,
                    &logits[(2 * n + i) * v..(2 * n + i + 1) * v],
                    &logits[(n + i) * v..(n + i + 1) * v],
                    image_scale,
                    text_scale,
                ),
            };
            let token = if done[i] {
                0
            } else if let Some(Some((sep, _))) = forced.get(step) {
                *sep
            } else {
                match &req.target {
                    Target::Fixed { allowed, .. } | Target::Spans { allowed, .. } => {
                        constrain(&mut scores, std::slice::from_ref(allowed));
                    }
                    Target::UntilStop { allowed, stop, .. } => {
                        let mut ranges = allowed.clone();
                        ranges.extend(stop.iter().map(|&s| s as usize..s as usize + 1));
                        constrain(&mut scores, &ranges);
                    }
                }
                keep_plausible(&mut scores, cond, req.sampling.min_p);
                let t = sample(&scores, &req.sampling, &mut rngs[i]).ok_or_else(|| {
                    GenerateError::Invalid(format!(
                        "sample {i}, step {step}: no allowed token has a finite score"
                    ))
                })? as u32;
                match &req.target {
                    Target::UntilStop { stop, .. } if stop.contains(&t) => done[i] = true,
                    _ => out[i].push(t),
                }
                t
            };
            next.push(i64::from(token));
        }
        if done.iter().all(|&d| d) || step + 1 == req.target.max() {
            break;
        }
        let uncond_sep = forced.get(step).copied().flatten().map(|(_, u)| u);
        let next = stream_ids(next, streams, uncond_sep);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(next, [rows.len(), 1]), device);
        logits = last_logits(model.forward_cached(cfg, ids, &mut cache)?, v)?;
    }
    Ok(out)
}

/// The ids fed to every row after one step, from each sample's chosen id (`chosen`, the
/// conditional rows): the same id in its other streams, except a forced separator, which the
/// unconditional stream (stream 1) takes as `uncond_sep`.
fn stream_ids(mut chosen: Vec<i64>, streams: usize, uncond_sep: Option<u32>) -> Vec<i64> {
    let n = chosen.len();
    for stream in 1..streams {
        match uncond_sep {
            Some(u) if stream == 1 => chosen.extend(std::iter::repeat_n(i64::from(u), n)),
            _ => chosen.extend_from_within(..n),
        }
    }
    chosen
}

/// The request has a prompt of each stream and a seed per sample, and separators per stream.
fn check_counts(req: &Request<'_>, streams: usize) -> Result<()> {
    let n = req.cond.len();
    if n == 0
        || req.seeds.len() != n
        || (streams >= 2 && req.uncond.len() != n)
        || (streams == 3 && req.image_only.len() != n)
    {
        return Err(GenerateError::Invalid(format!(
            "{n} prompts, {} unconditional prompts, {} image-only prompts and {} seeds",
            req.uncond.len(),
            req.image_only.len(),
            req.seeds.len()
        )));
    }
    if let Target::Spans {
        separators,
        uncond_separators,
        ..
    } = &req.target
        && streams >= 2
        && uncond_separators.len() != separators.len()
    {
        return Err(GenerateError::Invalid(format!(
            "{} separators for the conditional stream, {} for the unconditional one",
            separators.len(),
            uncond_separators.len()
        )));
    }
    Ok(())
}

/// The last position's logits of every row, `[rows × vocab]` on the host.
fn last_logits(logits: Tensor<3>, vocab: usize) -> Result<Vec<f32>> {
    let [b, t, _] = logits.dims();
    Ok(cm3_model::read_f32(
        logits
            .slice([0..b, t - 1..t, 0..vocab])
            .reshape([b * vocab]),
        "reading logits",
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cm3_model::decoder::ZeroInit;

    fn tiny() -> Result<(Cm3Decoder, DecoderConfig, Device)> {
        let device = Device::flex();
        let cfg = DecoderConfig {
            vocab_size: 60,
            d_model: 32,
            n_heads: 4,
            ffn_dim: 64,
            n_layers: 2,
            max_seq_len: 64,
            zero_init: ZeroInit::None,
            init_std: 0.2,
            ..DecoderConfig::default()
        };
        let model = Cm3Decoder::init(&cfg, 4, &device)?;
        Ok((model, cfg, device))
    }

    /// Two samples (seeds 1 and 2) of 12 ids from 20..60 by `tiny()`'s model, from their
    /// conditional, unconditional and image-only prompts.
    fn twelve_ids(
        tiny: &(Cm3Decoder, DecoderConfig, Device),
        [cond, uncond, image_only]: [&[Vec<u32>]; 3],
        guidance: Guidance,
        sampling: Sampling,
    ) -> Result<Vec<Vec<u32>>> {
        let (model, cfg, device) = tiny;
        generate(
            model,
            cfg,
            &Request {
                cond,
                uncond,
                image_only,
                target: Target::Fixed {
                    count: 12,
                    allowed: 20..60,
                },
                guidance,
                sampling,
                seeds: &[1, 2],
            },
            device,
        )
    }

    /// Greedy decoding.
    const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
    };

    /// A span stops at a stop id (the scored `<eos>`, say) and returns the ids before it: greedy
    /// decoding with one of its own ids turned into a stop gives its ids up to that one.
    #[test]
    fn a_span_ends_before_its_stop() -> Result<()> {
        let (model, cfg, device) = tiny()?;
        let cond = vec![vec![1, 9, 17, 2]];
        let run = |allowed: Vec<std::ops::Range<usize>>, stop: Vec<u32>| {
            generate(
                &model,
                &cfg,
                &Request {
                    cond: &cond,
                    uncond: &[],
                    image_only: &[],
                    target: Target::UntilStop {
                        max: 16,
                        allowed,
                        stop,
                    },
                    guidance: Guidance::None,
                    sampling: Sampling {
                        temperature: 0.0,
                        ..Sampling::default()
                    },
                    seeds: &[3],
                },
                &device,
            )
        };
        let free = run(std::iter::once(20..60).collect(), Vec::new())?.remove(0);
        assert_eq!(free.len(), 16);
        let end = free[free.len() / 2];
        let cut = free.iter().position(|&t| t == end).unwrap_or(free.len());
        let allowed = vec![20..end as usize, end as usize + 1..60];
        assert_eq!(run(allowed, vec![end])?.remove(0), free[..cut].to_vec());
        // Only the stop allowed: an empty span.
        assert_eq!(run(Vec::new(), vec![end])?.remove(0), Vec::<u32>::new());
        Ok(())
    }

    /// The plausibility constraint reads the conditional stream, not the guided scores: at
    /// `min_p` 1 only the conditional stream's most probable allowed id survives, so CFG at a
    /// large scale, sampled at temperature 1, gives exactly the conditional stream's greedy ids.
    #[test]
    fn plausibility_is_judged_by_the_conditional_stream() -> Result<()> {
        let tiny = tiny()?;
        let cond = vec![vec![1, 9, 17, 2], vec![1, 30, 2]];
        let uncond = vec![vec![1, 3, 2], vec![1, 3, 2]];
        let run = |guidance, sampling| twelve_ids(&tiny, [&cond, &uncond, &[]], guidance, sampling);
        let conditional = run(Guidance::None, GREEDY)?;
        let guided = Guidance::Cfg { cfg_scale: 8.0 };
        let only_the_best = Sampling {
            min_p: 1.0,
            ..Sampling::default()
        };
        assert_eq!(run(guided, only_the_best)?, conditional);
        // Without the constraint guidance at this scale chooses otherwise somewhere.
        assert_ne!(run(guided, GREEDY)?, conditional);
        Ok(())
    }

    /// The plausibility constraint goes with the guidance that amplifies the streams'
    /// differences: CFG and edit take the guided value; CD-K (its own plausible set) and the
    /// conditional stream alone take none.
    #[test]
    fn guided_samples_take_min_p_and_the_others_none() {
        let cd = Guidance::CdK {
            cd_alpha: 0.1,
            cd_k: 5,
        };
        let edit = Guidance::Edit {
            text_scale: 7.5,
            image_scale: 1.5,
        };
        assert_eq!(Guidance::Cfg { cfg_scale: 3.0 }.min_p(0.1), 0.1);
        assert_eq!(edit.min_p(0.2), 0.2);
        assert_eq!(cd.min_p(0.1), 0.0);
        assert_eq!(Guidance::None.min_p(0.1), 0.0);
    }

    /// The unconditional stream is fed its own separators; the others the conditional ones.
    #[test]
    fn forced_separators_are_per_stream() {
        assert_eq!(stream_ids(vec![7, 8], 1, None), vec![7, 8]);
        assert_eq!(stream_ids(vec![7, 8], 3, None), vec![7, 8, 7, 8, 7, 8]);
        assert_eq!(stream_ids(vec![6, 6], 3, Some(9)), vec![6, 6, 9, 9, 6, 6]);
    }

    /// With unit scales every guidance reduces to the conditional stream, so greedy decoding
    /// gives the same ids: the streams are wired to the right rows.
    #[test]
    fn unit_guidance_equals_the_conditional_stream() -> Result<()> {
        let tiny = tiny()?;
        let (model, cfg, device) = &tiny;
        let cond = vec![vec![1, 9, 17, 2], vec![1, 30, 2]];
        let uncond = vec![vec![1, 3, 2], vec![1, 3, 2]];
        let image_only = vec![vec![1, 3, 2, 40, 41], vec![1, 3, 2, 42]];
        let run = |guidance| twelve_ids(&tiny, [&cond, &uncond, &image_only], guidance, GREEDY);
        let plain = run(Guidance::None)?;
        assert!(
            plain
                .iter()
                .all(|s| s.len() == 12 && s.iter().all(|&t| (20..60).contains(&t)))
        );
        assert_eq!(run(Guidance::Cfg { cfg_scale: 1.0 })?, plain);
        assert_eq!(
            run(Guidance::Edit {
                text_scale: 1.0,
                image_scale: 1.0
            })?,
            plain
        );
        // A real scale changes the choice somewhere.
        assert_ne!(run(Guidance::Cfg { cfg_scale: 8.0 })?, plain);
        // A prompt and target longer than the context is refused.
        let long = vec![vec![1u32; 60]; 2];
        let err = generate(
            model,
            cfg,
            &Request {
                cond: &long,
                uncond: &uncond,
                image_only: &[],
                target: Target::Fixed {
                    count: 12,
                    allowed: 20..60,
                },
                guidance: Guidance::None,
                sampling: Sampling::default(),
                seeds: &[1, 2],
            },
            device,
        );
        assert!(err.is_err_and(|e| e.to_string().contains("context")));
        // Spans: CFG at scale 1 follows the conditional stream whatever the unconditional
        // stream's separators; separators of unequal counts are refused.
        let spans = |uncond_separators: Vec<u32>, guidance: Guidance| {
            generate(
                model,
                cfg,
                &Request {
                    cond: &cond,
                    uncond: &uncond,
                    image_only: &[],
                    target: Target::Spans {
                        lengths: vec![3, 2],
                        separators: vec![6],
                        uncond_separators,
                        allowed: 20..60,
                    },
                    guidance,
                    sampling: Sampling {
                        temperature: 0.0,
                        ..Sampling::default()
                    },
                    seeds: &[1, 2],
                },
                device,
            )
        };
        let plain = spans(vec![7], Guidance::None)?;
        assert!(plain.iter().all(|s| s.len() == 5));
        assert_eq!(spans(vec![7], Guidance::Cfg { cfg_scale: 1.0 })?, plain);
        assert!(spans(Vec::new(), Guidance::Cfg { cfg_scale: 3.0 }).is_err());
        Ok(())
    }
}
