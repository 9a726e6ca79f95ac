//! OpenAI CLIP's byte-level BPE tokenizer (`clip/simple_tokenizer.py`): ftfy + HTML clean-up,
//! whitespace collapsed, lower-cased, split by CLIP's pattern, each piece byte-encoded and merged by
//! the 48,894 ranked merges of `bpe_simple_vocab_16e6.txt.gz`. 49,408 ids; `<|startoftext|>` is
//! 49406 and `<|endoftext|>` 49407.
use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use regex::Regex;

use crate::error::{EmbedError, Result};
use crate::ftfy::fix_text;

pub const START_OF_TEXT: u32 = 49406;
pub const END_OF_TEXT: u32 = 49407;
/// CLIP's text context: start token, up to 75 BPE tokens, end token.
pub const CONTEXT_LENGTH: usize = 77;
const VOCAB_SIZE: usize = 49408;
/// Merges used by CLIP: lines 1..=48894 of the vocabulary file (49152 - 256 - 2).
const N_MERGES: usize = 49152 - 256 - 2;

static OPENAI_VOCAB: &[u8] = include_bytes!("../assets/bpe_simple_vocab_16e6.txt.gz");

/// GPT-2's reversible byte -> printable character table, in CLIP's vocabulary order: printable
/// bytes first (ascending), then the others (ascending) mapped to U+0100 onwards.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let mut out: Vec<(u8, char)> = (0..256u32)
        .filter(|&b| printable(b))
        .map(|b| (b as u8, char::from_u32(b).unwrap_or('\0')))
        .collect();
    let others = (0..256u32).filter(|&b| !printable(b));
    for (n, b) in others.enumerate() {
        out.push((b as u8, char::from_u32(256 + n as u32).unwrap_or('\0')));
    }
    out
}

/// The tokenizer; cheap to share between threads.
#[derive(Debug)]
pub struct ClipTokenizer {
    /// Vocabulary id of each byte's symbol (add 256 for the word-final `</w>` form).
    byte_id: [u32; 256],
    byte_decoder: HashMap<char, u8>,
    decoder: Vec<String>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    pattern: Regex,
}

impl ClipTokenizer {
    /// The tokenizer with OpenAI's vocabulary, embedded in the binary.
    pub fn openai() -> &'static ClipTokenizer {
        static TOK: OnceLock<ClipTokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            // The embedded file is checked by the tests; failing here would be a build defect.
            ClipTokenizer::from_gz(OPENAI_VOCAB, "embedded bpe_simple_vocab_16e6.txt.gz")
                .expect("embedded CLIP vocabulary is valid")
        })
    }

    /// Build from a gzip-compressed `bpe_simple_vocab_16e6.txt.gz`.
    pub fn from_gz(gz: &[u8], what: &str) -> Result<Self> {
        let bad = |reason: String| EmbedError::Vocabulary {
            what: what.to_string(),
            reason,
        };
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("not a gzip'd UTF-8 text: {e}")))?;
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < N_MERGES + 1 {
            return Err(bad(format!(
                "{} lines, expected at least {}",
                lines.len(),
                N_MERGES + 1
            )));
        }
        let bytes = bytes_to_unicode();
        let mut decoder: Vec<String> = bytes.iter().map(|(_, c)| c.to_string()).collect();
        decoder.extend(bytes.iter().map(|(_, c)| format!("{c}</w>")));
        let mut byte_id = [0u32; 256];
        for (i, (b, _)) in bytes.iter().enumerate() {
            byte_id[*b as usize] = i as u32;
        }
        let mut pairs = Vec::with_capacity(N_MERGES);
        for (i, line) in lines[1..=N_MERGES].iter().enumerate() {
            let mut it = line.split(' ');
            let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
                return Err(bad(format!(
                    "line {} is not a merge of two symbols: {line:?}",
                    i + 2
                )));
            };
            pairs.push((a.to_string(), b.to_string()));
            decoder.push(format!("{a}{b}"));
        }
        decoder.push("<|startoftext|>".into());
        decoder.push("<|endoftext|>".into());
        debug_assert_eq!(decoder.len(), VOCAB_SIZE);
        let encoder: HashMap<String, u32> = decoder
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let mut merges = HashMap::with_capacity(N_MERGES);
        for (rank, (a, b)) in pairs.iter().enumerate() {
            let id = |s: &str| {
                encoder
                    .get(s)
                    .copied()
                    .ok_or_else(|| bad(format!("merge symbol {s:?} is not in the vocabulary")))
            };
            let merged = id(&format!("{a}{b}"))?;
            merges.insert((id(a)?, id(b)?), (rank as u32, merged));
        }
        let pattern = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            byte_decoder: bytes.iter().map(|&(b, c)| (c, b)).collect(),
            byte_id,
            decoder,
            merges,
            pattern,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// BPE ids of `text`, without start and end tokens (`SimpleTokenizer.encode`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean(text);
        let mut out = Vec::new();
        for m in self.pattern.find_iter(&cleaned) {
            let piece = m.as_str();
            match piece {
                "<|startoftext|>" => out.push(START_OF_TEXT),
                "<|endoftext|>" => out.push(END_OF_TEXT),
                _ => self.bpe(piece, &mut out),
            }
        }
        out
    }

    /// CLIP's model input for `text`: start token, ids, end token, zero padding to 77; longer texts
    /// are cut with the end token kept (`clip.tokenize(..., truncate=True)`). Also returns whether
    /// the text was truncated.
    pub fn tokenize_77(&self, text: &str) -> ([u32; CONTEXT_LENGTH], bool) {
        let ids = self.encode(text);
        let mut row = [0u32; CONTEXT_LENGTH];
        row[0] = START_OF_TEXT;
        let n = ids.len().min(CONTEXT_LENGTH - 2);
        row[1..=n].copy_from_slice(&ids[..n]);
        row[n + 1] = END_OF_TEXT;
        (row, ids.len() > CONTEXT_LENGTH - 2)
    }

    /// Text of ids (`SimpleTokenizer.decode`): word ends become spaces.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(s) = self.decoder.get(id as usize) else {
                continue;
            };
            for c in s.chars() {
                if let Some(&b) = self.byte_decoder.get(&c) {
                    bytes.push(b);
                } else {
                    bytes.extend_from_slice(c.to_string().as_bytes());
                }
            }
        }
        String::from_utf8_lossy(&bytes).replace("</w>", " ")
    }

    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let bytes = piece.as_bytes();
        let mut word: Vec<u32> = Vec::with_capacity(bytes.len());
        for (i, &b) in bytes.iter().enumerate() {
            // Ids 0..256 are the byte symbols, 256..512 the same with `</w>`.
            let id = self.byte_id[b as usize];
            word.push(if i + 1 == bytes.len() { id + 256 } else { id });
        }
        loop {
            // The lowest-ranked adjacent pair, merged everywhere (left to right), as CLIP does.
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.merges
                        .get(&(w[0], w[1]))
                        .map(|&(rank, merged)| (rank, w[0], w[1], merged))
                })
                .min();
            let Some((_, a, b, merged)) = best else { break };
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
            if word.len() == 1 {
                break;
            }
        }
        out.extend(word);
    }
}

/// `whitespace_clean(basic_clean(text)).lower()`.
fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = htmlize::unescape(htmlize::unescape(&fixed).as_ref()).into_owned();
    let collapsed: Vec<&str> = unescaped.split_whitespace().collect();
    collapsed.join(" ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_world_matches_the_clip_notebook() {
        // The notebook prints clip.tokenize("Hello World!") = [49406, 3306, 1002, 256, 49407, 0...].
        let t = ClipTokenizer::openai();
        assert_eq!(t.vocab_size(), 49408);
        let (row, cut) = t.tokenize_77("Hello World!");
        assert_eq!(&row[..6], &[49406, 3306, 1002, 256, 49407, 0]);
        assert!(!cut);
    }

    #[test]
    fn long_text_keeps_the_end_token() {
        let t = ClipTokenizer::openai();
        let (row, cut) = t.tokenize_77(&"word ".repeat(200));
        assert!(cut);
        assert_eq!(row[76], END_OF_TEXT);
        assert!(row[1..76].iter().all(|&id| id != 0 && id != END_OF_TEXT));
    }
}
