//! `cm3 pack <dataset>`: CM3 causal-masked, retrieval-augmented training sequences.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use cm3_pack::packing::Policy;
use cm3_pack::stage::{PackConfig, PackOptions};

#[derive(Copy, Clone, Debug, ValueEnum)]
pub(crate) enum PolicyArg {
    Stream,
    Whole,
}

#[derive(Args, Debug)]
pub(crate) struct PackArgs {
    /// The dataset whose tokens to pack (writes <dataset>/packed/).
    pub dataset: PathBuf,
    /// Settings file (TOML or JSON: seq_len, policy, spans_mean, spans_min, spans_max,
    /// text_rate, whole_caption_rate, image_first, val_fraction, retrieval, seed); flags
    /// override it. Without it, the settings the dataset was last packed with (if any), else
    /// the paper's.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Tokens per sequence [default: 4096].
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// stream: cut the concatenated examples into blocks (every retrieved document kept, almost
    /// no padding); whole: never split an example (documents dropped to fit, the rest padded)
    /// [default: stream].
    #[arg(long)]
    pub policy: Option<PolicyArg>,
    /// Mean of the Poisson number of masked spans per example, before clamping to
    /// [spans_min, spans_max] [default: 1, clamped to [1, 16] as in CM3].
    #[arg(long)]
    pub spans_mean: Option<f64>,
    /// Probability that a span is placed in a caption rather than an image [default: 0.5].
    #[arg(long)]
    pub text_rate: Option<f64>,
    /// Probability that a caption span masks the whole caption [default: 0.5].
    #[arg(long)]
    pub whole_caption_rate: Option<f64>,
    /// Probability of writing a document image first [default: 0].
    #[arg(long)]
    pub image_first: Option<f64>,
    /// Share of images in the validation split (all captions of an image on one side)
    /// [default: 0.01].
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Plain pairs, without their retrieved documents.
    #[arg(long)]
    pub no_retrieval: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Discard the packed files and pack again (needed after changing a setting).
    #[arg(long)]
    pub rebuild: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(a: PackArgs) -> Result<()> {
    let mut cfg: PackConfig = match (&a.config, cm3_pack::stage::recorded_config(&a.dataset)?) {
        (None, Some(recorded)) => {
            tracing::info!(
                "starting from the settings the dataset was last packed with (seq_len {}, \
                 policy {:?}); --config starts from a file instead",
                recorded.seq_len,
                recorded.policy
            );
            recorded
        }
        _ => crate::load_config(a.config.as_deref())?,
    };
    cfg.seq_len = a.seq_len.unwrap_or(cfg.seq_len);
    if let Some(p) = a.policy {
        cfg.policy = match p {
            PolicyArg::Stream => Policy::Stream,
            PolicyArg::Whole => Policy::Whole,
        };
    }
    cfg.spans_mean = a.spans_mean.unwrap_or(cfg.spans_mean);
    cfg.text_rate = a.text_rate.unwrap_or(cfg.text_rate);
    cfg.whole_caption_rate = a.whole_caption_rate.unwrap_or(cfg.whole_caption_rate);
    cfg.image_first = a.image_first.unwrap_or(cfg.image_first);
    cfg.val_fraction = a.val_fraction.unwrap_or(cfg.val_fraction);
    cfg.seed = a.seed.unwrap_or(cfg.seed);
    if a.no_retrieval {
        cfg.retrieval = false;
    }
    let r = cm3_pack::stage::run(&PackOptions {
        dataset: a.dataset,
        config: cfg,
        rebuild: a.rebuild,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "pack: {} new shard(s) ({} already packed) in {:.1} s; padding {:.1}% of all tokens",
        r.shards_written,
        r.shards_skipped,
        r.seconds,
        100.0 * r.padding_fraction
    );
    for (name, c) in [("train", &r.train), ("val", &r.val)] {
        println!(
            "  {name}: {} examples -> {} sequences ({} tokens, {} padding); {} retrieved documents \
             kept, {} dropped to fit; {} masked spans ({} in captions, {} of them whole \
             captions; {} in images); query caption masked whole in {} examples; {} pairs too \
             long; {} excluded (augment --exclude)",
            c.examples,
            c.sequences,
            c.tokens,
            c.padding,
            c.retrieved,
            c.dropped_documents,
            c.masked_spans,
            c.text_spans,
            c.whole_caption_spans,
            c.image_spans,
            c.query_caption_masked,
            c.skipped_too_long,
            c.excluded
        );
    }
    Ok(())
}
