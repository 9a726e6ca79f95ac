//! End-to-end tests of `cm3 eval` on the embedded sample: a tiny run trained on the first pairs,
//! every zero-shot protocol on held-out pairs (t2i with FID through the random-weight Inception
//! fixture and CLIP score, i2t with the caption metrics, VQA with VQA accuracy), resuming, the
//! leakage guard refusing evaluation images that are training pairs, and bad input.
mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;

/// The sample pairs `range` as an evaluation set: images named by their COCO id, and a COCO
/// captions file with all their captions.
fn evaluation_set(dir: &Path, range: std::ops::Range<usize>) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    fs::create_dir_all(&images).expect("mkdir");
    let (mut imgs, mut anns) = (Vec::new(), Vec::new());
    for pair in &sample_pairs()[range] {
        let id: u64 = pair
            .stem
            .trim_start_matches("coco-")
            .parse()
            .expect("a COCO id");
        let name = format!("{id}.{}", pair.ext());
        fs::copy(&pair.image, images.join(&name)).expect("copy");
        imgs.push(json!({ "id": id, "file_name": name }));
        for c in pair.all_captions() {
            anns.push(json!({ "image_id": id, "id": anns.len() + 1, "caption": c }));
        }
    }
    let captions = dir.join("captions.json");
    fs::write(
        &captions,
        json!({ "images": imgs, "annotations": anns }).to_string(),
    )
    .expect("write");
    (images, captions)
}

/// The random-weight export of pytorch-fid's Inception (eval's fixture), unpacked.
fn inception(dir: &Path) -> PathBuf {
    let gz = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../eval/tests/fixtures/fid/inception_random.onnx.gz");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(&gz).expect("fixture"))
        .read_to_end(&mut bytes)
        .expect("gunzip");
    let out = dir.join("inception.onnx");
    fs::write(&out, bytes).expect("write");
    out
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(out.join("report.json")).expect("report.json")).expect("json")
}

#[test]
fn every_protocol_runs_resumes_and_refuses_leaked_images() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let ds = prepared(tmp.path(), 12);
    let run = tmp.path().join("run");
    run_ok(&[
        "train",
        "--data",
        &p(&ds),
        "--out",
        &p(&run),
        "--steps",
        "2",
    ]);
    let (images, captions) = evaluation_set(&tmp.path().join("eval"), 20..24);
    let model = inception(tmp.path());

    // Text → image: 3 prompts, 2 samples each (one CD-K, one CFG), re-ranked, one retrieved
    // document; FID against the 4 evaluation images and the CLIP score.
    let t2i_out = tmp.path().join("t2i");
    let t2i = |extra: &[&str]| {
        let mut args = vec![
            "eval".to_string(),
            "t2i".into(),
            "--run".into(),
            p(&run),
            "--prompts".into(),
            p(&captions),
            "--reference-images".into(),
            p(&images),
            "--inception".into(),
            p(&model),
            "--out".into(),
            p(&t2i_out),
            "--count".into(),
            "3".into(),
            "--samples".into(),
            "2".into(),
            "--retrieve".into(),
            "1".into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let args = t2i(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first: serde_json::Value = serde_json::from_slice(&run_ok(&args).stdout).expect("json");
    assert_eq!(
        (first["prompts"].as_u64(), first["generated_now"].as_u64()),
        (Some(3), Some(3))
    );
    let r = report(&t2i_out);
    let fid = r["metrics"]["FID"].as_f64().expect("FID computed");
    assert!(fid.is_finite() && fid >= 0.0, "{fid}");
    let clip = r["metrics"]["CLIPScore"].as_f64().expect("CLIP score");
    assert!((0.0..=100.0).contains(&clip), "{clip}");
    assert_eq!(r["config"]["samples"], 2);
    assert!(r["checkpoint"].is_string() && r["memory_bank"].is_string());
    assert_eq!(r["leakage"]["checked"], 4);
    assert_eq!(r["leakage"]["overlaps"].as_array().map(Vec::len), Some(0));
    let lines = fs::read_to_string(t2i_out.join("samples.jsonl")).expect("log");
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(records.len(), 3);
    // The CLIP score is the clamped mean of 100 x the chosen samples' logged cosines, each the
    // best of its prompt's similarities.
    let cos: Vec<f64> = records
        .iter()
        .map(|r| r["clip_cosine"].as_f64().expect("clip_cosine"))
        .collect();
    let mean = (100.0 * cos.iter().sum::<f64>() / 3.0).max(0.0);
    assert!((clip - mean).abs() < 1e-9, "{clip} vs {mean}");
    for (r, c) in records.iter().zip(&cos) {
        let best = r["similarities"]
            .as_array()
            .expect("similarities")
            .iter()
            .map(|v| v.as_f64().expect("f"))
            .fold(f64::MIN, f64::max);
        assert!((best - c).abs() < 1e-6, "{best} vs {c}");
    }
    for rec in &records {
        assert_eq!(rec["similarities"].as_array().map(Vec::len), Some(2));
        assert_eq!(rec["retrieved"].as_array().map(Vec::len), Some(1));
        let kinds: Vec<&str> = rec["guidance"]
            .as_array()
            .expect("guidance")
            .iter()
            .map(|g| g["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(kinds, ["cd-k", "cfg"]);
        assert!(t2i_out.join(rec["file"].as_str().expect("file")).is_file());
    }
    assert!(t2i_out.join("grid.png").is_file());
    // Interrupted after the first prompt (a torn second record): the rerun generates the rest
    // only, and the same samples come out.
    let kept = lines.lines().next().expect("a line").to_string() + "\n{\"index\": 1, \"ima";
    fs::write(t2i_out.join("samples.jsonl"), kept).expect("truncate");
    let again: serde_json::Value = serde_json::from_slice(&run_ok(&args).stdout).expect("json");
    assert_eq!(again["generated_now"], 2);
    assert_eq!(
        fs::read_to_string(t2i_out.join("samples.jsonl")).expect("log"),
        lines
    );
    // Other settings into the same folder: refused, the folder named.
    let other = t2i(&["--cfg", "5"]);
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let err = run_err(&other);
    assert!(
        err.contains("other settings") && err.contains(&p(&t2i_out)),
        "{err}"
    );

    // Image → text through the infill prompt, then the caption metrics.
    let i2t_out = tmp.path().join("i2t");
    run_ok(&[
        "eval",
        "i2t",
        "--run",
        &p(&run),
        "--images",
        &p(&images),
        "--references",
        &p(&captions),
        "--out",
        &p(&i2t_out),
        "--max-tokens",
        "6",
    ]);
    let r = report(&i2t_out);
    for m in ["Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"] {
        assert!(r["metrics"][m].is_f64(), "no {m} in {}", r["metrics"]);
    }
    assert_eq!(r["images"], 4);

    // VQA in Table 5's form, then the official accuracy.
    let qa = tmp.path().join("vqa");
    fs::create_dir_all(&qa).expect("mkdir");
    let ids: Vec<u64> = fs::read_dir(&images)
        .expect("images")
        .map(|e| {
            let path = e.expect("entry").path();
            path.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .expect("an id")
        })
        .collect();
    let questions: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({ "question_id": i, "image_id": id, "question": "What is in the picture?" }))
        .collect();
    let annotations: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let answers: Vec<_> = (0..10)
                .map(|k| json!({ "answer": if k < 7 { "people" } else { "a dog" }, "answer_confidence": "yes", "answer_id": k + 1 }))
                .collect();
            json!({ "question_id": i, "image_id": id, "question_type": "what is", "answer_type": "other", "multiple_choice_answer": "people", "answers": answers })
        })
        .collect();
    fs::write(
        qa.join("q.json"),
        json!({ "questions": questions }).to_string(),
    )
    .expect("q");
    fs::write(
        qa.join("a.json"),
        json!({ "annotations": annotations }).to_string(),
    )
    .expect("a");
    let vqa_out = tmp.path().join("vqa-out");
    run_ok(&[
        "eval",
        "vqa",
        "--run",
        &p(&run),
        "--questions",
        &p(&qa.join("q.json")),
        "--annotations",
        &p(&qa.join("a.json")),
        "--images",
        &p(&images),
        "--out",
        &p(&vqa_out),
    ]);
    let r = report(&vqa_out);
    let acc = r["metrics"]["accuracy"]["overall"]
        .as_f64()
        .expect("accuracy");
    assert!((0.0..=100.0).contains(&acc), "{acc}");
    assert_eq!(r["questions"], 4);

    // The leakage guard: training pairs as evaluation images are refused, naming them; accepted
    // with --allow-overlap, and recorded.
    let (leaked, leaked_caps) = evaluation_set(&tmp.path().join("leak"), 2..5);
    let leak_out = tmp.path().join("leak-out");
    let leak_args = [
        "eval",
        "i2t",
        "--run",
        &p(&run),
        "--images",
        &p(&leaked),
        "--references",
        &p(&leaked_caps),
        "--out",
        &p(&leak_out),
        "--max-tokens",
        "2",
    ];
    let err = run_err(&leak_args);
    assert!(
        err.contains("3 of the 3 evaluation images are pairs of this dataset")
            && err.contains("--allow-overlap"),
        "{err}"
    );
    let mut accepted = leak_args.to_vec();
    accepted.push("--allow-overlap");
    run_ok(&accepted);
    let r = report(&leak_out);
    assert_eq!(r["leakage"]["accepted"], true);
    assert_eq!(r["leakage"]["overlaps"].as_array().map(Vec::len), Some(3));
}

#[test]
fn metric_verbs_read_files_and_refuse_bad_input() {
    runtime();
    let tmp = tempfile::tempdir().expect("tmp");
    let refs = tmp.path().join("refs.json");
    fs::write(
        &refs,
        json!({ "1": ["a man riding a horse", "a person on a horse"], "2": ["two dogs playing"] })
            .to_string(),
    )
    .expect("refs");
    let preds = tmp.path().join("preds.json");
    fs::write(
        &preds,
        json!([{ "image_id": 1, "caption": "a man on a horse" }, { "image_id": 2, "caption": "dogs" }])
            .to_string(),
    )
    .expect("preds");
    let out = run_ok(&[
        "eval",
        "captions",
        "--predictions",
        &p(&preds),
        "--references",
        &p(&refs),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for m in ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"] {
        assert!(v[m].is_f64(), "no {m}: {v}");
    }
    let table = run_ok(&[
        "eval",
        "captions",
        "--predictions",
        &p(&preds),
        "--references",
        &p(&refs),
    ]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("CIDEr"));
    // A prediction for an image the references lack: named.
    fs::write(
        &preds,
        json!([{ "image_id": 7, "caption": "a cat" }]).to_string(),
    )
    .expect("preds");
    let err = run_err(&[
        "eval",
        "captions",
        "--predictions",
        &p(&preds),
        "--references",
        &p(&refs),
    ]);
    assert!(err.contains('7') && err.contains("preds.json"), "{err}");

    // FID with a model whose output is not 2048 wide: a clear error naming it.
    let wrong =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/tests/fixtures/fid/wrong_width.onnx");
    let imgs = tmp.path().join("imgs");
    sample_part(&imgs, 0..2);
    let err = run_err(&[
        "eval",
        "fid",
        "--inception",
        &p(&wrong),
        &p(&imgs),
        &p(&imgs),
    ]);
    assert!(err.contains("wrong_width.onnx"), "{err}");
}
