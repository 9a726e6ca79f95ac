//! `cm3 train` and `cm3 model {info, score}`: the decoder, its cost, and training it from a
//! prepared dataset directory.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::{Args, Subcommand};

use cm3_core::fsio::write_atomic;
use cm3_embed::npy::{Npy, encode_f32};
use cm3_model::decoder::Cm3Decoder;
use cm3_train::run::{RUN_CONFIG, RUN_FORMAT, RunRecord, latest_checkpoint};
use cm3_train::{Backend, InitFrom, TRAIN_PRESETS, TrainConfig, TrainOptions};

#[derive(Args, Debug)]
pub(crate) struct TrainArgs {
    /// The prepared dataset (what `cm3 build` or `cm3 pack` made).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub data: Option<PathBuf>,
    /// A preset (tiny, 350m, 760m, 7b: the paper's Table 3) or a TOML/JSON file of fields,
    /// optionally with `preset = "..."` to start from [default: tiny].
    #[arg(long, conflicts_with = "resume")]
    pub config: Option<String>,
    /// The run directory to create.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<PathBuf>,
    /// Start from a pretrained model's weights with a fresh optimiser (fine-tuning, the SFT
    /// stage): a cm3 run (its latest checkpoint), one of its checkpoints, or a Hugging Face OPT
    /// folder. The model's shape is the pretrained one unless --config names a model, which
    /// must then match; the dataset's vocabulary must be the pretrained run's [default
    /// --config: sft, Table 4].
    #[arg(long, value_name = "MODEL", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// Optimiser steps in all (overrides the config).
    #[arg(long, conflicts_with = "resume")]
    pub steps: Option<u64>,
    /// Stop with a checkpoint after this many steps in this session (e.g. before a job's time
    /// limit); `--resume` continues.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// flex (CPU), wgpu or cuda (builds with those features).
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: BackendArg,
    /// Data parallelism over this many devices of the backend (cuda: GPUs 0..N; flex: N
    /// replicas on the CPU), the same global batch: a step's micro-batches are shared out, and
    /// the gradients summed on the first device.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    #[arg(long)]
    pub no_progress: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub(crate) enum BackendArg {
    Flex,
    Wgpu,
    Cuda,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Flex => Backend::Flex,
            BackendArg::Wgpu => Backend::Wgpu,
            BackendArg::Cuda => Backend::Cuda,
        }
    }
}

/// A preset name, or a settings file laid over its `preset` (default tiny, or sft with
/// `--init-from`). Also: whether the configuration leaves the model's shape to the pretrained
/// weights (the `sft` preset, or a file with neither a model preset nor a `[model]` table).
fn train_config(spec: Option<&str>, init_from: bool) -> Result<(TrainConfig, bool)> {
    let default = if init_from { "sft" } else { "tiny" };
    let spec = spec.unwrap_or(default);
    if TRAIN_PRESETS.contains(&spec) {
        if spec == "sft" && !init_from {
            bail!("--config sft fine-tunes a pretrained model: give it with --init-from");
        }
        return Ok((TrainConfig::preset(spec)?, spec == "sft"));
    }
    let path = Path::new(spec);
    if !path.is_file() {
        bail!(
            "--config {spec}: neither a preset ({}) nor a file",
            TRAIN_PRESETS.join(", ")
        );
    }
    let mut over = crate::read_settings(path)?;
    let names_model = over.get("model").is_some();
    let preset = match over.as_object_mut().and_then(|o| o.remove("preset")) {
        Some(serde_json::Value::String(p)) => p,
        Some(other) => bail!("{}: preset must be a name, got {other}", path.display()),
        None => default.into(),
    };
    let base = TrainConfig::preset(&preset).with_context(|| format!("{}", path.display()))?;
    let take_shape = init_from && !names_model && preset == "sft";
    Ok((crate::overlay(&base, over, path)?, take_shape))
}

pub(crate) fn train(a: TrainArgs) -> Result<()> {
    let opts = match &a.resume {
        Some(run) => TrainOptions {
            out: run.clone(),
            start: None,
            init_from: None,
            stop_after: a.stop_after,
            backend: a.backend.into(),
            devices: a.devices,
            progress: !a.no_progress && !a.json,
        },
        None => {
            let (mut cfg, take_shape) = train_config(a.config.as_deref(), a.init_from.is_some())?;
            cfg.steps = a.steps.unwrap_or(cfg.steps);
            TrainOptions {
                out: a.out.clone().context("--out is required")?,
                start: Some((a.data.clone().context("--data is required")?, cfg)),
                init_from: a
                    .init_from
                    .clone()
                    .map(|path| InitFrom { path, take_shape }),
                stop_after: a.stop_after,
                backend: a.backend.into(),
                devices: a.devices,
                progress: !a.no_progress && !a.json,
            }
        }
    };
    let r = cm3_train::train(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "train: steps {} to {} ({} tokens seen) in {:.1} s, {:.0} tokens/s; last loss {:.4}{}",
        r.first_step,
        r.last_step,
        r.tokens_seen,
        r.seconds,
        r.tokens_per_s,
        r.last_loss,
        r.val_loss
            .map(|v| format!(", validation loss {v:.4} (perplexity {:.2})", v.exp()))
            .unwrap_or_default()
    );
    println!(
        "  checkpoint {}{}",
        r.checkpoint.display(),
        if r.finished {
            String::new()
        } else {
            format!("; continue with `cm3 train --resume {}`", r.run.display())
        }
    );
    Ok(())
}

#[derive(Subcommand, Debug)]
pub(crate) enum ModelCommand {
    /// Parameter counts and training memory of a decoder configuration.
    Info(InfoArgs),
    /// Loss and perplexity of token sequences under a model (a cm3 run, or a folder with a
    /// Hugging Face OPT `model.safetensors` + `config.json`); optionally save the logits.
    Score(ScoreArgs),
}

#[derive(Args, Debug)]
pub(crate) struct InfoArgs {
    /// A preset (tiny, 350m, 760m, 7b) or a training settings file.
    #[arg(long, default_value = "350m")]
    pub config: String,
    /// Vocabulary size [default: the dataset's with --data, else the paper's 56,320 + 8,192].
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Take the vocabulary from this prepared dataset.
    #[arg(long, conflicts_with = "vocab_size")]
    pub data: Option<PathBuf>,
    /// Untied vocabulary projection.
    #[arg(long)]
    pub untied: bool,
    /// Sequences per micro-batch, for the activation memory [default: the config's].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence [default: the model's max_seq_len].
    #[arg(long)]
    pub seq_len: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ScoreArgs {
    /// A cm3 run directory (its latest checkpoint), a checkpoint directory, or a folder holding
    /// a Hugging Face OPT `model.safetensors` and `config.json`.
    #[arg(long)]
    pub weights: PathBuf,
    /// Token ids, .npy integers [B, T] (or [T]).
    #[arg(long)]
    pub tokens: PathBuf,
    /// Save the logits here as .npy float32 [B, T, vocab].
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    /// Targets with this id are not scored (a cm3 dataset's `<pad>` is 0) [default: score all].
    #[arg(long)]
    pub ignore_id: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn model(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Info(a) => info(a),
        ModelCommand::Score(a) => score(a),
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn info(a: InfoArgs) -> Result<()> {
    let (train, _) = train_config(Some(&a.config), false)?;
    let mut cfg = train.model.clone();
    cfg.vocab_size = match (a.vocab_size, &a.data) {
        (Some(v), _) => v,
        (None, Some(d)) => cm3_train::data::PreparedData::open(d)?.layout.size as usize,
        (None, None) if cfg.vocab_size == 0 => cm3_model::decoder::config::PAPER_VOCAB,
        (None, None) => cfg.vocab_size,
    };
    if a.untied {
        cfg.tie_embeddings = false;
    }
    cfg.validate("model config")?;
    let batch = a.batch.unwrap_or(train.batch_size);
    let seq_len = a.seq_len.unwrap_or(cfg.max_seq_len);
    let p = cfg.param_counts();
    let m = cfg.memory(batch, seq_len);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "config": cfg, "params": p, "memory_bytes": m, "memory_total_bytes": m.total(),
                "batch": batch, "seq_len": seq_len,
            }))?
        );
        return Ok(());
    }
    println!(
        "decoder: {} layers, d_model {}, {} heads, feed-forward {}, {} positions, vocabulary {} \
         ({})",
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.ffn_dim,
        cfg.max_seq_len,
        cfg.vocab_size,
        if cfg.tie_embeddings {
            "tied embeddings"
        } else {
            "untied"
        }
    );
    println!("parameters: {} ({:.1}M)", p.total, p.total as f64 / 1e6);
    println!("  token embedding      {:>14}", p.embeddings);
    println!("  positions            {:>14}", p.positions);
    println!(
        "  per layer            {:>14}  × {} = {}",
        p.per_layer, cfg.n_layers, p.layers
    );
    println!("  vocabulary projection{:>14}", p.lm_head);
    println!("memory to train, float32, batch {batch} × {seq_len} tokens:");
    println!("  weights        {:>9.2} GiB", gib(m.weights));
    println!("  gradients      {:>9.2} GiB", gib(m.gradients));
    println!("  AdamW states   {:>9.2} GiB", gib(m.adam_states));
    println!(
        "  activations    {:>9.2} GiB  (kept for backward, no recomputation: a lower bound)",
        gib(m.activations)
    );
    println!("  total          {:>9.2} GiB", gib(m.total()));
    Ok(())
}

/// The folder with `model.safetensors` + `config.json` that `weights` designates.
fn weights_dir(weights: &Path) -> Result<PathBuf> {
    let config = weights.join(RUN_CONFIG);
    if config.is_file() {
        let text = std::fs::read_to_string(&config)
            .with_context(|| format!("reading {}", config.display()))?;
        if serde_json::from_str::<RunRecord>(&text).is_ok_and(|r| r.format == RUN_FORMAT) {
            return latest_checkpoint(weights)?
                .with_context(|| format!("{}: the run has no checkpoint yet", weights.display()));
        }
    }
    Ok(weights.to_path_buf())
}

fn score(a: ScoreArgs) -> Result<()> {
    let dir = weights_dir(&a.weights)?;
    let device = Device::flex();
    let (model, cfg) = Cm3Decoder::load_dir(&dir, &device).with_context(|| {
        format!(
            "{} (a model folder holds model.safetensors and config.json)",
            dir.display()
        )
    })?;

    let bytes =
        std::fs::read(&a.tokens).with_context(|| format!("reading {}", a.tokens.display()))?;
    let npy = Npy::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", a.tokens.display()))?;
    let ids = npy
        .to_i64()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.tokens.display()))?;
    let (b, t) = match npy.shape.as_slice() {
        [t] => (1, *t),
        [b, t] => (*b, *t),
        other => bail!(
            "{}: shape {other:?}; token ids are [B, T] or [T]",
            a.tokens.display()
        ),
    };
    if let Some((i, id)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id < 0 || id as usize >= cfg.vocab_size)
    {
        bail!(
            "{}: id {id} at position {i} is outside the model's vocabulary of {}",
            a.tokens.display(),
            cfg.vocab_size
        );
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
    let s = match &a.logits_out {
        None => model.score(&cfg, ids, a.ignore_id)?,
        Some(out) => {
            let (s, logits) = model.score_with_logits(&cfg, ids, a.ignore_id)?;
            let logits = cm3_model::read_f32(logits, "reading logits")?;
            write_atomic(out, &encode_f32(&[b, t, cfg.vocab_size], &logits), "score")?;
            s
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "weights": dir, "sequences": b, "tokens_per_sequence": t,
                "loss": s.loss, "perplexity": s.perplexity, "scored_targets": s.tokens,
            }))?
        );
    } else {
        println!(
            "{b} sequence(s) of {t} tokens, {} targets scored: loss {:.6} nats, perplexity {:.4}",
            s.tokens, s.loss, s.perplexity
        );
        if let Some(out) = &a.logits_out {
            println!(
                "logits [{b}, {t}, {}] written to {}",
                cfg.vocab_size,
                out.display()
            );
        }
    }
    Ok(())
}
