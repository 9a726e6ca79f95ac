//! Zero-shot image → text (Table 2's captioning without SFT): each evaluation image captioned
//! through the CM3 infill prompt (`<eos> <mask:0> <break> image <infill> <mask:0>`, the form a
//! masked caption takes in training), greedy, then the caption metrics against the references.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leakage::LeakageReport;
use super::{
    CocoCaptionFile, Progress, image_tokenizer, images_in, one_sample, open_run, pin_settings,
    write_json,
};
use crate::error::{EvalError, Result};

/// The protocol's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct I2tConfig {
    /// At most this many images (in file-name order); 0: all.
    pub count: usize,
    /// Longest caption generated, in text tokens.
    pub max_tokens: usize,
    /// 0: greedy (the paper's captioning decodes greedily).
    pub temperature: f64,
    pub seed: u64,
}

impl Default for I2tConfig {
    fn default() -> Self {
        Self {
            count: 0,
            max_tokens: 32,
            temperature: 0.0,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct I2tOptions {
    pub run: PathBuf,
    /// A folder of images, or a COCO captions file whose `images` name files in `image_dir`.
    pub images: PathBuf,
    pub image_dir: Option<PathBuf>,
    /// References: a COCO captions annotation file or `{"image_id": [captions]}`.
    pub references: PathBuf,
    pub out: PathBuf,
    pub config: I2tConfig,
    pub allow_overlap: bool,
}

/// One captioned image, as logged in `captions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct I2tRecord {
    pub image_id: String,
    pub file: PathBuf,
    pub caption: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct I2tReport {
    pub images: usize,
    pub captioned_now: usize,
    /// The caption metrics (pycocoevalcap's names).
    pub metrics: serde_json::Value,
    /// The metrics as a readable table.
    #[serde(skip)]
    pub table: String,
    pub leakage: LeakageReport,
    /// COCO results file of the captions (`[{"image_id", "caption"}]`).
    pub predictions: PathBuf,
}

/// The evaluation images: a folder, or a COCO file's `images` resolved in `image_dir` (default:
/// the file's folder).
pub fn evaluation_images(
    images: &Path,
    image_dir: Option<&Path>,
) -> Result<Vec<(String, PathBuf)>> {
    if images.is_dir() {
        return images_in(images);
    }
    let coco = CocoCaptionFile::read(images)?;
    if coco.file_names.is_empty() {
        return Err(EvalError::input(
            images.display().to_string(),
            "a COCO file without `images` (id, file_name): give a folder of images instead",
        ));
    }
    let dir = image_dir
        .map(Path::to_path_buf)
        .or_else(|| images.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Ok(coco
        .file_names
        .iter()
        .map(|(id, name)| (id.clone(), dir.join(name)))
        .collect())
}

/// A COCO results list entry: numeric ids stay numbers, as the references have them.
pub(crate) fn id_value(id: &str) -> serde_json::Value {
    match id.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(id),
    }
}

pub fn run(o: &I2tOptions) -> Result<I2tReport> {
    let c = &o.config;
    if c.max_tokens == 0 || c.max_tokens > 1024 {
        return Err(EvalError::input(
            "i2t settings",
            "max_tokens must be in 1..=1024",
        ));
    }
    let mut images = evaluation_images(&o.images, o.image_dir.as_deref())?;
    if c.count > 0 {
        images.truncate(c.count);
    }
    let (g, leakage) = open_run(&o.run, &images, o.allow_overlap)?;
    let tok = image_tokenizer(&g, &o.run)?;
    pin_settings(
        &o.out,
        &json!({
            "protocol": "i2t", "run": o.run, "checkpoint": g.checkpoint,
            "images": o.images, "references": o.references, "config": c,
        }),
    )?;
    let progress = Progress::new(o.out.join("captions.jsonl"));
    let mut done: Vec<I2tRecord> = progress.load()?;
    let finished: BTreeSet<String> = done.iter().map(|r| r.image_id.clone()).collect();
    let settings = one_sample(c.temperature, c.seed);
    let mut captioned_now = 0;
    for (id, file) in &images {
        if finished.contains(id) {
            continue;
        }
        let rgb = cm3_tokenize::image::load_image(file, tok.resolution())?;
        let caption = g
            .image_to_text(&rgb, c.max_tokens, &settings)?
            .into_iter()
            .next()
            .unwrap_or_default();
        let record = I2tRecord {
            image_id: id.clone(),
            file: file.clone(),
            caption,
        };
        progress.append(&json!(record))?;
        done.push(record);
        captioned_now += 1;
    }
    let predictions = o.out.join("predictions.json");
    let results: Vec<serde_json::Value> = done
        .iter()
        .map(|r| json!({ "image_id": id_value(&r.image_id), "caption": r.caption }))
        .collect();
    write_json(&predictions, &json!(results))?;
    let scores = crate::captions::evaluate_generated(
        &crate::captions::read_predictions(&predictions)?,
        &crate::captions::read_references(&o.references)?,
    )?;
    let metrics = scores.to_json();
    write_json(
        &o.out.join("report.json"),
        &json!({
            "protocol": "i2t",
            "metrics": metrics,
            "images": done.len(),
            "run": o.run,
            "checkpoint": g.checkpoint,
            "config": c,
            "prompt": "<eos> <mask:0> <break> image <infill> <mask:0> (the CM3 infill form of a masked caption)",
            "leakage": leakage,
            "predictions": "predictions.json",
            "tool_version": env!("CARGO_PKG_VERSION"),
        }),
    )?;
    Ok(I2tReport {
        images: done.len(),
        captioned_now,
        metrics,
        table: scores.table(),
        leakage,
        predictions,
    })
}
