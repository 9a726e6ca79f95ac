//! Zero-shot text → image on COCO captions (Table 1's protocol): for each prompt, `samples`
//! images, a share of them decoded with CD-K and the rest with CFG and top-p (the two are
//! complementary before re-ranking, Figure 4), `retrieve` documents from the run's memory bank in
//! front of the prompt, the best sample by CLIP similarity to the prompt; then FID of the chosen
//! samples against the reference images and the CLIP score of each chosen sample with its prompt.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cm3_generate::{
    ClipScorer, GUIDED_MIN_P, Generator, Guidance, ImageInput, Retriever, Sampling, Settings,
};
use cm3_tokenize::image::save_png;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leakage::LeakageReport;
use super::{
    CocoCaptionFile, Progress, image_tokenizer, images_in, io_err, open_run, pin_settings,
    write_json,
};
use crate::clip_score::ClipScoring;
use crate::error::{EvalError, Result};

/// Samples scored by CLIP at a time.
const CLIP_CHUNK: usize = 256;
/// Images a batch through Inception (pytorch-fid's default batch size).
const FID_BATCH: usize = 50;

/// The protocol's settings (defaults: the paper's Table 1 protocol, 8 samples a prompt re-ranked
/// by CLIP, half CD-K; two retrieved documents; 30K prompts), except that the CFG samples keep
/// to the conditional stream's plausible tokens (`min_p` 0.1; 0 is the paper's eq. 2 alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct T2iConfig {
    /// Prompts evaluated: the first caption (lowest annotation id) of each of the first `count`
    /// images of the captions file, by image id.
    pub count: usize,
    pub samples: usize,
    /// Share of each prompt's samples decoded with CD-K; the rest with CFG and top-p.
    pub cd_share: f64,
    pub cfg_scale: f32,
    pub top_p: f64,
    /// The plausibility constraint on the CFG samples (`cm3 generate --min-p`): only tokens at
    /// least this fraction as probable as the conditional stream's most probable (0: eq. 2 alone).
    /// Not written when 0, so that an evaluation begun before this setting existed resumes with
    /// `min_p = 0`.
    #[serde(skip_serializing_if = "is_zero")]
    pub min_p: f64,
    pub temperature: f64,
    pub cd_alpha: f64,
    pub cd_k: usize,
    /// Keep the sample most similar to the prompt by CLIP (else the first sample).
    pub rerank: bool,
    /// Documents retrieved from the run's memory bank for each prompt (0: none).
    pub retrieve: usize,
    pub seed: u64,
    /// Chosen samples shown in grid.png.
    pub grid: usize,
}

impl Default for T2iConfig {
    fn default() -> Self {
        Self {
            count: 30_000,
            samples: 8,
            cd_share: 0.5,
            cfg_scale: 3.0,
            top_p: 0.9,
            min_p: GUIDED_MIN_P,
            temperature: 1.0,
            cd_alpha: 0.1,
            cd_k: 5,
            rerank: true,
            retrieve: 2,
            seed: 0,
            grid: 16,
        }
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl T2iConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |r: &str| Err(EvalError::input("t2i settings", r));
        if self.count == 0 || self.samples == 0 {
            return bad("count and samples must be at least 1");
        }
        if self.samples > 512 || self.retrieve > 16 {
            return bad("at most 512 samples a prompt and 16 retrieved documents");
        }
        if !(0.0..=1.0).contains(&self.cd_share) {
            return bad("cd_share must be in [0, 1]");
        }
        if !(self.cd_alpha > 0.0 && self.cd_alpha <= 1.0) {
            return bad("cd_alpha must be in (0, 1]");
        }
        // top_p, min_p and temperature: the rule `cm3 generate` checks its flags with.
        self.sampling(self.min_p).check().or_else(|e| bad(&e))
    }

    /// How each sample is drawn, with `min_p` (the CFG samples' `self.min_p`, see
    /// `Guidance::min_p`).
    fn sampling(&self, min_p: f64) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_k: 0,
            top_p: self.top_p,
            min_p,
        }
    }
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct T2iOptions {
    pub run: PathBuf,
    /// COCO captions annotation file of the evaluation images.
    pub prompts: PathBuf,
    /// The evaluation images themselves (FID's reference set, and the leakage check).
    pub reference_images: PathBuf,
    /// pytorch-fid's Inception exported to ONNX (`scripts/export-inception-onnx.py`); without
    /// it the report says FID was not computed.
    pub inception: Option<PathBuf>,
    pub out: PathBuf,
    pub config: T2iConfig,
    /// Accept evaluation images that are pairs of the run's dataset (recorded).
    pub allow_overlap: bool,
    pub threads: usize,
}

/// One finished prompt, as logged in `samples.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct T2iRecord {
    pub index: usize,
    pub image_id: String,
    pub prompt: String,
    /// The chosen sample's file (under the output folder).
    pub file: String,
    pub chosen: usize,
    /// Cosine similarity to the prompt of every sample (empty without re-ranking).
    pub similarities: Vec<f32>,
    /// The chosen sample's cosine with its prompt: what the CLIP score averages, computed once,
    /// when the sample is made (absent in logs of older versions: computed when scoring).
    #[serde(default)]
    pub clip_cosine: Option<f64>,
    pub guidance: Vec<Guidance>,
    /// Retrieved documents (pair id, relevance).
    pub retrieved: Vec<(String, f32)>,
}

/// The protocol's outcome (`report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct T2iReport {
    pub prompts: usize,
    pub generated_now: usize,
    /// FID of the chosen samples against the reference images, when computed.
    #[serde(rename = "FID")]
    pub fid: Option<f64>,
    /// torchmetrics' CLIP score of each chosen sample with its prompt, averaged.
    pub clip_score: f64,
    pub leakage: LeakageReport,
    pub report: PathBuf,
}

/// The prompts: the first caption of each of the first `count` images, by image id.
pub fn choose_prompts(file: &CocoCaptionFile, count: usize) -> Vec<(String, String)> {
    let mut ids: Vec<&String> = file.captions.keys().collect();
    // Numeric ids in numeric order, as COCO lists them.
    ids.sort_by_key(|id| (id.parse::<u64>().unwrap_or(u64::MAX), (*id).clone()));
    ids.into_iter()
        .filter_map(|id| Some((id.clone(), file.captions.get(id)?.first()?.clone())))
        .take(count)
        .collect()
}

fn settings(c: &T2iConfig, guidance: Guidance, samples: usize, seed: u64) -> Settings {
    Settings {
        samples,
        guidance,
        sampling: c.sampling(guidance.min_p(c.min_p)),
        seed,
    }
}

/// Run the protocol (continuing a previous run in `out`), then score it.
pub fn run(o: &T2iOptions) -> Result<T2iReport> {
    o.config.validate()?;
    let c = &o.config;
    let prompts = choose_prompts(&CocoCaptionFile::read(&o.prompts)?, c.count);
    if prompts.is_empty() {
        return Err(EvalError::input(
            o.prompts.display().to_string(),
            "no captions to use as prompts",
        ));
    }
    let references = images_in(&o.reference_images)?;
    let (g, leakage) = open_run(&o.run, &references, o.allow_overlap)?;
    let tok = image_tokenizer(&g, &o.run)?;
    pin_settings(
        &o.out,
        &json!({
            "protocol": "t2i",
            "run": o.run,
            "checkpoint": g.checkpoint,
            "prompts": o.prompts,
            "reference_images": o.reference_images,
            "config": c,
        }),
    )?;
    let samples_dir = o.out.join("samples");
    std::fs::create_dir_all(&samples_dir).map_err(io_err(&samples_dir))?;
    let progress = Progress::new(o.out.join("samples.jsonl"));
    let mut done: Vec<T2iRecord> = progress.load()?;
    let finished: BTreeSet<usize> = done.iter().map(|r| r.index).collect();
    let mut retriever = if c.retrieve > 0 {
        let mut r = Retriever::open(&g.dataset, &g.layout, o.threads)?;
        let overlapping: Vec<u64> = leakage
            .overlaps
            .iter()
            .filter_map(|ov| u64::from_str_radix(&ov.pair_id, 16).ok())
            .collect();
        r.exclude(overlapping);
        Some(r)
    } else {
        None
    };
    let mut clip = ClipScorer::for_dataset(&g.dataset, o.threads)?;
    let n_cd = (c.cd_share * c.samples as f64).round() as usize;
    let started = std::time::Instant::now();
    let mut generated_now = 0;
    for (index, (image_id, prompt)) in prompts.iter().enumerate() {
        if finished.contains(&index) {
            continue;
        }
        let retrieved = match retriever.as_mut() {
            Some(r) => r.retrieve(prompt, c.retrieve)?,
            None => Default::default(),
        };
        let seed = c.seed.wrapping_add(index as u64);
        let mut codes = Vec::new();
        let mut guidance = Vec::new();
        if n_cd > 0 {
            let cd = Guidance::CdK {
                cd_alpha: c.cd_alpha,
                cd_k: c.cd_k.max(1),
            };
            let s = settings(c, cd, n_cd, seed ^ 0xC0DE);
            codes.extend(g.text_to_image(prompt, &retrieved.tokens, &s)?);
            guidance.extend(std::iter::repeat_n(cd, n_cd));
        }
        if n_cd < c.samples {
            let cfg = match c.cfg_scale {
                1.0 => Guidance::None,
                s => Guidance::Cfg { cfg_scale: s },
            };
            let s = settings(c, cfg, c.samples - n_cd, seed);
            codes.extend(g.text_to_image(prompt, &retrieved.tokens, &s)?);
            guidance.extend(std::iter::repeat_n(cfg, c.samples - n_cd));
        }
        let flat: Vec<u32> = codes.iter().flatten().copied().collect();
        let images = tok.decode_rgb(&flat, codes.len())?;
        // One CLIP pass a prompt: every sample when re-ranking, else the one kept; its cosine is
        // also what the CLIP score averages.
        let side = tok.resolution();
        let (similarities, chosen, clip_cosine) = if c.rerank {
            let cos = clip
                .score_against(&as_inputs(&images, side), prompt)?
                .cosine;
            let chosen = (0..cos.len())
                .max_by(|&a, &b| cos[a].total_cmp(&cos[b]))
                .unwrap_or(0);
            let best = cos[chosen];
            (cos.into_iter().map(|v| v as f32).collect(), chosen, best)
        } else {
            let cos = clip.score_against(&as_inputs(&images[..1], side), prompt)?;
            (Vec::new(), 0, cos.cosine[0])
        };
        let file = format!("samples/{index:06}.png");
        save_png(&o.out.join(&file), &images[chosen], tok.resolution())?;
        let record = T2iRecord {
            index,
            image_id: image_id.clone(),
            prompt: prompt.clone(),
            file,
            chosen,
            similarities,
            clip_cosine: Some(clip_cosine),
            guidance,
            retrieved: retrieved
                .docs
                .iter()
                .map(|(id, s)| (format!("{id:016x}"), *s))
                .collect(),
        };
        progress.append(
            &serde_json::to_value(&record).map_err(|source| EvalError::Json {
                path: o.out.join("samples.jsonl"),
                source,
            })?,
        )?;
        done.push(record);
        generated_now += 1;
        tracing::info!(
            index,
            of = prompts.len(),
            seconds = started.elapsed().as_secs_f64(),
            "t2i prompt done"
        );
    }
    done.sort_by_key(|r| r.index);
    done.truncate(prompts.len());
    score(o, &g, &mut clip, done, generated_now, leakage)
}

/// FID, CLIP score, the grid and the report over the finished samples.
fn score(
    o: &T2iOptions,
    g: &Generator,
    clip: &mut ClipScorer,
    done: Vec<T2iRecord>,
    generated_now: usize,
    leakage: LeakageReport,
) -> Result<T2iReport> {
    let side = g.image.as_ref().map_or(0, |t| t.resolution());
    // The CLIP score, torchmetrics' definition (the mean of 100·cos, clamped at 0), from each
    // sample's cosine logged when it was made; logs of older versions lack it, and those samples
    // are read back and scored a chunk at a time (30K samples would not fit in memory).
    let mut cos_sum: f64 = done.iter().filter_map(|r| r.clip_cosine).sum();
    let missing: Vec<&T2iRecord> = done.iter().filter(|r| r.clip_cosine.is_none()).collect();
    for chunk in missing.chunks(CLIP_CHUNK) {
        let mut images = Vec::with_capacity(chunk.len());
        for r in chunk {
            images.push(cm3_tokenize::image::load_image(&o.out.join(&r.file), side)?);
        }
        let texts: Vec<&str> = chunk.iter().map(|r| r.prompt.as_str()).collect();
        cos_sum += clip
            .score_pairs(&as_inputs(&images, side), &texts)?
            .cosine
            .iter()
            .sum::<f64>();
    }
    let mut grid = Vec::with_capacity(o.config.grid);
    for r in done.iter().take(o.config.grid) {
        grid.push(cm3_tokenize::image::load_image(&o.out.join(&r.file), side)?);
    }
    let clip_score = (100.0 * cos_sum / done.len().max(1) as f64).max(0.0);
    let fid = match &o.inception {
        Some(model) => {
            // pytorch-fid's protocol on two folders: the chosen samples (only they are in
            // samples/) against the evaluation images.
            let fid = crate::fid::fid_of_dirs(
                model,
                &o.out.join("samples"),
                &o.reference_images,
                FID_BATCH,
                o.threads,
            )?;
            Some(fid.fid)
        }
        None => None,
    };
    write_grid(&o.out.join("grid.png"), &grid, side, o.config.grid)?;
    let report_path = o.out.join("report.json");
    let report = T2iReport {
        prompts: done.len(),
        generated_now,
        fid,
        clip_score,
        leakage,
        report: report_path.clone(),
    };
    write_json(
        &report_path,
        &json!({
            "protocol": "t2i",
            "metrics": { "FID": fid, "CLIPScore": clip_score },
            "fid_note": if fid.is_none() { Some("not computed: no --inception model given") } else { None },
            "prompts": done.len(),
            "run": o.run,
            "checkpoint": g.checkpoint,
            "memory_bank": g.dataset,
            "config": o.config,
            "leakage": report.leakage,
            "excluded_from_retrieval": report.leakage.overlaps.iter().map(|ov| &ov.pair_id).collect::<Vec<_>>(),
            "samples": "samples.jsonl",
            "grid": "grid.png",
            "tool_version": env!("CARGO_PKG_VERSION"),
        }),
    )?;
    Ok(report)
}

/// The first `n` images tiled four a row into one PNG (the prompts are in samples.jsonl, in the
/// same order).
pub fn write_grid(path: &Path, images: &[Vec<u8>], side: u32, n: usize) -> Result<()> {
    let n = n.min(images.len());
    if n == 0 || side == 0 {
        return Ok(());
    }
    let cols = n.min(4);
    let rows = n.div_ceil(cols);
    let s = side as usize;
    let (w, h) = (cols * s, rows * s);
    let mut canvas = vec![255u8; w * h * 3];
    for (i, img) in images.iter().take(n).enumerate() {
        let (x0, y0) = ((i % cols) * s, (i / cols) * s);
        for y in 0..s {
            let src = &img[y * s * 3..(y + 1) * s * 3];
            let at = ((y0 + y) * w + x0) * 3;
            canvas[at..at + s * 3].copy_from_slice(src);
        }
    }
    image::save_buffer(
        path,
        &canvas,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| EvalError::input(path.display().to_string(), e.to_string()))
}

/// Square RGB images as CLIP inputs.
fn as_inputs(images: &[Vec<u8>], side: u32) -> Vec<ImageInput<'_>> {
    images
        .iter()
        .map(|px| ImageInput::Rgb {
            pixels: px,
            width: side,
            height: side,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `min_p` 0 is not written, so the settings pinned by an evaluation begun before the field
    /// existed equal those of a resumed one at `min_p = 0`; the default (0.1) is written, and
    /// bad sampling settings are refused with `cm3 generate`'s wording.
    #[test]
    fn min_p_is_pinned_only_when_set_and_checked_like_generate() {
        let plain = T2iConfig {
            min_p: 0.0,
            ..T2iConfig::default()
        };
        let pinned = serde_json::to_value(&plain).expect("settings as JSON");
        assert!(pinned.get("min_p").is_none(), "{pinned}");
        assert!(pinned.get("top_p").is_some());
        let default = serde_json::to_value(T2iConfig::default()).expect("settings as JSON");
        assert_eq!(default["min_p"], 0.1);
        assert!(plain.validate().is_ok());
        for (bad, says) in [
            (
                T2iConfig {
                    min_p: 1.5,
                    ..T2iConfig::default()
                },
                "min-p must be in [0, 1]",
            ),
            (
                T2iConfig {
                    temperature: f64::NAN,
                    ..T2iConfig::default()
                },
                "temperature must be a number",
            ),
            (
                T2iConfig {
                    top_p: 0.0,
                    ..T2iConfig::default()
                },
                "top-p must be in (0, 1]",
            ),
        ] {
            let err = bad
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(says), "{err}");
        }
    }
}
