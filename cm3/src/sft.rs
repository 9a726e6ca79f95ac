//! `cm3 sft build`: the paper's SFT task mixture as a prepared directory (Table 5 templates,
//! §E.1 mixing), in the pretrained run's vocabulary.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use cm3_sft::{SftBuildOptions, SftConfig, Task};

#[derive(Subcommand, Debug)]
pub(crate) enum SftCommand {
    /// Read task sources, render them in Table 5's templates, mix them (§E.1's 3/0.3 up/down
    /// sampling) and write a prepared directory for `cm3 train --init-from`.
    Build(Box<BuildArgs>),
}

#[derive(Args, Debug)]
pub(crate) struct BuildArgs {
    /// The directory to write (new, or one `cm3 sft build` wrote, with --rebuild).
    pub out: PathBuf,
    /// The pretrained run (or its prepared dataset): its tokenizers, vocabulary, image
    /// settings and masking settings are used, never new ones.
    #[arg(long, value_name = "RUN")]
    pub from: PathBuf,
    /// A Table 5 task and its source, NAME=PATH (repeatable): coco, flickr30k (a COCO-format
    /// captions folder, a folder of images with .txt captions, or any `cm3 ingest` source: a
    /// WebDataset tar or folder of tars, a JSONL/CSV/Parquet table), vqa2, okvqa (VQA v2
    /// questions.json + annotations.json + images/), vizwiz, instructpix2pix (metadata.jsonl, a
    /// Parquet table, or WebDataset tars), edge, seg, hed, pose, depth, norm, scribble
    /// (metadata.jsonl of feature image, caption, image; edge also a captions folder, the
    /// edges computed by cm3), detection (COCO instances + captions), image-paragraph
    /// (paragraphs_v1.json), localized-narratives (the release's JSONL), scienceqa
    /// (problems.json + images/), ocr (metadata.jsonl of image and text).
    #[arg(long = "task", value_name = "NAME=PATH", required = true)]
    pub tasks: Vec<String>,
    /// Settings file (TOML or JSON): epochs, seed, output_rate, val_fraction, seq_len, and a
    /// [mix] table (balance, max_up, min_down).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// flex (CPU), wgpu or cuda (builds with those features), as `cm3 train --backend`.
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: crate::train::BackendArg,
    /// Replace SFT data built before in OUT (only the files its sft.json lists).
    #[arg(long)]
    pub rebuild: bool,
    /// Evaluation images to keep out (repeatable): a folder of images, an image, or a list of
    /// SHA-256s of normalised images (one a line, e.g. another SFT directory's images.tsv).
    /// Every example holding one of them is left out, and counted.
    #[arg(long, value_name = "PATH")]
    pub exclude: Vec<PathBuf>,
    /// A split build: with --num-workers N, each worker encodes its share of the images into
    /// OUT/image-tokens.d/ (the VQ encoder is most of the time); then one run without workers
    /// writes the mixture from those codes.
    #[command(flatten)]
    pub workers: crate::WorkerArgs,
    #[arg(long)]
    pub no_progress: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(command: SftCommand) -> Result<()> {
    match command {
        SftCommand::Build(a) => build(*a),
    }
}

fn parse_task(spec: &str) -> Result<(Task, PathBuf)> {
    let Some((name, path)) = spec.split_once('=') else {
        bail!("--task {spec}: expected NAME=PATH (e.g. vqa2=/data/vqa)");
    };
    let task: Task = name
        .trim()
        .parse()
        .with_context(|| format!("--task {spec}"))?;
    if path.is_empty() {
        bail!("--task {spec}: no path after '='");
    }
    Ok((task, PathBuf::from(path)))
}

fn build(a: BuildArgs) -> Result<()> {
    let config = match &a.config {
        Some(path) => crate::overlay(&SftConfig::default(), crate::read_settings(path)?, path)?,
        None => SftConfig::default(),
    };
    let tasks = a
        .tasks
        .iter()
        .map(|t| parse_task(t))
        .collect::<Result<Vec<_>>>()?;
    let opts = SftBuildOptions {
        out: a.out.clone(),
        from: a.from.clone(),
        tasks,
        config,
        rebuild: a.rebuild,
        progress: !a.no_progress && !a.json,
        worker: cm3_core::WorkerSpec::new(a.workers.num_workers, a.workers.worker_index)?,
        exclude: a.exclude.clone(),
    };
    let r = cm3_sft::build(&opts, &cm3_train::Backend::from(a.backend).device()?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if let Some(w) = &r.worker {
        println!(
            "sft build, worker {} of {}: {} of the mixture's images are this worker's; {} \
             tokenised ({} of them from earlier caches, {} left out) into {} in {:.1} s. When every \
             worker is done, run the same command without --num-workers.",
            w.worker_index,
            w.num_workers,
            w.images,
            r.images,
            r.images_from_cache,
            r.images_rejected,
            w.cache.display(),
            r.seconds
        );
        return Ok(());
    }
    println!(
        "sft build: {} train / {} validation examples in {} + {} sequences ({} images, {} left \
         out; {} answers as the masked span; {} examples of {} excluded images left out) in \
         {:.1} s",
        r.train.examples,
        r.val.examples,
        r.train.sequences,
        r.val.sequences,
        r.images,
        r.images_rejected,
        r.output_masked,
        r.excluded_examples,
        r.excluded_images,
        r.seconds
    );
    for t in &r.tasks {
        println!(
            "  {:<22} {:>9} examples × {:.3} → {:?} per epoch; templates {:?}",
            t.task.name(),
            t.examples,
            t.multiplier,
            t.drawn,
            t.templates
        );
    }
    println!(
        "  {} (train with `cm3 train --init-from <pretrained run> --data {}`)",
        r.out.display(),
        r.out.display()
    );
    Ok(())
}
