//! Query dropout (paper §2.1): "we use query dropout, which drops some tokens of the query used in
//! retrieval (20% of tokens)". Each CLIP BPE token of the caption is dropped independently with
//! probability `p`, from the pair's own seeded stream; the start and end tokens are kept, and the
//! result is cut to CLIP's 77-token context as `cm3 embed` cuts captions.
use cm3_embed::{CONTEXT_LENGTH, END_OF_TEXT, START_OF_TEXT};

use crate::rng::{STREAM_DROPOUT, SplitMix64};

/// A caption's text query after dropout: the CLIP encoder's input row and what was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedQuery {
    pub row: [u32; CONTEXT_LENGTH],
    /// BPE tokens of the caption (start and end tokens not counted).
    pub tokens: u32,
    /// How many of them were dropped.
    pub dropped: u32,
}

/// Drop each of `tokens` (BPE ids without start/end) with probability `p`, seeded by the run's
/// `seed` and the pair `id`. A caption is never emptied entirely: when every token would be
/// dropped, one of them (chosen from the same stream) is kept, so that the query still says
/// something about the caption.
pub fn query_dropout(tokens: &[u32], p: f64, seed: u64, id: u64) -> DroppedQuery {
    let mut rng = SplitMix64::for_pair(seed, STREAM_DROPOUT, id);
    let keep: Vec<bool> = tokens.iter().map(|_| rng.next_f64() >= p).collect();
    let mut kept: Vec<u32> = tokens
        .iter()
        .zip(&keep)
        .filter(|&(_, &k)| k)
        .map(|(&t, _)| t)
        .collect();
    if kept.is_empty() && !tokens.is_empty() {
        kept.push(tokens[rng.below(tokens.len() as u64) as usize]);
    }
    let dropped = (tokens.len() - kept.len()) as u32;
    let mut row = [0u32; CONTEXT_LENGTH];
    row[0] = START_OF_TEXT;
    let n = kept.len().min(CONTEXT_LENGTH - 2);
    row[1..=n].copy_from_slice(&kept[..n]);
    row[n + 1] = END_OF_TEXT;
    DroppedQuery {
        row,
        tokens: tokens.len() as u32,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_dropout_is_clip_tokenisation() {
        let tok = cm3_embed::ClipTokenizer::openai();
        let caption = "A man riding a wave on top of a surfboard.";
        let q = query_dropout(&tok.encode(caption), 0.0, 3, 9);
        assert_eq!(q.row, tok.tokenize_77(caption).0);
        assert_eq!(q.dropped, 0);
    }

    #[test]
    fn start_and_end_tokens_are_kept_and_order_preserved() {
        let tokens: Vec<u32> = (100..140).collect();
        let q = query_dropout(&tokens, 0.5, 1, 2);
        assert_eq!(q.row[0], START_OF_TEXT);
        let body: Vec<u32> = q.row[1..]
            .iter()
            .copied()
            .take_while(|&t| t != END_OF_TEXT)
            .collect();
        assert_eq!(body.len() as u32, q.tokens - q.dropped);
        assert!(body.windows(2).all(|w| w[0] < w[1]), "order kept: {body:?}");
        assert!(q.dropped > 0 && q.dropped < 40, "{}", q.dropped);
    }

    #[test]
    fn never_empties_a_caption() {
        for id in 0..200 {
            let q = query_dropout(&[7, 8], 0.99, 0, id);
            assert_eq!(q.tokens - q.dropped, 1);
            assert!(q.row[1] == 7 || q.row[1] == 8);
            assert_eq!(q.row[2], END_OF_TEXT);
        }
        let empty = query_dropout(&[], 0.2, 0, 1);
        assert_eq!(&empty.row[..3], &[START_OF_TEXT, END_OF_TEXT, 0]);
    }

    #[test]
    fn long_captions_are_cut_to_the_context_with_the_end_token() {
        let tokens: Vec<u32> = (1000..1200).collect();
        let q = query_dropout(&tokens, 0.2, 0, 5);
        assert_eq!(q.row[CONTEXT_LENGTH - 1], END_OF_TEXT);
        assert!(q.row[1..CONTEXT_LENGTH - 1].iter().all(|&t| t >= 1000));
    }
}
