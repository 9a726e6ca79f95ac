//! `cm3 tokenizer train-image <dataset>`: train a VQ image tokenizer of our own on the dataset's
//! images (random crops of the stored squares, each the most varied of a few: see
//! `VqTrainConfig::crop_candidates`), report reconstruction PSNR and codebook usage on
//! held-out images, and save it into the dataset (`tokenizer/image/`), where `cm3 tokenize`
//! finds it.

use std::collections::{BinaryHeap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::{BinaryArray, UInt64Array};
use burn::tensor::Device;
use cm3_core::rng::SplitMix64;
use cm3_core::schema::{column, read_columns};
use cm3_core::{DatasetDir, StageRecord, WorkerSpec};
use cm3_model::vq::ema::perplexity;
use cm3_model::vq::{StepStats, VqTrainConfig, VqTrainer};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::{Result, TokenizeError};
use crate::image::{ImageTokenizer, decode_rgb};

/// Where a trained image tokenizer lives, relative to the dataset directory.
pub const IMAGE_TOKENIZER: &str = "tokenizer/image";

#[derive(Debug, Clone, Default)]
pub struct TrainImageOptions {
    /// Write here instead of `<dataset>/tokenizer/image`.
    pub out: Option<PathBuf>,
    pub overwrite: bool,
    pub progress: bool,
    /// Where to train (`None`: the flex CPU backend); the saved tokenizer is the same.
    pub device: Option<Device>,
}

/// What training reached, measured on held-out images at the size the tokenizer will see.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainImageReport {
    /// Training images decoded and drawn from (at most `max_images`).
    pub images: usize,
    /// Images the dataset holds (held-out ones included).
    pub images_available: usize,
    pub held_out: usize,
    pub steps: usize,
    pub seconds: f64,
    /// Held-out reconstruction error (pixels in [-1, 1]) on crops after the first step and at
    /// the end.
    pub held_out_mse_first: f64,
    pub held_out_mse_last: f64,
    /// PSNR in dB of whole held-out images tokenised and decoded by the saved tokenizer
    /// (8-bit pixels, peak 255).
    pub psnr_db: f64,
    pub codes: usize,
    /// Distinct codes in the held-out images' tokens, and their share of the codebook.
    pub codes_used: usize,
    pub codes_used_fraction: f64,
    /// exp(entropy) of the held-out code histogram.
    pub perplexity: f64,
    /// Loss every few steps, for a curve.
    pub log: Vec<StepStats>,
    pub out: String,
}

/// A square RGB image of the dataset, and the pair it belongs to.
struct Picture {
    id: u64,
    rgb: Vec<u8>,
}

pub fn train_image(
    root: &Path,
    cfg: &VqTrainConfig,
    opts: &TrainImageOptions,
) -> Result<TrainImageReport> {
    cfg.validate()?;
    let ds = DatasetDir::open(root)?;
    let _lock = ds.lock("tokenizer", &WorkerSpec::default())?;
    let out = opts.out.clone().unwrap_or_else(|| ds.path(IMAGE_TOKENIZER));
    if out.join("model.safetensors").exists() && !opts.overwrite {
        return Err(TokenizeError::Dataset {
            path: out,
            reason: "an image tokenizer already exists; pass --overwrite to train a new one \
                     (tokens made with the old one will then have to be remade)"
                .into(),
        });
    }
    let manifest = ds.load_manifest()?;
    let ingest = manifest
        .stages
        .get("ingest")
        .ok_or_else(|| TokenizeError::Dataset {
            path: root.to_path_buf(),
            reason: "no ingested pairs yet: run `cm3 ingest` first".into(),
        })?;
    let side = ingest
        .config
        .get("image_size")
        .and_then(|v| v.as_u64())
        .unwrap_or(256) as usize;
    let crop = cfg.model.resolution;
    if crop > side || !side.is_multiple_of(cfg.model.factor()) {
        return Err(TokenizeError::Invalid(format!(
            "the pairs are {side} × {side}: the training crops ({crop}) must fit, and {side} must \
             be a multiple of the downsampling factor {}",
            cfg.model.factor()
        )));
    }

    let (held_out, train, available) = sample_pictures(&ds, ingest, side, cfg)?;
    let held = held_out.len();
    if train.is_empty() || held == 0 {
        return Err(TokenizeError::Dataset {
            path: root.to_path_buf(),
            reason: format!(
                "{} usable images: too few to train a tokenizer and hold some out",
                train.len() + held
            ),
        });
    }
    tracing::info!(
        train = train.len(),
        available,
        held_out = held,
        steps = cfg.steps,
        "training the VQ image tokenizer"
    );

    let device = opts.device.clone().unwrap_or_else(Device::flex);
    let train_device = device.clone().autodiff();
    let mut trainer = VqTrainer::new(cfg.clone(), &train_device)?;
    let mut rng = SplitMix64::new(cfg.seed);
    // Held-out crops (one fixed crop per image) for the loss curve.
    let held_crops: Vec<f32> = held_out
        .iter()
        .flat_map(|p| crop_pixels(&p.rgb, side, crop, &mut SplitMix64::new(p.id)))
        .collect();
    let bar = if opts.progress {
        let b = ProgressBar::new(cfg.steps as u64);
        b.set_style(
            ProgressStyle::with_template(
                "train-image {bar:30} {pos}/{len} steps {msg} [{elapsed_precise}, eta {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut log = Vec::new();
    let mut first = None;
    for step in 0..cfg.steps {
        let mut batch = Vec::with_capacity(cfg.batch_size * 3 * crop * crop);
        for _ in 0..cfg.batch_size {
            let p = &train[(rng.next_u64() % train.len() as u64) as usize];
            let candidates =
                (0..cfg.crop_candidates).map(|_| crop_pixels(&p.rgb, side, crop, &mut rng));
            batch.extend(most_varied(candidates));
        }
        let stats = trainer.step(batch, cfg.batch_size)?;
        if step == 0 {
            first = Some(trainer.evaluate(held_crops.clone(), held)?);
        }
        if step % 25 == 0 || step + 1 == cfg.steps {
            bar.set_message(format!("loss {:.4}", stats.loss));
            log.push(stats);
        }
        bar.inc(1);
    }
    let last = trainer.evaluate(held_crops, held)?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();

    let tok = trainer.finish(&Device::flex(), side)?;
    tok.save(&out)?;
    // Measure what was saved: load it as `cm3 tokenize` will, tokenise and decode whole images.
    let loaded = ImageTokenizer::open(&out, None, &device)?;
    let views: Vec<&[u8]> = held_out.iter().map(|p| p.rgb.as_slice()).collect();
    let codes = loaded.encode_rgb(&views)?;
    let flat: Vec<u32> = codes.iter().flatten().copied().collect();
    let decoded = loaded.decode_rgb(&flat, held_out.len())?;
    let mut se = 0f64;
    let mut n = 0usize;
    for (a, b) in held_out.iter().zip(&decoded) {
        for (&x, &y) in a.rgb.iter().zip(b) {
            let d = f64::from(x) - f64::from(y);
            se += d * d;
        }
        n += a.rgb.len();
    }
    let mse8 = se / n.max(1) as f64;
    let psnr_db = 10.0 * (255.0f64 * 255.0 / mse8.max(1e-12)).log10();
    let k = cfg.model.n_embed;
    let mut hist = vec![0f64; k];
    for &c in &flat {
        hist[c as usize] += 1.0;
    }
    let used: HashSet<u32> = flat.iter().copied().collect();
    Ok(TrainImageReport {
        images: train.len(),
        images_available: available,
        held_out: held,
        steps: cfg.steps,
        seconds,
        held_out_mse_first: first.unwrap_or(f64::NAN),
        held_out_mse_last: last,
        psnr_db,
        codes: k,
        codes_used: used.len(),
        codes_used_fraction: used.len() as f64 / k as f64,
        perplexity: perplexity(&hist),
        log,
        out: out.display().to_string(),
    })
}

/// The held-out images (the `held_out` smallest pair ids, at most a fifth of the images) and
/// the training images (all others, or the `max_images` whose seeded hash of the id is smallest),
/// each in id order, and the number of images stored. Two passes over the shards: the ids alone,
/// then the images, of which only the chosen are decoded, so memory holds the chosen images and
/// one shard's column, whatever the dataset's size. With no more than `max_images` training
/// images the choice is every image, as it always was.
fn sample_pictures(
    ds: &DatasetDir,
    ingest: &StageRecord,
    side: usize,
    cfg: &VqTrainConfig,
) -> Result<(Vec<Picture>, Vec<Picture>, usize)> {
    let bad = |path: &Path| TokenizeError::Dataset {
        path: path.to_path_buf(),
        reason: "columns id/image have unexpected types".into(),
    };
    // Pass 1: the smallest ids (held out), and the smallest hashes (trained on). The held-out
    // ids are at most `held_out`, so the training sample is among `max_images + held_out`
    // smallest hashes.
    let mut smallest_ids = BinaryHeap::new();
    let mut smallest_keys = BinaryHeap::new();
    let key = |id: u64| SplitMix64::for_pair(cfg.seed, 0x7472_6169_6e2d_696d, id).next_u64();
    let keep = cfg.max_images.saturating_add(cfg.held_out);
    let mut available = 0usize;
    for shard in ingest.shards.values() {
        let path = ds.path(&shard.file);
        for b in read_columns(&path, &["id"])? {
            let ids = column::<UInt64Array>(&b, "id").ok_or_else(|| bad(&path))?;
            for &id in ids.values() {
                available += 1;
                push_bounded(&mut smallest_ids, id, cfg.held_out);
                push_bounded(&mut smallest_keys, (key(id), id), keep);
            }
        }
    }
    let held = cfg.held_out.min(available / 5);
    let mut held_ids = smallest_ids.into_sorted_vec();
    held_ids.truncate(held);
    let held_set: HashSet<u64> = held_ids.iter().copied().collect();
    let train_set: HashSet<u64> = smallest_keys
        .into_sorted_vec()
        .into_iter()
        .map(|(_, id)| id)
        .filter(|id| !held_set.contains(id))
        .take(cfg.max_images)
        .collect();
    // Pass 2: decode the chosen images.
    let (mut held_out, mut train) = (Vec::new(), Vec::new());
    for shard in ingest.shards.values() {
        let path = ds.path(&shard.file);
        for b in read_columns(&path, &["id", "image"])? {
            let ids = column::<UInt64Array>(&b, "id").ok_or_else(|| bad(&path))?;
            let images = column::<BinaryArray>(&b, "image").ok_or_else(|| bad(&path))?;
            for i in 0..b.num_rows() {
                let id = ids.value(i);
                let to = if held_set.contains(&id) {
                    &mut held_out
                } else if train_set.contains(&id) {
                    &mut train
                } else {
                    continue;
                };
                match decode_rgb(images.value(i), side as u32) {
                    Ok(rgb) => to.push(Picture { id, rgb }),
                    Err(e) => tracing::warn!(
                        pair = format!("{id:016x}"),
                        "skipping an image that cannot be decoded: {e}"
                    ),
                }
            }
        }
    }
    // Ids are hashes: id order is a fixed, unbiased order, whatever the shards' order.
    held_out.sort_by_key(|p| p.id);
    train.sort_by_key(|p| p.id);
    Ok((held_out, train, available))
}

/// Keeps the `cap` smallest items pushed (a max-heap whose top is the largest kept).
fn push_bounded<T: Ord>(heap: &mut BinaryHeap<T>, item: T, cap: usize) {
    if heap.len() < cap {
        heap.push(item);
    } else if heap.peek().is_some_and(|top| item < *top) {
        heap.pop();
        heap.push(item);
    }
}

/// A random `crop` × `crop` window of a `side` × `side` RGB image, as CHW floats in [-1, 1].
fn crop_pixels(rgb: &[u8], side: usize, crop: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let span = (side - crop + 1) as u64;
    let (top, left) = (
        (rng.next_u64() % span) as usize,
        (rng.next_u64() % span) as usize,
    );
    let mut out = vec![0f32; 3 * crop * crop];
    for y in 0..crop {
        for x in 0..crop {
            let px = &rgb[((top + y) * side + left + x) * 3..][..3];
            for c in 0..3 {
                out[c * crop * crop + y * crop + x] = f32::from(px[c]) / 127.5 - 1.0;
            }
        }
    }
    out
}

/// The crop whose pixels vary most (summed per-channel variance); the first of equals.
fn most_varied(crops: impl Iterator<Item = Vec<f32>>) -> Vec<f32> {
    let variance = |px: &[f32]| -> f64 {
        px.chunks(px.len() / 3)
            .map(|ch| {
                let n = ch.len() as f64;
                let mean = ch.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                ch.iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / n
            })
            .sum()
    };
    let mut best: Option<(f64, Vec<f32>)> = None;
    for px in crops {
        let v = variance(&px);
        if best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, px));
        }
    }
    best.map(|(_, px)| px).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_varied_crop_is_kept() {
        let flat = vec![0.5f32; 12];
        let edge: Vec<f32> = (0..12)
            .map(|i| if i % 4 < 2 { -1.0 } else { 1.0 })
            .collect();
        let faint: Vec<f32> = (0..12).map(|i| if i % 4 < 2 { 0.4 } else { 0.6 }).collect();
        let crops = [flat.clone(), faint.clone(), edge.clone(), flat.clone()];
        assert_eq!(most_varied(crops.into_iter()), edge);
        assert_eq!(most_varied([flat.clone(), flat.clone()].into_iter()), flat);
        // One candidate: that crop, whatever it is.
        assert_eq!(most_varied(std::iter::once(faint.clone())), faint);
    }
}
