//! The CLIP encoders of a run's dataset, loaded once: retrieval at inference embeds the prompt,
//! re-ranking embeds the samples, `cm3 eval` scores images against captions. One implementation
//! for `cm3 generate`, `cm3 eval` and a user's own program.
use std::path::{Path, PathBuf};

use cm3_embed::onnx::{TextEncoder, VisionEncoder, normalize_rows};
use cm3_embed::preprocess::{CLIP_SIZE, preprocess, preprocess_bytes};
use cm3_embed::{CONTEXT_LENGTH, ClipTokenizer};
use image::{DynamicImage, RgbImage};

use crate::error::{GenerateError, Result};

/// Images and captions sent to an encoder at once (bounds the input tensor: 64 images are 38 MB).
pub const BATCH: usize = 64;
/// Largest image file read.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

fn bad(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> GenerateError {
    GenerateError::Invalid(format!("{what}: {reason}"))
}

/// The CLIP encoders `cm3 embed` used for `dataset` (recorded in its manifest): (image, text).
pub fn clip_models(dataset: &Path) -> Result<(PathBuf, PathBuf)> {
    let m = cm3_core::DatasetDir::open(dataset)?.load_manifest()?;
    let inputs = &m
        .stages
        .get(cm3_embed::stage::STAGE)
        .ok_or_else(|| {
            bad(
                dataset.display(),
                "has no embeddings: its CLIP encoders are unknown",
            )
        })?
        .inputs;
    let get = |k: &str| {
        inputs
            .get(k)
            .map(|r| PathBuf::from(&r.path))
            .ok_or_else(|| bad(dataset.display(), format!("the manifest names no CLIP {k}")))
    };
    Ok((get("image_model")?, get("text_model")?))
}

/// An image to embed: decoded 8-bit RGB pixels (row-major, 3 bytes a pixel), or a file in any
/// format the `image` crate reads.
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    Rgb {
        pixels: &'a [u8],
        width: u32,
        height: u32,
    },
    File(&'a Path),
}

impl ImageInput<'_> {
    fn name(&self, i: usize) -> String {
        match self {
            Self::Rgb { width, height, .. } => format!("image {i} ({width}x{height} RGB)"),
            Self::File(p) => p.display().to_string(),
        }
    }

    /// CLIP's model input: CHW f32, 3 x 224 x 224, normalised.
    fn preprocess(&self, i: usize) -> Result<Vec<f32>> {
        let fail = |reason: String| bad(self.name(i), reason);
        match *self {
            Self::Rgb {
                pixels,
                width,
                height,
            } => {
                let want = u64::from(width) * u64::from(height) * 3;
                if pixels.len() as u64 != want || want == 0 {
                    return Err(fail(format!("{} bytes, expected {want}", pixels.len())));
                }
                let img = RgbImage::from_raw(width, height, pixels.to_vec())
                    .ok_or_else(|| fail("not an RGB image".into()))?;
                preprocess(&DynamicImage::ImageRgb8(img), CLIP_SIZE)
                    .map_err(|e| fail(e.to_string()))
            }
            Self::File(path) => {
                let len = std::fs::metadata(path)
                    .map_err(|e| fail(e.to_string()))?
                    .len();
                if len > MAX_IMAGE_FILE_BYTES {
                    return Err(fail(format!(
                        "{len} bytes, more than the {MAX_IMAGE_FILE_BYTES} read"
                    )));
                }
                let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
                preprocess_bytes(&bytes, CLIP_SIZE).map_err(|e| fail(e.to_string()))
            }
        }
    }
}

/// A pair of CLIP encoders, loaded once (the image encoder on first use: retrieval by text never
/// needs it). Embeddings come back raw, row-major, with their width.
#[derive(Debug)]
pub struct ClipScorer {
    vision: Option<VisionEncoder>,
    text: TextEncoder,
    image_model: PathBuf,
    text_model: PathBuf,
    threads: usize,
}

impl ClipScorer {
    /// The ONNX encoders (files, or folders holding `model.onnx`); `threads` 0 lets ONNX Runtime
    /// choose.
    pub fn load(image_model: &Path, text_model: &Path, threads: usize) -> Result<Self> {
        Ok(Self {
            vision: None,
            text: TextEncoder::load(text_model, threads)?,
            image_model: image_model.to_path_buf(),
            text_model: text_model.to_path_buf(),
            threads,
        })
    }

    /// The encoders recorded in `dataset`'s manifest.
    pub fn for_dataset(dataset: &Path, threads: usize) -> Result<Self> {
        let (image_model, text_model) = clip_models(dataset)?;
        Self::load(&image_model, &text_model, threads)
    }

    pub fn image_model(&self) -> &Path {
        &self.image_model
    }

    pub fn text_model(&self) -> &Path {
        &self.text_model
    }

    /// Raw image embeddings, row-major `[images.len(), dim]`, and `dim`.
    pub fn embed_images(&mut self, images: &[ImageInput<'_>]) -> Result<(Vec<f32>, usize)> {
        if self.vision.is_none() && !images.is_empty() {
            self.vision = Some(VisionEncoder::load(&self.image_model, self.threads)?);
        }
        let mut out = Vec::new();
        for (b, batch) in images.chunks(BATCH).enumerate() {
            let mut pixels = Vec::with_capacity(batch.len() * 3 * (CLIP_SIZE * CLIP_SIZE) as usize);
            for (k, img) in batch.iter().enumerate() {
                pixels.extend(img.preprocess(b * BATCH + k)?);
            }
            let vision = self
                .vision
                .as_mut()
                .ok_or_else(|| bad(self.image_model.display(), "did not load"))?;
            out.extend(vision.embed(pixels, batch.len())?);
        }
        let dim = width(out.len(), images.len(), &self.image_model)?;
        Ok((out, dim))
    }

    /// Raw caption embeddings, row-major `[captions.len(), dim]`, and `dim` (CLIP's tokenizer,
    /// cut to 77 tokens keeping the end token, as `clip.tokenize(truncate=True)`).
    pub fn embed_texts(&mut self, captions: &[&str]) -> Result<(Vec<f32>, usize)> {
        let tok = ClipTokenizer::openai();
        let mut out = Vec::new();
        for batch in captions.chunks(BATCH) {
            let ids: Vec<u32> = batch.iter().flat_map(|c| tok.tokenize_77(c).0).collect();
            debug_assert_eq!(ids.len(), batch.len() * CONTEXT_LENGTH);
            out.extend(self.text.embed(&ids, batch.len())?);
        }
        let dim = width(out.len(), captions.len(), &self.text_model)?;
        Ok((out, dim))
    }

    /// The unit-norm embedding of one text (a retrieval query).
    pub fn text_query(&mut self, text: &str) -> Result<Vec<f32>> {
        let (mut v, dim) = self.embed_texts(&[text])?;
        normalize_rows(&mut v, dim);
        Ok(v)
    }

    /// Cosine similarity of each image to `prompt`: the re-ranking score of §3.1.
    pub fn similarities(&mut self, prompt: &str, images: &[ImageInput<'_>]) -> Result<Vec<f32>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let q = self.text_query(prompt)?;
        let (mut v, dim) = self.embed_images(images)?;
        if dim != q.len() {
            return Err(bad(
                self.text_model.display(),
                format!(
                    "text embeddings of width {}, but {} gives {dim}",
                    q.len(),
                    self.image_model.display()
                ),
            ));
        }
        normalize_rows(&mut v, dim);
        Ok(v.chunks(dim)
            .map(|e| e.iter().zip(&q).map(|(a, b)| a * b).sum())
            .collect())
    }
}

/// The embedding width a model gave (`values` for `rows` inputs).
fn width(values: usize, rows: usize, model: &Path) -> Result<usize> {
    if rows == 0 {
        return Ok(0);
    }
    if values == 0 || !values.is_multiple_of(rows) {
        return Err(bad(
            model.display(),
            format!("{values} output values for {rows} inputs"),
        ));
    }
    Ok(values / rows)
}
