//! `cm3 ingest` configuration. [`IngestConfig`] is everything that changes the output; it is saved
//! in the manifest and a re-run must match it. [`IngestOptions`] is how this run goes about it.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use cm3_core::WorkerSpec;

/// Input formats. `auto` decides from each path (see [`crate::source::detect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    #[default]
    Auto,
    Webdataset,
    Folder,
    Coco,
    Jsonl,
    Csv,
    Parquet,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Auto => "auto",
            InputFormat::Webdataset => "webdataset",
            InputFormat::Folder => "folder",
            InputFormat::Coco => "coco",
            InputFormat::Jsonl => "jsonl",
            InputFormat::Csv => "csv",
            InputFormat::Parquet => "parquet",
        }
    }
}

/// Encoding of normalised images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OutputImageFormat {
    #[default]
    Jpeg,
    Png,
}

/// Resampling filter for the resize (applied with antialiasing when shrinking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeFilter {
    /// Box filter: an area average when shrinking, like OpenCV's INTER_AREA that img2dataset uses.
    Box,
    Bilinear,
    CatmullRom,
    #[default]
    Lanczos3,
}

/// JPEG codec. All give correct images; the output bytes differ, so a dataset records which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JpegCodec {
    /// Pure Rust (zune-jpeg to decode, jpeg-encoder to encode): no system dependencies. Decodes
    /// every pixel at full size; what datasets made before `rust-scaled` recorded as `rust`.
    Rust,
    /// Pure Rust like `rust`, but a JPEG whose shorter side is at least 3 x `image_size` is
    /// decoded scaled in the DCT (jpeg-decoder; 1/2, 1/4 or 1/8) to the smallest such size whose
    /// shorter side is still 1.5 x `image_size` or more; smaller and unusual JPEGs (CMYK, 16-bit)
    /// are decoded as `rust` does, to the same bytes. A value of its own, not a flag, so that
    /// datasets recorded as `rust` keep their bytes on a re-run.
    RustScaled,
    /// libjpeg-turbo (cargo feature `turbojpeg`): decodes scaled in the DCT to the smallest
    /// n/8 size not below `image_size`, which skips most of the work on large photos.
    Turbojpeg,
}

impl Default for JpegCodec {
    /// The fastest codec this binary was built with.
    fn default() -> Self {
        if cfg!(feature = "turbojpeg") {
            JpegCodec::Turbojpeg
        } else {
            // Not `RustScaled`: a default that changed would refuse every existing pure-Rust
            // dataset's next incremental run (its recorded codec is `rust`), for a gain measured
            // only on large photos (README, ingest benchmark).
            JpegCodec::Rust
        }
    }
}

/// What to do with a caption that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InvalidUtf8 {
    /// Replace invalid bytes by U+FFFD; the row is flagged `caption_repaired` and counted.
    #[default]
    Repair,
    /// Reject the pair with reason `invalid-utf8-caption`.
    Reject,
}

/// COCO captions: one pair per caption (the usual training view) or one per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CocoPairs {
    #[default]
    PerCaption,
    /// One row per image: the first caption in `caption`, the others in `alt_captions`.
    PerImage,
}

/// Column names of JSONL / CSV / Parquet manifests; `None` picks the first present of the usual names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ManifestColumns {
    /// Image path (relative to the manifest's folder or `image_root`) or image bytes.
    pub image: Option<String>,
    pub caption: Option<String>,
    /// Stable key; the row number when absent.
    pub key: Option<String>,
    pub license: Option<String>,
    /// URL of the original (provenance).
    pub url: Option<String>,
    pub split: Option<String>,
}

/// Everything that determines the bytes `cm3 ingest` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Side of the square output image: the shorter side is resized to it, then centre-cropped.
    /// 256 is the input of the paper's image tokenizer (256x256 -> 1024 tokens).
    pub image_size: u32,
    pub image_format: OutputImageFormat,
    pub jpeg_quality: u8,
    pub resize_filter: ResizeFilter,
    pub jpeg_codec: JpegCodec,
    /// Reject images whose declared size exceeds this many pixels (decompression bombs).
    /// Pillow's default `MAX_IMAGE_PIXELS`.
    pub max_image_pixels: u64,
    /// Reject captions longer than this many characters (after whitespace normalisation).
    pub max_caption_chars: usize,
    pub invalid_utf8: InvalidUtf8,
    /// Reject pairs that carry no license (the paper trains on licensed data only).
    pub require_license: bool,
    /// Rows per output shard.
    pub shard_rows: usize,
    pub coco_pairs: CocoPairs,
    pub columns: ManifestColumns,
    /// Split recorded when the source does not say.
    pub default_split: String,
    /// Read images and sidecars that are symbolic links (by default such an input is rejected
    /// as `unsafe-path`: a link planted in a shared folder could make cm3 read any file).
    /// Absent from the recorded configuration while false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub follow_symlinks: bool,
    /// Let manifest and COCO image paths leave the manifest's folder (or `--image-root`):
    /// absolute paths elsewhere and `..` (by default rejected as `unsafe-path`). Absent from the
    /// recorded configuration while false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_outside_paths: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            image_size: 256,
            image_format: OutputImageFormat::Jpeg,
            jpeg_quality: 95,
            resize_filter: ResizeFilter::Lanczos3,
            jpeg_codec: JpegCodec::default(),
            max_image_pixels: 89_478_485,
            max_caption_chars: 4096,
            invalid_utf8: InvalidUtf8::Repair,
            require_license: false,
            shard_rows: 4096,
            coco_pairs: CocoPairs::PerCaption,
            columns: ManifestColumns::default(),
            default_split: "train".to_string(),
            follow_symlinks: false,
            allow_outside_paths: false,
        }
    }
}

impl IngestConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=8192).contains(&self.image_size) {
            return Err(format!(
                "image_size {} is outside 8..=8192",
                self.image_size
            ));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(format!(
                "jpeg_quality {} is outside 1..=100",
                self.jpeg_quality
            ));
        }
        if self.jpeg_codec == JpegCodec::Turbojpeg && !cfg!(feature = "turbojpeg") {
            return Err("jpeg_codec = turbojpeg needs cm3 built with `--features turbojpeg` (see the README); \
                 this binary has only the `rust` codec"
                .into());
        }
        if self.shard_rows == 0 {
            return Err("shard_rows must be at least 1".into());
        }
        if self.max_image_pixels == 0 || self.max_caption_chars == 0 {
            return Err("max_image_pixels and max_caption_chars must be positive".into());
        }
        Ok(())
    }
}

/// How this run goes about it; none of this changes the output bytes.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub inputs: Vec<PathBuf>,
    pub format: InputFormat,
    /// Image folder for COCO / manifest inputs whose paths are relative to somewhere else.
    pub image_root: Option<PathBuf>,
    pub out: PathBuf,
    pub worker: WorkerSpec,
    /// Decoding threads; 0 = all cores.
    pub threads: usize,
    /// Fail at the first rejected input instead of recording it and going on.
    pub strict: bool,
    /// Discard this stage's previous outputs and redo it (needed to change the configuration).
    pub rebuild: bool,
    pub progress: bool,
}
