//! The training loop: micro-batches accumulated to a step, global gradient clipping, AdamW,
//! validation, metrics, atomic checkpoints, resume.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::ModuleVisitor;
use burn::module::{Module, Param, ParamGroup};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use cm3_core::DatasetLock;
use cm3_core::fsio::{sync_dir, write_atomic};
use cm3_model::decoder::{Cm3Decoder, DecoderConfig, HfOptConfig};

use crate::config::{LossOn, TrainConfig};
use crate::data::{DataPosition, PackedSplit, PreparedData, Sampler};
use crate::error::{Result, TrainError, io};
use crate::init::{InitFrom, InitRecord};

/// `<run>/config.json`: what the run trains, on what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub format: String,
    /// The prepared dataset (absolute path).
    pub dataset: PathBuf,
    /// sha256 of its `packed/meta.json` when the run started.
    pub meta_sha256: String,
    pub seq_len: usize,
    /// The resolved configuration (the vocabulary filled in from the dataset).
    pub config: TrainConfig,
    pub tool_version: String,
    /// The pretrained weights the run started from (`--init-from`); absent: random
    /// initialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitRecord>,
}

pub const RUN_FORMAT: &str = "cm3-run/1";
pub const RUN_CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.jsonl";
pub const CHECKPOINTS: &str = "checkpoints";

/// `state.json` of a checkpoint: where training stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps done.
    pub step: u64,
    pub tokens_seen: u64,
    pub position: DataPosition,
    pub loss: f64,
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run directory.
    pub out: PathBuf,
    /// A new run: the dataset and configuration. `None`: resume the run in `out`.
    pub start: Option<(PathBuf, TrainConfig)>,
    /// Start the new run from a pretrained model's weights, with a fresh optimiser (only with
    /// `start`).
    pub init_from: Option<InitFrom>,
    /// Stop (with a checkpoint) after this many steps in this session, e.g. before a scheduler's
    /// time limit; `cm3 train --resume` continues.
    pub stop_after: Option<u64>,
    pub backend: crate::Backend,
    /// Devices of the backend to train on (data parallelism: each takes its share of a step's
    /// micro-batches on its own replica; gradients are summed on the first, which steps the
    /// optimiser). 1: one device.
    pub devices: usize,
    pub progress: bool,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub step: u64,
    pub tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grad_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_perplexity: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub run: PathBuf,
    pub first_step: u64,
    pub last_step: u64,
    pub steps: u64,
    pub tokens_seen: u64,
    pub last_loss: f64,
    pub val_loss: Option<f64>,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub checkpoint: PathBuf,
    pub finished: bool,
}

fn run_error(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Run {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    serde_json::from_str(&text).map_err(|e| run_error(path, format!("unreadable: {e}")))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| run_error(path, format!("serialising: {e}")))?;
    write_atomic(path, (text + "\n").as_bytes(), "train")?;
    Ok(())
}

/// The AdamW of the paper: β 0.9/0.95, ε 1e-8, decoupled decay 0.1 except on the positions.
fn optimizer(cfg: &TrainConfig) -> Result<ModuleOptimizer> {
    let adamw = AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.eps as f32)
        .with_weight_decay(cfg.weight_decay as f32);
    let no_decay = ParamGroup::from_regex("embed_positions")
        .map_err(|e| TrainError::Config(format!("parameter group: {e:?}")))?;
    Ok(adamw
        .init()
        .with_group(no_decay, adamw.with_weight_decay(0.0).build(), None))
}

/// Sum of squared gradients over the model's parameters; the first failed read (a device that
/// failed the backward pass) is kept, since a visitor cannot return it.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
    failed: Option<cm3_model::ModelError>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if self.failed.is_some() {
            return;
        }
        if let Some(g) = self.grads.get::<D>(p.id) {
            match cm3_model::read_scalar(g.square().sum(), "the gradients' norm") {
                Ok(s) => self.sum += f64::from(s),
                Err(e) => self.failed = Some(e),
            }
        }
    }
}

struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(p.id) {
            self.grads.register::<D>(p.id, g.mul_scalar(self.factor));
        }
    }
}

fn ids_tensor(ids: Vec<i64>, batch: usize, seq_len: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids, [batch, seq_len]), device)
}

/// Mean next-token loss over the non-padding targets of `split` (the first `batches`
/// micro-batches of `batch` sequences, all when 0); with `loss` output-only, over the targets
/// marked as outputs.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Cm3Decoder,
    cfg: &DecoderConfig,
    split: &PackedSplit,
    pad: u32,
    loss: LossOn,
    batch: usize,
    batches: usize,
    device: &Device,
) -> Result<f64> {
    let (mut nll, mut count) = (0f64, 0u64);
    let n = split.len();
    let limit = if batches == 0 {
        n
    } else {
        (batches * batch).min(n)
    };
    let mut i = 0;
    while i < limit {
        let b = batch.min(limit - i);
        let mut ids = Vec::with_capacity(b * split.seq_len);
        let mut targets = Vec::new();
        for k in i..i + b {
            let at = ids.len();
            split.read_into(k, &mut ids)?;
            if loss == LossOn::OutputOnly {
                split.targets_into(k, &ids[at..], pad, &mut targets)?;
            }
        }
        let ids = ids_tensor(ids, b, split.seq_len, device);
        let (l, tokens) = if loss == LossOn::OutputOnly {
            let targets = ids_tensor(targets, b, split.seq_len, device);
            model.loss_on(cfg, ids, targets, pad)?
        } else {
            model.loss(cfg, ids, Some(pad))?
        };
        nll += f64::from(cm3_model::read_scalar(l, "the evaluation loss")?) * tokens as f64;
        count += tokens;
        i += b;
    }
    Ok(nll / count.max(1) as f64)
}

struct Run {
    dir: PathBuf,
    record: RunRecord,
    data: PreparedData,
    /// One process per run: a second one would prune and overwrite this one's checkpoints.
    _lock: DatasetLock,
}

/// Lock the run directory `dir` for this process (a clear error naming the holder otherwise).
fn lock_run(dir: &Path) -> Result<DatasetLock> {
    Ok(cm3_core::lock_dir(dir, "training run")?)
}

/// The pretrained weights a run starts from, checked to be the ones it recorded.
fn load_pretrained(init: &InitRecord, cfg: &DecoderConfig, device: &Device) -> Result<Cm3Decoder> {
    let path = init.weights.join("model.safetensors");
    let sha = cm3_core::fsio::sha256_file(&path)?.sha256;
    if sha != init.model_sha256 {
        return Err(TrainError::Init {
            path,
            reason: format!(
                "changed since the run started from it (sha256 {sha}, recorded {}): start a \
                 new run",
                init.model_sha256
            ),
        });
    }
    tracing::info!(weights = %init.weights.display(), "starting from the pretrained model");
    Ok(Cm3Decoder::load(&path, cfg, device)?)
}

fn checkpoint_name(step: u64) -> String {
    format!("step-{step:07}")
}

/// The newest checkpoint of a run (`checkpoints/latest`), if any.
pub fn latest_checkpoint(run: &Path) -> Result<Option<PathBuf>> {
    let latest = run.join(CHECKPOINTS).join("latest");
    match std::fs::read_to_string(&latest) {
        Ok(name) => {
            // A name read from a file: it must stay one folder inside `checkpoints/`.
            let what = format!("checkpoint named in {}", latest.display());
            let dir = run
                .join(CHECKPOINTS)
                .join(cm3_core::names::plain_name(name.trim(), &what)?);
            if !dir.join("state.json").is_file() {
                return Err(run_error(
                    &latest,
                    format!(
                        "names {}, which is not a complete checkpoint",
                        dir.display()
                    ),
                ));
            }
            Ok(Some(dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", &latest)(e)),
    }
}

impl Run {
    fn open(opts: &TrainOptions) -> Result<Self> {
        let dir = &opts.out;
        let config_path = dir.join(RUN_CONFIG);
        match &opts.start {
            Some((dataset, cfg)) => {
                if config_path.exists() {
                    return Err(run_error(
                        dir,
                        "already holds a run: pass --resume to continue it, or choose another \
                         --out",
                    ));
                }
                // Old checkpoints are pruned by name: a folder of them without our record
                // is someone else's.
                if dir.join(CHECKPOINTS).exists() {
                    return Err(run_error(
                        dir,
                        format!(
                            "holds {CHECKPOINTS}/ but no {RUN_CONFIG}, so it is not a cm3 run; \
                             cm3 would prune checkpoints there: choose another --out"
                        ),
                    ));
                }
                cfg.validate()?;
                let mut data = PreparedData::open(dataset)?;
                if cfg.loss == LossOn::OutputOnly {
                    data.open_outputs()?;
                }
                let mut cfg = cfg.clone();
                let size = data.layout.size as usize;
                let init = match &opts.init_from {
                    Some(from) => {
                        let init = crate::init::resolve(&from.path)?;
                        cfg.model = crate::init::model_for(
                            &init,
                            &cfg.model,
                            from.take_shape,
                            &data.layout,
                            data.seq_len,
                            dataset,
                        )?;
                        Some(init.record)
                    }
                    None => None,
                };
                if cfg.model.vocab_size == 0 {
                    cfg.model.vocab_size = size;
                } else if cfg.model.vocab_size != size {
                    return Err(TrainError::Dataset {
                        path: dataset.join("packed/meta.json"),
                        reason: format!(
                            "a vocabulary of {size} ids; the model's is {} (set model.vocab_size \
                             = 0 to take the dataset's)",
                            cfg.model.vocab_size
                        ),
                    });
                }
                if cfg.model.max_seq_len < data.seq_len {
                    return Err(TrainError::Config(format!(
                        "the dataset's sequences are {} tokens, the model's max_seq_len is {}",
                        data.seq_len, cfg.model.max_seq_len
                    )));
                }
                cfg.model.validate("training config")?;
                std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
                let lock = lock_run(dir)?;
                // Checked again under the lock: another process may have started it meanwhile.
                if config_path.exists() {
                    return Err(run_error(
                        dir,
                        "already holds a run: pass --resume to continue it, or choose another \
                         --out",
                    ));
                }
                if let Some(parent) = std::fs::canonicalize(dir)
                    .map_err(io("resolving", dir))?
                    .parent()
                {
                    sync_dir(parent)?;
                }
                let record = RunRecord {
                    format: RUN_FORMAT.into(),
                    dataset: std::fs::canonicalize(dataset).map_err(io("resolving", dataset))?,
                    meta_sha256: data.meta_sha256.clone(),
                    seq_len: data.seq_len,
                    config: cfg,
                    tool_version: env!("CARGO_PKG_VERSION").into(),
                    init_from: init,
                };
                write_json(&config_path, &record)?;
                Ok(Self {
                    dir: dir.clone(),
                    record,
                    data,
                    _lock: lock,
                })
            }
            None => {
                if opts.init_from.is_some() {
                    return Err(run_error(
                        dir,
                        "--init-from starts a new run; a resumed run continues from its own \
                         checkpoints",
                    ));
                }
                if !config_path.is_file() {
                    return Err(run_error(dir, "no run to resume here (no config.json)"));
                }
                let lock = lock_run(dir)?;
                let record: RunRecord = read_json(&config_path)?;
                if record.format != RUN_FORMAT {
                    return Err(run_error(
                        &config_path,
                        format!("format {:?}, this cm3 reads {RUN_FORMAT}", record.format),
                    ));
                }
                let mut data = PreparedData::open(&record.dataset)?;
                if record.config.loss == LossOn::OutputOnly {
                    data.open_outputs()?;
                }
                if data.meta_sha256 != record.meta_sha256 {
                    return Err(TrainError::Dataset {
                        path: record.dataset.join("packed/meta.json"),
                        reason: "changed since the run started (new sequences or another \
                                 packing): resuming would not continue the same data order; \
                                 start a new run"
                            .into(),
                    });
                }
                Ok(Self {
                    dir: dir.clone(),
                    record,
                    data,
                    _lock: lock,
                })
            }
        }
    }

    fn save(
        &self,
        model: &Cm3Decoder,
        optim: &ModuleOptimizer,
        state: &TrainState,
    ) -> Result<PathBuf> {
        let cfg = &self.record.config;
        let root = self.dir.join(CHECKPOINTS);
        let name = checkpoint_name(state.step);
        let tmp = root.join(format!(".{name}.tmp"));
        let fin = root.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
        let record_err = |what: &str, e: String| run_error(&tmp, format!("writing {what}: {e}"));
        model
            .clone()
            .save_file(tmp.join("model.bpk"))
            .map_err(|e| record_err("model.bpk", format!("{e:?}")))?;
        optim
            .save(tmp.join("optim.bpk"))
            .map_err(|e| record_err("optim.bpk", format!("{e:?}")))?;
        // `latest` must never name a checkpoint whose files a power cut could leave empty: synced
        // here rather than trusting the library's writer to do it (Burn 0.22 does; earlier
        // versions did not).
        for f in ["model.bpk", "optim.bpk"] {
            cm3_model::sync_file(&tmp.join(f))?;
        }
        // The same weights as a Hugging Face OPT checkpoint, for `cm3 model score`, generation
        // and `transformers`. (These three are written synced, with their directory.)
        model.valid().save(&tmp.join("model.safetensors"))?;
        write_json(&tmp.join("config.json"), &HfOptConfig::json(&cfg.model))?;
        write_json(&tmp.join("state.json"), state)?;
        sync_dir(&tmp)?;
        if fin.exists() {
            std::fs::remove_dir_all(&fin).map_err(io("removing", &fin))?;
        }
        std::fs::rename(&tmp, &fin).map_err(io("renaming", &tmp))?;
        sync_dir(&root)?;
        sync_dir(&self.dir)?;
        write_atomic(
            &root.join("latest"),
            name.as_bytes(),
            &format!("train-{}", std::process::id()),
        )?;
        prune_checkpoints(&root, &name, cfg.keep_checkpoints)?;
        Ok(fin)
    }
}

/// The step of a checkpoint folder's name (`step-0000042`), if it is one.
fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Keep `current` (what `latest` names) and the newest `keep - 1` checkpoints before it, by step
/// number: past 9,999,999 steps the names outgrow their padding and sort wrongly as strings.
/// Checkpoints after `current` are from a session that stopped before moving `latest`: this one
/// redoes their steps. Unfinished `.step-*.tmp` folders are leftovers too (the run is locked).
fn prune_checkpoints(root: &Path, current: &str, keep: usize) -> Result<()> {
    let current_step = checkpoint_step(current)
        .ok_or_else(|| run_error(root, format!("{current} is not a checkpoint name")))?;
    let mut older: Vec<(u64, PathBuf)> = Vec::new();
    let mut stale: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io("listing", root))? {
        let entry = entry.map_err(io("listing", root))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() || name == current {
            continue;
        }
        match checkpoint_step(&name) {
            Some(step) if step < current_step => older.push((step, path)),
            Some(_) => stale.push(path),
            None if name.starts_with(".step-") && name.ends_with(".tmp") => stale.push(path),
            None => {}
        }
    }
    older.sort();
    let excess = older.len().saturating_sub(keep.saturating_sub(1));
    for path in older.drain(..excess).map(|(_, p)| p).chain(stale) {
        std::fs::remove_dir_all(&path).map_err(io("removing", &path))?;
    }
    Ok(())
}

/// Keep the metrics up to `step` (a resumed run redoes the steps after its checkpoint).
fn trim_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<Metrics>(l).is_ok_and(|m| m.step <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes(), "train")?;
    Ok(())
}

/// What every micro-batch of a step shares.
#[derive(Debug, Clone, Copy)]
struct MicroShape {
    batch: usize,
    seq_len: usize,
    pad: u32,
    output_only: bool,
    /// Targets the whole step scores: each micro-batch's loss is weighted by its share.
    targets: u64,
}

/// The summed gradients and loss of `micro` (ids, scored targets) on one device.
fn micro_gradients(
    model: &Cm3Decoder,
    mcfg: &DecoderConfig,
    micro: Vec<(Vec<i64>, Vec<i64>)>,
    device: &Device,
    shape: MicroShape,
) -> Result<(GradientsParams, f64)> {
    let mut accum = GradientsAccumulator::<Cm3Decoder>::new();
    let mut loss_sum = 0f64;
    for (ids, scored) in micro {
        let ids = ids_tensor(ids, shape.batch, shape.seq_len, device);
        let (loss, n) = if shape.output_only {
            let scored = ids_tensor(scored, shape.batch, shape.seq_len, device);
            model.loss_on(mcfg, ids, scored, shape.pad)?
        } else {
            model.loss(mcfg, ids, Some(shape.pad))?
        };
        let loss = loss.mul_scalar(n as f64 / shape.targets.max(1) as f64);
        loss_sum += f64::from(cm3_model::read_scalar(loss.clone().detach(), "the loss")?);
        let grads = GradientsParams::from_grads(loss.backward(), model);
        accum.accumulate(model, grads);
    }
    Ok((accum.grads(), loss_sum))
}

/// A step's gradients (on the first device) and loss. With several devices, micro-batch i goes
/// to device i mod n, each device works on its own replica of the model in its own thread, as
/// Burn's multi-device strategy does, and the gradients are moved to the first device and
/// summed there: the same sum as one device's, in another order.
fn step_gradients(
    model: &Cm3Decoder,
    mcfg: &DecoderConfig,
    micro: Vec<(Vec<i64>, Vec<i64>)>,
    devices: &[Device],
    shape: MicroShape,
) -> Result<(GradientsParams, f64)> {
    let Some(main) = devices.first() else {
        return Err(TrainError::Config("no device to train on".into()));
    };
    if devices.len() == 1 {
        return micro_gradients(model, mcfg, micro, main, shape);
    }
    let mut shares: Vec<Vec<(Vec<i64>, Vec<i64>)>> = vec![Vec::new(); devices.len()];
    for (i, m) in micro.into_iter().enumerate() {
        shares[i % devices.len()].push(m);
    }
    let results: Vec<Result<(GradientsParams, f64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .into_iter()
            .zip(devices)
            .map(|(share, device)| {
                let replica = model.clone().fork(device);
                s.spawn(move || {
                    let (grads, loss) = micro_gradients(&replica, mcfg, share, device, shape)?;
                    Ok((grads.to_device(main, &replica), loss))
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join().unwrap_or_else(|_| {
                    Err(TrainError::Config(format!(
                        "the thread of device {i} panicked while computing gradients"
                    )))
                })
            })
            .collect()
    });
    let mut accum = GradientsAccumulator::<Cm3Decoder>::new();
    let mut loss_sum = 0f64;
    for r in results {
        let (grads, loss) = r?;
        accum.accumulate(model, grads);
        loss_sum += loss;
    }
    Ok((accum.grads(), loss_sum))
}

/// Train (a new run, or resume one) until the configured steps, or `stop_after` steps.
pub fn train(opts: &TrainOptions) -> Result<TrainReport> {
    let run = Run::open(opts)?;
    let cfg = run.record.config.clone();
    let mcfg = cfg.model.clone();
    let devices = opts.backend.devices(opts.devices)?;
    let eval_device = devices[0].clone();
    // One autodiff device per replica; the first is where the model lives and steps.
    let replicas: Vec<Device> = devices.into_iter().map(Device::autodiff).collect();
    let device = replicas[0].clone();
    let seq_len = run.data.seq_len;
    let pad = run.data.pad;

    let mut optim = optimizer(&cfg)?;
    let resume_from = match opts.start {
        None => latest_checkpoint(&run.dir)?,
        Some(_) => None,
    };
    // A fine-tuning run's first weights are the pretrained model's (also when it is resumed
    // before its first checkpoint); the optimiser starts fresh (Table 4's warmup). Loaded in
    // place of the random initialisation, never beside it (a 7B model twice would not fit).
    let mut model = match (&resume_from, &run.record.init_from) {
        (None, Some(init)) => load_pretrained(init, &mcfg, &device)?,
        _ => Cm3Decoder::init(&mcfg, cfg.seed, &device)?,
    };
    let mut state = TrainState {
        step: 0,
        tokens_seen: 0,
        position: DataPosition {
            epoch: 0,
            offset: 0,
        },
        loss: f64::NAN,
    };
    let metrics_path = run.dir.join(METRICS);
    // The newest checkpoint (a resumed run's); the NaN stop names it.
    let mut checkpoint = PathBuf::new();
    if opts.start.is_none() {
        if let Some(ckpt) = resume_from {
            let load_err = |what: &str, e: String| run_error(&ckpt, format!("{what}: {e}"));
            model = model
                .try_load_file(ckpt.join("model.bpk"))
                .map_err(|e| load_err("model.bpk", format!("{e:?}")))?;
            optim = optim
                .load(ckpt.join("optim.bpk"))
                .map_err(|e| load_err("optim.bpk", format!("{e:?}")))?;
            state = read_json(&ckpt.join("state.json"))?;
            tracing::info!(checkpoint = %ckpt.display(), step = state.step, "resuming");
            checkpoint = ckpt;
        }
        trim_metrics(&metrics_path, state.step)?;
    }
    let first_step = state.step;
    let mut sampler = Sampler::new(cfg.seed, run.data.train.len(), state.position);
    let accumulation = cfg.accumulation(seq_len);
    if accumulation < replicas.len() {
        return Err(TrainError::Config(format!(
            "{} devices need at least as many micro-batches a step, and a step has {accumulation} \
             (batch_tokens / (batch_size × seq_len)): raise batch_tokens or lower batch_size",
            replicas.len()
        )));
    }
    let last = match opts.stop_after {
        Some(n) => (state.step + n).min(cfg.steps),
        None => cfg.steps,
    };
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(io("opening", &metrics_path))?;
    let log = |metrics: &mut std::fs::File, m: &Metrics| -> Result<()> {
        let line = serde_json::to_string(m).map_err(|e| run_error(&metrics_path, e.to_string()))?;
        writeln!(metrics, "{line}").map_err(io("writing", &metrics_path))
    };
    let bar = if opts.progress {
        let b = ProgressBar::new(cfg.steps);
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_position(state.step);
        b
    } else {
        ProgressBar::hidden()
    };
    tracing::info!(
        run = %run.dir.display(),
        params = mcfg.param_counts().total,
        sequences = run.data.train.len(),
        seq_len,
        accumulation,
        from_step = state.step,
        to_step = last,
        "training"
    );

    let started = Instant::now();
    let mut last_val = None;
    while state.step < last {
        let t0 = Instant::now();
        // The step's sequences, and how many targets they score (for the token-weighted mean).
        // (ids, targets: the ids with unscored targets as `<pad>`, or empty for the whole
        // sequence's loss)
        let output_only = cfg.loss == LossOn::OutputOnly;
        let mut micro = Vec::with_capacity(accumulation);
        for _ in 0..accumulation {
            let mut ids = Vec::with_capacity(cfg.batch_size * seq_len);
            let mut scored = Vec::new();
            for _ in 0..cfg.batch_size {
                let (k, at) = (sampler.next_index(), ids.len());
                run.data.train.read_into(k, &mut ids)?;
                if output_only {
                    run.data
                        .train
                        .targets_into(k, &ids[at..], pad, &mut scored)?;
                }
            }
            micro.push((ids, scored));
        }
        let targets: u64 = micro
            .iter()
            .flat_map(|(ids, scored)| if output_only { scored } else { ids }.chunks(seq_len))
            .map(|s| s[1..].iter().filter(|&&t| t != i64::from(pad)).count() as u64)
            .sum();
        let shape = MicroShape {
            batch: cfg.batch_size,
            seq_len,
            pad,
            output_only,
            targets,
        };
        let (mut grads, loss_sum) = step_gradients(&model, &mcfg, micro, &replicas, shape)?;
        if !loss_sum.is_finite() {
            let kept = if checkpoint.as_os_str().is_empty() {
                "no checkpoint was written yet".to_string()
            } else {
                format!("the last good checkpoint is {}", checkpoint.display())
            };
            bar.abandon();
            return Err(TrainError::Diverged(format!(
                "the loss became {loss_sum} at step {}; stopped without saving this step, {kept} \
                 (resume it with a lower lr, or look at the data)",
                state.step + 1
            )));
        }
        let mut norm = SquaredNorm {
            grads: &grads,
            sum: 0.0,
            failed: None,
        };
        model.visit(&mut norm);
        if let Some(e) = norm.failed {
            bar.abandon();
            return Err(e.into());
        }
        let grad_norm = norm.sum.sqrt();
        if cfg.clip_norm > 0.0 && grad_norm > cfg.clip_norm {
            model.visit(&mut ScaleGrads {
                grads: &mut grads,
                factor: cfg.clip_norm / (grad_norm + 1e-6),
            });
        }
        let lr = cfg.lr_at(state.step);
        model = optim.step(lr, model, grads);
        state.step += 1;
        let tokens = (accumulation * cfg.batch_size * seq_len) as u64;
        state.tokens_seen += tokens;
        state.position = sampler.position();
        state.loss = loss_sum;
        let tokens_per_s = tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        log(
            &mut metrics,
            &Metrics {
                step: state.step,
                tokens: state.tokens_seen,
                loss: Some(loss_sum),
                lr: Some(lr),
                grad_norm: Some(grad_norm),
                tokens_per_s: Some(tokens_per_s),
                val_loss: None,
                val_perplexity: None,
            },
        )?;
        bar.set_position(state.step);
        bar.set_message(format!(
            "loss {loss_sum:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"
        ));

        let end = state.step == last;
        if let Some(val) = &run.data.val
            && ((cfg.eval_every > 0 && state.step.is_multiple_of(cfg.eval_every)) || end)
        {
            let v = evaluate(
                &model.valid(),
                &mcfg,
                val,
                pad,
                cfg.loss,
                cfg.batch_size,
                cfg.eval_batches,
                &eval_device,
            )?;
            last_val = Some(v);
            log(
                &mut metrics,
                &Metrics {
                    step: state.step,
                    tokens: state.tokens_seen,
                    loss: None,
                    lr: None,
                    grad_norm: None,
                    tokens_per_s: None,
                    val_loss: Some(v),
                    val_perplexity: Some(v.exp()),
                },
            )?;
            bar.println(format!(
                "step {}: validation loss {v:.4}, perplexity {:.2}",
                state.step,
                v.exp()
            ));
        }
        if state.step.is_multiple_of(cfg.save_every) || end {
            // The metrics up to the checkpoint survive with it (a resume trims those after it).
            metrics.sync_data().map_err(io("fsync", &metrics_path))?;
            checkpoint = run.save(&model, &optim, &state)?;
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let steps = state.step - first_step;
    Ok(TrainReport {
        run: run.dir.clone(),
        first_step,
        last_step: state.step,
        steps,
        tokens_seen: state.tokens_seen,
        last_loss: state.loss,
        val_loss: last_val,
        seconds,
        tokens_per_s: (steps as usize * accumulation * cfg.batch_size * seq_len) as f64
            / seconds.max(1e-9),
        checkpoint,
        finished: state.step >= cfg.steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint_dirs(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Past step 9,999,999 the names outgrow their zero padding: the order is the steps', not the
    /// names'.
    #[test]
    fn pruning_keeps_the_numerically_newest_checkpoints() -> Result<()> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for step in [9_999_998, 9_999_999, 10_000_000] {
            std::fs::create_dir_all(root.join(checkpoint_name(step))).expect("mkdir");
        }
        prune_checkpoints(root, &checkpoint_name(10_000_000), 2)?;
        assert_eq!(checkpoint_dirs(root), ["step-10000000", "step-9999999"]);
        // What `latest` names is kept even when a later checkpoint is left over from a session
        // that stopped before moving `latest` (that and unfinished folders go).
        for left in ["step-10000002", ".step-10000001.tmp"] {
            std::fs::create_dir_all(root.join(left)).expect("mkdir");
        }
        prune_checkpoints(root, &checkpoint_name(10_000_000), 1)?;
        assert_eq!(checkpoint_dirs(root), ["step-10000000"]);
        Ok(())
    }
}
