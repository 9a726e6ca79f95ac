//! BLEU-1..4 as pycocoevalcap 1.2's `bleu/bleu_scorer.py` (David Chiang's scorer) computes it
//! with `option="closest"`: clipped n-gram counts against the per-n-gram maximum over the
//! references, the reference length closest to the candidate's (the shorter on a tie), the
//! smoothing constants `tiny` = 1e-15 and `small` = 1e-9, and a brevity penalty per image and
//! for the corpus (from the summed lengths).

use super::ngrams::{Counts, N};

const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// `cook_test`'s result: what BLEU needs of one image.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BleuStats {
    pub(crate) testlen: usize,
    pub(crate) reflen: usize,
    pub(crate) guess: [usize; N],
    pub(crate) correct: [usize; N],
}

/// `cook_refs` + `cook_test` for one candidate and its references.
pub(crate) fn image_stats(test: &Counts, refs: &[Counts], order: &[u8]) -> BleuStats {
    // Per n-gram maximum count over the references (`maxcounts`).
    let mut maxcounts: Vec<(u32, u32)> =
        refs.iter().flat_map(|r| r.grams.iter().copied()).collect();
    maxcounts.sort_unstable();
    maxcounts.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = kept.1.max(later.1);
        }
        same
    });
    let testlen = test.words;
    // "closest": min over (|l - testlen|, l).
    let reflen = refs
        .iter()
        .map(|r| (r.words.abs_diff(testlen), r.words))
        .min()
        .map_or(0, |(_, l)| l);
    let mut stats = BleuStats {
        testlen,
        reflen,
        ..BleuStats::default()
    };
    for k in 0..N {
        stats.guess[k] = (testlen + 1).saturating_sub(k + 1);
    }
    for (g, count) in &test.grams {
        let max = maxcounts
            .binary_search_by(|(x, _)| x.cmp(g))
            .map_or(0, |i| maxcounts[i].1);
        stats.correct[usize::from(order[*g as usize]) - 1] += (*count).min(max) as usize;
    }
    stats
}

/// The geometric means of the modified precisions, times the brevity penalty, as the scorer
/// computes them (cumulative product, smoothed).
fn bleu_of(correct: [usize; N], guess: [usize; N], testlen: f64, reflen: f64) -> [f64; N] {
    let mut out = [0.0; N];
    let mut bleu = 1.0;
    for k in 0..N {
        bleu *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        out[k] = bleu.powf(1.0 / (k as f64 + 1.0));
    }
    let ratio = (testlen + TINY) / (reflen + SMALL);
    if ratio < 1.0 {
        let penalty = (1.0 - 1.0 / ratio).exp();
        for v in &mut out {
            *v *= penalty;
        }
    }
    out
}

pub(crate) fn image_bleu(s: &BleuStats) -> [f64; N] {
    bleu_of(s.correct, s.guess, s.testlen as f64, s.reflen as f64)
}

/// The corpus BLEU: summed counts and lengths (not a mean of per-image scores).
pub(crate) fn corpus_bleu(all: &[BleuStats]) -> [f64; N] {
    let mut correct = [0; N];
    let mut guess = [0; N];
    let (mut testlen, mut reflen) = (0usize, 0usize);
    for s in all {
        for k in 0..N {
            correct[k] += s.correct[k];
            guess[k] += s.guess[k];
        }
        testlen += s.testlen;
        reflen += s.reflen;
    }
    bleu_of(correct, guess, testlen as f64, reflen as f64)
}
