//! Packing + CM3 transform throughput (`cargo bench -p cm3-pack`): retrieval-augmented examples
//! of the paper's shape (three retrieved documents and the query, each 20 text tokens and 1,024
//! image tokens: about 4,190 tokens with masking, more than a 4,096-token sequence), assembled,
//! causal-masked (CM3's span count, the default rates) and packed, the sequences written to a
//! Megatron `.bin`. Prints tokens/s of packed output and the padding share for both packing
//! policies: `whole` must drop a document and pad, `stream` (the default) keeps all three.
//! Target: ≥ 50M tokens/s; padding of the default under 5%.

use std::time::Instant;

use cm3_core::rng::SplitMix64;
use cm3_pack::example::{Budget, Doc, build};
use cm3_pack::masking::{MaskPlan, Specials, causal_mask, growth};
use cm3_pack::megatron::IndexedWriter;
use cm3_pack::packing::{Packer, Policy};

fn main() {
    let sp = Specials {
        pad: 0,
        eos: 1,
        brk: 2,
        infill: 4,
        sentinels: (5..21).collect(),
        image_offset: 56_320,
    };
    let examples: usize = std::env::var("EXAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let seq_len = 4_096;
    // A pool of documents to draw from (synthetic ids: text 100..56,320, image 56,320..64,512).
    let mut rng = SplitMix64::new(1);
    let pool: Vec<(Vec<u32>, Vec<u32>)> = (0..512)
        .map(|_| {
            let text = (0..20).map(|_| 100 + rng.below(56_220) as u32).collect();
            let image = (0..1_024)
                .map(|_| 56_320 + rng.below(8_192) as u32)
                .collect();
            (text, image)
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("cm3-pack-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    for policy in [Policy::Whole, Policy::Stream] {
        let mut writer = IndexedWriter::create(&dir.join("train")).expect("writer");
        let mut packer = Packer::new(seq_len, policy, sp.pad).expect("packer");
        let plan = MaskPlan::default();
        let started = Instant::now();
        let (mut tokens, mut dropped, mut padding) = (0u64, 0u64, 0u64);
        for k in 0..examples as u64 {
            let mut r = SplitMix64::for_pair(0, 1, k);
            let pick = |r: &mut SplitMix64| {
                let (t, i) = &pool[r.below(pool.len() as u64) as usize];
                Doc { text: t, image: i }
            };
            let retrieved = [pick(&mut r), pick(&mut r), pick(&mut r)];
            let query = pick(&mut r);
            let reserve = growth(sp.sentinels.len());
            let budget = Budget {
                query: seq_len - reserve,
                total: match policy {
                    Policy::Whole => seq_len - reserve,
                    Policy::Stream => usize::MAX,
                },
            };
            let ex = build(&retrieved, query, &[], budget, &sp).expect("fits");
            dropped += ex.dropped as u64;
            let max_extra = match policy {
                Policy::Whole => seq_len - ex.tokens.len(),
                Policy::Stream => reserve,
            };
            let m = causal_mask(&ex.tokens, &sp, &plan, max_extra, &mut r);
            for s in packer.push(&m.tokens).expect("push") {
                tokens += s.tokens.len() as u64;
                padding += u64::from(s.padding);
                writer.push(&s.tokens).expect("write");
            }
        }
        if let Some(s) = packer.finish() {
            tokens += s.tokens.len() as u64;
            padding += u64::from(s.padding);
            writer.push(&s.tokens).expect("write");
        }
        let sequences = writer.len();
        writer.finish().expect("finish");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{policy:?}: {examples} examples -> {sequences} sequences, {tokens} tokens in {secs:.2} s = {:.1}M tokens/s \
             (padding {:.1}%, {dropped} retrieved documents dropped to fit)",
            tokens as f64 / secs / 1e6,
            100.0 * padding as f64 / tokens as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
