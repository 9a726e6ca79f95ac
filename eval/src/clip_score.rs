//! CLIP score as torchmetrics computes it (`functional/multimodal/clip_score.py`, used by
//! `CLIPScore`): each embedding divided by its L2 norm, `100 * <img, txt>` per image–caption pair,
//! and the metric `max(mean over pairs, 0)`.
//!
//! Note where the clamp sits: torchmetrics documents `max(100 * cos, 0)` per pair, but its code
//! (both `clip_score` and `CLIPScore.compute`) clamps the *mean* of the unclamped scores. The two
//! agree whenever no pair has a negative cosine (always, in practice, for trained CLIP on real
//! captions); [`ClipScore::mean`] follows the code, [`ClipScore::per_pair`] the per-pair formula.
//! Computed in f64 from the f32 embeddings (torch works in f32: the difference is below 1e-5).
//!
//! [`ClipScorer`] (in `cm3_generate::clip`, shared with re-ranking and retrieval) embeds images
//! and captions with a dataset's CLIP encoders (`cm3_embed`'s ONNX encoders, CLIP's
//! preprocessing and tokenizer, captions cut to 77 tokens keeping the end token as
//! `clip.tokenize(truncate=True)`); [`ClipScoring`] scores them.
use crate::error::{EvalError, Result};

/// Per-pair and mean CLIP scores.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipScore {
    /// Cosine similarity of each pair.
    pub cosine: Vec<f64>,
    /// `100 * max(cos, 0)` of each pair (torchmetrics' documented per-pair score).
    pub per_pair: Vec<f64>,
    /// torchmetrics' CLIPScore: `max(mean(100 * cos), 0)`.
    pub mean: f64,
}

/// The L2 norm of a row, or an error naming it when zero or not finite (torchmetrics would give
/// NaN).
fn norm(row: &[f32], what: &str, i: usize) -> Result<f64> {
    let n = row
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if !n.is_finite() {
        return Err(EvalError::Numeric(format!(
            "{what} embedding {i} has a value that is not finite"
        )));
    }
    if n == 0.0 {
        return Err(EvalError::Numeric(format!(
            "{what} embedding {i} is the zero vector: no direction to compare"
        )));
    }
    Ok(n)
}

/// CLIP score of row-major `[n, dim]` image and text embeddings, pair `i` being image row `i`
/// with text row `i` (raw or normalised embeddings: they are normalised here).
pub fn clip_score(image_emb: &[f32], text_emb: &[f32], dim: usize) -> Result<ClipScore> {
    if dim == 0 {
        return Err(EvalError::input("CLIP score", "embedding width 0"));
    }
    if !image_emb.len().is_multiple_of(dim) || !text_emb.len().is_multiple_of(dim) {
        return Err(EvalError::input(
            "CLIP score",
            format!(
                "{} image and {} text values are not whole rows of {dim}",
                image_emb.len(),
                text_emb.len()
            ),
        ));
    }
    if image_emb.len() != text_emb.len() {
        return Err(EvalError::input(
            "CLIP score",
            format!(
                "{} image embeddings but {} text embeddings: one caption per image",
                image_emb.len() / dim,
                text_emb.len() / dim
            ),
        ));
    }
    if image_emb.is_empty() {
        return Err(EvalError::input("CLIP score", "no image–caption pairs"));
    }
    let mut cosine = Vec::with_capacity(image_emb.len() / dim);
    for (i, (img, txt)) in image_emb
        .chunks_exact(dim)
        .zip(text_emb.chunks_exact(dim))
        .enumerate()
    {
        let (ni, nt) = (norm(img, "image", i)?, norm(txt, "text", i)?);
        let dot: f64 = img
            .iter()
            .zip(txt)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        cosine.push(dot / (ni * nt));
    }
    let per_pair = cosine.iter().map(|c| 100.0 * c.max(0.0)).collect();
    let mean = (100.0 * cosine.iter().sum::<f64>() / cosine.len() as f64).max(0.0);
    Ok(ClipScore {
        cosine,
        per_pair,
        mean,
    })
}

pub use cm3_generate::clip::{BATCH, ClipScorer, ImageInput, MAX_IMAGE_FILE_BYTES};

/// Scoring with a dataset's CLIP encoders ([`ClipScorer`], shared with `cm3 generate`'s
/// re-ranking and retrieval).
pub trait ClipScoring {
    /// CLIP score of image `i` with caption `i`.
    fn score_pairs(&mut self, images: &[ImageInput<'_>], captions: &[&str]) -> Result<ClipScore>;
    /// Every image scored against one caption (re-ranking the samples of one prompt): the
    /// caption is embedded once. Rank by [`ClipScore::cosine`], which keeps the order of
    /// negative pairs.
    fn score_against(&mut self, images: &[ImageInput<'_>], caption: &str) -> Result<ClipScore>;
}

/// Image and text embeddings of the same width, or an error naming the models.
fn embed_both(
    scorer: &mut ClipScorer,
    images: &[ImageInput<'_>],
    captions: &[&str],
) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    if images.is_empty() {
        return Err(EvalError::input("CLIP score", "no images"));
    }
    let (img, dim) = scorer.embed_images(images)?;
    let (txt, text_dim) = scorer.embed_texts(captions)?;
    if dim != text_dim {
        return Err(EvalError::Model {
            path: scorer.text_model().to_path_buf(),
            reason: format!(
                "text embeddings of width {text_dim}, but {} gives {dim}",
                scorer.image_model().display()
            ),
        });
    }
    Ok((img, txt, dim))
}

impl ClipScoring for ClipScorer {
    fn score_pairs(&mut self, images: &[ImageInput<'_>], captions: &[&str]) -> Result<ClipScore> {
        if images.len() != captions.len() {
            return Err(EvalError::input(
                "CLIP score",
                format!(
                    "{} images but {} captions: one caption per image",
                    images.len(),
                    captions.len()
                ),
            ));
        }
        let (img, txt, dim) = embed_both(self, images, captions)?;
        clip_score(&img, &txt, dim)
    }

    fn score_against(&mut self, images: &[ImageInput<'_>], caption: &str) -> Result<ClipScore> {
        let (img, txt, dim) = embed_both(self, images, &[caption])?;
        clip_score(&img, &txt.repeat(images.len()), dim)
    }
}
