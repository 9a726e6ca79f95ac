//! The `cm3` command line.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use cm3_core::{DatasetDir, Manifest, WorkerSpec};
use cm3_ingest::config::{
    CocoPairs, InvalidUtf8, JpegCodec, JpegSubsampling, OutputImageFormat, ResizeFilter,
};
use cm3_ingest::{IngestConfig, IngestOptions, InputFormat};

mod augment;
mod build;
mod embed;
mod eval;
mod generate;
mod index;
mod inspect;
mod pack;
mod peak_rss;
mod sft;
mod tokenize;
mod tokenizer;
mod train;

#[derive(Parser, Debug)]
#[command(
    name = "cm3",
    version,
    about = "CM3Leon data pipeline: caption-image pairs in, retrieval-augmented CM3 training data out"
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every stage in order (ingest → embed → index → augment → tokenizers → tokenize →
    /// pack), each incremental, and print a summary: the prepared directory `cm3 train` reads.
    Build(Box<build::BuildArgs>),
    /// Turn caption-image pairs into normalised Parquet shards in <dataset>/pairs/.
    Ingest(Box<IngestArgs>),
    /// Print a dataset's manifest in human terms (stages, shards, rows, rejects by reason).
    Inspect {
        dataset: PathBuf,
        /// Show one pair (16-hex-digit id) and its retrieved documents instead of the manifest.
        #[arg(long, value_name = "ID")]
        neighbors: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Manifest maintenance.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// CLIP embeddings of a dataset's pairs (image, text, doc), and CLIP tools.
    Embed(Box<EmbedArgs>),
    /// The maximum-inner-product memory bank: build (incrementally) and search.
    Index {
        #[command(subcommand)]
        command: index::IndexCommand,
    },
    /// Retrieval augmentation: each pair's documents from the memory bank (relevance <= 0.9, no
    /// duplicates, query dropout 0.2, 2 by image + 2 by text, 3 sampled), into <dataset>/neighbors/.
    Augment(Box<augment::AugmentArgs>),
    /// Every pair as text ids and image ids in one vocabulary, into <dataset>/tokens/.
    Tokenize(Box<tokenize::TokenizeArgs>),
    /// CM3 causal-masked, retrieval-augmented training sequences into <dataset>/packed/
    /// (Megatron-LM indexed datasets + meta.json).
    Pack(Box<pack::PackArgs>),
    /// Train the CM3Leon decoder from a prepared dataset directory (or resume a run, or
    /// fine-tune a pretrained one with --init-from).
    Train(Box<train::TrainArgs>),
    /// Supervised fine-tuning data: the paper's Table 5 tasks in their templates, mixed.
    Sft {
        #[command(subcommand)]
        command: sft::SftCommand,
    },
    /// Generate with a trained run: text → image, image → text, infilling (CFG, CD-K, top-p).
    Generate(Box<generate::GenerateArgs>),
    /// The paper's evaluation: caption metrics, VQA accuracy, FID on files, and the zero-shot
    /// protocols (t2i, i2t, VQA) that produce the samples from a trained run.
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
    /// The decoder: parameter counts and memory; scoring token sequences with a checkpoint.
    Model {
        #[command(subcommand)]
        command: train::ModelCommand,
    },
    /// The tokenizers: train the text BPE; encode and decode images with the VQ tokenizer.
    Tokenizer {
        #[command(subcommand)]
        command: tokenizer::TokenizerCommand,
    },
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct EmbedArgs {
    #[command(subcommand)]
    pub command: Option<EmbedCommand>,
    /// The dataset whose pairs to embed (writes <dataset>/embeddings/).
    pub dataset: Option<PathBuf>,
    /// Run settings file (TOML or JSON: image_model, text_model, batch_size, session_threads,
    /// preprocess_threads); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// CLIP image encoder: a folder in the layout of Hugging Face Qdrant/clip-ViT-B-32-vision
    /// (model.onnx, preprocessor_config.json), a model.onnx file, or hf:<repo>
    /// [default: hf:Qdrant/clip-ViT-B-32-vision].
    #[arg(long)]
    pub image_model: Option<String>,
    /// CLIP text encoder (Qdrant/clip-ViT-B-32-text layout), a model.onnx file, or hf:<repo>
    /// [default: hf:Qdrant/clip-ViT-B-32-text].
    #[arg(long)]
    pub text_model: Option<String>,
    /// Pairs per inference batch [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// ONNX Runtime intra-op threads [default: 0, its own default: all cores].
    #[arg(long)]
    pub session_threads: Option<usize>,
    /// Threads preprocessing images ahead of inference [default: 1; enough on a CPU, more for a GPU].
    #[arg(long)]
    pub preprocess_threads: Option<usize>,
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// Discard this stage's earlier outputs and redo it.
    #[arg(long)]
    pub rebuild: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum EmbedCommand {
    /// CLIP token rows (77 ids: start, BPE ids, end, zero padding) of a text file, one text a line,
    /// as JSON lines. Longer texts are cut with the end token kept, and counted.
    Tokenize {
        #[arg(long, short)]
        input: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// The L2-normalised CLIP embedding of one text: printed as a JSON array, or saved as .npy.
    Text {
        text: String,
        #[arg(long, default_value = "hf:Qdrant/clip-ViT-B-32-text")]
        text_model: String,
        /// Save as a [1,512] float32 .npy instead of printing.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// The L2-normalised CLIP embedding of one image file: printed as a JSON array, or saved.
    Image {
        image: PathBuf,
        #[arg(long, default_value = "hf:Qdrant/clip-ViT-B-32-vision")]
        image_model: String,
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// CLIP-preprocessed images ([N,3,224,224] float32, in argument order) as a .npy file.
    Preprocess {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Where to write the tensor; without it, only preprocess and report images/s (benchmark).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ManifestCommand {
    /// Combine the records of workers started with --num-workers into manifest.json.
    Merge { dataset: PathBuf },
}

/// Worker split, shared by every stage.
#[derive(Args, Debug, Clone)]
pub(crate) struct WorkerArgs {
    /// Split the stage across this many processes or machines (e.g. a Slurm array).
    #[arg(long, default_value_t = 1, env = "CM3_NUM_WORKERS")]
    pub num_workers: u32,
    /// This process's share, 0-based (e.g. $SLURM_ARRAY_TASK_ID, $JOB_COMPLETION_INDEX).
    #[arg(long, default_value_t = 0, env = "CM3_WORKER_INDEX")]
    pub worker_index: u32,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum FormatArg {
    Auto,
    Webdataset,
    Folder,
    Coco,
    Jsonl,
    Csv,
    Parquet,
}

#[derive(Args, Debug)]
struct IngestArgs {
    /// Input paths: WebDataset .tar files or folders of them, image folders with .txt captions,
    /// COCO captions JSON (or a folder holding one), .jsonl/.csv/.tsv/.parquet manifests.
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    format: FormatArg,
    /// The dataset directory to create or extend.
    #[arg(long, short)]
    out: PathBuf,
    /// Folder that COCO file names / manifest image paths are relative to.
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Stage configuration file (TOML or JSON, the fields of the ingest config); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Side of the square output image (shorter side resized, then centre-cropped).
    #[arg(long)]
    image_size: Option<u32>,
    #[arg(long, value_enum)]
    image_format: Option<ImageFormatArg>,
    #[arg(long)]
    jpeg_quality: Option<u8>,
    #[arg(long, value_enum)]
    resize_filter: Option<FilterArg>,
    /// JPEG codec: `turbojpeg` (libjpeg-turbo, scaled decoding; only in builds with the
    /// `turbojpeg` feature, where it is a new dataset's default), `rust-dct` (pure Rust, cm3's own
    /// decoder and encoder: baseline JPEGs decoded scaled in the DCT per component when large,
    /// else at full size; the default otherwise), `rust` (pure Rust, every pixel decoded) or `rust-scaled` (scaled by
    /// jpeg-decoder, chroma upsampled). Unset, an existing dataset keeps what it recorded.
    #[arg(long, value_enum)]
    jpeg_codec: Option<CodecArg>,
    /// Chroma subsampling of written JPEGs: 4:2:0 (what libjpeg, Pillow and OpenCV write; the
    /// default for a new dataset) or 4:4:4. Unset, an existing dataset keeps what it recorded.
    #[arg(long, value_parser = ["4:2:0", "4:4:4"])]
    jpeg_subsampling: Option<String>,
    /// Reject images whose declared size exceeds this many pixels.
    #[arg(long)]
    max_image_pixels: Option<u64>,
    #[arg(long)]
    max_caption_chars: Option<usize>,
    #[arg(long, value_enum)]
    invalid_utf8: Option<Utf8Arg>,
    /// Reject pairs without a license in their source metadata.
    #[arg(long)]
    require_license: bool,
    /// Read images and captions that are symbolic links (refused by default: `unsafe-path`).
    #[arg(long)]
    follow_symlinks: bool,
    /// Let manifest and COCO image paths leave the manifest's folder or --image-root (absolute
    /// paths elsewhere, `..`; refused by default: `unsafe-path`).
    #[arg(long)]
    allow_outside_paths: bool,
    /// Rows per output shard.
    #[arg(long)]
    shard_rows: Option<usize>,
    /// COCO: one pair per caption, or one per image with all captions.
    #[arg(long, value_enum)]
    coco_pairs: Option<CocoArg>,
    #[arg(long)]
    image_column: Option<String>,
    #[arg(long)]
    caption_column: Option<String>,
    #[arg(long)]
    key_column: Option<String>,
    #[arg(long)]
    license_column: Option<String>,
    #[arg(long)]
    url_column: Option<String>,
    #[arg(long)]
    split_column: Option<String>,
    /// Split recorded when the source does not give one.
    #[arg(long)]
    default_split: Option<String>,
    #[command(flatten)]
    workers: WorkerArgs,
    /// Decoding threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Fail at the first rejected input.
    #[arg(long)]
    strict: bool,
    /// Discard this stage's earlier outputs and redo it (needed to change its configuration).
    #[arg(long)]
    rebuild: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the run's report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum ImageFormatArg {
    Jpeg,
    Png,
}
#[derive(Copy, Clone, Debug, ValueEnum)]
enum FilterArg {
    Box,
    Bilinear,
    CatmullRom,
    Lanczos3,
}
#[derive(Copy, Clone, Debug, ValueEnum)]
enum CodecArg {
    Rust,
    RustScaled,
    RustDct,
    Turbojpeg,
}
#[derive(Copy, Clone, Debug, ValueEnum)]
enum Utf8Arg {
    Repair,
    Reject,
}
#[derive(Copy, Clone, Debug, ValueEnum)]
enum CocoArg {
    PerCaption,
    PerImage,
}

/// Read a stage configuration file (TOML or JSON by extension).
pub(crate) fn load_config<T: serde::de::DeserializeOwned + Default>(
    path: Option<&Path>,
) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("config {}", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }
}

/// A settings file (TOML, or JSON by extension) as a JSON value.
pub(crate) fn read_settings(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("config {}", path.display()))
    } else {
        let t: toml::Table =
            toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
        Ok(serde_json::to_value(t)?)
    }
}

/// `base` with the fields `over` gives replaced, table by table (unknown fields are refused by
/// the config types, naming `origin`).
pub(crate) fn overlay<T: serde::Serialize + serde::de::DeserializeOwned>(
    base: &T,
    over: serde_json::Value,
    origin: &Path,
) -> Result<T> {
    let mut merged = serde_json::to_value(base)?;
    merge_settings(&mut merged, over);
    serde_json::from_value(merged).with_context(|| format!("config {}", origin.display()))
}

/// Overlay `over` onto `base`, table by table. A table whose `kind` differs from the base's (an
/// index of another kind) replaces it whole, since its fields are another variant's.
fn merge_settings(base: &mut serde_json::Value, over: serde_json::Value) {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let other_kind = o.get("kind").is_some_and(|k| b.get("kind") != Some(k));
            if other_kind {
                *b = o;
                return;
            }
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_settings(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn ingest(a: IngestArgs) -> Result<()> {
    let mut cfg: IngestConfig = load_config(a.config.as_deref())?;
    macro_rules! set {
        ($field:expr, $value:expr) => {
            if let Some(v) = $value {
                $field = v;
            }
        };
    }
    set!(cfg.image_size, a.image_size);
    set!(
        cfg.image_format,
        a.image_format.map(|f| match f {
            ImageFormatArg::Jpeg => OutputImageFormat::Jpeg,
            ImageFormatArg::Png => OutputImageFormat::Png,
        })
    );
    set!(cfg.jpeg_quality, a.jpeg_quality);
    set!(
        cfg.resize_filter,
        a.resize_filter.map(|f| match f {
            FilterArg::Box => ResizeFilter::Box,
            FilterArg::Bilinear => ResizeFilter::Bilinear,
            FilterArg::CatmullRom => ResizeFilter::CatmullRom,
            FilterArg::Lanczos3 => ResizeFilter::Lanczos3,
        })
    );
    set!(
        cfg.jpeg_codec,
        a.jpeg_codec.map(|c| Some(match c {
            CodecArg::Rust => JpegCodec::Rust,
            CodecArg::RustScaled => JpegCodec::RustScaled,
            CodecArg::RustDct => JpegCodec::RustDct,
            CodecArg::Turbojpeg => JpegCodec::Turbojpeg,
        }))
    );
    set!(
        cfg.jpeg_subsampling,
        a.jpeg_subsampling.map(|s| match s.as_str() {
            "4:4:4" => Some(JpegSubsampling::S444),
            _ => Some(JpegSubsampling::S420),
        })
    );
    set!(cfg.max_image_pixels, a.max_image_pixels);
    set!(cfg.max_caption_chars, a.max_caption_chars);
    set!(
        cfg.invalid_utf8,
        a.invalid_utf8.map(|u| match u {
            Utf8Arg::Repair => InvalidUtf8::Repair,
            Utf8Arg::Reject => InvalidUtf8::Reject,
        })
    );
    cfg.require_license |= a.require_license;
    cfg.follow_symlinks |= a.follow_symlinks;
    cfg.allow_outside_paths |= a.allow_outside_paths;
    set!(cfg.shard_rows, a.shard_rows);
    set!(
        cfg.coco_pairs,
        a.coco_pairs.map(|c| match c {
            CocoArg::PerCaption => CocoPairs::PerCaption,
            CocoArg::PerImage => CocoPairs::PerImage,
        })
    );
    for (slot, v) in [
        (&mut cfg.columns.image, a.image_column),
        (&mut cfg.columns.caption, a.caption_column),
        (&mut cfg.columns.key, a.key_column),
        (&mut cfg.columns.license, a.license_column),
        (&mut cfg.columns.url, a.url_column),
        (&mut cfg.columns.split, a.split_column),
    ] {
        if v.is_some() {
            *slot = v;
        }
    }
    set!(cfg.default_split, a.default_split);
    let opts = IngestOptions {
        inputs: a.input,
        format: match a.format {
            FormatArg::Auto => InputFormat::Auto,
            FormatArg::Webdataset => InputFormat::Webdataset,
            FormatArg::Folder => InputFormat::Folder,
            FormatArg::Coco => InputFormat::Coco,
            FormatArg::Jsonl => InputFormat::Jsonl,
            FormatArg::Csv => InputFormat::Csv,
            FormatArg::Parquet => InputFormat::Parquet,
        },
        image_root: a.image_root,
        out: a.out,
        worker: WorkerSpec::new(a.workers.num_workers, a.workers.worker_index)?,
        threads: a.threads,
        strict: a.strict,
        rebuild: a.rebuild,
        progress: !a.no_progress && !a.json,
    };
    let report = cm3_ingest::run(&opts, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let reasons: Vec<String> = report
            .rejects_by_reason
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        eprintln!(
            "ingest: {} rows and {} rejects{} written in {} shard(s) ({} already done); {} rows in {}",
            report.rows,
            report.rejects,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            },
            report.shards_written,
            report.shards_skipped,
            report.total_rows,
            report.dataset.display()
        );
        if opts.worker.is_split() {
            eprintln!(
                "ingest: worker {} of {} done; when all are, run `cm3 manifest merge {}`",
                opts.worker.worker_index,
                opts.worker.num_workers,
                report.dataset.display()
            );
        }
    }
    Ok(())
}

/// glibc's malloc settings for the commands that run the model: no `mmap` for large blocks and no
/// trimming, so freed memory stays in the heap for reuse. Burn allocates and frees activation
/// buffers of tens of MiB on every training step; by default glibc maps each afresh and unmaps it
/// on free, and the next step faults and zeroes every page again (`perf`: a quarter of a step's
/// time; with these, 7.6 times fewer page faults and 1.3 times the tokens/s). glibc reads them
/// only at start-up, so cm3 re-executes itself once with them set, unless the user set either.
const MALLOC_SETTINGS: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "4294967295"),
    ("MALLOC_TRIM_THRESHOLD_", "68719476736"),
];

/// Re-executes cm3 with [`MALLOC_SETTINGS`]; returns (with the reason) only if that failed, and
/// cm3 then runs with glibc's defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reexec_with_malloc_settings() -> Option<String> {
    use std::os::unix::process::CommandExt;
    if MALLOC_SETTINGS
        .iter()
        .any(|(k, _)| std::env::var_os(k).is_some())
    {
        return None;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Some(format!("cannot find the cm3 executable: {e}")),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let e = command.args(args).envs(MALLOC_SETTINGS).exec();
    Some(format!("cannot re-execute cm3: {e}"))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reexec_with_malloc_settings() -> Option<String> {
    None
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let reexec_failed = match cli.command {
        Command::Train(_) | Command::Generate(_) | Command::Model { .. } | Command::Eval { .. } => {
            reexec_with_malloc_settings()
        }
        _ => None,
    };
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour codes only on a terminal: a log redirected to a file stays plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    if let Some(reason) = reexec_failed {
        tracing::debug!("glibc's default malloc settings kept: {reason}");
    }
    let result = match cli.command {
        Command::Build(a) => build::run(*a),
        Command::Ingest(a) => ingest(*a),
        Command::Inspect {
            dataset,
            neighbors: Some(id),
            json,
        } => inspect::neighbors(&dataset, &id, json),
        Command::Inspect {
            dataset,
            neighbors: None,
            json,
        } => inspect::run(&dataset, json),
        Command::Manifest {
            command: ManifestCommand::Merge { dataset },
        } => merge(&dataset),
        Command::Embed(args) => embed::run(*args),
        Command::Index { command } => index::run(command),
        Command::Augment(a) => augment::run(*a),
        Command::Tokenize(a) => tokenize::run(*a),
        Command::Pack(a) => pack::run(*a),
        Command::Tokenizer { command } => tokenizer::run(command),
        Command::Train(a) => train::train(*a),
        Command::Sft { command } => sft::run(command),
        Command::Generate(a) => generate::run(*a),
        Command::Eval { command } => eval::run(command),
        Command::Model { command } => train::model(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn merge(dataset: &Path) -> Result<()> {
    let d = DatasetDir::open(dataset)?;
    let r = d.merge_workers()?;
    if r.files == 0 {
        bail!("no worker manifests to merge in {}", dataset.display());
    }
    let m: Manifest = d.load_manifest()?;
    let rows: u64 = m.stages.values().map(|s| s.totals.rows).sum();
    eprintln!(
        "merged {} worker manifest(s), {} new shard record(s); {} rows recorded in {}",
        r.files,
        r.new_shards,
        rows,
        d.manifest_path().display()
    );
    Ok(())
}
