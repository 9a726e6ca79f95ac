//! The CM3 objective (Aghajanyan et al. 2022; CM3Leon §2.2): causal masking.
//!
//! A number of spans is drawn from Poisson(mean 1). Each span's two boundaries are drawn
//! uniformly over the example; a draw is kept only if the span lies inside one *segment* (a
//! maximal run of tokens between `<eos>` and `<break>` tokens: the paper's one change to CM3,
//! "we do not allow masking across `<break>`", and never across a document boundary either) and
//! does not overlap a span already chosen. Each kept span is replaced by its sentinel
//! `<mask:i>` (numbered in order of position), and the spans are appended at the end:
//!
//! ```text
//! x_1 .. <mask:0> .. <mask:1> .. x_n <infill> <mask:0> span_0 <mask:1> span_1
//! ```
//!
//! An example with zero spans stays plain left-to-right (no `<infill>`). Masking `n` spans makes
//! an example exactly `2n + 1` tokens longer.

use std::ops::Range;

use cm3_core::rng::SplitMix64;
use cm3_core::vocab::{self, VocabLayout};

use crate::error::{PackError, Result};

/// The special tokens the transform needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specials {
    pub eos: u32,
    pub brk: u32,
    pub infill: u32,
    pub pad: u32,
    pub sentinels: Vec<u32>,
}

impl Specials {
    pub fn from_layout(layout: &VocabLayout) -> Result<Self> {
        let sentinels = layout.sentinels();
        if sentinels.is_empty() {
            return Err(PackError::Invalid(
                "the vocabulary has no <mask:N> sentinels, so CM3 masking cannot name spans".into(),
            ));
        }
        Ok(Self {
            eos: layout.special(vocab::EOS)?,
            brk: layout.special(vocab::BREAK)?,
            infill: layout.special(vocab::INFILL)?,
            pad: layout.special(vocab::PAD)?,
            sentinels,
        })
    }

    fn is_boundary(&self, t: u32) -> bool {
        t == self.eos || t == self.brk
    }
}

/// Maximal runs of tokens that contain no `<eos>` or `<break>`.
pub fn segments(tokens: &[u32], sp: &Specials) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &t) in tokens.iter().enumerate() {
        match (sp.is_boundary(t), start) {
            (true, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..tokens.len());
    }
    out
}

/// How many spans to mask and how hard to look for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskPlan {
    /// Mean of the Poisson span count (1 in CM3).
    pub spans_mean: f64,
    /// Draws of boundary pairs per span before giving up on it.
    pub attempts: u32,
}

impl Default for MaskPlan {
    fn default() -> Self {
        Self {
            spans_mean: 1.0,
            attempts: 64,
        }
    }
}

/// What masking did to one example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    pub tokens: Vec<u32>,
    /// The spans, in the original example's positions, in sentinel order.
    pub spans: Vec<Range<usize>>,
    /// The span count drawn (before limits and failed placements).
    pub drawn: u32,
}

/// Choose spans for `example` and apply them. `max_extra` caps the growth (`2n + 1` tokens for
/// `n` spans), so that a masked example still fits its sequence.
pub fn causal_mask(
    example: &[u32],
    sp: &Specials,
    plan: &MaskPlan,
    max_extra: usize,
    rng: &mut SplitMix64,
) -> Masked {
    let drawn = rng.poisson(plan.spans_mean) as u32;
    let by_budget = if max_extra == 0 {
        0
    } else {
        (max_extra - 1) / 2
    };
    let want = (drawn as usize).min(sp.sentinels.len()).min(by_budget);
    let segs = segments(example, sp);
    let mut spans: Vec<Range<usize>> = Vec::with_capacity(want);
    if !segs.is_empty() && !example.is_empty() {
        let n = example.len() as u64;
        for _ in 0..want {
            for _ in 0..plan.attempts {
                let (a, b) = (rng.below(n) as usize, rng.below(n) as usize);
                let (lo, hi) = (a.min(b), a.max(b));
                // The segment that starts at or before `lo` must also hold `hi`.
                let k = segs.partition_point(|g| g.start <= lo);
                if k == 0 || hi >= segs[k - 1].end {
                    continue;
                }
                let span = lo..hi + 1;
                if spans
                    .iter()
                    .any(|s| s.start < span.end && span.start < s.end)
                {
                    continue;
                }
                spans.push(span);
                break;
            }
        }
    }
    spans.sort_by_key(|s| s.start);
    Masked {
        tokens: apply(example, &spans, sp),
        spans,
        drawn,
    }
}

/// The masked sequence for sorted, disjoint `spans`.
pub fn apply(example: &[u32], spans: &[Range<usize>], sp: &Specials) -> Vec<u32> {
    if spans.is_empty() {
        return example.to_vec();
    }
    let mut out = Vec::with_capacity(example.len() + 2 * spans.len() + 1);
    let mut at = 0;
    for (i, s) in spans.iter().enumerate() {
        out.extend_from_slice(&example[at..s.start]);
        out.push(sp.sentinels[i]);
        at = s.end;
    }
    out.extend_from_slice(&example[at..]);
    out.push(sp.infill);
    for (i, s) in spans.iter().enumerate() {
        out.push(sp.sentinels[i]);
        out.extend_from_slice(&example[s.clone()]);
    }
    out
}

/// The original example of a masked one (the inverse of [`apply`]).
pub fn unmask(masked: &[u32], sp: &Specials) -> Result<Vec<u32>> {
    let Some(cut) = masked.iter().position(|&t| t == sp.infill) else {
        if masked.iter().any(|t| sp.sentinels.contains(t)) {
            return Err(PackError::Unmask("a sentinel without <infill>".into()));
        }
        return Ok(masked.to_vec());
    };
    let (body, tail) = (&masked[..cut], &masked[cut + 1..]);
    let sentinel_index = |t: u32| sp.sentinels.iter().position(|&s| s == t);
    // The spans after <infill>, each introduced by its sentinel.
    let mut spans: Vec<&[u32]> = Vec::new();
    let mut i = 0;
    while i < tail.len() {
        let Some(k) = sentinel_index(tail[i]) else {
            return Err(PackError::Unmask(format!(
                "token {} after <infill> is not a sentinel",
                tail[i]
            )));
        };
        if k != spans.len() {
            return Err(PackError::Unmask(format!(
                "sentinel {k} where {} was expected",
                spans.len()
            )));
        }
        let end = tail[i + 1..]
            .iter()
            .position(|&t| sentinel_index(t).is_some())
            .map_or(tail.len(), |p| i + 1 + p);
        spans.push(&tail[i + 1..end]);
        i = end;
    }
    let mut out = Vec::with_capacity(masked.len());
    let mut used = 0;
    for &t in body {
        match sentinel_index(t) {
            Some(k) if k == used && k < spans.len() => {
                out.extend_from_slice(spans[k]);
                used += 1;
            }
            Some(k) => {
                return Err(PackError::Unmask(format!("sentinel {k} out of order")));
            }
            None => out.push(t),
        }
    }
    if used != spans.len() {
        return Err(PackError::Unmask(format!(
            "{} spans after <infill>, {used} sentinels before it",
            spans.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp() -> Specials {
        Specials {
            pad: 0,
            eos: 1,
            brk: 2,
            infill: 4,
            sentinels: vec![5, 6, 7],
        }
    }

    #[test]
    fn the_format_is_exact() {
        let ex = [1, 10, 11, 12, 2, 100, 101, 102];
        let out = apply(&ex, &[1..3, 6..8], &sp());
        assert_eq!(out, vec![1, 5, 12, 2, 100, 6, 4, 5, 10, 11, 6, 101, 102]);
        assert_eq!(out.len(), ex.len() + 2 * 2 + 1);
        assert_eq!(unmask(&out, &sp()).expect("unmask"), ex);
    }

    #[test]
    fn segments_split_on_eos_and_break() {
        let ex = [1, 10, 11, 2, 100, 1, 12, 2, 2, 101];
        assert_eq!(segments(&ex, &sp()), vec![1..3, 4..5, 6..7, 9..10]);
    }

    #[test]
    fn a_tiny_budget_masks_nothing() {
        let ex = [1, 10, 11, 12, 13, 2, 100, 101];
        let mut rng = SplitMix64::new(0);
        for _ in 0..100 {
            let m = causal_mask(&ex, &sp(), &MaskPlan::default(), 2, &mut rng);
            assert!(m.spans.is_empty());
            assert_eq!(m.tokens, ex);
        }
    }

    #[test]
    fn malformed_sequences_are_refused() {
        assert!(unmask(&[1, 5, 10], &sp()).is_err());
        assert!(unmask(&[1, 5, 10, 4, 6, 11], &sp()).is_err());
        assert!(unmask(&[1, 10, 4, 5, 11], &sp()).is_err());
        assert!(unmask(&[1, 10, 4, 12], &sp()).is_err());
    }
}
