//! Property tests of the CM3 transform and packing on random retrieval-augmented examples.

use cm3_core::rng::SplitMix64;
use cm3_pack::example::{Budget, Doc, build};
use cm3_pack::masking::{MaskPlan, Modality, Specials, causal_mask, growth, segments, unmask};
use cm3_pack::packing::{Packer, Policy};
use proptest::prelude::*;

fn sp() -> Specials {
    Specials {
        pad: 0,
        eos: 1,
        brk: 2,
        infill: 4,
        sentinels: (5..13).collect(),
        image_offset: 1000,
    }
}

const ROOM: Budget = Budget {
    query: 10_000,
    total: 10_000,
};

/// Text ids 20..400, image ids 1000..1064 (a vocabulary of 1,064).
fn doc_strategy() -> impl Strategy<Value = (Vec<u32>, Vec<u32>)> {
    (
        prop::collection::vec(20u32..400, 1..30),
        prop::collection::vec(1000u32..1064, 4..40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn masking_is_invertible_ends_scored_and_never_crosses_a_boundary(
        docs in prop::collection::vec(doc_strategy(), 1..5),
        flips in prop::collection::vec(any::<bool>(), 5),
        seed in any::<u64>(),
        mean in 0.0f64..3.0,
        text_rate in 0.0f64..=1.0,
        whole_caption_rate in 0.0f64..=1.0,
    ) {
        let sp = sp();
        let ds: Vec<Doc> = docs.iter().map(|(t, i)| Doc { text: t, image: i }).collect();
        let (query, retrieved) = ds.split_last().expect("one doc");
        let ex = build(retrieved, *query, &flips, ROOM, &sp).expect("fits");
        let plan = MaskPlan { spans_mean: mean, text_rate, whole_caption_rate, ..MaskPlan::default() };
        let m = causal_mask(&ex.tokens, &sp, &plan, 10_000, &mut SplitMix64::new(seed));
        // Removing the masking gives back the example exactly.
        prop_assert_eq!(unmask(&m.tokens, &sp).expect("unmask"), ex.tokens.clone());
        // Every example ends with a scored <eos>, and at least one span (CM3's clamp to [1, 16]).
        prop_assert_eq!(m.tokens.last(), Some(&sp.eos));
        prop_assert!(!m.spans.is_empty());
        // Spans lie inside one segment: no <eos> or <break> is ever masked, and a span's
        // modality is its segment's.
        let segs = segments(&ex.tokens, &sp);
        for s in &m.spans {
            let seg = segs.iter().find(|g| g.start <= s.range.start && s.range.end <= g.end);
            prop_assert!(seg.is_some(), "{:?} crosses a boundary", s);
            let seg = seg.expect("checked");
            prop_assert_eq!(sp.segment_kind(&ex.tokens, seg), s.modality);
            prop_assert_eq!(s.whole, s.range == *seg);
        }
        let n = m.spans.len();
        prop_assert_eq!(m.tokens.len(), ex.tokens.len() + growth(n));
        prop_assert!(n <= sp.sentinels.len());
        // Every id stays in the vocabulary.
        prop_assert!(m.tokens.iter().all(|&t| t < 1064));
        // Same seed, same result.
        let again = causal_mask(&ex.tokens, &sp, &plan, 10_000, &mut SplitMix64::new(seed));
        prop_assert_eq!(again, m);
    }

    #[test]
    fn masking_respects_its_budget(
        (t, i) in doc_strategy(),
        seed in any::<u64>(),
        budget in 1usize..8,
    ) {
        let sp = sp();
        let ex = build(&[], Doc { text: &t, image: &i }, &[], ROOM, &sp).expect("fits");
        let plan = MaskPlan { spans_mean: 4.0, ..MaskPlan::default() };
        let m = causal_mask(&ex.tokens, &sp, &plan, budget, &mut SplitMix64::new(seed));
        prop_assert!(m.tokens.len() <= ex.tokens.len() + budget);
        prop_assert_eq!(m.tokens.last(), Some(&sp.eos));
    }

    #[test]
    fn packed_sequences_have_the_exact_length_and_keep_every_token(
        lens in prop::collection::vec(1usize..40, 1..30),
        seq_len in 8usize..50,
        whole in any::<bool>(),
    ) {
        let policy = if whole { Policy::Whole } else { Policy::Stream };
        let examples: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(k, &l)| (0..l.min(if whole { seq_len } else { l })).map(|j| 100 + (k * 50 + j) as u32).collect())
            .collect();
        let mut p = Packer::new(seq_len, policy, 0).expect("packer");
        let mut seqs = Vec::new();
        for e in &examples {
            seqs.extend(p.push(e).expect("push"));
        }
        seqs.extend(p.finish());
        let mut content = Vec::new();
        for s in &seqs {
            prop_assert_eq!(s.tokens.len(), seq_len);
            let body = &s.tokens[..seq_len - s.padding as usize];
            prop_assert!(s.tokens[body.len()..].iter().all(|&t| t == 0));
            content.extend_from_slice(body);
            for &(off, k) in &s.starts {
                let e = &examples[k as usize];
                let end = (off as usize + e.len()).min(seq_len);
                prop_assert_eq!(&s.tokens[off as usize..end], &e[..end - off as usize]);
                if whole {
                    // A whole example never crosses a sequence boundary.
                    prop_assert!(off as usize + e.len() <= seq_len);
                }
            }
        }
        let all: Vec<u32> = examples.concat();
        prop_assert_eq!(content, all);
        if !whole {
            // Stream pads only the last sequence.
            prop_assert!(seqs[..seqs.len() - 1].iter().all(|s| s.padding == 0));
        }
    }
}

/// A retrieval-augmented example at the demo's shapes: three documents of a 12-token caption
/// and a 256-token image.
fn demo_shaped_example(sp: &Specials) -> Vec<u32> {
    let text: Vec<u32> = (20..32).collect();
    let image: Vec<u32> = (1000..1064).cycle().take(256).collect();
    let docs = [Doc {
        text: &text,
        image: &image,
    }; 3];
    build(&docs[..2], docs[2], &[], ROOM, sp)
        .expect("fits")
        .tokens
}

#[test]
fn the_span_count_is_cm3s_clamped_poisson() {
    let sp = sp();
    let ex = demo_shaped_example(&sp);
    for mean in [0.5, 1.0, 2.0] {
        let plan = MaskPlan {
            spans_mean: mean,
            ..MaskPlan::default()
        };
        let n = 20_000;
        let mut placed = 0usize;
        let mut one = 0usize;
        for k in 0..n {
            let m = causal_mask(&ex, &sp, &plan, 10_000, &mut SplitMix64::for_pair(7, 1, k));
            assert!(!m.spans.is_empty());
            placed += m.spans.len();
            one += usize::from(m.spans.len() == 1);
        }
        // E[max(1, X)] = E[X] + P(X = 0) for X ~ Poisson(mean); P(max(1, X) = 1) = P(0) + P(1).
        let p0 = (-mean).exp();
        let got = placed as f64 / n as f64;
        assert!(
            (got - (mean + p0)).abs() < 0.04,
            "mean {mean}: {got} spans per example"
        );
        let p1 = one as f64 / n as f64;
        assert!(
            (p1 - p0 * (1.0 + mean)).abs() < 0.015,
            "mean {mean}: {p1} with one span"
        );
    }
}

#[test]
fn captions_and_images_are_both_masked_at_the_configured_rates() {
    let sp = sp();
    let ex = demo_shaped_example(&sp);
    let segs = segments(&ex, &sp);
    let captions: Vec<_> = segs
        .iter()
        .filter(|g| sp.segment_kind(&ex, g) == Modality::Text)
        .cloned()
        .collect();
    assert_eq!(captions.len(), 3);
    for (text_rate, whole_rate) in [(0.5, 0.5), (0.25, 0.8), (1.0, 0.0)] {
        let plan = MaskPlan {
            text_rate,
            whole_caption_rate: whole_rate,
            ..MaskPlan::default()
        };
        let (mut text, mut image, mut whole, mut query_whole, mut examples_with_text) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        let n = 20_000;
        for k in 0..n {
            let m = causal_mask(&ex, &sp, &plan, 10_000, &mut SplitMix64::for_pair(3, 2, k));
            let t = m
                .spans
                .iter()
                .filter(|s| s.modality == Modality::Text)
                .count();
            text += t;
            examples_with_text += usize::from(t > 0);
            image += m.spans.len() - t;
            whole += m
                .spans
                .iter()
                .filter(|s| s.modality == Modality::Text && s.whole)
                .count();
            query_whole += usize::from(m.spans.iter().any(|s| s.range == captions[2]));
        }
        let share = text as f64 / (text + image) as f64;
        // Overlapping draws are redrawn, which shifts the shares a little when spans are many.
        assert!(
            (share - text_rate).abs() < 0.03,
            "text rate {text_rate}: {share} of spans in captions"
        );
        // A partial draw covers all 12 tokens with probability 2/144.
        let want_whole = whole_rate + (1.0 - whole_rate) * 2.0 / 144.0;
        if text > 0 {
            let w = whole as f64 / text as f64;
            assert!(
                (w - want_whole).abs() < 0.03,
                "whole-caption rate {whole_rate}: {w} of caption spans"
            );
        }
        // The query's caption is one of three: about a third of the whole-caption spans.
        let q = query_whole as f64 / n as f64;
        let per_example = whole as f64 / n as f64;
        assert!(
            (q - per_example / 3.0).abs() < 0.02,
            "query caption masked whole in {q} of examples ({per_example} whole captions each)"
        );
        if text_rate > 0.0 {
            assert!(examples_with_text > 0);
        }
    }
}
