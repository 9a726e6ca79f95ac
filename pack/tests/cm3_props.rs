//! Property tests of the CM3 transform and packing on random retrieval-augmented examples.

use cm3_core::rng::SplitMix64;
use cm3_pack::example::{Doc, build};
use cm3_pack::masking::{MaskPlan, Specials, causal_mask, segments, unmask};
use cm3_pack::packing::{Packer, Policy};
use proptest::prelude::*;

fn sp() -> Specials {
    Specials {
        pad: 0,
        eos: 1,
        brk: 2,
        infill: 4,
        sentinels: (5..13).collect(),
    }
}

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
    fn masking_is_invertible_and_never_crosses_a_boundary(
        docs in prop::collection::vec(doc_strategy(), 1..5),
        flips in prop::collection::vec(any::<bool>(), 5),
        seed in any::<u64>(),
        mean in 0.0f64..3.0,
    ) {
        let sp = sp();
        let ds: Vec<Doc> = docs.iter().map(|(t, i)| Doc { text: t, image: i }).collect();
        let (query, retrieved) = ds.split_last().expect("one doc");
        let ex = build(retrieved, *query, &flips, 10_000, &sp).expect("fits");
        let plan = MaskPlan { spans_mean: mean, attempts: 64 };
        let m = causal_mask(&ex.tokens, &sp, &plan, 10_000, &mut SplitMix64::new(seed));
        // Removing the masking gives back the example exactly.
        prop_assert_eq!(unmask(&m.tokens, &sp).expect("unmask"), ex.tokens.clone());
        // Spans lie inside one segment: no <eos> or <break> is ever masked.
        let segs = segments(&ex.tokens, &sp);
        for s in &m.spans {
            prop_assert!(segs.iter().any(|g| g.start <= s.start && s.end <= g.end), "{:?}", s);
        }
        let n = m.spans.len();
        let expect = if n == 0 { ex.tokens.len() } else { ex.tokens.len() + 2 * n + 1 };
        prop_assert_eq!(m.tokens.len(), expect);
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
        budget in 0usize..8,
    ) {
        let sp = sp();
        let ex = build(&[], Doc { text: &t, image: &i }, &[], 10_000, &sp).expect("fits");
        let plan = MaskPlan { spans_mean: 4.0, attempts: 64 };
        let m = causal_mask(&ex.tokens, &sp, &plan, budget, &mut SplitMix64::new(seed));
        prop_assert!(m.tokens.len() <= ex.tokens.len() + budget);
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

#[test]
fn the_span_count_follows_the_configured_poisson_mean() {
    let sp = sp();
    let text: Vec<u32> = (20..70).collect();
    let image: Vec<u32> = (1000..1064).cycle().take(200).collect();
    let docs = [Doc {
        text: &text,
        image: &image,
    }; 3];
    let ex = build(&docs[..2], docs[2], &[], 10_000, &sp).expect("fits");
    for mean in [0.5, 1.0, 2.0] {
        let plan = MaskPlan {
            spans_mean: mean,
            attempts: 64,
        };
        let n = 20_000;
        let mut placed = 0usize;
        let mut zero = 0usize;
        for k in 0..n {
            let m = causal_mask(
                &ex.tokens,
                &sp,
                &plan,
                10_000,
                &mut SplitMix64::for_pair(7, 1, k),
            );
            placed += m.spans.len();
            zero += usize::from(m.spans.is_empty());
        }
        let got = placed as f64 / n as f64;
        assert!(
            (got - mean).abs() < 0.04,
            "mean {mean}: {got} spans per example"
        );
        let p0 = zero as f64 / n as f64;
        assert!(
            (p0 - (-mean).exp()).abs() < 0.015,
            "mean {mean}: {p0} without spans"
        );
    }
}
