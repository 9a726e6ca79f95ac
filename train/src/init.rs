//! `cm3 train --init-from`: a new run that starts from a pretrained model's weights with a fresh
//! optimiser — the paper's SFT stage, which "follows the pretraining stage, employing the same
//! CM3 objective" (§4, Table 4). The pretrained model is a cm3 run (its latest checkpoint), one
//! of its checkpoints, or a Hugging Face OPT folder (`config.json` + `model.safetensors`).
//!
//! A model only continues on data tokenised its way: the vocabulary must be the same ids with
//! the same meaning. When the weights come from a cm3 run, the dataset it trained on is known,
//! and its vocabulary layout (both tokenizers by checksum, the specials, the image offset) must
//! equal the new dataset's; from a bare OPT folder only the vocabulary size can be compared.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cm3_core::vocab::{VOCAB, VocabLayout};
use cm3_model::decoder::{DecoderConfig, HfOptConfig};

use crate::error::{Result, TrainError, io};
use crate::run::{CHECKPOINTS, RUN_CONFIG, RUN_FORMAT, RunRecord, latest_checkpoint};

/// Where the pretrained weights came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitKind {
    /// A cm3 run directory: its latest checkpoint.
    Run,
    /// One checkpoint of a cm3 run.
    Checkpoint,
    /// A Hugging Face OPT folder (no cm3 record: only the vocabulary size is checked).
    HuggingFace,
}

/// `init_from` of a run's `config.json`: what its first weights were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRecord {
    /// What `--init-from` named (absolute).
    pub source: PathBuf,
    pub kind: InitKind,
    /// The folder the weights are read from (`model.safetensors` + `config.json`).
    pub weights: PathBuf,
    /// SHA-256 of its `model.safetensors`: a resume before the first checkpoint reloads these
    /// weights and refuses others.
    pub model_sha256: String,
    /// The dataset the pretrained run trained on (a cm3 run or checkpoint).
    pub dataset: Option<PathBuf>,
}

/// `--init-from` as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFrom {
    /// A cm3 run, one of its checkpoints, or a Hugging Face OPT folder.
    pub path: PathBuf,
    /// The configuration named no model: take the pretrained shape (otherwise the configured
    /// shape must equal it).
    pub take_shape: bool,
}

/// A resolved `--init-from`.
#[derive(Debug, Clone)]
pub struct InitSource {
    pub record: InitRecord,
    /// The pretrained model's shape.
    pub model: DecoderConfig,
    /// The pretrained run's vocabulary layout (None for a Hugging Face folder).
    pub layout: Option<VocabLayout>,
}

fn init_error(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Init {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The run record in `dir`, if `dir` is a cm3 run.
fn run_record(dir: &Path) -> Option<RunRecord> {
    let text = std::fs::read_to_string(dir.join(RUN_CONFIG)).ok()?;
    let record: RunRecord = serde_json::from_str(&text).ok()?;
    (record.format == RUN_FORMAT).then_some(record)
}

fn is_model_folder(dir: &Path) -> bool {
    dir.join("model.safetensors").is_file() && dir.join("config.json").is_file()
}

/// Resolve `--init-from`: a run, a checkpoint or a Hugging Face OPT folder.
pub fn resolve(path: &Path) -> Result<InitSource> {
    let source = std::fs::canonicalize(path).map_err(io("resolving --init-from", path))?;
    let (kind, weights, dataset) = if let Some(record) = run_record(&source) {
        let ckpt = latest_checkpoint(&source)?.ok_or_else(|| {
            init_error(
                &source,
                "a cm3 run without a checkpoint yet: nothing to start from",
            )
        })?;
        (InitKind::Run, ckpt, Some(record.dataset))
    } else if is_model_folder(&source) {
        // A checkpoint sits in `<run>/checkpoints/<name>`: its run names the dataset.
        let run = source
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == CHECKPOINTS))
            .and_then(Path::parent)
            .and_then(run_record);
        match run {
            Some(record) => (InitKind::Checkpoint, source.clone(), Some(record.dataset)),
            None => (InitKind::HuggingFace, source.clone(), None),
        }
    } else {
        return Err(init_error(
            &source,
            format!(
                "neither a cm3 run (a {RUN_CONFIG} of format {RUN_FORMAT}), one of its \
                 checkpoints, nor a Hugging Face OPT folder (config.json + model.safetensors)"
            ),
        ));
    };
    let config_path = weights.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(io("reading", &config_path))?;
    let hf: HfOptConfig = serde_json::from_str(&text)
        .map_err(|e| init_error(&config_path, format!("not an OPT config.json: {e}")))?;
    let model = hf.to_decoder(&config_path.display().to_string())?;
    model.validate(&config_path.display().to_string())?;
    let layout = match &dataset {
        Some(d) => Some(VocabLayout::load(&d.join(VOCAB)).map_err(|e| {
            init_error(
                &source,
                format!(
                    "the vocabulary of the dataset it was trained on ({}) cannot be read, so \
                     the new dataset's cannot be checked against it: {e}",
                    d.display()
                ),
            )
        })?),
        None => None,
    };
    let model_sha256 = cm3_core::fsio::sha256_file(&weights.join("model.safetensors"))?.sha256;
    Ok(InitSource {
        record: InitRecord {
            source,
            kind,
            weights,
            model_sha256,
            dataset,
        },
        model,
        layout,
    })
}

/// What differs between two vocabulary layouts, by name (empty: the same ids, the same meaning).
/// Tokenizer paths may differ; their checksums may not.
pub fn layout_differences(pretrained: &VocabLayout, new: &VocabLayout) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: pretrained {a}, new {b}"));
        }
    };
    cmp(
        "vocabulary size",
        pretrained.size.to_string(),
        new.size.to_string(),
    );
    cmp(
        "text vocabulary size",
        pretrained.text.size.to_string(),
        new.text.size.to_string(),
    );
    cmp(
        "text tokenizer sha256",
        pretrained.text.tokenizer.sha256.clone(),
        new.text.tokenizer.sha256.clone(),
    );
    cmp(
        "special tokens",
        format!("{:?}", pretrained.text.specials),
        format!("{:?}", new.text.specials),
    );
    cmp(
        "image id offset",
        pretrained.image.offset.to_string(),
        new.image.offset.to_string(),
    );
    cmp(
        "image codes",
        pretrained.image.codes.to_string(),
        new.image.codes.to_string(),
    );
    cmp(
        "image code grid",
        pretrained.image.grid.to_string(),
        new.image.grid.to_string(),
    );
    cmp(
        "image tokenizer sha256",
        pretrained.image.tokenizer.sha256.clone(),
        new.image.tokenizer.sha256.clone(),
    );
    out
}

/// The decoder shape fields that differ between two configurations (the initialisation
/// settings are not shape: they do not matter for loaded weights).
pub fn shape_differences(pretrained: &DecoderConfig, asked: &DecoderConfig) -> Vec<String> {
    let mut out = Vec::new();
    let fields = [
        ("vocab_size", pretrained.vocab_size, asked.vocab_size),
        ("d_model", pretrained.d_model, asked.d_model),
        ("n_layers", pretrained.n_layers, asked.n_layers),
        ("n_heads", pretrained.n_heads, asked.n_heads),
        ("ffn_dim", pretrained.ffn_dim, asked.ffn_dim),
        ("max_seq_len", pretrained.max_seq_len, asked.max_seq_len),
    ];
    for (name, a, b) in fields {
        if a != b {
            out.push(format!("{name}: pretrained {a}, configured {b}"));
        }
    }
    if pretrained.tie_embeddings != asked.tie_embeddings {
        out.push(format!(
            "tie_embeddings: pretrained {}, configured {}",
            pretrained.tie_embeddings, asked.tie_embeddings
        ));
    }
    out
}

/// The model of a run started from `init` on a dataset of `layout` and `seq_len`: the
/// pretrained shape. `asked` is the configuration's model; with `take_shape` its shape fields
/// are replaced by the pretrained ones (the configuration named no model), otherwise they must
/// equal them. Every mismatch is listed by name.
pub fn model_for(
    init: &InitSource,
    asked: &DecoderConfig,
    take_shape: bool,
    layout: &VocabLayout,
    seq_len: usize,
    dataset: &Path,
) -> Result<DecoderConfig> {
    let source = &init.record.source;
    let mut problems = Vec::new();
    if init.model.vocab_size != layout.size as usize {
        problems.push(format!(
            "vocabulary size: pretrained {}, the dataset {} has {}",
            init.model.vocab_size,
            dataset.display(),
            layout.size
        ));
    }
    if let Some(pre) = &init.layout {
        problems.extend(layout_differences(pre, layout));
    }
    if init.model.max_seq_len < seq_len {
        problems.push(format!(
            "sequence length: the dataset's sequences are {seq_len} tokens, the pretrained \
             model has {} positions",
            init.model.max_seq_len
        ));
    }
    let mut model = asked.clone();
    if take_shape {
        model = DecoderConfig {
            init_std: asked.init_std,
            init_truncation: asked.init_truncation,
            position_init_std: asked.position_init_std,
            zero_init: asked.zero_init,
            ..init.model.clone()
        };
    } else {
        if model.vocab_size == 0 {
            model.vocab_size = layout.size as usize;
        }
        problems.extend(shape_differences(&init.model, &model));
    }
    problems.dedup();
    if !problems.is_empty() {
        return Err(init_error(
            source,
            format!(
                "cannot be fine-tuned on {} with this configuration: {}",
                dataset.display(),
                problems.join("; ")
            ),
        ));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(text_sha: &str, image_codes: u32) -> VocabLayout {
        serde_json::from_value(serde_json::json!({
            "version": 1,
            "text": {"size": 10, "specials": {"<pad>": 0, "<eos>": 1},
                     "tokenizer": {"path": "a/tokenizer.json", "sha256": text_sha}},
            "image": {"offset": 10, "codes": image_codes, "grid": 2,
                      "tokenizer": {"path": "a/image", "sha256": "i"}},
            "size": 10 + image_codes
        }))
        .expect("a layout")
    }

    #[test]
    fn layout_differences_compare_checksums_not_paths() {
        let a = layout("t", 4);
        let mut moved = a.clone();
        moved.text.tokenizer.path = "elsewhere/tokenizer.json".into();
        moved.image.tokenizer.path = "elsewhere/image".into();
        assert!(layout_differences(&a, &moved).is_empty());
        let d = layout_differences(&a, &layout("u", 8));
        let names: Vec<&str> = d.iter().filter_map(|x| x.split(':').next()).collect();
        assert_eq!(
            names,
            ["vocabulary size", "text tokenizer sha256", "image codes"],
            "{d:?}"
        );
    }

    #[test]
    fn shape_differences_name_every_field() {
        let a = DecoderConfig::preset("tiny").expect("tiny");
        assert!(shape_differences(&a, &a).is_empty());
        let b = DecoderConfig {
            d_model: a.d_model * 2,
            n_layers: a.n_layers + 1,
            tie_embeddings: !a.tie_embeddings,
            ..a.clone()
        };
        let d = shape_differences(&a, &b);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("d_model") && d[1].starts_with("n_layers"));
        assert!(d[2].starts_with("tie_embeddings"));
    }
}
