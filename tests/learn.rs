//! The learning benchmark (`bench/learn.sh`) in its short version, through the debug binary: a
//! few dozen shapes, a tiny decoder trained for two steps with and without retrieval, two
//! held-out pairs. Every path must produce its outputs (the table's rows, finite numbers, the
//! grid and the loss curve); no accuracy is asserted. The benchmark's Python (generator, judge,
//! report) uses the standard library only; without `python3` the test says so and skips.
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn python3() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every number in a JSON value, with its path.
fn numbers(v: &serde_json::Value, path: String, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => out.push((path, n.as_f64().unwrap_or(f64::NAN))),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                numbers(x, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                numbers(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_learning_benchmark_runs_every_path() {
    if !python3() {
        eprintln!("SKIPPED the_learning_benchmark_runs_every_path: python3 is not installed");
        return;
    }
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("learn");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/learn.sh");
    let run = Command::new("bash")
        .arg(&script)
        .env("CM3", env!("CARGO_BIN_EXE_cm3"))
        .env("RUST_LOG", "warn")
        .env("LEARN_OUT", &out)
        .env("LEARN_PAIRS", "48")
        .env("LEARN_HELDOUT", "2")
        .env("LEARN_STEPS", "2")
        .env("LEARN_SAMPLES", "1")
        .env("LEARN_VQ_STEPS", "2")
        .env("LEARN_VAL_FRACTION", "0.25")
        .env("LEARN_D_MODEL", "32")
        .env("LEARN_LAYERS", "1")
        .env("LEARN_HEADS", "2")
        .env("LEARN_BATCH", "2")
        .env("LEARN_WARMUP", "1")
        .env("LEARN_SCORE_SEQS", "2")
        .output()
        .expect("spawn bash");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let failures = fs::read_to_string(out.join("failures.tsv")).unwrap_or_default();
    assert!(
        run.status.success(),
        "bench/learn.sh failed: {}\nstdout:\n{stdout}\nstderr:\n{}\nfailures:\n{failures}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(failures.trim().is_empty(), "failed commands:\n{failures}");

    // The table: every row, printed and saved.
    let table = fs::read_to_string(out.join("table.md")).expect("table.md");
    for row in [
        "validation loss, nats",
        "unigram baseline",
        "loss on shared retrieval-augmented val sequences",
        "loss on shared plain-pair val sequences",
        "i2t: right colour named",
        "i2t: right shape named",
        "i2t, cm3 eval: CIDEr / BLEU-4 / ROUGE-L",
        "t2i CFG 1: right colour drawn",
        "t2i CFG 3: right colour drawn",
        "t2i CFG 3, eq. 2 alone (--min-p 0): right colour drawn",
        "t2i CD-K: right colour drawn",
        "t2i CD-K: right shape drawn",
        "t2i +2 retrieved, CFG 3: right colour drawn",
        "t2i +2 retrieved, CD-K: right shape drawn",
        "text infill: right colour",
        "Image tokenizer on the 2 held-out images",
    ] {
        assert!(table.contains(row), "no {row:?} in the table:\n{table}");
        assert!(stdout.contains(row), "{row:?} was not printed");
    }
    assert!(!table.contains("n/a"), "a cell is empty:\n{table}");

    // Every number finite; every judged path has its two held-out pairs.
    let res: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("results.json")).expect("results.json"))
            .expect("results json");
    assert_eq!(res["missing"], serde_json::json!([]), "missing outputs");
    let mut all = Vec::new();
    numbers(&res, String::new(), &mut all);
    assert!(all.len() > 50, "only {} numbers", all.len());
    for (path, x) in &all {
        // A PSNR of an exact reconstruction is infinite and serialised as null, not a number.
        assert!(x.is_finite(), "{path} = {x}");
    }
    for run in ["retrieval", "no-retrieval"] {
        let r = &res["runs"][run];
        for key in ["val_loss", "final_train_loss", "steps"] {
            assert!(r[key].is_number(), "{run}: {key} = {}", r[key]);
        }
        assert_eq!(r["steps"], 2, "{run}");
        let uni = &r["unigram"];
        assert!(
            uni["train_unigram_entropy"]
                .as_f64()
                .is_some_and(|h| h > 0.0)
        );
        assert!(uni["val_unigram_cross_entropy"].is_number());
        for ds in ["ds", "ds-noretr"] {
            assert!(
                r["shared_scores"][ds]["loss"].is_number(),
                "{run} on {ds}: {}",
                r["shared_scores"][ds]
            );
        }
        let j = &r["judged"];
        assert_eq!(j["i2t"]["colour"]["total"], 2, "{run} i2t");
        assert_eq!(j["infill"]["colour"]["total"], 2, "{run} infill");
        for k in [
            "t2i-cfg1",
            "t2i-cfg3",
            "t2i-cfg3-eq2",
            "t2i-cdk",
            "t2i-ra-cfg1",
            "t2i-ra-cfg3",
            "t2i-ra-cdk",
        ] {
            assert_eq!(j[k]["colour"]["total"], 2, "{run} {k}");
            assert_eq!(j[k]["shape"]["total"], 2, "{run} {k}");
        }
    }
    assert_eq!(res["vq"]["colour"]["total"], 2);
    assert_eq!(
        res["vq"]["originals_right"]["right"], 2,
        "the judge on its own images"
    );

    // The figures.
    let grid = fs::read(out.join("grid.png")).expect("grid.png");
    assert!(grid.starts_with(b"\x89PNG\r\n\x1a\n") && grid.len() > 1000);
    let svg = fs::read_to_string(out.join("loss.svg")).expect("loss.svg");
    assert!(
        svg.contains("<polyline") && svg.contains("unigram"),
        "{svg}"
    );

    // "Does SFT teach?" (`bench/sft.sh`) on this output: VQA data, `cm3 sft build`, `cm3 train
    // --init-from`, `cm3 eval vqa` before and after, every path run.
    let sft = tmp.path().join("sft");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/sft.sh");
    let run = Command::new("bash")
        .arg(&script)
        .env("CM3", env!("CARGO_BIN_EXE_cm3"))
        .env("RUST_LOG", "warn")
        .env("LEARN_OUT", &out)
        .env("SFT_OUT", &sft)
        .env("SFT_PAIRS", "12")
        .env("SFT_STEPS", "2")
        .env("SFT_BATCH", "2")
        .output()
        .expect("spawn bash");
    let failures = fs::read_to_string(sft.join("failures.tsv")).unwrap_or_default();
    assert!(
        run.status.success(),
        "bench/sft.sh failed: {}\nstdout:\n{}\nstderr:\n{}\nfailures:\n{failures}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let table = fs::read_to_string(sft.join("table.md")).expect("sft table.md");
    for row in [
        "VQA accuracy (cm3 eval vqa), colour questions",
        "VQA accuracy (cm3 eval vqa), all",
        "official vqaEval accuracy",
    ] {
        assert!(table.contains(row), "no {row:?} in the SFT table:\n{table}");
    }
    let res: serde_json::Value =
        serde_json::from_slice(&fs::read(sft.join("results.json")).expect("results.json"))
            .expect("results json");
    assert_eq!(
        res["missing"],
        serde_json::json!([]),
        "missing outputs: {res}"
    );
    for stage in ["before", "after"] {
        assert!(res["stages"].get(stage).is_some(), "no {stage} in {res}");
    }
}
