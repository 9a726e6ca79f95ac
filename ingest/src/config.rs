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
    /// every pixel at full size; what pure-Rust datasets made before `rust-dct` recorded.
    Rust,
    /// Pure Rust like `rust`, but a JPEG whose shorter side is at least 3 x `image_size` is
    /// decoded scaled in the DCT (jpeg-decoder; 1/2, 1/4 or 1/8) to the smallest such size whose
    /// shorter side is still 1.5 x `image_size` or more; smaller and unusual JPEGs (CMYK, 16-bit)
    /// are decoded as `rust` does, to the same bytes. A value of its own, not a flag, so that
    /// datasets recorded as `rust` keep their bytes on a re-run.
    RustScaled,
    /// Pure Rust, cm3's own decoder and encoder for baseline YCbCr and grey JPEGs. One whose
    /// shorter side is at least 3 x `image_size` is decoded scaled in the DCT per component
    /// (1/2, 1/4 or 1/8, the smallest whose shorter side stays at least 1.5 x `image_size`),
    /// chroma brought to the luma's resolution by its own inverse DCT rather than upsampled, as
    /// libjpeg does; a smaller one at full size, chroma upsampled with libjpeg's triangle filter.
    /// The pixels stay YCbCr to the encoder. Every other JPEG (progressive, CMYK, 12-bit, or one
    /// the decoder gives up on) is decoded and encoded as `rust` does. What new datasets get
    /// from a pure-Rust build.
    RustDct,
    /// libjpeg-turbo (cargo feature `turbojpeg`): decodes scaled in the DCT to the smallest
    /// n/8 size not below `image_size`, which skips most of the work on large photos.
    Turbojpeg,
}

impl Default for JpegCodec {
    /// The fastest codec this binary was built with: what a new dataset gets. An existing
    /// dataset keeps the codec it recorded (see [`IngestConfig::resolve_codec`]).
    fn default() -> Self {
        if cfg!(feature = "turbojpeg") {
            JpegCodec::Turbojpeg
        } else {
            JpegCodec::RustDct
        }
    }
}

/// Chroma subsampling of written JPEGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JpegSubsampling {
    /// Colour at half the resolution both ways: what libjpeg, Pillow and OpenCV (so img2dataset)
    /// write by default, and the default of new datasets.
    #[serde(rename = "4:2:0")]
    S420,
    /// Colour at full resolution: about a quarter larger files and more encoding work.
    #[serde(rename = "4:4:4")]
    S444,
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
    /// JPEG codec. Unset, `cm3 ingest` takes what the dataset recorded, and for a new dataset
    /// the fastest this binary has ([`JpegCodec::default`]), so that a dataset's re-runs write
    /// the same bytes whichever cm3 made them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jpeg_codec: Option<JpegCodec>,
    /// Chroma subsampling of written JPEGs. Unset, `cm3 ingest` takes what the dataset recorded,
    /// and 4:2:0 for a new dataset. A dataset made before this setting existed records none and
    /// keeps its encoders' old rule (see [`IngestConfig::subsampling`]), so that its re-runs
    /// write the same bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jpeg_subsampling: Option<JpegSubsampling>,
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
            jpeg_codec: None,
            jpeg_subsampling: None,
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
    /// The JPEG codec used: the one set or resolved, else this binary's default.
    pub fn codec(&self) -> JpegCodec {
        self.jpeg_codec.unwrap_or_default()
    }

    /// Settle the unset codec before the configuration is recorded: the one `recorded` in the
    /// dataset's ingest record (a JSON object), if it has made shards, else this binary's
    /// default. A record without one predates the choice: `rust`.
    pub fn resolve_codec(&mut self, recorded: Option<&serde_json::Value>) {
        if self.jpeg_codec.is_some() {
            return;
        }
        self.jpeg_codec = Some(match recorded {
            Some(config) => config
                .get("jpeg_codec")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or(JpegCodec::Rust),
            None => JpegCodec::default(),
        });
    }

    /// The subsampling the JPEG encoder uses. Without a recorded setting (datasets made before
    /// it existed): jpeg-encoder's own rule for the pure-Rust codecs (4:4:4 from quality 90 up,
    /// 4:2:0 below), and 4:2:0 for libjpeg-turbo, as they were written.
    pub fn subsampling(&self) -> JpegSubsampling {
        match self.jpeg_subsampling {
            Some(s) => s,
            None if self.codec() == JpegCodec::Turbojpeg || self.jpeg_quality < 90 => {
                JpegSubsampling::S420
            }
            None => JpegSubsampling::S444,
        }
    }

    /// Settle the unset subsampling before the configuration is recorded: the value `recorded`
    /// in the dataset's ingest record (a JSON object), if it has made shards, else 4:2:0.
    pub fn resolve_subsampling(&mut self, recorded: Option<&serde_json::Value>) {
        if self.jpeg_subsampling.is_some() {
            return;
        }
        self.jpeg_subsampling = match recorded {
            // An existing dataset keeps what it recorded, including nothing (the old rule).
            Some(config) => config
                .get("jpeg_subsampling")
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            None => Some(JpegSubsampling::S420),
        };
    }

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
        if self.codec() == JpegCodec::Turbojpeg && !cfg!(feature = "turbojpeg") {
            return Err("jpeg_codec = turbojpeg needs cm3 built with `--features turbojpeg` (see the README); \
                 this binary has only the pure-Rust codecs (rust-dct, rust, rust-scaled)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_subsampling_follows_the_dataset_record() {
        let resolved = |given: Option<JpegSubsampling>, recorded: Option<serde_json::Value>| {
            let mut c = IngestConfig {
                jpeg_subsampling: given,
                jpeg_codec: Some(JpegCodec::Rust),
                ..IngestConfig::default()
            };
            c.resolve_subsampling(recorded.as_ref());
            (c.jpeg_subsampling, c.subsampling())
        };
        use JpegSubsampling::{S420, S444};
        // A new dataset: 4:2:0.
        assert_eq!(resolved(None, None), (Some(S420), S420));
        // An existing one keeps what it recorded.
        let rec = serde_json::json!({"jpeg_subsampling": "4:4:4"});
        assert_eq!(resolved(None, Some(rec)), (Some(S444), S444));
        // Recorded nothing (made before the setting): the encoder's old rule, 4:4:4 at 95.
        let rec = serde_json::json!({"jpeg_quality": 95});
        assert_eq!(resolved(None, Some(rec.clone())), (None, S444));
        // A given value is kept, whatever the record (the record comparison refuses a change).
        assert_eq!(resolved(Some(S420), Some(rec)), (Some(S420), S420));
        // The old rule below quality 90, and for libjpeg-turbo.
        let old = |codec, quality| {
            IngestConfig {
                jpeg_codec: Some(codec),
                jpeg_quality: quality,
                ..IngestConfig::default()
            }
            .subsampling()
        };
        assert_eq!(old(JpegCodec::Rust, 89), S420);
        assert_eq!(old(JpegCodec::RustScaled, 90), S444);
        assert_eq!(old(JpegCodec::Turbojpeg, 95), S420);
        // The recorded spelling.
        assert_eq!(serde_json::to_value(S420).ok(), Some("4:2:0".into()));
    }

    #[test]
    fn unset_codec_follows_the_dataset_record() {
        let resolved = |given: Option<JpegCodec>, recorded: Option<serde_json::Value>| {
            let mut c = IngestConfig {
                jpeg_codec: given,
                ..IngestConfig::default()
            };
            c.resolve_codec(recorded.as_ref());
            let json = serde_json::to_value(&c).expect("serialises");
            (c.codec(), json["jpeg_codec"].clone())
        };
        let fastest = if cfg!(feature = "turbojpeg") {
            (JpegCodec::Turbojpeg, serde_json::json!("turbojpeg"))
        } else {
            (JpegCodec::RustDct, serde_json::json!("rust-dct"))
        };
        // A new dataset: this binary's fastest, recorded by name.
        assert_eq!(resolved(None, None), fastest);
        // An existing one keeps its codec, so its re-runs write the same bytes.
        let rec = serde_json::json!({"jpeg_codec": "rust"});
        assert_eq!(
            resolved(None, Some(rec.clone())),
            (JpegCodec::Rust, serde_json::json!("rust"))
        );
        // A record without one predates the choice.
        assert_eq!(
            resolved(None, Some(serde_json::json!({}))).0,
            JpegCodec::Rust
        );
        // A given codec is kept, whatever the record (the record comparison refuses a change).
        assert_eq!(
            resolved(Some(JpegCodec::RustScaled), Some(rec)).0,
            JpegCodec::RustScaled
        );
    }
}
