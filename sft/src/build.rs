//! `cm3 sft build`: the paper's SFT task mixture (Table 5 templates, §E.1 up/down sampling) as a
//! prepared directory `cm3 train --init-from` reads like any other.
//!
//! The data must be the pretrained model's: the text and image tokenizers, the vocabulary
//! layout, the image normalisation (`cm3 ingest`'s settings) and the masking settings all come
//! from the pretrained run's dataset, never new ones. Each example is one rendered template:
//! its text and image documents separated by `<break>`, opened by `<eos>` like a pretraining
//! document, then transformed by "the same CM3 objective" (§4), with one addition of ours:
//!
//! - **The output as the masked span** (`output_rate`, default 0.5). Table 5 writes the text
//!   tasks' output before the image (`Question: {question} Answer: {answer}. <br> image`), so a
//!   left-to-right loss on the answer never sees the image; CM3 masking moves a span after
//!   `<infill>`, where it is predicted with the whole document (image included) in view. A
//!   random span is almost never exactly the answer, and the zero-shot and SFT prompts ask for
//!   exactly that (`Question: q Answer: <mask:0>. <break> image <infill> <mask:0>`), so this
//!   share of the examples masks exactly the output; the rest get the pretraining masking.
//!
//! The mixture is drawn per epoch (each task's examples repeated or thinned by its multiplier,
//! seeded by epoch), shuffled across tasks, and written epoch after epoch into
//! `packed/train` (`packed/val`: the examples whose image falls in `val_fraction`, by its
//! content hash, so an image's questions are never on both sides). `sft.json` records the
//! configuration, the sources, the multipliers and what each epoch drew.
//!
//! Built into a temporary directory beside the output and moved into place at the end; a
//! rebuild deletes only the files the previous `sft.json` lists.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use cm3_core::WorkerSpec;
use cm3_core::rng::SplitMix64;
use cm3_core::vocab::{self, VocabLayout};
use cm3_ingest::config::IngestConfig;
use cm3_ingest::normalize::normalize_image;
use cm3_pack::masking::{MaskPlan, Specials, apply, causal_mask, growth};
use cm3_pack::packing::Policy;
use cm3_pack::stage::{OBJECTIVE, OBJECTIVE_VERSION, PackConfig, SplitCounts, SplitWriter};
use cm3_tokenize::image::{ImageTokenizer, decode_rgb};
use cm3_tokenize::text::TextTokenizer;

use crate::cache::{ImageCache, Kind};
use crate::canny;
use crate::embedded::Extractor;
use crate::error::{Result, SftError, io};
use crate::mixing::{MixConfig, MixPlan, draw_task, plan};
use crate::sources::{ImageSource, SourceExample, read_task};
use crate::templates::{Example, ImageSlot, OutputSpan, Rendered, Task, choose_with, render};

/// `sft.json`'s format.
pub const SFT_FORMAT: &str = "cm3-sft/1";
pub const SFT_RECORD: &str = "sft.json";
const STREAM_SPLIT: u64 = 0x7366_745f_7370_6c74; // "sft_splt"
const STREAM_EXAMPLE: u64 = 0x7366_745f_6578_616d; // "sft_exam"
const STREAM_ORDER: u64 = 0x7366_745f_6f72_6472; // "sft_ordr"
/// Largest image file read.
const MAX_IMAGE_BYTES: u64 = 256 << 20;
const MAX_EPOCHS: u32 = 1_000;

/// How the SFT data is made. Defaults: one epoch of the mixture, half of the examples with their
/// output as the masked span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Draws of the mixture written one after the other (each re-drawn, §E.1).
    pub epochs: u32,
    pub seed: u64,
    /// Share of the examples whose text output (answer, caption) is the one masked span.
    pub output_rate: f64,
    /// Share of the images whose examples go to validation.
    pub val_fraction: f64,
    /// Tokens per sequence; 0: the pretrained dataset's.
    pub seq_len: usize,
    pub mix: MixConfig,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            seed: 0,
            output_rate: 0.5,
            val_fraction: 0.01,
            seq_len: 0,
            mix: MixConfig::default(),
        }
    }
}

impl SftConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SftError::Config(m));
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return bad(format!(
                "epochs must be in 1..={MAX_EPOCHS}, got {}",
                self.epochs
            ));
        }
        if !(0.0..=1.0).contains(&self.output_rate) {
            return bad(format!(
                "output_rate must be in [0, 1], got {}",
                self.output_rate
            ));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!(
                "val_fraction must be in [0, 1), got {}",
                self.val_fraction
            ));
        }
        if self.seq_len > cm3_pack::stage::MAX_SEQ_LEN {
            return bad(format!("seq_len {} is too long", self.seq_len));
        }
        self.mix.validate()
    }
}

#[derive(Debug, Clone)]
pub struct SftBuildOptions {
    /// The directory to write.
    pub out: PathBuf,
    /// The pretrained cm3 run, or its prepared dataset.
    pub from: PathBuf,
    /// Table 5 tasks and their sources.
    pub tasks: Vec<(Task, PathBuf)>,
    pub config: SftConfig,
    /// Replace an SFT directory built before (only the files its record lists).
    pub rebuild: bool,
    pub progress: bool,
    /// With more than one worker, this process only encodes its share of the images into
    /// `image-tokens.d/` (see [`SFT_WORKER_CACHES`]); a build without workers then writes the
    /// mixture from them.
    pub worker: WorkerSpec,
    /// Evaluation images kept out: folders of images, image files, or lists of SHA-256s of
    /// normalised images (see [`Exclusions`]).
    pub exclude: Vec<PathBuf>,
}

/// What a worker of a split build did.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerShare {
    pub worker_index: u32,
    pub num_workers: u32,
    /// The images of the mixture this worker owns, and the cache file it wrote.
    pub images: usize,
    pub cache: PathBuf,
}

/// One task of the mixture, as `sft.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task: Task,
    pub source: PathBuf,
    /// Examples in the source (its natural size).
    pub examples: u64,
    pub multiplier: f64,
    pub expected_per_epoch: f64,
    /// Examples drawn in each epoch.
    pub drawn: Vec<u64>,
    /// Examples written per template (Table 5's order).
    pub templates: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SftBuildReport {
    pub out: PathBuf,
    pub pretrained_dataset: PathBuf,
    pub tasks: Vec<TaskRecord>,
    pub train: SplitCounts,
    pub val: SplitCounts,
    /// Distinct images tokenised, and those rejected (their examples are left out).
    pub images: usize,
    pub images_rejected: usize,
    /// Images whose codes an earlier build of the directory had encoded (not encoded again).
    pub images_from_cache: usize,
    /// Examples whose output was the masked span.
    pub output_masked: u64,
    /// Images of the mixture whose picture is excluded (`--exclude`), and the draws left out
    /// for them.
    pub excluded_images: usize,
    pub excluded_examples: u64,
    /// Set for a worker of a split build, which writes no sequences (`train`/`val` empty).
    pub worker: Option<WorkerShare>,
    /// Worker caches merged into this build (the worker files are then removed).
    pub worker_caches_merged: usize,
    pub seconds: f64,
}

fn pretrained(path: &Path, reason: impl Into<String>) -> SftError {
    SftError::Pretrained {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The prepared dataset of `from`: a cm3 run's (its `config.json` names it) or `from` itself.
pub fn pretrained_dataset(from: &Path) -> Result<PathBuf> {
    let from = std::fs::canonicalize(from).map_err(io("resolving --from", from))?;
    let run_config = from.join("config.json");
    if let Ok(text) = std::fs::read_to_string(&run_config)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && v["format"] == "cm3-run/1"
    {
        let dataset = v["dataset"]
            .as_str()
            .ok_or_else(|| pretrained(&run_config, "a run record without its dataset"))?;
        return Ok(PathBuf::from(dataset));
    }
    if from.join("packed/meta.json").is_file() {
        return Ok(from);
    }
    Err(pretrained(
        &from,
        "neither a cm3 run (config.json) nor a prepared dataset (packed/meta.json)",
    ))
}

/// What the pretrained dataset fixes: vocabulary, sequence length, masking, image settings.
struct Pretrained {
    dataset: PathBuf,
    layout: VocabLayout,
    pack: PackConfig,
    ingest: IngestConfig,
}

fn read_pretrained(dataset: &Path) -> Result<Pretrained> {
    let meta_path = dataset.join("packed/meta.json");
    let text = std::fs::read_to_string(&meta_path).map_err(io("reading", &meta_path))?;
    let meta: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| pretrained(&meta_path, format!("not JSON: {e}")))?;
    if meta["objective_version"].as_u64() != Some(u64::from(OBJECTIVE_VERSION)) {
        return Err(pretrained(
            &meta_path,
            format!(
                "packed with another version of the objective; re-pack it (`cm3 pack {} \
                 --rebuild`) so that its settings are known",
                dataset.display()
            ),
        ));
    }
    let field = |name: &str| -> Result<serde_json::Value> {
        let v = meta.pointer(name).cloned().unwrap_or_default();
        if v.is_null() {
            return Err(pretrained(&meta_path, format!("no {name}")));
        }
        Ok(v)
    };
    let parse = |name: &str, v: serde_json::Value| {
        pretrained(&meta_path, format!("{name} not readable: {v}"))
    };
    let v = field("/vocab")?;
    let layout: VocabLayout = serde_json::from_value(v.clone()).map_err(|_| parse("vocab", v))?;
    let v = field("/config")?;
    let pack: PackConfig = serde_json::from_value(v.clone()).map_err(|_| parse("config", v))?;
    let v = field("/stages/ingest")?;
    let ingest: IngestConfig =
        serde_json::from_value(v.clone()).map_err(|_| parse("stages.ingest", v))?;
    Ok(Pretrained {
        dataset: dataset.to_path_buf(),
        layout,
        pack,
        ingest,
    })
}

/// A tokenizer file of the layout: recorded relative to the dataset, or absolute.
fn tokenizer_path(dataset: &Path, recorded: &str, fallback: &str) -> PathBuf {
    let p = dataset.join(recorded);
    if p.exists() {
        p
    } else {
        dataset.join(fallback)
    }
}

/// The pretrained dataset's tokenizers, checked against its layout by checksum.
fn open_tokenizers(
    p: &Pretrained,
    device: &Device,
) -> Result<(TextTokenizer, ImageTokenizer, VocabLayout)> {
    let text_path = tokenizer_path(
        &p.dataset,
        &p.layout.text.tokenizer.path,
        "tokenizer/text/tokenizer.json",
    );
    let text = TextTokenizer::load(&text_path)?;
    if text.sha256() != p.layout.text.tokenizer.sha256 {
        return Err(pretrained(
            &text_path,
            "is not the text tokenizer the dataset was made with (checksum differs)",
        ));
    }
    let image_path = cm3_tokenize::image::layout_image_tokenizer(&p.dataset, &p.layout)
        .ok_or_else(|| {
            pretrained(
                &p.dataset,
                format!(
                    "its image tokenizer ({}) is not found",
                    p.layout.image.tokenizer.path
                ),
            )
        })?;
    let image = ImageTokenizer::open(&image_path, None, device)?;
    if image.reference().sha256 != p.layout.image.tokenizer.sha256
        || image.grid() != p.layout.image.grid
    {
        return Err(pretrained(
            &image_path,
            "is not the image tokenizer the dataset was made with (checksum or grid differs)",
        ));
    }
    // The SFT directory's layout names the pretrained files where they are (same checksums).
    let mut layout = p.layout.clone();
    layout.text.tokenizer.path = text_path.display().to_string();
    layout.image.tokenizer.path = image_path.display().to_string();
    Ok((text, image, layout))
}

/// An image's tokens, the SHA-256 of its normalised bytes (what the leakage guard of
/// `cm3 eval` looks up; for computed edges, their picture's) and its key (the hash's first 64
/// bits).
struct ImageTokens {
    ids: Vec<u32>,
    sha256: String,
    key: u64,
}

/// Normalise (the pretrained ingest settings) and tokenise every image, in batches. A file that
/// cannot be read, decoded or normalised is left out (its examples with it) and counted.
/// What [`tokenise_images`] made: the tokens of each image, and what it left out.
struct Tokenised {
    ids: HashMap<ImageSource, ImageTokens>,
    /// Files that could not be read, decoded or normalised.
    rejected: usize,
    /// Images whose codes came from the cache.
    hits: usize,
    /// Images whose normalised picture is excluded (`--exclude`).
    excluded: std::collections::HashSet<ImageSource>,
}

fn tokenise_images(
    paths: &[ImageSource],
    ingest: &IngestConfig,
    tok: &ImageTokenizer,
    layout: &VocabLayout,
    cache: &mut ImageCache,
    exclude: &Exclusions,
    progress: bool,
) -> Result<Tokenised> {
    let side = tok.resolution();
    let bar = if progress {
        let b = ProgressBar::new(paths.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} images [{elapsed} < {eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut out = HashMap::with_capacity(paths.len());
    let (mut rejected, mut hits) = (0, 0);
    let mut excluded = std::collections::HashSet::new();
    for chunk in paths.chunks(16) {
        let mut rgb = Vec::with_capacity(chunk.len());
        let mut cached = Vec::new();
        for source in chunk {
            let kind = kind_of(source);
            // Normalised first (its hash keys the cache); decoded only when it must be encoded.
            let normal = match normalised(source.path(), ingest) {
                Ok(n) => n,
                Err(reason) => {
                    tracing::warn!(image = %source.path().display(), %reason, "image left out");
                    rejected += 1;
                    continue;
                }
            };
            if exclude.hashes.contains(&normal.sha256) {
                excluded.insert(source.clone());
                continue;
            }
            if let Some(codes) = cache.get(kind, &normal.sha256) {
                cached.push((source, codes.to_vec(), normal.sha256));
                continue;
            }
            match decode_rgb(&normal.bytes, side) {
                Ok(pixels) => {
                    let pixels = match source {
                        ImageSource::File(_) | ImageSource::Embedded { .. } => pixels,
                        ImageSource::CannyOf(_) => canny::edge_map_rgb(&pixels, side as usize),
                    };
                    rgb.push((source, pixels, normal.sha256));
                }
                Err(reason) => {
                    tracing::warn!(image = %source.origin(), %reason, "image left out");
                    rejected += 1;
                }
            }
        }
        let views: Vec<&[u8]> = rgb.iter().map(|(_, px, _)| px.as_slice()).collect();
        let codes = if views.is_empty() {
            Vec::new()
        } else {
            tok.encode_rgb(&views)?
        };
        let fresh = rgb.into_iter().zip(codes).map(|((source, _, sha), codes)| {
            cache.insert(kind_of(source), &sha, &codes);
            (source, codes, sha)
        });
        hits += cached.len();
        let all: Vec<_> = cached.into_iter().chain(fresh).collect();
        for (path, codes, sha256) in all {
            let ids = codes
                .iter()
                .map(|&c| layout.image_token(c))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let key = cm3_augment::bank::image_key(&sha256);
            out.insert(path.clone(), ImageTokens { ids, sha256, key });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Tokenised {
        ids: out,
        rejected,
        hits,
        excluded,
    })
}

/// Evaluation images kept out of the SFT data (`--exclude`): the SHA-256 of each picture
/// normalised with the pretrained dataset's ingest settings, as `cm3 eval`'s leakage guard
/// compares them.
#[derive(Debug, Default)]
pub struct Exclusions {
    hashes: std::collections::HashSet<String>,
    /// (what was given, images it named)
    sources: Vec<(PathBuf, usize)>,
}

/// Largest hash list read (`--exclude` file).
const MAX_EXCLUDE_LIST_BYTES: u64 = 1 << 30;

impl Exclusions {
    /// Each path: a folder of images (searched recursively), an image file, or a text file of
    /// SHA-256s of normalised images, one a line, first field (`images.tsv` of another SFT
    /// directory; `#` comments).
    fn read(paths: &[PathBuf], ingest: &IngestConfig) -> Result<Self> {
        let mut ex = Self::default();
        for path in paths {
            let before = ex.hashes.len();
            let is_image = |p: &Path| {
                p.extension()
                    .is_some_and(|e| cm3_ingest::source::is_image_ext(&e.to_string_lossy()))
            };
            let images = if path.is_dir() {
                cm3_ingest::source::folder::list_files(path)
                    .map_err(|e| exclude_error(path, e.to_string()))?
                    .into_iter()
                    .filter(|p| is_image(p))
                    .collect()
            } else if is_image(path) {
                vec![path.clone()]
            } else {
                ex.read_list(path)?;
                Vec::new()
            };
            for image in &images {
                match normalised(image, ingest) {
                    Ok(n) => {
                        ex.hashes.insert(n.sha256);
                    }
                    // Not readable as an image: no training image can have its bytes either.
                    Err(reason) => {
                        tracing::warn!(image = %image.display(), %reason, "excluded image unreadable")
                    }
                }
            }
            let named = if images.is_empty() {
                ex.hashes.len() - before
            } else {
                images.len()
            };
            if named == 0 {
                return Err(exclude_error(path, "names no image".into()));
            }
            ex.sources.push((path.clone(), named));
        }
        Ok(ex)
    }

    fn read_list(&mut self, path: &Path) -> Result<()> {
        let bytes = cm3_core::fsio::read_input(path, MAX_EXCLUDE_LIST_BYTES)
            .map_err(|e| exclude_error(path, e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            exclude_error(path, "neither an image, a folder nor a text list".into())
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or_default();
            if first.len() != 64 || !first.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(exclude_error(
                    path,
                    format!(
                        "line {}: {first:?} is not the SHA-256 of an image (64 hex digits)",
                        n + 1
                    ),
                ));
            }
            self.hashes.insert(first.to_ascii_lowercase());
        }
        Ok(())
    }
}

fn exclude_error(path: &Path, reason: String) -> SftError {
    SftError::Input {
        path: path.to_path_buf(),
        reason: format!("--exclude: {reason}"),
    }
}

/// The image file normalised with the pretrained dataset's ingest settings (bounded read).
fn normalised(
    path: &Path,
    ingest: &IngestConfig,
) -> std::result::Result<cm3_ingest::normalize::NormalImage, String> {
    let bytes = cm3_core::fsio::read_input(path, MAX_IMAGE_BYTES).map_err(|e| e.to_string())?;
    normalize_image(&bytes, ingest).map_err(|r| format!("{}: {}", r.reason.code(), r.detail))
}

/// The cache's name for how a source becomes a picture.
fn kind_of(source: &ImageSource) -> Kind {
    match source {
        ImageSource::File(_) | ImageSource::Embedded { .. } => Kind::File,
        ImageSource::CannyOf(_) => Kind::Canny,
    }
}

/// A stable 64-bit key of an example draw (FNV-1a: the task, the source id, the epoch and the
/// repeat).
fn example_key(task: Task, id: &str, epoch: u32, repeat: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(task.name().as_bytes());
    eat(id.as_bytes());
    eat(&epoch.to_le_bytes());
    eat(&repeat.to_le_bytes());
    h
}

/// The token range of an example's output in its document: a text output (the value alone) or
/// an output image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Output {
    range: std::ops::Range<usize>,
    text: bool,
}

/// The document of a rendered template: `<eos>` then its documents separated by `<break>`, and
/// the token range of its output. The text around the output and the output are tokenised
/// apart, as the prompts that ask for it are (`... Answer: <mask:0>.`).
fn document(
    r: &crate::templates::RenderedTemplate,
    text: &TextTokenizer,
    images: &BTreeMap<ImageSlot, &ImageTokens>,
    sp: &Specials,
) -> Result<(Vec<u32>, Option<Output>)> {
    let mut doc = vec![sp.eos];
    let mut output = None;
    for (i, seg) in r.segments.iter().enumerate() {
        if i > 0 {
            doc.push(sp.brk);
        }
        match seg {
            Rendered::Image(slot) => match images.get(slot) {
                Some(t) => {
                    if matches!(r.output, OutputSpan::Image { segment } if segment == i) {
                        output = Some(Output {
                            range: doc.len()..doc.len() + t.ids.len(),
                            text: false,
                        });
                    }
                    doc.extend_from_slice(&t.ids);
                }
                None => {
                    return Err(SftError::Config(format!(
                        "internal: no tokens for the {slot} image of a {} example",
                        r.task
                    )));
                }
            },
            Rendered::Text(s) => match &r.output {
                OutputSpan::Text { segment, range } if *segment == i => {
                    for (k, part) in [&s[..range.start], &s[range.clone()], &s[range.end..]]
                        .into_iter()
                        .enumerate()
                    {
                        let start = doc.len();
                        if !part.is_empty() {
                            doc.extend(text.encode(part)?);
                        }
                        if k == 1 && doc.len() > start {
                            output = Some(Output {
                                range: start..doc.len(),
                                text: true,
                            });
                        }
                    }
                }
                _ => doc.extend(text.encode(s)?),
            },
        }
    }
    Ok((doc, output))
}

/// The folder of the image-token caches workers of a split build write
/// (`worker-{index}-of-{count}.bin`, the format of [`crate::cache`]); the build without workers
/// merges them and removes the files it merged.
pub const SFT_WORKER_CACHES: &str = "image-tokens.d";

/// The SFT images: `sha256 <tab> path` per line, sorted (the leakage guard's list).
pub const SFT_IMAGES: &str = "images.tsv";

/// The image-token cache (see [`crate::cache`]).
pub const SFT_IMAGE_CACHE: &str = "image-tokens.bin";

/// The files an SFT directory holds, relative to it (what a rebuild may delete).
const WRITTEN: [&str; 13] = [
    "packed/train.bin",
    "packed/train.idx",
    "packed/train.boundaries.bin",
    "packed/train.outputs.bin",
    "packed/val.bin",
    "packed/val.idx",
    "packed/val.boundaries.bin",
    "packed/val.outputs.bin",
    "packed/meta.json",
    vocab::VOCAB,
    SFT_IMAGES,
    SFT_IMAGE_CACHE,
    SFT_RECORD,
];

/// Refuse an output that is not an SFT directory of ours, or one built before without
/// `rebuild`. Returns whether it exists.
fn check_output(out: &Path, rebuild: bool) -> Result<bool> {
    if !out.exists() {
        return Ok(false);
    }
    let record = out.join(SFT_RECORD);
    let ours = std::fs::read_to_string(&record)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["format"] == SFT_FORMAT);
    let output = |reason: &str| SftError::Output {
        path: out.to_path_buf(),
        reason: reason.into(),
    };
    if !ours {
        // Empty, or holding only the caches workers of a split build wrote.
        let only_workers = std::fs::read_dir(out)
            .map_err(io("reading", out))?
            .all(|e| e.is_ok_and(|e| e.file_name() == SFT_WORKER_CACHES));
        return if only_workers {
            Ok(true)
        } else {
            Err(output(
                "exists and is not an SFT directory cm3 built (no sft.json): choose another \
                 output",
            ))
        };
    }
    if !rebuild {
        return Err(output(
            "already holds SFT data: pass --rebuild to replace it, or choose another output",
        ));
    }
    Ok(true)
}

/// Move the finished files from `tmp` into `out`, replacing (only) what an earlier build wrote.
fn install(tmp: &Path, out: &Path, exists: bool) -> Result<()> {
    if !exists {
        return std::fs::rename(tmp, out).map_err(io("renaming", tmp));
    }
    for f in WRITTEN {
        let old = out.join(f);
        if old.exists() {
            std::fs::remove_file(&old).map_err(io("removing", &old))?;
        }
    }
    for f in WRITTEN {
        let new = tmp.join(f);
        if new.exists() {
            let dst = out.join(f);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            std::fs::rename(&new, &dst).map_err(io("renaming", &new))?;
        }
    }
    std::fs::remove_dir_all(tmp).map_err(io("removing", tmp))?;
    Ok(())
}

/// Removes its (temporary) directory when dropped, if it is still there.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One drawn example: (task, example, repeat).
type Pick = (usize, usize, u32);

/// Every epoch's draws of the mixture, as (task, example, repeat), shuffled across tasks, and
/// per task the examples each epoch drew.
fn draw_epochs(mix: &MixPlan, cfg: &SftConfig) -> (Vec<Vec<Pick>>, Vec<Vec<u64>>) {
    let mut epochs = Vec::new();
    let mut drawn = vec![Vec::new(); mix.tasks.len()];
    for epoch in 0..cfg.epochs {
        let mut picks = Vec::new();
        for (t, share) in mix.tasks.iter().enumerate() {
            let before = picks.len();
            for (i, n) in draw_task(share, u64::from(epoch), cfg.seed) {
                picks.extend((0..n).map(|r| (t, i as usize, r)));
            }
            drawn[t].push((picks.len() - before) as u64);
        }
        let mut rng = SplitMix64::for_pair(cfg.seed, STREAM_ORDER, u64::from(epoch));
        for i in (1..picks.len()).rev() {
            picks.swap(i, rng.below(i as u64 + 1) as usize);
        }
        epochs.push(picks);
    }
    (epochs, drawn)
}

/// A fresh temporary directory beside `out` (same file system, so it can be renamed onto it).
fn temp_dir(out: &Path) -> Result<PathBuf> {
    sibling(out, "sft-tmp")
}

/// `.<out's name>.<tag>-<pid>` beside `out`, removed first if a crashed run of this pid left it.
fn sibling(out: &Path, tag: &str) -> Result<PathBuf> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sft".into());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
    let tmp = parent.join(format!(".{name}.{tag}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
    }
    Ok(tmp)
}

/// What the sequences are made from.
struct Data<'a> {
    sources: &'a [(Task, PathBuf, Vec<SourceExample>)],
    image_ids: &'a HashMap<ImageSource, ImageTokens>,
    text: &'a TextTokenizer,
    sp: &'a Specials,
    pack: &'a PackConfig,
    mask_plan: MaskPlan,
    cfg: &'a SftConfig,
    /// Images of excluded pictures: their examples are left out.
    excluded: &'a std::collections::HashSet<ImageSource>,
}

/// What writing the sequences counted.
struct Written {
    counts: [SplitCounts; 2],
    /// Per task, examples written per template.
    templates: Vec<Vec<u64>>,
    output_masked: u64,
    /// Draws left out because an image is excluded (`--exclude`).
    excluded: u64,
}

/// One example's masked tokens and their output marks: its output as the one span (in
/// `output_rate` of the examples that have a text output), else the pretraining CM3 masking;
/// the counters of `c` updated.
fn masked_example(
    doc: &[u32],
    output: Option<&Output>,
    key: u64,
    d: &Data<'_>,
    c: &mut SplitCounts,
) -> Result<Masked> {
    let max_extra = growth(d.sp.sentinels.len());
    let mut rng = SplitMix64::for_pair(d.cfg.seed, STREAM_EXAMPLE, key);
    let mut marks = vec![0u8; doc.len()];
    if let Some(o) = output {
        marks[o.range.clone()].fill(1);
    }
    let (tokens, spans, output_span) = match output {
        Some(o) if o.text && rng.next_f64() < d.cfg.output_rate => {
            c.masked_spans += 1;
            c.text_spans += 1;
            let spans = vec![o.range.clone()];
            let mut m = apply(doc, &spans, d.sp);
            m.push(d.sp.eos);
            (m, spans, true)
        }
        _ => {
            let m = causal_mask(doc, d.sp, &d.mask_plan, max_extra, &mut rng);
            c.masked_spans += m.spans.len() as u64;
            for s in &m.spans {
                match s.modality {
                    cm3_pack::masking::Modality::Text => {
                        c.text_spans += 1;
                        c.whole_caption_spans += u64::from(s.whole);
                    }
                    cm3_pack::masking::Modality::Image => c.image_spans += 1,
                }
            }
            let spans = m.spans.iter().map(|s| s.range.clone()).collect();
            (m.tokens, spans, false)
        }
    };
    let marks = carry_marks(&marks, &spans);
    if marks.len() != tokens.len() {
        return Err(SftError::Config(format!(
            "internal: {} output marks for {} tokens",
            marks.len(),
            tokens.len()
        )));
    }
    Ok(Masked {
        tokens,
        marks,
        output_span,
    })
}

/// A masked example: its tokens, its output marks (see [`OutputMarks`]) and whether its output
/// was the masked span.
struct Masked {
    tokens: Vec<u32>,
    marks: Vec<u8>,
    output_span: bool,
}

/// The marks of a document's tokens moved as [`apply`] moves the tokens (`spans` sorted), with
/// the closing `<eos>` marked: sentinels and `<infill>` are not outputs, the example's end is.
fn carry_marks(marks: &[u8], spans: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(marks.len() + 2 * spans.len() + 2);
    if spans.is_empty() {
        out.extend_from_slice(marks);
    } else {
        let mut at = 0;
        for s in spans {
            out.extend_from_slice(&marks[at..s.start]);
            out.push(0);
            at = s.end;
        }
        out.extend_from_slice(&marks[at..]);
        out.push(0);
        for s in spans {
            out.push(0);
            out.extend_from_slice(&marks[s.clone()]);
        }
    }
    out.push(1);
    out
}

/// `packed/{split}.outputs.bin` (pack's `OUTPUT_MARKS`): the output marks of every token of the
/// split, cut into sequences exactly as the tokens are (a packer of the same length and policy
/// fed the same lengths), padding marked 0.
struct OutputMarks {
    packer: cm3_pack::packing::Packer,
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl OutputMarks {
    fn create(dir: &Path, split: &str, pack: &PackConfig) -> Result<Self> {
        let path = dir.join(format!("{split}.{}", cm3_pack::stage::OUTPUT_MARKS));
        let file = std::fs::File::create_new(&path).map_err(io("creating", &path))?;
        Ok(Self {
            packer: cm3_pack::packing::Packer::new(pack.seq_len, pack.policy, 0)?,
            file: std::io::BufWriter::new(file),
            path,
        })
    }

    fn write(&mut self, seqs: Vec<cm3_pack::packing::Sequence>) -> Result<()> {
        use std::io::Write;
        for s in seqs {
            let bytes: Vec<u8> = s.tokens.iter().map(|&m| m as u8).collect();
            self.file
                .write_all(&bytes)
                .map_err(io("writing", &self.path))?;
        }
        Ok(())
    }

    fn push(&mut self, marks: &[u8]) -> Result<()> {
        let wide: Vec<u32> = marks.iter().map(|&m| u32::from(m)).collect();
        let seqs = self.packer.push(&wide)?;
        self.write(seqs)
    }

    /// Pad the last sequence, as the token writer's `end_shard` does.
    fn end_shard(&mut self) -> Result<()> {
        use std::io::Write;
        let last: Vec<_> = self.packer.finish().into_iter().collect();
        self.write(last)?;
        self.file.flush().map_err(io("writing", &self.path))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(io("syncing", &self.path))
    }
}

/// Render, tokenise, mask and pack every draw, epoch after epoch, into `packed/{train,val}`.
fn write_sequences(packed: &Path, epochs: &[Vec<Pick>], d: &Data<'_>) -> Result<Written> {
    let (sp, pack, cfg) = (d.sp, d.pack, d.cfg);
    let mut writers = [
        SplitWriter::open(packed, "train", &SplitCounts::default(), pack, sp.pad)?,
        SplitWriter::open(packed, "val", &SplitCounts::default(), pack, sp.pad)?,
    ];
    let mut marks = [
        OutputMarks::create(packed, "train", pack)?,
        OutputMarks::create(packed, "val", pack)?,
    ];
    let mut w = Written {
        counts: [SplitCounts::default(), SplitCounts::default()],
        templates: d
            .sources
            .iter()
            .map(|(t, _, _)| vec![0; t.templates().len()])
            .collect(),
        output_masked: 0,
        excluded: 0,
    };
    let max_extra = growth(sp.sentinels.len());
    for (epoch, picks) in epochs.iter().enumerate() {
        for &(t, i, r) in picks {
            let (task, _, examples) = &d.sources[t];
            let src = &examples[i];
            if src.images.values().any(|s| d.excluded.contains(s)) {
                w.excluded += 1;
                continue;
            }
            // Every image of the example, by slot; an example missing one is left out.
            let Some(slots) = src
                .images
                .iter()
                .map(|(slot, source)| d.image_ids.get(source).map(|t| (*slot, t)))
                .collect::<Option<BTreeMap<ImageSlot, &ImageTokens>>>()
            else {
                continue;
            };
            let Some(img) = src.main_image().and_then(|m| d.image_ids.get(m)) else {
                continue;
            };
            let key = example_key(*task, &src.id, epoch as u32, r);
            let mut ex = Example::new();
            for slot in slots.keys() {
                ex = ex.image(*slot);
            }
            for (k, v) in &src.fields {
                ex = ex.field(k.clone(), v.clone());
            }
            let choice = choose_with(*task, &ex, key, cfg.seed)?;
            let rendered = render(*task, choice, &ex)?;
            let (doc, output) = document(&rendered, d.text, &slots, sp)?;
            let split = usize::from(
                SplitMix64::for_pair(cfg.seed, STREAM_SPLIT, img.key).next_f64() < cfg.val_fraction,
            );
            let c = &mut w.counts[split];
            if doc.len() + max_extra > pack.seq_len {
                c.skipped_too_long += 1;
                continue;
            }
            w.templates[t][choice] += 1;
            let m = masked_example(&doc, output.as_ref(), key, d, c)?;
            w.output_masked += u64::from(m.output_span);
            c.examples += 1;
            writers[split].push(&m.tokens, key, c)?;
            marks[split].push(&m.marks)?;
        }
        for (k, wr) in writers.iter_mut().enumerate() {
            wr.end_shard(&mut w.counts[k])?;
            marks[k].end_shard()?;
        }
    }
    Ok(w)
}

/// `images.tsv`: the pictures the model trains on, `sha256 <tab> where`, sorted (computed edge
/// maps are not pictures one evaluates on; an image stored in a table or tar is named by its
/// origin, `file#row/column` or `tar#member`).
fn write_listing(path: &Path, image_ids: &HashMap<ImageSource, ImageTokens>) -> Result<()> {
    let mut listed: Vec<(String, &ImageTokens)> = image_ids
        .iter()
        .filter(|(s, _)| !matches!(s, ImageSource::CannyOf(_)))
        .map(|(s, t)| (s.origin().into_owned(), t))
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let tsv: String = listed
        .iter()
        .map(|(p, t)| format!("{}\t{p}\n", t.sha256))
        .collect();
    cm3_core::fsio::write_atomic(path, tsv.as_bytes(), "sft")?;
    Ok(())
}

/// Build the SFT directory.
pub fn build(opts: &SftBuildOptions, device: &Device) -> Result<SftBuildReport> {
    let started = Instant::now();
    let cfg = &opts.config;
    cfg.validate()?;
    if opts.tasks.is_empty() {
        return Err(SftError::Config("no --task given".into()));
    }
    let split = opts.worker.num_workers > 1;
    let exists = if split {
        check_worker_output(&opts.out)?
    } else {
        check_output(&opts.out, opts.rebuild)?
    };
    let pre = read_pretrained(&pretrained_dataset(&opts.from)?)?;
    let exclusions = Exclusions::read(&opts.exclude, &pre.ingest)?;
    // Images stored in tables and tars are extracted here for the build and removed with it.
    let scratch = sibling(&opts.out, "sft-scratch")?;
    let _scratch = RemoveOnDrop(scratch.clone());
    let mut extractor = Extractor::new(scratch);
    let mut sources: Vec<(Task, PathBuf, Vec<SourceExample>)> = Vec::new();
    for (task, path) in &opts.tasks {
        let examples = read_task(*task, path, pre.ingest.image_size, &mut extractor)?;
        tracing::info!(task = %task, examples = examples.len(), "read");
        sources.push((*task, path.clone(), examples));
    }
    let sizes: Vec<(Task, u64)> = sources
        .iter()
        .map(|(t, _, e)| (*t, e.len() as u64))
        .collect();
    let mix = plan(&sizes, &cfg.mix)?;
    let (epochs, drawn) = draw_epochs(&mix, cfg);
    let mut images: Vec<ImageSource> = epochs
        .iter()
        .flatten()
        .flat_map(|&(t, i, _)| sources[t].2[i].images.values().cloned())
        .collect();
    images.sort();
    images.dedup();

    let (text, image_tok, layout) = open_tokenizers(&pre, device)?;
    // A rebuild's cache: the images an earlier build of this directory encoded.
    let per = (image_tok.grid() * image_tok.grid()) as usize;
    let tok_sha = image_tok.reference().sha256;
    let mut cache = if exists {
        ImageCache::load(&opts.out.join(SFT_IMAGE_CACHE), &tok_sha, per)
    } else {
        ImageCache::new(&tok_sha, per)
    };
    if split {
        return encode_share(opts, &pre, &images, &image_tok, cache, &exclusions, started);
    }
    // The caches workers of a split build wrote (see `encode_share`).
    let merged = worker_caches(&opts.out)?;
    for path in &merged {
        cache.absorb(ImageCache::load(path, &tok_sha, per));
    }
    let Tokenised {
        ids: image_ids,
        rejected: images_rejected,
        hits: images_from_cache,
        excluded: excluded_images,
    } = tokenise_images(
        &images,
        &pre.ingest,
        &image_tok,
        &pre.layout,
        &mut cache,
        &exclusions,
        opts.progress,
    )?;
    let sp = Specials::from_layout(&pre.layout)?;
    let pack = PackConfig {
        seq_len: if cfg.seq_len == 0 {
            pre.pack.seq_len
        } else {
            cfg.seq_len
        },
        policy: Policy::Stream,
        retrieval: false,
        image_first: 0.0,
        val_fraction: cfg.val_fraction,
        seed: cfg.seed,
        ..pre.pack.clone()
    };
    pack.validate()?;

    let tmp = temp_dir(&opts.out)?;
    // A build that fails leaves nothing behind (the output, if any, is untouched until the end).
    let _cleanup = RemoveOnDrop(tmp.clone());
    let packed = tmp.join("packed");
    std::fs::create_dir_all(&packed).map_err(io("creating", &packed))?;
    let data = Data {
        sources: &sources,
        image_ids: &image_ids,
        text: &text,
        sp: &sp,
        pack: &pack,
        mask_plan: pack.mask_plan(),
        cfg,
        excluded: &excluded_images,
    };
    let Written {
        counts,
        templates,
        output_masked,
        excluded: excluded_examples,
    } = write_sequences(&packed, &epochs, &data)?;
    let exclude_record: Vec<serde_json::Value> = exclusions
        .sources
        .iter()
        .map(|(p, n)| serde_json::json!({"path": p, "images": n}))
        .collect();

    let tasks: Vec<TaskRecord> = sources
        .iter()
        .zip(&mix.tasks)
        .enumerate()
        .map(|(t, ((task, source, examples), share))| TaskRecord {
            task: *task,
            source: source.clone(),
            examples: examples.len() as u64,
            multiplier: share.multiplier,
            expected_per_epoch: share.expected,
            drawn: drawn[t].clone(),
            templates: templates[t].clone(),
        })
        .collect();
    let record = serde_json::json!({
        "format": SFT_FORMAT,
        "from": std::fs::canonicalize(&opts.from).unwrap_or_else(|_| opts.from.clone()),
        "pretrained_dataset": pre.dataset,
        "config": cfg,
        "pack": pack,
        "tasks": tasks,
        "images": image_ids.len(),
        "images_rejected": images_rejected,
        "images_from_cache": images_from_cache,
        "output_masked": output_masked,
        "exclude": exclude_record,
        "excluded_images": excluded_images.len(),
        "excluded_examples": excluded_examples,
        "files": WRITTEN,
        "tool_version": env!("CARGO_PKG_VERSION"),
    });
    let meta = serde_json::json!({
        "format": "Megatron-LM MMIDIDX indexed dataset, one packed sequence per entry",
        "objective_version": OBJECTIVE_VERSION,
        "objective": OBJECTIVE,
        "seq_len": pack.seq_len,
        "token_dtype": "int32",
        "vocab": layout,
        "config": pack,
        "train": counts[0],
        "val": counts[1],
        "boundaries": "{split}.boundaries.bin: little-endian int64 triples (sequence, offset in \
                       the sequence, example key), one per example, in order",
        "outputs": "{split}.outputs.bin: one byte per token, 1 where the token is an example's \
                    output (answer, caption, output image) or its closing <eos> (the \
                    output-only loss, `loss = \"output_only\"` in cm3 train)",
        "stages": {"sft": record, "ingest": pre.ingest},
    });
    let json = |v: &serde_json::Value| {
        let mut b = serde_json::to_vec_pretty(v).map_err(|e| SftError::Config(e.to_string()))?;
        b.push(b'\n');
        Ok::<_, SftError>(b)
    };
    cm3_core::fsio::write_atomic(&packed.join("meta.json"), &json(&meta)?, "sft")?;
    let vocab_path = tmp.join(vocab::VOCAB);
    if let Some(dir) = vocab_path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    layout.save(&vocab_path)?;
    write_listing(&tmp.join(SFT_IMAGES), &image_ids)?;
    cache.write(&tmp.join(SFT_IMAGE_CACHE))?;
    cm3_core::fsio::write_atomic(&tmp.join(SFT_RECORD), &json(&record)?, "sft")?;
    install(&tmp, &opts.out, exists)?;
    // The workers' caches are in image-tokens.bin now.
    for path in &merged {
        std::fs::remove_file(path).map_err(io("removing", path))?;
    }
    let workers_dir = opts.out.join(SFT_WORKER_CACHES);
    if !merged.is_empty() && std::fs::read_dir(&workers_dir).is_ok_and(|mut d| d.next().is_none()) {
        std::fs::remove_dir(&workers_dir).map_err(io("removing", &workers_dir))?;
    }
    let out = std::fs::canonicalize(&opts.out).map_err(io("resolving", &opts.out))?;
    Ok(SftBuildReport {
        out,
        pretrained_dataset: pre.dataset,
        tasks,
        train: counts[0],
        val: counts[1],
        images: image_ids.len(),
        images_rejected,
        images_from_cache,
        output_masked,
        excluded_images: excluded_images.len(),
        excluded_examples,
        worker: None,
        worker_caches_merged: merged.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The name a split build's workers own an image by (`WorkerSpec::owns` hashes it): how its
/// picture is made and where it is (its path, or its origin in a table or tar), so that shares
/// do not move when tasks or images are added.
fn worker_name(source: &ImageSource) -> String {
    format!("{}:{}", kind_of(source) as u8, source.origin())
}

/// A worker's output folder: absent, empty, holding worker caches only, or an SFT directory.
fn check_worker_output(out: &Path) -> Result<bool> {
    if !out.exists() {
        return Ok(false);
    }
    let ours = out.join(SFT_RECORD).is_file();
    let only_workers = std::fs::read_dir(out)
        .map_err(io("reading", out))?
        .all(|e| e.is_ok_and(|e| e.file_name() == SFT_WORKER_CACHES));
    if ours || only_workers {
        Ok(true)
    } else {
        Err(SftError::Output {
            path: out.to_path_buf(),
            reason: "exists and is not an SFT directory cm3 built (no sft.json): choose \
                     another output"
                .into(),
        })
    }
}

/// The worker cache files in `out/image-tokens.d` (files of the cache format named
/// `worker-*-of-*.bin`; anything else there is left alone).
fn worker_caches(out: &Path) -> Result<Vec<PathBuf>> {
    let dir = out.join(SFT_WORKER_CACHES);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for e in entries {
        let e = e.map_err(io("reading", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with("worker-")
            && name.ends_with(".bin")
            && name.contains("-of-")
            && path.is_file()
            && ImageCache::is_cache_file(&path)
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// A worker of a split build: encode the images of the mixture this worker owns (resuming from
/// its own earlier cache and the directory's) into `image-tokens.d/worker-{i}-of-{n}.bin`.
fn encode_share(
    opts: &SftBuildOptions,
    pre: &Pretrained,
    images: &[ImageSource],
    tok: &ImageTokenizer,
    mut cache: ImageCache,
    exclusions: &Exclusions,
    started: Instant,
) -> Result<SftBuildReport> {
    let w = opts.worker;
    let mine: Vec<ImageSource> = images
        .iter()
        .filter(|s| w.owns(&worker_name(s)))
        .cloned()
        .collect();
    let dir = opts.out.join(SFT_WORKER_CACHES);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let path = dir.join(format!(
        "worker-{}-of-{}.bin",
        w.worker_index, w.num_workers
    ));
    let tok_sha = tok.reference().sha256;
    let per = (tok.grid() * tok.grid()) as usize;
    cache.absorb(ImageCache::load(&path, &tok_sha, per));
    let Tokenised {
        ids,
        rejected,
        hits,
        excluded,
    } = tokenise_images(
        &mine,
        &pre.ingest,
        tok,
        &pre.layout,
        &mut cache,
        exclusions,
        opts.progress,
    )?;
    let share = cache.subset(ids.iter().map(|(s, t)| (kind_of(s), t.sha256.as_str())));
    share.write(&path)?;
    tracing::info!(worker = w.worker_index, of = w.num_workers, images = mine.len(), cache = %path.display(), "worker share encoded");
    Ok(SftBuildReport {
        out: opts.out.clone(),
        pretrained_dataset: pre.dataset.clone(),
        tasks: Vec::new(),
        train: SplitCounts::default(),
        val: SplitCounts::default(),
        images: ids.len(),
        images_rejected: rejected,
        images_from_cache: hits,
        output_masked: 0,
        excluded_images: excluded.len(),
        excluded_examples: 0,
        worker: Some(WorkerShare {
            worker_index: w.worker_index,
            num_workers: w.num_workers,
            images: mine.len(),
            cache: path,
        }),
        worker_caches_merged: 0,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_keys_differ_by_every_part() {
        let k = example_key(Task::Vqa2, "7", 0, 0);
        assert_eq!(k, example_key(Task::Vqa2, "7", 0, 0));
        for other in [
            example_key(Task::Okvqa, "7", 0, 0),
            example_key(Task::Vqa2, "8", 0, 0),
            example_key(Task::Vqa2, "7", 1, 0),
            example_key(Task::Vqa2, "7", 0, 1),
        ] {
            assert_ne!(k, other);
        }
    }

    #[test]
    fn output_marks_move_with_their_tokens() {
        let sp = Specials {
            eos: 1,
            brk: 2,
            infill: 4,
            pad: 0,
            sentinels: vec![5, 6, 7],
            image_offset: 200,
        };
        // <eos> a b c <break> I1 I2, the output "b c" (1..3 of the text after <eos>).
        let doc = [sp.eos, 100, 101, 102, sp.brk, 200, 201];
        let mut marks = vec![0u8; doc.len()];
        marks[2..4].fill(1);
        let (output, one, two) = (2..4, 3..4, [1..2, 5..7]);
        let cases: [&[std::ops::Range<usize>]; 4] = [
            &[],
            std::slice::from_ref(&output),
            &two,
            std::slice::from_ref(&one),
        ];
        for spans in cases {
            let mut tokens = apply(&doc, spans, &sp);
            tokens.push(sp.eos);
            let carried = carry_marks(&marks, spans);
            assert_eq!(carried.len(), tokens.len(), "{spans:?}");
            let out: Vec<u32> = tokens
                .iter()
                .zip(&carried)
                .filter(|&(_, &m)| m == 1)
                .map(|(&t, _)| t)
                .collect();
            // The output's tokens wherever they went, then the closing <eos>.
            let mut want: Vec<u32> = tokens[..tokens.len() - 1]
                .iter()
                .copied()
                .filter(|&t| t == 101 || t == 102)
                .collect();
            want.push(sp.eos);
            assert_eq!(out, want, "{spans:?}");
        }
    }

    #[test]
    fn config_is_validated() {
        assert!(SftConfig::default().validate().is_ok());
        for bad in [
            SftConfig {
                epochs: 0,
                ..SftConfig::default()
            },
            SftConfig {
                output_rate: 1.5,
                ..SftConfig::default()
            },
            SftConfig {
                val_fraction: 1.0,
                ..SftConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
