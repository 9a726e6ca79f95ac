//! `cm3 tokenizer ...`: train and use the tokenizers (text BPE now; the image VQ tokenizer joins).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use cm3_model::vq::VqTrainConfig;
use cm3_tokenize::image::{load_image, save_png};
use cm3_tokenize::{ImageTokenizer, TextTokenizerConfig, TrainImageOptions, TrainTextOptions};

#[derive(Subcommand, Debug)]
pub(crate) enum TokenizerCommand {
    /// Train the byte-level text BPE on the dataset's captions (or on --input files) and save it
    /// as <dataset>/tokenizer/text/tokenizer.json.
    TrainText(TrainTextArgs),
    /// Train a VQ image tokenizer of our own on the dataset's images (EMA codebook with dead-code
    /// restarts; reconstruction + commitment loss) into <dataset>/tokenizer/image/, and report its
    /// PSNR and codebook usage on held-out images. The defaults train on a CPU in minutes.
    TrainImage(TrainImageArgs),
    /// Tokenise one image file with the VQ image tokenizer (prints its codes, row by row).
    EncodeImage {
        image: PathBuf,
        #[command(flatten)]
        tokenizer: ImageTokenizerArgs,
        /// Write the codes here as JSON instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Turn image codes (a JSON list, or whitespace/comma-separated numbers) back into a PNG.
    DecodeImage {
        codes: PathBuf,
        #[command(flatten)]
        tokenizer: ImageTokenizerArgs,
        /// Subtract this from every id first (the vocabulary's image offset, for ids taken from
        /// tokens/ shards).
        #[arg(long, default_value_t = 0)]
        offset: u32,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Which VQ image tokenizer to use.
#[derive(Args, Debug)]
pub(crate) struct ImageTokenizerArgs {
    /// A folder from `cm3 tokenizer train-image`, a taming GumbelVQ release folder
    /// (configs/model.yaml + checkpoints/last.ckpt) or a .ckpt with config.yaml beside it.
    #[arg(long)]
    image_tokenizer: PathBuf,
    /// Its taming config.yaml, when it is not beside the checkpoint.
    #[arg(long)]
    image_tokenizer_config: Option<PathBuf>,
    /// flex (CPU), wgpu or cuda (builds with those features), as `cm3 train --backend`.
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: crate::train::BackendArg,
}

impl ImageTokenizerArgs {
    fn open(&self) -> Result<ImageTokenizer> {
        Ok(ImageTokenizer::open(
            &self.image_tokenizer,
            self.image_tokenizer_config.as_deref(),
            &cm3_train::Backend::from(self.backend).device()?,
        )?)
    }
}

#[derive(Args, Debug)]
pub(crate) struct TrainTextArgs {
    pub dataset: PathBuf,
    /// Train on these text files (one text a line) instead of the captions.
    #[arg(long)]
    pub input: Vec<PathBuf>,
    /// Settings file (TOML or JSON: vocab_size, min_frequency, sentinels); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Vocabulary entries, specials and byte symbols included [default: 56320].
    #[arg(long)]
    pub vocab_size: Option<u32>,
    /// A pair must occur this often to be merged [default: 2].
    #[arg(long)]
    pub min_frequency: Option<u64>,
    /// Numbered CM3 span sentinels <mask:0>... to reserve [default: 8].
    #[arg(long)]
    pub sentinels: Option<u32>,
    /// Replace an existing text tokenizer.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the record as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct TrainImageArgs {
    pub dataset: PathBuf,
    /// Settings file (TOML or JSON: model (taming ddconfig fields + embed_dim, n_embed), steps,
    /// batch_size, learning_rate, commitment, ema_decay, restart_every, dead_code_usage,
    /// held_out, max_images, seed); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the tokenizer here instead of <dataset>/tokenizer/image/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing image tokenizer.
    #[arg(long)]
    pub overwrite: bool,
    /// flex (CPU), wgpu or cuda (builds with those features), as `cm3 train --backend`.
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: crate::train::BackendArg,
    #[arg(long)]
    pub no_progress: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(command: TokenizerCommand) -> Result<()> {
    match command {
        TokenizerCommand::TrainText(a) => train_text(a),
        TokenizerCommand::TrainImage(a) => train_image(a),
        TokenizerCommand::EncodeImage {
            image,
            tokenizer,
            out,
        } => encode_image(&image, &tokenizer.open()?, out.as_deref()),
        TokenizerCommand::DecodeImage {
            codes,
            tokenizer,
            offset,
            out,
        } => decode_image(&codes, &tokenizer.open()?, offset, &out),
    }
}

fn train_text(a: TrainTextArgs) -> Result<()> {
    let mut cfg: TextTokenizerConfig = crate::load_config(a.config.as_deref())?;
    cfg.vocab_size = a.vocab_size.unwrap_or(cfg.vocab_size);
    cfg.min_frequency = a.min_frequency.unwrap_or(cfg.min_frequency);
    cfg.sentinels = a.sentinels.unwrap_or(cfg.sentinels);
    let opts = TrainTextOptions {
        inputs: a.input,
        overwrite: a.overwrite,
    };
    let record = cm3_tokenize::train_text(&a.dataset, &cfg, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(());
    }
    let r = &record.report;
    println!(
        "text tokenizer: {} entries (asked {}) from {} texts ({} bytes, corpus: {}) in {:.1} s",
        r.vocab_size, r.vocab_size_asked, r.texts, r.bytes, record.corpus, r.seconds
    );
    println!(
        "  wrote {} (sha256 {})",
        a.dataset.join(cm3_tokenize::TEXT_TOKENIZER).display(),
        &record.tokenizer_sha256[..16]
    );
    Ok(())
}

fn encode_image(image: &Path, tok: &ImageTokenizer, out: Option<&Path>) -> Result<()> {
    let rgb = load_image(image, tok.resolution())?;
    let codes = tok
        .encode_rgb(&[rgb.as_slice()])?
        .pop()
        .context("the tokenizer returned no codes")?;
    let json = serde_json::to_string(&codes)?;
    match out {
        Some(p) => {
            std::fs::write(p, json + "\n").with_context(|| format!("writing {}", p.display()))?
        }
        None => {
            let g = tok.grid() as usize;
            for row in codes.chunks(g) {
                let line: Vec<String> = row.iter().map(u32::to_string).collect();
                println!("{}", line.join(" "));
            }
        }
    }
    Ok(())
}

fn decode_image(codes: &Path, tok: &ImageTokenizer, offset: u32, out: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(codes).with_context(|| format!("reading {}", codes.display()))?;
    let ids: Vec<u32> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON list of codes", codes.display()))?
    } else {
        text.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u32>()
                    .with_context(|| format!("{}: {s:?} is not a code", codes.display()))
            })
            .collect::<Result<_>>()?
    };
    let per = (tok.grid() * tok.grid()) as usize;
    if ids.len() != per {
        bail!(
            "{}: {} codes, an image of this tokenizer has {per} ({} × {})",
            codes.display(),
            ids.len(),
            tok.grid(),
            tok.grid()
        );
    }
    let ids: Vec<u32> = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            id.checked_sub(offset)
                .with_context(|| format!("id {id} at position {i} is below --offset {offset}"))
        })
        .collect::<Result<_>>()?;
    let rgb = tok.decode_rgb(&ids, 1)?.pop().context("no image decoded")?;
    save_png(out, &rgb, tok.resolution())?;
    println!("wrote {}", out.display());
    Ok(())
}

fn train_image(a: TrainImageArgs) -> Result<()> {
    let mut cfg: VqTrainConfig = crate::load_config(a.config.as_deref())?;
    cfg.steps = a.steps.unwrap_or(cfg.steps);
    cfg.batch_size = a.batch_size.unwrap_or(cfg.batch_size);
    cfg.learning_rate = a.learning_rate.unwrap_or(cfg.learning_rate);
    cfg.seed = a.seed.unwrap_or(cfg.seed);
    let opts = TrainImageOptions {
        out: a.out,
        overwrite: a.overwrite,
        progress: !a.no_progress,
        device: Some(cm3_train::Backend::from(a.backend).device()?),
    };
    let r = cm3_tokenize::train_image(&a.dataset, &cfg, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "image tokenizer: {} steps on {} images ({} held out) in {:.1} s; held-out crop MSE {:.4} after the first step, {:.4} at the end",
        r.steps,
        r.images - r.held_out,
        r.held_out,
        r.seconds,
        r.held_out_mse_first,
        r.held_out_mse_last
    );
    println!(
        "  held-out images: PSNR {:.2} dB, {} of {} codes used ({:.0}%), perplexity {:.1}",
        r.psnr_db,
        r.codes_used,
        r.codes,
        100.0 * r.codes_used_fraction,
        r.perplexity
    );
    println!("  wrote {}", r.out);
    Ok(())
}
