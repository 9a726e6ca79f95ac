//! Caption metrics exactly as pycocoevalcap 1.2 (`COCOEvalCap`) computes them: BLEU-1..4,
//! ROUGE-L and CIDEr-D after its PTB tokenisation (METEOR and SPICE, which run Java programs
//! of their own, are not reproduced).
//!
//! Like `COCOEvalCap` with `params['image_id'] = cocoRes.getImgIds()`, the evaluated images are
//! those of the predictions, visited in the references' image order; each side's captions are
//! tokenised in one batch ([`ptb_tokenize_batch`]); CIDEr-D's document frequencies come from
//! the references of the evaluated images only. Checked against pycocoevalcap's own output
//! (`tests/fixtures/coco_caption_metrics`).
//!
//! ```no_run
//! # fn main() -> cm3_eval::Result<()> {
//! let scores = cm3_eval::captions::evaluate_files("results.json", "captions_val2017.json")?;
//! println!("{}", scores.table()); // or scores.to_json()
//! # Ok(()) }
//! ```

mod bleu;
mod cider;
mod formats;
mod ngrams;
mod rouge;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Value, json};

#[cfg(feature = "ptb")]
pub use cm3_ptb::{PUNCTUATIONS, ptb_tokenize, ptb_tokenize_batch};
pub use formats::{
    ImageId, MAX_CAPTION_BYTES, MAX_FILE_BYTES, Prediction, Predictions, References,
    read_predictions, read_references,
};

use crate::error::{EvalError, Result};
use ngrams::{Counts, Grams, Vocab};

/// pycocoevalcap's names of the metrics, in its order.
pub const METRICS: [&str; 6] = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"];

/// The scores of one image (pycocoevalcap's `imgToEval` entry, without METEOR/SPICE).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScores {
    pub image_id: ImageId,
    pub bleu: [f64; 4],
    pub rouge_l: f64,
    pub cider: f64,
}

/// Corpus scores (pycocoevalcap's `eval`) and per-image scores.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionScores {
    /// Corpus BLEU-1..4 (from summed counts, with the corpus brevity penalty).
    pub bleu: [f64; 4],
    /// Mean of the per-image ROUGE-L.
    pub rouge_l: f64,
    /// Mean of the per-image CIDEr-D.
    pub cider: f64,
    /// Number of evaluated images (= predictions).
    pub images: usize,
    /// Number of reference captions of those images.
    pub references: usize,
    /// Words of the tokenised candidates, and BLEU's "closest" reference lengths, summed.
    pub testlen: usize,
    pub reflen: usize,
    /// In the order the images were evaluated.
    pub per_image: Vec<ImageScores>,
}

/// One image with already PTB-tokenised captions.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedImage {
    pub image_id: ImageId,
    pub references: Vec<String>,
    pub candidate: String,
}

/// Reads both files and evaluates: what `cm3 eval captions` runs.
pub fn evaluate_files(
    predictions: impl AsRef<Path>,
    references: impl AsRef<Path>,
) -> Result<CaptionScores> {
    evaluate(
        &read_predictions(predictions)?,
        &read_references(references)?,
    )
}

/// Checks the predictions against the references; returns the evaluated images in the
/// references' order as (index into `references.images`, prediction caption).
fn match_images<'a>(
    predictions: &'a Predictions,
    references: &References,
    allow_empty: bool,
) -> Result<Vec<(usize, &'a str)>> {
    let src = &predictions.source;
    if predictions.entries.is_empty() {
        return Err(EvalError::input(src, "no predictions"));
    }
    let index: HashMap<String, usize> = references
        .images
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.key(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut chosen = Vec::with_capacity(predictions.entries.len());
    for p in &predictions.entries {
        let id = &p.image_id;
        if !seen.insert(id.key()) {
            return Err(EvalError::input(
                src,
                format!("image {id}: more than one prediction"),
            ));
        }
        if p.caption.trim().is_empty() && !allow_empty {
            return Err(EvalError::input(src, format!("image {id}: empty caption")));
        }
        let Some(&i) = index.get(&id.key()) else {
            return Err(EvalError::input(
                src,
                format!("image {id}: not in the references {}", references.source),
            ));
        };
        let refs = &references.images[i].1;
        if refs.is_empty() {
            return Err(EvalError::input(
                &references.source,
                format!("image {id}: no reference captions"),
            ));
        }
        if refs.iter().any(|c| c.trim().is_empty()) {
            return Err(EvalError::input(
                &references.source,
                format!("image {id}: empty reference caption"),
            ));
        }
        chosen.push((i, p.caption.as_str()));
    }
    chosen.sort_by_key(|&(i, _)| i);
    Ok(chosen)
}

/// Evaluates the predictions against the references as `COCOEvalCap.evaluate()` does (BLEU,
/// ROUGE-L, CIDEr-D). Errors name the input and the image: no predictions, a duplicate
/// prediction, an empty caption, an image the references lack.
pub fn evaluate(predictions: &Predictions, references: &References) -> Result<CaptionScores> {
    evaluate_checked(predictions, references, false)
}

/// [`evaluate`] for captions a model generated (`cm3 eval i2t`): an empty caption is what the
/// model said, not a broken file, and is scored as pycocoevalcap scores an empty candidate (no
/// n-grams: 0 for that image) instead of refused.
pub fn evaluate_generated(
    predictions: &Predictions,
    references: &References,
) -> Result<CaptionScores> {
    evaluate_checked(predictions, references, true)
}

fn evaluate_checked(
    predictions: &Predictions,
    references: &References,
    allow_empty: bool,
) -> Result<CaptionScores> {
    let chosen = match_images(predictions, references, allow_empty)?;
    // Each side in one tokeniser call, references image by image, as pycocoevalcap does.
    let ref_raw: Vec<&str> = chosen
        .iter()
        .flat_map(|&(i, _)| references.images[i].1.iter().map(String::as_str))
        .collect();
    let hyp_raw: Vec<&str> = chosen.iter().map(|&(_, c)| c).collect();
    let (ref_tok, hyp_tok) = tokenize_sides(&ref_raw, &hyp_raw, &predictions.source)?;
    let mut ref_tok = ref_tok.into_iter();
    let images: Vec<TokenizedImage> = chosen
        .iter()
        .zip(hyp_tok)
        .map(|(&(i, _), candidate)| {
            let (id, refs) = &references.images[i];
            TokenizedImage {
                image_id: id.clone(),
                references: ref_tok.by_ref().take(refs.len()).collect(),
                candidate,
            }
        })
        .collect();
    score_tokenized(&images)
}

/// Both sides through pycocoevalcap's PTB tokenisation.
#[cfg(feature = "ptb")]
fn tokenize_sides(refs: &[&str], hyps: &[&str], _: &str) -> Result<(Vec<String>, Vec<String>)> {
    Ok((ptb_tokenize_batch(refs), ptb_tokenize_batch(hyps)))
}

/// Built without the PTB tokeniser: raw captions cannot be scored as pycocoevalcap scores them.
#[cfg(not(feature = "ptb"))]
fn tokenize_sides(_: &[&str], _: &[&str], source: &str) -> Result<(Vec<String>, Vec<String>)> {
    Err(EvalError::input(
        source,
        "this cm3 was built without the PTB tokeniser pycocoevalcap uses (feature `ptb` of \
         cm3-eval, GPL-2.0-or-later): rebuild with it, or score already tokenised captions \
         with `captions::score_tokenized`",
    ))
}

/// BLEU, ROUGE-L and CIDEr-D of already tokenised captions (pycocoevalcap's scorers on its
/// tokeniser's output).
pub fn score_tokenized(images: &[TokenizedImage]) -> Result<CaptionScores> {
    if images.is_empty() {
        return Err(EvalError::input("captions", "no images to evaluate"));
    }
    if let Some(img) = images.iter().find(|img| img.references.is_empty()) {
        return Err(EvalError::input(
            "captions",
            format!("image {}: no references", img.image_id),
        ));
    }
    let mut vocab = Vocab::default();
    let mut grams = Grams::default();
    let mut tests = Vec::with_capacity(images.len());
    let mut refs = Vec::with_capacity(images.len());
    let mut bleu_stats = Vec::with_capacity(images.len());
    let mut rouge = Vec::with_capacity(images.len());
    for img in images {
        let test = grams.counts(&vocab.split(&img.candidate));
        let image_refs: Vec<Counts> = img
            .references
            .iter()
            .map(|r| grams.counts(&vocab.split(r)))
            .collect();
        bleu_stats.push(bleu::image_stats(&test, &image_refs, &grams.order));
        let cand = vocab.split_space(&img.candidate);
        let rrefs: Vec<Vec<u32>> = img
            .references
            .iter()
            .map(|r| vocab.split_space(r))
            .collect();
        rouge.push(rouge::rouge_l(&cand, &rrefs));
        tests.push(test);
        refs.push(image_refs);
    }
    let cider = cider::cider_d(&tests, &refs, &grams.order);
    let per_image: Vec<ImageScores> = images
        .iter()
        .zip(&bleu_stats)
        .zip(rouge.iter().zip(&cider))
        .map(|((img, stats), (&rouge_l, &cider))| ImageScores {
            image_id: img.image_id.clone(),
            bleu: bleu::image_bleu(stats),
            rouge_l,
            cider,
        })
        .collect();
    let n = images.len() as f64;
    Ok(CaptionScores {
        bleu: bleu::corpus_bleu(&bleu_stats),
        rouge_l: rouge.iter().sum::<f64>() / n,
        cider: cider.iter().sum::<f64>() / n,
        images: images.len(),
        references: images.iter().map(|i| i.references.len()).sum(),
        testlen: bleu_stats.iter().map(|s| s.testlen).sum(),
        reflen: bleu_stats.iter().map(|s| s.reflen).sum(),
        per_image,
    })
}

impl ImageScores {
    fn values(&self) -> [f64; 6] {
        let [b1, b2, b3, b4] = self.bleu;
        [b1, b2, b3, b4, self.rouge_l, self.cider]
    }
}

impl CaptionScores {
    /// The metric values in [`METRICS`] order.
    pub fn values(&self) -> [f64; 6] {
        let [b1, b2, b3, b4] = self.bleu;
        [b1, b2, b3, b4, self.rouge_l, self.cider]
    }

    /// One object with pycocoevalcap's metric names and the counts:
    /// `{"Bleu_1": .., .., "CIDEr": .., "images": .., "references": .., "testlen": .., "reflen": ..}`.
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (name, v) in METRICS.iter().zip(self.values()) {
            out.insert((*name).to_string(), json!(v));
        }
        out.insert("images".into(), json!(self.images));
        out.insert("references".into(), json!(self.references));
        out.insert("testlen".into(), json!(self.testlen));
        out.insert("reflen".into(), json!(self.reflen));
        Value::Object(out)
    }

    /// Per-image scores like pycocoevalcap's `evalImgs`: `[{"image_id": .., "Bleu_1": .., ..}]`.
    pub fn per_image_json(&self) -> Value {
        Value::Array(
            self.per_image
                .iter()
                .map(|img| {
                    let mut o = serde_json::Map::new();
                    o.insert("image_id".into(), img.image_id.to_json());
                    for (name, v) in METRICS.iter().zip(img.values()) {
                        o.insert((*name).to_string(), json!(v));
                    }
                    Value::Object(o)
                })
                .collect(),
        )
    }

    /// A readable table of the corpus scores.
    pub fn table(&self) -> String {
        let mut out = format!(
            "caption metrics (pycocoevalcap 1.2): {} images, {} references, testlen {}, reflen {}\n",
            self.images, self.references, self.testlen, self.reflen
        );
        out.push_str(&format!("{:<8} {:>8}\n", "metric", "score"));
        for (name, v) in METRICS.iter().zip(self.values()) {
            out.push_str(&format!("{name:<8} {v:>8.4}\n"));
        }
        out
    }
}
