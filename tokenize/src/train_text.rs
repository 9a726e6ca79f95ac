//! `cm3 tokenizer train-text <dataset>`: train the text BPE on the dataset's captions (or on
//! given text files) and save it into the dataset, with the settings and the corpus it saw.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::{Array, StringArray};
use cm3_core::schema::{column, read_columns};
use cm3_core::{DatasetDir, WorkerSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TokenizeError};
use crate::text::{TextTokenizer, TextTokenizerConfig, TrainTextReport};

/// Where the text tokenizer lives, relative to the dataset directory.
pub const TEXT_TOKENIZER: &str = "tokenizer/text/tokenizer.json";
/// The record of how it was trained, beside it.
pub const TEXT_TOKENIZER_RECORD: &str = "tokenizer/text/train.json";

#[derive(Debug, Clone, Default)]
pub struct TrainTextOptions {
    /// Train on these files (one text a line) instead of the dataset's captions.
    pub inputs: Vec<PathBuf>,
    /// Replace an existing tokenizer (tokens made with the old one will then be refused).
    pub overwrite: bool,
}

/// One corpus file, identified by its checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusFile {
    pub path: String,
    pub sha256: String,
    pub lines: u64,
}

/// Saved beside `tokenizer.json`: the settings, the corpus and what training reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainTextRecord {
    pub config: TextTokenizerConfig,
    /// `captions` (the dataset's ingested pairs) or `files`.
    pub corpus: String,
    pub files: Vec<CorpusFile>,
    pub report: TrainTextReport,
    pub tokenizer_sha256: String,
    pub tool_version: String,
}

/// Train and save; returns the record (also written to [`TEXT_TOKENIZER_RECORD`]).
pub fn train_text(
    root: &Path,
    cfg: &TextTokenizerConfig,
    opts: &TrainTextOptions,
) -> Result<TrainTextRecord> {
    cfg.validate()?;
    let ds = DatasetDir::open(root)?;
    let _lock = ds.lock("tokenizer", &WorkerSpec::default())?;
    let out = ds.path(TEXT_TOKENIZER);
    if out.exists() && !opts.overwrite {
        return Err(TokenizeError::Dataset {
            path: out,
            reason: "a text tokenizer already exists; pass --overwrite to train a new one (tokens \
                     made with the old one will then have to be remade)"
                .into(),
        });
    }
    let (texts, corpus, files) = if opts.inputs.is_empty() {
        (captions(&ds)?, "captions", Vec::new())
    } else {
        let (texts, files) = read_files(&opts.inputs)?;
        (texts, "files", files)
    };
    if texts.is_empty() {
        return Err(TokenizeError::Dataset {
            path: root.to_path_buf(),
            reason: format!("no text to train on (corpus: {corpus})"),
        });
    }
    tracing::info!(
        texts = texts.len(),
        corpus,
        vocab_size = cfg.vocab_size,
        "training the text BPE"
    );
    let (tok, report) = TextTokenizer::train(texts.iter(), cfg)?;
    let record = TrainTextRecord {
        config: cfg.clone(),
        corpus: corpus.into(),
        files,
        report,
        tokenizer_sha256: tok.sha256().to_string(),
        tool_version: cm3_core::TOOL_VERSION.into(),
    };
    // The record first, the tokenizer last: the tokenizer's presence is what says training is
    // done (`cm3 build` keeps an existing one), so a kill between the two writes must leave no
    // tokenizer, and a rerun then trains again and replaces both temporary files (a kill after
    // the tokenizer left the record's temporary file behind, and no record).
    let rec_path = ds.path(TEXT_TOKENIZER_RECORD);
    let mut bytes = serde_json::to_vec_pretty(&record)
        .map_err(|e| TokenizeError::Train(format!("serialising the record: {e}")))?;
    bytes.push(b'\n');
    if let Some(dir) = rec_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TokenizeError::Io {
            op: "creating",
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    cm3_core::fsio::write_atomic(&rec_path, &bytes, "tokenizer")?;
    tok.save(&out)?;
    Ok(record)
}

/// Every caption of the ingested pairs, shard by shard in name order.
pub fn captions(ds: &DatasetDir) -> Result<Vec<String>> {
    let manifest = ds.load_manifest()?;
    let Some(ingest) = manifest.stages.get("ingest") else {
        return Err(TokenizeError::Dataset {
            path: ds.root().to_path_buf(),
            reason: "no ingested pairs yet: run `cm3 ingest` first, or train on files with --input"
                .into(),
        });
    };
    let mut out = Vec::new();
    for shard in ingest.shards.values() {
        let path = ds.path(&shard.file);
        for batch in read_columns(&path, &["caption"])? {
            let Some(col) = column::<StringArray>(&batch, "caption") else {
                return Err(TokenizeError::Dataset {
                    path: path.clone(),
                    reason: "column caption is not a string column".into(),
                });
            };
            out.extend(
                (0..col.len())
                    .filter(|&i| col.is_valid(i))
                    .map(|i| col.value(i).to_string()),
            );
        }
    }
    Ok(out)
}

/// Non-empty lines of the files (one text a line), with each file's checksum.
fn read_files(paths: &[PathBuf]) -> Result<(Vec<String>, Vec<CorpusFile>)> {
    let mut texts = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        let io = |op, e| TokenizeError::Io {
            op,
            path: path.clone(),
            source: e,
        };
        let f = std::fs::File::open(path).map_err(|e| io("opening", e))?;
        let mut hash = Sha256::new();
        let mut lines = 0u64;
        for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
            let line = line.map_err(|e| io("reading", e))?;
            hash.update(&line);
            hash.update(b"\n");
            let text = String::from_utf8(line).map_err(|_| TokenizeError::Tokenizer {
                path: path.clone(),
                reason: format!("line {} is not UTF-8", n + 1),
            })?;
            let text = text.strip_suffix('\r').unwrap_or(&text);
            if !text.trim().is_empty() {
                texts.push(text.to_string());
                lines += 1;
            }
        }
        files.push(CorpusFile {
            path: std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            sha256: hex::encode(hash.finalize()),
            lines,
        });
    }
    Ok((texts, files))
}
