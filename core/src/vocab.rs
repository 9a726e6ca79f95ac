//! The one token id space shared by every stage after tokenisation and by the model.
//!
//! Text ids come first: the text tokenizer's whole vocabulary, whose first entries are the special
//! tokens (`<pad>`, `<eos>`, `<break>`, `<mask>`, `<infill>` and the numbered CM3 sentinels
//! `<mask:0>`, `<mask:1>`, ...). The image tokenizer's codes follow at a fixed offset, the text
//! vocabulary's size. Sizes come from the tokenizers' own files when the layout is made, and the
//! layout is saved in the dataset directory (`tokenizer/vocab.json`) so that packing, training and
//! generation read the layout the data was made with, never constants of their own.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// Where the layout is saved, relative to the dataset directory.
pub const VOCAB: &str = "tokenizer/vocab.json";

/// The padding token (also what a packed sequence is filled with).
pub const PAD: &str = "<pad>";
/// End of a document; `<eos> text <break>` starts a generation (paper, Figure 9).
pub const EOS: &str = "<eos>";
/// The transition between modalities inside a document (paper §2.1).
pub const BREAK: &str = "<break>";
/// The marker users type in `cm3 generate infill` text where the span goes. It is in no training
/// sequence and is never given to the model: masked text becomes the sentinel `<mask:k>`.
pub const MASK: &str = "<mask>";
/// Marks where the masked spans are appended at the end of a causal-masked example.
pub const INFILL: &str = "<infill>";

/// The reserved special tokens, in id order, with `sentinels` numbered span sentinels.
pub fn special_tokens(sentinels: u32) -> Vec<String> {
    let mut out: Vec<String> = [PAD, EOS, BREAK, MASK, INFILL]
        .iter()
        .map(|s| s.to_string())
        .collect();
    out.extend((0..sentinels).map(sentinel));
    out
}

/// The name of CM3 span sentinel `i`.
pub fn sentinel(i: u32) -> String {
    format!("<mask:{i}>")
}

/// Where a tokenizer's file came from and which file it was (so that tokens made by one are never
/// mixed with tokens made by another).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerRef {
    /// The file, relative to the dataset directory when it lives there.
    pub path: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// The text part of the id space: ids `0 .. size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextVocab {
    pub size: u32,
    /// Special token name → id; every one is below `size`.
    pub specials: BTreeMap<String, u32>,
    pub tokenizer: TokenizerRef,
}

/// The image part: ids `offset .. offset + codes`, one per VQ code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageVocab {
    pub offset: u32,
    pub codes: u32,
    /// Codes per side for one image at the tokenizer's resolution (32 for 256² at f8).
    pub grid: u32,
    pub tokenizer: TokenizerRef,
}

/// The vocabulary layout saved beside the tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabLayout {
    pub version: u32,
    pub text: TextVocab,
    pub image: ImageVocab,
    /// Every id is below this: text size + image codes.
    pub size: u32,
}

impl VocabLayout {
    pub const VERSION: u32 = 1;

    /// Put the image codes after the text vocabulary and check the specials.
    pub fn new(text: TextVocab, codes: u32, grid: u32, image: TokenizerRef) -> Result<Self> {
        let bad = |reason: String| CoreError::Vocab { reason };
        for name in [PAD, EOS, BREAK, MASK, INFILL] {
            match text.specials.get(name) {
                None => {
                    return Err(bad(format!(
                        "the text tokenizer {} has no {name} token",
                        text.tokenizer.path
                    )));
                }
                Some(&id) if id >= text.size => {
                    return Err(bad(format!(
                        "{name} has id {id}, outside the text vocabulary of {}",
                        text.size
                    )));
                }
                Some(_) => {}
            }
        }
        if codes == 0 || grid == 0 {
            return Err(bad("the image tokenizer has no codes".into()));
        }
        let size = text
            .size
            .checked_add(codes)
            .ok_or_else(|| bad("vocabulary larger than 2^32".into()))?;
        Ok(Self {
            version: Self::VERSION,
            image: ImageVocab {
                offset: text.size,
                codes,
                grid,
                tokenizer: image,
            },
            text,
            size,
        })
    }

    /// The id of a special token (one of the constants of this module, or a sentinel).
    pub fn special(&self, name: &str) -> Result<u32> {
        self.text
            .specials
            .get(name)
            .copied()
            .ok_or_else(|| CoreError::Vocab {
                reason: format!("the vocabulary has no {name} token"),
            })
    }

    /// The numbered span sentinels, in order (`<mask:0>`, `<mask:1>`, ...).
    pub fn sentinels(&self) -> Vec<u32> {
        (0..)
            .map_while(|i| self.text.specials.get(&sentinel(i)).copied())
            .collect()
    }

    /// The token of image code `code`.
    pub fn image_token(&self, code: u32) -> Result<u32> {
        if code >= self.image.codes {
            return Err(CoreError::Vocab {
                reason: format!(
                    "image code {code} out of range (the image tokenizer has {})",
                    self.image.codes
                ),
            });
        }
        Ok(self.image.offset + code)
    }

    /// The image code of a token, if it is one.
    pub fn image_code(&self, token: u32) -> Option<u32> {
        token
            .checked_sub(self.image.offset)
            .filter(|&c| c < self.image.codes)
    }

    /// Whether `token` is a text token (including the specials).
    pub fn is_text(&self, token: u32) -> bool {
        token < self.text.size
    }

    /// Tokens per image at the tokenizer's resolution (1,024 for 32 × 32).
    pub fn image_tokens(&self) -> u32 {
        self.image.grid * self.image.grid
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io("reading", path, e))?;
        let layout: Self = serde_json::from_str(&text).map_err(|e| CoreError::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        if layout.version != Self::VERSION {
            return Err(CoreError::Vocab {
                reason: format!(
                    "{} has layout version {}, this cm3 reads {}",
                    path.display(),
                    layout.version,
                    Self::VERSION
                ),
            });
        }
        if layout.image.offset != layout.text.size
            || layout.size != layout.text.size + layout.image.codes
        {
            return Err(CoreError::Vocab {
                reason: format!(
                    "{}: inconsistent sizes (text {}, image offset {}, codes {}, total {})",
                    path.display(),
                    layout.text.size,
                    layout.image.offset,
                    layout.image.codes,
                    layout.size
                ),
            });
        }
        Ok(layout)
    }

    /// Written atomically (temporary name, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| CoreError::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        bytes.push(b'\n');
        crate::fsio::write_atomic(path, &bytes, "vocab").map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(size: u32, sentinels: u32) -> TextVocab {
        TextVocab {
            size,
            specials: special_tokens(sentinels).into_iter().zip(0..).collect(),
            tokenizer: TokenizerRef {
                path: "tokenizer/text/tokenizer.json".into(),
                sha256: "00".into(),
            },
        }
    }

    fn image() -> TokenizerRef {
        TokenizerRef {
            path: "tokenizer/image/model.safetensors".into(),
            sha256: "11".into(),
        }
    }

    #[test]
    fn image_codes_follow_the_text_vocabulary() {
        let v = VocabLayout::new(text(56_320, 8), 8_192, 32, image()).expect("layout");
        assert_eq!(v.size, 64_512);
        assert_eq!(v.image_token(0).expect("code"), 56_320);
        assert_eq!(v.image_token(8_191).expect("code"), 64_511);
        assert!(v.image_token(8_192).is_err());
        assert_eq!(v.image_code(56_319), None);
        assert_eq!(v.image_code(56_321), Some(1));
        assert_eq!(v.image_code(64_512), None);
        assert_eq!(v.image_tokens(), 1_024);
        assert_eq!(v.special(BREAK).expect("break"), 2);
        assert_eq!(v.sentinels(), (5..13).collect::<Vec<_>>());
        assert!(v.is_text(4) && !v.is_text(56_320));
    }

    #[test]
    fn a_layout_without_the_specials_or_with_bad_sizes_is_refused() {
        let mut t = text(100, 0);
        t.specials.remove(INFILL);
        let e = VocabLayout::new(t, 16, 4, image()).expect_err("no infill");
        assert!(e.to_string().contains("<infill>"), "{e}");

        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("vocab.json");
        let mut v = VocabLayout::new(text(100, 2), 16, 4, image()).expect("layout");
        v.save(&p).expect("save");
        assert_eq!(VocabLayout::load(&p).expect("load"), v);
        v.image.offset = 99;
        v.save(&p).expect("save");
        let e = VocabLayout::load(&p).expect_err("inconsistent");
        assert!(e.to_string().contains("inconsistent"), "{e}");
    }
}
