//! The text tokenizer: a byte-level BPE (GPT-2's pre-tokenisation, no normaliser, so any UTF-8
//! text round-trips exactly) trained with Hugging Face `tokenizers` and saved as a
//! `tokenizer.json` that Python `tokenizers` loads unchanged.
//!
//! The special tokens of [`cm3_core::vocab::special_tokens`] are reserved first (ids 0, 1, ...).
//! Plain text never produces them: a caption containing the literal string `<break>` is encoded
//! as its bytes, not as the break token, because the pipeline inserts specials itself and a
//! caption must not be able to forge a modality switch. (Python users get the same behaviour with
//! `tokenizer.encode_special_tokens = True`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use cm3_core::vocab::{self, TextVocab, TokenizerRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, NormalizerWrapper, PostProcessorWrapper, Tokenizer, TokenizerBuilder, TokenizerImpl,
};

use crate::error::{Result, TokenizeError};

/// How the text BPE is trained. Defaults are the paper's (56,320 entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextTokenizerConfig {
    /// Entries in the vocabulary, special tokens and the 256 byte symbols included. Training
    /// stops earlier when the corpus has no more pairs to merge (reported, not an error).
    pub vocab_size: u32,
    /// A pair must occur this often to be merged.
    pub min_frequency: u64,
    /// Numbered CM3 span sentinels `<mask:0>` ... reserved after the named specials.
    pub sentinels: u32,
}

impl Default for TextTokenizerConfig {
    fn default() -> Self {
        Self {
            vocab_size: 56_320,
            min_frequency: 2,
            sentinels: 8,
        }
    }
}

impl TextTokenizerConfig {
    pub fn validate(&self) -> Result<()> {
        let floor = 256 + 5 + self.sentinels;
        if self.vocab_size < floor {
            return Err(TokenizeError::Invalid(format!(
                "vocab_size {} is too small: the 256 byte symbols and {} special tokens need {floor}",
                self.vocab_size,
                5 + self.sentinels
            )));
        }
        if self.sentinels > 256 {
            return Err(TokenizeError::Invalid(format!(
                "sentinels {} is more than anyone needs (CM3 draws span counts from Poisson(1))",
                self.sentinels
            )));
        }
        Ok(())
    }
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainTextReport {
    pub texts: u64,
    pub bytes: u64,
    /// The size asked for and the size reached.
    pub vocab_size_asked: u32,
    pub vocab_size: u32,
    pub seconds: f64,
}

/// A loaded text tokenizer with its special tokens resolved.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Where it was loaded from (or `<trained>`), for error messages.
    path: PathBuf,
    sha256: String,
    json: String,
    specials: BTreeMap<String, u32>,
    size: u32,
}

impl TextTokenizer {
    /// Train on `texts` (one caption or line each).
    pub fn train<I, S>(texts: I, cfg: &TextTokenizerConfig) -> Result<(Self, TrainTextReport)>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        cfg.validate()?;
        let start = Instant::now();
        let specials: Vec<AddedToken> = vocab::special_tokens(cfg.sentinels)
            .into_iter()
            .map(|s| AddedToken::from(s, true))
            .collect();
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(cfg.vocab_size as usize)
            .min_frequency(cfg.min_frequency)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tok: TokenizerImpl<
            BPE,
            NormalizerWrapper,
            ByteLevel,
            PostProcessorWrapper,
            ByteLevel,
        > = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_post_processor(None)
            .with_decoder(Some(ByteLevel::default().add_prefix_space(false)))
            .build()
            .map_err(|e| TokenizeError::Train(e.to_string()))?;
        let mut texts_seen = 0u64;
        let mut bytes = 0u64;
        let counted = texts.inspect(|t| {
            texts_seen += 1;
            bytes += t.as_ref().len() as u64;
        });
        tok.train(&mut trainer, counted)
            .map_err(|e| TokenizeError::Train(e.to_string()))?;
        if texts_seen == 0 {
            return Err(TokenizeError::Train("no text to train on".into()));
        }
        let json = tok
            .to_string(true)
            .map_err(|e| TokenizeError::Train(e.to_string()))?;
        let me = Self::from_json(json, Path::new("<trained>"))?;
        let report = TrainTextReport {
            texts: texts_seen,
            bytes,
            vocab_size_asked: cfg.vocab_size,
            vocab_size: me.size,
            seconds: start.elapsed().as_secs_f64(),
        };
        if me.size < cfg.vocab_size {
            tracing::warn!(
                asked = cfg.vocab_size,
                reached = me.size,
                "the corpus ran out of pairs to merge before the vocabulary was full; train on more \
                 text (--input) for the full size"
            );
        }
        Ok((me, report))
    }

    /// Load a `tokenizer.json` and check that it has this layout's special tokens.
    pub fn load(path: &Path) -> Result<Self> {
        let json = std::fs::read_to_string(path).map_err(|e| TokenizeError::Io {
            op: "reading",
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_json(json, path)
    }

    fn from_json(json: String, path: &Path) -> Result<Self> {
        let bad = |reason: String| TokenizeError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let mut inner = Tokenizer::from_str(&json)
            .map_err(|e| bad(format!("not a Hugging Face tokenizer.json: {e}")))?;
        // Specials are inserted by the pipeline only; text that spells one is just text.
        inner.set_encode_special_tokens(true);
        let size = u32::try_from(inner.get_vocab_size(true))
            .map_err(|_| bad("vocabulary larger than 2^32".into()))?;
        let added = inner.get_added_tokens_decoder();
        let mut specials = BTreeMap::new();
        let named = [
            vocab::PAD,
            vocab::EOS,
            vocab::BREAK,
            vocab::MASK,
            vocab::INFILL,
        ];
        let sentinels = (0..)
            .map(vocab::sentinel)
            .take_while(|s| inner.token_to_id(s).is_some());
        for name in named.iter().map(|s| s.to_string()).chain(sentinels) {
            let Some(id) = inner.token_to_id(&name) else {
                return Err(bad(format!(
                    "has no {name} token: it was not made for cm3's vocabulary layout (train one \
                     with `cm3 tokenizer train-text`)"
                )));
            };
            if !added.get(&id).is_some_and(|t| t.special) {
                return Err(bad(format!(
                    "{name} (id {id}) is not a special token, so plain text could produce it"
                )));
            }
            specials.insert(name, id);
        }
        let sha256 = hex::encode(Sha256::digest(json.as_bytes()));
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            sha256,
            json,
            specials,
            size,
        })
    }

    /// Write `tokenizer.json` atomically; returns its SHA-256 (what the layout records).
    pub fn save(&self, path: &Path) -> Result<String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| TokenizeError::Io {
                op: "creating",
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        cm3_core::fsio::write_atomic(path, self.json.as_bytes(), "tokenizer")?;
        Ok(self.sha256.clone())
    }

    /// Ids of `text`, specials never produced.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizeError::Tokenizer {
                path: self.path.clone(),
                reason: format!("encoding {:?}: {e}", short(text)),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids of many texts (in parallel inside `tokenizers`).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .inner
            .encode_batch_fast(texts.to_vec(), false)
            .map_err(|e| TokenizeError::Tokenizer {
                path: self.path.clone(),
                reason: format!("encoding a batch: {e}"),
            })?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Text of `ids`; special tokens are written as their names. Ids outside the text vocabulary
    /// (image codes, garbage) are an error, never silently skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id >= self.size) {
            return Err(TokenizeError::Decode(format!(
                "id {id} at position {i} is outside the text vocabulary of {} entries",
                self.size
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizeError::Decode(e.to_string()))
    }

    /// Entries, special tokens included.
    pub fn vocab_size(&self) -> u32 {
        self.size
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn special(&self, name: &str) -> Option<u32> {
        self.specials.get(name).copied()
    }

    /// The text part of the vocabulary layout; `path` is where the file lives (relative to the
    /// dataset directory when it is inside it).
    pub fn vocab(&self, path: &str) -> TextVocab {
        TextVocab {
            size: self.size,
            specials: self.specials.clone(),
            tokenizer: TokenizerRef {
                path: path.to_string(),
                sha256: self.sha256.clone(),
            },
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let words = [
            "a", "cat", "sat", "on", "the", "mat", "dog", "red", "ball", "ça", "日本",
        ];
        (0..400)
            .map(|i| {
                (0..6)
                    .map(|j| words[(i * 7 + j * 3 + i / 5) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn small() -> TextTokenizerConfig {
        TextTokenizerConfig {
            vocab_size: 300,
            min_frequency: 1,
            sentinels: 4,
        }
    }

    #[test]
    fn specials_come_first_and_plain_text_never_produces_them() {
        let (tok, report) = TextTokenizer::train(corpus().iter(), &small()).expect("train");
        assert_eq!(report.texts, 400);
        assert!(
            report.vocab_size <= 300 && report.vocab_size > 270,
            "{report:?}"
        );
        let names = vocab::special_tokens(4);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(tok.special(name), Some(i as u32), "{name}");
        }
        let break_id = tok.special(vocab::BREAK).expect("break");
        for text in [
            "<break>",
            "a cat<break>sat",
            "<eos><pad><mask:0><infill>",
            "<mask>",
        ] {
            let ids = tok.encode(text).expect("encode");
            assert!(
                ids.iter().all(|&id| id >= names.len() as u32),
                "{text:?} produced a special: {ids:?}"
            );
            assert_eq!(tok.decode(&ids).expect("decode"), text);
        }
        // The pipeline's own specials decode to their names.
        let mut ids = tok.encode("a cat").expect("encode");
        ids.push(break_id);
        assert_eq!(tok.decode(&ids).expect("decode"), "a cat<break>");
    }

    #[test]
    fn ids_outside_the_text_vocabulary_are_refused() {
        let (tok, _) = TextTokenizer::train(corpus().iter(), &small()).expect("train");
        let e = tok
            .decode(&[5, tok.vocab_size()])
            .expect_err("out of range");
        assert!(e.to_string().contains("position 1"), "{e}");
    }

    #[test]
    fn a_tokenizer_without_the_layouts_specials_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let (tok, _) = TextTokenizer::train(corpus().iter(), &small()).expect("train");
        let path = dir.path().join("tokenizer.json");
        let sha = tok.save(&path).expect("save");
        let back = TextTokenizer::load(&path).expect("load");
        assert_eq!(back.sha256(), sha);
        assert_eq!(
            back.encode("the red ball").expect("a"),
            tok.encode("the red ball").expect("b")
        );

        // The same file with <break> renamed: another layout.
        let other = std::fs::read_to_string(&path)
            .expect("read")
            .replace("<break>", "<sep>");
        std::fs::write(&path, other).expect("write");
        let e = TextTokenizer::load(&path).expect_err("no break");
        assert!(e.to_string().contains("has no <break> token"), "{e}");
        std::fs::write(&path, "{}").expect("write");
        let e = TextTokenizer::load(&path).expect_err("junk");
        assert!(
            e.to_string().contains("not a Hugging Face tokenizer.json"),
            "{e}"
        );
    }

    #[test]
    fn too_small_a_vocabulary_is_refused() {
        let cfg = TextTokenizerConfig {
            vocab_size: 200,
            ..small()
        };
        let e = TextTokenizer::train(corpus().iter(), &cfg).expect_err("small");
        assert!(e.to_string().contains("too small"), "{e}");
    }
}
