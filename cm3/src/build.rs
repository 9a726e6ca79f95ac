//! `cm3 build <dataset> --input ...`: every stage in order (ingest → embed → index → augment →
//! tokenizers → tokenize → pack), each incremental, from one settings file or a preset.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use cm3_augment::{AugmentConfig, AugmentOptions};
use cm3_core::fsio::write_atomic;
use cm3_core::{DatasetDir, WorkerSpec};
use cm3_embed::hub::Hub;
use cm3_embed::stage::{EmbedFileConfig, EmbedOptions};
use cm3_index::stage::{BuildOptions, IndexConfig};
use cm3_ingest::{IngestConfig, IngestOptions, InputFormat};
use cm3_model::vq::VqTrainConfig;
use cm3_pack::stage::{PackConfig, PackOptions};
use cm3_tokenize::{
    IMAGE_TOKENIZER, TEXT_TOKENIZER, TextTokenizerConfig, TokenizeConfig, TokenizeOptions,
    TrainImageOptions, TrainTextOptions,
};

/// Every stage's settings in one file (TOML sections named after the stages). Fields left out
/// keep the preset's values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BuildConfig {
    pub ingest: IngestConfig,
    pub embed: EmbedFileConfig,
    pub index: IndexConfig,
    pub augment: AugmentConfig,
    /// The text BPE, trained on the captions when the dataset has none yet.
    pub train_text: TextTokenizerConfig,
    /// Our VQ image tokenizer, trained on the images when the dataset has none yet and
    /// `tokenize.image_tokenizer` names no other.
    pub train_image: VqTrainConfig,
    pub tokenize: TokenizeConfig,
    pub pack: PackConfig,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Preset {
    /// The paper's settings: CLIP ViT-B/32 from the Hugging Face hub, a 56,320-entry text BPE,
    /// 256-pixel images, 4,096-token sequences.
    Paper,
    /// Small offline models built into cm3 (a random-weight CLIP-shaped encoder pair), a
    /// 2,048-entry text BPE, a small image tokenizer trained on the spot (400 steps), 128-pixel
    /// images (256 image tokens) and 1,024-token sequences: the whole pipeline in a few minutes
    /// on a laptop, without downloads. Its retrieval ranks by random projections, not by CLIP's
    /// judgement.
    Demo,
}

/// Where the demo preset writes its built-in encoders, inside the dataset.
const DEMO_MODELS: &str = "models/demo-clip";
const DEMO_VISION_ONNX: &[u8] =
    include_bytes!("../../embed/tests/fixtures/tiny_clip/vision/model.onnx");
const DEMO_VISION_PREPROCESSOR: &[u8] =
    include_bytes!("../../embed/tests/fixtures/tiny_clip/vision/preprocessor_config.json");
const DEMO_TEXT_ONNX: &[u8] =
    include_bytes!("../../embed/tests/fixtures/tiny_clip/text/model.onnx");

impl BuildConfig {
    fn preset(preset: Preset, dataset: &Path) -> Self {
        let mut c = Self::default();
        if preset == Preset::Demo {
            c.ingest.image_size = 128;
            let models = dataset.join(DEMO_MODELS);
            c.embed.image_model = models.join("vision").display().to_string();
            c.embed.text_model = models.join("text").display().to_string();
            c.train_text.vocab_size = 2048;
            c.train_image.steps = 400;
            c.train_image.held_out = 8;
            c.pack.seq_len = 1024;
        }
        c
    }

    /// The preset, overridden field by field by a TOML or JSON file.
    pub(crate) fn load(preset: Preset, dataset: &Path, file: Option<&Path>) -> Result<Self> {
        let base = Self::preset(preset, dataset);
        match file {
            Some(file) => crate::overlay(&base, crate::read_settings(file)?, file),
            None => Ok(base),
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    /// The dataset directory to create or extend.
    pub dataset: PathBuf,
    /// New sources to ingest first (anything `cm3 ingest` reads); none: work on the pairs already
    /// ingested (e.g. to finish an interrupted build).
    #[arg(long, short, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Settings to start from.
    #[arg(long, value_enum, default_value = "paper")]
    pub preset: Preset,
    /// Every stage's settings (TOML or JSON: sections ingest, embed, index, augment, train_text,
    /// train_image, tokenize, pack); fields given override the preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Folder that COCO file names / manifest image paths are relative to.
    #[arg(long)]
    pub image_root: Option<PathBuf>,
    /// Run only these stages (comma-separated: ingest, embed, index, augment, train-text,
    /// train-image, tokenize, pack), with the same settings, e.g. to re-run one stage or to
    /// measure each stage in its own process. The stages before them must be done.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Print the resolved settings as TOML and stop.
    #[arg(long)]
    pub print_config: bool,
    #[arg(long)]
    pub no_progress: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One stage of the build, as the summary shows it.
#[derive(Debug, Serialize)]
struct StageSummary {
    stage: &'static str,
    /// What the stage did in a few words.
    summary: String,
    seconds: f64,
    /// The process's peak resident memory during the stage (Linux; absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_mib: Option<f64>,
    report: Value,
}

/// The resolved settings, saved beside the outputs.
pub(crate) const BUILD_CONFIG: &str = "build.json";

pub(crate) fn run(a: BuildArgs) -> Result<()> {
    let cfg = BuildConfig::load(a.preset, &a.dataset, a.config.as_deref())?;
    if a.print_config {
        print!("{}", toml::to_string(&cfg)?);
        return Ok(());
    }
    let progress = !a.no_progress && !a.json;
    let started = Instant::now();
    let ds = &a.dataset;
    let stages = [
        "ingest",
        "embed",
        "index",
        "augment",
        "train-text",
        "train-image",
        "tokenize",
        "pack",
    ];
    if let Some(bad) = a.only.iter().find(|s| !stages.contains(&s.as_str())) {
        bail!(
            "--only {bad}: not a stage of the build (stages: {})",
            stages.join(", ")
        );
    }
    if !a.input.is_empty() && !a.only.is_empty() && !a.only.iter().any(|s| s == "ingest") {
        bail!("--input is read by the ingest stage, which --only leaves out; add ingest to --only");
    }
    let mut done: Vec<StageSummary> = Vec::new();
    let mut step =
        |name: &'static str, f: &mut dyn FnMut() -> Result<(String, Value)>| -> Result<()> {
            if !a.only.is_empty() && !a.only.iter().any(|s| s == name) {
                return Ok(());
            }
            let i = stages.iter().position(|s| *s == name).unwrap_or(0) + 1;
            if !a.json {
                eprintln!("── [{i}/{}] {name}", stages.len());
            }
            let measured = crate::peak_rss::reset();
            let t = Instant::now();
            let (summary, report) = f().with_context(|| format!("build stage {name}"))?;
            let seconds = t.elapsed().as_secs_f64();
            let peak_rss_mib = measured
                .then(crate::peak_rss::peak_bytes)
                .flatten()
                .map(|b| b as f64 / f64::from(1u32 << 20));
            if !a.json {
                match peak_rss_mib {
                    Some(m) => eprintln!("   {summary} ({seconds:.1} s, peak {m:.0} MiB)"),
                    None => eprintln!("   {summary} ({seconds:.1} s)"),
                }
            }
            done.push(StageSummary {
                stage: name,
                summary,
                seconds,
                peak_rss_mib,
                report,
            });
            Ok(())
        };

    step("ingest", &mut || {
        if a.input.is_empty() {
            let has_pairs = DatasetDir::open(ds)
                .and_then(|d| d.load_manifest())
                .is_ok_and(|m| m.stages.get("ingest").is_some_and(|s| !s.shards.is_empty()));
            if !has_pairs {
                bail!(
                    "{} has no ingested pairs: give the sources with --input",
                    ds.display()
                );
            }
            return Ok(("no new sources".into(), Value::Null));
        }
        let r = cm3_ingest::run(
            &IngestOptions {
                inputs: a.input.clone(),
                format: InputFormat::Auto,
                image_root: a.image_root.clone(),
                out: ds.clone(),
                worker: WorkerSpec::default(),
                threads: 0,
                strict: false,
                rebuild: false,
                progress,
            },
            &cfg.ingest,
        )?;
        Ok((
            format!(
                "{} pairs and {} rejects in {} new shard(s); {} pairs in all",
                r.rows, r.rejects, r.shards_written, r.total_rows
            ),
            serde_json::to_value(&r)?,
        ))
    })?;
    // The dataset exists from here on: save the settings beside it before any model is written.
    let ds_dir = DatasetDir::open(ds)?;
    write_atomic(
        &ds_dir.path(BUILD_CONFIG),
        serde_json::to_string_pretty(
            &json!({ "preset": format!("{:?}", a.preset).to_lowercase(), "config": cfg }),
        )?
        .as_bytes(),
        "build",
    )?;
    if a.preset == Preset::Demo {
        write_demo_models(ds)?;
    }

    step("embed", &mut || {
        let hub = Hub::from_env();
        let r = cm3_embed::stage::run(&EmbedOptions {
            dataset: ds.clone(),
            image_model: hub.resolve(&cfg.embed.image_model)?,
            text_model: hub.resolve(&cfg.embed.text_model)?,
            batch_size: cfg.embed.batch_size,
            session_threads: cfg.embed.session_threads,
            preprocess_threads: cfg.embed.preprocess_threads,
            worker: WorkerSpec::default(),
            rebuild: false,
        })?;
        Ok((
            format!(
                "{} pairs in {} new shard(s), {} rejected",
                r.rows, r.shards_written, r.rejects
            ),
            serde_json::to_value(&r)?,
        ))
    })?;

    step("index", &mut || {
        let r = cm3_index::stage::build(&BuildOptions {
            dataset: ds.clone(),
            config: cfg.index.clone(),
            rebuild: false,
            strict: false,
            progress,
        })?;
        Ok((
            format!(
                "{} vectors added; {} ({}) holds {}",
                r.added_rows,
                r.index_dir.display(),
                r.spec,
                r.total_rows
            ),
            json!({
                "index_dir": r.index_dir, "added_rows": r.added_rows, "total_rows": r.total_rows,
                "added_shards": r.added_shards, "generation": r.generation, "seconds": r.seconds,
            }),
        ))
    })?;

    step("augment", &mut || {
        let r = cm3_augment::stage::run(&AugmentOptions {
            dataset: ds.clone(),
            config: cfg.augment.clone(),
            bank: None,
            text_model: None,
            exclude: Vec::new(),
            batch_size: 256,
            resident_bank: false,
            session_threads: cfg.embed.session_threads,
            worker: WorkerSpec::default(),
            rebuild: false,
            progress,
        })?;
        Ok((
            format!(
                "{} pairs in {} new shard(s): {} documents retrieved, {} sampled, {} pairs short",
                r.rows, r.shards_written, r.neighbours, r.sampled, r.pairs_short
            ),
            serde_json::to_value(&r)?,
        ))
    })?;

    step("train-text", &mut || {
        let have = ds_dir.path(TEXT_TOKENIZER).exists();
        if cfg.tokenize.text_tokenizer.is_some() || have {
            return Ok((
                "kept the existing text tokenizer (tokens stay valid)".into(),
                Value::Null,
            ));
        }
        let r = cm3_tokenize::train_text(
            ds,
            &cfg.train_text,
            &TrainTextOptions {
                inputs: Vec::new(),
                overwrite: false,
            },
        )?;
        Ok((
            format!(
                "{} entries (asked {}) from {} captions",
                r.report.vocab_size, r.report.vocab_size_asked, r.report.texts
            ),
            serde_json::to_value(&r)?,
        ))
    })?;

    step("train-image", &mut || {
        let have = ds_dir
            .path(IMAGE_TOKENIZER)
            .join("model.safetensors")
            .exists();
        if cfg.tokenize.image_tokenizer.is_some() || have {
            return Ok((
                "kept the existing image tokenizer (tokens stay valid)".into(),
                Value::Null,
            ));
        }
        if a.preset == Preset::Paper {
            tracing::warn!(
                "training a small image tokenizer of our own; the paper's is taming's \
                 vqgan_gumbel_f8 (8,192 codes): set tokenize.image_tokenizer to its release folder"
            );
        }
        let r = cm3_tokenize::train_image(
            ds,
            &cfg.train_image,
            &TrainImageOptions {
                out: None,
                overwrite: false,
                progress,
                device: None,
            },
        )?;
        Ok((
            format!(
                "{} steps; held-out PSNR {:.1} dB, {} of {} codes used",
                r.steps, r.psnr_db, r.codes_used, r.codes
            ),
            serde_json::to_value(&r)?,
        ))
    })?;

    step("tokenize", &mut || {
        let r = cm3_tokenize::stage::run(
            &TokenizeOptions {
                dataset: ds.clone(),
                config: cfg.tokenize.clone(),
                batch_size: 8,
                worker: WorkerSpec::default(),
                rebuild: false,
                progress,
            },
            &Device::flex(),
        )?;
        Ok((
            format!(
                "{} pairs in {} new shard(s), {} rejected: {} text + {} image tokens; vocabulary \
                 of {}",
                r.rows, r.shards_written, r.rejects, r.text_tokens, r.image_tokens, r.vocab_size
            ),
            serde_json::to_value(&r)?,
        ))
    })?;

    step("pack", &mut || {
        let r = cm3_pack::stage::run(&PackOptions {
            dataset: ds.clone(),
            config: cfg.pack.clone(),
            rebuild: false,
        })?;
        Ok((
            format!(
                "{} new shard(s): train {} sequences ({} examples), val {} sequences ({} \
                 examples); padding {:.1}%",
                r.shards_written,
                r.train.sequences,
                r.train.examples,
                r.val.sequences,
                r.val.examples,
                100.0 * r.padding_fraction
            ),
            serde_json::to_value(&r)?,
        ))
    })?;

    let seconds = started.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "dataset": ds, "seconds": seconds, "stages": done })
            )?
        );
        return Ok(());
    }
    println!("build of {} done in {seconds:.1} s", ds.display());
    for s in &done {
        let peak = s
            .peak_rss_mib
            .map_or_else(String::new, |m| format!(" {m:>6.0} MiB"));
        println!(
            "  {:<12} {:>7.1} s{peak}  {}",
            s.stage, s.seconds, s.summary
        );
    }
    println!("outputs:");
    for (path, what) in [
        (
            "pairs/",
            "the normalised caption-image pairs (Parquet shards), rejects/ beside them",
        ),
        (
            "embeddings/",
            "CLIP image, text and document vectors per shard",
        ),
        (
            "index/doc/",
            "the maximum-inner-product memory bank over the document vectors",
        ),
        (
            "neighbors/",
            "each pair's retrieved documents with scores and how they were found",
        ),
        (
            "tokenizer/",
            "the text BPE, the image tokenizer and vocab.json (the id layout)",
        ),
        ("tokens/", "every pair as text ids and image ids"),
        (
            "packed/",
            "train/val sequences (Megatron-LM .bin/.idx) and meta.json: what `cm3 train` reads",
        ),
        (
            "manifest.json",
            "every stage's shards, settings and counts (`cm3 inspect`)",
        ),
        (BUILD_CONFIG, "the settings this build used"),
    ] {
        println!("  {:<14} {what}", path);
    }
    Ok(())
}

/// Write the demo encoders into the dataset (only when missing or different: `cm3 embed`
/// records their checksums).
fn write_demo_models(ds: &Path) -> Result<()> {
    let dir = ds.join(DEMO_MODELS);
    for (rel, bytes) in [
        ("vision/model.onnx", DEMO_VISION_ONNX),
        ("vision/preprocessor_config.json", DEMO_VISION_PREPROCESSOR),
        ("text/model.onnx", DEMO_TEXT_ONNX),
    ] {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|b| b == bytes) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_atomic(&path, bytes, "demo")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_only_the_fields_it_names() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("b.toml");
        std::fs::write(
            &file,
            "[pack]\nseq_len = 2048\n[index.index]\nkind = \"hnsw\"\nm = 16\nef_construction = 100\n",
        )?;
        let c = BuildConfig::load(Preset::Demo, Path::new("ds"), Some(&file))?;
        assert_eq!(c.pack.seq_len, 2048);
        // The preset's other choices survive.
        assert_eq!(c.ingest.image_size, 128);
        assert_eq!(c.train_text.vocab_size, 2048);
        assert_eq!(c.pack.spans_mean, PackConfig::default().spans_mean);
        assert_eq!(
            c.index.index,
            cm3_index::IndexSpec::Hnsw {
                m: 16,
                ef_construction: 100
            }
        );
        Ok(())
    }

    #[test]
    fn unknown_fields_are_refused_with_the_file_named() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("b.toml");
        std::fs::write(&file, "[pack]\nseq_length = 2048\n")?;
        let e = BuildConfig::load(Preset::Paper, Path::new("ds"), Some(&file))
            .err()
            .context("an unknown field was accepted")?;
        let msg = format!("{e:#}");
        assert!(
            msg.contains("b.toml") && msg.contains("seq_length"),
            "{msg}"
        );
        Ok(())
    }

    #[test]
    fn paper_preset_is_every_stage_default() -> Result<()> {
        let c = BuildConfig::load(Preset::Paper, Path::new("ds"), None)?;
        assert_eq!(c, BuildConfig::default());
        assert_eq!(c.pack.seq_len, 4096);
        assert_eq!(c.augment.relevance, 0.9);
        assert_eq!(c.augment.query_dropout, 0.2);
        Ok(())
    }
}
