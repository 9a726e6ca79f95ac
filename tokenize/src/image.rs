//! The image tokenizer as the pipeline uses it: a VQ model found on disk, images in and codes out,
//! codes in and PNG-ready pixels out.
//!
//! A tokenizer is given as one of:
//! - a folder written by `cm3 tokenizer train-image` (`config.json` + `model.safetensors`);
//! - a taming-transformers release folder (`configs/model.yaml` + `checkpoints/last.ckpt`, the
//!   layout of the published `vqgan_gumbel_f8` archive) or a folder with `config.yaml` and one
//!   `.ckpt`;
//! - a `.ckpt` file with `config.yaml` (or `model.yaml`) beside it;
//! - either of these with the config given separately.

use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use cm3_core::vocab::TokenizerRef;
use cm3_ingest::IngestConfig;
use cm3_ingest::config::OutputImageFormat;
use cm3_model::vq::{VqConfig, VqTokenizer};

use crate::error::{Result, TokenizeError};

/// A loaded image tokenizer with the files it came from.
#[derive(Debug)]
pub struct ImageTokenizer {
    vq: VqTokenizer,
    checkpoint: PathBuf,
    sha256: String,
}

impl ImageTokenizer {
    /// Find the checkpoint and its config under `path` (or take the config given) and load them
    /// on `device`.
    pub fn open(path: &Path, config: Option<&Path>, device: &Device) -> Result<Self> {
        // A tokenizer trained by `cm3 tokenizer train-image`.
        if config.is_none() && path.join("config.json").is_file() {
            let vq = VqTokenizer::load_saved(path, device)?;
            let checkpoint = path.join("model.safetensors");
            let sha256 = cm3_core::fsio::sha256_file(&checkpoint)?.sha256;
            return Ok(Self {
                vq,
                checkpoint,
                sha256,
            });
        }
        let (checkpoint, config) = match config {
            Some(c) if path.is_file() => (path.to_path_buf(), c.to_path_buf()),
            Some(c) => (locate(path)?.0, c.to_path_buf()),
            None => locate(path)?,
        };
        let cfg = VqConfig::from_taming_yaml(&config)?;
        let vq = VqTokenizer::load_taming(&checkpoint, cfg, device)?;
        let sha256 = cm3_core::fsio::sha256_file(&checkpoint)?.sha256;
        Ok(Self {
            vq,
            checkpoint,
            sha256,
        })
    }

    pub fn vq(&self) -> &VqTokenizer {
        &self.vq
    }

    /// What the vocabulary layout records about this tokenizer.
    pub fn reference(&self) -> TokenizerRef {
        TokenizerRef {
            path: self.checkpoint.display().to_string(),
            sha256: self.sha256.clone(),
        }
    }

    /// The side of the square images it tokenizes (its training resolution).
    pub fn resolution(&self) -> u32 {
        self.vq.image_size() as u32
    }

    /// Codes per side (32 for 256² at f8).
    pub fn grid(&self) -> u32 {
        (self.vq.image_size() / self.vq.config().factor()) as u32
    }

    /// Codes of square RGB images of [`Self::resolution`] pixels (8-bit, row-major RGB), one
    /// `grid²` list per image, row by row.
    pub fn encode_rgb(&self, images: &[&[u8]]) -> Result<Vec<Vec<u32>>> {
        let side = self.resolution() as usize;
        let plane = side * side;
        let mut pixels = vec![0f32; images.len() * 3 * plane];
        for (i, rgb) in images.iter().enumerate() {
            if rgb.len() != 3 * plane {
                return Err(TokenizeError::Invalid(format!(
                    "image {i} has {} bytes; the tokenizer takes {side} × {side} RGB ({})",
                    rgb.len(),
                    3 * plane
                )));
            }
            let out = &mut pixels[i * 3 * plane..(i + 1) * 3 * plane];
            for (p, px) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    // taming's preprocessing: x / 127.5 - 1.
                    out[c * plane + p] = f32::from(px[c]) / 127.5 - 1.0;
                }
            }
        }
        let codes = self.vq.encode_pixels(pixels, images.len(), side, side)?;
        let per = (self.grid() * self.grid()) as usize;
        Ok(codes.chunks(per).map(<[u32]>::to_vec).collect())
    }

    /// 8-bit RGB images (row-major) of `n` code grids of `grid × grid`.
    pub fn decode_rgb(&self, codes: &[u32], n: usize) -> Result<Vec<Vec<u8>>> {
        let g = self.grid() as usize;
        let x = self.vq.decode(codes, n, g, g)?;
        let [_, c, h, w] = x.dims();
        let values = cm3_model::read_f32(x, "reading decoded pixels")?;
        let plane = h * w;
        Ok(values
            .chunks(c * plane)
            .map(|img| {
                let mut rgb = Vec::with_capacity(3 * plane);
                for p in 0..plane {
                    for ch in 0..3 {
                        // [-1, 1] → [0, 255], as taming's custom_to_pil does.
                        let v = (img[ch * plane + p].clamp(-1.0, 1.0) + 1.0) * 127.5;
                        rgb.push(v.round() as u8);
                    }
                }
                rgb
            })
            .collect())
    }
}

/// The image tokenizer the dataset's layout names (recorded relative to the dataset or absolute;
/// older layouts recorded it relative to where `cm3 tokenize` ran).
pub fn layout_image_tokenizer(
    dataset: &Path,
    layout: &cm3_core::vocab::VocabLayout,
) -> Option<PathBuf> {
    let recorded = PathBuf::from(&layout.image.tokenizer.path);
    let candidates = [
        recorded.clone(),
        dataset.join(&recorded),
        dataset.join("tokenizer/image"),
    ];
    for c in candidates {
        let dir = if c.file_name().is_some_and(|n| n == "model.safetensors") {
            c.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            c
        };
        if dir.join("config.json").is_file() || dir.is_file() {
            return Some(dir);
        }
    }
    None
}

/// Any image file, prepared the way `cm3 ingest` prepares pairs (EXIF orientation, RGB on white,
/// shorter side resized to `side` and centre-cropped), as 8-bit RGB.
pub fn load_image(path: &Path, side: u32) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| TokenizeError::Io {
            op: "reading",
            path: path.to_path_buf(),
            source: e,
        })?;
    let cfg = IngestConfig {
        image_size: side,
        image_format: OutputImageFormat::Png,
        ..IngestConfig::default()
    };
    let normal = cm3_ingest::normalize::normalize_image(&data, &cfg).map_err(|r| {
        TokenizeError::Tokenizer {
            path: path.to_path_buf(),
            reason: format!("not a usable image: {} ({})", r.reason.code(), r.detail),
        }
    })?;
    decode_rgb(&normal.bytes, side).map_err(|reason| TokenizeError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decode an encoded square image of `side` pixels (a pair's stored image) to 8-bit RGB.
pub fn decode_rgb(bytes: &[u8], side: u32) -> std::result::Result<Vec<u8>, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    if img.width() != side || img.height() != side {
        return Err(format!(
            "the image is {} × {}, the tokenizer takes {side} × {side}",
            img.width(),
            img.height()
        ));
    }
    Ok(img.to_rgb8().into_raw())
}

/// Write 8-bit RGB as PNG.
pub fn save_png(path: &Path, rgb: &[u8], side: u32) -> Result<()> {
    image::save_buffer(path, rgb, side, side, image::ExtendedColorType::Rgb8).map_err(|e| {
        TokenizeError::Tokenizer {
            path: path.to_path_buf(),
            reason: format!("writing PNG: {e}"),
        }
    })
}

fn locate(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let missing = |reason: &str| TokenizeError::Tokenizer {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let config = ["config.yaml", "model.yaml", "../configs/model.yaml"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| missing("no config.yaml or model.yaml beside the checkpoint"))?;
        return Ok((path.to_path_buf(), config));
    }
    if !path.is_dir() {
        return Err(missing("no such file or folder"));
    }
    let release = (
        path.join("checkpoints/last.ckpt"),
        path.join("configs/model.yaml"),
    );
    if release.0.is_file() && release.1.is_file() {
        return Ok(release);
    }
    let mut ckpts: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| TokenizeError::Io {
            op: "listing",
            path: path.to_path_buf(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    ckpts.sort();
    match ckpts.as_slice() {
        [one] => locate(one),
        [] => Err(missing(
            "no checkpoint: expected checkpoints/last.ckpt + configs/model.yaml (a taming \
             release) or one .ckpt with config.yaml",
        )),
        many => Err(missing(&format!(
            "{} checkpoints; name the one to use",
            many.len()
        ))),
    }
}
