//! `cm3 augment <dataset>`: the paper's retrieval strategy over the whole dataset.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cm3_augment::{AugmentConfig, AugmentOptions};
use cm3_core::WorkerSpec;
use cm3_embed::hub::Hub;

use crate::WorkerArgs;
use cm3_index::VectorSet;

#[derive(Args, Debug)]
pub(crate) struct AugmentArgs {
    /// The dataset whose pairs get retrieved documents (writes <dataset>/neighbors/).
    pub dataset: PathBuf,
    /// Settings file (TOML or JSON: vector_set, relevance, by_image, by_text, sample,
    /// query_dropout, seed, ef_search); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Retrieve from another dataset's index (a larger licensed corpus) instead of this one.
    #[arg(long)]
    pub bank: Option<PathBuf>,
    /// Remove from the bank a split (e.g. `val`) or the ids in a file (.npy, or one 16-hex-digit
    /// id a line); neighbours never point into it. Repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// The bank's vectors to search [default: doc].
    #[arg(long)]
    pub set: Option<VectorSet>,
    /// Skip candidates scoring above this with the query or with a chosen document [default: 0.9].
    #[arg(long)]
    pub relevance: Option<f32>,
    /// Documents retrieved by the pair's image [default: 2].
    #[arg(long)]
    pub by_image: Option<usize>,
    /// Documents retrieved by the pair's caption after query dropout [default: 2].
    #[arg(long)]
    pub by_text: Option<usize>,
    /// Documents sampled for the training example [default: 3].
    #[arg(long)]
    pub sample: Option<usize>,
    /// Probability of dropping each CLIP token of the caption query [default: 0.2].
    #[arg(long)]
    pub query_dropout: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// HNSW bank: candidate list size (efSearch).
    #[arg(long)]
    pub ef_search: Option<usize>,
    /// CLIP text encoder for the dropped-out captions [default: the one `cm3 embed` used].
    #[arg(long)]
    pub text_model: Option<String>,
    /// Pairs per text-encoder and search batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Hold a bank built in parts (`cm3 index build --part-rows`) in memory whole: faster when it
    /// fits. By default such a bank is read part by part, in memory for one part.
    #[arg(long)]
    pub resident_bank: bool,
    /// ONNX Runtime intra-op threads [default: 0, its own default].
    #[arg(long, default_value_t = 0)]
    pub session_threads: usize,
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// Discard this stage's earlier outputs and redo it (needed after changing a setting).
    #[arg(long)]
    pub rebuild: bool,
    #[arg(long)]
    pub no_progress: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(a: AugmentArgs) -> Result<()> {
    let mut cfg: AugmentConfig = crate::load_config(a.config.as_deref())?;
    if let Some(s) = a.set {
        cfg.vector_set = s;
    }
    cfg.relevance = a.relevance.unwrap_or(cfg.relevance);
    cfg.by_image = a.by_image.unwrap_or(cfg.by_image);
    cfg.by_text = a.by_text.unwrap_or(cfg.by_text);
    cfg.sample = a.sample.unwrap_or(cfg.sample);
    cfg.query_dropout = a.query_dropout.unwrap_or(cfg.query_dropout);
    cfg.seed = a.seed.unwrap_or(cfg.seed);
    cfg.ef_search = a.ef_search.or(cfg.ef_search);
    let text_model = match &a.text_model {
        Some(m) => Some(Hub::from_env().resolve(m)?),
        None => None,
    };
    let opts = AugmentOptions {
        dataset: a.dataset,
        config: cfg,
        bank: a.bank,
        text_model,
        exclude: a.exclude,
        batch_size: a.batch_size,
        resident_bank: a.resident_bank,
        session_threads: a.session_threads,
        worker: WorkerSpec::new(a.workers.num_workers, a.workers.worker_index)?,
        rebuild: a.rebuild,
        progress: !a.no_progress && !a.json,
    };
    let r = cm3_augment::stage::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let pct = |x: u64, of: u64| 100.0 * x as f64 / of.max(1) as f64;
    eprintln!(
        "augment: {} pairs in {} shard(s) ({} already done), bank of {} vectors; {} documents \
         retrieved, {} sampled; {} pairs got fewer than asked ({} by image, {} by text missing); \
         query dropout removed {:.1}% of {} caption tokens",
        r.rows,
        r.shards_written,
        r.shards_skipped,
        r.bank_size,
        r.neighbours,
        r.sampled,
        r.pairs_short,
        r.short_by_image,
        r.short_by_text,
        pct(r.dropped_tokens, r.query_tokens),
        r.query_tokens
    );
    if r.rows > 0 {
        eprintln!(
            "augment: {:.2} s ({:.0} pairs/s): text encoding {:.2} s (own thread), search {:.2} s, \
             selection {:.2} s, reading/writing {:.2} s; {} pairs searched again with more candidates",
            r.seconds,
            r.rows as f64 / r.seconds.max(1e-9),
            r.text_encode_seconds,
            r.search_seconds,
            r.select_seconds,
            r.io_seconds,
            r.widened
        );
    }
    Ok(())
}
