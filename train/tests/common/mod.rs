//! What the training tests share: a tiny prepared directory and the logged losses.
use std::path::Path;

use cm3_core::rng::SplitMix64;
use cm3_pack::megatron::IndexedWriter;

/// Tokens a sequence (`devices.rs` sizes its steps by it).
#[allow(dead_code)]
pub const SEQ_LEN: usize = 64;
const VOCAB: u64 = 100;

/// A prepared directory of counting sequences over a 100-id vocabulary: what `cm3 train` reads
/// (`packed/meta.json`, `packed/{train,val}.{idx,bin}`), without the stages before it.
pub fn dataset(root: &Path) {
    let packed = root.join("packed");
    std::fs::create_dir_all(&packed).expect("dir");
    let specials = serde_json::json!({
        "<pad>": 0, "<eos>": 1, "<break>": 2, "<mask>": 3, "<infill>": 4,
        "<mask:0>": 5, "<mask:1>": 6, "<mask:2>": 7, "<mask:3>": 8,
        "<mask:4>": 9, "<mask:5>": 10, "<mask:6>": 11, "<mask:7>": 12
    });
    let meta = serde_json::json!({
        "objective_version": cm3_pack::stage::OBJECTIVE_VERSION,
        "seq_len": SEQ_LEN,
        "vocab": {
            "version": 1,
            "text": {"size": 36, "specials": specials,
                     "tokenizer": {"path": "tokenizer/text/tokenizer.json", "sha256": "0"}},
            "image": {"offset": 36, "codes": 64, "grid": 8,
                      "tokenizer": {"path": "tokenizer/image/model.safetensors", "sha256": "0"}},
            "size": VOCAB
        }
    });
    std::fs::write(packed.join("meta.json"), meta.to_string()).expect("meta");
    let mut rng = SplitMix64::new(5);
    for (split, n) in [("train", 24), ("val", 4)] {
        let mut w = IndexedWriter::create(&packed.join(split)).expect("writer");
        for _ in 0..n {
            // Counting from a random start in steps of 1 to 3: learnable within a few steps, so
            // that every step's update shows in the next loss.
            let (start, stride) = (rng.below(VOCAB - 1), 1 + rng.below(3));
            let seq: Vec<u32> = (0..SEQ_LEN as u64)
                .map(|i| 1 + ((start + i * stride) % (VOCAB - 1)) as u32)
                .collect();
            w.push(&seq).expect("push");
        }
        w.finish().expect("finish");
    }
}

/// (step, loss) of every training step logged.
pub fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .filter_map(|l| {
            let m: serde_json::Value = serde_json::from_str(l).expect("json");
            Some((m["step"].as_u64()?, m["loss"].as_f64()?))
        })
        .collect()
}

/// The tiny preset for these sequences: `steps` steps of one micro-batch of 2 sequences, lr 1e-2
/// after one warmup step (every update shows in the next loss), a checkpoint every `save_every`
/// steps, no validation during training.
pub fn tiny_config(steps: u64, save_every: u64) -> cm3_train::TrainConfig {
    let mut cfg = cm3_train::TrainConfig::preset("tiny").expect("tiny");
    cfg.steps = steps;
    cfg.batch_size = 2;
    cfg.batch_tokens = 0;
    cfg.warmup_steps = 1;
    cfg.eval_every = 0;
    cfg.eval_batches = 1;
    cfg.save_every = save_every;
    cfg.lr = 1e-2;
    cfg
}
