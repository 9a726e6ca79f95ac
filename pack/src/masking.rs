//! The CM3 objective (Aghajanyan et al. 2022; CM3Leon §2.2): causal masking.
//!
//! The number of spans is drawn from Poisson(`spans_mean`) and clamped to
//! [`spans_min`, `spans_max`] (CM3: Poisson(1) clamped to [1, 16], so every example has at least
//! one span). Each span is placed in two steps, so that short captions are masked as often as
//! the long images beside them:
//!
//! 1. a *segment* (a maximal run of tokens between `<eos>` and `<break>`: the paper's one change
//!    to CM3, "we do not allow masking across `<break>`", and never across a document either):
//!    a text segment with probability `text_rate` (an image segment otherwise; the one kind there
//!    is when an example has only one), uniformly among the segments of that kind;
//! 2. the span inside it: with probability `whole_caption_rate` a text span is the whole caption
//!    (what zero-shot image→text, "Image of `<mask>`: [image] `<infill>`", and the unconditional
//!    stream of classifier-free guidance rely on); otherwise its two ends are drawn uniformly
//!    inside the segment.
//!
//! A span that overlaps one already chosen is drawn again (up to `attempts` times). Each kept
//! span is replaced by its sentinel `<mask:i>` (numbered in order of position), the spans are
//! appended after `<infill>`, and every example ends with a scored `<eos>`, so that the model
//! learns where the last span (and an unmasked example) ends:
//!
//! ```text
//! x_1 .. <mask:0> .. <mask:1> .. x_n <infill> <mask:0> span_0 <mask:1> span_1 <eos>
//! ```
//!
//! Masking `n > 0` spans makes an example `2n + 2` tokens longer (`1` for no span).

use std::ops::Range;

use crate::error::{PackError, Result};
use cm3_core::rng::SplitMix64;
use cm3_core::vocab::{self, VocabLayout};

/// The special tokens the transform needs, and where image codes start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specials {
    pub eos: u32,
    pub brk: u32,
    pub infill: u32,
    pub pad: u32,
    pub sentinels: Vec<u32>,
    /// Ids at or above this are image codes: a segment of them is an image segment.
    pub image_offset: u32,
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
            image_offset: layout.image.offset,
        })
    }

    fn is_boundary(&self, t: u32) -> bool {
        t == self.eos || t == self.brk
    }

    /// The kind of a segment, by its first token (segments never mix text and image).
    pub fn segment_kind(&self, tokens: &[u32], seg: &Range<usize>) -> Modality {
        match tokens.get(seg.start) {
            Some(&t) if t >= self.image_offset => Modality::Image,
            _ => Modality::Text,
        }
    }
}

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Text,
    Image,
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

/// How many spans to mask, where, and how hard to look for them. Defaults: CM3's span count;
/// the rates are ours (CM3 does not state them): half of the spans in captions, and half of
/// those the whole caption (the README's "CM3 masking" gives what they produce on real data).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskPlan {
    /// Mean of the Poisson span count (1 in CM3).
    pub spans_mean: f64,
    /// The span count is clamped to `[spans_min, spans_max]` (CM3: [1, 16]).
    pub spans_min: u32,
    pub spans_max: u32,
    /// Probability that a span goes into a text segment when the example has both kinds.
    pub text_rate: f64,
    /// Probability that a text span is the whole caption (its whole segment).
    pub whole_caption_rate: f64,
    /// Draws per span before giving up on it (a span overlapping a chosen one is drawn again).
    pub attempts: u32,
}

impl Default for MaskPlan {
    fn default() -> Self {
        Self {
            spans_mean: 1.0,
            spans_min: 1,
            spans_max: 16,
            text_rate: 0.5,
            whole_caption_rate: 0.5,
            attempts: 64,
        }
    }
}

impl MaskPlan {
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(PackError::Invalid(r));
        if !(0.0..=16.0).contains(&self.spans_mean) {
            return bad(format!("spans_mean {} is outside [0, 16]", self.spans_mean));
        }
        if self.spans_min > self.spans_max || self.spans_max > 256 {
            return bad(format!(
                "spans_min {} and spans_max {} must satisfy spans_min <= spans_max <= 256",
                self.spans_min, self.spans_max
            ));
        }
        for (name, v) in [
            ("text_rate", self.text_rate),
            ("whole_caption_rate", self.whole_caption_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} {v} is outside [0, 1]"));
            }
        }
        if self.attempts == 0 || self.attempts > 10_000 {
            return bad(format!("attempts {} is outside [1, 10000]", self.attempts));
        }
        Ok(())
    }
}

/// One masked span and what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Positions in the original example.
    pub range: Range<usize>,
    pub modality: Modality,
    /// The span is a whole segment (for text: the whole caption).
    pub whole: bool,
}

/// What masking did to one example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// The masked example, its closing `<eos>` included.
    pub tokens: Vec<u32>,
    /// The spans, in sentinel (position) order.
    pub spans: Vec<Span>,
    /// The span count drawn (after clamping, before the budget and failed placements).
    pub drawn: u32,
}

/// Tokens an example grows by when `n` spans are masked (the closing `<eos>` included).
pub fn growth(n: usize) -> usize {
    if n == 0 { 1 } else { 2 * n + 2 }
}

/// Choose spans for `example` and apply them. `max_extra` caps the growth ([`growth`]), so
/// that a masked example still fits its sequence; it must be at least 1 (the closing `<eos>`).
pub fn causal_mask(
    example: &[u32],
    sp: &Specials,
    plan: &MaskPlan,
    max_extra: usize,
    rng: &mut SplitMix64,
) -> Masked {
    let drawn = (rng.poisson(plan.spans_mean) as u32).clamp(plan.spans_min, plan.spans_max);
    let by_budget = max_extra.saturating_sub(2) / 2;
    let want = (drawn as usize).min(sp.sentinels.len()).min(by_budget);
    let segs = segments(example, sp);
    let (text, image): (Vec<_>, Vec<_>) = segs
        .iter()
        .cloned()
        .partition(|g| sp.segment_kind(example, g) == Modality::Text);
    let mut spans: Vec<Span> = Vec::with_capacity(want);
    if !segs.is_empty() {
        for _ in 0..want {
            for _ in 0..plan.attempts {
                let span = draw_span(&text, &image, plan, rng);
                if spans
                    .iter()
                    .any(|s| s.range.start < span.range.end && span.range.start < s.range.end)
                {
                    continue;
                }
                spans.push(span);
                break;
            }
        }
    }
    spans.sort_by_key(|s| s.range.start);
    let ranges: Vec<Range<usize>> = spans.iter().map(|s| s.range.clone()).collect();
    let mut tokens = apply(example, &ranges, sp);
    tokens.push(sp.eos);
    Masked {
        tokens,
        spans,
        drawn,
    }
}

/// One span: the segment first (by modality), then the span inside it. At least one of `text`
/// and `image` is non-empty.
fn draw_span(
    text: &[Range<usize>],
    image: &[Range<usize>],
    plan: &MaskPlan,
    rng: &mut SplitMix64,
) -> Span {
    let modality = match (text.is_empty(), image.is_empty()) {
        (false, true) => Modality::Text,
        (true, false) => Modality::Image,
        _ if rng.next_f64() < plan.text_rate => Modality::Text,
        _ => Modality::Image,
    };
    let pool = match modality {
        Modality::Text => text,
        Modality::Image => image,
    };
    let seg = pool[rng.below(pool.len() as u64) as usize].clone();
    if modality == Modality::Text && rng.next_f64() < plan.whole_caption_rate {
        return Span {
            range: seg,
            modality,
            whole: true,
        };
    }
    let n = seg.len() as u64;
    let (a, b) = (rng.below(n) as usize, rng.below(n) as usize);
    let range = seg.start + a.min(b)..seg.start + a.max(b) + 1;
    Span {
        whole: range == seg,
        range,
        modality,
    }
}

/// The masked sequence for sorted, disjoint `spans` (without the closing `<eos>`).
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

/// The original example of a masked one (the inverse of [`causal_mask`]; a closing `<eos>`, if
/// present, is removed first).
pub fn unmask(masked: &[u32], sp: &Specials) -> Result<Vec<u32>> {
    let masked = match masked.split_last() {
        Some((&last, body)) if last == sp.eos => body,
        _ => masked,
    };
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
            image_offset: 100,
        }
    }

    #[test]
    fn the_format_is_exact() {
        let ex = [1, 10, 11, 12, 2, 100, 101, 102];
        let out = apply(&ex, &[1..3, 6..8], &sp());
        assert_eq!(out, vec![1, 5, 12, 2, 100, 6, 4, 5, 10, 11, 6, 101, 102]);
        assert_eq!(out.len() + 1, ex.len() + growth(2));
        assert_eq!(unmask(&out, &sp()).expect("unmask"), ex);
    }

    #[test]
    fn segments_split_on_eos_and_break() {
        let ex = [1, 10, 11, 2, 100, 1, 12, 2, 2, 101];
        assert_eq!(segments(&ex, &sp()), vec![1..3, 4..5, 6..7, 9..10]);
    }

    #[test]
    fn a_tiny_budget_masks_nothing_but_still_ends_the_example() {
        let ex = [1, 10, 11, 12, 13, 2, 100, 101];
        let mut rng = SplitMix64::new(0);
        for _ in 0..100 {
            let m = causal_mask(&ex, &sp(), &MaskPlan::default(), 3, &mut rng);
            assert!(m.spans.is_empty());
            assert_eq!(m.tokens[..ex.len()], ex);
            assert_eq!(m.tokens[ex.len()..], [1]);
        }
    }

    #[test]
    fn a_short_caption_beside_a_long_image_is_masked_at_the_chosen_rates() {
        // 3 caption tokens beside 1,024 image tokens: the old sampler (both ends uniform over the
        // example) masked such a caption in about 0.001% of draws.
        let mut ex = vec![1, 10, 11, 12, 2];
        ex.extend(100..1124);
        let plan = MaskPlan {
            spans_mean: 0.0,
            ..MaskPlan::default()
        };
        let mut rng = SplitMix64::new(7);
        let (mut text, mut whole, n) = (0, 0, 4000);
        for _ in 0..n {
            let m = causal_mask(&ex, &sp(), &plan, 64, &mut rng);
            assert_eq!(m.spans.len(), 1, "spans_min 1: every example has a span");
            let s = &m.spans[0];
            if s.modality == Modality::Text {
                text += 1;
                whole += usize::from(s.range == (1..4));
            }
        }
        let text_share = text as f64 / n as f64;
        let whole_share = whole as f64 / n as f64;
        assert!((text_share - 0.5).abs() < 0.03, "text share {text_share}");
        // Whole captions: the whole-caption rate, plus a partial draw that covers all 3 tokens
        // (2/9 of partial draws): 0.5 * (0.5 + 0.5 * 2/9) = 0.306.
        assert!(
            (whole_share - 0.306).abs() < 0.03,
            "whole share {whole_share}"
        );
    }

    #[test]
    fn malformed_sequences_are_refused() {
        assert!(unmask(&[1, 5, 10], &sp()).is_err());
        assert!(unmask(&[1, 5, 10, 4, 6, 11], &sp()).is_err());
        assert!(unmask(&[1, 10, 4, 5, 11], &sp()).is_err());
        assert!(unmask(&[1, 10, 4, 12], &sp()).is_err());
    }
}
