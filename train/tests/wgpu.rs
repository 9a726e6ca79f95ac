//! Training on Burn's wgpu runtime against `flex` (issue 23): the same steps give the same losses,
//! and a run continues on the other backend from a checkpoint. Runs on any Vulkan device, in CI
//! on Mesa's lavapipe. Without a device the test says why and returns, unless
//! `CM3_REQUIRE_WGPU=1` (set by `.ci/run` after installing the driver), when it fails.
#![cfg(feature = "wgpu")]
use std::path::Path;

use cm3_core::rng::SplitMix64;
use cm3_pack::megatron::IndexedWriter;
use cm3_train::{Backend, TrainConfig, TrainOptions, train};

const SEQ_LEN: usize = 64;
const VOCAB: u64 = 100;

/// A prepared directory of counting sequences over a 100-id vocabulary: what `cm3 train` reads
/// (`packed/meta.json`, `packed/{train,val}.{idx,bin}`), without the stages before it.
fn dataset(root: &Path) {
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

fn config() -> TrainConfig {
    let mut cfg = TrainConfig::preset("tiny").expect("tiny");
    cfg.steps = 12;
    cfg.batch_size = 2;
    cfg.batch_tokens = 0;
    cfg.warmup_steps = 1;
    cfg.eval_every = 0;
    cfg.eval_batches = 1;
    cfg.save_every = 6;
    cfg.lr = 1e-2;
    cfg
}

fn run(out: &Path, start: Option<&Path>, stop_after: Option<u64>, backend: Backend) {
    train(&TrainOptions {
        out: out.to_path_buf(),
        start: start.map(|ds| (ds.to_path_buf(), config())),
        init_from: None,
        stop_after,
        backend,
        progress: false,
    })
    .unwrap_or_else(|e| panic!("training on {backend:?} in {}: {e}", out.display()));
}

/// (step, loss) of every training step logged.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .filter_map(|l| {
            let m: serde_json::Value = serde_json::from_str(l).expect("json");
            Some((m["step"].as_u64()?, m["loss"].as_f64()?))
        })
        .collect()
}

fn assert_close(a: &[(u64, f64)], b: &[(u64, f64)], what: &str) {
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "{what}: steps"
    );
    for ((step, x), (_, y)) in a.iter().zip(b) {
        // Sums run in another order on the GPU kernels: relative 1e-4.
        let rel = (x - y).abs() / y.abs().max(1e-12);
        assert!(
            rel <= 1e-4,
            "{what}: step {step}: {x} against {y} (relative {rel:e})"
        );
        eprintln!("{what}: step {step}: {x} against {y} (relative {rel:e})");
    }
}

#[test]
fn training_on_wgpu_matches_flex_and_resumes_across_backends() {
    if let Err(e) = Backend::Wgpu.device() {
        if std::env::var_os("CM3_REQUIRE_WGPU").is_some() {
            panic!("CM3_REQUIRE_WGPU is set and {e}");
        }
        eprintln!("training_on_wgpu_matches_flex_and_resumes_across_backends: SKIPPED, {e}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = tmp.path().join("ds");
    dataset(&ds);
    let flex = tmp.path().join("flex");
    run(&flex, Some(&ds), None, Backend::Flex);
    let wgpu = tmp.path().join("wgpu");
    run(&wgpu, Some(&ds), None, Backend::Wgpu);
    let want = losses(&flex);
    assert_eq!(want.len(), 12, "{want:?}");
    // The updates matter: a backend that skipped or botched one would be far off the next loss.
    assert!(
        want[11].1 < want[0].1 - 0.2,
        "the loss did not fall: {want:?}"
    );
    assert_close(&losses(&wgpu), &want, "wgpu against flex");
    // Six steps on each backend, both ways: the checkpoint (weights, optimiser, data position)
    // carries over.
    for (first, then, name) in [
        (Backend::Wgpu, Backend::Flex, "wgpu then flex"),
        (Backend::Flex, Backend::Wgpu, "flex then wgpu"),
    ] {
        let out = tmp.path().join(name.replace(' ', "-"));
        run(&out, Some(&ds), Some(6), first);
        run(&out, None, None, then);
        assert_close(&losses(&out), &want, name);
    }
}
