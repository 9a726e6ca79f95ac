//! `cm3 tokenize <dataset>`: every pair as text ids and image ids in one vocabulary.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cm3_core::WorkerSpec;
use cm3_tokenize::{TokenizeConfig, TokenizeOptions};

use crate::WorkerArgs;

#[derive(Args, Debug)]
pub(crate) struct TokenizeArgs {
    /// The dataset whose pairs to tokenise (writes <dataset>/tokens/ and tokenizer/vocab.json).
    pub dataset: PathBuf,
    /// flex (CPU), wgpu or cuda (builds with those features), as `cm3 train --backend`.
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: crate::train::BackendArg,
    /// Settings file (TOML or JSON: text_tokenizer, image_tokenizer, image_tokenizer_config); flags
    /// override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The text tokenizer.json [default: the dataset's, from `cm3 tokenizer train-text`].
    #[arg(long)]
    pub text_tokenizer: Option<PathBuf>,
    /// The VQ image tokenizer: a taming GumbelVQ release folder (configs/model.yaml +
    /// checkpoints/last.ckpt) or a .ckpt with config.yaml beside it.
    #[arg(long)]
    pub image_tokenizer: Option<PathBuf>,
    /// The image tokenizer's taming config.yaml, when it is not beside the checkpoint.
    #[arg(long)]
    pub image_tokenizer_config: Option<PathBuf>,
    /// Images per encoder batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// Discard the earlier tokens and redo them (needed after changing a tokenizer).
    #[arg(long)]
    pub rebuild: bool,
    #[arg(long)]
    pub no_progress: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(a: TokenizeArgs) -> Result<()> {
    let mut cfg: TokenizeConfig = crate::load_config(a.config.as_deref())?;
    if a.text_tokenizer.is_some() {
        cfg.text_tokenizer = a.text_tokenizer;
    }
    if a.image_tokenizer.is_some() {
        cfg.image_tokenizer = a.image_tokenizer;
    }
    if a.image_tokenizer_config.is_some() {
        cfg.image_tokenizer_config = a.image_tokenizer_config;
    }
    let opts = TokenizeOptions {
        dataset: a.dataset,
        config: cfg,
        batch_size: a.batch_size,
        worker: WorkerSpec::new(a.workers.num_workers, a.workers.worker_index)?,
        rebuild: a.rebuild,
        progress: !a.no_progress,
    };
    let r = cm3_tokenize::stage::run(&opts, &cm3_train::Backend::from(a.backend).device()?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "tokenize: {} pairs in {} new shard(s) ({} already done), {} rejected, in {:.1} s \
         (text {:.1} s, images {:.1} s)",
        r.rows,
        r.shards_written,
        r.shards_skipped,
        r.rejects,
        r.seconds,
        r.text_seconds,
        r.image_seconds
    );
    println!(
        "  {} text tokens, {} image tokens; vocabulary of {} ids",
        r.text_tokens, r.image_tokens, r.vocab_size
    );
    Ok(())
}
