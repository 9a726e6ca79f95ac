//! End-to-end tests of `cm3 train` and `cm3 model`: `cm3 build` → `cm3 train` on the embedded
//! sample, overfitting a few sequences, resume equivalence, refusals, a NaN stop, and
//! `cm3 model score` against Hugging Face transformers' numbers.
mod common;

use std::fs;
use std::path::Path;

use common::*;

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// (step, loss) of the training lines.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    metrics(run)
        .iter()
        .filter_map(|m| Some((m["step"].as_u64()?, m["loss"].as_f64()?)))
        .collect()
}

fn train(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["train", "--json"];
    all.extend_from_slice(args);
    serde_json::from_slice(&run_ok(&all).stdout).expect("train report")
}

#[test]
fn build_then_train_resumes_exactly_and_overfits() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 32);
    let cfg = tmp.path().join("tiny.toml");
    fs::write(
        &cfg,
        "preset = \"tiny\"\nbatch_size = 2\nbatch_tokens = 512\nsave_every = 3\n\
         keep_checkpoints = 2\neval_every = 4\n",
    )
    .expect("config");

    // Uninterrupted: 8 steps, two micro-batches of 2 × 128 tokens each.
    let whole = tmp.path().join("whole");
    let r = train(&[
        "--data",
        &p(&ds),
        "--config",
        &p(&cfg),
        "--out",
        &p(&whole),
        "--steps",
        "8",
    ]);
    assert_eq!(r["last_step"], 8);
    assert_eq!(r["tokens_seen"], 8 * 512);
    assert_eq!(r["finished"], true);
    let m = metrics(&whole);
    let first = &m[0];
    for key in ["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s"] {
        assert!(!first[key].is_null(), "metrics line without {key}: {first}");
    }
    assert!(
        m.iter()
            .any(|l| l["val_loss"].is_f64() && l["val_perplexity"].is_f64())
    );
    // The newest two checkpoints are kept; each is also a Hugging Face OPT folder.
    let mut kept: Vec<String> = fs::read_dir(whole.join("checkpoints"))
        .expect("checkpoints")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    kept.sort();
    assert_eq!(kept, ["step-0000006", "step-0000008"]);
    let last = whole.join("checkpoints/step-0000008");
    for f in [
        "model.bpk",
        "optim.bpk",
        "state.json",
        "model.safetensors",
        "config.json",
    ] {
        assert!(last.join(f).is_file(), "checkpoint without {f}");
    }
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(whole.join("config.json")).expect("run config"))
            .expect("json");
    assert_eq!(record["seq_len"], 128);
    assert_eq!(record["meta_sha256"].as_str().map(str::len), Some(64));

    // Interrupted after 5 steps (checkpoint at 3 and at the stop), resumed to 8: the same
    // losses step for step.
    let split = tmp.path().join("split");
    let r = train(&[
        "--data",
        &p(&ds),
        "--config",
        &p(&cfg),
        "--out",
        &p(&split),
        "--steps",
        "8",
        "--stop-after",
        "5",
    ]);
    assert_eq!(
        (r["last_step"].as_u64(), r["finished"].as_bool()),
        (Some(5), Some(false))
    );
    let r = train(&["--resume", &p(&split)]);
    assert_eq!(
        (r["first_step"].as_u64(), r["last_step"].as_u64()),
        (Some(5), Some(8))
    );
    assert_eq!(losses(&split), losses(&whole));
    assert_eq!(losses(&whole).len(), 8);

    // Scoring with the run's latest checkpoint: a finite loss and the logits of every position.
    let ids = tmp.path().join("ids.npy");
    let mut npy = cm3_embed::npy::header(cm3_embed::npy::Dtype::I64, &[1, 16]);
    for i in 0..16i64 {
        npy.extend_from_slice(&(1 + i * 3).to_le_bytes());
    }
    fs::write(&ids, npy).expect("ids");
    let logits = tmp.path().join("logits.npy");
    let out = run_ok(&[
        "model",
        "score",
        "--weights",
        &p(&whole),
        "--tokens",
        &p(&ids),
        "--logits-out",
        &p(&logits),
        "--json",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("score");
    assert!(s["loss"].as_f64().is_some_and(f64::is_finite), "{s}");
    assert_eq!(s["scored_targets"], 15);
    let vocab = record["config"]["model"]["vocab_size"]
        .as_u64()
        .expect("vocab") as usize;
    let bytes = fs::read(&logits).expect("logits");
    let parsed = cm3_embed::npy::Npy::parse(&bytes).expect("npy");
    assert_eq!(parsed.shape, [1, 16, vocab]);

    // Refusals: the run exists; another vocabulary; a dataset changed under a run.
    let err = run_err(&[
        "train",
        "--data",
        &p(&ds),
        "--config",
        &p(&cfg),
        "--out",
        &p(&whole),
    ]);
    assert!(err.contains("--resume"), "{err}");
    let bad = tmp.path().join("vocab.toml");
    fs::write(&bad, "[model]\nvocab_size = 5\n").expect("write");
    let err = run_err(&[
        "train",
        "--data",
        &p(&ds),
        "--config",
        &p(&bad),
        "--out",
        &p(&tmp.path().join("v")),
    ]);
    assert!(
        err.contains("vocabulary") && err.contains("meta.json"),
        "{err}"
    );
    let meta = ds.join("packed/meta.json");
    let original = fs::read(&meta).expect("meta");
    fs::write(&meta, [&original[..], b" "].concat()).expect("touch meta");
    let err = run_err(&["train", "--resume", &p(&split)]);
    assert!(err.contains("changed since the run started"), "{err}");
    // Sequences packed by an older cm3 (no objective_version: the v1 objective) are refused,
    // with the command that re-packs them.
    let mut old: serde_json::Value = serde_json::from_slice(&original).expect("meta json");
    old.as_object_mut()
        .expect("object")
        .remove("objective_version");
    fs::write(&meta, serde_json::to_vec(&old).expect("json")).expect("old meta");
    let err = run_err(&[
        "train",
        "--data",
        &p(&ds),
        "--out",
        &p(&tmp.path().join("old")),
        "--steps",
        "1",
    ]);
    assert!(
        err.contains("version 1") && err.contains("--rebuild"),
        "{err}"
    );
    fs::write(&meta, original).expect("restore");
    // A truncated .bin.
    let bin = ds.join("packed/train.bin");
    let len = fs::metadata(&bin).expect("bin").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&bin)
        .expect("open")
        .set_len(len - 4)
        .expect("truncate");
    let err = run_err(&[
        "train",
        "--data",
        &p(&ds),
        "--out",
        &p(&tmp.path().join("t")),
        "--steps",
        "1",
    ]);
    assert!(
        err.contains("truncated") && err.contains("train.bin"),
        "{err}"
    );
}

/// Two processes on one run (a `cm3 train --resume` started while another still trains it): the
/// second is refused, naming the run and the holder, and leaves the holder's checkpoints alone.
#[test]
fn a_second_process_on_a_run_is_refused() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 4);
    let cfg = tmp.path().join("tiny.toml");
    fs::write(
        &cfg,
        "preset = \"tiny\"\nbatch_size = 2\nbatch_tokens = 256\nsave_every = 1\n\
         keep_checkpoints = 1\neval_every = 0\n",
    )
    .expect("config");
    let run = tmp.path().join("run");
    train(&[
        "--data",
        &p(&ds),
        "--config",
        &p(&cfg),
        "--out",
        &p(&run),
        "--steps",
        "3",
        "--stop-after",
        "1",
    ]);
    let checkpoints = || -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(run.join("checkpoints"))
            .expect("checkpoints")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = checkpoints();
    assert_eq!(before, ["latest", "step-0000001"]);

    // This test process holds the run, as a training process does; and a new run's folder,
    // as a `cm3 train --out` that started a moment before would.
    let held = cm3_core::lock_dir(&run, "training run").expect("lock the run");
    let fresh = tmp.path().join("fresh");
    fs::create_dir_all(&fresh).expect("mkdir");
    let held_fresh = cm3_core::lock_dir(&fresh, "training run").expect("lock");
    for (dir, args) in [
        (&run, vec!["train", "--resume", &p(&run)]),
        (
            &fresh,
            vec!["train", "--data", &p(&ds), "--out", &p(&fresh)],
        ),
    ] {
        let err = run_err(&args);
        assert!(
            err.contains(&p(dir)) && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }
    assert!(!fresh.join("config.json").exists());
    drop(held_fresh);
    assert_eq!(checkpoints(), before);
    drop(held);
    let r = train(&["--resume", &p(&run)]);
    assert_eq!(
        (r["first_step"].as_u64(), r["last_step"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(checkpoints(), ["latest", "step-0000003"]);
}

#[test]
fn the_tiny_model_overfits_a_few_sequences_and_stops_on_nan() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 4);
    let cfg = tmp.path().join("overfit.toml");
    fs::write(
        &cfg,
        "lr = 3e-3\nwarmup_steps = 10\nsteps = 200\nsave_every = 200\neval_every = 0\n\
         decay = \"cosine\"\nweight_decay = 0.0\n",
    )
    .expect("config");
    let run = tmp.path().join("overfit");
    train(&["--data", &p(&ds), "--config", &p(&cfg), "--out", &p(&run)]);
    let l = losses(&run);
    // 200 steps: with the sample's images as the `rust-dct` codec now decodes them, the cosine
    // schedule over 150 steps ended at 0.125; over 200 it ends at 0.028.
    assert_eq!(l.len(), 200);
    assert!(l[0].1 > 4.0, "the first loss is {}", l[0].1);
    assert!(l[199].1 < 0.1, "after 200 steps the loss is {}", l[199].1);

    // A learning rate that blows the weights up: stop at the first non-finite loss, keeping the
    // last good checkpoint.
    fs::write(
        &cfg,
        "lr = 1e30\nwarmup_steps = 0\nsteps = 5\nsave_every = 1\nclip_norm = 0.0\n",
    )
    .expect("config");
    let run = tmp.path().join("nan");
    let err = run_err(&[
        "train",
        "--data",
        &p(&ds),
        "--config",
        &p(&cfg),
        "--out",
        &p(&run),
    ]);
    assert!(err.contains("NaN") || err.contains("inf"), "{err}");
    let latest = fs::read_to_string(run.join("checkpoints/latest")).expect("latest");
    assert!(err.contains(&latest), "{err} does not name {latest}");
}

#[test]
fn model_score_matches_transformers_on_the_opt_fixture() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/opt");
    let bytes = fs::read(fixture.join("expected.safetensors")).expect("expected");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let ids = st.tensor("input_ids").expect("ids");
    let tmp = tempfile::tempdir().expect("tmp");
    let npy = tmp.path().join("ids.npy");
    let mut out = cm3_embed::npy::header(cm3_embed::npy::Dtype::I64, ids.shape());
    out.extend_from_slice(ids.data());
    fs::write(&npy, out).expect("npy");
    let logits = tmp.path().join("logits.npy");
    let out = run_ok(&[
        "model",
        "score",
        "--weights",
        &p(&fixture),
        "--tokens",
        &p(&npy),
        "--ignore-id",
        "0",
        "--logits-out",
        &p(&logits),
        "--json",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("score");
    let want = f32::from_le_bytes(
        st.tensor("loss").expect("loss").data()[..4]
            .try_into()
            .expect("4"),
    );
    let got = s["loss"].as_f64().expect("loss");
    assert!(
        (got - f64::from(want)).abs() < 1e-5,
        "loss {got}, transformers {want}"
    );
    let expected: Vec<f32> = st
        .tensor("logits")
        .expect("logits")
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let ours = cm3_embed::npy::Npy::parse(&fs::read(&logits).expect("logits"))
        .expect("npy")
        .to_f32()
        .expect("f32");
    let worst = ours
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "max |Δlogits| {worst}");

    // The model's `info`: the paper's nominal sizes are exact counts of this architecture.
    let out = run_ok(&["model", "info", "--config", "350m", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info");
    assert_eq!(info["params"]["total"], 372_246_528u64);
    let out = run_ok(&["model", "info", "--config", "7b", "--untied", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info");
    assert_eq!(info["params"]["total"], 6_987_718_656u64);
}

#[test]
fn generate_text_to_image_image_to_text_and_infill_with_a_trained_run() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 12);
    let run = tmp.path().join("run");
    train(&["--data", &p(&ds), "--out", &p(&run), "--steps", "4"]);
    let generate = |out: &Path, extra: &[&str]| -> serde_json::Value {
        let (r, o) = (p(&run), p(out));
        let mut args = vec!["generate", "--run", &r, "--out", &o];
        args.extend_from_slice(extra);
        run_ok(&args);
        serde_json::from_slice(&fs::read(out.join("generation.json")).expect("record"))
            .expect("json")
    };

    // Text → image with CFG: PNGs of the tokenizer's resolution, every code in range, the
    // settings and seeds recorded; the same seed gives the same images.
    let t2i = [
        "t2i",
        "--prompt",
        "a red stop sign",
        "--samples",
        "2",
        "--cfg",
        "3.0",
        "--top-p",
        "0.9",
    ];
    let a = generate(&tmp.path().join("a"), &t2i);
    let b = generate(&tmp.path().join("b"), &t2i);
    assert_eq!(a["outputs"], b["outputs"]);
    assert_eq!(a["settings"]["guidance"]["kind"], "cfg");
    // Guided sampling keeps to the conditional stream's plausible tokens by default.
    assert_eq!(a["settings"]["sampling"]["min_p"], 0.1);
    assert_eq!(a["seeds"].as_array().map(Vec::len), Some(2));
    // --min-p 0 is the paper's eq. 2 alone: recorded, and a bad value is refused.
    let plain = [&t2i[..], &["--min-p", "0"]].concat();
    let e = generate(&tmp.path().join("e"), &plain);
    assert_eq!(e["settings"]["sampling"]["min_p"], 0.0);
    let bad = [&t2i[..], &["--min-p", "1.5"]].concat();
    let (r, o) = (p(&run), p(&tmp.path().join("bad")));
    let refused = [&["generate", "--run", &r, "--out", &o][..], &bad[..]].concat();
    let err = run_err(&refused);
    assert!(err.contains("--min-p must be in [0, 1]"), "{err}");
    let cold = [&t2i[..], &["--temperature", "NaN"]].concat();
    let refused = [&["generate", "--run", &r, "--out", &o][..], &cold[..]].concat();
    let err = run_err(&refused);
    assert!(err.contains("--temperature must be a number"), "{err}");
    for o in a["outputs"].as_array().expect("outputs") {
        let codes = o["codes"].as_array().expect("codes");
        assert_eq!(codes.len(), 16, "4 × 4 codes of the VQ fixture");
        assert!(codes.iter().all(|c| c.as_u64().is_some_and(|c| c < 64)));
        let png = tmp.path().join("a").join(o["file"].as_str().expect("file"));
        let img = image::open(&png).expect("a PNG");
        assert_eq!((img.width(), img.height()), (32, 32));
    }
    // Another seed, other images; CD-K runs too.
    let c = generate(
        &tmp.path().join("c"),
        &[
            "t2i",
            "--prompt",
            "a red stop sign",
            "--samples",
            "2",
            "--seed",
            "7",
        ],
    );
    assert_ne!(a["outputs"], c["outputs"]);
    let d = generate(
        &tmp.path().join("d"),
        &[
            "t2i",
            "--prompt",
            "a red stop sign",
            "--cd-alpha",
            "0.1",
            "--cd-k",
            "5",
        ],
    );
    assert_eq!(d["settings"]["guidance"]["kind"], "cd-k");
    // Retrieval at inference, CD-K and CFG samples mixed, CLIP re-ranking.
    let r = generate(
        &tmp.path().join("r"),
        &[
            "t2i",
            "--prompt",
            "a red stop sign",
            "--samples",
            "4",
            "--retrieve",
            "1",
            "--rerank",
            "--cd-share",
            "0.5",
        ],
    );
    assert_eq!(r["input"]["retrieved"].as_array().map(Vec::len), Some(1));
    assert!(
        r["input"]["retrieved"][0]["score"]
            .as_f64()
            .is_some_and(|s| s <= 0.9)
    );
    let kinds: Vec<&str> = r["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o["guidance"]["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["cd-k", "cd-k", "cfg", "cfg"]);
    assert!(
        r["outputs"]
            .as_array()
            .expect("o")
            .iter()
            .all(|o| o["clip_score"].is_f64())
    );
    assert!(tmp.path().join("r/best.png").is_file());

    // Image → text and infilling produce text (whatever this 4-step model says).
    let image = sample_dir().join("coco-107438.jpg");
    let e = generate(
        &tmp.path().join("e"),
        &["i2t", "--image", &p(&image), "--max-tokens", "8"],
    );
    assert!(e["outputs"][0]["text"].is_string());
    let f = generate(
        &tmp.path().join("f"),
        &[
            "infill",
            "--text",
            "a <mask> on a bench",
            "--max-tokens",
            "4",
        ],
    );
    assert!(f["outputs"][0]["span"].is_string());

    // Image infilling: outside the box the codes are the image's own; inside, regenerated.
    let encoded: Vec<u64> = {
        let out = run_ok(&[
            "tokenizer",
            "encode-image",
            &p(&image),
            "--image-tokenizer",
            &p(&vq_ckpt()),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|c| c.parse().expect("a code"))
            .collect()
    };
    let h = generate(
        &tmp.path().join("h"),
        &[
            "infill-image",
            "--image",
            &p(&image),
            "--caption",
            "a stop sign",
            "--box",
            "1,1,3,3",
        ],
    );
    let grid: Vec<u64> = h["outputs"][0]["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_u64().expect("code"))
        .collect();
    assert_eq!(grid.len(), 16);
    for y in 0..4 {
        for x in 0..4 {
            if !((1..3).contains(&x) && (1..3).contains(&y)) {
                assert_eq!(
                    grid[y * 4 + x],
                    encoded[y * 4 + x],
                    "code ({x}, {y}) changed"
                );
            }
        }
    }
    let err = run_err(&[
        "generate",
        "--run",
        &p(&run),
        "--out",
        &p(&tmp.path().join("v")),
        "infill-image",
        "--image",
        &p(&image),
        "--box",
        "0,0,9,1",
    ]);
    assert!(err.contains("code grid"), "{err}");

    // Bad input: clear errors.
    let long = "word ".repeat(2000);
    let err = run_err(&[
        "generate",
        "--run",
        &p(&run),
        "--out",
        &p(&tmp.path().join("x")),
        "t2i",
        "--prompt",
        &long,
    ]);
    assert!(err.contains("context"), "{err}");
    let junk = tmp.path().join("junk.jpg");
    fs::write(&junk, b"not an image").expect("write");
    let err = run_err(&[
        "generate",
        "--run",
        &p(&run),
        "--out",
        &p(&tmp.path().join("y")),
        "i2t",
        "--image",
        &p(&junk),
    ]);
    assert!(err.contains("junk.jpg"), "{err}");
    let err = run_err(&[
        "generate",
        "--run",
        &p(&tmp.path().join("nope")),
        "--out",
        &p(&tmp.path().join("z")),
        "t2i",
        "--prompt",
        "x",
    ]);
    assert!(err.contains("not a cm3 run"), "{err}");
    let err = run_err(&[
        "generate",
        "--run",
        &p(&run),
        "--out",
        &p(&tmp.path().join("w")),
        "infill",
        "--text",
        "no span here",
    ]);
    assert!(err.contains("<mask>"), "{err}");
}

/// `cm3 train --init-from`, the start of the SFT stage: the new run begins from the pretrained
/// weights with a fresh optimiser, records where they came from, resumes exactly, accepts a
/// Hugging Face OPT folder, and refuses a model or vocabulary that does not fit, by name.
#[test]
fn fine_tuning_starts_from_the_pretrained_weights() {
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 16);
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        fs::write(&path, text).expect("config");
        path
    };
    let tiny = write(
        "tiny.toml",
        "preset = \"tiny\"\nbatch_size = 2\nlr = 1e-2\nwarmup_steps = 1\nsave_every = 4\n\
         eval_every = 4\neval_batches = 1\n",
    );
    let pre = tmp.path().join("pre");
    let args = |data: &Path, cfg: &Path, out: &Path, steps: &str| {
        vec![
            "--data".to_string(),
            p(data),
            "--config".into(),
            p(cfg),
            "--out".into(),
            p(out),
            "--steps".into(),
            steps.into(),
        ]
    };
    train(&refs(&args(&ds, &tiny, &pre, "4")));

    // One step at a vanishing learning rate keeps the weights: the fine-tuning run scores like
    // the pretrained model, a fresh run with the same settings does not.
    let still = write(
        "still.toml",
        "preset = \"sft\"\nbatch_size = 2\nbatch_tokens = 0\nlr = 1e-12\nwarmup_steps = 1\n\
         save_every = 1\neval_batches = 1\n",
    );
    let fine = tmp.path().join("fine");
    let mut a = args(&ds, &still, &fine, "1");
    a.extend(["--init-from".into(), p(&pre)]);
    let r = train(&refs(&a));
    assert_eq!(r["last_step"], 1);
    let fresh_cfg = write(
        "fresh.toml",
        "preset = \"tiny\"\nbatch_size = 2\nlr = 1e-12\nwarmup_steps = 1\nsave_every = 1\n\
         eval_batches = 1\nseed = 1\n",
    );
    let fresh = tmp.path().join("fresh");
    train(&refs(&args(&ds, &fresh_cfg, &fresh, "1")));
    let ids = tmp.path().join("ids.npy");
    let mut npy = cm3_embed::npy::header(cm3_embed::npy::Dtype::I64, &[1, 32]);
    for i in 0..32i64 {
        npy.extend_from_slice(&(1 + i * 5).to_le_bytes());
    }
    fs::write(&ids, npy).expect("ids");
    let score = |run: &Path| {
        let out = run_ok(&[
            "model",
            "score",
            "--weights",
            &p(run),
            "--tokens",
            &p(&ids),
            "--json",
        ]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("score");
        s["loss"].as_f64().expect("loss")
    };
    let (l_pre, l_fine, l_fresh) = (score(&pre), score(&fine), score(&fresh));
    eprintln!("loss: pretrained {l_pre}, fine-tuned at lr 1e-12 {l_fine}, fresh {l_fresh}");
    assert!(
        (l_pre - l_fine).abs() < 1e-4,
        "pretrained {l_pre}, fine-tuned {l_fine}"
    );
    assert!(
        (l_pre - l_fresh).abs() > 0.05,
        "pretrained {l_pre}, fresh {l_fresh}"
    );

    // The run records the pretrained weights and takes their shape.
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(fine.join("config.json")).expect("run config"))
            .expect("json");
    let init = &record["init_from"];
    assert_eq!(init["kind"], "run", "{record}");
    assert!(
        init["weights"]
            .as_str()
            .is_some_and(|w| w.ends_with("checkpoints/step-0000004")),
        "{init}"
    );
    let ckpt = pre.join("checkpoints/step-0000004");
    let sha = cm3_core::fsio::sha256_file(&ckpt.join("model.safetensors")).expect("sha");
    assert_eq!(init["model_sha256"], sha.sha256);
    let pre_record: serde_json::Value =
        serde_json::from_slice(&fs::read(pre.join("config.json")).expect("run config"))
            .expect("json");
    assert_eq!(record["config"]["model"], pre_record["config"]["model"]);
    assert_eq!(record["config"]["lr"], 1e-12);

    // Resume: interrupted after one step and continued, the same losses as straight through.
    let learn = write(
        "learn.toml",
        "preset = \"sft\"\nbatch_size = 2\nbatch_tokens = 0\nlr = 1e-3\nwarmup_steps = 1\n\
         save_every = 1\neval_batches = 1\n",
    );
    let straight = tmp.path().join("straight");
    let mut a = args(&ds, &learn, &straight, "3");
    a.extend(["--init-from".into(), p(&pre)]);
    train(&refs(&a));
    let split = tmp.path().join("split");
    let mut a = args(&ds, &learn, &split, "3");
    a.extend([
        "--init-from".into(),
        p(&pre),
        "--stop-after".into(),
        "1".into(),
    ]);
    train(&refs(&a));
    train(&["--resume", &p(&split)]);
    assert_eq!(losses(&split), losses(&straight));
    assert_eq!(losses(&split).len(), 3);

    // A Hugging Face OPT folder (a checkpoint copied out of its run): only the size is checked.
    let hf = tmp.path().join("hf");
    fs::create_dir(&hf).expect("hf");
    for f in ["model.safetensors", "config.json"] {
        fs::copy(ckpt.join(f), hf.join(f)).expect("copy");
    }
    let from_hf = tmp.path().join("from-hf");
    let mut a = args(&ds, &still, &from_hf, "1");
    a.extend(["--init-from".into(), p(&hf)]);
    train(&refs(&a));
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(from_hf.join("config.json")).expect("run config"))
            .expect("json");
    assert_eq!(record["init_from"]["kind"], "hugging-face");

    // Refusals, each naming what differs.
    let mut hf_config: serde_json::Value =
        serde_json::from_slice(&fs::read(hf.join("config.json")).expect("config")).expect("json");
    let vocab = hf_config["vocab_size"].as_u64().expect("vocab");
    hf_config["vocab_size"] = (vocab + 1).into();
    fs::write(hf.join("config.json"), hf_config.to_string()).expect("write");
    let mut a = args(&ds, &still, &tmp.path().join("x1"), "1");
    a.extend(["--init-from".into(), p(&hf)]);
    let mut all = vec!["train".to_string()];
    all.extend(a);
    let err = run_err(&refs(&all));
    assert!(err.contains("vocabulary size: pretrained"), "{err}");
    let wide = write(
        "wide.toml",
        "preset = \"sft\"\nbatch_tokens = 0\n[model]\nd_model = 96\nffn_dim = 384\n",
    );
    let mut all = vec!["train".to_string()];
    all.extend(args(&ds, &wide, &tmp.path().join("x2"), "1"));
    all.extend(["--init-from".into(), p(&pre)]);
    let err = run_err(&refs(&all));
    assert!(
        err.contains("d_model: pretrained") && err.contains("ffn_dim: pretrained"),
        "{err}"
    );
    let mut all = vec!["train".to_string()];
    all.extend(args(&ds, &still, &tmp.path().join("x3"), "1"));
    all.extend(["--init-from".into(), p(&ds)]);
    let err = run_err(&refs(&all));
    assert!(err.contains("neither a cm3 run"), "{err}");
    let err = run_err(&[
        "train",
        "--data",
        &p(&ds),
        "--config",
        "sft",
        "--out",
        &p(&tmp.path().join("x4")),
    ]);
    assert!(err.contains("--init-from"), "{err}");
}

/// The fault campaign's kill-anywhere test for training: `cm3 train` (40 steps, a checkpoint
/// every 3) killed (SIGKILL) at 8 seeded moments spread over an uninterrupted run, then continued
/// (`--resume` once the run is recorded, else the same command again): the same losses step for
/// step as the uninterrupted run, and `latest` names a complete checkpoint.
#[test]
fn training_killed_at_random_moments_resumes_to_the_same_losses() {
    use std::time::Instant;
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 16);
    let cfg = tmp.path().join("tiny.toml");
    fs::write(
        &cfg,
        "preset = \"tiny\"\nbatch_size = 2\nsave_every = 3\nkeep_checkpoints = 2\neval_every = 8\n",
    )
    .expect("config");
    let args = |run: &Path| {
        vec![
            "train".to_string(),
            "--data".into(),
            p(&ds),
            "--config".into(),
            p(&cfg),
            "--out".into(),
            p(run),
            "--steps".into(),
            "40".into(),
        ]
    };
    let whole = tmp.path().join("whole");
    let started = Instant::now();
    train(
        &args(&whole)[1..]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let duration = started.elapsed();
    let mut rng = cm3_core::rng::SplitMix64::new(8);
    let mut interrupted = 0;
    for n in 0..8 {
        let at = duration.mul_f64(rng.next_f64());
        let run = tmp.path().join(format!("killed-{n}"));
        interrupted += usize::from(run_killed_after(&args(&run), at));
        if run.join("config.json").is_file() {
            let done = metrics(&run)
                .iter()
                .filter_map(|l| l["step"].as_u64())
                .max()
                .unwrap_or(0);
            if done < 40 || !run.join("checkpoints/latest").exists() {
                train(&["--resume", &p(&run)]);
            }
        } else {
            train(
                &args(&run)[1..]
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(losses(&run), losses(&whole), "killed at {at:?}");
        let latest = fs::read_to_string(run.join("checkpoints/latest")).expect("latest");
        assert!(
            run.join("checkpoints")
                .join(latest.trim())
                .join("model.safetensors")
                .is_file(),
            "latest names {latest:?}"
        );
    }
    println!("{interrupted} of 8 kills interrupted a run of {duration:?}");
    assert!(
        interrupted >= 4,
        "only {interrupted} kills interrupted training"
    );
}
